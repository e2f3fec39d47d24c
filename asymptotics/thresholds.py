"""Weak-recovery thresholds from the linear stability of Q = 0 (THEORY.md §5).

With ``G_{ll'}(y) = E[z^(l) z^(l')ᵀ | y] - δ_{ll'} I`` under the prior,

    F(M) = Σ_{l,l'} E_y[ G_{ll'}(y) M G_{l'l}(y) ],     α_c = 1 / ρ(F).

``F`` is self-adjoint on symmetric ``p×p`` matrices (Frobenius product); its eigenvectors
tell which directions grow.  Direction ``k`` is assigned the largest positive eigenvalue
whose eigenvector has weight on ``M_kk``; ``α_c(k) = 1/λ_k``.  Directions with
``E[z_k | y] != 0`` are learnable at any α (``α_c = 0``); directions no positive mode
reaches are not learnable from Q = 0 (``α_c = inf``).

The outer expectation over ``y`` and the channel's inner integrals are carried by rules
with alternative weight sets, so every α_c has an error estimate:
``sqrt(err_outer² + err_inner²)``; on the folded, half-step shifted grids of a channel that
offers them (attention, L = 2) the estimate of :func:`_half_step_error` replaces it.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import asdict, dataclass, field

import numpy as np

from .channels.base import Channel
from .checks import MAX_RESOLUTION, check_choice, check_int, check_number
from .integrate import combine_error, gauss_hermite, sobol_replicates

SUPPORT_FRACTION = 0.05  # an eigenvector "reaches" direction k if |M_kk| >= this · max|M_jj|


@dataclass
class DirectionThreshold:
    """Weak-recovery threshold of one direction (layer, for attention)."""

    direction: int  # 1-based
    alpha_c: float
    stderr: float
    status: str  # "finite" | "trivial" | "not-learnable"
    eigenvalue: float
    eigenvalue_error: float


@dataclass
class ThresholdResult:
    """Thresholds of every direction of one channel, with how they were computed."""

    channel: str
    params: dict
    directions: list[DirectionThreshold]
    method: str
    operator: np.ndarray  # F on Sym(p) in the orthonormal basis of `sym_basis(p)`
    diagnostics: dict = field(default_factory=dict)

    def rows(self, model: str | None = None) -> list[dict]:
        """Table rows with the keys of ``smi thresholds``."""
        base = {
            "model": model or self.channel,
            "depth": self.params.get("depth", 1),
            "seq_len": self.params.get("seq_len", 1),
            "skip": self.params.get("skip"),
            "beta": self.params.get("beta"),
        }
        if "noise" in self.params:
            base["noise"] = self.params["noise"]
        if "link" in self.params:  # a link channel: its formula and directions
            base.update(link=self.params["link"], dim=self.params["dim"])
        out = []
        for d in self.directions:
            row = dict(base)
            row.update(
                direction=d.direction,
                alpha_c=d.alpha_c,
                stderr=d.stderr,
                status=d.status,
                method=self.method,
            )
            out.append(row)
        return out

    def to_frame(self, model: str | None = None):
        """:meth:`rows` as a pandas DataFrame, one row per direction (pandas is an optional
        extra: :func:`asymptotics.frames.to_frame`)."""
        from .frames import to_frame

        return to_frame(self.rows(model))

    def as_dict(self) -> dict:
        d = asdict(self)
        d["operator"] = self.operator.tolist()
        return d


def sym_basis(p: int) -> np.ndarray:
    """Orthonormal basis of symmetric ``p×p`` matrices: ``E_ii`` and ``(E_ij+E_ji)/√2``."""
    basis = []
    for i in range(p):
        for j in range(i, p):
            M = np.zeros((p, p))
            if i == j:
                M[i, i] = 1.0
            else:
                M[i, j] = M[j, i] = 1.0 / math.sqrt(2.0)
            basis.append(M)
    return np.array(basis)


def operator_matrix(G: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Matrix of ``F`` on Sym(p) from ``G (K, L, p, L, p)`` and outer ``weights (K,)``.

    ``F(M)_ab = Σ_K w Σ_{l,l'} G[l,a,l',c] M_cd G[l',d,l,b]``.
    """
    p = G.shape[-1]
    T = np.einsum("k,klamc,kmdlb->acdb", weights, G, G, optimize=True)
    basis = sym_basis(p)
    FM = np.einsum("acdb,ncd->nab", T, basis)
    return np.einsum("nab,mab->mn", FM, basis)


