"""The fibre kernels before issue 15, verbatim (one pass, running maximum with rescaling),
for side-by-side timings: ``previous_kernels()`` swaps them into the channel for a block.
The depth-3 written-out kernels (``fibre_moments_depth3``, ``unlearned_moments_depth3``)
and ``mean_forward_two_tokens`` are swapped for the kernels they replaced (``head_*``: the
package's general kernels, which issue 15's depth-3 staircase and curve ran on at ff6a747).

    with previous_kernels():
        sweep(...)   # runs on the previous kernels
"""

from __future__ import annotations

import math
from contextlib import contextmanager

import numpy as np
from numba import njit, prange

from asymptotics.channels import _attention_kernels as kern
from asymptotics.channels._attention_kernels import inverse_logdet_into, mixer_into


@njit(parallel=True, cache=True)
def previous_fibre_moments(
    a,
    omega,
    T,
    W,
    chol,
    cvec,
    vc,
    skip,
    beta,
    Binv_sh,
    logdet_sh,
    shared,
    lognorm,
    mean,
    second,
    with_second,
):
    """Posterior log-normaliser, mean and full second moment for each observation.

    a (K, L); omega (K, L, depth); T (n, L, m) standard inner nodes (m = depth-1);
    W (S, n) weight sets; chol (m, m); cvec (m,); vc: conditional variance of the last
    layer.  Outputs: lognorm (S, K), mean (S, K, L, depth), second (S, K, L, depth, L, depth)
    (left untouched when ``with_second`` is False: state evolution needs only the mean).
    """
    K, L = a.shape
    depth = omega.shape[2]
    m = depth - 1
    n = T.shape[0]
    S = W.shape[0]
    const = -0.5 * L * math.log(2.0 * math.pi * vc)
    for k in prange(K):
        zU = np.empty((L, m))
        ct = np.empty((L, m))
        B = np.empty((L, L))
        Binv = np.empty((L, L))
        A = np.empty((L, L))
        tmp = np.empty((L, L))
        work = np.empty((L, L))
        s = np.empty(L)
        x = np.empty(L)
        z = np.empty((L, depth))
        accZ = np.zeros(S)
        accM = np.zeros((S, L, depth))
        accS = np.zeros((S, L, depth, L, depth) if with_second else (S, 1, 1, 1, 1))
        lmax = -np.inf
        for i in range(n):
            for l in range(L):
                for j in range(m):
                    acc = 0.0
                    for q in range(j + 1):
                        acc += chol[j, q] * T[i, l, q]
                    ct[l, j] = acc
                    zU[l, j] = omega[k, l, j] + acc
            if shared:
                ld = logdet_sh[i]
                for r in range(L):
                    for c in range(L):
                        Binv[r, c] = Binv_sh[i, r, c]
            else:
                mixer_into(zU, skip, beta, B, A, s, tmp)
                ld = inverse_logdet_into(B, Binv, work)
            if ld == -np.inf:
                continue
            for r in range(L):
                acc = 0.0
                for c in range(L):
                    acc += Binv[r, c] * a[k, c]
                x[r] = acc
            for sgn_i in range(2):
                sgn = 1.0 if sgn_i == 0 else -1.0
                lw = -ld
                for l in range(L):
                    mu = omega[k, l, m]
                    for j in range(m):
                        mu += cvec[j] * ct[l, j]
                    d = sgn * x[l] - mu
                    lw -= d * d / (2.0 * vc)
                if lw > lmax:
                    if lmax > -np.inf:
                        f = math.exp(lmax - lw)
                        for q in range(S):
                            accZ[q] *= f
                            for l in range(L):
                                for j in range(depth):
                                    accM[q, l, j] *= f
                                    if with_second:
                                        for l2 in range(L):
                                            for j2 in range(depth):
                                                accS[q, l, j, l2, j2] *= f
                    lmax = lw
                e = math.exp(lw - lmax)
                for l in range(L):
                    for j in range(m):
                        z[l, j] = zU[l, j]
                    z[l, m] = sgn * x[l]
                for q in range(S):
                    ws = W[q, i] * e
                    if ws == 0.0:
                        continue
                    accZ[q] += ws
                    for l in range(L):
                        for j in range(depth):
                            wz = ws * z[l, j]
                            accM[q, l, j] += wz
                            if with_second:
                                for l2 in range(L):
                                    for j2 in range(depth):
                                        accS[q, l, j, l2, j2] += wz * z[l2, j2]
        for q in range(S):
            if accZ[q] > 0.0:
                lognorm[q, k] = math.log(accZ[q]) + lmax + const
                inv = 1.0 / accZ[q]
                for l in range(L):
                    for j in range(depth):
                        mean[q, k, l, j] = accM[q, l, j] * inv
                        if with_second:
                            for l2 in range(L):
                                for j2 in range(depth):
                                    second[q, k, l, j, l2, j2] = accS[q, l, j, l2, j2] * inv
            else:
                lognorm[q, k] = -np.inf
                for l in range(L):
                    for j in range(depth):
                        mean[q, k, l, j] = np.nan
                        for l2 in range(L):
                            for j2 in range(depth):
                                second[q, k, l, j, l2, j2] = np.nan


