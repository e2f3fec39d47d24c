"""Finite-size training of the deep tied low-rank attention network (THEORY.md §2).

Teacher-student setting.  The network is one :class:`Architecture` (depth, L, skip c,
beta, rank), the value the attention channel is built from.  A teacher of the same
architecture with planted weights ``W* in R^{D x (depth*rank)}`` (iid N(0,1) entries)
labels ``N = alpha D`` training sequences ``x_mu in R^{L x D}`` (iid N(0,1)) by its last
attention matrix ``y_mu = g(x_mu W*/sqrt(D))`` (L x L, noiseless): through the attention
channel for rank 1, through the same forward map for rank > 1.  Data come from
:func:`simulators.data.teacher_data`, the generator AMP uses, so a seed gives AMP and
training the same teacher and sequences.  The student ``W`` is trained on the squared loss
on that matrix,

    loss(W) = (1/n) sum_{mu in batch} || yhat_mu(W) - y_mu ||_F^2 ,   n = batch size,

(no 1/2, no 1/L, no 1/D; optional coupled weight decay adds ``lam/2 ||W||_F^2`` through
the optimizer, see :mod:`simulators.optimizers`).  The test loss is the same average over
``n_test`` fresh sequences; it estimates ``E ||g(Z_student) - g(Z*)||_F^2``, so at W = 0
it equals the plug-in error at Q = 0 of THEORY §4 (about 0.386 for the default model).

The network sees data only through ``S = X W / sqrt(D)`` (``n x L x p``): forward and
backward are the two large products ``S = X W/sqrt(D)`` and ``grad = X^T dS / sqrt(D)``
plus per-sample L x L algebra.  The forward map is :func:`attention_forward` (single
source of truth); the backward pass is written here by hand, in the array namespace of
the data (numpy or cupy).

Backward pass (per sample, ``P_k = softmax(beta s_k s_k^T)``, ``A_k = P_k + c I``,
``B_k = A_k B_{k-1}``, ``s_k = B_{k-1} z_k``, ``y = P_depth``), with ``bar`` = cotangent:

    bar P_depth = G
    softmax:   bar T = P * (bar P - rowsum(bar P * P)),  bar s = beta (bar T + bar T^T) s
    s_k:       bar z_k = B_{k-1}^T bar s_k,   bar B_{k-1} += bar s_k z_k^T
    B_k:       bar A_k = bar B_k B_{k-1}^T,   bar B_{k-1} += A_k^T bar B_k,  bar P_k = bar A_k
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from asymptotics.backend import namespace_of, to_numpy
from asymptotics.channels.attention_map import Architecture, attention_forward
from asymptotics.channels.base import Channel
from asymptotics.channels.registry import channel_for
from asymptotics.checks import (
    check_choice,
    check_int,
    check_number,
    check_optional_int,
)

from .data import (
    TeacherData,
    project,
    project_transpose,
    sample_sequences,
    seed_streams,
    teacher_data,
)
from .optimizers import make_optimizer, parse_optimizer_name

DTYPES = ("float64", "float32")

__all__ = [
    "Architecture",
    "AttentionModel",
    "NetworkTeacher",
    "Problem",
    "AttentionOracle",
    "attention_backward",
    "sample_sequences",
    "overlaps",
    "layer_alignment",
    "log_schedule",
    "TrainConfig",
    "make_problem",
    "project",
    "project_transpose",
    "teacher_labels",
    "train_run",
]


@dataclass(frozen=True)
class AttentionModel:
    """The network of an :class:`Architecture`: ``y = attention_forward(Z)`` on
    ``Z = X W/sqrt(D)`` of shape ``(..., L, p)``, ``p = depth * rank``."""

    arch: Architecture = Architecture()

    @property
    def p(self) -> int:
        return self.arch.depth * self.arch.rank

    def forward(self, Z, keep=False):
        a = self.arch
        return attention_forward(Z, a.depth, a.skip, a.beta, a.rank, keep=keep)


@dataclass(frozen=True)
class NetworkTeacher:
    """The noiseless teacher ``y = g(Z)`` of a network of any rank, in the label interface
    of :class:`simulators.data.LabelMap` (``seq_len``, ``dim = p``, ``sample``,
    ``forward``)."""

    arch: Architecture

    @property
    def seq_len(self) -> int:
        return self.arch.seq_len

    @property
    def dim(self) -> int:
        return self.arch.depth * self.arch.rank

    def forward(self, Z, noise=None):
        a = self.arch
        return attention_forward(Z, a.depth, a.skip, a.beta, a.rank)

    def sample(self, Z, rng=None):
        return self.forward(Z)


def teacher_labels(arch: Architecture) -> Channel | NetworkTeacher:
    """What labels the data of ``arch``: the attention channel for rank 1
    (:func:`asymptotics.channels.registry.channel_for`), the shared forward map for
    rank > 1."""
    if arch.rank == 1:
        return channel_for(arch)
    return NetworkTeacher(arch)


def _softmax_backward(P, dP, xp):
    """Cotangent of the scores ``T`` given that of ``P = softmax_rows(T)``."""
    return P * (dP - (dP * P).sum(axis=-1, keepdims=True))


def attention_backward(Z, fwd, G, model: AttentionModel):
    """``bar Z`` (same shape as ``Z``) from the output cotangent ``G = dloss/dy``.

    ``fwd`` is ``attention_forward(Z, ..., keep=True)``.  Works on any leading batch shape.
    """
    xp = namespace_of(Z)
    r, c, beta = model.arch.rank, model.arch.skip, model.arch.beta
    L = Z.shape[-2]
    eye = xp.eye(L, dtype=Z.dtype)
    T = lambda a: xp.swapaxes(a, -1, -2)  # noqa: E731
    dZ = xp.empty_like(Z)
    dP = G
    dB = None  # cotangent of B_{k} flowing into layer k (None = 0)
    depth = model.arch.depth
    for k in range(depth - 1, -1, -1):
        P, s, Bm = fwd.softmaxes[k], fwd.s[k], fwd.mixers[k]
        dB_prev = None
        if k < depth - 1:
            # B_{k+1} = A_{k+1} B_k (0-based: layer k uses mixer B_k, produces A_k)
            dP = dB if k == 0 else dB @ T(Bm)  # bar A_k = bar P_k (B_0 = I)
            if k > 0:  # bar B_{k-1}; layer 0's mixer is the constant I
                dB_prev = T(P + c * eye) @ dB
        dT = _softmax_backward(P, dP, xp)
        ds = beta * ((dT + T(dT)) @ s)
        z = Z[..., k * r : (k + 1) * r]
        if k == 0:
            dZ[..., 0:r] = ds
            break
        dZ[..., k * r : (k + 1) * r] = T(Bm) @ ds
        contrib = ds @ T(z)
        dB = contrib if dB_prev is None else dB_prev + contrib
    return dZ


class AttentionOracle:
    """Loss, gradient and vector-Jacobian products of the student on a (mini-)batch.

    Implements the :class:`simulators.optimizers.GradientOracle` protocol.  The current
    batch is set by :meth:`set_batch`; all methods use it.  The output cotangent of the
    last evaluated parameters is cached (by identity of the array: optimizers here never
    modify parameters in place), so Functional-SAM costs no extra forward pass.

    ``fused`` chooses how the per-sample L x L algebra between the two products with X is
    done: by the array path (``False``: :func:`attention_forward`,
    :func:`attention_backward`; the reference) or by one fused kernel, one thread per
    sample: the GPU kernel (``True`` or ``"cuda"``: :mod:`simulators._training_cuda`; on
    numpy arrays it runs under numba's CUDA simulator or through host-device copies: tests)
    or the same device function compiled for the CPU (``"cpu"``, numpy arrays:
    :mod:`simulators._training_cpu`; the two products then run in numba's threads too,
    :mod:`simulators._cpu_products`, as in AMP: BLAS's threads left spinning after a
    product slowed the kernel's threads down, 42 -> 62 s for two seeds of the README's
    training example).  ``None`` (default) takes the GPU kernel on cupy
    arrays when numba.cuda is usable, the CPU kernel on numpy arrays, each where the network
    fits the kernel (:func:`simulators._training_cuda.supports`), else the array path.
    ``fused_products=True`` (``p <= 4``) also does the two products with X by the streaming
    kernels of that module instead of cuBLAS (X W and the per-sample algebra in one kernel,
    ``fused_products_step``; X^T dS by ``xtg``); ``None`` (default) does so for
    float32 data on the fused path, where they won on the H200 (a step at D = 10^4, α = 15:
    9.3 ms against 13.0 ms with cuBLAS), and not for float64 (12.8 against 12.0 ms;
    benchmarks/bench_training.py --fused).
    """

    def __init__(self, X, y, model: AttentionModel, fused: bool | str | None = None,
                 fused_products: bool | None = None):
        self.X_full, self.y_full, self.model = X, y, model
        self.xp = namespace_of(X)
        self.kernel = _fused_kernel(self.xp, model, fused)
        self.fused = self.kernel is not None
        if fused_products is None:
            fused_products = self.kernel == "cuda" and X.dtype == np.float32
            if fused_products:
                from ._training_cuda import products_support

                fused_products = products_support(model.p)
        self.fused_products = bool(fused_products)
        self.set_batch(None)

    def set_batch(self, idx=None):
        """Use the sequences ``idx`` (host integer array) or, with ``None``, all of them."""
        if idx is None:
            self.X, self.y = self.X_full, self.y_full
        else:
            ix = self.xp.asarray(idx)
            self.X, self.y = self.X_full[ix], self.y_full[ix]
        self._cache = (None, None)

    @property
    def n(self) -> int:
        return self.X.shape[0]

    def _forward(self, W):
        S = project(self.X, W)
        fwd = self.model.forward(S, keep=True)
        return S, fwd

    def _kernel(self, W, mode, G=None):
        """The fused kernel on ``U = X W`` (unscaled; the kernel applies ``1/sqrt(D)``)."""
        from . import _training_cuda as tc

        n, L, D = self.X.shape
        X2 = self.X.reshape(n * L, D)
        a = self.model.arch
        args = (1.0 / math.sqrt(D), a.beta, a.skip, a.rank, self.xp)
        kw = {"mode": getattr(tc, mode), "Y": self.y, "G": G, "coef": 2.0 / self.n}
        if self.kernel == "cpu":  # X W / sqrt(D) and the algebra in numba's threads
            from . import _cpu_products, _training_cpu

            return _training_cpu.fused_step(_cpu_products.project(self.X, W), 1.0, a.beta,
                                            a.skip, a.rank, **kw)
        if self.fused_products:  # X W and the algebra in one kernel
            return tc.fused_products_step(X2, W, L, *args, **kw)
        return tc.fused_step((X2 @ W).reshape(n, L, W.shape[1]), *args, **kw)

    def _transpose_product(self, dS):
        """``X^T dS / sqrt(D)``: :func:`project_transpose`, or the product kernel (GPU), or
        numba's (CPU kernel)."""
        if self.kernel == "cpu":
            from . import _cpu_products

            return _cpu_products.project_transpose(self.X, dS)
        if not self.fused_products:
            return project_transpose(self.X, dS)
        from . import _training_cuda as tc

        n, L, D = self.X.shape
        p = dS.shape[-1]
        return tc.xtg(self.X.reshape(n * L, D), dS.reshape(n * L, p), self.xp) * (
            1.0 / math.sqrt(D))

    def loss(self, W) -> float:
        if self.fused:
            return float(self._kernel(W, "LOSS")[0]) / self.n
        yhat = self.model.forward(project(self.X, W))
        diff = yhat - self.y
        return float((diff * diff).sum()) / self.n

    def loss_and_grad(self, W):
        """``(loss, grad)`` at ``W`` on the current batch; caches the output cotangent."""
        if self.fused:
            total, G, dS = self._kernel(W, "GRAD")
            self._cache = (W, G)
            return float(total) / self.n, self._transpose_product(dS)
        S, fwd = self._forward(W)
        diff = fwd.y - self.y
        loss = float((diff * diff).sum()) / self.n
        G = (2.0 / self.n) * diff
        self._cache = (W, G)
        dS = attention_backward(S, fwd, G, self.model)
        return loss, project_transpose(self.X, dS)

    def grad(self, W):
        return self.loss_and_grad(W)[1]

    def output_cotangent(self, W):
        """``dloss/dyhat`` at ``W`` (shape ``(n, L, L)``)."""
        cached_W, G = self._cache
        if cached_W is W:
            return G
        if self.fused:
            G = self._kernel(W, "COTANGENT")[1]
        else:
            yhat = self.model.forward(project(self.X, W))
            G = (2.0 / self.n) * (yhat - self.y)
        self._cache = (W, G)
        return G

    def vjp(self, W, cotangent):
        """``J(W)^T cotangent`` with ``J = d yhat / d W`` on the current batch."""
        if self.fused:
            return self._transpose_product(self._kernel(W, "VJP", G=cotangent)[2])
        S, fwd = self._forward(W)
        dS = attention_backward(S, fwd, cotangent, self.model)
        return project_transpose(self.X, dS)


def _fused_kernel(xp, model: AttentionModel, fused: bool | str | None) -> str | None:
    """``"cuda"``, ``"cpu"`` or ``None`` (the array path) for :class:`AttentionOracle`'s
    ``fused`` (its docstring)."""
    if fused is False:
        return None
    if fused is True or fused == "cuda":
        return "cuda"
    if fused == "cpu":
        if xp is not np:
            raise ValueError("fused='cpu' takes numpy arrays")
        return "cpu"
    if fused is not None:
        raise ValueError(f"fused must be None, True, False, 'cuda' or 'cpu', got {fused!r}")
    try:
        from . import _training_cuda as tc
    except ImportError:  # pragma: no cover - depends on the machine
        return None
    a = model.arch
    if not tc.supports(a.seq_len, a.depth, a.rank):
        return None
    if xp is np:
        return "cpu"
    return "cuda" if tc.available() else None


# ---------------------------------------------------------------------------- metrics


def overlaps(W, W_star):
    """``M = W^T W*/D``, ``Q = W^T W/D``, ``rho = W*^T W*/D`` as host numpy arrays."""
    D = W.shape[0]
    M = to_numpy(W.T @ W_star) / D
    Q = to_numpy(W.T @ W) / D
    R = to_numpy(W_star.T @ W_star) / D
    return M, Q, R


def _inv_sqrt_psd(A):
    w, V = np.linalg.eigh((A + A.T) / 2)
    w = np.where(w > 1e-300, w, np.inf)
    return (V / np.sqrt(w)) @ V.T


def layer_alignment(M, Q, R, depth: int, rank: int):
    """Per-layer alignment of the student with the teacher (list of ``depth`` floats).

    With the r x r diagonal blocks ``M_k, Q_k, rho_k`` of layer k,
    ``a_k = || Q_k^{-1/2} M_k rho_k^{-1/2} ||_F / sqrt(r)``: the root mean square of the
    cosines of the principal angles between the column spaces of ``w_k`` and ``w*_k``
    (for large D).  It is invariant to ``w_k -> w_k O`` (O orthogonal), a symmetry of the
    layer, lies in [0, 1], and for rank 1 equals ``|m_k| / sqrt(q_k rho_k)``.
    A layer with ``w_k = 0`` has alignment 0.
    """
    out = []
    for k in range(depth):
        sl = slice(k * rank, (k + 1) * rank)
        Mk, Qk, Rk = M[sl, sl], Q[sl, sl], R[sl, sl]
        if rank == 1:
            den = math.sqrt(max(Qk[0, 0], 0.0) * max(Rk[0, 0], 0.0))
            out.append(abs(Mk[0, 0]) / den if den > 0 else 0.0)
        else:
            C = _inv_sqrt_psd(Qk) @ Mk @ _inv_sqrt_psd(Rk)
            out.append(float(np.linalg.norm(C) / math.sqrt(rank)))
    return [float(a) for a in out]


def layer_overlaps(M, Q, depth: int, rank: int):
    """Per-layer ``(m_k, q_k)``: nuclear norm of ``M_k`` / r (= |m_k| for rank 1; sign-
    and rotation-invariant) and ``tr Q_k / r``."""
    ms, qs = [], []
    for k in range(depth):
        sl = slice(k * rank, (k + 1) * rank)
        ms.append(float(np.linalg.svd(M[sl, sl], compute_uv=False).sum() / rank))
        qs.append(float(np.trace(Q[sl, sl]) / rank))
    return ms, qs


def log_schedule(steps: int, points: int):
    """Sorted unique integer steps, log-spaced in [1, steps], plus 0 and ``steps``."""
    if steps <= 0:
        return [0]
    pts = np.unique(np.round(np.logspace(0, math.log10(steps), max(points - 1, 1))))
    return sorted({0, steps} | {int(p) for p in pts if 0 < p <= steps})


# ---------------------------------------------------------------------------- training


@dataclass
class TrainConfig:
    """Everything one training run needs, checked at construction (``ValueError`` naming
    the field, showing the value and its type); :meth:`validate` checks again (the config
    is mutable) and returns it."""

    arch: Architecture = Architecture()
    dim: int = 500
    alpha: float = 15.0
    optimizer: str = "adam"
    lr: float = 1e-2
    steps: int = 2000
    batch: int | None = None  # None: full batch
    momentum: float | None = None
    weight_decay: float = 0.0
    rho: float = 0.05
    init_scale: float = 0.1
    n_test: int = 2000
    log_points: int = 50
    diverge_q: float = 1e8
    dtype: str = "float64"

    def __post_init__(self):
        self.validate()

    def validate(self) -> TrainConfig:
        if not isinstance(self.arch, Architecture):
            raise ValueError(f"arch must be an Architecture, got {self.arch!r} "
                             f"({type(self.arch).__name__})")
        check_int("dim", self.dim, 1)
        check_number("alpha", self.alpha, above=0)
        if not isinstance(self.optimizer, str):
            raise ValueError(f"optimizer must be a name, got {self.optimizer!r} "
                             f"({type(self.optimizer).__name__})")
        parse_optimizer_name(self.optimizer)
        check_number("lr", self.lr, above=0)
        check_int("steps", self.steps, 0)
        check_optional_int("batch", self.batch, 1)
        if self.momentum is not None:
            check_number("momentum", self.momentum, minimum=0, below=1)
        check_number("weight_decay", self.weight_decay, minimum=0)
        check_number("rho", self.rho, minimum=0)
        check_number("init_scale", self.init_scale, minimum=0)
        check_int("n_test", self.n_test, 1)
        check_int("log_points", self.log_points, 1)
        check_number("diverge_q", self.diverge_q, above=0)
        check_choice("dtype", self.dtype, DTYPES)
        return self

    @property
    def n_train(self) -> int:
        return max(1, int(round(self.alpha * self.dim)))

    @property
    def model(self) -> AttentionModel:
        """The student network of :attr:`arch`."""
        return AttentionModel(self.arch)


#: Teacher, data and initial student of one seed (arrays in one namespace).
Problem = TeacherData


def make_problem(cfg: TrainConfig, seed: int, xp=np, n_train: int | None = None) -> Problem:
    """The data of ``seed`` from :func:`simulators.data.teacher_data`, labelled by
    :func:`teacher_labels` of ``cfg.arch``, with ``W_0`` iid ``N(0, cfg.init_scale^2)``
    and ``n_train`` (default ``cfg.n_train``) training pairs."""
    n = cfg.n_train if n_train is None else n_train
    return teacher_data(teacher_labels(cfg.arch), seed, cfg.dim, n, cfg.n_test,
                        init_std=cfg.init_scale, xp=xp, dtype=cfg.dtype)


def _record(cfg, W, problem, oracle_train, train_loss, step):
    model = cfg.model
    M, Q, R = overlaps(W, problem.W_star)
    test = AttentionOracle(problem.X_test, problem.y_test, model)
    return {
        "step": int(step),
        "train_loss": float(train_loss),
        "test_loss": test.loss(W),
        "M": M.tolist(),
        "Q": Q.tolist(),
        "cosine": layer_alignment(M, Q, R, model.arch.depth, model.arch.rank),
    }


def train_run(cfg: TrainConfig, seed: int, xp=np, problem: Problem | None = None,
              batch_rng: np.random.Generator | None = None):
    """Train one student; return ``(records, result)``.

    ``records`` are dicts (``step, train_loss, test_loss, M, Q, cosine``) on the
    log-spaced schedule :func:`log_schedule` (``train_loss`` is always the full training
    loss).  ``result`` has ``diverged`` and, when diverged, ``diverged_at`` (the step at
    which a non-finite loss/gradient or ``max_k Q_kk > diverge_q`` was detected); then the
    last record is the divergence marker (no numbers) and no final metrics are returned.
    """
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        return _train_run(cfg, seed, xp, problem, batch_rng)


def _train_run(cfg, seed, xp, problem, batch_rng):
    if problem is None:
        problem = make_problem(cfg, seed, xp)
    if batch_rng is None:
        batch_rng = seed_streams(seed)["batch"]
    N = problem.X.shape[0]
    oracle = AttentionOracle(problem.X, problem.y, cfg.model)
    opt = make_optimizer(cfg.optimizer, cfg.lr, momentum=cfg.momentum,
                         weight_decay=cfg.weight_decay, rho=cfg.rho, oracle=oracle)
    schedule = set(log_schedule(cfg.steps, cfg.log_points))
    full = cfg.batch is None or cfg.batch >= N
    perm, pos = None, N
    W = problem.W0
    records = []

    def diverged(step, why):
        records.append({"step": int(step), "diverged": True, "reason": why})
        return records, {"diverged": True, "diverged_at": int(step), "reason": why}

    for t in range(cfg.steps + 1):
        if full:
            if t == cfg.steps:
                loss = oracle.loss(W)
            else:
                loss, g = oracle.loss_and_grad(W)
            if not math.isfinite(loss):
                return diverged(t, "non-finite training loss")
            if t in schedule:
                rec = _record(cfg, W, problem, oracle, loss, t)
                if max(np.diag(rec["Q"])) > cfg.diverge_q or not math.isfinite(
                    rec["test_loss"]
                ):
                    return diverged(t, f"weights exploded (max q > {cfg.diverge_q:g})")
                records.append(rec)
            if t == cfg.steps:
                break
        else:
            if t in schedule:
                oracle.set_batch(None)
                loss = oracle.loss(W)
                if not math.isfinite(loss):
                    return diverged(t, "non-finite training loss")
                rec = _record(cfg, W, problem, oracle, loss, t)
                if max(np.diag(rec["Q"])) > cfg.diverge_q:
                    return diverged(t, f"weights exploded (max q > {cfg.diverge_q:g})")
                records.append(rec)
            if t == cfg.steps:
                break
            if pos + cfg.batch > N:
                perm, pos = batch_rng.permutation(N), 0
            oracle.set_batch(perm[pos : pos + cfg.batch])
            pos += cfg.batch
            loss, g = oracle.loss_and_grad(W)
            if not math.isfinite(loss):
                return diverged(t, "non-finite mini-batch loss")
        W = opt.step(W, g, oracle)
    return records, {"diverged": False, "W": W}