def direction_eigenvalues(F: np.ndarray, p: int) -> np.ndarray:
    """``λ_k`` per direction: the largest positive eigenvalue whose eigenvector reaches k."""
    F = 0.5 * (F + F.T)
    evals, evecs = np.linalg.eigh(F)
    basis = sym_basis(p)
    lam = np.zeros(p)
    for n in range(len(evals)):
        if evals[n] <= 0:
            continue
        M = np.einsum("m,mab->ab", evecs[:, n], basis)
        diag = np.abs(np.diag(M))
        if diag.max() <= 0:
            continue
        reach = diag >= SUPPORT_FRACTION * diag.max()
        lam = np.where(reach, np.maximum(lam, evals[n]), lam)
    return lam


def _inv_or_inf(lam: float) -> float:
    return 1.0 / lam if lam > 0 else math.inf


def thresholds_from_moments(
    second_sets: np.ndarray,
    outer_weight_sets: np.ndarray,
    outer_error_kind: str,
    inner_error_kind: str = "embedded",
    mean_sets: np.ndarray | None = None,
    trivial: bool = False,
    eigenvalue_error: tuple[np.ndarray, dict] | None = None,
) -> tuple[list, np.ndarray, dict]:
    """Per-direction eigenvalues with errors.

    ``second_sets (S_in, K, L, p, L, p)``: posterior second moments on each inner weight set;
    ``outer_weight_sets (S_out, K)``: outer weights (primary first).  The functional is
    evaluated on (primary, primary), on each outer alternative with the primary inner set,
    and on each inner alternative with the primary outer set.  ``eigenvalue_error``
    ``(err (p,), diagnostics)``, where given, replaces that estimate (only the primary
    sets are used).
    """
    L, p = second_sets.shape[-2], second_sets.shape[-1]
    eye = np.eye(L * p).reshape(L, p, L, p)
    G_sets = second_sets - eye

    def lam_of(G, w):
        return direction_eigenvalues(operator_matrix(G, w), p)

    F0 = operator_matrix(G_sets[0], outer_weight_sets[0])
    lam0 = direction_eigenvalues(F0, p)
    if eigenvalue_error is not None:
        err, diag = np.asarray(eigenvalue_error[0], dtype=float), dict(eigenvalue_error[1])
    else:
        outer_vals = [lam0] + [lam_of(G_sets[0], w) for w in outer_weight_sets[1:]]
        err_out = combine_error(np.array(outer_vals), outer_error_kind)
        inner_vals = [lam0] + [lam_of(G, outer_weight_sets[0]) for G in G_sets[1:]]
        err_in = (combine_error(np.array(inner_vals), inner_error_kind)
                  if len(inner_vals) > 1 else 0)
        err = np.sqrt(err_out**2 + err_in**2)
        diag = {
            "eigenvalue_error_outer": err_out.tolist(),
            "eigenvalue_error_inner": np.ravel(err_in).tolist(),
        }
    trivial_dirs = np.zeros(p, dtype=bool)
    if mean_sets is not None:
        m = mean_sets[0]
        msq = np.einsum("k,klp->p", outer_weight_sets[0], m**2)
        diag["mean_square_posterior_mean"] = msq.tolist()
        trivial_dirs = msq > 1e-10
    if trivial:
        trivial_dirs[:] = trivial_dirs | trivial
    dirs = []
    for k in range(p):
        if trivial_dirs[k]:
            dirs.append(
                DirectionThreshold(k + 1, 0.0, 0.0, "trivial", float(lam0[k]), float(err[k]))
            )
        elif lam0[k] <= max(err[k], 1e-14 * max(lam0.max(), 0.0)):
            # no growing mode reaches k: G vanishes on it (to its numerical error)
            dirs.append(
                DirectionThreshold(k + 1, math.inf, 0.0, "not-learnable", 0.0, float(err[k]))
            )
        else:
            a = 1.0 / lam0[k]
            dirs.append(
                DirectionThreshold(
                    k + 1, a, float(err[k] / lam0[k] ** 2), "finite", float(lam0[k]), float(err[k])
                )
            )
    return dirs, F0, diag


