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
from ..integrate import Rule, point_rule, sinh_trapezoid_2d, sobol, trapezoid
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
                                inner_rule=True)

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

    def null_moment_sets(self, obs) -> tuple[MomentSets, str]:
        """Q = 0 moments from the unlearned-layer kernel (second moments per layer)."""
        L, p = self.seq_len, self.dim
        log_norm, _, blocks = self.unlearned_inner_moments(obs)
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
        """Numba form of :meth:`Channel.mean_forward` (same sums, no (M, K) temporaries)."""
        omega = np.ascontiguousarray(omega, dtype=float)
        out = np.empty(omega.shape[:1] + (self.seq_len, self.seq_len))
        kern.mean_forward(omega, np.ascontiguousarray(offsets, dtype=float),
                          np.ascontiguousarray(weights, dtype=float), self.skip, self.beta, out)
        return out

    def observe(self, Z, noise=None):
        """``a = s_depth`` (rank 1), equivalent to ``y`` up to the sign the posterior sums."""
        return last_preactivation(Z, self.depth, self.skip, self.beta)[..., 0]

    def observation_from_output(self, y):
        return fibre_from_output(y, self.beta)

    def output_grid(self, resolution: int = 0, nodes: int = 0, half_width: float = 0.0):
        """Deterministic rule on the output statistic ``a ∈ R^L`` (L = 2 only).

        Rotated trapezoid with a sinh map of scale ``skip`` across ``a_0 = a_1``, where the
        density of ``a`` has a peak of width about ``skip``; half-width
        ``8.5 (1 + skip)``.  ``Z_out(a)`` sums ``a`` and ``-a``, so every output is counted
        twice over ``R^L``: the weights carry the factor 1/2.
        """
        if self.seq_len != 2:
            return None
        n = nodes or (GRID_NODES * 2**resolution + 1)
        R = half_width or GRID_HALF_WIDTH * (1.0 + self.skip)
        scale = max(MIN_SCALE, min(1.0, self.skip))
        rule = sinh_trapezoid_2d(n, n, R, R, scale, gaussian=False)
        return rule.points, 0.5 * rule.weight_sets, f"{rule.description} on a"

    def unlearned_inner_moments(self, obs, omega_last=None, v_last: float = 1.0):
        """Fibre moments with the first ``depth-1`` layers unlearned (Q_UU = 0, Q_Ul = 0).

        ``omega_last (K, L)`` (default 0) and ``v_last`` describe the last layer.  Returns
        ``(log_norm (S, K), mean_last (S, K, L), layer_second (S, K, depth, L, L))`` on each
        inner weight set.  At ``omega_last = 0, v_last = 1`` this is the prior (Q = 0).
        """
        a = np.ascontiguousarray(np.asarray(obs, dtype=float).reshape(-1, self.seq_len))
        K = a.shape[0]
        if omega_last is None:
            omega_last = np.zeros_like(a)
        omega_last = np.ascontiguousarray(np.broadcast_to(omega_last, a.shape), dtype=float)
        if not v_last > 0:
            raise ValueError(f"v_last must be > 0, got {v_last}")
        m = self.depth - 1
        Binv, logdet = self._shared_mixers(np.eye(m))
        T, W = self._inner_nodes()
        S, L = W.shape[0], self.seq_len
        lognorm = np.empty((S, K))
        mean_last = np.empty((S, K, L))
        layer_second = np.empty((S, K, self.depth, L, L))
        kern.unlearned_inner_moments(
            a, omega_last, float(v_last), Binv, logdet, T, W, lognorm, mean_last, layer_second
        )
        return lognorm, mean_last, layer_second

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
        self, obs, omega, V, device: str = "cpu", second: bool = True,
        inner_error: bool = True, inner_path: str = "auto", cpu_kernel: str = "numba",
    ) -> FibreMoments:
        """Posterior moments on all inner weight sets, batched over the leading axes.

        ``second=False`` skips the second moments (``second`` is then NaN on the numba
        path) and ``inner_error=False`` uses the primary inner weights only (S = 1): the
        cheap form state-evolution iterations use.  ``inner_path`` picks the numba mean
        kernel: ``shared`` (importance-weighted shared nodes; only where structurally
        possible, see :meth:`shared_nodes_possible`), ``general`` (nodes shifted to
        ``ω_U + chol(V_UU) t``), or ``auto``: shared where :meth:`shared_nodes_apply`.
        ``device`` "cpu" runs the numba kernels (``cpu_kernel="array"``: the array path of
        the GPU, on numpy), "gpu" the array path on cupy.
        """
        check_device(device, cpu_kernel)
        if inner_path not in INNER_PATHS:
            raise ValueError(f"inner_path must be one of {INNER_PATHS}, got {inner_path!r}")
        V = check_variance(V, self.depth)
        obs = np.asarray(obs, dtype=float)
        L, depth = self.seq_len, self.depth
        batch = obs.shape[:-1]
        omega = np.broadcast_to(np.asarray(omega, dtype=float), batch + (L, depth))
        a = np.ascontiguousarray(obs.reshape(-1, L))
        om = np.ascontiguousarray(omega.reshape(-1, L, depth))
        if not (np.all(np.isfinite(a)) and np.all(np.isfinite(om))):
            raise ValueError("observations and omega must be finite")
        chol, coef, vc = self._conditional(V)
        if inner_path == "shared" and not self.shared_nodes_possible(V):
            raise ValueError("inner_path 'shared' needs a depth >= 2 channel on an inner "
                             "trapezoid and a diagonal V")
        shared = inner_path == "shared" or (inner_path == "auto" and self.shared_nodes_apply(V))
        numba = device == "cpu" and cpu_kernel == "numba"
        if numba and not second and shared:
            res = self._fibre_diagonal(a, om, V, inner_error)
        elif numba:
            res = self._fibre_numba(a, om, chol, coef, vc, second, inner_error)
        else:
            res = self._fibre_xp(a, om, chol, coef, vc, device, inner_error=inner_error)
        S = res.log_norm.shape[0]
        return FibreMoments(
            res.log_norm.reshape((S,) + batch),
            res.mean.reshape((S,) + batch + (L, depth)),
            res.second.reshape((S,) + batch + (L, depth, L, depth)),
        )

    def posterior_on(self, obs, omega, V, device="cpu", cpu_kernel="numba") -> Posterior:
        return self.posterior(obs, omega, V, device, cpu_kernel)

    def posterior(self, obs, omega, V, device: str = "cpu", cpu_kernel: str = "numba"
                  ) -> Posterior:
        fm = self.fibre_moments(obs, omega, V, device, cpu_kernel=cpu_kernel)
        return Posterior(
            fm.log_norm[0], fm.mean[0], fm.second[0], error=np.abs(fm.mean[0] - fm.mean[1])
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
            if depth == 2 and not want_second:
                kern.fibre_means_two_tokens(a, om, T, W, float(chol[0, 0]), vc, self.skip,
                                            self.beta, lognorm, mean)
            else:
                kern.fibre_moments_two_tokens(a, om, T, W, np.ascontiguousarray(np.diag(chol)),
                                              vc, self.skip, self.beta, lognorm, mean, second,
                                              want_second)
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
        kern.fibre_moments(
            a, om, T, W, np.ascontiguousarray(chol), np.ascontiguousarray(coef), vc,
            self.skip, self.beta, Binv, logdet, shared, lognorm, mean, second, want_second,
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

    def _fibre_diagonal(self, a, om, V, inner_error=True):
        """Means on the shared standard nodes with importance weights (diagonal ``V``)."""
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
        kern.diagonal_fibre_means(
            a, om, T, Binv, logdet, np.ascontiguousarray(node_base), 1.0 / vU,
            float(V[m, m]), W, lognorm, mean,
        )
        second = np.full((S, K, L, self.depth, L, self.depth), np.nan)
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
