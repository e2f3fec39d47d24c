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


# the lane sums before the lane vectors (session 10): scalar code over an accumulator array,
# the same additions in the same order as the vector lanes (tests hold them bit for bit)
LANES = kern.LANES
FIBRE_LAYER_BLOCKS, FIBRE_FULL = kern.FIBRE_LAYER_BLOCKS, kern.FIBRE_FULL


@njit(cache=True)
def scalar_lane_depth3_sums(Z, E, D, w, mode, out):
    """The folded sums of :func:`fibre_moments_depth3` over the nodes (``z = (u_00, u_01,
    x_0, u_10, u_11, x_1)`` in the rows of ``Z``), in ``LANES`` partial sums added last (a
    fixed order; see ``LANES``): ``out[:7] = Σ (wE, wE z_0, wE z_1, wD z_2, wE z_3, wE z_4,
    wD z_5)``; then with ``FIBRE_LAYER_BLOCKS`` ``out[7:16]``, per layer ``j`` the sums of
    ``wE z_{0j}²``, ``wE z_{0j} z_{1j}``, ``wE z_{1j}²``; with ``FIBRE_FULL`` ``out[7:28]``,
    the upper triangle of ``Σ w z zᵀ`` row by row (one odd x and one even entry weighed by
    D, the others by E)."""
    total = 28 if mode == FIBRE_FULL else 16 if mode == FIBRE_LAYER_BLOCKS else 7
    acc = np.zeros((total, LANES))
    for i in range(E.size):
        j = i & (LANES - 1)  # lane j adds nodes j, j + LANES, ... in order
        we = w[i] * E[i]
        wd = w[i] * D[i]
        z0 = Z[0, i]
        z1 = Z[1, i]
        z2 = Z[2, i]
        z3 = Z[3, i]
        z4 = Z[4, i]
        z5 = Z[5, i]
        acc[0, j] += we
        acc[1, j] += we * z0
        acc[2, j] += we * z1
        acc[3, j] += wd * z2
        acc[4, j] += we * z3
        acc[5, j] += we * z4
        acc[6, j] += wd * z5
        if mode == FIBRE_LAYER_BLOCKS:
            acc[7, j] += we * z0 * z0
            acc[8, j] += we * z0 * z3
            acc[9, j] += we * z3 * z3
            acc[10, j] += we * z1 * z1
            acc[11, j] += we * z1 * z4
            acc[12, j] += we * z4 * z4
            acc[13, j] += we * z2 * z2
            acc[14, j] += we * z2 * z5
            acc[15, j] += we * z5 * z5
        elif mode == FIBRE_FULL:
            acc[7, j] += we * z0 * z0
            acc[8, j] += we * z0 * z1
            acc[9, j] += wd * z0 * z2
            acc[10, j] += we * z0 * z3
            acc[11, j] += we * z0 * z4
            acc[12, j] += wd * z0 * z5
            acc[13, j] += we * z1 * z1
            acc[14, j] += wd * z1 * z2
            acc[15, j] += we * z1 * z3
            acc[16, j] += we * z1 * z4
            acc[17, j] += wd * z1 * z5
            acc[18, j] += we * z2 * z2
            acc[19, j] += wd * z2 * z3
            acc[20, j] += wd * z2 * z4
            acc[21, j] += we * z2 * z5
            acc[22, j] += we * z3 * z3
            acc[23, j] += we * z3 * z4
            acc[24, j] += wd * z3 * z5
            acc[25, j] += we * z4 * z4
            acc[26, j] += wd * z4 * z5
            acc[27, j] += we * z5 * z5
    for t in range(total):
        s = 0.0
        for lane in range(LANES):
            s += acc[t, lane]
        out[t] = s


@njit(cache=True)
def scalar_lane_two_token_moment_sums(EP, EM, W, U0, U1, X0, X1, with_second, tot):
    """The folded sums of a depth-2, two-token node set on one weight set ``W`` (padded to
    a multiple of ``LANES``), ``e = W (e_+ + e_-)``, ``d = W (e_+ - e_-)``, ``z = (u0, x0,
    u1, x1)`` (``x`` odd under the sign flip):

        tot[0:5]  = Σ_i (e, e u0, d x0, e u1, d x1),
        tot[5:15] = Σ_i z_r z_c (e where r, c have the same parity, else d), r <= c,

    the second block only ``with_second``; in ``LANES`` partial sums added last (a fixed
    order on every CPU; see ``LANES``)."""
    acc = np.zeros((15, LANES))
    for b in range(0, EP.size, LANES):
        for j in range(LANES):
            i = b + j
            e = W[i] * (EP[i] + EM[i])
            d = W[i] * (EP[i] - EM[i])
            u0 = U0[i]
            x0 = X0[i]
            u1 = U1[i]
            x1 = X1[i]
            eu0 = e * u0
            du0 = d * u0
            ex0 = e * x0
            dx0 = d * x0
            eu1 = e * u1
            acc[0, j] += e
            acc[1, j] += eu0
            acc[2, j] += dx0
            acc[3, j] += eu1
            acc[4, j] += d * x1
            if with_second:
                acc[5, j] += eu0 * u0
                acc[6, j] += du0 * x0
                acc[7, j] += eu0 * u1
                acc[8, j] += du0 * x1
                acc[9, j] += ex0 * x0
                acc[10, j] += dx0 * u1
                acc[11, j] += ex0 * x1
                acc[12, j] += eu1 * u1
                acc[13, j] += d * u1 * x1
                acc[14, j] += e * x1 * x1
    for r in range(15 if with_second else 5):
        t = 0.0
        for j in range(LANES):
            t += acc[r, j]
        tot[r] = t


@njit(cache=True)
def scalar_lane_max(LP, LM):
    """``max(LP ∪ LM)`` in ``LANES`` partial maxima, scalar code (before session 10)."""
    mx = np.full(LANES, -np.inf)
    for b in range(0, LP.size, LANES):
        for j in range(LANES):
            mx[j] = max(mx[j], max(LP[b + j], LM[b + j]))
    out = -np.inf
    for j in range(LANES):
        out = max(out, mx[j])
    return out
