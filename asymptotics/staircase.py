"""Sequential staircase thresholds of the attention channel (THEORY.md §5).

Stage 1: the layer with the smallest Q = 0 threshold (:func:`weak_recovery_thresholds`) is
learned first.  At a later stage the learned set ``S`` (newest layer ``j``, learned from
``α_S`` on) sits at the fixed point of the SE restricted to ``S``; the other layers are
pinned to ``Q_kk = Q_kS = 0`` (exact by their sign symmetry; pinned explicitly because an
asymmetric inner rule gives ``E[z_k | y, ω] ≠ 0`` numerically).  With

    g = V⁻¹(E[z | y, ω] − ω),   m_i(q) = E Σ_l g_{l,i}²    (independent of α),

the restricted fixed point ``q = Q_S*(α)`` solves ``q_i / (1 − q_i) = α m_i(q)``, ``i ∈ S``.
For rank 1 the linearisation ``F_U`` in the unlearned block is diagonal, and layer ``k``
becomes unstable where

    α λ_k(q) = 1,   λ_k(q) = E ‖E[z_k z_kᵀ | y, ω] − I‖²_F.

The next learned layer is the one with the smallest such ``α ≥ α_S``; it joins ``S`` and
the next stage starts from its threshold, until every layer is placed.

The branch ``Q_S*(α)`` is followed in ``s = q_j``, where it is regular (it starts at
``s = 0``, ``α = α_S``):

    α(s) = s / ((1 − s) m_j(q)),   y_i = log(α(s) m_i(q)),  y_i = logit q_i,  i ∈ S∖{j},

the second a Broyden–Newton solve (:func:`~asymptotics.solver.newton`) warm-started
along ``s`` (a solve that does not converge gives status ``not-converged``, never a
number).  The threshold is the first sign change of ``H_k(s) = α(s) λ_k(q(s)) − 1`` on a
grid of ``s``, refined by Newton's method on the joint system
``(y − log(α m_rest), H_k) = 0`` in ``(s, y)`` inside that bracket (Brent's method,
:func:`~asymptotics.solver.brent`, on ``H_k(s)`` if Newton leaves it); ``α(s)`` must
increase on the bracket (the AMP branch), else the status is ``non-monotone``.  For
``S = {last}`` no solve is needed (``s = q_last``): ``H_k(q) = q λ_k(q) − (1 − q) m(q)``,
evaluated with the unlearned layers' mixers precomputed.

Errors: the outer expectation is split into ``groups`` independent scrambled Sobol' nets
(common random numbers: the same nets at every α); each net follows the whole staircase,
the value is the mean over nets with their standard error, combined with the inner-rule
error: the same threshold with the embedded coarser inner weights (a Broyden–Newton solve
of the joint system ``(y, H_k) = 0`` in ``(s, y)`` from the primary root and its Jacobian
at a general stage, to ``COARSE_TOL``: it only enters the error).  Thresholds of two
candidates within twice their combined error of each other make the placed layer
``simultaneous``; one unstable as soon as ``S`` is learned (``H_k ≥ 0`` at the first
grid point) is ``at-previous`` with threshold ``α_S``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy.special import expit, logit

from .channels.base import Channel
from .checks import MAX_RESOLUTION, MAX_SOBOL_LOG2, check_int, check_number
from .integrate import sobol_nets
from .solver import SolveResult, brent, fd_jacobian, newton
from .state_evolution import outer_moments
from .thresholds import ThresholdResult, ThresholdSettings, weak_recovery_thresholds


@dataclass(frozen=True)
class StaircaseSettings:
    """Numerical settings: ``groups`` nets of ``2^log2_points`` outer points, inner grid
    ``resolution``, thresholds located to ``q_tol`` in the branch parameter, restricted
    fixed points solved to ``newton_tol`` in ``logit q`` within ``newton_max`` steps.
    Every field is checked here (``ValueError`` naming it)."""

    groups: int = 4
    log2_points: int = 11
    resolution: int = 0
    seed: int = 0
    q_tol: float = 1e-10
    q_grid: int = 16
    newton_tol: float = 1e-9
    newton_max: int = 40

    def __post_init__(self):
        check_int("groups", self.groups, 2)
        check_int("log2_points", self.log2_points, 1, MAX_SOBOL_LOG2)
        check_int("resolution", self.resolution, 0, MAX_RESOLUTION)
        check_int("seed", self.seed, 0)
        check_number("q_tol", self.q_tol, above=0)
        check_int("q_grid", self.q_grid, 2)
        check_number("newton_tol", self.newton_tol, above=0)
        check_int("newton_max", self.newton_max, 1)


@dataclass
class StaircaseThreshold:
    """The α at which ``layer`` starts to be learned, computed with the layers ``learned``
    (1-based, in learning order) at their restricted fixed point; ``order`` is its stage
    (1: learned first, from Q = 0; 0: not placed)."""

    layer: int  # 1-based
    alpha: float
    stderr: float
    status: str  # see STATUSES
    learned: list[int]
    q_last: float  # overlap of the last layer at the threshold
    group_alphas: list[float] = field(default_factory=list)
    inner_error: float = 0.0
    order: int = 0
    overlaps: list[float] = field(default_factory=list)  # diag Q at the threshold (mean)


STATUSES = ("learned-first", "finite", "simultaneous", "at-previous", "non-monotone",
            "no-crossing", "not-converged")


class _RestrictedProblem:
    """m(q) and λ_k(q) on one outer net, for both inner weight sets."""

    def __init__(self, channel: Channel, points: np.ndarray):
        self.ch = channel
        L, depth = channel.seq_len, channel.dim
        self.xi = points[:, :L]
        self.u = points[:, L:].reshape(-1, L, depth)

    def evaluate(self, q: float):
        ch = self.ch
        L, depth = ch.seq_len, ch.dim
        omega = math.sqrt(q) * self.xi
        v = 1.0 - q
        Z = self.u.copy()
        Z[:, :, -1] = omega + math.sqrt(v) * self.u[:, :, -1]
        a = ch.observe(Z)
        _, mean_last, blocks = ch.unlearned_inner_moments(a, omega, v)
        g = (mean_last - omega[None]) / v
        m = np.mean(np.sum(g**2, axis=-1), axis=-1)  # (S,)
        G = blocks[:, :, : depth - 1] - np.eye(L)
        lam = np.mean(np.sum(G**2, axis=(-1, -2)), axis=1)  # (S, depth-1)
        return m, lam


def _q_grid(n: int) -> np.ndarray:
    """Points in (0, 1) dense near both ends: q = (1 + tanh(t))/2."""
    t = np.linspace(-6.0, 8.0, n)
    return 0.5 * (1.0 + np.tanh(t))


MONOTONE_FROM_Q = 1e-2  # below this α(q) is flat to within Monte Carlo noise


class _Evaluations:
    """Cache of ``(m, λ)`` per ``q`` on one outer net, shared by all inner weight sets."""

    def __init__(self, problem: _RestrictedProblem):
        self.problem = problem
        self.cache: dict[float, tuple] = {}

    def __call__(self, q: float):
        if q not in self.cache:
            self.cache[q] = self.problem.evaluate(q)
        return self.cache[q]


def _locate(ev: _Evaluations, k: int, s: int, settings: StaircaseSettings):
    """Root in q of H_k on inner weight set s; returns (alpha, q, status).

    The grid of ``q`` is scanned upwards and stops at the first sign change, so points
    beyond the threshold (where ``v = 1 - q`` is tiny) are never needed.
    """

    def H(q):
        m, lam = ev(q)
        return q * lam[s, k] - (1.0 - q) * m[s]

    def alpha_of(q):
        m, _ = ev(q)
        return q / ((1.0 - q) * m[s])

    qs = _q_grid(settings.q_grid)
    prev = None
    for i, q in enumerate(qs):
        h = H(q)
        if h >= 0:
            if prev is None:
                return alpha_of(q), q, "at-previous"  # unstable as soon as the last layer is
            seen = [x for x in qs[: i + 1] if x >= MONOTONE_FROM_Q]
            alphas = np.array([alpha_of(x) for x in seen])
            status = "finite" if np.all(np.diff(alphas) > 0) else "non-monotone"
            root = brent(H, prev, q, xtol=settings.q_tol, rtol=1e-13)
            if not root.converged:
                return math.nan, math.nan, "not-converged"
            return alpha_of(root.x), root.x, status
        prev = q
    return math.inf, qs[-1], "no-crossing"


S_GRID = (0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99, 0.995,
          0.999)  # newest learned layer's overlap s, scanned upwards at a general stage
MONOTONE_FROM_S = 0.1  # below this α(s) carries the inner-rule bias of E[z_j | y, ω] ~ 0
SIMULTANEOUS_SIGMAS = 2.0  # thresholds closer than this many combined errors are a tie
SCAN_TOL = 1e-4  # logit-q tolerance of the scan's solves (their H only needs its sign)
SCAN_SIGN_MARGIN = 1e-3  # |H| below which a scan point is solved to newton_tol
FD_STEP = 1e-6  # finite-difference step in logit q and s (the map is smooth: fixed nodes)
COARSE_TOL = 1e-5  # step tolerance (s, logit q) of the coarse-rule joint solve: its root
# enters only the inner-error estimate, a difference of 1e-3-1e-2 in s (changed < 1 %)


class _OuterNet:
    """One outer net at a general diagonal ``q`` (unlearned entries exactly 0):
    ``ω = sqrt(q) ξ``, ``Z* = ω + sqrt(1 - q) u`` (:func:`outer_moments`, the SE map's);
    returns ``m_i(q)`` and ``λ_i(q)`` on both inner weight sets, cached per ``q``."""

    def __init__(self, channel: Channel, points: np.ndarray, extra: np.ndarray):
        L, depth = channel.seq_len, channel.dim
        self.ch = channel
        self.xi = np.concatenate([extra.reshape(-1, L, depth - 1), points[:, :L, None]], axis=-1)
        self.u = points[:, L:].reshape(-1, L, depth)
        self.cache: dict[bytes, tuple[np.ndarray, np.ndarray]] = {}

    def moments(self, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        key = q.tobytes()
        if key not in self.cache:
            L, depth = self.ch.seq_len, self.ch.dim
            # only the per-layer blocks of the second moment enter λ
            omega, fm = outer_moments(self.ch, self.xi, self.u, q, second="layers")
            v = 1.0 - q
            g = (fm.mean - omega[None]) / v
            m = np.mean(np.sum(g**2, axis=2), axis=1)  # (S, depth)
            blocks = np.stack([fm.second[:, :, :, i, :, i] for i in range(depth)], axis=2)
            lam = np.mean(np.sum((blocks - np.eye(L)) ** 2, axis=(-1, -2)), axis=1)
            self.cache[key] = (m, lam)
        return self.cache[key]


class _Branch:
    """Restricted SE branch of the learned set on one net, followed in ``s = q_j`` (``j``
    the newest learned layer); the other learned overlaps solve ``y = log(α(s) m(q))``."""

    def __init__(self, net: _OuterNet, learned: list[int], q_start: np.ndarray,
                 settings: StaircaseSettings):
        self.net, self.settings = net, settings
        self.depth = net.ch.dim
        self.j, self.rest = learned[-1], np.array(learned[:-1], dtype=int)
        self.y_start = logit(q_start[self.rest])
        self.J: np.ndarray | None = None  # Broyden Jacobian, carried from solve to solve
        self.solved: dict[float, SolveResult] = {}  # converged solves
        self.tol_of: dict[float, float] = {}
        self.failure: SolveResult | None = None  # the last solve that did not converge

    def q_of(self, s: float, y: np.ndarray) -> np.ndarray:
        """Full diagonal of Q: ``s`` on the newest layer, ``expit(y)`` on the others
        learned, exactly 0 on the unlearned layers (pinned)."""
        q = np.zeros(self.depth)
        q[self.rest] = expit(y)
        q[self.j] = s
        return q

    def residual(self, s: float, y: np.ndarray, w: int = 0):
        """``(E, α, λ, q)`` on inner weight set ``w``: ``E = y - log(α m_rest)``; ``E`` and
        ``α`` are NaN where the restricted map is invalid (``α`` not finite and > 0, or
        ``E`` not finite)."""
        q = self.q_of(s, y)
        m, lam = self.net.moments(q)
        alpha = s / ((1.0 - s) * m[w, self.j])
        with np.errstate(divide="ignore", invalid="ignore"):
            E = y - np.log(alpha * m[w, self.rest])
        if not (np.isfinite(alpha) and alpha > 0 and np.all(np.isfinite(E))):
            return np.full_like(E, np.nan), math.nan, lam[w], q
        return E, alpha, lam[w], q

    def _predict(self, s: float) -> np.ndarray:
        known = sorted(self.solved, key=lambda x: abs(x - s))[:2]
        if not known:
            return self.y_start.copy()
        if len(known) == 1:
            return self.solved[known[0]].x.copy()
        (s0, s1), (y0, y1) = known, (self.solved[known[0]].x, self.solved[known[1]].x)
        return y0 + (y1 - y0) * (s - s0) / (s1 - s0)

    def store(self, s: float, y: np.ndarray, alpha: float, lam: np.ndarray, q: np.ndarray,
              tol: float, iterations: int = 0, evaluations: int = 0,
              residual: float = 0.0) -> SolveResult:
        """Record the restricted fixed point at ``s``, solved to ``tol``."""
        res = SolveResult(y, True, "converged", f"restricted fixed point at s = {s}",
                          iterations, evaluations, residual,
                          {"alpha": alpha, "lam": lam, "q": q})
        self.solved[s], self.tol_of[s] = res, tol
        return res

    def solve(self, s: float, tol: float | None = None) -> SolveResult:
        """The restricted fixed point at ``s``: ``x = y``, extras ``alpha``, ``lam``, ``q``.

        Broyden–Newton (:func:`newton`: forward-difference Jacobian refreshed where the
        residual grows, carried between calls) from the predictor, converged when the
        Newton step is below ``tol`` (default ``newton_tol``); otherwise the result's
        status says why.  Converged solves are cached."""
        tol = self.settings.newton_tol if tol is None else tol
        if s in self.solved and self.tol_of[s] <= tol:
            return self.solved[s]
        y = self.solved[s].x.copy() if s in self.solved else self._predict(s)
        if len(y) == 0:
            E, alpha, lam, q = self.residual(s, y)
            if math.isnan(alpha):
                self.failure = SolveResult(y, False, "invalid-residual",
                                           f"invalid restricted map at q = {q}", 0, 1)
                return self.failure
            return self.store(s, y, alpha, lam, q, 0.0, evaluations=1)
        res = newton(lambda yh: self._residual_aux(s, yh), y, tol=tol,
                     max_iter=self.settings.newton_max, jacobian=self.J, method="broyden",
                     refresh=True, aux=True, fd_step=FD_STEP)
        self.J = res.jacobian
        if not res.converged:
            res.message = f"restricted fixed point at s = {s}: {res.message}"
            self.failure = res
            return res
        alpha, lam, q = res.aux
        return self.store(s, res.x, alpha, lam, q, tol, res.iterations, res.evaluations,
                          res.residual)

    def _residual_aux(self, s: float, y: np.ndarray):
        E, alpha, lam, q = self.residual(s, y)
        return E, (alpha, lam, q)

    def H(self, s: float, k: int, tol: float | None = None) -> float:
        """``α λ_k - 1`` at the restricted fixed point; NaN where its solve fails."""
        res = self.solve(s, tol)
        return res.alpha * res.lam[k] - 1.0 if res.converged else math.nan

    def scan_H(self, s: float, k: int) -> float:
        """``H_k(s)`` for the scan: solved to ``SCAN_TOL``, which decides its sign unless
        ``|H_k| < SCAN_SIGN_MARGIN`` (then solved to ``newton_tol``); NaN on failure."""
        h = self.H(s, k, SCAN_TOL)
        return h if math.isnan(h) or abs(h) >= SCAN_SIGN_MARGIN else self.H(s, k)

    def joint_residual(self, z: np.ndarray, k: int, w: int = 0):
        """``R(s, y) = (E, α λ_k - 1)`` on inner weight set ``w``, and ``(α, λ, q)``."""
        E, alpha, lam, q = self.residual(float(z[0]), z[1:], w)
        return np.concatenate([E, [alpha * lam[k] - 1.0]]), (alpha, lam, q)

    def joint_jacobian(self, z: np.ndarray, k: int, R0: np.ndarray) -> np.ndarray:
        """Forward-difference Jacobian of the joint residual (primary weights) at ``z``."""
        return fd_jacobian(lambda zh: self.joint_residual(zh, k)[0], z, R0, FD_STEP)

    def joint_solve(self, z0: np.ndarray, k: int, jacobian: np.ndarray | None = None,
                    w: int = 0, tol: float | None = None) -> SolveResult:
        """Broyden–Newton on ``R(s, y) = 0`` (inner weight set ``w``) from ``z0`` to step
        ``tol`` (default ``newton_tol``), with ``s`` kept in (0, 1); extras
        ``aux = (α, λ, q)`` and ``jacobian``."""
        return newton(lambda z: self.joint_residual(z, k, w), z0,
                      tol=self.settings.newton_tol if tol is None else tol,
                      max_iter=self.settings.newton_max,
                      jacobian=jacobian, method="broyden",
                      in_domain=lambda z: 0.0 < z[0] < 1.0, aux=True, fd_step=FD_STEP)


@dataclass
class _Located:
    alpha: float
    coarse: float
    status: str
    q: np.ndarray  # diag Q at the threshold
    message: str = ""

    @classmethod
    def failed(cls, depth: int, message: str) -> _Located:
        return cls(math.nan, math.nan, "not-converged", np.full(depth, math.nan), message)


def _bracketed_root(branch: _Branch, k: int, s_a: float, s_b: float,
                    settings: StaircaseSettings) -> SolveResult:
    """Root of ``H_k`` on the branch in ``[s_a, s_b]`` (a sign change), with the Jacobian
    of the joint system there (extra ``jacobian``).  Newton on ``R(s, y) = 0`` from the
    secant point; if it does not converge inside the bracket, Brent's method on ``H_k(s)``
    (each value a restricted solve), then the Jacobian at its root."""
    h_a, h_b = branch.scan_H(s_a, k), branch.scan_H(s_b, k)
    s0 = s_a - h_a * (s_b - s_a) / (h_b - h_a)
    z0 = np.concatenate([[s0], branch._predict(s0)])
    res = branch.joint_solve(z0, k)
    if res.converged and s_a <= res.x[0] <= s_b:
        z = res.x
        alpha, lam, q = res.aux
        branch.store(float(z[0]), z[1:], alpha, lam, q, settings.newton_tol, res.iterations,
                     res.evaluations, res.residual)
        res.x = float(z[0])
        return res
    root = brent(branch.H, s_a, s_b, args=(k,), xtol=settings.q_tol, rtol=1e-13)
    if not root.converged:
        return root
    z = np.concatenate([[root.x], branch.solve(root.x).x])
    J = branch.joint_jacobian(z, k, branch.joint_residual(z, k)[0])
    if not np.all(np.isfinite(J)):
        return SolveResult(root.x, False, "invalid-jacobian",
                           "joint Jacobian not finite at Brent's root", root.iterations,
                           root.evaluations, root.residual, {"jacobian": J})
    root.extras["jacobian"] = J
    return root


def _locate_general(branch: _Branch, k: int, alpha_prev: float,
                    settings: StaircaseSettings) -> _Located:
    """First sign change of ``H_k(s)`` on ``S_GRID``, refined by :func:`_bracketed_root`;
    the coarse-rule threshold by Broyden–Newton from the root and its Jacobian."""
    prev = None
    alphas = []
    for s in S_GRID:
        h = branch.scan_H(s, k)
        if s not in branch.solved:  # the restricted solve failed
            return _Located.failed(branch.depth, branch.failure.message)
        if s >= MONOTONE_FROM_S:
            alphas.append(branch.solved[s].alpha)
        if h >= 0:
            if prev is None:  # unstable as soon as the newest layer is learned
                q = branch.q_of(0.0, branch.y_start)
                return _Located(alpha_prev, alpha_prev, "at-previous", q)
            located = _bracketed_root(branch, k, prev, s, settings)
            if not located.converged:
                return _Located.failed(branch.depth, located.message)
            root = located.x
            sol = branch.solve(root)
            if not sol.converged:
                return _Located.failed(branch.depth, sol.message)
            status = "finite" if np.all(np.diff(alphas) > 0) else "non-monotone"
            coarse = branch.joint_solve(np.concatenate([[root], sol.x]), k, located.jacobian,
                                        w=1, tol=max(settings.newton_tol, COARSE_TOL))
            return _Located(sol.alpha, coarse.aux[0] if coarse.converged else math.nan,
                            status, sol.q)
        prev = s
    return _Located(math.inf, math.inf, "no-crossing", branch.solved[S_GRID[-1]].q)


def _locate_explicit(ev: _Evaluations, k: int, depth: int,
                     settings: StaircaseSettings) -> _Located:
    """Only the last layer learned: root in ``q_last`` of ``H_k`` (both inner weight sets)."""
    a0, q0, status = _locate(ev, k, 0, settings)
    a1, _, _ = _locate(ev, k, 1, settings)
    q = np.zeros(depth)
    q[-1] = q0 if math.isfinite(a0) else math.nan
    return _Located(float(a0), float(a1), status, q)


_STATUS_PRIORITY = ("not-converged", "no-crossing", "non-monotone", "at-previous", "finite")


def _aggregate(layer: int, located: list[_Located], learned: list[int]) -> StaircaseThreshold:
    """Mean over nets ± standard error, combined with the inner-rule error."""
    primary = np.array([x.alpha for x in located])
    coarse = np.array([x.coarse for x in located])
    statuses = {x.status for x in located}
    status = next(s for s in _STATUS_PRIORITY if s in statuses)
    overlaps = np.mean([x.q for x in located], axis=0)
    learned1 = [i + 1 for i in learned]
    if not np.all(np.isfinite(primary)):
        alpha = math.nan if status == "not-converged" else math.inf
        return StaircaseThreshold(layer + 1, alpha, math.nan if math.isnan(alpha) else 0.0,
                                  status, learned1, float(overlaps[-1]), primary.tolist(),
                                  overlaps=overlaps.tolist())
    se = primary.std(ddof=1) / math.sqrt(len(primary))
    inner_err = float(np.mean(np.abs(primary - coarse)))
    return StaircaseThreshold(
        layer + 1, float(primary.mean()), float(math.hypot(se, inner_err)), status, learned1,
        float(overlaps[-1]), primary.tolist(), inner_err, overlaps=overlaps.tolist(),
    )


def _tie(a: float, ea: float, b: float, eb: float) -> bool:
    return abs(a - b) < SIMULTANEOUS_SIGMAS * math.hypot(ea, eb)


def staircase_thresholds(
    channel: Channel, settings: StaircaseSettings | None = None,
    threshold_settings: ThresholdSettings | None = None, q0: ThresholdResult | None = None,
) -> list[StaircaseThreshold]:
    """The sequential staircase: one entry per layer (sorted by layer), with its stage
    ``order``, the learned set it was computed with and its threshold (module docstring).

    The first layer comes from the Q = 0 thresholds ``q0`` (computed with
    ``threshold_settings`` if not given).  For depth 2 the second stage is the explicit
    last-layer computation.  Depth 1 has no staircase: ``[]``.
    """
    settings = settings or StaircaseSettings()
    if not channel.capabilities.staircase:
        raise TypeError(f"staircase thresholds need a channel with the staircase capability "
                        f"(restricted moments), not {type(channel).__name__}")
    if settings.groups < 2:
        raise ValueError("staircase needs at least 2 groups for a standard error")
    depth, L = channel.dim, channel.seq_len  # one direction per layer
    if depth == 1:
        return []
    q0 = q0 or weak_recovery_thresholds(channel, threshold_settings)
    ch = channel.refined(settings.resolution, settings.seed)
    rng = np.random.default_rng(settings.seed)  # one stream: the (ξ_last, u) nets, then ξ_U
    points = sobol_nets(L + L * depth, settings.log2_points, settings.groups, rng)
    extra = sobol_nets(L * (depth - 1), settings.log2_points, settings.groups, rng)
    explicit = [_Evaluations(_RestrictedProblem(ch, p)) for p in points]
    nets = [_OuterNet(ch, p, x) for p, x in zip(points, extra, strict=True)]

    a0 = np.array([dd.alpha_c for dd in q0.directions])
    e0 = np.array([dd.stderr for dd in q0.directions])
    first = int(np.argmin(a0))
    tie = any(_tie(a0[first], e0[first], a0[k], e0[k]) for k in range(depth) if k != first)
    out = [StaircaseThreshold(first + 1, float(a0[first]), float(e0[first]),
                              "simultaneous" if tie else "learned-first", [], 0.0,
                              order=1, overlaps=[0.0] * depth)]
    learned = [first]
    alpha_prev = np.full(settings.groups, a0[first])
    q_prev = np.zeros((settings.groups, depth))
    while len(learned) < depth:
        branches = None
        if learned != [depth - 1]:
            branches = [_Branch(n, learned, q_prev[g], settings) for g, n in enumerate(nets)]
        found: dict[int, tuple[StaircaseThreshold, list[_Located]]] = {}
        for k in (k for k in range(depth) if k not in learned):
            located = []
            for g in range(settings.groups):
                if branches is None:
                    located.append(_locate_explicit(explicit[g], k, depth, settings))
                    continue
                located.append(_locate_general(branches[g], k, alpha_prev[g], settings))
            found[k] = (_aggregate(k, located, learned), located)
        finite = [k for k, (t, _) in found.items() if math.isfinite(t.alpha)]
        if not finite:  # the staircase ends: the rest are not placed (order 0)
            out.extend(t for t, _ in found.values())
            break
        nxt = min(finite, key=lambda k: found[k][0].alpha)
        t, located = found[nxt]
        t.order = len(learned) + 1
        if t.status == "finite" and any(
            _tie(t.alpha, t.stderr, found[k][0].alpha, found[k][0].stderr)
            for k in finite if k != nxt
        ):
            t.status = "simultaneous"
        out.append(t)
        learned.append(nxt)
        alpha_prev = np.array([x.alpha for x in located])
        q_prev = np.array([x.q for x in located])
    return sorted(out, key=lambda t: t.layer)


def staircase_table(channel: Channel, settings: StaircaseSettings | None = None,
                    threshold_settings: ThresholdSettings | None = None) -> list[dict]:
    """Q = 0 thresholds and the sequential staircase side by side, one row per layer."""
    q0 = weak_recovery_thresholds(channel, threshold_settings)
    stairs = {s.layer: s for s in staircase_thresholds(channel, settings, q0=q0)}
    rows = q0.rows("attention")
    for row in rows:
        s = stairs.get(row["direction"])
        row["staircase_alpha"] = row["alpha_c"] if s is None else s.alpha
        row["staircase_stderr"] = row["stderr"] if s is None else s.stderr
        row["staircase_status"] = "learned-first" if s is None else s.status
        row["staircase_order"] = 1 if s is None else s.order
        row["staircase_learned"] = ",".join(map(str, s.learned)) if s and s.learned else None
    return rows
