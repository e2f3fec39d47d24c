"""Priors on the weights: the input side of state evolution, ``Q = f_in(Q̂)``.

Each prior gives ``Q = 2 ∂ψ_in/∂Q̂`` and the input free entropy ``ψ_in(Q̂)``.  A discrete
prior can reach perfect recovery ``Q = I`` at finite α; it then reports the limit of
``ψ_in(Q̂) - ½ tr(Q Q̂)`` as ``Q̂ -> ∞``, minus its entropy.
"""

from __future__ import annotations

import math
from typing import Protocol, runtime_checkable

import numpy as np

from .integrate import trapezoid


@runtime_checkable
class Prior(Protocol):
    """The input side of SE: what every prior provides (THEORY §3)."""

    name: str
    #: finitely many values: perfect recovery ``Q = I`` is reachable at finite α
    discrete: bool

    def overlap(self, Qhat: np.ndarray) -> np.ndarray:
        """``Q = 2 ∂ψ_in/∂Q̂``."""

    def free_entropy(self, Qhat: np.ndarray) -> float:
        """``ψ_in(Q̂)``."""

    def perfect_recovery_free_entropy(self, p: int) -> float:
        """``lim_{Q̂ -> ∞} ψ_in(Q̂) - ½ tr(Q Q̂)``: minus the entropy of a discrete prior,
        ``+∞`` for a continuous one (its density is singular at ``Q = I``)."""


class GaussianPrior:
    """Standard Gaussian prior ``w ~ N(0, I_p)``: ``Q = Q̂ (I + Q̂)^{-1}`` (THEORY §3).

    ``ψ_in(Q̂) = ½ tr Q̂ - ½ log det(I + Q̂)``.
    """

    name = "gaussian"
    discrete = False

    def overlap(self, Qhat: np.ndarray) -> np.ndarray:
        p = Qhat.shape[0]
        return Qhat @ np.linalg.inv(np.eye(p) + Qhat)

    def free_entropy(self, Qhat: np.ndarray) -> float:
        p = Qhat.shape[0]
        _, logdet = np.linalg.slogdet(np.eye(p) + Qhat)
        return 0.5 * float(np.trace(Qhat)) - 0.5 * float(logdet)

    def perfect_recovery_free_entropy(self, p: int) -> float:
        """``+∞``: at ``Q = I`` a continuous prior with a noiseless channel has a singular
        data density, whose free entropy beats every fixed point with ``Q < I``."""
        return math.inf


class RademacherPrior:
    """Rademacher prior ``w_k = ±1`` independently per direction (diagonal ``Q̂``).

    ``ψ_in = Σ_k E_ξ log cosh(Q̂_k + sqrt(Q̂_k) ξ) - Q̂_k/2`` and
    ``Q_k = E_ξ tanh(Q̂_k + sqrt(Q̂_k) ξ)`` (Nishimori), on a Gaussian trapezoid of
    ``nodes`` points (analytic integrands: exponential convergence).  Perfect recovery has
    ``ψ_in - ½ Q Q̂ -> -log 2`` per direction (the prior's entropy).
    """

    name = "rademacher"
    discrete = True

    def __init__(self, nodes: int = 801):
        self.rule = trapezoid(1, nodes, 12.0)

    def _diag(self, Qhat: np.ndarray) -> np.ndarray:
        Qhat = np.asarray(Qhat, dtype=float)
        off = Qhat - np.diag(np.diag(Qhat))
        if np.abs(off).max(initial=0.0) > 1e-12 * max(1.0, np.abs(Qhat).max()):
            raise ValueError("the Rademacher prior is implemented for diagonal Q̂ only")
        d = np.diag(Qhat)
        if np.any(d < 0):
            raise ValueError("Q̂ must be >= 0")
        return d

    def overlap(self, Qhat: np.ndarray) -> np.ndarray:
        d = self._diag(Qhat)
        xi = self.rule.points[:, 0]
        q = [self.rule.weights @ np.tanh(h + np.sqrt(h) * xi) for h in d]
        return np.diag(q)

    def free_entropy(self, Qhat: np.ndarray) -> float:
        d = self._diag(Qhat)
        xi = self.rule.points[:, 0]
        total = 0.0
        for h in d:
            x = h + np.sqrt(h) * xi
            logcosh = np.logaddexp(x, -x) - math.log(2.0)
            total += float(self.rule.weights @ logcosh) - 0.5 * h
        return total

    def perfect_recovery_free_entropy(self, p: int) -> float:
        return -math.log(2.0) * p


PRIORS = {"gaussian": GaussianPrior, "rademacher": RademacherPrior}


def make_prior(name: str) -> Prior:
    try:
        return PRIORS[name]()
    except KeyError:
        raise ValueError(f"unknown prior {name!r}; choose from {sorted(PRIORS)}") from None
