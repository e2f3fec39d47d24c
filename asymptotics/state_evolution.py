"""Bayes-optimal state evolution Q -> Q̂ -> Q (THEORY.md §3).

Per token ``ω^(l) = Q^{1/2} ξ^(l)``, ``Z*^(l) = ω^(l) + (I - Q)^{1/2} u^(l)``, ``V = I - Q``,

    g_out^(l) = V^{-1}(E[z^(l) | y, ω, V] - ω^(l)),   Q̂ = α E[Σ_l g_out g_outᵀ],
    Q = f_in(Q̂)   (Gaussian prior: Q̂ (I + Q̂)^{-1}).

The map is pure: the same ``Q`` and rule give the same ``Q̂`` (common random numbers for
Monte Carlo rules, whose nodes are fixed once).  For the attention channel ``Q`` is kept
diagonal: by the per-layer sign symmetry the off-diagonal entries of ``Q̂`` vanish exactly
when ``Q`` is diagonal (THEORY §2), so only the diagonal is integrated.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np

from .channels.base import INNER_PATHS, Channel, MomentSets, check_device
from .checks import MAX_SOBOL_LOG2, check_int, check_number
from .integrate import Rule, combine_error, gauss_hermite, sinh_trapezoid, sobol_replicates
from .priors import GaussianPrior
from .solver import SolveResult, solve_fixed_point


@dataclass(frozen=True)
class SESettings:
    """Numerical settings of the SE integrals.

    The outer expectation over ``(ξ, u, noise)`` uses a tensor Gauss–Hermite rule of
    ``gh_nodes`` per axis when its dimension is at most ``gh_max_dim``, else randomised QMC:
    8 independently scrambled Sobol' nets of ``2^(sobol_log2 - 3)`` points (seed ``seed``),
    fixed for all iterations (common random numbers); the error is the standard error
    across nets (not a single net's embedded half-net difference, which underestimates it).
    Discrete outputs are summed exactly, and their outer integral over ξ (at most two
    dimensions) uses a sinh-mapped trapezoid of ``discrete_nodes`` per axis with scale
    ``sqrt((1 - q_k)/q_k)`` per direction, adapted to Q: near perfect recovery the
    integrand lives within that distance of ω = 0, where a fixed rule would miss it.
    ``control_variate`` (channels declaring it, randomised-QMC rules with nets of at least
    ``CONTROL_VARIATE_MIN_NET`` points, each replicate net's map too) estimates
    ``Q̂`` from both of its Nishimori forms, ``α E[g gᵀ]`` and
    ``α E[Σ_l (V⁻¹ - V⁻¹ Cov_l V⁻¹)]``, combined per entry with the variance-minimising
    weight (:func:`nishimori_combination`): the same integral at a lower variance (on the
    default model's curve the fixed point's error falls 1-1.6x at α <= 0.8, e.g.
    0.0113 -> 0.0070 at α = 0.5, and 3-6x at α = 0.9-0.95; next to the staircase threshold
    the amplification dominates and it gains little).
    ``device`` ("cpu" or "gpu") runs the channel's posterior integrals; on the CPU
    ``cpu_kernel`` picks the compiled kernels ("numba", default) or the array path the GPU
    runs, on numpy ("array"); the paths agree within the inner rule's error.
    Every field is checked here (``ValueError`` naming it); ``sobol_log2`` is at least 3
    (8 nets of ``2^(sobol_log2 - 3)`` points) and at most
    :data:`~asymptotics.checks.MAX_SOBOL_LOG2`.
    """

    gh_nodes: int = 40
    gh_max_dim: int = 3
    discrete_nodes: int = 201
    sobol_log2: int = 12
    seed: int = 0
    device: str = "cpu"
    cpu_kernel: str = "numba"
    control_variate: bool = True

    def __post_init__(self):
        check_int("gh_nodes", self.gh_nodes, 2)
        check_int("gh_max_dim", self.gh_max_dim, 0)
        check_int("discrete_nodes", self.discrete_nodes, 3)
        if self.discrete_nodes % 2 == 0:
            raise ValueError(f"discrete_nodes must be an odd integer >= 3, got "
                             f"{self.discrete_nodes!r} ({type(self.discrete_nodes).__name__})")
        check_int("sobol_log2", self.sobol_log2, 3, MAX_SOBOL_LOG2)
        check_int("seed", self.seed, 0)
        check_device(self.device, self.cpu_kernel)
        if not isinstance(self.control_variate, (bool, np.bool_)):
            raise ValueError(f"control_variate must be a bool, got {self.control_variate!r} "
                             f"({type(self.control_variate).__name__})")


def nishimori_combination(f: np.ndarray, h: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Per-node values ``c = h + λ (f - h)`` of two estimators ``f``, ``h`` (S, n, ...) of
    one integral (weights ``w (n,)``, summing to 1), with ``λ`` per entry minimising the
    weighted variance of ``c`` on the primary set ``S = 0``:

        λ = -Cov_w(h, f - h) / Var_w(f - h)

    (``f - h`` is a control variate of mean 0).  ``λ`` is the same on every set, so the
    spread across sets remains the error of ``c``.  Where ``f = h`` at every node, ``c = f``."""
    d = f - h
    mean_d = np.tensordot(w, d[0], axes=(0, 0))
    mean_h = np.tensordot(w, h[0], axes=(0, 0))
    var_d = np.tensordot(w, (d[0] - mean_d) ** 2, axes=(0, 0))
    cov = np.tensordot(w, (h[0] - mean_h) * (d[0] - mean_d), axes=(0, 0))
    lam = np.where(var_d > 0, -cov / np.where(var_d > 0, var_d, 1.0), 0.0)
    return h + lam * d


@dataclass
class QhatEstimate:
    """``Q̂`` with its error and, from the same nodes, ``ψ_out = E log Z_out`` (per α)."""

    Qhat: np.ndarray
    error: np.ndarray
    rule: str
    psi_out: float = float("nan")
    psi_out_error: float = float("nan")


#: the fewest points per randomised net on which the control variate's weight is fitted:
#: on nets of 16 points (sobol_log2 = 7) the fitted weights made replicate maps of the
#: product channel lose their fixed point
CONTROL_VARIATE_MIN_NET = 256


#: the fewest outer points of a map solved from a nearby map's secant pairs (a replicate
#: map is one net): the secant steps of a noisier map can find another of its fixed points
#: (a 64-point replicate map at α = 0.8 went to Q = I where its plain iteration goes to
#: Q11 = 0; at 128 points, depth 3, one crept along a neutral direction)
SEEDED_MIN_POINTS = 256


def _points_per_net(rule: Rule) -> int:
    """Points of each independent randomised net of ``rule`` (a replicate rule: all)."""
    nets = rule.alt_weights.shape[0] if rule.error_kind == "replicates" else 1
    return rule.size // nets


def _covariance_form(fm: MomentSets, Vinv: np.ndarray, diagonal: bool) -> np.ndarray:
    """Per-node ``Σ_l (V⁻¹ - V⁻¹ Cov_l V⁻¹)`` (S, n, p, p), ``Cov_l`` the posterior
    covariance of token ``l``: by the Nishimori identity its mean is that of ``g gᵀ``.
    ``diagonal``: only the diagonal entries (from ``E[z_lk²]``; ``V`` diagonal), the other
    entries 0."""
    mean, second = fm.mean, fm.second  # (S, n, L, p), (S, n, L, p, L, p)
    L, p = mean.shape[-2:]
    if diagonal:
        k = np.arange(p)
        var = np.stack([second[:, :, lay, k, lay, k] for lay in range(L)], axis=2) - mean**2
        vinv = np.diag(Vinv)
        h = np.zeros(mean.shape[:2] + (p, p))
        h[:, :, k, k] = L * vinv - vinv**2 * var.sum(axis=2)
        return h
    cov = np.stack([second[:, :, lay, :, lay, :] for lay in range(L)], axis=2) - np.einsum(
        "snlk,snlj->snlkj", mean, mean)
    return L * Vinv - np.einsum("ab,snbc,cd->snad", Vinv, cov.sum(axis=2), Vinv)


def sqrt_psd(Q: np.ndarray) -> np.ndarray:
    """Symmetric square root of a PSD matrix already validated by :func:`check_overlap`
    (eigenvalues >= -1e-12); only round-off negatives are set to 0."""
    w, U = np.linalg.eigh(0.5 * (Q + Q.T))
    return (U * np.sqrt(np.clip(w, 0.0, None))) @ U.T


def check_overlap(Q: np.ndarray, p: int) -> np.ndarray:
    Q = np.asarray(Q, dtype=float)
    if Q.shape != (p, p):
        raise ValueError(f"Q must have shape ({p}, {p}), got {Q.shape}")
    if not np.all(np.isfinite(Q)):
        raise ValueError("Q has non-finite entries")
    w = np.linalg.eigvalsh(0.5 * (Q + Q.T))
    if w.min() < -1e-12 or w.max() >= 1.0:
        raise ValueError(f"Q must satisfy 0 <= Q < I, eigenvalues {w}")
    return Q


def outer_moments(
    channel: Channel, xi: np.ndarray, u: np.ndarray, Q: np.ndarray,
    noise: np.ndarray | None = None, *, second: bool = False, inner_error: bool = True,
    inner_path: str = "auto", device: str = "cpu", cpu_kernel: str = "numba",
) -> tuple[np.ndarray, MomentSets]:
    """Posterior moments at the outer nodes of the SE map (THEORY §3), ``V = I - Q``:

        ω = Q^{1/2} ξ,   Z* = ω + V^{1/2} u,   moments of Z | obs(Z*), ω, V

    per token, on every inner weight set (:meth:`Channel.posterior_sets`, whose options the
    keywords are).  ``xi``, ``u``: ``(n, L, p)``.  ``Q`` is a ``(p, p)`` overlap (symmetric
    square roots), or the diagonal ``(p,)`` of a diagonal one (square roots per entry).
    Returns ``(ω, moments)``.
    """
    Q = np.asarray(Q, dtype=float)
    if Q.ndim == 1:
        omega = np.sqrt(Q) * xi
        v = 1.0 - Q
        zstar = omega + np.sqrt(v) * u
        V = np.diag(v)
    else:
        V = np.eye(Q.shape[0]) - Q
        omega = xi @ sqrt_psd(Q).T
        zstar = omega + u @ sqrt_psd(V).T
    obs = channel.observe(zstar, noise)
    moments = channel.posterior_sets(obs, omega, V, device=device, cpu_kernel=cpu_kernel,
                                     second=second, inner_error=inner_error,
                                     inner_path=inner_path)
    return omega, moments


class StateEvolution:
    """The SE map of one channel at one sample ratio ``alpha`` (Gaussian prior)."""

    def __init__(
        self, channel: Channel, alpha: float, settings: SESettings | None = None, prior=None,
        rule: Rule | None = None, inner_path: str = "auto",
    ):
        if not np.isfinite(alpha) or alpha <= 0:
            raise ValueError(f"alpha must be finite and > 0, got {alpha}")
        if inner_path not in INNER_PATHS:
            raise ValueError(f"inner_path must be one of {INNER_PATHS}, got {inner_path!r}")
        # fibre kernel: "auto" chooses per call; a solve locks it (lock_inner_path)
        self.inner_path = inner_path
        self.channel = channel
        self.alpha = float(alpha)
        self.settings = settings or SESettings()
        self.prior = prior or GaussianPrior()
        L, p = channel.seq_len, channel.dim
        self.discrete = channel.discrete_outputs is not None
        d = L * p if self.discrete else 2 * L * p + channel.noise_dim
        s = self.settings
        if rule is not None:
            if rule.dim != d:
                raise ValueError(f"outer rule has dimension {rule.dim}, need {d}")
            self.rule: Rule = rule
        elif d <= s.gh_max_dim:
            self.rule = gauss_hermite(d, s.gh_nodes)
        else:
            self.rule = sobol_replicates(d, s.sobol_log2 - 3, 8, s.seed)

    @property
    def diagonal_only(self) -> bool:
        return self.channel.capabilities.diagonal_overlaps

    def lock_inner_path(self, Q: np.ndarray) -> None:
        """Fix the attention fibre kernel for the iterations that start at ``Q``.

        A fixed-point iteration needs one map: choosing the kernel per call makes the map
        jump (by up to 3e-4) where the choice changes, and an iteration whose fixed point
        sits there oscillates across it.  The shared
        nodes, once locked, are kept while every variance stays within
        ``SHARED_HYSTERESIS`` of their bounds; below that the map switches once, for good,
        to the general kernel (:meth:`qhat`).  No effect once locked, or on a channel with
        one inner path."""
        if self.inner_path != "auto" or not self.channel.capabilities.inner_paths:
            return
        V = np.eye(self.channel.dim) - np.diag(np.diag(check_overlap(Q, self.channel.dim)))
        self.inner_path = self.channel.choose_inner_path(V)

    def _prepare(self, Q: np.ndarray):
        """Validated ``Q`` (diagonal for attention), ``V = I - Q`` and the outer rule at Q."""
        p = self.channel.dim
        Q = check_overlap(Q, p)
        if self.diagonal_only:
            Q = np.diag(np.diag(Q))
        return Q, np.eye(p) - Q, self._rule_for(Q)

    def qhat(self, Q: np.ndarray, inner_error: bool = True) -> QhatEstimate:
        """``Q̂(Q)`` with its error estimate (outer rule and, for attention, inner rule;
        ``inner_error=False`` skips the inner part, as the iterations do)."""
        ch = self.channel
        L, p = ch.seq_len, ch.dim
        Q, V, rule = self._prepare(Q)
        Vinv = np.linalg.inv(V)
        pts = rule.points
        xi = pts[:, : L * p].reshape(-1, L, p)
        if self.discrete:
            omega = xi @ sqrt_psd(Q).T
            ys = ch.discrete_outputs
            terms, logz = [], []
            for y in ys:
                post = ch.posterior(np.full(len(omega), y), omega, V)
                g = (post.mean - omega) @ Vinv.T
                Z = np.exp(post.log_norm)
                terms.append(Z[:, None, None] * np.einsum("nlk,nlj->nkj", g, g))
                logz.append(np.where(Z > 0, Z * post.log_norm, 0.0))
            per_node = sum(terms)[None]  # (1, n, p, p)
            logz_node = sum(logz)
        else:
            u = pts[:, L * p : 2 * L * p].reshape(-1, L, p)
            noise = pts[:, 2 * L * p :] if ch.noise_dim else None
            self.inner_path = ch.keep_inner_path(self.inner_path, V)
            # on every randomised rule, the replicate nets' own maps too (their fixed
            # points' spread is then the error of this very estimator), with nets large
            # enough for the fitted weight to be a constant, not noise
            cv = (self.settings.control_variate and ch.capabilities.control_variate
                  and rule.kind == "rqmc" and _points_per_net(rule) >= CONTROL_VARIATE_MIN_NET)
            second = ("diagonal" if self.diagonal_only else True) if cv else False
            omega, fm = outer_moments(ch, xi, u, Q, noise, second=second,
                                      inner_error=inner_error, inner_path=self.inner_path,
                                      device=self.settings.device,
                                      cpu_kernel=self.settings.cpu_kernel)
            means = fm.mean
            logz_node = fm.log_norm[0]
            g = (means - omega[None]) @ Vinv.T
            per_node = np.einsum("snlk,snlj->snkj", g, g)
            if cv:
                h = _covariance_form(fm, Vinv, self.diagonal_only)
                if not self.diagonal_only:
                    per_node = nishimori_combination(per_node, h, rule.weight_sets[0])
                else:
                    k = np.arange(p)
                    per_node[:, :, k, k] = nishimori_combination(
                        per_node[:, :, k, k], h[:, :, k, k], rule.weight_sets[0])
        W = rule.weight_sets
        vals = self.alpha * np.einsum("rn,nkj->rkj", W, per_node[0])
        err = combine_error(vals, rule.error_kind)
        if per_node.shape[0] > 1:
            inner = self.alpha * np.einsum("n,snkj->skj", W[0], per_node)
            err = np.sqrt(err**2 + combine_error(inner, "embedded") ** 2)
        Qhat = 0.5 * (vals[0] + vals[0].T)
        if self.diagonal_only:
            Qhat = np.diag(np.diag(Qhat))
            err = np.diag(np.diag(err))
        psi_vals = W @ logz_node
        psi_err = float(combine_error(psi_vals, rule.error_kind))
        return QhatEstimate(Qhat, err, rule.description, float(psi_vals[0]), psi_err)

    def _rule_for(self, Q: np.ndarray) -> Rule:
        """The outer rule at ``Q``: fixed, except the Q-adapted sinh rule of discrete outputs."""
        if not self.discrete or self.channel.seq_len * self.channel.dim > 2:
            return self.rule
        q = np.clip(np.diag(Q), 1e-300, None)
        scales = np.minimum(1.0, np.sqrt((1.0 - q) / q))
        scales = np.maximum(scales, 1e-8)
        return sinh_trapezoid(self.channel.dim, self.settings.discrete_nodes, scales)

    def free_entropy(self, Q: np.ndarray, est: QhatEstimate | None = None) -> tuple[float, float]:
        """``Φ = ψ_in(Q̂) - ½ tr(Q Q̂) + α ψ_out(Q)`` (THEORY §3) with its error.

        For deterministic channels ``ψ_out`` carries a y-dependent constant (a density on
        the output manifold) that cancels between fixed points at the same α.
        """
        est = est or self.qhat(Q)
        phi = (
            self.prior.free_entropy(est.Qhat)
            - 0.5 * float(np.trace(Q @ est.Qhat))
            + self.alpha * est.psi_out
        )
        return phi, self.alpha * est.psi_out_error

    def generalisation_errors(self, Q: np.ndarray, inner_nodes: int = 6) -> dict:
        """Plug-in ``E‖g(Z*) - g(ω)‖²`` and Bayes-optimal ``E‖g(Z*) - E_{N(ω,V)} g(Z)‖²``
        (THEORY §4), on the SE outer nodes, with standard errors.  ``g`` is the noiseless
        forward map; the Bayes average uses a Gauss–Hermite rule of ``inner_nodes`` per axis
        over the ``L·p`` pre-activations, whose error (the change from ``inner_nodes - 2``
        nodes, conservative) is added in quadrature; discrete outputs use the exact
        ``P(y | ω, V)``."""
        ch = self.channel
        L, p = ch.seq_len, ch.dim
        Q, V, rule = self._prepare(Q)
        sq, sv = sqrt_psd(Q), sqrt_psd(V)
        pts = rule.points
        xi = pts[:, : L * p].reshape(-1, L, p)
        omega = xi @ sq.T
        W = rule.weight_sets
        plug, bayes, bayes_coarse = [], [], []
        if self.discrete:
            # exact: P(y | ω, V) = Z_out(y; ω, V) and E_{N(ω,V)} g(Z) = Σ_y y P(y | ω, V)
            ys = ch.discrete_outputs
            probs = np.stack(
                [np.exp(ch.posterior(np.full(len(omega), y), omega, V).log_norm) for y in ys]
            )  # (Y, n)
            g_omega = ch.forward(omega)
            mean_g = np.tensordot(ys, probs, axes=(0, 0))
            plug.append(sum(P * (y - g_omega) ** 2 for y, P in zip(ys, probs, strict=True)))
            bayes.append(sum(P * (y - mean_g) ** 2 for y, P in zip(ys, probs, strict=True)))
            bayes_coarse = bayes
        else:
            if inner_nodes < 3:
                raise ValueError(f"inner_nodes must be >= 3, got {inner_nodes}")
            inner = gauss_hermite(L * p, inner_nodes)
            coarse = gauss_hermite(L * p, inner_nodes - 2)
            t = inner.points.reshape(-1, L, p) @ sv.T  # (m, L, p)
            t_c = coarse.points.reshape(-1, L, p) @ sv.T
            for start in range(0, len(omega), 256):
                om = omega[start : start + 256]
                g_omega = ch.forward(om)
                mean_g = ch.mean_forward(om, t, inner.weights)
                u = pts[start : start + 256, L * p : 2 * L * p].reshape(-1, L, p)
                g_star = ch.forward(om + u @ sv.T)
                d_plug = (g_star - g_omega) ** 2
                d_bayes = (g_star - mean_g) ** 2
                d_coarse = (g_star - ch.mean_forward(om, t_c, coarse.weights)) ** 2
                axes = tuple(range(1, d_plug.ndim))
                plug.append(d_plug.sum(axis=axes) if axes else d_plug)
                bayes.append(d_bayes.sum(axis=axes) if axes else d_bayes)
                bayes_coarse.append(d_coarse.sum(axis=axes) if axes else d_coarse)
        plug_v = W @ np.concatenate(plug)
        bayes_v = W @ np.concatenate(bayes)
        inner_err = abs(float(W[0] @ np.concatenate(bayes_coarse)) - float(bayes_v[0]))
        kind = rule.error_kind
        return {
            "gen_error_plugin": float(plug_v[0]),
            "gen_error_plugin_stderr": float(combine_error(plug_v, kind)),
            "gen_error_bayes": float(bayes_v[0]),
            "gen_error_bayes_stderr": float(np.hypot(combine_error(bayes_v, kind), inner_err)),
        }

    def update(self, Q: np.ndarray) -> np.ndarray:
        """One SE step ``Q -> f_in(Q̂(Q))``."""
        return self.prior.overlap(self.qhat(Q, inner_error=False).Qhat)


@dataclass
class SEResult:
    """A state-evolution fixed point with its convergence record.

    ``Q_stderr`` is the standard error of the fixed point itself: for randomised-QMC
    rules the spread of the fixed points of the independent replicate maps (each started
    at ``Q``) divided by ``sqrt(R)``, which includes the amplification ``(I - J)^{-1}`` of
    the map's error near a threshold; for deterministic rules the map's error propagated
    through the prior's update (no amplification known); NaN when the solver did not
    converge.
    """

    alpha: float
    start: str
    Q: np.ndarray
    Qhat: np.ndarray
    Qhat_error: np.ndarray
    converged: bool
    status: str
    iterations: int
    residual: float
    history: list = field(default_factory=list)
    rule: str = ""
    Q_stderr: np.ndarray | None = None
    estimate: QhatEstimate | None = None
    coarse_iterations: int = 0
    replicate_iterations: int = 0
    replicate_Q: np.ndarray | None = None  # (R, p, p) fixed points of the replicate maps
    inner_path: str = "auto"  # attention fibre kernel of the final map (lock_inner_path)
    approach: np.ndarray | None = None  # perfect recovery: last iterate on the way to I
    #: largest ratio of the fixed points' spread to one map step's spread over the replicate
    #: nets (≈ ‖(I - J)⁻¹‖ on the noisiest entry; large next to a threshold); NaN if unknown
    amplification: float = float("nan")
    #: the part of ``Q_stderr`` from the inner rule: its bias bound, amplified as the
    #: replicate spread is (``Q_stderr² = spread² + Q_stderr_inner²``); None where the
    #: parts are not separated (no replicate nets)
    Q_stderr_inner: np.ndarray | None = None
    #: the SE map the fixed point was solved with (its rule and locked inner path)
    solved_map: StateEvolution | None = field(default=None, repr=False, compare=False)
    #: the main solve's last secant pairs ``(ΔQ, Δ(T(Q) - Q))`` over the upper triangle of
    #: ``Q`` (a start for a nearby map's solve: ``run_state_evolution(secant=)``), or None
    secant: tuple | None = field(default=None, repr=False, compare=False)

    def to_frame(self):
        """This fixed point as a one-row pandas DataFrame: α, start, status, convergence
        and ``Q`` / ``Q_stderr`` expanded to ``Q_11``, ``Q_12``, ... (pandas is an optional
        extra: :func:`asymptotics.frames.to_frame`)."""
        from .frames import to_frame
        from .results import plain

        row = {"alpha": self.alpha, "start": self.start, "status": self.status,
               "converged": self.converged, "iterations": self.iterations,
               "residual": self.residual, "rule": self.rule, "Q": self.Q,
               "Q_stderr": self.Q_stderr}
        return to_frame([plain({k: v for k, v in row.items() if v is not None})])

    def free_entropy(self) -> tuple[float, float]:
        """``Φ(Q)`` and its error (:meth:`StateEvolution.free_entropy`), evaluated with the
        very map the fixed point solves, from the ``Q̂`` already computed at it.

        At perfect recovery: ``ψ_in(I) + α lim E log Z_out`` for a discrete prior (NaN when
        the channel's limit is not finite), ``+∞`` for a continuous one (THEORY §7)."""
        se = self._map()
        if self.status != "perfect-recovery":
            return se.free_entropy(self.Q, self.estimate)
        phi_in = se.prior.perfect_recovery_free_entropy(se.channel.dim)
        if math.isinf(phi_in):
            return phi_in, 0.0
        psi = se.channel.perfect_recovery_psi_out()
        return (math.nan, math.nan) if psi is None else (phi_in + se.alpha * psi, 0.0)

    def generalisation_errors(self) -> dict:
        """Plug-in and Bayes-optimal errors (:meth:`StateEvolution.generalisation_errors`)
        at the fixed point, with the map it was solved with."""
        return self._map().generalisation_errors(self.Q)

    def _map(self) -> StateEvolution:
        if self.solved_map is None:
            raise ValueError(f"no SE map to evaluate at a {self.status!r} result")
        return self.solved_map


START_EPS = 1e-3
PERFECT_RECOVERY_GAP = 1e-10
ACCELERATIONS = ("anderson", "aitken", "none")
ANDERSON_MEMORY = 3


def initial_overlap(p: int, start: str, eps: float = START_EPS) -> np.ndarray:
    """``ε I`` (uninformed: the AMP branch) or ``(1 - ε) I`` (informed)."""
    if start == "uninformed":
        return eps * np.eye(p)
    if start == "informed":
        return (1.0 - eps) * np.eye(p)
    raise ValueError(f"start must be 'uninformed' or 'informed', got {start!r}")


def _valid_overlap(Q: np.ndarray) -> bool:
    w = np.linalg.eigvalsh(0.5 * (Q + Q.T))
    return bool(w.min() >= -1e-12 and w.max() < 1.0)


def overlap_error(Qhat: np.ndarray, Qhat_err: np.ndarray) -> np.ndarray:
    """Propagate the error of Q̂ through ``Q = Q̂ (I + Q̂)^{-1}`` (first order, diagonal
    bound ``δQ ≈ δQ̂ / (1 + Q̂)²`` per entry): the error of one application of the map."""
    d = 1.0 + np.diag(Qhat)
    return np.abs(Qhat_err) / np.outer(d, d)


def _reached_perfect_recovery(Q: np.ndarray) -> str | None:
    """The solver's stop test of a discrete prior: ``Q = I`` reached in every direction."""
    return "perfect-recovery" if np.all(1.0 - np.diag(Q) < PERFECT_RECOVERY_GAP) else None


def _solve(se: StateEvolution, Q0, *, damping, tol, max_iter, acceleration,
           first=None, secant=None) -> SolveResult:
    """The SE fixed point from ``Q0``; status ``perfect-recovery`` where a discrete prior's
    iteration reaches ``Q = I``.  ``first``: ``se.update(Q0)``, if already evaluated
    (used once, for the first step); ``secant``: a nearby map's secant pairs (Anderson
    from the first step, see :func:`solve_fixed_point`; as the extra ``secant`` of a
    result of this function), used on maps of ``SEEDED_MIN_POINTS`` outer points or
    more.

    The solver iterates the ``p(p+1)/2`` entries of the upper triangle of ``Q``, so that
    every iterate is symmetric exactly: a secant move on the full matrix multiplies the
    round-off asymmetry by its coefficients (1e-10 after a few ill-conditioned moves of a
    16-point replicate map).  ``tol`` may be a ``(p, p)`` matrix; ``x`` and ``history``
    are returned as matrices, the extra ``secant`` over the upper triangle."""
    se.lock_inner_path(Q0)
    p = se.channel.dim
    upper = np.triu_indices(p)

    def matrix(v):
        Q = np.zeros((p, p))
        Q[upper] = v
        return Q + np.triu(Q, 1).T

    Q0 = matrix(np.asarray(Q0, dtype=float)[upper])
    pending = [] if first is None else [np.array(first, dtype=float)[upper]]

    def update(v):
        if pending and np.array_equal(v, Q0[upper]):
            return pending.pop()
        return se.update(matrix(v))[upper]

    res = solve_fixed_point(
        update, Q0[upper], damping=damping, tol=np.broadcast_to(tol, (p, p))[upper],
        max_iter=max_iter, is_valid=lambda v: _valid_overlap(matrix(v)),
        extrapolate=acceleration == "aitken",
        anderson=ANDERSON_MEMORY if acceleration == "anderson" else 0,
        stop=(lambda v: _reached_perfect_recovery(matrix(v))) if se.prior.discrete else None,
        cut_back=lambda v: _below_identity(matrix(v)),
        secant=(secant if acceleration == "anderson"
                and se.rule.size >= SEEDED_MIN_POINTS else None),
    )
    res.x = matrix(res.x)
    if "history" in res.extras:
        res.extras["history"] = [matrix(v) for v in res.extras["history"]]
    return res


def _below_identity(Q: np.ndarray) -> bool:
    """Whether an Anderson move that left the domain may be cut back (``cut_back``): only
    one that left it through ``Q >= 0`` (an overlap decaying to its invariant 0), not
    through ``Q < I``.  Near ``I`` the plain iteration alone approaches it, as
    :func:`_heads_to_perfect_recovery` needs (at α = 1.3 the fit fails after cut-back
    moves), and cut back to just below ``I`` the informed solve at α = 0.9 did not
    converge in 500 steps."""
    return bool(np.linalg.eigvalsh(0.5 * (Q + Q.T)).max() < 1.0)


def run_state_evolution(
    channel: Channel,
    alpha: float,
    start: str | np.ndarray = "uninformed",
    *,
    damping: float = 0.5,
    tol: float = 1e-8,
    max_iter: int = 500,
    settings: SESettings | None = None,
    start_eps: float = START_EPS,
    prior=None,
    acceleration: str = "anderson",
    multi_fidelity: bool = True,
    fixed_point_error: bool = True,
    recovered_at: float | None = None,
    secant: tuple | None = None,
) -> SEResult:
    """Iterate SE to a fixed point from an uninformed, informed or given start.

    With a discrete prior the iteration can reach perfect recovery ``Q = I`` (``Q̂ -> ∞``):
    once an update leaves less than ``PERFECT_RECOVERY_GAP`` below 1 in every direction the
    result is ``Q = I`` with status ``perfect-recovery`` (``Qhat`` = inf).  A continuous
    prior with a noiseless continuous channel approaches ``Q = I`` only geometrically; with
    the multi-fidelity solve this is recognised as well (:func:`_heads_to_perfect_recovery`).
    ``acceleration``: Anderson once the plain iteration contracts (default), guarded Aitken
    jumps, or none; all reach the point the plain iteration reaches, in fewer steps.

    With a randomised-QMC outer rule (``R`` replicate nets):
    ``multi_fidelity`` first iterates on nets of 1/8 the size (same seed) to tolerance
    ``max(tol, 1e-5)``, which chooses the branch at 1/8 of the cost, then continues with the
    full rule from there; ``fixed_point_error`` solves the fixed point of each replicate's
    map from the result, for ``Q_stderr``.

    ``secant``: the secant pairs of a nearby map's fixed point (a result's ``secant``:
    the same α on fewer outer points, when ``start`` is its fixed point), for the first
    steps of the main solve (without the coarse phase; see :func:`solve_fixed_point`).

    ``recovered_at``: a smaller α at which the iteration from a start no better than this
    one (a continuation upwards in α) reached perfect recovery; then so does this α, and no
    map is evaluated.  At fixed ``Q`` the map's ``Q̂`` is ``α`` times the same integral
    (the same nodes), so ``T_α'(Q) ⪰ T_α(Q)`` and near ``I`` the gap map ``g -> J g``
    contracts by ``α/α'`` more (THEORY §7).
    """
    check_number("alpha", alpha, above=0)
    check_number("damping", damping, above=0, maximum=1)
    check_number("tol", tol, above=0)
    check_int("max_iter", max_iter, 1)
    check_number("start_eps", start_eps, above=0, below=1)
    if acceleration not in ACCELERATIONS:
        raise ValueError(f"acceleration must be one of {ACCELERATIONS}, got {acceleration!r}")
    if settings is not None and not isinstance(settings, SESettings):
        raise ValueError(f"settings must be an SESettings, got {settings!r} "
                         f"({type(settings).__name__})")
    se = StateEvolution(channel, alpha, settings, prior)
    p = channel.dim
    if isinstance(start, str):
        Q0, label = initial_overlap(p, start, start_eps), start
    else:
        Q0, label = check_overlap(start, p), "given"
    replicated = se.rule.error_kind == "replicates"
    kw = dict(damping=damping, max_iter=max_iter, acceleration=acceleration)
    coarse_its = 0

    def perfect_recovery(approach: np.ndarray | None = None) -> SEResult:
        inf = np.full((p, p), np.inf)
        return SEResult(se.alpha, label, np.eye(p), inf, np.zeros((p, p)), True,
                        "perfect-recovery", 0, 0.0, [], se.rule.description,
                        Q_stderr=np.zeros((p, p)), approach=approach, solved_map=se)

    if recovered_at is not None:
        check_number("recovered_at", recovered_at, above=0)
        if recovered_at < se.alpha:
            return perfect_recovery(Q0 if label == "given" else None)
    approach = _heads_to_perfect_recovery(se, Q0)  # a start next to I (continuation)
    if approach is not None:
        return perfect_recovery(approach)
    if replicated and multi_fidelity and se.settings.sobol_log2 >= 9:
        coarse = StateEvolution(
            channel, alpha, replace(se.settings, sobol_log2=se.settings.sobol_log2 - 3),
            se.prior,
        )
        pre = _solve(coarse, Q0, tol=max(tol, 1e-5), **kw)
        if pre.converged and acceleration == "anderson" and pre.status != "perfect-recovery":
            kick = _unstable_vanishing_direction(coarse, pre.x)
            if kick is not None:  # as below, at 1/8 of the cost of the full map's kick
                pre = _solve(coarse, kick, tol=max(tol, 1e-5), **kw)
        if pre.status == "perfect-recovery":
            return perfect_recovery()
        coarse_its = pre.iterations
        if pre.status != "invalid-update":
            Q0 = pre.x
        if pre.converged:  # the coarse map's secant Jacobian, for the first full steps
            secant = pre.extras.get("secant")
            kick = _marginal_direction_kick(se, Q0) if acceleration == "anderson" else None
            if kick is not None:
                Q0, secant = kick, None
        approach = _heads_to_perfect_recovery(se, pre.x) if pre.converged else None
        if approach is not None:
            return perfect_recovery(approach)
    res = _solve(se, Q0, tol=tol, secant=secant, **kw)
    if res.converged and acceleration == "anderson" and res.status != "perfect-recovery":
        kick = _unstable_vanishing_direction(se, res.x)
        if kick is not None:  # an accelerated step landed on an unstable Q_kk = 0
            res = _solve(se, kick, tol=tol, **kw)
    if res.status == "perfect-recovery":
        return perfect_recovery()
    if res.converged and np.all(1.0 - np.diag(res.x) < VANISHING_OVERLAP):
        # steps on the geometric approach to I fall below tol before I is reached (from a
        # start just outside CONTINUOUS_RECOVERY_GAP): the approach is checked from here
        approach = _heads_to_perfect_recovery(se, res.x)
        if approach is not None:
            return perfect_recovery(approach)
    est = se.qhat(res.x)
    Q_stderr = overlap_error(est.Qhat, est.error)
    if not res.converged:  # not a fixed point: its error as one is unknown
        Q_stderr = np.full_like(Q_stderr, np.nan)
    rep_its, rep_Q, gain, inner_part = 0, None, float("nan"), None
    if replicated and fixed_point_error and res.converged:
        Q_stderr, rep_its, rep_Q, gain, inner_part = _replicate_fixed_point_error(
            se, res.x, tol, kw, Q_stderr, secant=res.extras.get("secant"))
    return SEResult(
        se.alpha,
        label,
        res.x,
        est.Qhat,
        est.error,
        res.converged,
        res.status,
        res.iterations,
        res.residual,
        res.history,
        est.rule,
        Q_stderr,
        est,
        coarse_its,
        rep_its,
        rep_Q,
        se.inner_path,
        amplification=gain,
        Q_stderr_inner=inner_part,
        solved_map=se,
        secant=res.extras.get("secant"),
    )


CONTINUOUS_RECOVERY_GAP = 2e-3  # > the 1e-3 of a sweep's restart next to Q = I
#: the approach to ``I`` may first widen a gap (the informed start at α = 2: 1e-3 -> 4.3e-3
#: -> 3.8e-3 -> 2.4e-3 ...); the check follows it up to this gap and this many steps
RECOVERY_TRANSIENT_GAP = 2e-2
RECOVERY_MAX_STEPS = 8
VANISHING_OVERLAP = 1e-6


def _unstable_vanishing_direction(se: StateEvolution, Q: np.ndarray):
    """A kicked start if the fixed point sits on an unstable edge, else None: a vanishing
    overlap ``Q_kk < 1e-6`` that the map makes grow from ``ε = START_EPS``, or a
    set of vanishing gaps ``1 - Q_kk < 1e-6`` that it makes grow from ``ε`` (the plain
    iteration would leave either; the kick is ``Q_kk = ε``, or ``1 - ε`` on that set).

    ``Q_kk = 0`` is invariant for sign-symmetric directions, and near ``Q = I`` the damped
    steps of a noiseless channel are below the tolerance, so an accelerated (secant) step
    that lands on either stays; one extra evaluation per such direction keeps the branch
    the one the plain iteration follows."""
    for k in np.flatnonzero(np.diag(Q) < VANISHING_OVERLAP):
        kick = Q.copy()
        kick[k, k] = START_EPS
        if _valid_overlap(kick) and se.update(kick)[k, k] > START_EPS:
            return kick
    if se.prior.discrete:
        return None  # Q = I is reached exactly there (perfect recovery)
    edge = np.flatnonzero(1.0 - np.diag(Q) < VANISHING_OVERLAP)
    if edge.size:  # jointly: the unstable gaps are a mix (1 : 0.015 at α = 1.0)
        kick = Q.copy()
        kick[edge, edge] = 1.0 - START_EPS
        if _valid_overlap(kick) and np.max(1.0 - np.diag(se.update(kick))[edge]) > START_EPS:
            return kick
    return None


def _marginal_direction_kick(se: StateEvolution, Q: np.ndarray) -> np.ndarray | None:
    """The start ``Q_kk = ε`` for the full map if the coarse fixed point ``Q`` has an
    overlap just above its invariant 0 (``1e-6 < Q_kk < ε = START_EPS``) that the full map
    makes grow from ``ε``, else None.

    There the coarse map sits at its own threshold (α = 0.75: the coarse staircase
    threshold is ≈ 0.75, the full one 0.719) and ``Q_kk = 0`` repels the full map slowly:
    secant steps, fitted to that nearly linear direction, go to the repelling 0, and the
    kick of :func:`_unstable_vanishing_direction` comes after ~100 full steps.  One full
    evaluation decides it before any."""
    q = np.diag(Q)
    marginal = np.flatnonzero((q > VANISHING_OVERLAP) & (q < START_EPS))
    if not marginal.size:
        return None
    kick = Q.copy()
    kick[marginal, marginal] = START_EPS
    if not _valid_overlap(kick):
        return None
    return kick if np.any(np.diag(se.update(kick))[marginal] > START_EPS) else None


def _heads_to_perfect_recovery(se: StateEvolution, Q: np.ndarray) -> np.ndarray | None:
    """Continuous prior, noiseless continuous output: is the fixed point ``Q = I``?
    Returns the last iterate of the approach if so (a warm start next to ``I`` for the
    next α of a sweep), else None.

    Near ``I`` a noiseless channel's gaps ``g = 1 - diag Q`` follow a linear map,
    ``g -> J g`` (``g -> g/α`` for ``y = z``): the plain iteration approaches ``I``
    geometrically, on ever narrower posteriors, without reaching it.  From ``Q`` (within
    ``CONTINUOUS_RECOVERY_GAP`` of ``I``: the start, or where the coarse iteration ended)
    undamped steps of the full map give ``g_0, g_1, …`` (each gap below
    ``RECOVERY_TRANSIENT_GAP``, at most ``RECOVERY_MAX_STEPS`` steps); on the last ``p + 2``
    of them, after every step from the ``p + 1``-th, the answer is yes when
    every gap shrinks on the last step and either the last two per-direction ratios agree
    within 5 % (the approach along ``J``'s top eigenvector) or ``J`` fitted to
    ``g_0 … g_p`` has spectral radius below 1 and predicts ``g_{p+1}`` within 5 % (the
    approach before it has settled on that direction, when the layers' gaps differ by
    orders of magnitude).  A fixed point just below ``I`` breaks both: its map is affine,
    not linear, in ``g``, and the ratios drift to 1.  (One with gaps far below ``g_0`` is
    not told apart from ``I``: the answer is accurate to the gaps it starts from.)
    """
    ch = se.channel
    if se.prior.discrete or se.discrete or ch.noise_dim:
        return None
    gaps = [1.0 - np.diag(Q)]
    if not np.all((gaps[0] > 0) & (gaps[0] < CONTINUOUS_RECOVERY_GAP)):
        return None
    p = len(gaps[0])
    for step in range(RECOVERY_MAX_STEPS):
        Q = se.update(Q)
        gaps.append(1.0 - np.diag(Q))
        if not (np.all(gaps[-1] > 0) and np.all(gaps[-1] < RECOVERY_TRANSIENT_GAP)):
            return None
        if step >= p and _geometric_approach(np.array(gaps[-(p + 2):])):
            return Q
    return None


def _geometric_approach(g: np.ndarray) -> bool:
    """Whether the gaps ``g (p + 2, p)`` approach 0 along a linear map (the tests of
    :func:`_heads_to_perfect_recovery`)."""
    p = g.shape[1]
    if not np.all(g[-1] < g[-2]):
        return False
    r1, r2 = g[-2] / g[-3], g[-1] / g[-2]
    if np.all(np.abs(r2 - r1) < 0.05 * r1):
        return True
    # J g_k = g_{k+1}, k = 0 … p-1, in units of each direction's largest gap
    scale = g[:-1].max(axis=0)
    A, B = (g[:p] / scale).T, (g[1 : p + 1] / scale).T
    if np.linalg.cond(A) > 1e8:
        return False
    J = B @ np.linalg.inv(A)
    predicted = J @ (g[p] / scale) * scale
    return bool(np.max(np.abs(np.linalg.eigvals(J))) < 1.0 and np.all(
        np.abs(predicted - g[p + 1]) < 0.05 * g[p + 1]))


def replicate_rules(rule: Rule) -> list[Rule]:
    """The ``R`` independent nets of a randomised-QMC rule, each as a rule of its own."""
    R = rule.alt_weights.shape[0]
    n = rule.size // R
    return [
        Rule(rule.points[r * n : (r + 1) * n], rule.alt_weights[r, r * n : (r + 1) * n],
             rule.alt_weights[r : r + 1, r * n : (r + 1) * n], "embedded", rule.kind,
             f"replicate {r} of {rule.description}")
        for r in range(R)
    ]


REPLICATE_TOL_FRACTION = 0.01


def _replicate_fixed_point_error(se: StateEvolution, Q, tol, kw, map_error, secant=None):
    """Standard error of the fixed point from the fixed points of the replicate maps.

    Each replicate solve stops at ``max(tol, REPLICATE_TOL_FRACTION σ)`` per entry, ``σ``
    the standard error of one map step across replicates in that entry: the damped
    residual bound then keeps each replicate within ``2 · 1 %`` of the fixed-point spread
    (both scale with ``1/(1 - slope)``), at a fraction of the steps near a threshold.  Per
    entry, not the smallest ``σ``: an overlap at its invariant 0 has ``σ ≈ 1e-17`` and
    would hold every direction to ``tol``.

    Each replicate's fixed point is a function of its own net only: the start (the full
    rule's fixed point, and the one step already evaluated there) and the acceleration
    change how fast it is reached, not where, so the spread stays an independent estimate.
    ``secant``: the full map's last secant pairs, the first memory of each replicate's
    Anderson steps (its Jacobian is the replicates' to their spread).  A replicate whose
    solve ends on a vanishing overlap ``Q_kk < 1e-6`` where ``Q*_kk > 0`` (from which the
    plain iteration grows, slowly, where 0 repels: secant steps jump to 0, damped steps
    fall below the tolerance), and whose map makes that direction grow, is solved again
    from the kick, as the main solve is.

    The inner-rule part of ``map_error`` (a bias bound, not a replicate spread) is added
    in quadrature after amplification by the ratio of fixed-point to map spread.
    Returns ``(Q_stderr, iterations, replicate fixed points, amplification, inner part)``
    (the amplification: the largest ratio of fixed-point to map spread over the entries
    whose map spread is at least 1e-3 of the largest; the inner part: the amplified
    inner-rule term of ``Q_stderr``); NaN errors and no fixed points if a replicate map
    has no fixed point within ``max_iter``.
    """
    rules = replicate_rules(se.rule)
    R = len(rules)
    reps = [StateEvolution(se.channel, se.alpha, se.settings, se.prior, rule=sub,
                           inner_path=se.inner_path) for sub in rules]
    one_step = np.array([rep.update(Q) for rep in reps])
    step_err = one_step.std(axis=0, ddof=1) / np.sqrt(R)
    # each replicate fixed point only has to be exact on the scale of the spread
    rep_tol = np.maximum(tol, REPLICATE_TOL_FRACTION * step_err)
    fixed, its = [], 0
    for rep, first in zip(reps, one_step, strict=True):
        res = _solve(rep, Q, tol=rep_tol, first=first, secant=secant, **kw)
        if res.converged and res.status != "perfect-recovery":
            vanished = (np.diag(res.x) < VANISHING_OVERLAP) & (np.diag(Q) > 0.0)
            kick = _unstable_vanishing_direction(rep, res.x) if vanished.any() else None
            if kick is not None:
                again = _solve(rep, kick, tol=rep_tol, **kw)
                again.iterations += res.iterations
                res = again
        if res.status == "perfect-recovery":
            fixed.append(np.eye(Q.shape[0]))
            continue
        its += res.iterations
        if not res.converged:
            return np.full_like(Q, np.nan), its, None, float("nan"), None
        fixed.append(res.x)
    fixed = np.array(fixed)
    fp_err = fixed.std(axis=0, ddof=1) / np.sqrt(R)
    gain = np.where(step_err > 0, fp_err / np.where(step_err > 0, step_err, 1.0), 1.0)
    inner = np.sqrt(np.clip(map_error**2 - step_err**2, 0.0, None))
    noisy = step_err >= 1e-3 * step_err.max() if step_err.max() > 0 else step_err >= 0
    amplification = float(gain[noisy].max())
    inner_part = np.maximum(gain, 1.0) * inner
    return np.sqrt(fp_err**2 + inner_part**2), its, fixed, amplification, inner_part


def linear_channel_fixed_point(alpha: float, noise: float) -> float:
    """Closed form for ``y = z + sqrt(Δ) ξ``: the root in [0, 1) of ``Q = Q̂/(1+Q̂)``,
    ``Q̂ = α/(Δ + 1 - Q)``: ``Q = ½[1 + Δ + α - sqrt((α-1)² + 2(α+1)Δ + Δ²)]``."""
    return 0.5 * (
        1 + noise + alpha - np.sqrt((alpha - 1) ** 2 + 2 * (alpha + 1) * noise + noise**2)
    )


__all__ = [
    "SESettings",
    "StateEvolution",
    "SEResult",
    "run_state_evolution",
    "outer_moments",
    "initial_overlap",
    "linear_channel_fixed_point",
]