@njit(parallel=True, cache=True)
def previous_diagonal_fibre_means(
    a, omega, ZU, Binv_sh, logdet_sh, node_base, inv_vU, v_last, W, lognorm, mean
):
    """Log-normaliser and mean of the fibre posterior for a diagonal ``V`` on shared nodes.

    With ``V = diag(v_1, ..., v_m, v_last)`` (one variance per layer, as in state evolution
    with a diagonal ``Q``) the first layers' posterior factor ``N(z_U; ω_U, v)`` is
    integrated by importance weighting on fixed standard-normal nodes ``z_U = t``:

        ∫ h(z_U) N(z_U; ω_U, v) dz_U ≈ Σ_i W_i h(t_i) N(t_i; ω_U, v) / φ(t_i),

    so the mixers ``B(t_i)`` are computed once for all observations.  Per pair only
    ``x = B_i^{-1} a`` and the exponent

        log w_± = node_base_i + Σ_{l,j} t_{lj} ω_{lj} / v_j - |±x - ω_last|² / (2 v_last)

    are evaluated, where ``node_base_i = Σ_{l,j} t_{lj}² (1 - 1/v_j)/2 - log|det B_i|``.

    a (K, L); omega (K, L, depth); ZU (n, L, m); Binv_sh (n, L, L); logdet_sh, node_base
    (n,); inv_vU (m,); W (S, n).  Outputs: lognorm (S, K), mean (S, K, L, depth).
    """
    K, L = a.shape
    n, _, m = ZU.shape
    depth = m + 1
    S = W.shape[0]
    logv = 0.0
    for j in range(m):
        logv -= math.log(inv_vU[j])
    const0 = -0.5 * L * logv - 0.5 * L * math.log(2.0 * math.pi * v_last)
    inv2v = 0.5 / v_last
    for k in prange(K):
        x = np.empty(L)
        accZ = np.zeros(S)
        accM = np.zeros((S, L, depth))
        ow = np.empty((L, m))
        const = const0
        for l in range(L):
            for j in range(m):
                ow[l, j] = omega[k, l, j] * inv_vU[j]
                const -= 0.5 * omega[k, l, j] * ow[l, j]
        lmax = -np.inf
        for i in range(n):
            if logdet_sh[i] == -np.inf:
                continue
            lb = node_base[i]
            for l in range(L):
                for j in range(m):
                    lb += ZU[i, l, j] * ow[l, j]
            qp = 0.0
            qm = 0.0
            for r in range(L):
                t = 0.0
                for c in range(L):
                    t += Binv_sh[i, r, c] * a[k, c]
                x[r] = t
                dp = t - omega[k, r, m]
                dm = t + omega[k, r, m]
                qp += dp * dp
                qm += dm * dm
            lwp = lb - inv2v * qp
            lwm = lb - inv2v * qm
            lw = max(lwp, lwm)
            if lw > lmax:
                if lmax > -np.inf:
                    f = math.exp(lmax - lw)
                    for s in range(S):
                        accZ[s] *= f
                        for l in range(L):
                            for j in range(depth):
                                accM[s, l, j] *= f
                lmax = lw
            ep = math.exp(lwp - lmax)
            em = math.exp(lwm - lmax)
            e = ep + em
            d = ep - em
            for s in range(S):
                ws = W[s, i]
                we = ws * e
                accZ[s] += we
                wd = ws * d
                for l in range(L):
                    for j in range(m):
                        accM[s, l, j] += we * ZU[i, l, j]
                    accM[s, l, m] += wd * x[l]
        for s in range(S):
            if accZ[s] > 0.0:
                lognorm[s, k] = math.log(accZ[s]) + lmax + const
                inv = 1.0 / accZ[s]
                for l in range(L):
                    for j in range(depth):
                        mean[s, k, l, j] = accM[s, l, j] * inv
            else:
                lognorm[s, k] = -np.inf
                for l in range(L):
                    for j in range(depth):
                        mean[s, k, l, j] = np.nan


