"""First-order transitions: spinodals and the information-theoretic threshold (THEORY §3).

* AMP spinodal: the smallest α at which the uninformed SE run ends on the high branch
  (its overlap in every direction exceeds ``jump_overlap``), by bisection.
* Information-theoretic threshold: the α at which the free entropies of the uninformed
  and the informed fixed points cross, by bisection on the sign of their difference.

Each is returned with its bracket: the reported α is the bracket's midpoint and its error
the half-width (plus, for the IT threshold, a flag if the free-entropy difference at the
ends is within its own numerical error).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .channels.base import Channel
from .solver import SolveResult, bisect
from .state_evolution import SESettings, run_state_evolution


@dataclass
class Transition:
    kind: str  # "amp-spinodal" | "it-threshold"
    alpha: float
    error: float  # half-width of the final bracket
    bracket: tuple[float, float]
    evaluations: int
    reliable: bool = True


def fixed_point_free_entropy(channel: Channel, alpha: float, start: str, prior,
                             settings: SESettings | None = None, tol: float = 1e-10,
                             max_iter: int = 5000) -> tuple[float, float, object]:
    """Free entropy (and its error) of the SE fixed point reached from ``start``."""
    res = run_state_evolution(channel, alpha, start, prior=prior, settings=settings, tol=tol,
                              max_iter=max_iter)
    if not res.converged:
        raise RuntimeError(f"SE from the {start} start did not converge at α={alpha}: "
                           f"{res.status}")
    phi, err = res.free_entropy()
    return phi, err, res


def _bracketed(res: SolveResult) -> tuple[float, float]:
    """The final bracket of a bisection; ValueError if the sweep's bracket was not one."""
    if not res.converged:
        raise ValueError(res.message)
    return res.bracket


def amp_spinodal(channel: Channel, prior, lo: float, hi: float, *, tol: float = 2e-3,
                 jump_overlap: float = 0.95, settings: SESettings | None = None,
                 max_iter: int = 20000) -> Transition:
    """Smallest α where the uninformed (AMP) branch has jumped to the high branch."""

    def jumped(alpha):
        res = run_state_evolution(channel, alpha, "uninformed", prior=prior,
                                  settings=settings, tol=1e-10, max_iter=max_iter)
        return bool(np.all(np.diag(res.Q) > jump_overlap))

    res = bisect(jumped, lo, hi, tol)
    a, b = _bracketed(res)
    return Transition("amp-spinodal", 0.5 * (a + b), 0.5 * (b - a), (a, b), res.evaluations)


def it_threshold(channel: Channel, prior, lo: float, hi: float, *, tol: float = 2e-3,
                 settings: SESettings | None = None) -> Transition:
    """α where the informed fixed point's free entropy overtakes the uninformed one's."""
    reliable = True

    def informed_wins(alpha):
        nonlocal reliable
        f_u, e_u, _ = fixed_point_free_entropy(channel, alpha, "uninformed", prior, settings)
        f_i, e_i, _ = fixed_point_free_entropy(channel, alpha, "informed", prior, settings)
        if not (math.isfinite(f_u) and math.isfinite(f_i)):
            raise RuntimeError(f"free entropy undefined at α={alpha}")
        if abs(f_i - f_u) < e_u + e_i:
            reliable = False
        return f_i > f_u

    res = bisect(informed_wins, lo, hi, tol)
    a, b = _bracketed(res)
    return Transition("it-threshold", 0.5 * (a + b), 0.5 * (b - a), (a, b), res.evaluations,
                      reliable)
