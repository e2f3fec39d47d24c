"""Priors on the weights: the input side of state evolution, ``Q = f_in(Q̂)``."""

from __future__ import annotations

import numpy as np


class GaussianPrior:
    """Standard Gaussian prior ``w ~ N(0, I_p)``: ``Q = Q̂ (I + Q̂)^{-1}`` (THEORY §3).

    Input free entropy ``ψ_in(Q̂) = ½ tr Q̂ - ½ log det(I + Q̂)``, with ``Q = 2 ∂ψ_in/∂Q̂``.
    """

    name = "gaussian"

    def overlap(self, Qhat: np.ndarray) -> np.ndarray:
        p = Qhat.shape[0]
        return Qhat @ np.linalg.inv(np.eye(p) + Qhat)

    def free_entropy(self, Qhat: np.ndarray) -> float:
        p = Qhat.shape[0]
        sign, logdet = np.linalg.slogdet(np.eye(p) + Qhat)
        return 0.5 * float(np.trace(Qhat)) - 0.5 * float(logdet)


PRIORS = {"gaussian": GaussianPrior}


def make_prior(name: str):
    try:
        return PRIORS[name]()
    except KeyError:
        raise ValueError(f"unknown prior {name!r}; choose from {sorted(PRIORS)}") from None