@njit(parallel=True, cache=True)
def previous_unlearned_inner_moments(
    a, omega_last, v_last, Binv_sh, logdet_sh, ZU, W, lognorm, mean_last, layer_second
):
    """The kernel before issue 15 (commit 9d75abb), kept as the reference: one pass with a
    running maximum of ``log w``.  Fibre moments when the first ``depth-1`` layers are
    unlearned (``ω_U = 0``, ``V_UU = I``, no correlation with the last layer) and the last layer has
    ``ω_last`` (per observation) and variance ``v_last``: Q = 0 (``ω = 0, v = 1``) and the
    staircase of the last layer (THEORY §5).  The mixers of the shared inner nodes are
    precomputed.  Cross-layer moments vanish by the per-layer sign symmetry of the
    unlearned layers, so only ``depth`` blocks ``(L, L)`` are accumulated.

    a (K, L); omega_last (K, L); Binv_sh (n, L, L); logdet_sh (n,); ZU (n, L, m);
    W (S, n).  Outputs: lognorm (S, K); mean_last (S, K, L); layer_second (S, K, m+1, L, L).
    """
    K, L = a.shape
    n, _, m = ZU.shape
    S = W.shape[0]
    const = -0.5 * L * math.log(2.0 * math.pi * v_last)
    inv2v = 0.5 / v_last
    for k in prange(K):
        x = np.empty(L)
        accZ = np.zeros(S)
        accM = np.zeros((S, L))
        acc = np.zeros((S, m + 1, L, L))
        lmax = -np.inf
        for i in range(n):
            if logdet_sh[i] == -np.inf:
                continue
            qp = 0.0
            qm = 0.0
            for r in range(L):
                t = 0.0
                for c in range(L):
                    t += Binv_sh[i, r, c] * a[k, c]
                x[r] = t
                dp = t - omega_last[k, r]
                dm = t + omega_last[k, r]
                qp += dp * dp
                qm += dm * dm
            lwp = -inv2v * qp - logdet_sh[i]
            lwm = -inv2v * qm - logdet_sh[i]
            lw = max(lwp, lwm)
            if lw > lmax:
                if lmax > -np.inf:
                    f = math.exp(lmax - lw)
                    for s in range(S):
                        accZ[s] *= f
                        for r in range(L):
                            accM[s, r] *= f
                        for j in range(m + 1):
                            for r in range(L):
                                for c in range(r, L):
                                    acc[s, j, r, c] *= f
                lmax = lw
            ep = math.exp(lwp - lmax)
            em = math.exp(lwm - lmax)
            e = ep + em
            d = ep - em
            for s in range(S):
                ws = W[s, i]
                if ws == 0.0:
                    continue
                we = ws * e
                accZ[s] += we
                wd = ws * d
                for r in range(L):
                    accM[s, r] += wd * x[r]
                for j in range(m):
                    for r in range(L):
                        wr = we * ZU[i, r, j]
                        for c in range(r, L):
                            acc[s, j, r, c] += wr * ZU[i, c, j]
                for r in range(L):
                    wr = we * x[r]
                    for c in range(r, L):
                        acc[s, m, r, c] += wr * x[c]
        for s in range(S):
            lognorm[s, k] = math.log(accZ[s]) + lmax + const
            for r in range(L):
                mean_last[s, k, r] = accM[s, r] / accZ[s]
            for j in range(m + 1):
                for r in range(L):
                    for c in range(r, L):
                        v = acc[s, j, r, c] / accZ[s]
                        layer_second[s, k, j, r, c] = v
                        layer_second[s, k, j, c, r] = v


