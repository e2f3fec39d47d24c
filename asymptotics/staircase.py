"""Staircase (layer-by-layer) thresholds of the attention channel (THEORY.md §5).

With the last layer learned at overlap ``q`` and the first ``depth-1`` layers unlearned
(``Q_UU = Q_Ul = 0``, exact by their sign symmetry), the restricted SE has
``Q̂_last = α m(q)`` with

    m(q) = E Σ_l g_l²,   g = (E[z_last | y, ω] - ω) / (1 - q),   ω = sqrt(q) ξ,

which does not depend on α.  Its fixed point is therefore explicit in ``q``:
``α(q) = q / ((1 - q) m(q))``.  The unlearned layer k becomes unstable where
``α λ_k(q) = 1``, ``λ_k(q) = E ‖E[z_k z_kᵀ | y, ω] - I‖²_F``, i.e. at the root of

    H_k(q) = q λ_k(q) - (1 - q) m(q),

found by bracketing on a grid of ``q`` and Brent's method.  Every evaluation is one pass of
the fibre kernel with the unlearned layers' mixers precomputed.

Errors: the outer expectation is split into ``groups`` independent scrambled Sobol' nets;
the threshold is located in each, and the reported value is their mean with the standard
error across groups, combined with the inner-rule error (the same root located with the
embedded coarser inner rule).  The restricted branch must be the AMP branch: ``α(q)``
must increase on the bracket, otherwise the result says so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import brentq
from scipy.special import ndtri
from scipy.stats import qmc

from .channels.attention import AttentionChannel, default_inner_rule
from .thresholds import ThresholdSettings, weak_recovery_thresholds


@dataclass(frozen=True)
class StaircaseSettings:
    """Numerical settings: ``groups`` nets of ``2^log2_points`` outer points, inner grid
    ``resolution``, ``q`` located to ``q_tol``."""

    groups: int = 4
    log2_points: int = 11
    resolution: int = 0
    seed: int = 0
    q_tol: float = 1e-10
    q_grid: int = 16


@dataclass
class StaircaseThreshold:
    """The α at which ``layer`` starts to be learned once ``learned`` layers are."""

    layer: int  # 1-based
    alpha: float
    stderr: float
    status: str  # "finite" | "no-crossing" | "non-monotone"
    learned: list[int]
    q_last: float  # overlap of the last layer at the threshold
    group_alphas: list[float] = field(default_factory=list)
    inner_error: float = 0.0


class _RestrictedProblem:
    """m(q) and λ_k(q) on one outer net, for both inner weight sets."""

    def __init__(self, channel: AttentionChannel, points: np.ndarray):
        self.ch = channel
        L, depth = channel.seq_len, channel.depth
        self.xi = points[:, :L]
        self.u = points[:, L:].reshape(-1, L, depth)

    def evaluate(self, q: float):
        ch = self.ch
        L, depth = ch.seq_len, ch.depth
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
                return alpha_of(q), q, "finite"  # unstable as soon as the last layer is
            seen = [x for x in qs[: i + 1] if x >= MONOTONE_FROM_Q]
            alphas = np.array([alpha_of(x) for x in seen])
            status = "finite" if np.all(np.diff(alphas) > 0) else "non-monotone"
            root = brentq(H, prev, q, xtol=settings.q_tol, rtol=1e-13)
            return alpha_of(root), root, status
        prev = q
    return math.inf, qs[-1], "no-crossing"


def staircase_thresholds(
    channel: AttentionChannel, settings: StaircaseSettings | None = None
) -> list[StaircaseThreshold]:
    """Thresholds of the first ``depth-1`` layers once the last layer is learned.

    For depth 2 this is the complete staircase (layer 2 first, then layer 1).  For deeper
    models each earlier layer's value is computed with only the last layer learned.
    """
    settings = settings or StaircaseSettings()
    if not isinstance(channel, AttentionChannel):
        raise TypeError("staircase thresholds are defined for the attention channel")
    if settings.groups < 2:
        raise ValueError("staircase needs at least 2 groups for a standard error")
    depth, L = channel.depth, channel.seq_len
    if depth == 1:
        return []
    inner = default_inner_rule(depth, L, settings.resolution, settings.seed, channel.skip,
                               channel.beta)
    ch = channel.with_inner_rule(inner)
    rng = np.random.default_rng(settings.seed)
    d = L + L * depth
    problems = [
        _RestrictedProblem(ch, ndtri(qmc.Sobol(d, scramble=True, seed=rng).random_base2(
            settings.log2_points)))
        for _ in range(settings.groups)
    ]
    evaluations = [_Evaluations(p) for p in problems]
    out = []
    for k in range(depth - 1):
        primary, coarse, qlast, statuses = [], [], [], []
        for ev in evaluations:
            a0, q0, st = _locate(ev, k, 0, settings)
            a1, _, _ = _locate(ev, k, 1, settings)
            primary.append(a0)
            coarse.append(a1)
            qlast.append(q0)
            statuses.append(st)
        primary = np.array(primary)
        status = "finite" if all(s == "finite" for s in statuses) else next(
            s for s in statuses if s != "finite")
        if not np.all(np.isfinite(primary)):
            out.append(StaircaseThreshold(k + 1, math.inf, 0.0, status, [depth], float("nan"),
                                          primary.tolist()))
            continue
        se = primary.std(ddof=1) / math.sqrt(len(primary))
        inner_err = float(np.mean(np.abs(primary - np.array(coarse))))
        out.append(StaircaseThreshold(
            k + 1, float(primary.mean()), float(math.hypot(se, inner_err)), status, [depth],
            float(np.mean(qlast)), primary.tolist(), inner_err,
        ))
    return out


def staircase_table(channel: AttentionChannel, settings: StaircaseSettings | None = None,
                    threshold_settings: ThresholdSettings | None = None) -> list[dict]:
    """Q = 0 thresholds and staircase thresholds side by side, one row per layer."""
    q0 = weak_recovery_thresholds(channel, threshold_settings)
    stairs = {s.layer: s for s in staircase_thresholds(channel, settings)}
    rows = q0.rows("attention")
    for row in rows:
        s = stairs.get(row["direction"])
        row["staircase_alpha"] = row["alpha_c"] if s is None else s.alpha
        row["staircase_stderr"] = row["stderr"] if s is None else s.stderr
        row["staircase_status"] = "learned-first" if s is None else s.status
    return rows
