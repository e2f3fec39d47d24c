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
    extrapolations: int = 0


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
    extrapolate: bool = False,
    confirm: int = 3,
) -> FixedPointResult:
    """Iterate ``x <- (1-η) x + η update(x)`` until ``max|Δx| < tol``.

    ``η`` is the damping (1 = undamped).  An update that is not finite or fails
    ``is_valid`` is rolled back and retried with half the damping, down to ``min_damping``
    (then the status is ``invalid-update``).  ``history`` holds every accepted iterate.

    ``extrapolate=True`` adds Aitken steps for slowly contracting iterations: when three
    successive steps ``d`` are parallel (cosine > 0.99) and shrink by a steady ratio
    ``r < 1`` (within 2 %), the iterate jumps by ``d r / (1 - r)``, kept only if it is valid
    and the update's residual there is smaller than the last step (one extra evaluation).
    Plain iterations follow, and convergence needs ``confirm`` of them after the last jump,
    so the result is still a point that the plain iteration holds: the branch it reaches
    does not change, only how fast.
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
    steps: list[np.ndarray] = []
    since_jump = confirm
    jumps = 0
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
        steps = (steps + [new - x])[-3:]
        x = new
        since_jump += 1
        if keep_history:
            history.append(x.copy())
        if residual < tol and since_jump >= confirm:
            return FixedPointResult(
                x, True, "converged", it, residual, eta, history, rollbacks, jumps
            )
        if extrapolate and len(steps) == 3 and residual >= tol:
            candidate = _aitken(x, steps, is_valid)
            steps = []
            if candidate is not None:
                # keep the jump only if the plain step there is shorter than the last one
                t_c = np.asarray(update(candidate), dtype=float)
                if np.all(np.isfinite(t_c)) and float(np.max(np.abs(t_c - candidate))) < residual:
                    x, since_jump = candidate, 0
                    jumps += 1
                    if keep_history:
                        history.append(x.copy())
    return FixedPointResult(
        x, False, "max-iter", max_iter, residual, eta, history, rollbacks, jumps
    )


def _aitken(x, steps, is_valid):
    """Aitken jump along a geometric sequence of parallel steps, or None."""
    d0, d1, d2 = (np.ravel(d) for d in steps)
    n0, n1, n2 = (np.linalg.norm(d) for d in (d0, d1, d2))
    if min(n0, n1, n2) == 0:
        return None
    r1, r2 = n1 / n0, n2 / n1
    if not (0 < r2 < 0.999 and abs(r2 - r1) < 0.02 * r2):
        return None
    if min(d0 @ d1 / (n0 * n1), d1 @ d2 / (n1 * n2)) < 0.99:
        return None
    candidate = x + steps[2] * (r2 / (1.0 - r2))
    if not np.all(np.isfinite(candidate)) or (is_valid is not None and not is_valid(candidate)):
        return None
    return candidate
