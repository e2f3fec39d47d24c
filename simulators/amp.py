"""Finite-size Bayes-optimal GAMP for sequence multi-index models (THEORY.md §3).

Data: :func:`simulators.data.teacher_data` (the generator training uses too): a seeded
teacher ``W* ∈ R^{D×p}`` (iid N(0,1)), ``N = round(αD)`` sequences ``x ∈ R^{L×D}`` (iid
N(0,1)) and labels ``y = channel.sample(x W*/√D, rng)``: the channel's own forward map, no
second implementation.  The posterior conditions on ``channel.observation_from_output(y)``
(for attention: ``a = s_last`` up to sign).

One GAMP iteration (samples μ, tokens l; estimates ``Ŵ (D×p)``, ``Ĉ (p×p)``):

    V        = Ĉ
    ω_{μl}   = Ŵᵀ x_{μl}/√D − V g_{μl}^{prev}                       (Onsager term)
    g_{μl}   = V⁻¹(E[z^(l) | y_μ, ω_μ, V] − ω_{μl})
    ∂g_{μl}  = V⁻¹(Cov[z^(l) | y_μ, ω_μ, V] − V)V⁻¹                 (posterior covariance)
    A        = −(1/D) Σ_{μl} ∂g_{μl}
    B        = (1/√D) Σ_{μl} x_{μl} g_{μl}ᵀ + Ŵ A
    Ŵ ← B (I + A)⁻¹,   Ĉ ← (I + A)⁻¹                                 (prior N(0, I_p))

Damping ``η ∈ (0, 1]`` (1 = undamped, the convention of :mod:`asymptotics.solver`) acts on
the output side: ``g ← (1−η) g_prev + η g`` and ``A ← (1−η) A_prev + η A`` (from the start
values ``g = 0``, ``A = 0``); the damped ``g`` enters both ``B`` and the next Onsager term,
so the Onsager correction stays consistent with what entered ``Ŵ``.  Fixed points do not
depend on ``η``.  Default ``η = 0.5`` (as the SE solver): undamped, the variance update
``V ← (I + A(V))⁻¹`` at ``ω ≈ 0`` overshoots.  Example: attention, α = 1.2, D = 250, seed
0: the finite-N fluctuation of ``Σ Cov`` gives ``V_22 = 1.47`` after one step, then 0.73,
then ``I + A`` has eigenvalue −0.07 (status ``non-pd-variance``); with η = 0.5 it learns.

Start: ``Ŵ_0`` iid N(0, ``init_scale``) entries (default variance 1e-3, so
``Q_0 ≈ 1e-3 I`` like the uninformed SE start, and ``M_0 = O(√(1e-3/D))``), ``Ĉ_0 = I``,
``g = 0``.

Positive definiteness: ``I + A`` must be positive definite (then so is ``Ĉ = V``).  When it
is not, the run stops with status ``"non-pd-variance"`` (no silent regularisation).  The
named option ``psd_projection=True`` instead replaces ``A`` by its projection on the PSD
cone whenever it has a negative eigenvalue; every projection is counted and logged in the
iteration row (``psd_projected``).

Back-ends: the large products ``x Ŵ`` and ``xᵀ g`` (and the test-set projection) run on
the array namespace ``xp``: cupy on ``device='gpu'``; on ``'cpu'`` numba kernels in the
thread pool the posterior kernel uses (:mod:`simulators._cpu_products`; BLAS's spinning
threads took the cores the posterior kernel needed).  The per-sample
posterior integrals are batched over samples: the attention channel's numba kernel on CPU,
its fused CUDA kernel on GPU, whose moments stay on the device (``posterior_on``): ``ω``,
``g`` and the posterior live in ``xp``; per iteration only ``Σ Cov`` (p×p) and a few scalars
come to the host.  Closed-form channels are numpy only: ``ω`` (N·L·p numbers) is copied to
the host for them and the moments back, which is cheap next to the products (N·L·D).  All
random numbers are drawn on the host from the seed's streams
(:func:`simulators.data.seed_streams`), so the numpy and cupy paths see the same data.

Every iteration also records ``delta`` (RMS change of the entries of Ŵ: the convergence
test is ``delta < tol``, which cannot fire spuriously at the small start because an
escaping direction grows geometrically, and which does fire when Ŵ decays to the
uninformed fixed point Ŵ = 0) and ``g_rel_quad_error``, the channel's own embedded-rule
error estimate of ``E[z|…]`` propagated to ``g`` (RMS, relative to RMS ``g``), which grows
when ``V`` becomes very small or anisotropic near perfect recovery.

Reported per iteration: ``Q = ŴᵀŴ/D``, ``M = ŴᵀW*/D`` and the plug-in generalisation
error ``E‖g(Z*) − g(ω)‖²`` (THEORY §4; ``g`` the noiseless forward map, ``ω = xŴ/√D``) on
fresh test data.  Because the attention output is invariant under ``z_k → −z_k`` per layer,
``M`` is reported in the per-direction sign gauge: row ``k`` of ``M`` (and row and column
``k`` of ``Q``) multiplied by ``sign(M_kk)``, so ``diag M = |M_kk|``; ``M_raw`` keeps the
raw matrix.  ``m_rel = |M_kk| / (|w*_k|²/D)`` divides out the teacher's own norm, whose
fluctuation (std ``sqrt(2/D)``) dominates the seed spread of ``M_kk``; it has the same
large-D limit (``Q_SE,kk``) with a much smaller spread near perfect recovery.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from asymptotics.backend import get_namespace, to_numpy
from asymptotics.channels.base import Channel, check_device
from asymptotics.checks import check_int, check_number

from . import _cpu_products
from .data import project, project_transpose, teacher_data


@dataclass
class AMPConfig:
    """Settings of one GAMP run (see the module docstring)."""

    dim: int = 1000
    alpha: float = 1.2
    max_iter: int = 50
    damping: float = 0.5  # η: 1 = undamped; 0.5 as the SE solver's default
    tol: float = 1e-5  # on the RMS change of the entries of Ŵ
    init_scale: float = 1e-3  # variance of the entries of Ŵ_0
    n_test: int = 2000
    device: str = "cpu"
    psd_projection: bool = False
    #: on ``device="cpu"``: the channel's compiled kernels ("numba") or the array path the
    #: GPU runs, on numpy ("array": the GPU code path, testable on the CPU)
    cpu_kernel: str = "numba"

    def __post_init__(self):
        self.check_fields()

    def check_fields(self):
        """The field checks of :meth:`validate` (every one but the device's back-end)."""
        check_number("alpha", self.alpha, above=0)
        check_int("dim", self.dim, 2)
        check_int("max_iter", self.max_iter, 1)
        check_number("damping", self.damping, above=0, maximum=1)
        check_number("tol", self.tol, above=0)
        check_number("init_scale", self.init_scale, minimum=0)
        check_int("n_test", self.n_test, 1)
        if not isinstance(self.psd_projection, (bool, np.bool_)):
            raise ValueError(f"psd_projection must be a bool, got {self.psd_projection!r} "
                             f"({type(self.psd_projection).__name__})")
        if self.n_samples < 1:
            raise ValueError(f"alpha*dim = {self.alpha * self.dim} gives no samples")
        check_device(self.device, self.cpu_kernel)
        return self

    def validate(self):
        """Raise ``ValueError`` (naming the field, showing the value and its type) on bad
        settings, before any work, including a missing GPU back-end; returns the config.
        Construction runs the field checks; a run validates again, since the config is
        mutable."""
        self.check_fields()
        get_namespace(self.device)  # ValueError / BackendError before any work
        return self

    @property
    def n_samples(self) -> int:
        return int(round(self.alpha * self.dim))


@dataclass
class AMPProblem:
    """Teacher, training data and test data of one seed (arrays in ``xp`` unless noted)."""

    W_star: object  # (D, p)
    X: object  # (N, L, D)
    obs: np.ndarray  # host: what the posterior conditions on, (N, ...)
    X_test: object  # (n_test, L, D)
    g_test: np.ndarray  # host: noiseless g(Z*) on the test set
    W0: object  # (D, p) start


def make_problem(channel: Channel, cfg: AMPConfig, seed: int, xp=np) -> AMPProblem:
    """The data of ``seed`` from :func:`simulators.data.teacher_data` (labels on the host),
    with ``Ŵ_0`` of variance ``cfg.init_scale``."""
    data = teacher_data(channel, seed, cfg.dim, cfg.n_samples, cfg.n_test,
                        init_std=math.sqrt(cfg.init_scale), xp=xp, host_labels=True)
    obs = np.asarray(channel.observation_from_output(data.y), dtype=float)
    g_test = np.asarray(data.y_test, dtype=float)
    return AMPProblem(data.W_star, data.X, obs, data.X_test, g_test, data.W0)


def sign_gauge(M: np.ndarray, Q: np.ndarray):
    """Per-direction sign gauge: ``S M``, ``S Q S`` with ``S = diag(sign M_kk)`` (0 -> +)."""
    s = np.where(np.diag(M) < 0, -1.0, 1.0)
    return s[:, None] * M, s[:, None] * Q * s[None, :]


def plugin_error(channel: Channel, g_star: np.ndarray, omega: np.ndarray) -> float:
    """``mean ‖g(Z*) − g(ω)‖²`` (summed over output entries, averaged over samples)."""
    diff = np.asarray(g_star) - np.asarray(channel.forward(omega, None))
    n = diff.shape[0]
    return float(np.sum(diff**2) / n)


@dataclass
class AMPResult:
    """Outcome of one GAMP run; ``records`` holds one dict per iteration (0 = start)."""

    seed: int
    status: str  # "converged" | "max-iter" | "non-pd-variance" | "non-finite"
    converged: bool
    iterations: int
    records: list = field(default_factory=list)
    W: object = None
    C: np.ndarray | None = None
    psd_projections: int = 0

    @property
    def final(self) -> dict:
        return self.records[-1]

    def tail(self, key: str, n: int = 20):
        """Mean and std of ``key`` over the last ``n`` iterations (a run that wanders
        around its fixed point instead of converging, see BENCHMARKS.md)."""
        vals = [r[key] for r in self.records[1:] if key in r][-n:]
        if not vals:
            return None, None
        a = np.asarray(vals, dtype=float)
        return a.mean(axis=0).tolist(), a.std(axis=0).tolist()


def covariance_sum(post, xp) -> np.ndarray:
    """``Σ_{μ,l} Cov[z^(l)_μ | y_μ, ω_μ, V]`` (p×p, on the host); on a device namespace the
    sum runs there: ``Σ_l Σ_μ E[z^(l) z^(l)ᵀ] − Σ_{μ,l} m mᵀ``."""
    if xp is np:
        return post.token_covariance.sum(axis=(0, 1))
    sec, mean = xp.asarray(post.second), xp.asarray(post.mean)
    tot = sec[:, 0, :, 0, :].sum(axis=0)
    for l in range(1, mean.shape[-2]):
        tot = tot + sec[:, l, :, l, :].sum(axis=0)
    return to_numpy(tot - xp.einsum("nlp,nlq->pq", mean, mean))


def _products(xp):
    """``(project, project_transpose)`` for AMP's loop: on the CPU in numba's thread pool
    (:mod:`simulators._cpu_products`, which the posterior kernel shares), else ``xp``'s."""
    if xp is np:
        return _cpu_products.project, _cpu_products.project_transpose
    return project, project_transpose


def _metrics(channel, prob, W, C, D, xp):
    WW = to_numpy(W.T @ W) / D
    MW = to_numpy(W.T @ prob.W_star) / D
    M, Q = sign_gauge(MW, WW)
    tq = np.diag(to_numpy(prob.W_star.T @ prob.W_star)) / D
    omega_t = to_numpy(_products(xp)[0](prob.X_test, W))
    return {
        "M": M.tolist(),
        "Q": Q.tolist(),
        "M_raw": MW.tolist(),
        "m": np.diag(M).tolist(),
        "q": np.diag(Q).tolist(),
        "m_rel": (np.diag(M) / tq).tolist(),
        "gen_error": plugin_error(channel, prob.g_test, omega_t),
        "V": np.asarray(C).tolist(),
    }


def run_amp(
    channel: Channel,
    cfg: AMPConfig,
    seed: int = 0,
    problem: AMPProblem | None = None,
    callback=None,
) -> AMPResult:
    """Run Bayes-GAMP on the data of ``seed``; one record per iteration (and the start)."""
    cfg.validate()
    xp = get_namespace(cfg.device)
    prob = problem or make_problem(channel, cfg, seed, xp)
    D, p, L = cfg.dim, channel.dim, channel.seq_len
    N = prob.X.shape[0]
    eta = cfg.damping
    I = np.eye(p)
    W = prob.W0
    C = I.copy()
    g_prev = xp.zeros((N, L, p))
    A_prev = np.zeros((p, p))  # the start Ĉ = I corresponds to A = 0
    records = []
    n_proj = 0
    x_times, x_transpose_times = _products(xp)

    def emit(it, extra):
        rec = {"iteration": it, **_metrics(channel, prob, W, C, D, xp), **extra}
        records.append(rec)
        if callback is not None:
            callback(rec)

    emit(0, {"delta": None, "psd_projected": False, "g_rel_quad_error": None})
    status = "max-iter"
    it = 0
    for it in range(1, cfg.max_iter + 1):
        V = C
        Vinv = np.linalg.inv(V)
        omega = x_times(prob.X, W) - g_prev @ xp.asarray(V.T)  # (N, L, p); V symmetric
        if not bool(xp.all(xp.isfinite(omega))):
            status = "non-finite"
            break
        post = channel.posterior_on(prob.obs, omega, V, cfg.device, cfg.cpu_kernel)
        VinvT = xp.asarray(Vinv.T)
        g = (xp.asarray(post.mean) - omega) @ VinvT
        quad_err = None
        if post.error is not None:  # the channel's own quadrature error of E[z | ...]
            g_err = float(xp.sqrt(xp.mean((xp.asarray(post.error) @ VinvT) ** 2)))
            quad_err = float(g_err / max(float(xp.sqrt(xp.mean(g**2))), 1e-300))
        # A = -(1/D) Σ V⁻¹(Cov − V)V⁻¹ = V⁻¹ (N L V − Σ Cov) V⁻¹ / D
        A = Vinv @ (N * L * V - covariance_sum(post, xp)) @ Vinv / D
        A = 0.5 * (A + A.T)
        if not (bool(xp.all(xp.isfinite(g))) and np.all(np.isfinite(A))):
            status = "non-finite"
            break
        if eta < 1:
            g = (1 - eta) * g_prev + eta * g
            A = (1 - eta) * A_prev + eta * A
        projected = False
        if cfg.psd_projection:
            w, U = np.linalg.eigh(A)
            if w.min() < 0:
                A = (U * np.clip(w, 0.0, None)) @ U.T
                projected = True
                n_proj += 1
        IA = I + A
        if np.linalg.eigvalsh(IA).min() <= 0:
            status = "non-pd-variance"
            records.append({"iteration": it, "failed": True, "status": status,
                            "eig_I_plus_A": np.linalg.eigvalsh(IA).tolist()})
            break
        C_new = np.linalg.inv(IA)
        C_new = 0.5 * (C_new + C_new.T)
        B = x_transpose_times(prob.X, xp.asarray(g)) + W @ xp.asarray(A)
        W_new = B @ xp.asarray(C_new)
        delta = float(to_numpy(xp.sqrt(xp.mean((W_new - W) ** 2))))
        W, C, g_prev, A_prev = W_new, C_new, g, A
        if not math.isfinite(delta):
            status = "non-finite"
            break
        emit(it, {"delta": delta, "psd_projected": projected, "g_rel_quad_error": quad_err})
        if delta < cfg.tol:
            status = "converged"
            break
    iterations = it
    return AMPResult(seed, status, status == "converged", iterations, records, W, C, n_proj)


# ------------------------------------------------------------------ summaries over seeds


def stats(values):
    """Mean, std (ddof=1; 0 for one value) and standard error of a list of arrays."""
    a = np.asarray(values, dtype=float)
    mean = a.mean(axis=0)
    std = a.std(axis=0, ddof=1) if a.shape[0] > 1 else np.zeros_like(mean)
    return mean, std, std / math.sqrt(a.shape[0])


SUMMARY_KEYS = ("M", "Q", "m", "q", "m_rel", "gen_error", "iterations")


def summarise(results: list[AMPResult]) -> dict:
    """Mean / std / stderr over seeds of the final ``M, Q, m, q, gen_error, iterations``.

    Runs that failed (no finite final state) are excluded and counted in ``n_failed``.
    """
    ok = [r for r in results if r.status in ("converged", "max-iter")]
    row = {
        "summary": True,
        "n_seeds": len(results),
        "n_converged": sum(r.converged for r in results),
        "n_failed": len(results) - len(ok),
        "statuses": [r.status for r in results],
    }
    for key in SUMMARY_KEYS:
        if not ok:
            row[f"{key}_mean"] = row[f"{key}_std"] = row[f"{key}_stderr"] = None
            continue
        vals = [r.iterations if key == "iterations" else r.final[key] for r in ok]
        mean, std, se = stats(vals)
        conv = (lambda x: x.tolist()) if np.ndim(mean) else float  # noqa: E731
        row[f"{key}_mean"] = conv(mean)
        row[f"{key}_std"] = conv(std)
        row[f"{key}_stderr"] = conv(se)
    return row
