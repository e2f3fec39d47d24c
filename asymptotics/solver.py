"""A damped fixed-point solver that owns stopping, rollback and history.

It iterates ``x <- (1 - η) x + η T(x)`` and never returns a plausible number silently:
the result says whether it converged, hit the iteration cap, or stalled after rollbacks.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np


@dataclass
class FixedPointResult:
    """Outcome of :func:`solve_fixed_point`."""

    x: np.ndarray
    converged: bool
    status: str  # "converged" | "max-iter" | "invalid-update"
    iterations: int
    residual: float
    damping: float
    history: list = field(default_factory=list)
    rollbacks: int = 0


def solve_fixed_point(
    update: Callable[[np.ndarray], np.ndarray],
    x0: np.ndarray,
    *,
    damping: float = 0.5,
    tol: float = 1e-9,
    max_iter: int = 1000,
    is_valid: Callable[[np.ndarray], bool] | None = None,
    min_damping: float = 1e-3,
    keep_history: bool = True,
) -> FixedPointResult:
    """Iterate ``x <- (1-η) x + η update(x)`` until ``max|Δx| < tol``.

    ``η`` is the damping (1 = undamped).  An update that is not finite or fails
    ``is_valid`` is rolled back and retried with half the damping, down to ``min_damping``
    (then the status is ``invalid-update``).  ``history`` holds every accepted iterate.
    """
    if not 0 < damping <= 1:
        raise ValueError(f"damping must be in (0, 1], got {damping}")
    if tol <= 0 or max_iter < 1:
        raise ValueError("tol must be > 0 and max_iter >= 1")
    x = np.array(x0, dtype=float)
    history = [x.copy()] if keep_history else []
    eta = damping
    rollbacks = 0
    residual = np.inf
    for it in range(1, max_iter + 1):
        tx = np.asarray(update(x), dtype=float)
        while True:
            new = (1.0 - eta) * x + eta * tx
            ok = np.all(np.isfinite(new)) and (is_valid is None or is_valid(new))
            if ok:
                break
            rollbacks += 1
            eta *= 0.5
            if eta < min_damping or not np.all(np.isfinite(tx)):
                return FixedPointResult(
                    x, False, "invalid-update", it, residual, eta, history, rollbacks
                )
        residual = float(np.max(np.abs(new - x)))
        x = new
        if keep_history:
            history.append(x.copy())
        if residual < tol:
            return FixedPointResult(x, True, "converged", it, residual, eta, history, rollbacks)
    return FixedPointResult(x, False, "max-iter", max_iter, residual, eta, history, rollbacks)
