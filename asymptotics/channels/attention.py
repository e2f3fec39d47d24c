"""The deep tied low-rank attention channel (THEORY.md §2), any depth >= 1 and L >= 2.

The output ``y = softmax_rows(β a aᵀ)`` with ``a = s_depth`` determines ``a`` up to a global
sign (the fibre), so conditioning on ``y`` is conditioning on ``{a, -a}``.  Given the first
``depth-1`` layers' pre-activations ``z_U`` the last layer's are ``z_last = ±B(z_U)^{-1} a``
(Jacobian ``1/|det B|``), and the posterior of ``Z`` reduces to an integral over ``z_U``
(``(depth-1)·L`` dimensions) against its Gaussian prior, summed over both signs.

The inner integral uses a :class:`~asymptotics.integrate.Rule` over standard normal nodes
``t`` with ``z_U = ω_U + chol(V_UU) t``: a tensor trapezoid when ``(depth-1)·L <= 2``, a
scrambled Sobol' net above.  Every result carries the embedded-rule error.
"""

from __future__ import annotations

import numpy as np

from ..backend import get_namespace, to_numpy
from ..checks import check_int, check_number
from ..integrate import Rule, point_rule, rotated_product, sinh_trapezoid_2d, sobol, trapezoid
from . import _attention_kernels as kern
from .attention_map import (
    Architecture,
    attention_forward,
    attention_mixer_inverse,
    fibre_from_output,
    last_preactivation,
)
from .base import (
    INNER_PATHS,
    Capabilities,
    Channel,
    MomentSets,
    Posterior,
    check_device,
    check_variance,
)

FibreMoments = MomentSets  # fibre-integral results on every inner weight set


GRID_NODES = 48  # base nodes per axis of the deterministic rules (resolution 0)
GRID_HALF_WIDTH = 8.5  # in units of the standard deviation (inner) or of 1 + skip (outer)
MIN_SCALE = 0.02  # floor of the sinh-map scale (skip -> 0)
SHARED_MIN_VARIANCE = 0.2  # smallest first-layer variance integrated on the shared nodes
SHARED_MIN_LAST_VARIANCE = 0.005  # smallest last-layer variance integrated on them
SHARED_HYSTERESIS = 2.0  # a locked shared path holds until a variance is this far below


def _kernel_array(x) -> np.ndarray:
    """``x`` as a C-contiguous, writable float64 array (copied only where it is not): numba
    compiles one signature per layout and read-only flag, so the kernels' inputs have one."""
    return np.require(x, dtype=np.float64, requirements=["C", "W"])


def _put_diagonal(second: np.ndarray, sq: np.ndarray) -> None:
    """Write ``sq (S, K, L, d)`` on the diagonal of ``second (S, K, L, d, L, d)`` (in place;
    nothing when ``sq`` is empty)."""
    if sq.size:
        L, d = sq.shape[2:]
        for l in range(L):
            for j in range(d):
                second[:, :, l, j, l, j] = sq[:, :, l, j]


def check_attention_parameters(depth, seq_len, skip, beta) -> None:
    """``ValueError`` naming the parameter unless depth >= 1 and seq_len >= 2 are integers,
    skip >= 0 and beta > 0 finite numbers (numpy scalars accepted, bools refused)."""
    check_int("depth", depth, 1)
    check_int("seq_len", seq_len, 2)
    check_number("skip", skip, minimum=0)
    check_number("beta", beta, above=0)


def inner_rule_size(depth: int, seq_len: int, resolution: int = 0) -> tuple[int, int]:
    """``(points, dimension)`` of :func:`default_inner_rule`, without building it."""
    d = (depth - 1) * seq_len
    n = GRID_NODES * 2**resolution + 1
    if d == 0:
        return 1, 0
    if d <= 2:
        return n**d, d
    return 2 ** (12 + 2 * resolution), d


def default_inner_rule(
    depth: int,
    seq_len: int,
    resolution: int = 0,
    seed: int = 0,
    skip: float = 1.0,
    beta: float = 1.0,
) -> Rule:
    """Inner rule over the ``(depth-1)·L`` pre-activations of the first layers.

    Depth 2, L = 2: a 2-D trapezoid rotated to ``z_0 ± z_1`` with a sinh map of scale
    ``sqrt(skip/β)`` across the diagonal, where ``det B`` is smallest (the softmax part of
    ``B`` has eigenvalue ``≈ β (z_0 - z_1)²/4`` there).  ``resolution`` doubles the nodes per
    unit.  One dimension: a trapezoid.  Above two dimensions: Sobol' ``2^(12 + 2r)`` points.
    """
    d = (depth - 1) * seq_len
    n = GRID_NODES * 2**resolution + 1
    if d == 0:
        return point_rule(0)
    if d == 2 and seq_len == 2:
        scale = max(MIN_SCALE, min(1.0, np.sqrt(skip / beta)))
        return sinh_trapezoid_2d(n, n, GRID_HALF_WIDTH, GRID_HALF_WIDTH, scale, gaussian=True)
    if d <= 2:
        return trapezoid(d, n, GRID_HALF_WIDTH)
    return sobol(d, 12 + 2 * resolution, seed=seed)


