"""The package's solvers, each returning one :class:`SolveResult`.

* :func:`solve_fixed_point`: damped iteration ``x <- (1 - η) x + η T(x)`` with rollback,
  Aitken/escape jumps or Anderson acceleration.
* :func:`newton`: Newton's method for ``R(x) = 0`` with a Broyden-updated or fixed (chord)
  Jacobian, started from a given or forward-difference (:func:`fd_jacobian`) one.
* :func:`brent`: Brent's method for a scalar root in a sign-changing bracket (scipy's).
* :func:`bisect`: the point where a predicate turns True.

A solver never returns a plausible number silently, nor raises for a failed solve: the
result's ``status`` says whether it converged and, if not, why.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.optimize import brentq


@dataclass
class SolveResult:
    """Outcome of a solve (in the spirit of scipy's ``OptimizeResult``).

    ``x``: the solution (or the last point, when not converged); ``status``: "converged"
    or why not (each solver lists its statuses), ``message`` in words; ``iterations`` and
    ``evaluations`` (of the function solved for); ``residual``: the solver's own measure
    of distance from a solution at ``x``.  ``extras`` holds what only some solvers have
    (e.g. ``history``, ``jacobian``, ``bracket``, ``aux``); they read as attributes too.
    """

    x: Any
    converged: bool
    status: str
    message: str = ""
    iterations: int = 0
    evaluations: int = 0
    residual: float = math.nan
    extras: dict[str, Any] = field(default_factory=dict)

    def __getattr__(self, name: str) -> Any:
        extras = self.__dict__.get("extras", {})
        if name in extras:
            return extras[name]
        raise AttributeError(f"{type(self).__name__} has no attribute or extra {name!r}")


class _Counted:
    """A function with a count of its calls."""

    def __init__(self, f: Callable):
        self.f, self.calls = f, 0

    def __call__(self, *args):
        self.calls += 1
        return self.f(*args)


FIXED_POINT_MESSAGES = {
    "converged": "max|Δx| below tol",
    "max-iter": "iteration cap reached",
    "invalid-update": "update not finite or not valid at the smallest damping",
}


def _fixed_point_result(x, status, it, update, residual, eta, history, rollbacks=0,
                        extrapolations=0, accelerated_steps=0, **extras) -> SolveResult:
    message = FIXED_POINT_MESSAGES.get(status, f"stopped: {status}")
    return SolveResult(
        x, status not in ("max-iter", "invalid-update"), status, message, it, update.calls,
        residual, {"damping": eta, "history": history, "rollbacks": rollbacks,
                   "extrapolations": extrapolations, "accelerated_steps": accelerated_steps,
                   **extras},
    )


def solve_fixed_point(
    update: Callable[[np.ndarray], np.ndarray],
    x0: np.ndarray,
    *,
    damping: float = 0.5,
    tol: float | np.ndarray = 1e-9,
    max_iter: int = 1000,
    is_valid: Callable[[np.ndarray], bool] | None = None,
    min_damping: float = 1e-3,
    keep_history: bool = True,
    extrapolate: bool = False,
    confirm: int = 3,
    anderson: int = 0,
    stop: Callable[[np.ndarray], str | None] | None = None,
    cut_back: Callable[[np.ndarray], bool] | None = None,
    secant: tuple[np.ndarray, np.ndarray] | None = None,
) -> SolveResult:
    """Iterate ``x <- (1-η) x + η update(x)`` until ``max|Δx| < tol``; ``tol`` may also be
    an array of tolerances per entry of ``x`` (``|Δx_i| < tol_i`` for all ``i``).

    Statuses: ``converged``, ``max-iter``, ``invalid-update`` (see below), or the one that
    ``stop`` returns: called on every value ``T(x)`` of the update, a string ends the solve
    there (``x = T(x)``, converged) with that status, e.g. a limit point that the caller
    recognises.  Extras: ``damping`` (the final η), ``history``, ``rollbacks``,
    ``extrapolations`` (Aitken or escape jumps), ``accelerated_steps`` (Anderson).

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

    ``anderson=m > 0`` switches to Anderson acceleration with memory ``m`` once the plain
    iteration contracts (two successive step-length ratios below 1), i.e. once it is in
    the basin of the fixed point it will converge to; before that the plain iteration
    alone chooses the branch (Anderson, a secant method, could also converge to an
    unstable fixed point: started at once from the fixed point of a nearby map, the coarse
    or the full rule's, it lands on the unstable near-zero overlaps of the replicate maps
    at α = 0.2, which the plain iteration leaves).  An Anderson move is limited to a trust
    region of ``ANDERSON_TRUST_START`` plain steps, doubled after every step that lowers
    the residual: near a maximum of ``|T(x) - x|`` the secant slope is nearly flat and an
    unlimited move overshoots.  An Anderson move that leaves the domain (``is_valid``) is
    cut back towards the plain step, to the last valid point of ``ANDERSON_BACKTRACK``
    bisections (:func:`_toward_valid`), if ``cut_back(move's end)`` (default: always), else
    replaced by the plain step (and a fresh secant history, as before: keeping it costs
    three times the steps of the slow approach to ``I`` at α = 1.05).  An overlap decaying
    to its invariant 0 beside a slow direction needs the cut-back: the secant move
    overshoots it below 0 at every step (43 plain steps at α = 0.5, 12 with it).  An
    Anderson step whose residual grows beyond twice the best seen restarts
    from the best point with plain steps and a 4x smaller trust region; one at which the
    update is not finite (a point beyond the map's domain, e.g. an overlap so close to 1
    that the posterior underflows) goes back to the plain step it replaced, likewise.
    The secant fit drops singular values below ``ANDERSON_RCOND`` times the largest: a
    direction that moves only at round-off (an overlap at its invariant 0, ~1e-15) would
    otherwise get a large coefficient and send the move astray in the others (α = 0.6:
    a restart and 12 full-size steps, 7 without).
    Convergence is then ``η max|T(x) - x| < tol`` at an evaluated point, and the returned
    point is the plain damped step from it.  The extra ``secant`` holds the last ``m``
    secant pairs ``(ΔX, ΔG)`` (columns ``Δx``, ``Δ(T(x) - x)``) of the Anderson steps
    (None if the solve ended before them).

    ``secant=(ΔX, ΔG)`` (with ``anderson``), pairs of a nearby map (the same map on fewer
    nodes, or a replicate of it), near whose fixed point ``x0`` is: Anderson steps from the
    first evaluation on, with those pairs as the first memory (their secant Jacobian is
    good to the maps' difference), and none of the safeguards above, for at most
    ``SEEDED_MAX_STEPS`` steps (:func:`_solve_seeded`; converged when the secant step to
    the fixed point, not only the damped residual, is below ``tol``).  Where that has not
    converged the solve goes on as above, from the secant steps' best point (a slow
    direction), or from ``x0`` where they went astray (a growing residual, a repelling
    point), and counts both.  From a nearby map's fixed point the plain iteration needs
    ``~1/(1 - slope)`` steps to cover what one secant step covers, and near a threshold
    the safeguards restart it over and over (non-normal Jacobians make the plain steps
    grow for a while, which the escape test misreads).

    Near a bifurcation the plain iteration leaves an unstable fixed point slowly: steps
    that are parallel and grow by a steady ratio ``1 < r < 2`` are the linear escape
    ``d, r d, r² d, ...`` away from a point ``x - d/(r - 1)``; the solver then takes the
    ``k`` of them at once, ``x + d r (r^k - 1)/(r - 1)``, that multiply that distance by
    ``ESCAPE_GROWTH`` (fewer if that point is invalid), in the direction the plain
    iteration itself goes.
    """
    update = _Counted(update)
    tol = np.asarray(tol, dtype=float)
    if np.any(tol <= 0) or max_iter < 1:
        raise ValueError("tol must be > 0 and max_iter >= 1")
    tol = np.broadcast_to(tol, np.shape(x0)) if tol.ndim else float(tol)
    if secant is not None:
        if not anderson:
            raise ValueError("secant pairs need anderson > 0")
        seeded = _solve_seeded(update, x0, _secant_pairs(secant, np.size(x0)),
                               damping=damping, tol=tol, max_iter=max_iter, is_valid=is_valid,
                               keep_history=keep_history, memory=int(anderson), stop=stop)
        if seeded.converged or seeded.iterations >= max_iter:
            return seeded
        # stalled on its way (a slow direction): on from its best point; gone astray
        # (a repelling point, a growing residual): from x0
        restart = seeded.best if seeded.status == "seeded-stalled" else x0
        rest = _solve_anderson(update, restart, damping=damping, tol=tol,
                               max_iter=max_iter - seeded.iterations, is_valid=is_valid,
                               min_damping=min_damping, keep_history=keep_history,
                               memory=int(anderson), stop=stop, cut_back=cut_back)
        rest.iterations += seeded.iterations
        rest.evaluations = update.calls
        return rest
    if anderson:
        return _solve_anderson(update, x0, damping=damping, tol=tol, max_iter=max_iter,
                               is_valid=is_valid, min_damping=min_damping,
                               keep_history=keep_history, memory=int(anderson), stop=stop,
                               cut_back=cut_back)
    if not 0 < damping <= 1:
        raise ValueError(f"damping must be in (0, 1], got {damping}")
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
        if stop is not None and (halt := stop(tx)):
            return _fixed_point_result(tx, halt, it, update, residual, eta, history, rollbacks,
                                       jumps)
        while True:
            new = (1.0 - eta) * x + eta * tx
            ok = np.all(np.isfinite(new)) and (is_valid is None or is_valid(new))
            if ok:
                break
            rollbacks += 1
            eta *= 0.5
            if eta < min_damping or not np.all(np.isfinite(tx)):
                return _fixed_point_result(x, "invalid-update", it, update, residual, eta,
                                           history, rollbacks)
        residual = float(np.max(np.abs(new - x)))
        steps = (steps + [new - x])[-3:]
        x = new
        since_jump += 1
        if keep_history:
            history.append(x.copy())
        below = bool(np.all(np.abs(steps[-1]) < tol))
        if below and since_jump >= confirm:
            return _fixed_point_result(x, "converged", it, update, residual, eta, history,
                                       rollbacks, jumps)
        if extrapolate and len(steps) == 3 and not below:
            candidate = _aitken(x, steps, is_valid)
            steps = []
            if candidate is not None:
                # keep the jump only if the plain step there is shorter than the last one
                t_c = np.asarray(update(candidate), dtype=float)
                if stop is not None and (halt := stop(t_c)):
                    return _fixed_point_result(t_c, halt, it, update, residual, eta, history,
                                               rollbacks, jumps)
                if np.all(np.isfinite(t_c)) and float(np.max(np.abs(t_c - candidate))) < residual:
                    x, since_jump = candidate, 0
                    jumps += 1
                    if keep_history:
                        history.append(x.copy())
    return _fixed_point_result(x, "max-iter", max_iter, update, residual, eta, history,
                               rollbacks, jumps)


def _geometric_ratio(steps) -> float | None:
    """Ratio ``r`` of three parallel steps (cosine > 0.99) whose lengths change by a steady
    factor (two ratios within 2 %): the linear regime ``d, r d, r² d``; else None."""
    d0, d1, d2 = (np.ravel(d) for d in steps)
    n0, n1, n2 = (np.linalg.norm(d) for d in (d0, d1, d2))
    if min(n0, n1, n2) == 0:
        return None
    r1, r2 = n1 / n0, n2 / n1
    if abs(r2 - r1) >= 0.02 * r2:
        return None
    if min(d0 @ d1 / (n0 * n1), d1 @ d2 / (n1 * n2)) < 0.99:
        return None
    return float(r2)


def _aitken(x, steps, is_valid):
    """Aitken jump along a geometric sequence of parallel steps, or None."""
    r2 = _geometric_ratio(steps)
    if r2 is None or not 0 < r2 < 0.999:
        return None
    candidate = x + steps[2] * (r2 / (1.0 - r2))
    if not np.all(np.isfinite(candidate)) or (is_valid is not None and not is_valid(candidate)):
        return None
    return candidate


SEEDED_MAX_STEPS = 25  # steps of a seeded secant solve before it gives way to the full one
SEEDED_GROWTH = 10.0  # ... or once its residual is this many times the first one


def _secant_pairs(secant, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Given secant pairs ``(ΔX, ΔG)``, checked, as ``(n, k)`` arrays."""
    dX, dG = (np.asarray(a, dtype=float).reshape(n, -1) for a in secant)
    if dX.shape != dG.shape or not (np.all(np.isfinite(dX)) and np.all(np.isfinite(dG))):
        raise ValueError("secant pairs must be two finite arrays of the same shape (n, k)")
    return dX, dG


def _last_pairs(X, F, seed_dX, seed_dF, memory):
    """The last ``memory`` secant pairs ``(ΔX, ΔF)`` as ``(n, k)`` columns: the given ones,
    then those of the points ``X`` and damped residuals ``F`` evaluated since."""
    dX = np.hstack([seed_dX] + ([np.diff(np.array(X), axis=0).T] if len(X) >= 2 else []))
    dF = np.hstack([seed_dF] + ([np.diff(np.array(F), axis=0).T] if len(F) >= 2 else []))
    return dX[:, -memory:], dF[:, -memory:]


def _anderson_move(X, F, seed_dX, seed_dF, f, memory):
    """Anderson type-II move ``f - (ΔX + ΔF) γ``, ``γ = argmin |f - ΔF γ|``, on the pairs
    of :func:`_last_pairs`.  Returns the move and the pairs used (damped: ``ΔF / η`` is
    the caller's)."""
    dX, dF = _last_pairs(X, F, seed_dX, seed_dF, memory)
    if not dX.shape[1]:
        return f, (dX, dF)
    gamma, *_ = np.linalg.lstsq(dF, f, rcond=ANDERSON_RCOND)
    return f - (dX + dF) @ gamma, (dX, dF)


def _solve_seeded(update, x0, pairs, *, damping, tol, max_iter, is_valid, keep_history,
                  memory, stop=None) -> SolveResult:
    """Anderson steps from the first evaluation, the given secant pairs ``(ΔX, ΔG)`` as
    the first memory (see :func:`solve_fixed_point`).  Converged where both the damped
    residual and the secant step (the estimated distance to the fixed point, which a
    slow or non-normal direction makes the larger) are below ``tol``; the result is the
    point that step reaches.  Status ``converged`` (or
    ``stop``'s), else ``seeded-stalled``: not converged in ``SEEDED_MAX_STEPS`` steps or
    an update not finite (extra ``best``: the evaluated point of smallest residual);
    ``seeded-diverged``: a residual ``SEEDED_GROWTH`` times the first; or
    ``seeded-repelling``: converged to a point the plain iteration leaves (the last
    pairs' damped Jacobian has an eigenvalue of modulus ≥ 1, :func:`_attracting`)."""
    if not 0 < damping <= 1:
        raise ValueError(f"damping must be in (0, 1], got {damping}")
    eta = damping
    seed_dX, seed_dF = pairs[0], eta * pairs[1]
    x = np.array(x0, dtype=float)
    shape = x.shape
    history = [x.copy()] if keep_history else []
    X: list[np.ndarray] = []
    F: list[np.ndarray] = []
    first, residual, used, best = None, np.inf, (seed_dX, seed_dF), (np.inf, x.copy())
    steps, status = min(max_iter, SEEDED_MAX_STEPS), "seeded-stalled"

    for it in range(1, steps + 1):
        tx = np.asarray(update(x), dtype=float)
        if stop is not None and (halt := stop(tx)):
            return _fixed_point_result(tx, halt, it, update, residual, eta, history)
        if not np.all(np.isfinite(tx)):
            break
        f = eta * (tx - x)
        residual = float(np.max(np.abs(f)))
        first = residual if first is None else first
        plain = x + f
        if residual > SEEDED_GROWTH * first:
            status = "seeded-diverged"
            break
        if residual < best[0]:
            best = (residual, x.copy())
        X = (X + [x.ravel().copy()])[-(memory + 1):]
        F = (F + [f.ravel().copy()])[-(memory + 1):]
        move, used = _anderson_move(X, F, seed_dX, seed_dF, f.ravel(), memory)
        new = (x.ravel() + move).reshape(shape)
        # converged: the damped residual and the secant step to the fixed point below tol
        if (np.all(np.abs(f) < tol) and np.all(np.abs(new - x) < tol)
                and _finite_valid(plain, is_valid)):
            if not _attracting(*used):
                status = "seeded-repelling"
                break
            out = new if _finite_valid(new, is_valid) else plain
            if keep_history:
                history.append(out.copy())
            return _fixed_point_result(out, "converged", it, update, residual, eta, history,
                                       accelerated_steps=it - 1,
                                       secant=(used[0], used[1] / eta))
        if not _finite_valid(new, is_valid):
            if not _finite_valid(plain, is_valid):
                break
            cut = _toward_valid(plain, new, is_valid)
            new = plain if cut is None else cut
        x = new
        if keep_history:
            history.append(x.copy())
    return SolveResult(x, False, status, "seeded secant steps did not converge to an "
                       "attracting fixed point", it, update.calls, residual,
                       {"damping": eta, "history": history, "best": best[1]})


def _attracting(dX: np.ndarray, dF: np.ndarray) -> bool:
    """Whether the damped iteration ``x -> x + F(x)`` contracts on the span of the secant
    steps: spectral radius of ``I + ΔF ΔX⁺`` on the span of ``ΔX`` below 1 (a secant
    method also converges to the repelling fixed points that the plain iteration leaves)."""
    if not dX.shape[1]:
        return False
    U, sv, _ = np.linalg.svd(dX, full_matrices=False)
    U = U[:, sv > ANDERSON_RCOND * sv[0]]  # the span of the steps
    C = U.T @ (U + dF @ np.linalg.pinv(dX, rcond=ANDERSON_RCOND) @ U)
    return bool(np.max(np.abs(np.linalg.eigvals(C))) < 1.0)


def _solve_anderson(update, x0, *, damping, tol, max_iter, is_valid, min_damping,
                    keep_history, memory, stop=None, cut_back=None):
    """Plain damped steps until they contract, then Anderson type-II steps (see above)."""
    if memory < 1:
        raise ValueError(f"anderson memory must be >= 1, got {memory}")
    x = np.array(x0, dtype=float)
    shape = x.shape
    none = np.zeros((x.size, 0))  # no given secant pairs
    history = [x.copy()] if keep_history else []
    eta, rollbacks, accelerated = damping, 0, 0
    residual = np.inf
    norms: list[float] = []
    mode_aa = False
    steps: list[np.ndarray] = []
    escapes = 0
    X: list[np.ndarray] = []  # evaluated points (flattened)
    F: list[np.ndarray] = []  # their damped residuals η (T(x) - x)
    best = (np.inf, x.copy())
    trust, last_aa = ANDERSON_TRUST_START, False
    fallback = None  # the last plain iterate, while x is an accelerated or escape point
    for it in range(1, max_iter + 1):
        tx = np.asarray(update(x), dtype=float)
        if stop is not None and (halt := stop(tx)):
            return _fixed_point_result(tx, halt, it, update, residual, eta, history, rollbacks,
                                       escapes, accelerated)
        if not np.all(np.isfinite(tx)):
            if fallback is None:
                return _fixed_point_result(x, "invalid-update", it, update, residual, eta,
                                           history, rollbacks, escapes, accelerated)
            # an accelerated step left the map's domain: back to the last plain iterate
            x, fallback, mode_aa, X, F, norms, steps = fallback, None, False, [], [], [], []
            rollbacks, last_aa = rollbacks + 1, False
            trust = max(ANDERSON_TRUST_MIN, trust / 4.0)
            continue
        f = eta * (tx - x)
        residual = float(np.max(np.abs(f)))
        plain = x + f
        if np.all(np.abs(f) < tol):
            ok = is_valid is None or is_valid(plain)
            x_out = plain if ok else x
            if keep_history:
                history.append(x_out.copy())
            pairs = None
            if mode_aa and len(X) >= 2:
                dX, dF = _last_pairs(X, F, none, none, memory)
                pairs = (dX, dF / eta)
            return _fixed_point_result(x_out, "converged", it, update, residual, eta, history,
                                       rollbacks, escapes, accelerated, secant=pairs)
        if mode_aa and residual < best[0]:
            best = (residual, x.copy())
        if mode_aa and residual > 2.0 * best[0]:
            # Anderson went astray: back to the best point, plain steps until they contract,
            # and a smaller trust region for the next Anderson steps
            x, mode_aa, X, F, norms, steps = best[1].copy(), False, [], [], [], []
            trust, last_aa = max(ANDERSON_TRUST_MIN, trust / 4.0), False
            continue
        if last_aa and norms and residual < norms[-1]:
            trust = min(ANDERSON_TRUST_MAX, 2.0 * trust)
        last_aa = False
        norms = (norms + [residual])[-3:]
        steps = (steps + [f.copy()])[-3:]
        if not mode_aa and len(norms) == 3 and norms[2] < norms[1] < norms[0]:
            mode_aa, best = True, (residual, x.copy())
        new = plain
        if not mode_aa and len(steps) == 3:
            jump = _escape_jump(x, steps, is_valid)
            if jump is not None:
                new, steps, norms = jump, [], []
                escapes += 1
        if mode_aa:
            X = (X + [x.ravel().copy()])[-(memory + 1):]
            F = (F + [f.ravel().copy()])[-(memory + 1):]
            if len(X) >= 2:
                move, _ = _anderson_move(X, F, none, none, f.ravel(), memory)
                limit = trust * residual
                if np.max(np.abs(move)) > limit:  # trust region: at most trust x the plain step
                    move *= limit / np.max(np.abs(move))
                cand = (x.ravel() + move).reshape(shape)
                if (not _finite_valid(cand, is_valid) and np.all(np.isfinite(cand))
                        and _finite_valid(plain, is_valid)
                        and (cut_back is None or cut_back(cand))):
                    cand = _toward_valid(plain, cand, is_valid)
                if cand is not None and _finite_valid(cand, is_valid):
                    new, last_aa = cand, True
                    accelerated += 1
                else:  # the plain step, and a fresh secant history
                    X, F = [], []
        while not (np.all(np.isfinite(new)) and (is_valid is None or is_valid(new))):
            rollbacks += 1
            eta *= 0.5
            if eta < min_damping:
                return _fixed_point_result(x, "invalid-update", it, update, residual, eta,
                                           history, rollbacks, escapes, accelerated)
            new = x + 0.5 * (new - x)
            X, F = [], []
        fallback = plain if new is not plain and _finite_valid(plain, is_valid) else None
        x = new
        if keep_history:
            history.append(x.copy())
    return _fixed_point_result(x, "max-iter", max_iter, update, residual, eta, history,
                               rollbacks, escapes, accelerated)


ANDERSON_TRUST_START = 16.0  # an Anderson move is at most this many plain steps long ...
ANDERSON_TRUST_MIN = 4.0  # ... shrunk 4x (to this) after it went astray,
ANDERSON_TRUST_MAX = 1e6  # doubled (to this) after each step that lowered the residual
ANDERSON_RCOND = 1e-8  # the secant fit drops singular values below this x the largest


ANDERSON_BACKTRACK = 10  # bisections of an Anderson move that leaves the domain


def _toward_valid(plain, cand, is_valid):
    """The valid point ``plain + t (cand - plain)`` of largest ``t`` in [0, 1) found by
    ``ANDERSON_BACKTRACK`` bisections (``plain`` valid), or None if only ``t = 0`` is.

    An Anderson move that leaves the domain mostly does so in a direction that converges to
    its edge (an overlap decaying to its invariant 0, overshot by a secant step fitted to
    a slower direction): the move cut back to the edge keeps its gain in the others."""
    lo, hi = 0.0, 1.0
    for _ in range(ANDERSON_BACKTRACK):
        mid = 0.5 * (lo + hi)
        if _finite_valid(plain + mid * (cand - plain), is_valid):
            lo = mid
        else:
            hi = mid
    return None if lo == 0.0 else plain + lo * (cand - plain)


def _finite_valid(x, is_valid) -> bool:
    return bool(np.all(np.isfinite(x)) and (is_valid is None or is_valid(x)))


ESCAPE_GROWTH = 4.0
ESCAPE_MAX_DISTANCE = 0.05


def _escape_jump(x, steps, is_valid):
    """Linear escape steps that grow the distance ``ESCAPE_GROWTH``-fold, or None.

    Only near the unstable point: the distance ``|d| / (r - 1)`` it implies must be below
    ``ESCAPE_MAX_DISTANCE``.  Further out the map is not linear, and steady growing
    steps are just a slow start between two fixed points."""
    r2 = _geometric_ratio(steps)
    if r2 is None or not 1.0 < r2 < 2.0:
        return None
    if float(np.max(np.abs(steps[2]))) / (r2 - 1.0) > ESCAPE_MAX_DISTANCE:
        return None
    k = int(np.ceil(np.log(ESCAPE_GROWTH) / np.log(r2)))
    while k >= 2:
        cand = x + steps[2] * (r2 * (r2**k - 1.0) / (r2 - 1.0))
        if np.all(np.isfinite(cand)) and (is_valid is None or is_valid(cand)):
            return cand
        k //= 2
    return None


# ------------------------------------------------------------------------- root finding

FD_STEP = 1e-6  # relative forward-difference step of fd_jacobian


def fd_jacobian(residual: Callable[[np.ndarray], np.ndarray], x: np.ndarray, r0: np.ndarray,
                step: float = FD_STEP) -> np.ndarray:
    """Forward-difference Jacobian ``J[:, i] = (R(x + h_i e_i) - r0) / h_i`` of ``residual``
    at ``x`` (``r0 = R(x)``), ``h_i = step · max(1, |x_i|)``."""
    J = np.empty((len(r0), len(x)))
    for i in range(len(x)):
        h = step * max(1.0, abs(x[i]))
        xh = x.copy()
        xh[i] += h
        J[:, i] = (residual(xh) - r0) / h
    return J


NEWTON_METHODS = ("broyden", "chord")
NEWTON_MESSAGES = {
    "converged": "Newton step below tol",
    "max-iter": "iteration cap reached",
    "invalid-residual": "residual not finite",
    "invalid-jacobian": "forward-difference Jacobian not finite",
    "singular-jacobian": "Jacobian singular",
    "left-domain": "iterate left the domain",
}


def newton(
    residual: Callable[[np.ndarray], Any],
    x0: np.ndarray,
    *,
    tol: float,
    max_iter: int,
    jacobian: np.ndarray | None = None,
    method: str = "broyden",
    refresh: bool = False,
    in_domain: Callable[[np.ndarray], bool] | None = None,
    aux: bool = False,
    fd_step: float = FD_STEP,
) -> SolveResult:
    """Newton steps ``x <- x - J⁻¹ R(x)`` for ``R(x) = 0`` until ``max|step| < tol``.

    ``J`` starts as ``jacobian``, else as :func:`fd_jacobian` at ``x0``; ``method``
    "broyden" applies Broyden's rank-one update ``J += (ΔR - J Δx) Δxᵀ / |Δx|²`` after
    every step, "chord" keeps ``J`` fixed.  ``refresh=True`` replaces a Broyden update by a
    fresh forward-difference ``J`` when the residual did not decrease (not twice in a
    row).  With ``aux=True`` the residual returns ``(R, aux)``.

    ``x`` is the evaluated point whose next step is below ``tol`` (the root is the
    residual's own; ``J`` only steers).  Statuses: ``converged``, ``max-iter``,
    ``invalid-residual``, ``invalid-jacobian``, ``singular-jacobian``, ``left-domain``
    (``in_domain`` false at a new iterate).  ``residual``: ``max|R(x)|``.  Extras:
    ``jacobian`` (the last ``J``), ``aux`` (at ``x``; None if never evaluated).
    """
    if method not in NEWTON_METHODS:
        raise ValueError(f"method must be one of {NEWTON_METHODS}, got {method!r}")
    if tol <= 0 or max_iter < 1:
        raise ValueError("tol must be > 0 and max_iter >= 1")
    calls = _Counted(residual)

    def R(x):
        out = calls(x)
        return (np.asarray(out[0], dtype=float), out[1]) if aux else \
            (np.asarray(out, dtype=float), None)

    def fd(x, r):
        return fd_jacobian(lambda xh: R(xh)[0], x, r, fd_step)

    x = np.array(x0, dtype=float)
    J = None if jacobian is None else np.array(jacobian, dtype=float)
    prev, fresh, a, res_norm = None, False, None, math.nan

    def result(status, it, point):
        return SolveResult(point, status == "converged", status, NEWTON_MESSAGES[status], it,
                           calls.calls, res_norm, {"jacobian": J, "aux": a})

    for it in range(1, max_iter + 1):
        r, a = R(x)
        res_norm = float(np.max(np.abs(r))) if r.size else 0.0
        if not np.all(np.isfinite(r)):
            return result("invalid-residual", it, x)
        if prev is not None:
            if refresh and np.max(np.abs(r)) >= np.max(np.abs(prev[1])) and not fresh:
                J, fresh = fd(x, r), True
            else:
                if method == "broyden":
                    dx, dr = x - prev[0], r - prev[1]
                    J = J + np.outer(dr - J @ dx, dx) / (dx @ dx)
                fresh = False
        if J is None:
            J, fresh = fd(x, r), True
        if not np.all(np.isfinite(J)):
            return result("invalid-jacobian", it, x)
        try:
            step = -np.linalg.solve(J, r)
        except np.linalg.LinAlgError:
            return result("singular-jacobian", it, x)
        if step.size == 0 or np.max(np.abs(step)) < tol:
            return result("converged", it, x)
        prev = (x, r)
        x = x + step
        if in_domain is not None and not in_domain(x):
            return result("left-domain", it, x)
    return result("max-iter", max_iter, x)


class _NotFinite(Exception):
    """Internal to :func:`brent`: the function returned a non-finite value."""


def brent(f: Callable[..., float], a: float, b: float, *, args: tuple = (),
          xtol: float = 2e-12, rtol: float = 4 * np.finfo(float).eps,
          maxiter: int = 100) -> SolveResult:
    """Root of ``f`` in ``[a, b]`` where it changes sign, by ``scipy.optimize.brentq``.

    Statuses: ``converged``, ``max-iter``, ``not-bracketed`` (``f(a)``, ``f(b)`` of one
    sign), ``invalid-value`` (``f`` not finite at some point; the search stops there).
    ``residual``: ``|f(x)|``.  Extras: ``bracket``.
    """
    values: dict[float, float] = {}

    def g(x, *fargs):
        y = f(x, *fargs)
        values[x] = y
        if not math.isfinite(y):
            raise _NotFinite(x)
        return y

    try:
        root, info = brentq(g, a, b, args=args, xtol=xtol, rtol=rtol, maxiter=maxiter,
                            full_output=True, disp=False)
    except _NotFinite as bad:
        return SolveResult(bad.args[0], False, "invalid-value",
                           f"f not finite at {bad.args[0]!r}", 0, len(values), math.nan,
                           {"bracket": (a, b)})
    except ValueError:
        fa, fb = values.get(a), values.get(b)
        if fa is None or fb is None or np.sign(fa) * np.sign(fb) <= 0:
            raise
        return SolveResult(a, False, "not-bracketed", f"f({a}) and f({b}) have one sign", 0,
                           len(values), math.nan, {"bracket": (a, b)})
    status = "converged" if info.converged else "max-iter"
    return SolveResult(root, info.converged, status, info.flag, info.iterations,
                       info.function_calls, abs(values.get(root, math.nan)),
                       {"bracket": (a, b)})


def bisect(predicate: Callable[[float], bool], lo: float, hi: float, tol: float
           ) -> SolveResult:
    """The point where ``predicate`` turns True (False at ``lo``, True at ``hi``): the
    bracket is halved until ``hi - lo <= 2 tol``.

    ``x``: the final bracket's midpoint, ``residual``: its half-width.  Statuses:
    ``converged``, ``not-bracketed`` (``predicate(lo)`` True or ``predicate(hi)`` False).
    Extras: ``bracket``.
    """
    calls = _Counted(predicate)
    if calls(lo) or not calls(hi):
        return SolveResult(0.5 * (lo + hi), False, "not-bracketed",
                           f"no transition bracketed in [{lo}, {hi}]", 0, calls.calls,
                           0.5 * (hi - lo), {"bracket": (lo, hi)})
    it = 0
    while hi - lo > 2 * tol:
        mid = 0.5 * (lo + hi)
        it += 1
        if calls(mid):
            hi = mid
        else:
            lo = mid
    return SolveResult(0.5 * (lo + hi), True, "converged", "bracket below 2 tol", it,
                       calls.calls, 0.5 * (hi - lo), {"bracket": (lo, hi)})