def _two_tokens_by_previous(a, omega, T, W, sd_first, v_last, skip, beta, lognorm, mean, sq):
    """The call the channel makes to ``fibre_means_two_tokens``, on the previous general
    kernel (which the SE map's general means ran on; the squares ``sq``, when asked for,
    from its full second moments)."""
    S, K = lognorm.shape
    second = np.empty((S, K, 2, 2, 2, 2))
    previous_fibre_moments(a, omega, T, W, np.array([[sd_first]]), np.zeros(1), v_last, skip,
                           beta, np.zeros((1, 2, 2)), np.zeros(1), False, lognorm, mean, second,
                           sq.size > 0)
    for lay in range(2 if sq.size else 0):
        for j in range(2):
            sq[:, :, lay, j] = second[:, :, lay, j, lay, j]


def _diagonal_by_previous(a, omega, ZU, Binv_sh, logdet_sh, node_base, inv_vU, v_last, W,
                          lognorm, mean, sq):
    """The call the channel makes to ``diagonal_fibre_means`` on the previous kernel, which
    has no squares (``sq`` must be empty)."""
    if sq.size:
        raise NotImplementedError("the previous shared-node kernel has no second moments: "
                                  "compare with SESettings(control_variate=False)")
    previous_diagonal_fibre_means(a, omega, ZU, Binv_sh, logdet_sh, node_base, inv_vU, v_last,
                                  W, lognorm, mean)


def _two_token_moments_by_previous(a, omega, T, W, sd, v_last, skip, beta, lognorm, mean,
                                   second, with_second):
    """The call the channel makes to ``fibre_moments_two_tokens``, on the previous general
    kernel (diagonal V: Cholesky factor diag(sd), no regression on the first layers)."""
    previous_fibre_moments(a, omega, T, W, np.diag(sd), np.zeros(len(sd)), v_last, skip, beta,
                           np.zeros((1, 2, 2)), np.zeros(1), False, lognorm, mean, second,
                           with_second)


# --- the kernels the depth-3 written-out kernels replaced (issue 15, depth 3): they are
# still the package's kernels for other sizes (any depth; L != 2), unchanged since commit
# ff6a747 but for shared helpers with the same operations, so they are taken from it,
# captured here before ``previous_kernels()`` can swap any name.
head_fibre_moments_two_tokens = kern.fibre_moments_two_tokens
head_unlearned_inner_moments = kern.unlearned_inner_moments
head_mean_forward = kern.mean_forward


def _depth3_by_head(a, omega, T, W, sd, v_last, skip, beta, lognorm, mean, second, mode):
    """The call the channel makes to ``fibre_moments_depth3``, on the kernel it replaced
    (all second moments whenever any are asked for)."""
    head_fibre_moments_two_tokens(a, omega, T, W, sd, v_last, skip, beta, lognorm, mean,
                                  second, mode != kern.FIBRE_MEANS)