# --------------------------------------------------------------------------------------
# outer expectations over y at Q = 0
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ThresholdSettings:
    """Numerical settings of the Q = 0 threshold computation.

    ``method``: "quadrature" (tensor trapezoid on the output statistic and inner layers,
    attention with (depth-1)·L + L <= 4, and every closed-form channel) or "mc"
    (randomised QMC on the teacher's Z* outside: ``mc_batches`` scrambled Sobol' nets of
    ``mc_samples / mc_batches`` points, error = standard error across nets; Sobol'
    inside); "auto" picks quadrature when possible.
    ``resolution`` refines every grid by a factor 2 per unit (used to show convergence;
    at most :data:`~asymptotics.checks.MAX_RESOLUTION`).  Every field is checked here
    (``ValueError`` naming it).
    """

    method: str = "auto"
    resolution: int = 0
    outer_nodes: int = 0  # 0: default for the method
    outer_half_width: float = 0.0  # 0: default (attention: 9·(1 + skip))
    mc_samples: int = 2**15
    mc_batches: int = 8
    seed: int = 0

    def __post_init__(self):
        check_choice("method", self.method, THRESHOLD_METHODS)
        check_int("resolution", self.resolution, 0, MAX_RESOLUTION)
        check_int("outer_nodes", self.outer_nodes, 0)
        check_number("outer_half_width", self.outer_half_width, minimum=0)
        check_int("mc_samples", self.mc_samples, 1)
        check_int("mc_batches", self.mc_batches, 2)
        check_int("seed", self.seed, 0)


THRESHOLD_METHODS = ("auto", "quadrature", "mc")


def _fibre_sets(channel: Channel, obs: np.ndarray):
    """Posterior second moments and means on each inner weight set, at Q = 0."""
    sets, inner_kind = channel.null_moment_sets(obs)
    mean = None if np.isnan(sets.mean).all() else sets.mean
    return sets.log_norm, sets.second, mean, inner_kind


def _half_step_grids(channel: Channel) -> bool:
    """Whether the channel's output grid and Q = 0 moments take half-step shifts and folds
    (``output_grid(..., shift, fold)``, ``null_moment_sets(obs, inner_shift,
    primary_only)``): the channel declares it by those keywords."""
    grid = inspect.signature(channel.output_grid).parameters
    null = inspect.signature(channel.null_moment_sets).parameters
    return {"shift", "fold"} <= grid.keys() and {"inner_shift", "primary_only"} <= null.keys()


def _output_grid(channel: Channel, settings: ThresholdSettings, shift=(0, 0)):
    """The channel's outer grid, folded by its symmetries where it offers that."""
    args = (settings.resolution, settings.outer_nodes, settings.outer_half_width)
    if _half_step_grids(channel):
        return channel.output_grid(*args, shift=shift, fold=True)
    return channel.output_grid(*args)


HALF_STEP_SHIFTS = (((1, 0), None), ((0, 1), None), (None, (1, 0)), (None, (0, 1)))


def _half_step_error(channel: Channel, settings: ThresholdSettings, second: np.ndarray,
                     outer_w: np.ndarray) -> tuple[np.ndarray, dict]:
    """Error of every ``λ_k`` from rules moved by half a step along one axis at a time.

    A trapezoid rule of step ``h`` on an analytic integrand errs by
    ``E = Σ_{k≠0} f̂(2πk/h)`` over ``k ∈ Z^4`` (outer ``u, v``, inner ``u, v``; Poisson
    summation); terms with every ``k_a`` even are those of the rule of step ``h/2``, far
    smaller.  Moving axis ``a`` by ``h/2`` flips the sign of the terms with ``k_a`` odd, so
    ``Δ_a = λ(h) - λ(h, a shifted) ≈ 2 Σ_{k_a odd} f̂`` and

        err = Σ_a |Δ_a|  ≈  2 Σ_a |Σ_{k_a odd} f̂|,

    twice the size of each axis's terms (a term odd along several axes counted once per
    axis: the inner rule's diagonal terms twice), so about 2 |E| where one axis dominates.
    The factor 2 over the leading order is the margin for what it leaves out (terms odd
    along no axis, the curvature of ``λ`` in the weights): on the default table
    ``Σ_a |Δ_a| / 2`` came within 1 % of the change to the next resolution at skip 4.
    ``err`` is 2.0-36x that change for 15 of the 16 default thresholds; at skip 1.5,
    layer 2 outer and inner terms of 2e-12 cancel in the change (3e-14), which no size
    estimate sees (tests/test_table_speed.py).  The embedded coarser rule overestimated by
    10^3-10^7 (BENCHMARKS.md, "Default table").  Costs four more
    evaluations of the operator.
    """
    p = second.shape[-1]
    G = second - np.eye(second.shape[-4] * p).reshape(second.shape[-4:])
    lam0 = direction_eigenvalues(operator_matrix(G, outer_w), p)
    parts = []
    obs0 = None
    for outer_shift, inner_shift in HALF_STEP_SHIFTS:
        if outer_shift is not None:
            obs, flat_w, _ = _output_grid(channel, settings, outer_shift)
        else:
            if obs0 is None:
                obs0, w0, _ = _output_grid(channel, settings)
            obs, flat_w = obs0, w0
        sets, _ = channel.null_moment_sets(obs, inner_shift=inner_shift, primary_only=True)
        Gv = sets.second[0] - np.eye(second.shape[-4] * p).reshape(second.shape[-4:])
        lam = direction_eigenvalues(
            operator_matrix(Gv, flat_w[0] * np.exp(sets.log_norm[0])), p)
        parts.append(np.abs(lam0 - lam))
    err = np.sum(parts, axis=0)
    names = ("outer_u", "outer_v", "inner_u", "inner_v")
    diag = {f"eigenvalue_error_{n}": part.tolist() for n, part in zip(names, parts, strict=True)}
    return err, diag