class AttentionChannel(Channel):
    """Deep tied rank-1 attention: ``y = softmax(β s_depth s_depthᵀ)`` (THEORY §2)."""

    name = "attention"
    sign_symmetric = True
    capabilities = Capabilities(diagonal_overlaps=True, inner_paths=True, staircase=True,
                                inner_rule=True, control_variate=True)

    def __init__(
        self,
        depth: int = 2,
        seq_len: int = 2,
        skip: float = 1.0,
        beta: float = 1.0,
        inner_rule: Rule | None = None,
    ):
        check_attention_parameters(depth, seq_len, skip, beta)
        if inner_rule is not None and not isinstance(inner_rule, Rule):
            raise ValueError(f"inner_rule must be a Rule or None, got {inner_rule!r} "
                             f"({type(inner_rule).__name__})")
        self.depth = int(depth)
        self.seq_len = int(seq_len)
        self.dim = self.depth
        self.skip = float(skip)
        self.beta = float(beta)
        self.inner_rule = inner_rule or default_inner_rule(
            self.depth, self.seq_len, skip=self.skip, beta=self.beta
        )
        expected = (self.depth - 1) * self.seq_len
        if self.inner_rule.dim != expected:
            raise ValueError(f"inner rule has dimension {self.inner_rule.dim}, need {expected}")
        self._shared_cache = None
        self._device_cache = None

    def params(self):
        return {"depth": self.depth, "seq_len": self.seq_len, "skip": self.skip, "beta": self.beta}

    @classmethod
    def from_architecture(cls, arch: Architecture, inner_rule: Rule | None = None
                          ) -> AttentionChannel:
        """The channel of a rank-1 network ``arch`` (the network and the channel share it)."""
        if arch.rank != 1:
            raise ValueError(f"the attention channel has rank 1, got rank {arch.rank}")
        return cls(arch.depth, arch.seq_len, arch.skip, arch.beta, inner_rule)

    @property
    def architecture(self) -> Architecture:
        return Architecture(self.depth, self.seq_len, self.skip, self.beta)

    def with_inner_rule(self, rule: Rule) -> AttentionChannel:
        return AttentionChannel(self.depth, self.seq_len, self.skip, self.beta, rule)

    # capabilities (base.Channel) --------------------------------------------------------
    def refined(self, resolution: int, seed: int = 0) -> AttentionChannel:
        return self.with_inner_rule(default_inner_rule(
            self.depth, self.seq_len, resolution, seed, self.skip, self.beta))

    @property
    def inner_description(self) -> str:
        return self.inner_rule.description

    def quadrature_dimension(self) -> int:
        """``(depth-1)·L`` inner and ``L`` outer dimensions of the Q = 0 quadrature."""
        return (self.depth - 1) * self.seq_len + self.seq_len

    def null_moment_sets(self, obs, inner_shift: tuple[int, int] | None = None,
                         primary_only: bool = False) -> tuple[MomentSets, str]:
        """Q = 0 moments from the unlearned-layer kernel (second moments per layer).

        ``inner_shift = (s_u, s_v)`` integrates on the default inner rule with its nodes
        moved by half a step along ``u`` and/or ``v`` (:func:`half_step_inner_rule`; the
        channel must carry a default rule); ``primary_only`` keeps only the primary weight
        set (S = 1).
        """
        if inner_shift is not None and any(inner_shift):
            rule = half_step_inner_rule(self, inner_shift)
            return self.with_inner_rule(rule).null_moment_sets(obs, None, primary_only)
        L, p = self.seq_len, self.dim
        log_norm, _, blocks = self.unlearned_inner_moments(obs, primary_only=primary_only)
        S, K = log_norm.shape
        second = np.zeros((S, K, L, p, L, p))
        for k in range(p):
            second[:, :, :, k, :, k] = blocks[:, :, k]
        return MomentSets(log_norm, np.full((S, K, L, p), np.nan), second), \
            self.inner_rule.error_kind

    def choose_inner_path(self, V) -> str:
        return "shared" if self.shared_nodes_apply(V) else "general"

    def keep_inner_path(self, path: str, V) -> str:
        if path == "shared" and not self.shared_nodes_apply(V, margin=SHARED_HYSTERESIS):
            return "general"  # once, for good: a solve's map changes at most once
        return path

    def posterior_sets(self, obs, omega, V, *, device="cpu", cpu_kernel="numba",
                       second=True, inner_error=True, inner_path="auto") -> MomentSets:
        return self.fibre_moments(obs, omega, V, device, second, inner_error, inner_path,
                                  cpu_kernel=cpu_kernel)

    # forward map and observations ------------------------------------------------------
    def forward(self, Z, noise=None):
        return attention_forward(Z, self.depth, self.skip, self.beta)

    def mean_forward(self, omega, offsets, weights):
        """Numba form of :meth:`Channel.mean_forward` (no (M, K) temporaries; for L = 2 the
        nodes summed head by head, :meth:`_forward_heads`: the same sums to rounding)."""
        omega = np.ascontiguousarray(omega, dtype=float)
        offsets = np.ascontiguousarray(offsets, dtype=float)
        weights = np.ascontiguousarray(weights, dtype=float)
        out = np.empty(omega.shape[:1] + (self.seq_len, self.seq_len))
        if self.seq_len == 2:  # written out: one mixer per distinct head, vexp
            heads, starts, lasts, order = self._forward_heads(offsets)
            kern.mean_forward_two_tokens(omega, heads, starts, lasts, weights[order],
                                         self.skip, self.beta, out)
        else:
            kern.mean_forward(omega, offsets, weights, self.skip, self.beta, out)
        return out

    def _forward_heads(self, offsets):
        """``(heads, starts, lasts, order)`` of
        :func:`~._attention_kernels.mean_forward_two_tokens`: the distinct first-layer parts
        of ``offsets (M, L, depth)`` (sorted), the nodes ordered by head (``order``, stable)
        with head ``g``'s nodes at ``starts[g] <= i < starts[g+1]``, and the last layer's
        part in that order, ``(2, M)``; cached for the last four ``offsets`` (the
        generalisation errors alternate a fine and a coarse rule)."""
        key = (offsets.shape, offsets.tobytes())
        cache = self.__dict__.setdefault("_heads_cache", {})
        if key in cache:
            return cache[key]
        m = self.depth - 1
        M = offsets.shape[0]
        if m:  # rows sorted lexicographically, a new head wherever a row changes
            rows = offsets[:, :, :m].reshape(M, -1)
            order = np.lexsort(rows.T[::-1])
            ordered = rows[order]
            new = np.concatenate([[True], np.any(ordered[1:] != ordered[:-1], axis=1)])
            heads = ordered[new]
            starts = np.append(np.flatnonzero(new), M)
        else:  # depth 1: no mixer, one empty head
            order, heads, starts = np.arange(M), np.zeros((1, 0)), np.array([0, M])
        out = (np.ascontiguousarray(heads.reshape(len(heads), self.seq_len, m)),
               np.ascontiguousarray(starts, dtype=np.int64),
               np.ascontiguousarray(offsets[order, :, m].T),
               order)
        if len(cache) >= 4:
            cache.pop(next(iter(cache)))
        cache[key] = out
        return out

    def observe(self, Z, noise=None):
        """``a = s_depth`` (rank 1), equivalent to ``y`` up to the sign the posterior sums."""
        return last_preactivation(Z, self.depth, self.skip, self.beta)[..., 0]

    def observation_from_output(self, y):
        return fibre_from_output(y, self.beta)

    def output_grid(self, resolution: int = 0, nodes: int = 0, half_width: float = 0.0,
                    shift: tuple[int, int] = (0, 0), fold: bool = False):
        """Deterministic rule on the output statistic ``a ∈ R^L`` (L = 2 only).

        Rotated trapezoid with a sinh map of scale ``skip`` across ``a_0 = a_1``, where the
        density of ``a`` has a peak of width about ``skip``; half-width
        ``8.5 (1 + skip)``.  ``Z_out(a)`` sums ``a`` and ``-a``, so every output is counted
        twice over ``R^L``: the weights carry the factor 1/2.  ``shift = (s_u, s_v)`` moves
        the nodes by half a step along ``u`` and/or ``v`` (:func:`sinh_grid_2d`).

        ``fold=True`` keeps the nodes with ``u >= 0, w >= 0`` and multiplies their weights by
        the size of their orbit under ``u -> -u`` and ``w -> -w``, i.e. ``a -> -a`` and the
        token swap ``a_0 <-> a_1``.  Exact for the Q = 0 operator
        ``F(M) = Σ_{l,l'} E_y[G_{ll'} M G_{l'l}]``: ``a`` and ``-a`` have one fibre, so
        ``Z_out`` and ``G`` are equal there; swapping tokens permutes the token indices of
        ``G`` (``G_{ll'} -> G_{πl πl'}``), which the sum over ``l, l'`` absorbs, and leaves
        ``Z_out`` unchanged (the model is token-equivariant).  The grid and its weights
        are symmetric under both maps, so each orbit's terms are equal and the folded sum
        is the full one (to rounding; tests check 1e-12).
        """
        if self.seq_len != 2:
            return None
        n = nodes or (GRID_NODES * 2**resolution + 1)
        R = half_width or GRID_HALF_WIDTH * (1.0 + self.skip)
        scale = max(MIN_SCALE, min(1.0, self.skip))
        pts, wsets = sinh_grid_2d(n, R, R, scale, False, shift, fold)
        what = "sinh-trapezoid" + (" half-step shifted" if any(shift) else "")
        desc = f"{what} {n}x{n} (scale {scale:.3g}{', folded' if fold else ''}) on a"
        return pts, 0.5 * wsets, desc

    def unlearned_inner_moments(self, obs, omega_last=None, v_last: float = 1.0,
                                primary_only: bool = False):
        """Fibre moments with the first ``depth-1`` layers unlearned (Q_UU = 0, Q_Ul = 0).

        ``omega_last (K, L)`` (default 0) and ``v_last`` describe the last layer.  Returns
        ``(log_norm (S, K), mean_last (S, K, L), layer_second (S, K, depth, L, L))`` on each
        inner weight set (``primary_only``: the primary one, S = 1).  At
        ``omega_last = 0, v_last = 1`` this is the prior (Q = 0).

        An inner rule closed under ``t -> -t`` (node ``i`` and node ``n-1-i``, equal weights:
        the trapezoids) is folded onto its first half: ``B(z_U)`` depends on ``z_U`` only
        through the rank-one softmaxes ``softmax(β s sᵀ)``, even in ``s``, so ``B(-t) =
        B(t)`` and ``x``, ``log w`` and ``z_U z_Uᵀ`` are equal on both nodes (exact; half
        the pairs).  At ``omega_last = 0`` with L = 2, depth 2 a kernel with scalar
        accumulators runs (:func:`~._attention_kernels.null_moments_two_tokens`, 2x faster
        per pair); with L = 2, depth 3 its written-out form
        (:func:`~._attention_kernels.unlearned_moments_depth3`, 2.6-3.4x, the same sums).
        """
        a = np.ascontiguousarray(np.asarray(obs, dtype=float).reshape(-1, self.seq_len))
        K = a.shape[0]
        if omega_last is None:
            omega_last = np.zeros_like(a)
        omega_last = _kernel_array(np.broadcast_to(omega_last, a.shape))
        if not v_last > 0:
            raise ValueError(f"v_last must be > 0, got {v_last}")
        T, W, Binv, logdet = self._folded_unlearned_nodes()
        if primary_only:
            W = np.ascontiguousarray(W[:1])
        S, L = W.shape[0], self.seq_len
        lognorm = np.empty((S, K))
        mean_last = np.empty((S, K, L))
        layer_second = np.empty((S, K, self.depth, L, L))
        if L == 2 and self.depth == 2 and not np.any(omega_last):
            mean_last[:] = 0.0  # both signs weigh the same: exactly 0
            kern.null_moments_two_tokens(a, float(v_last), Binv, logdet, T, W, lognorm,
                                         layer_second)
        elif L == 2 and self.depth == 3:
            kern.unlearned_moments_depth3(a, omega_last, float(v_last), Binv, logdet, T, W,
                                          lognorm, mean_last, layer_second)
        else:
            kern.unlearned_inner_moments(a, omega_last, float(v_last), Binv, logdet, T, W,
                                         lognorm, mean_last, layer_second)
        return lognorm, mean_last, layer_second

    def _folded_unlearned_nodes(self):
        """Inner nodes, weight sets, inverse mixers and log|det| of the unlearned-layer
        kernel, folded under ``t -> -t`` where the rule allows (see
        :meth:`unlearned_inner_moments`); cached per channel."""
        cached = getattr(self, "_unlearned_nodes", None)
        if cached is not None:
            return cached
        T, W = self._inner_nodes()
        T, W = fold_mirror_nodes(T, W)
        n, L = T.shape[0], self.seq_len
        Binv = np.empty((n, L, L))
        logdet = np.empty(n)
        kern.precompute_mixers(T, self.skip, self.beta, Binv, logdet)
        ok = np.isfinite(logdet)  # a singular mixer: no fibre point (the kernels skip it)
        if not ok.all():
            T, W = np.ascontiguousarray(T[ok]), np.ascontiguousarray(W[:, ok])
            Binv, logdet = np.ascontiguousarray(Binv[ok]), np.ascontiguousarray(logdet[ok])
        self._unlearned_nodes = (T, W, Binv, logdet)
        return self._unlearned_nodes

    # posterior ----------------------------------------------------------------------------
    def _inner_nodes(self):
        m = self.depth - 1
        T = (
            self.inner_rule.points.reshape(-1, self.seq_len, m)
            if m
            else np.zeros((1, self.seq_len, 0))
        )
        return np.ascontiguousarray(T), np.ascontiguousarray(self.inner_rule.weight_sets)

    def _conditional(self, V):
        """Cholesky of V_UU, regression coefficients of z_last on z_U, conditional variance."""
        m = self.depth - 1
        if m == 0:
            return np.zeros((0, 0)), np.zeros(0), float(V[0, 0])
        VUU, VUl, Vll = V[:m, :m], V[:m, m], V[m, m]
        chol = np.linalg.cholesky(VUU)
        coef = np.linalg.solve(VUU, VUl)  # z_last mean = ω_l + coef·(z_U - ω_U)
        # in terms of the standard nodes t: coef·(C t) = (Cᵀ coef)·t; kernels take C t
        vc = float(Vll - coef @ VUl)
        return chol, coef, vc

    def fibre_moments(
        self, obs, omega, V, device: str = "cpu", second: bool | str = True,
        inner_error: bool = True, inner_path: str = "auto", cpu_kernel: str = "numba",
        on_device: bool = False, _gpu_kernel: str = "fused",
    ) -> FibreMoments:
        """Posterior moments on all inner weight sets, batched over the leading axes.

        ``second=False`` skips the second moments (``second`` is then NaN on the numba
        path), ``second="diagonal"`` asks for the diagonal ``E[z_lj²]`` only (the other
        entries may be NaN; the numba mean kernels add it at a few operations per node),
        ``second="layers"`` only for the per-layer blocks ``E[z_{l,j} z_{l',j}]`` (what the
        staircase's ``λ_j`` needs; the written-out depth-3 kernel leaves the other entries
        NaN, the other paths compute them all; the diagonal is among them), and
        ``inner_error=False`` uses the primary inner weights only (S = 1): the cheap
        form state-evolution iterations use.  ``inner_path`` picks the numba mean
        kernel: ``shared`` (importance-weighted shared nodes; only where structurally
        possible, see :meth:`shared_nodes_possible`), ``general`` (nodes shifted to
        ``ω_U + chol(V_UU) t``), or ``auto``: shared where :meth:`shared_nodes_apply`.
        ``device`` "cpu" runs the numba kernels (``cpu_kernel="array"``: the array path of
        the GPU, on numpy), "gpu" the fused CUDA kernel (:mod:`._attention_cuda`, the same
        node placements and sums as the numba kernels; ``obs``/``omega`` numpy or cupy),
        whose results are copied to the host once, or left on the device (cupy) with
        ``on_device=True``.  The fused kernel takes ``L <= 4`` and ``depth <= 3``; other
        sizes raise ``ValueError`` (``_gpu_kernel="array"``, private, runs the old
        vectorised cupy path: a reference for comparisons and the only GPU path there).
        """
        check_device(device, cpu_kernel)
        if second not in (True, False, "layers", "diagonal"):
            raise ValueError(f"second must be True, False, 'layers' or 'diagonal', got "
                             f"{second!r}")
        if inner_path not in INNER_PATHS:
            raise ValueError(f"inner_path must be one of {INNER_PATHS}, got {inner_path!r}")
        if _gpu_kernel not in ("fused", "array"):
            raise ValueError(f"_gpu_kernel must be 'fused' or 'array', got {_gpu_kernel!r}")
        V = check_variance(V, self.depth)
        if device == "gpu" and _gpu_kernel == "fused":
            return self._fibre_gpu(obs, omega, V, bool(second), inner_error, inner_path,
                                   on_device)
        obs, omega = to_numpy(obs), to_numpy(omega)
        obs = np.asarray(obs, dtype=float)
        L, depth = self.seq_len, self.depth
        batch = obs.shape[:-1]
        omega = np.broadcast_to(np.asarray(omega, dtype=float), batch + (L, depth))
        a = np.ascontiguousarray(obs.reshape(-1, L))
        om = _kernel_array(omega.reshape(-1, L, depth))
        if not (np.all(np.isfinite(a)) and np.all(np.isfinite(om))):
            raise ValueError("observations and omega must be finite")
        chol, coef, vc = self._conditional(V)
        shared = self._shared_path(V, inner_path)
        numba = device == "cpu" and cpu_kernel == "numba"
        if numba and second in (False, "diagonal") and shared:
            res = self._fibre_diagonal(a, om, V, inner_error, squares=bool(second))
        elif numba:
            res = self._fibre_numba(a, om, chol, coef, vc, second, inner_error)
        else:
            res = self._fibre_xp(a, om, chol, coef, vc, device, inner_error=inner_error)
        S = res.log_norm.shape[0]
        res = FibreMoments(
            res.log_norm.reshape((S,) + batch),
            res.mean.reshape((S,) + batch + (L, depth)),
            res.second.reshape((S,) + batch + (L, depth, L, depth)),
        )
        if device == "gpu" and on_device:
            xp = get_namespace("gpu")
            res = FibreMoments(*(xp.asarray(r) for r in (res.log_norm, res.mean, res.second)))
        return res

    def _shared_path(self, V, inner_path: str) -> bool:
        """Whether ``inner_path`` puts the nodes on the shared standard nodes at ``V``
        (``"auto"``: where :meth:`shared_nodes_apply`); ``ValueError`` if ``"shared"`` is
        asked for where it is not possible."""
        if inner_path == "shared" and not self.shared_nodes_possible(V):
            raise ValueError("inner_path 'shared' needs a depth >= 2 channel on an inner "
                             "trapezoid and a diagonal V")
        return inner_path == "shared" or (inner_path == "auto" and self.shared_nodes_apply(V))

    def _fibre_gpu(self, obs, omega, V, second, inner_error, inner_path, on_device
                   ) -> FibreMoments:
        """:meth:`_fibre_fused` on cupy; the results copied to the host unless
        ``on_device``."""
        res = self._fibre_fused(get_namespace("gpu"), obs, omega, V, second, inner_error,
                                inner_path)
        if on_device:
            return res
        return FibreMoments(to_numpy(res.log_norm), to_numpy(res.mean), to_numpy(res.second))

    def _fibre_fused(self, xp, obs, omega, V, second, inner_error, inner_path
                     ) -> FibreMoments:
        """The fused CUDA kernel with the numba path's choice of nodes: importance-weighted
        shared nodes for means on a shared path (as :meth:`_fibre_diagonal`), precomputed
        mixers where ``ω_U = 0`` (as :meth:`_fibre_numba`), else nodes ``ω_U + C t``.
        ``xp``: cupy on a GPU, numpy on numba's CUDA simulator (tests)."""
        from . import _attention_cuda as cu  # numba.cuda is imported on this path only

        L, depth, m = self.seq_len, self.depth, self.depth - 1
        cu.check_sizes(L, depth)
        obs = xp.asarray(obs, dtype=xp.float64)
        batch = obs.shape[:-1]
        omega = xp.broadcast_to(xp.asarray(omega, dtype=xp.float64), batch + (L, depth))
        a = xp.ascontiguousarray(obs.reshape(-1, L))
        om = xp.ascontiguousarray(omega.reshape(-1, L, depth))
        if not (bool(xp.all(xp.isfinite(a))) and bool(xp.all(xp.isfinite(om)))):
            raise ValueError("observations and omega must be finite")
        chol, coef, vc = self._conditional(V)
        shared = self._shared_path(V, inner_path)
        if shared and second in (False, "diagonal"):
            mode = "importance"
        elif m > 0 and not bool(xp.any(om[:, :, :m])):
            mode = "shared"
        else:
            mode = "general"
        nodes, vc, const = self._device_nodes(xp, mode, V, chol, coef, vc, inner_error)
        ln, mean, sec = cu.fibre_moments_cuda(xp, a, om, *nodes, vc, self.skip, self.beta,
                                              const, mode,
                                              "diagonal" if second == "diagonal" else
                                              bool(second))
        S = ln.shape[0]
        return FibreMoments(
            ln.reshape((S,) + batch),
            mean.reshape((S,) + batch + (L, depth)),
            sec.reshape((S,) + batch + (L, depth, L, depth)),
        )

    def _device_nodes(self, xp, mode, V, chol, coef, vc, inner_error):
        """Node arrays of the fused kernel in ``xp`` (cached for the last ``V``):
        ``(CT, CMU, W, Binv_sh, logdet_sh, node_base, inv_vU)``, ``v_c`` and the constant
        ``-L/2 log(2π v_c)`` (importance: ``- L/2 Σ_j log v_j`` more)."""
        key = (xp.__name__, mode, np.asarray(V).tobytes(), bool(inner_error))
        if self._device_cache is not None and self._device_cache[0] == key:
            return self._device_cache[1]
        L, m = self.seq_len, self.depth - 1
        T, W = self._inner_nodes()
        if not inner_error:
            W = W[:1]
        n = T.shape[0]
        dummy_b, dummy_v = np.zeros((1, L, L)), np.zeros(1)
        node_base, inv_vU = dummy_v, np.ones(max(m, 1))
        if mode == "importance":
            vU = np.diag(V)[:m]
            Binv, logdet = self._shared_mixers(np.eye(m))
            CT, CMU = T, np.zeros((n, L))
            node_base = 0.5 * np.einsum("nlj,j->n", T**2, 1.0 - 1.0 / vU) - logdet
            inv_vU = 1.0 / vU
            vc = float(V[m, m])
            logv = 0.0
            for j in range(m):
                logv -= np.log(inv_vU[j])
            const = -0.5 * L * logv - 0.5 * L * np.log(2.0 * np.pi * vc)
        else:
            CT = np.einsum("jq,nlq->nlj", chol, T) if m else np.zeros((n, L, 1))
            CMU = CT[:, :, :m] @ coef if m else np.zeros((n, L))
            Binv, logdet = self._shared_mixers(chol) if mode == "shared" else (dummy_b, dummy_v)
            const = -0.5 * L * np.log(2.0 * np.pi * vc)
        arrays = tuple(xp.asarray(np.ascontiguousarray(x, dtype=float))
                       for x in (CT, CMU, W, Binv, logdet, node_base, inv_vU))
        out = (arrays, float(vc), float(const))
        self._device_cache = (key, out)
        return out

    def posterior_on(self, obs, omega, V, device="cpu", cpu_kernel="numba") -> Posterior:
        """:meth:`posterior`; on ``device="gpu"`` its arrays stay on the device (cupy)."""
        return self.posterior(obs, omega, V, device, cpu_kernel, on_device=device == "gpu")

    def posterior(self, obs, omega, V, device: str = "cpu", cpu_kernel: str = "numba",
                  on_device: bool = False) -> Posterior:
        fm = self.fibre_moments(obs, omega, V, device, cpu_kernel=cpu_kernel,
                                on_device=on_device)
        xp = get_namespace("gpu") if on_device and device == "gpu" else np
        return Posterior(
            fm.log_norm[0], fm.mean[0], fm.second[0], error=xp.abs(fm.mean[0] - fm.mean[1])
        )

    def _fibre_numba(self, a, om, chol, coef, vc, want_second=True, inner_error=True):
        T, W = self._inner_nodes()
        if not inner_error:
            W = np.ascontiguousarray(W[:1])
        K, L = a.shape
        depth, m = self.depth, self.depth - 1
        S = W.shape[0]
        shared = m > 0 and not np.any(om[:, :, :m])
        if (not shared and L == 2 and m > 0 and not np.any(coef)
                and np.all(chol == np.diag(np.diag(chol)))):
            # diagonal V, two tokens (state evolution, the staircase): written-out kernels
            lognorm, mean = np.empty((S, K)), np.empty((S, K, L, depth))
            second = np.full((S, K, L, depth, L, depth), np.nan)
            if depth == 2 and want_second in (False, "diagonal"):
                sq = np.empty((S, K, L, depth) if want_second else (0, 0, 0, 0))
                kern.fibre_means_two_tokens(a, om, T, W, float(chol[0, 0]), vc, self.skip,
                                            self.beta, lognorm, mean, sq)
                _put_diagonal(second, sq)
            elif depth == 2:  # full second moments: the vectorised depth-2 kernel
                kern.fibre_moments_two_tokens_depth2(a, om, T, W, float(chol[0, 0]), 0.0, vc,
                                                     self.skip, self.beta, lognorm, mean,
                                                     second, bool(want_second))
            elif depth == 3:  # written out, only the sums asked for ("diagonal": the
                # per-layer blocks hold it)
                mode = (kern.FIBRE_LAYER_BLOCKS if isinstance(want_second, str) else
                        kern.FIBRE_FULL if want_second else kern.FIBRE_MEANS)
                kern.fibre_moments_depth3(a, om, T, W, _kernel_array(np.diag(chol)), vc,
                                          self.skip, self.beta, lognorm, mean, second, mode)
            else:
                kern.fibre_moments_two_tokens(a, om, T, W, _kernel_array(np.diag(chol)),
                                              vc, self.skip, self.beta, lognorm, mean, second,
                                              bool(want_second))
            return FibreMoments(lognorm, mean, second)
        if shared:
            Binv, logdet = self._shared_mixers(chol)
        else:
            Binv, logdet = np.zeros((1, L, L)), np.zeros(1)
        lognorm = np.empty((S, K))
        mean = np.empty((S, K, L, depth))
        if want_second:
            second = np.empty((S, K, L, depth, L, depth))
        else:
            second = np.full((S, K, L, depth, L, depth), np.nan)
        if L == 2 and depth == 2 and not shared:  # AMP's V = Ĉ at depth 2: vectorised
            kern.fibre_moments_two_tokens_depth2(a, om, T, W, float(chol[0, 0]),
                                                 float(coef[0]), vc, self.skip, self.beta,
                                                 lognorm, mean, second, bool(want_second))
            return FibreMoments(lognorm, mean, second)
        # two tokens, general V, other depths: the written-out kernel, the same sums (~4x)
        kernel = kern.fibre_moments_two_tokens_general if L == 2 else kern.fibre_moments
        kernel(
            a, om, T, W, np.ascontiguousarray(chol), np.ascontiguousarray(coef), vc,
            self.skip, self.beta, Binv, logdet, shared, lognorm, mean, second,
            bool(want_second),
        )
        return FibreMoments(lognorm, mean, second)

    def shared_nodes_possible(self, V) -> bool:
        """Whether the shared-node kernel can integrate ``V`` at all: depth >= 2, an inner
        trapezoid (on Sobol' nodes the importance weights raised the inner error 2-5x at
        depth 3, on a 4-node Gauss–Hermite rule by 30 %) and ``V`` diagonal."""
        V = np.asarray(V, dtype=float)
        return bool(
            self.depth > 1
            and self.inner_rule.kind in ("trapezoid", "sinh-trapezoid")
            and np.all(V == np.diag(np.diag(V)))
        )

    def shared_nodes_apply(self, V, margin: float = 1.0) -> bool:
        """Whether the importance-weighted shared nodes integrate ``V`` accurately.

        Their spacing is fixed in ``z_U``, so they must resolve both the prior factor
        ``N(z_U; ω_U, v_U)`` and the fibre factor ``N(B(z_U)^{-1} a; ω_last, v_last)``:
        every first-layer variance at least ``SHARED_MIN_VARIANCE / margin`` and the last
        layer's at least ``SHARED_MIN_LAST_VARIANCE / margin``.  At ``margin = 1`` they
        agree with the shifted nodes within 2e-5 in ``Q`` (at ``v_U = 0.2`` and
        ``v_last = 0.002`` the gap is 6e-5, at ``v_last = 5e-4`` 1.3e-3); ``margin =
        SHARED_HYSTERESIS`` is the band a solve locked on them may cross (gaps up to 3e-4).
        """
        m = self.depth - 1
        d = np.diag(np.asarray(V, dtype=float))
        return bool(
            self.shared_nodes_possible(V)
            and np.all(d[:m] >= SHARED_MIN_VARIANCE / margin)
            and d[m] >= SHARED_MIN_LAST_VARIANCE / margin
        )

    def _fibre_diagonal(self, a, om, V, inner_error=True, squares=False):
        """Means (and with ``squares`` the diagonal second moments) on the shared standard
        nodes with importance weights (diagonal ``V``)."""
        m = self.depth - 1
        T, W = self._inner_nodes()
        if not inner_error:
            W = np.ascontiguousarray(W[:1])
        Binv, logdet = self._shared_mixers(np.eye(m))
        vU = np.diag(V)[:m]
        node_base = 0.5 * np.einsum("nlj,j->n", T**2, 1.0 - 1.0 / vU) - logdet
        K, L = a.shape
        S = W.shape[0]
        lognorm = np.empty((S, K))
        mean = np.empty((S, K, L, self.depth))
        sq = np.empty((S, K, L, self.depth) if squares else (0, 0, 0, 0))
        kernel = (kern.diagonal_fibre_means_two_tokens if (L, self.depth) == (2, 2) else
                  kern.diagonal_fibre_means)
        kernel(
            a, om, T, Binv, logdet, np.ascontiguousarray(node_base), 1.0 / vU,
            float(V[m, m]), W, lognorm, mean, sq,
        )
        second = np.full((S, K, L, self.depth, L, self.depth), np.nan)
        _put_diagonal(second, sq)
        return FibreMoments(lognorm, mean, second)

    def _shared_mixers(self, chol):
        key = chol.tobytes()
        if self._shared_cache is not None and self._shared_cache[0] == key:
            return self._shared_cache[1], self._shared_cache[2]
        T, _ = self._inner_nodes()
        ZU = np.ascontiguousarray(np.einsum("jq,nlq->nlj", chol, T))
        n, L = ZU.shape[0], self.seq_len
        Binv = np.empty((n, L, L))
        logdet = np.empty(n)
        kern.precompute_mixers(ZU, self.skip, self.beta, Binv, logdet)
        self._shared_cache = (key, Binv, logdet)
        return Binv, logdet

    def _fibre_xp(self, a, om, chol, coef, vc, device, chunk_elems: int = 2_000_000,
                  inner_error: bool = True):
        """Vectorised reference path on an array namespace (``device``: 'cpu' or 'gpu')."""
        xp = get_namespace(device)
        T, W = self._inner_nodes()
        if not inner_error:
            W = W[:1]
        T, W = xp.asarray(T), xp.asarray(W)
        chol_x, coef_x = xp.asarray(chol), xp.asarray(coef)
        K, L = a.shape
        depth, m = self.depth, self.depth - 1
        S, n = W.shape
        out_ln = np.empty((S, K))
        out_mean = np.empty((S, K, L, depth))
        out_sec = np.empty((S, K, L, depth, L, depth))
        step = max(1, chunk_elems // max(n, 1))
        for start in range(0, K, step):
            sl = slice(start, min(K, start + step))
            ak = xp.asarray(a[sl])  # (k, L)
            omk = xp.asarray(om[sl])  # (k, L, depth)
            ct = xp.einsum("jq,nlq->nlj", chol_x, T)  # (n, L, m)
            zU = omk[:, None, :, :m] + ct[None]  # (k, n, L, m)
            if m:
                _, Binv, logdet = attention_mixer_inverse(zU, self.skip, self.beta)
            else:
                Binv = xp.broadcast_to(xp.eye(L), zU.shape[:2] + (L, L))
                logdet = xp.zeros(zU.shape[:2])
            x = xp.einsum("knrc,kc->knr", Binv, ak)  # (k, n, L)
            mu = omk[:, None, :, m] + ct[None] @ coef_x  # (k, n, L)
            sg = xp.asarray([1.0, -1.0])
            zl = sg[None, None, :, None] * x[:, :, None, :]  # (k, n, 2, L)
            lw = -((zl - mu[:, :, None, :]) ** 2).sum(-1) / (2 * vc) - logdet[:, :, None]
            lmax = lw.max(axis=(1, 2), keepdims=True)
            e = xp.exp(lw - lmax)  # (k, n, 2)
            z = xp.concatenate(
                [xp.broadcast_to(zU[:, :, None], zU.shape[:2] + (2, L, m)), zl[..., None]], axis=-1
            )  # (k, n, 2, L, depth)
            we = W[:, None, :, None] * e[None]  # (S, k, n, 2)
            Zs = we.sum(axis=(2, 3))
            M = xp.einsum("sknb,knblj->sklj", we, z) / Zs[:, :, None, None]
            Sec = xp.einsum("sknb,knblj,knbpq->skljpq", we, z, z) / Zs[:, :, None, None, None, None]
            ln = xp.log(Zs) + lmax[None, :, 0, 0] - 0.5 * L * np.log(2 * np.pi * vc)
            out_ln[:, sl] = to_numpy(ln)
            out_mean[:, sl] = to_numpy(M)
            out_sec[:, sl] = to_numpy(Sec)
        return FibreMoments(out_ln, out_mean, out_sec)


def sinh_grid_2d(n: int, half_width_sum: float, half_width_diff: float, scale: float,
                 gaussian: bool, shift: tuple[int, int] = (0, 0), fold: bool = False
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Nodes ``(K, 2)`` and weight sets ``(2, K)`` (primary, embedded) of
    :func:`~asymptotics.integrate.sinh_trapezoid_2d` (``n`` nodes per axis, the same
    ``u`` and ``v`` steps ``h``), optionally shifted and folded.

    ``shift = (s_u, s_v)``: along each axis with ``s = 1`` the nodes sit at
    ``(i + 1/2) h`` (``n + 1`` of them) instead of ``i h``.  For a trapezoid on an analytic
    integrand the error is ``Σ_{k≠0} f̂(2πk/h)`` (Poisson summation, ``k`` in Z^4 over
    the outer and inner axes); moving one axis by ``h/2`` flips the sign of every term with
    odd ``k`` along it, so the difference of the two rules is twice the error terms odd
    along that axis (what :func:`asymptotics.thresholds.weak_recovery_thresholds` uses).

    ``fold``: keep ``u >= 0, w >= 0`` with weights times the orbit size under
    ``u -> -u``, ``w -> -w`` (1, 2 or 4; the caller must know the integrand is invariant).
    """
    axes = []
    for half, s, is_v in ((half_width_sum, shift[0], False), (half_width_diff, shift[1], True)):
        top = np.arcsinh(half / scale) if is_v else half
        t = np.linspace(-top, top, n)
        h = t[1] - t[0]
        if s:
            t = (np.arange(n + 1) - 0.5 * n) * h
        mult = np.ones(len(t))
        w_c = np.zeros(len(t))
        w_c[(np.arange(len(t)) - (len(t) - 1) // 2) % 2 == 0] = 2.0
        if s:
            w_c[:] = 1.0  # no embedded rule on a shifted axis: the primary again
        keep = np.arange(len(t))
        if fold:
            keep = np.arange(len(t) // 2, len(t))
            mult = np.where(keep == (len(t) - 1) / 2, 1.0, 2.0)
        t = t[keep]
        w_c = w_c[keep]
        if is_v:
            x, jac = scale * np.sinh(t), h * (scale * np.cosh(t))
        else:
            x, jac = t, np.full(len(t), h)
        axes.append((x, jac * mult, jac * mult * w_c))
    (u, wu, wu_c), (w, wv, wv_c) = axes
    pts, wt, wt_c = rotated_product(u, wu, wu_c, w, wv, wv_c, gaussian)
    return pts, np.vstack([wt, wt_c])


def half_step_inner_rule(channel: AttentionChannel, shift: tuple[int, int]) -> Rule:
    """The channel's default inner rule (depth 2, L = 2: the rotated sinh trapezoid) with
    its nodes moved by half a step along ``u`` and/or ``v`` (:func:`sinh_grid_2d`); depth 1
    (no inner integral): the rule itself.  ``ValueError`` unless the channel carries a
    default rule of some resolution."""
    rule = channel.inner_rule
    if channel.depth == 1:
        return rule  # no inner integral (one exact point): nothing to shift
    n = int(round(np.sqrt(rule.size)))
    r = int(round(np.log2(max(1, n - 1) / GRID_NODES)))
    if channel.depth != 2 or channel.seq_len != 2 or n != GRID_NODES * 2**r + 1 or \
            not np.array_equal(rule.points, default_inner_rule(
                2, 2, r, 0, channel.skip, channel.beta).points):
        raise ValueError("half-step shifted inner rules exist only for the default inner "
                         "rule of depth 2, L = 2")
    scale = max(MIN_SCALE, min(1.0, np.sqrt(channel.skip / channel.beta)))
    pts, wsets = sinh_grid_2d(n, GRID_HALF_WIDTH, GRID_HALF_WIDTH, scale, True, shift)
    return Rule(pts, wsets[0], wsets[1:], "embedded", "sinh-trapezoid",
                f"sinh-trapezoid half-step shifted {shift} {n}x{n} (scale {scale:.3g})")


def fold_mirror_nodes(T: np.ndarray, W: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Fold nodes ``T (n, ...)`` with weight sets ``W (S, n)`` onto their first half when
    node ``n-1-i`` is ``-T_i`` with the same weights (to 1e-13 relative): weights of
    mirror pairs summed, a self-mirrored centre node kept once.  Otherwise unchanged."""
    n = T.shape[0]
    scale = max(1.0, float(np.abs(T).max(initial=0.0)))
    if n < 2 or not np.allclose(T[::-1], -T, rtol=0, atol=1e-13 * scale) or \
            not np.allclose(W[:, ::-1], W, rtol=1e-13, atol=0):
        return T, W
    h = n // 2
    Wf = W[:, :h] + W[:, ::-1][:, :h]
    if n % 2:
        return (np.ascontiguousarray(T[: h + 1]),
                np.ascontiguousarray(np.concatenate([Wf, W[:, h:h + 1]], axis=1)))
    return np.ascontiguousarray(T[:h]), np.ascontiguousarray(Wf)