def _forward_by_head(omega, heads, starts, lasts, weights, skip, beta, out):
    """The call the channel makes to ``mean_forward_two_tokens``, on the kernel it
    replaced (the offsets rebuilt from their heads, in the channel's node order)."""
    group = np.repeat(np.arange(len(heads)), np.diff(starts))
    offsets = np.concatenate([heads[group], lasts.T[:, :, None]], axis=2)
    head_mean_forward(omega, np.ascontiguousarray(offsets), weights, skip, beta, out)


def _depth2_by(kernel):
    """``fibre_moments_two_tokens_depth2`` (depth 2, L = 2) run by a kernel that takes the
    arguments of ``fibre_moments`` (the 1 x 1 Cholesky factor, the regression
    coefficient, no shared mixers)."""

    def depth2(a, om, T, W, c_first, c_reg, v_cond, skip, beta, lognorm, mean, second,
               with_second):
        kernel(a, om, T, W, np.array([[c_first]]), np.array([c_reg]), v_cond, skip, beta,
               np.zeros((1, 2, 2)), np.zeros(1), False, lognorm, mean, second, with_second)

    return depth2


NAMES = ("fibre_moments", "diagonal_fibre_means", "fibre_means_two_tokens",
         "fibre_moments_two_tokens", "fibre_moments_two_tokens_general",
         "fibre_moments_two_tokens_depth2", "fibre_moments_depth3",
         "unlearned_moments_depth3", "mean_forward_two_tokens")


@contextmanager
def previous_kernels():
    """Run the attention channel on the previous fibre kernels inside the block."""
    saved = [getattr(kern, name) for name in NAMES]
    # the L = 2 general-V kernel (AMP) takes the arguments of ``fibre_moments``
    previous = (previous_fibre_moments, _diagonal_by_previous, _two_tokens_by_previous,
                _two_token_moments_by_previous, previous_fibre_moments,
                _depth2_by(previous_fibre_moments), _depth3_by_head,
                head_unlearned_inner_moments, _forward_by_head)
    for name, f in zip(NAMES, previous, strict=True):
        setattr(kern, name, f)
    try:
        yield
    finally:
        for name, f in zip(NAMES, saved, strict=True):
            setattr(kern, name, f)


# -- AMP (issue 15): the written-out L = 2 kernel for a general V ---------------------------
#: the generic two-pass kernel, which AMP's posterior (L = 2, general V = Ĉ) ran on before
#: ``fibre_moments_two_tokens_general`` (captured at import, before any swap)
generic_fibre_moments = kern.fibre_moments


@contextmanager
def _swapped(name, f):
    """``kern.<name>`` replaced by ``f`` inside the block."""
    saved = getattr(kern, name)
    setattr(kern, name, f)
    try:
        yield
    finally:
        setattr(kern, name, saved)


#: the written-out L = 2 general-V kernel (libm ``exp``/``log``), which AMP's depth-2
#: posterior ran on before ``fibre_moments_two_tokens_depth2`` (vectorised, session 9)
written_out_fibre_moments = kern.fibre_moments_two_tokens_general


@contextmanager
def generic_amp_kernel():
    """AMP's posterior (L = 2, general V) on the generic two-pass kernel inside the block:
    the code the published-figures notebook ran before the written-out kernel."""
    with _swapped("fibre_moments_two_tokens_general", generic_fibre_moments), \
            _swapped("fibre_moments_two_tokens_depth2", _depth2_by(generic_fibre_moments)):
        yield


@contextmanager
def written_out_amp_kernel():
    """AMP's depth-2 posterior on the written-out L = 2 kernel (scalar loops, libm) inside
    the block: the code before the vectorised ``fibre_moments_two_tokens_depth2``."""
    with _swapped("fibre_moments_two_tokens_depth2", _depth2_by(written_out_fibre_moments)):
        yield