def weak_recovery_thresholds(
    channel: Channel, settings: ThresholdSettings | None = None
) -> ThresholdResult:
    """Weak-recovery threshold α_c of every direction of ``channel`` at Q = 0.

    The outer expectation over ``y`` is an exact sum for discrete outputs, the channel's
    own output grid weighted by ``Z_out`` ("quadrature"), or a Monte Carlo average over the
    teacher's pre-activations ``Z*`` ("mc"; Gauss–Hermite for closed-form channels
    without an output grid).
    """
    settings = settings or ThresholdSettings()
    eigenvalue_error = None
    if settings.method not in ("auto", "quadrature", "mc"):
        raise ValueError(f"unknown threshold method {settings.method!r}")
    ch = channel.refined(settings.resolution, settings.seed)
    L, p = ch.seq_len, ch.dim
    method = settings.method
    dim_total = ch.quadrature_dimension()
    if dim_total:
        if method == "auto":
            method = "quadrature" if dim_total <= 4 else "mc"
        if method == "quadrature" and dim_total > 4:
            raise ValueError(
                f"quadrature needs (depth-1)·L + L <= 4, got {dim_total}: use method 'mc'"
            )
    elif method == "auto":
        method = "quadrature"
    if ch.discrete_outputs is not None:
        obs = ch.discrete_outputs
        log_norm, second, mean, inner_kind = _fibre_sets(ch, obs)
        w = np.exp(log_norm[0])
        outer_w, outer_kind, desc = np.vstack([w, w]), "embedded", "exact sum over outputs"
        normalisation = outer_w.sum(axis=1)
    elif method == "quadrature" and (grid := _output_grid(ch, settings)) is not None:
        obs, flat_w, desc = grid
        if _half_step_grids(ch):
            sets, inner_kind = ch.null_moment_sets(obs, primary_only=True)
            log_norm, second, mean = sets.log_norm, sets.second, None
            outer_w = flat_w[:1] * np.exp(log_norm[0])[None, :]
            eigenvalue_error = _half_step_error(ch, settings, second[0], outer_w[0])
            desc += "; error: half-step shifted rules"
        else:
            log_norm, second, mean, inner_kind = _fibre_sets(ch, obs)
            outer_w = flat_w * np.exp(log_norm[0])[None, :]
        outer_kind = "embedded"
        normalisation = outer_w.sum(axis=1)
    else:
        d = L * p + ch.noise_dim
        if method == "quadrature":
            rule = gauss_hermite(d, settings.outer_nodes or 40 * 2**settings.resolution)
        else:
            log2 = max(4, int(round(np.log2(settings.mc_samples / settings.mc_batches))))
            rule = sobol_replicates(d, log2, settings.mc_batches, settings.seed)
        Z = rule.points[:, : L * p].reshape(-1, L, p)
        noise = rule.points[:, L * p :] if ch.noise_dim else None
        obs = ch.observe(Z, noise)
        log_norm, second, mean, inner_kind = _fibre_sets(ch, obs)
        outer_w, outer_kind, desc = rule.weight_sets, rule.error_kind, f"{rule.description} on Z*"
        normalisation = np.ones(len(outer_w))
    dirs, F, diag = thresholds_from_moments(
        second,
        outer_w,
        outer_kind,
        inner_kind,
        mean_sets=None if ch.sign_symmetric else mean,
        trivial=ch.has_trivial_direction(),
        eigenvalue_error=eigenvalue_error,
    )
    diag["normalisation"] = np.asarray(normalisation).tolist()
    diag["outer"] = desc
    if ch.inner_description is not None:
        diag["inner"] = ch.inner_description
    return ThresholdResult(channel.name, channel.params(), dirs, method, F, diag)


__all__ = [
    "DirectionThreshold",
    "ThresholdResult",
    "ThresholdSettings",
    "weak_recovery_thresholds",
    "operator_matrix",
    "direction_eigenvalues",
]
