"""Numba kernels for the fibre integral of the attention channel (CPU hot loop).

For every observation ``a = s_depth`` (rank 1) and inner node ``t`` of the first
``depth-1`` layers' pre-activations, with ``z_U = ω_U + C t`` per token (``C`` the Cholesky
factor of ``V_UU``):

    B = B_{depth-1}(z_U),  x = B^{-1} a,
    log w_± = -Σ_l (±x_l - μ_l)² / (2 v_c) - log|det B|,   μ_l = ω_last,l + c·(C t_l)

and the posterior moments of ``Z = [z_U, ±x]`` are weight-averaged.  The mean kernels make
two passes per observation: ``log w`` at every node and its maximum ``M``, then the sums of
``W e^{log w - M}`` (log-sum-exp), so tiny ``v_c`` cannot underflow; the sign pair is
folded (``e_+ + e_-`` weighs what is even in the sign, ``e_+ - e_-`` what is odd).

The rescaling loops and the two-token softmax are written out in each kernel on purpose:
the shared forms measured 1.45-1.75x slower (BENCHMARKS.md, "Why the code is as it is").
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from .. import _kernel_cache
from . import _lane_vectors, _vector_exp
from ._lane_vectors import (
    LANES,
    lanes_fill,
    lanes_largest,
    lanes_load,
    lanes_max,
    lanes_total,
    lanes_zero,
)
from ._vector_exp import vexp

# LANES (from ._lane_vectors): partial sums (and maxima) per reduction over the nodes, lane
# j taking nodes j, j + LANES, ... in order, the lanes added last in their order: the same
# bits on every CPU.  The sums run as lane vectors (one IEEE operation per lane, in vector
# registers): 0.024 ns per sum and node against 0.25 ns for the same sums as scalar code
# over an accumulator array (session 10).


@njit(cache=True)
def mixer_into(zU, skip, beta, B, A, s, tmp):
    """``B = (softmax(β s_m s_m^T) + cI) ... (softmax(β s_1 s_1^T) + cI)`` for ``zU (L, m)``."""
    L = zU.shape[0]
    m = zU.shape[1]
    for r in range(L):
        for c in range(L):
            B[r, c] = 1.0 if r == c else 0.0
    for j in range(m):
        for r in range(L):
            acc = 0.0
            for c in range(L):
                acc += B[r, c] * zU[c, j]
            s[r] = acc
        if L == 2:
            # two-token rows are sigmoids: one exp per row instead of two
            d0 = beta * s[0] * (s[1] - s[0])
            d1 = beta * s[1] * (s[0] - s[1])
            A[0, 0] = _sigmoid(-d0)
            A[0, 1] = 1.0 - A[0, 0]
            A[1, 1] = _sigmoid(-d1)
            A[1, 0] = 1.0 - A[1, 1]
            A[0, 0] += skip
            A[1, 1] += skip
        else:
            for r in range(L):
                mx = -np.inf
                for c in range(L):
                    v = beta * s[r] * s[c]
                    if v > mx:
                        mx = v
                tot = 0.0
                for c in range(L):
                    e = math.exp(beta * s[r] * s[c] - mx)
                    A[r, c] = e
                    tot += e
                for c in range(L):
                    A[r, c] = A[r, c] / tot
                A[r, r] += skip
        for r in range(L):
            for c in range(L):
                acc = 0.0
                for q in range(L):
                    acc += A[r, q] * B[q, c]
                tmp[r, c] = acc
        for r in range(L):
            for c in range(L):
                B[r, c] = tmp[r, c]


@njit(cache=True)
def _sigmoid(x):
    """1 / (1 + e^{-x}), without overflow for either sign."""
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)


@njit(cache=True)
def inverse_logdet_into(B, Binv, work):
    """Gauss–Jordan inverse with partial pivoting; returns log|det B| (-inf if singular).

    2×2 matrices use the closed-form adjugate."""
    L = B.shape[0]
    if L == 2:
        det = B[0, 0] * B[1, 1] - B[0, 1] * B[1, 0]
        if det == 0.0:
            return -np.inf
        inv = 1.0 / det
        Binv[0, 0] = B[1, 1] * inv
        Binv[0, 1] = -B[0, 1] * inv
        Binv[1, 0] = -B[1, 0] * inv
        Binv[1, 1] = B[0, 0] * inv
        return math.log(abs(det))
    for r in range(L):
        for c in range(L):
            work[r, c] = B[r, c]
            Binv[r, c] = 1.0 if r == c else 0.0
    logdet = 0.0
    for col in range(L):
        piv = col
        best = abs(work[col, col])
        for r in range(col + 1, L):
            if abs(work[r, col]) > best:
                best = abs(work[r, col])
                piv = r
        if best == 0.0:
            return -np.inf
        if piv != col:
            for c in range(L):
                t = work[col, c]
                work[col, c] = work[piv, c]
                work[piv, c] = t
                t = Binv[col, c]
                Binv[col, c] = Binv[piv, c]
                Binv[piv, c] = t
        d = work[col, col]
        logdet += math.log(abs(d))
        for c in range(L):
            work[col, c] /= d
            Binv[col, c] /= d
        for r in range(L):
            if r != col:
                f = work[r, col]
                if f != 0.0:
                    for c in range(L):
                        work[r, c] -= f * work[col, c]
                        Binv[r, c] -= f * Binv[col, c]
    return logdet


@njit(cache=True)
def precompute_mixers(ZU, skip, beta, Binv_out, logdet_out):
    """Inverse mixers and log|det| for a shared set of inner nodes ``ZU (n, L, m)``.

    One thread: ~0.1 µs a node, and a parallel loop cost ~2 CPU-s more to compile cold."""
    n, L, _ = ZU.shape
    B = np.empty((L, L))
    A = np.empty((L, L))
    tmp = np.empty((L, L))
    work = np.empty((L, L))
    s = np.empty(L)
    for i in range(n):
        mixer_into(ZU[i], skip, beta, B, A, s, tmp)
        logdet_out[i] = inverse_logdet_into(B, Binv_out[i], work)


@njit(parallel=True, cache=True)
def fibre_moments(
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

    Two passes per observation: the first stores ``log w_±`` and ``x = B^{-1} a`` per node
    and their maximum ``M``, the second sums ``W e^{log w - M}`` (no rescaling branch).
    """
    K, L = a.shape
    depth = omega.shape[2]
    m = depth - 1
    n = T.shape[0]
    S = W.shape[0]
    const = -0.5 * L * math.log(2.0 * math.pi * vc)
    inv2v = 0.5 / vc
    # C t per node (the same for every observation)
    CT = np.empty((n, L, m))
    MU = np.zeros((n, L))  # c·(C t_l): the regression part of the last layer's mean
    for i in range(n):
        for l in range(L):
            mu = 0.0
            for j in range(m):
                acc = 0.0
                for q in range(j + 1):
                    acc += chol[j, q] * T[i, l, q]
                CT[i, l, j] = acc
                mu += cvec[j] * acc
            MU[i, l] = mu
    for k in prange(K):
        zU = np.empty((L, m))
        B = np.empty((L, L))
        Binv = np.empty((L, L))
        A = np.empty((L, L))
        tmp = np.empty((L, L))
        work = np.empty((L, L))
        s = np.empty(L)
        X = np.empty((n, L))
        LW = np.empty((n, 2))
        z = np.empty((L, depth))
        accZ = np.zeros(S)
        accM = np.zeros((S, L, depth))
        accS = np.zeros((S, L, depth, L, depth) if with_second else (S, 1, 1, 1, 1))
        lmax = -np.inf
        for i in range(n):
            if shared:
                ld = logdet_sh[i]
                if ld == -np.inf:
                    LW[i, 0] = -np.inf
                    LW[i, 1] = -np.inf
                    continue
                for r in range(L):
                    acc = 0.0
                    for c in range(L):
                        acc += Binv_sh[i, r, c] * a[k, c]
                    X[i, r] = acc
            else:
                for l in range(L):
                    for j in range(m):
                        zU[l, j] = omega[k, l, j] + CT[i, l, j]
                mixer_into(zU, skip, beta, B, A, s, tmp)
                ld = inverse_logdet_into(B, Binv, work)
                if ld == -np.inf:
                    LW[i, 0] = -np.inf
                    LW[i, 1] = -np.inf
                    continue
                for r in range(L):
                    acc = 0.0
                    for c in range(L):
                        acc += Binv[r, c] * a[k, c]
                    X[i, r] = acc
            qp = 0.0
            qm = 0.0
            for l in range(L):
                mu = omega[k, l, m] + MU[i, l]
                dp = X[i, l] - mu
                dm = X[i, l] + mu
                qp += dp * dp
                qm += dm * dm
            lwp = -ld - inv2v * qp
            lwm = -ld - inv2v * qm
            LW[i, 0] = lwp
            LW[i, 1] = lwm
            if lwp > lmax:
                lmax = lwp
            if lwm > lmax:
                lmax = lwm
        if lmax > -np.inf:
            # the sign pair folded: z_U is weighed by e_+ + e_-, x by e_+ - e_-, and in the
            # second moment the (U, U) and (x, x) blocks by e_+ + e_-, the (U, x) blocks
            # by e_+ - e_- (upper triangle only, mirrored at the end)
            for i in range(n):
                ep = math.exp(LW[i, 0] - lmax)
                em = math.exp(LW[i, 1] - lmax)
                e = ep + em
                if e == 0.0:
                    continue
                d = ep - em
                for l in range(L):
                    for j in range(m):
                        z[l, j] = omega[k, l, j] + CT[i, l, j]
                    z[l, m] = X[i, l]
                for q in range(S):
                    we = W[q, i] * e
                    if we == 0.0:
                        continue
                    wd = W[q, i] * d
                    accZ[q] += we
                    for l in range(L):
                        for j in range(m):
                            accM[q, l, j] += we * z[l, j]
                        accM[q, l, m] += wd * z[l, m]
                    if with_second:
                        for l in range(L):
                            for j in range(depth):
                                wlj = (we if j < m else wd) * z[l, j]
                                for l2 in range(l, L):
                                    for j2 in range(depth):
                                        if l2 == l and j2 < j:
                                            continue
                                        if j == m:
                                            f = we * z[l, j] if j2 == m else wlj
                                        elif j2 == m:
                                            f = wd * z[l, j]
                                        else:
                                            f = wlj
                                        accS[q, l, j, l2, j2] += f * z[l2, j2]
        if with_second:
            for q in range(S):
                for l in range(L):
                    for j in range(depth):
                        for l2 in range(l, L):
                            for j2 in range(depth):
                                if l2 == l and j2 < j:
                                    continue
                                accS[q, l2, j2, l, j] = accS[q, l, j, l2, j2]
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
def unlearned_inner_moments(
    a, omega_last, v_last, Binv_sh, logdet_sh, ZU, W, lognorm, mean_last, layer_second
):
    """Fibre moments when the first ``depth-1`` layers are unlearned (``ω_U = 0``,
    ``V_UU = I``, no correlation with the last layer) and the last layer has
    ``ω_last`` (per observation) and variance ``v_last``: Q = 0 (``ω = 0, v = 1``) and the
    staircase of the last layer (THEORY §5).  The mixers of the shared inner nodes are
    precomputed.  Cross-layer moments vanish by the per-layer sign symmetry of the
    unlearned layers, so only ``depth`` blocks ``(L, L)`` are accumulated.

    Two passes per observation: the first stores ``x_i = B_i^{-1} a`` and
    ``log w_{i,±} = -|±x_i - ω_last|²/(2 v_last) - log|det B_i|`` and takes their maximum
    ``M``; the second sums ``e^{log w - M}`` (log-sum-exp without the rescaling branch of
    a running maximum, BENCHMARKS.md "Default table").  At ``ω_last = 0`` both signs
    have the same weight (``|x|² = |-x|²``): one ``exp`` per pair and no mean terms (the
    mean is exactly 0, as the signed sum gives).

    a (K, L); omega_last (K, L); Binv_sh (n, L, L); logdet_sh (n,); ZU (n, L, m);
    W (S, n).  Outputs: lognorm (S, K); mean_last (S, K, L); layer_second (S, K, m+1, L, L).
    """
    K, L = a.shape
    n, _, m = ZU.shape
    S = W.shape[0]
    const = -0.5 * L * math.log(2.0 * math.pi * v_last)
    inv2v = 0.5 / v_last
    for k in prange(K):
        xs = np.empty((n, L))
        lwp = np.empty(n)
        lwm = np.empty(n)
        accZ = np.zeros(S)
        accM = np.zeros((S, L))
        acc = np.zeros((S, m + 1, L, L))
        # ω_last = 0 (Q = 0): both signs have one weight, e = 2 e^{lw - M}, d = 0 exactly
        signed = False
        for r in range(L):
            if omega_last[k, r] != 0.0:
                signed = True
        lmax = -np.inf
        for i in range(n):
            if logdet_sh[i] == -np.inf:
                lwp[i] = -np.inf
                lwm[i] = -np.inf
                continue
            qp = 0.0
            qm = 0.0
            for r in range(L):
                t = 0.0
                for c in range(L):
                    t += Binv_sh[i, r, c] * a[k, c]
                xs[i, r] = t
                dp = t - omega_last[k, r]
                dm = t + omega_last[k, r]
                qp += dp * dp
                qm += dm * dm
            p = -inv2v * qp - logdet_sh[i]
            q = -inv2v * qm - logdet_sh[i]
            lwp[i] = p
            lwm[i] = q
            if p > lmax:
                lmax = p
            if q > lmax:
                lmax = q
        for i in range(n):
            if lwp[i] == -np.inf and lwm[i] == -np.inf:
                continue
            if signed:
                ep = math.exp(lwp[i] - lmax)
                em = math.exp(lwm[i] - lmax)
                e = ep + em
                d = ep - em
            else:
                e = 2.0 * math.exp(lwp[i] - lmax)
                d = 0.0
            for s in range(S):
                ws = W[s, i]
                if ws == 0.0:
                    continue
                we = ws * e
                accZ[s] += we
                if signed:
                    wd = ws * d
                    for r in range(L):
                        accM[s, r] += wd * xs[i, r]
                for j in range(m):
                    for r in range(L):
                        wr = we * ZU[i, r, j]
                        for c in range(r, L):
                            acc[s, j, r, c] += wr * ZU[i, c, j]
                for r in range(L):
                    wr = we * xs[i, r]
                    for c in range(r, L):
                        acc[s, m, r, c] += wr * xs[i, c]
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


@njit(cache=True)
def _sigmoid_select(x):
    """:func:`_sigmoid` with the branch a select (bit-for-bit the same value):
    ``e = exp(-|x|)``, ``(1 if x >= 0 else e) / (1 + e)``; random signs mispredict a
    branch half the time."""
    e = math.exp(-abs(x))
    return (1.0 if x >= 0 else e) / (1.0 + e)


FIBRE_MEANS, FIBRE_LAYER_BLOCKS, FIBRE_FULL = 0, 1, 2  # modes of fibre_moments_depth3


@njit(cache=True)
def _depth3_sums(Z, E, D, w, mode, out):
    """The folded sums of :func:`fibre_moments_depth3` over the nodes (``z = (u_00, u_01,
    x_0, u_10, u_11, x_1)`` in the rows of ``Z``; a multiple of ``LANES`` of them), in
    ``LANES`` partial sums added last (lane vectors, a fixed order; see ``LANES``):
    ``out[:7] = Σ (wE, wE z_0, wE z_1, wD z_2, wE z_3, wE z_4, wD z_5)``; then with
    ``FIBRE_LAYER_BLOCKS`` ``out[7:16]``, per layer ``j`` the sums of ``wE z_{0j}²``,
    ``wE z_{0j} z_{1j}``, ``wE z_{1j}²``; with ``FIBRE_FULL`` ``out[7:28]``, the upper
    triangle of ``Σ w z zᵀ`` row by row (one odd x and one even entry weighed by D, the
    others by E)."""
    Z0, Z1, Z2, Z3, Z4, Z5 = Z[0], Z[1], Z[2], Z[3], Z[4], Z[5]
    s0 = s1 = s2 = s3 = s4 = s5 = s6 = s7 = s8 = s9 = lanes_zero()
    s10 = s11 = s12 = s13 = s14 = s15 = s16 = s17 = s18 = s19 = lanes_zero()
    s20 = s21 = s22 = s23 = s24 = s25 = s26 = s27 = lanes_zero()
    for b in range(0, E.size, LANES):
        wb = lanes_load(w, b)
        we = wb * lanes_load(E, b)
        wd = wb * lanes_load(D, b)
        z0 = lanes_load(Z0, b)
        z1 = lanes_load(Z1, b)
        z2 = lanes_load(Z2, b)
        z3 = lanes_load(Z3, b)
        z4 = lanes_load(Z4, b)
        z5 = lanes_load(Z5, b)
        s0 = s0 + we
        s1 = s1 + we * z0
        s2 = s2 + we * z1
        s3 = s3 + wd * z2
        s4 = s4 + we * z3
        s5 = s5 + we * z4
        s6 = s6 + wd * z5
        if mode == FIBRE_LAYER_BLOCKS:
            s7 = s7 + we * z0 * z0
            s8 = s8 + we * z0 * z3
            s9 = s9 + we * z3 * z3
            s10 = s10 + we * z1 * z1
            s11 = s11 + we * z1 * z4
            s12 = s12 + we * z4 * z4
            s13 = s13 + we * z2 * z2
            s14 = s14 + we * z2 * z5
            s15 = s15 + we * z5 * z5
        elif mode == FIBRE_FULL:
            s7 = s7 + we * z0 * z0
            s8 = s8 + we * z0 * z1
            s9 = s9 + wd * z0 * z2
            s10 = s10 + we * z0 * z3
            s11 = s11 + we * z0 * z4
            s12 = s12 + wd * z0 * z5
            s13 = s13 + we * z1 * z1
            s14 = s14 + wd * z1 * z2
            s15 = s15 + we * z1 * z3
            s16 = s16 + we * z1 * z4
            s17 = s17 + wd * z1 * z5
            s18 = s18 + we * z2 * z2
            s19 = s19 + wd * z2 * z3
            s20 = s20 + wd * z2 * z4
            s21 = s21 + we * z2 * z5
            s22 = s22 + we * z3 * z3
            s23 = s23 + we * z3 * z4
            s24 = s24 + wd * z3 * z5
            s25 = s25 + we * z4 * z4
            s26 = s26 + wd * z4 * z5
            s27 = s27 + we * z5 * z5
    sums = (s0, s1, s2, s3, s4, s5, s6, s7, s8, s9, s10, s11, s12, s13, s14, s15, s16, s17,
            s18, s19, s20, s21, s22, s23, s24, s25, s26, s27)
    total = 28 if mode == FIBRE_FULL else 16 if mode == FIBRE_LAYER_BLOCKS else 7
    for t in range(total):
        out[t] = lanes_total(sums[t])


@njit(cache=True)
def _vexp_rows(Y, r0, r1):
    """``Y[r] = e^{Y[r]}`` in place for rows ``r0 <= r < r1`` (one vectorised loop)."""
    for r in range(r0, r1):
        row = Y[r]
        for i in range(row.size):
            row[i] = vexp(row[i])


@njit(parallel=True, cache=True)
def fibre_moments_depth3(a, omega, T, W, sd, v_last, skip, beta, lognorm, mean, second, mode):
    """:func:`fibre_moments_two_tokens` written out for depth 3 (L = 2, diagonal ``V``),
    vectorised, with only the sums ``mode`` asks for: ``FIBRE_MEANS`` (the means),
    ``FIBRE_LAYER_BLOCKS`` (the means and the per-layer blocks ``E[z_{l,j} z_{l',j}]``, what
    the staircase's ``λ_j`` needs; the other entries of ``second`` are left as they are)
    or ``FIBRE_FULL`` (all of ``second``).

    Per node ``u_j = ω_{·,j} + sd_j t_j`` (j = 0, 1), ``B = C_2 C_1`` with
    ``C_j = softmax(β s_j s_jᵀ) + cI`` (two sigmoids ``1 / (1 + e^{β s_l (s_l' - s_l)})``),
    ``s_1 = u_0``, ``s_2 = C_1 u_1``, ``x = B^{-1} a`` (adjugate) and

        w_± = |det B|^{-1} exp(-|±x - ω_2|² / (2 v_last) - M),

    ``M`` the largest exponent over the nodes and both signs (``|det B|^{-1}`` a factor
    outside the shift: ``det B >= (c (1 + c))²`` where ``c > 0``).  As the depth-2 kernels:
    one loop over the nodes (padded to ``LANES``) for the exponents, their maximum, the
    exponentials (:func:`vexp`), then per weight set the folded sums
    (:func:`_depth3_sums`).  A node where ``det B = 0`` has weight 0.
    """
    K = a.shape[0]
    n = T.shape[0]
    const = -math.log(2.0 * math.pi * v_last)
    inv2v = 0.5 / v_last
    npad = _padded_size(n)
    T0 = np.zeros((4, npad))  # t for (token 0, layer 0), (1, 0), (0, 1), (1, 1)
    for i in range(n):
        T0[0, i] = sd[0] * T[i, 0, 0]
        T0[1, i] = sd[0] * T[i, 1, 0]
        T0[2, i] = sd[1] * T[i, 0, 1]
        T0[3, i] = sd[1] * T[i, 1, 1]
    Wp = _padded_weights(W, npad)
    for k in prange(K):
        Z = np.empty((6, npad))  # u_00, u_01, x_0, u_10, u_11, x_1 (token, layer)
        Y = np.empty((4, npad))  # the exponentials of both layers' sigmoid arguments
        LP = np.empty(npad)
        LM = np.empty(npad)
        AI = np.empty(npad)
        acc = np.empty(28)
        a0 = a[k, 0]
        a1 = a[k, 1]
        w00 = omega[k, 0, 0]
        w10 = omega[k, 1, 0]
        w01 = omega[k, 0, 1]
        w11 = omega[k, 1, 1]
        m0 = omega[k, 0, 2]
        m1 = omega[k, 1, 2]
        # in stages, the exponentials in one loop each (vexp inlined at few places: the
        # vectoriser's work, the kernel's compile time, grows with every copy)
        for i in range(npad):
            u0 = w00 + T0[0, i]
            u1 = w10 + T0[1, i]
            Z[0, i] = u0
            Z[3, i] = u1
            Z[1, i] = w01 + T0[2, i]
            Z[4, i] = w11 + T0[3, i]
            Y[0, i] = beta * u0 * (u1 - u0)
            Y[1, i] = beta * u1 * (u0 - u1)
        _vexp_rows(Y, 0, 2)
        for i in range(npad):
            p0 = 1.0 / (1.0 + Y[0, i])
            p1 = 1.0 / (1.0 + Y[1, i])
            v0 = Z[1, i]
            v1 = Z[4, i]
            s0 = (p0 + skip) * v0 + (1.0 - p0) * v1
            s1 = (1.0 - p1) * v0 + (p1 + skip) * v1
            Y[0, i] = p0
            Y[1, i] = p1
            Y[2, i] = beta * s0 * (s1 - s0)
            Y[3, i] = beta * s1 * (s0 - s1)
        _vexp_rows(Y, 2, 4)
        for i in range(npad):
            p0 = Y[0, i]
            p1 = Y[1, i]
            c00 = p0 + skip
            c01 = 1.0 - p0
            c10 = 1.0 - p1
            c11 = p1 + skip
            q0 = 1.0 / (1.0 + Y[2, i])
            q1 = 1.0 / (1.0 + Y[3, i])
            d00 = q0 + skip
            d01 = 1.0 - q0
            d10 = 1.0 - q1
            d11 = q1 + skip
            b00 = d00 * c00 + d01 * c10
            b01 = d00 * c01 + d01 * c11
            b10 = d10 * c00 + d11 * c10
            b11 = d10 * c01 + d11 * c11
            det = b00 * b11 - b01 * b10
            ok = det != 0.0 and i < n
            inv = 1.0 / det if ok else 0.0
            x0 = (b11 * inv) * a0 + (-b01 * inv) * a1
            x1 = (-b10 * inv) * a0 + (b00 * inv) * a1
            Z[2, i] = x0
            Z[5, i] = x1
            AI[i] = abs(inv)
            dp0 = x0 - m0
            dp1 = x1 - m1
            dm0 = x0 + m0
            dm1 = x1 + m1
            LP[i] = -inv2v * (dp0 * dp0 + dp1 * dp1) if ok else -np.inf
            LM[i] = -inv2v * (dm0 * dm0 + dm1 * dm1) if ok else -np.inf
        lmax = _lane_max(LP, LM)
        if lmax > -np.inf:
            for i in range(npad):
                Y[0, i] = LP[i] - lmax
                Y[1, i] = LM[i] - lmax
            _vexp_rows(Y, 0, 2)
            for i in range(npad):
                ep = AI[i] * Y[0, i]
                em = AI[i] * Y[1, i]
                LP[i] = ep + em  # E
                LM[i] = ep - em  # D
        for q in range(Wp.shape[0]):
            if lmax == -np.inf:
                acc[0] = 0.0
            else:
                _depth3_sums(Z, LP, LM, Wp[q], mode, acc)
            z = acc[0]
            if not z > 0.0:
                lognorm[q, k] = -np.inf
                for r in range(6):
                    mean[q, k, r // 3, r % 3] = np.nan
                    for c in range(6):
                        second[q, k, r // 3, r % 3, c // 3, c % 3] = np.nan
                continue
            lognorm[q, k] = math.log(z) + lmax + const
            inv = 1.0 / z
            for r in range(6):
                mean[q, k, r // 3, r % 3] = acc[1 + r] * inv
            if mode == FIBRE_LAYER_BLOCKS:
                for j in range(3):
                    v00 = acc[7 + 3 * j] * inv
                    v01 = acc[8 + 3 * j] * inv
                    second[q, k, 0, j, 0, j] = v00
                    second[q, k, 0, j, 1, j] = v01
                    second[q, k, 1, j, 0, j] = v01
                    second[q, k, 1, j, 1, j] = acc[9 + 3 * j] * inv
            elif mode == FIBRE_FULL:
                t = 7
                for r in range(6):
                    for c in range(r, 6):
                        v = acc[t] * inv
                        t += 1
                        second[q, k, r // 3, r % 3, c // 3, c % 3] = v
                        second[q, k, c // 3, c % 3, r // 3, r % 3] = v


@njit(cache=True)
def _unlearned_sums(w, E, D, X0, X1, T0, T1, R0, R1, signed, out):
    """The sums of :func:`unlearned_moments_depth3` on one weight set ``w`` over nodes
    padded to a multiple of ``LANES`` (lane vectors, a fixed order; see ``LANES``):
    ``out = Σ (wE, wD x_0, wD x_1, wE t_0², wE t_0 t_1, wE t_1², wE r_0², wE r_0 r_1,
    wE r_1², wE x_0², wE x_0 x_1, wE x_1²)``, the two ``wD`` sums only if ``signed``
    (else 0)."""
    s0 = s1 = s2 = s3 = s4 = s5 = s6 = s7 = s8 = s9 = s10 = s11 = lanes_zero()
    for b in range(0, E.size, LANES):
        wb = lanes_load(w, b)
        we = wb * lanes_load(E, b)
        t0 = lanes_load(T0, b)
        t1 = lanes_load(T1, b)
        r0 = lanes_load(R0, b)
        r1 = lanes_load(R1, b)
        x0 = lanes_load(X0, b)
        x1 = lanes_load(X1, b)
        s0 = s0 + we
        e0 = we * t0
        s3 = s3 + e0 * t0
        s4 = s4 + e0 * t1
        s5 = s5 + (we * t1) * t1
        e0 = we * r0
        s6 = s6 + e0 * r0
        s7 = s7 + e0 * r1
        s8 = s8 + (we * r1) * r1
        e0 = we * x0
        s9 = s9 + e0 * x0
        s10 = s10 + e0 * x1
        s11 = s11 + (we * x1) * x1
        if signed:
            wd = wb * lanes_load(D, b)
            s1 = s1 + wd * x0
            s2 = s2 + wd * x1
    sums = (s0, s1, s2, s3, s4, s5, s6, s7, s8, s9, s10, s11)
    for r in range(12):
        out[r] = lanes_total(sums[r])


@njit(parallel=True, cache=True)
def unlearned_moments_depth3(a, omega_last, v_last, Binv_sh, logdet_sh, ZU, W, lognorm,
                             mean_last, layer_second):
    """:func:`unlearned_inner_moments` written out for depth 3, L = 2, vectorised: per pair
    ``x = B_i^{-1} a`` and ``log w_± = -|±x - ω_last|²/(2 v_last) - log|det B_i|`` (one loop
    over the nodes, padded to ``LANES``), their maximum ``M`` (lane maxima), ``E_i = e_+ +
    e_-``, ``D_i = e_+ - e_-`` by :func:`vexp` once for all weight sets (at ``ω_last = 0``:
    ``E_i = 2 e^{log w_+ - M}``, one exp, the mean exactly 0); then per weight set the sums
    of ``W E``, ``W D x`` and the three layer blocks in lane sums
    (:func:`_unlearned_sums`).  Nodes with a singular mixer must be dropped by the caller.
    Same arguments and outputs as :func:`unlearned_inner_moments`.
    """
    K = a.shape[0]
    n = ZU.shape[0]
    S = W.shape[0]
    npad = _padded_size(n)
    const = -math.log(2.0 * math.pi * v_last)
    inv2v = 0.5 / v_last
    # the nodes as padded rows: first layer t, second layer r (tokens 0, 1), B^{-1}, log|det B|
    N = np.zeros((9, npad))
    for i in range(n):
        N[0, i] = ZU[i, 0, 0]
        N[1, i] = ZU[i, 1, 0]
        N[2, i] = ZU[i, 0, 1]
        N[3, i] = ZU[i, 1, 1]
        N[4, i] = Binv_sh[i, 0, 0]
        N[5, i] = Binv_sh[i, 0, 1]
        N[6, i] = Binv_sh[i, 1, 0]
        N[7, i] = Binv_sh[i, 1, 1]
        N[8, i] = logdet_sh[i]
    Wp = _padded_weights(W, npad)
    for k in prange(K):
        Y = np.empty((6, npad))  # x_0, x_1, log w_+, log w_-, then E, D
        out = np.empty(12)
        a0 = a[k, 0]
        a1 = a[k, 1]
        o0 = omega_last[k, 0]
        o1 = omega_last[k, 1]
        signed = o0 != 0.0 or o1 != 0.0
        for i in range(npad):
            x0 = N[4, i] * a0 + N[5, i] * a1
            x1 = N[6, i] * a0 + N[7, i] * a1
            Y[0, i] = x0
            Y[1, i] = x1
            dp0 = x0 - o0
            dp1 = x1 - o1
            dm0 = x0 + o0
            dm1 = x1 + o1
            real = i < n
            Y[2, i] = -inv2v * (dp0 * dp0 + dp1 * dp1) - N[8, i] if real else -np.inf
            Y[3, i] = -inv2v * (dm0 * dm0 + dm1 * dm1) - N[8, i] if real else -np.inf
        lmax = _lane_max(Y[2], Y[3])
        if signed:  # loops of independent exponentials: vectorised (vexp)
            for i in range(npad):
                ep = vexp(Y[2, i] - lmax)
                em = vexp(Y[3, i] - lmax)
                Y[4, i] = ep + em
                Y[5, i] = ep - em
        else:
            for i in range(npad):
                Y[4, i] = 2.0 * vexp(Y[2, i] - lmax)
        for s in range(S):
            _unlearned_sums(Wp[s], Y[4], Y[5], Y[0], Y[1], N[0], N[1], N[2], N[3], signed,
                            out)
            z = out[0]
            lognorm[s, k] = math.log(z) + lmax + const
            mean_last[s, k, 0] = out[1] / z
            mean_last[s, k, 1] = out[2] / z
            for j in range(3):
                layer_second[s, k, j, 0, 0] = out[3 + 3 * j] / z
                layer_second[s, k, j, 0, 1] = out[4 + 3 * j] / z
                layer_second[s, k, j, 1, 0] = out[4 + 3 * j] / z
                layer_second[s, k, j, 1, 1] = out[5 + 3 * j] / z


FORWARD_BLOCK = 512  # nodes of mean_forward_two_tokens staged at a time (16 KiB per thread)


@njit(inline="always", cache=True)
def _two_token_layer(b00, b01, b10, b11, u0, u1, skip, beta):
    """One layer of the two-token mixer: ``s = B u``, ``C = softmax(β s sᵀ) + cI`` (rows
    ``(p_r + c δ)``, ``p_0 = σ(β s_0 (s_0 - s_1))``), returns ``C B`` as
    ``(b00, b01, b10, b11)``."""
    s0 = b00 * u0 + b01 * u1
    s1 = b10 * u0 + b11 * u1
    p0 = _sigmoid_select(-(beta * s0 * (s1 - s0)))
    p1 = _sigmoid_select(-(beta * s1 * (s0 - s1)))
    c00 = p0 + skip
    c01 = 1.0 - p0
    c10 = 1.0 - p1
    c11 = p1 + skip
    return (c00 * b00 + c01 * b10, c00 * b01 + c01 * b11,
            c10 * b00 + c11 * b10, c10 * b01 + c11 * b11)


@njit(inline="always", cache=True)
def _two_token_head_mixer(omega, heads, k, g, skip, beta):
    """``B = C_m ... C_1`` (2 × 2, as a tuple ``b00, b01, b10, b11``) of the first
    ``m = depth-1`` layers at ``u = ω_k + heads[g]``, ``C_j = softmax(β s_j s_jᵀ) + cI``."""
    b00 = 1.0
    b01 = 0.0
    b10 = 0.0
    b11 = 1.0
    for j in range(heads.shape[2]):
        b00, b01, b10, b11 = _two_token_layer(b00, b01, b10, b11, omega[k, 0, j] + heads[g, 0, j],
                                              omega[k, 1, j] + heads[g, 1, j], skip, beta)
    return b00, b01, b10, b11


@njit(inline="always", cache=True)
def _logit_gaps(last0, last1, w0, w1, b00, b01, b10, b11, beta, d0, d1):
    """Per node of one head: ``s = B (ω_last + last)``, ``d_r = β s_r s_0 - β s_r s_1``
    (the gap between row ``r``'s two logits); one loop without a reduction."""
    for q in range(last0.size):
        z0 = w0 + last0[q]
        z1 = w1 + last1[q]
        s0 = b00 * z0 + b01 * z1
        s1 = b10 * z0 + b11 * z1
        d0[q] = beta * s0 * s0 - beta * s0 * s1
        d1[q] = beta * s1 * s0 - beta * s1 * s1


@njit(inline="always", cache=True)
def _softmax_parts(d, w, e, r):
    """``e = exp(-|d|)`` (:func:`vexp`) and ``r = w / (1 + e)``: a two-logit softmax row
    weighted by ``w`` is ``r`` on its larger logit and ``r e`` on the other."""
    for q in range(d.size):
        x = vexp(-abs(d[q]))
        e[q] = x
        r[q] = w[q] / (1.0 + x)


@njit(parallel=True, cache=True)
def mean_forward_two_tokens(omega, heads, starts, lasts, weights, skip, beta, out):
    """:func:`mean_forward` written out for L = 2 (any depth), on nodes grouped by their
    first ``depth-1`` layers' part (the "head"): head ``g``'s nodes are ``starts[g] <= i <
    starts[g+1]``, with offsets ``(heads[g], lasts[:, i])``.  A tensor rule has few heads
    (6^4 of 6^6 Gauss–Hermite nodes at depth 3), so each mixer ``B`` is computed once per
    head and observation.  Then, in blocks of :data:`FORWARD_BLOCK` nodes, three loops: the
    logit gaps ``d_r`` of both output rows (vectorised within a head), ``e_r = exp(-|d_r|)``
    and ``w / (1 + e_r)`` (vectorised, :func:`vexp`), and the four sums in node order,
    ``y_{r,0} += w / (1 + e_r)`` if ``d_r >= 0`` else ``e_r w / (1 + e_r)`` (``y_{r,1}`` the
    other), a fixed order on every CPU.

    omega (K, 2, depth); heads (G, 2, depth-1); starts (G+1,) ints; lasts (2, M) (the last
    layer's offsets of tokens 0 and 1); weights (M,) in the same node order; out (K, 2, 2).
    """
    K = omega.shape[0]
    m = omega.shape[2] - 1
    M = lasts.shape[1]
    last0 = lasts[0]
    last1 = lasts[1]
    for k in prange(K):
        w0 = omega[k, 0, m]
        w1 = omega[k, 1, m]
        buf = np.empty((6, FORWARD_BLOCK))
        d0, d1, e0, e1, r0, r1 = buf[0], buf[1], buf[2], buf[3], buf[4], buf[5]
        y00 = 0.0
        y01 = 0.0
        y10 = 0.0
        y11 = 0.0
        g = -1
        b00, b01, b10, b11 = 1.0, 0.0, 0.0, 1.0
        for c in range(0, M, FORWARD_BLOCK):
            ce = min(c + FORWARD_BLOCK, M)
            i = c
            while i < ce:  # the heads this block meets, each from its first node here
                g_prev = g
                while starts[g + 1] <= i:
                    g += 1
                if g != g_prev:
                    b00, b01, b10, b11 = _two_token_head_mixer(omega, heads, k, g, skip, beta)
                e = min(starts[g + 1], ce)
                _logit_gaps(last0[i:e], last1[i:e], w0, w1, b00, b01, b10, b11, beta,
                            d0[i - c:e - c], d1[i - c:e - c])
                i = e
            n = ce - c
            w = weights[c:ce]
            _softmax_parts(d0[:n], w, e0[:n], r0[:n])
            _softmax_parts(d1[:n], w, e1[:n], r1[:n])
            for q in range(n):
                r = r0[q]
                re = r * e0[q]
                top = d0[q] >= 0.0
                y00 += r if top else re
                y01 += re if top else r
                r = r1[q]
                re = r * e1[q]
                top = d1[q] >= 0.0
                y10 += r if top else re
                y11 += re if top else r
        out[k, 0, 0] = y00
        out[k, 0, 1] = y01
        out[k, 1, 0] = y10
        out[k, 1, 1] = y11


@njit(parallel=True, cache=True)
def diagonal_fibre_means(
    a, omega, ZU, Binv_sh, logdet_sh, node_base, inv_vU, v_last, W, lognorm, mean, sq
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
    Two passes per observation: ``log w_±`` and their maximum ``M``, then the sums of
    ``W e^{log w - M}`` (no rescaling branch).

    a (K, L); omega (K, L, depth); ZU (n, L, m); Binv_sh (n, L, L); logdet_sh, node_base
    (n,); inv_vU (m,); W (S, n).  Outputs: lognorm (S, K), mean (S, K, L, depth) and, when
    ``sq`` has the shape (S, K, L, depth) (else pass a (0, 0, 0, 0) array), the second
    moments ``E[z_lj²]`` of every entry (even under the sign pair: weighed by ``e_+ + e_-``).
    """
    K, L = a.shape
    n, _, m = ZU.shape
    squares = sq.shape[0] > 0
    depth = m + 1
    S = W.shape[0]
    logv = 0.0
    for j in range(m):
        logv -= math.log(inv_vU[j])
    const0 = -0.5 * L * logv - 0.5 * L * math.log(2.0 * math.pi * v_last)
    inv2v = 0.5 / v_last
    for k in prange(K):
        X = np.empty((n, L))
        LW = np.empty((n, 2))
        accZ = np.zeros(S)
        accM = np.zeros((S, L, depth))
        accQ = np.zeros((S, L, depth) if squares else (1, 1, 1))
        ow = np.empty((L, m))
        const = const0
        for l in range(L):
            for j in range(m):
                ow[l, j] = omega[k, l, j] * inv_vU[j]
                const -= 0.5 * omega[k, l, j] * ow[l, j]
        lmax = -np.inf
        for i in range(n):
            if logdet_sh[i] == -np.inf:
                LW[i, 0] = -np.inf
                LW[i, 1] = -np.inf
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
                X[i, r] = t
                dp = t - omega[k, r, m]
                dm = t + omega[k, r, m]
                qp += dp * dp
                qm += dm * dm
            lwp = lb - inv2v * qp
            lwm = lb - inv2v * qm
            LW[i, 0] = lwp
            LW[i, 1] = lwm
            if lwp > lmax:
                lmax = lwp
            if lwm > lmax:
                lmax = lwm
        if lmax > -np.inf:
            for i in range(n):
                ep = math.exp(LW[i, 0] - lmax)
                em = math.exp(LW[i, 1] - lmax)
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
                        accM[s, l, m] += wd * X[i, l]
                    if squares:
                        for l in range(L):
                            for j in range(m):
                                accQ[s, l, j] += we * ZU[i, l, j] * ZU[i, l, j]
                            accQ[s, l, m] += we * X[i, l] * X[i, l]
        for s in range(S):
            if accZ[s] > 0.0:
                lognorm[s, k] = math.log(accZ[s]) + lmax + const
                inv = 1.0 / accZ[s]
                for l in range(L):
                    for j in range(depth):
                        mean[s, k, l, j] = accM[s, l, j] * inv
                        if squares:
                            sq[s, k, l, j] = accQ[s, l, j] * inv
            else:
                lognorm[s, k] = -np.inf
                for l in range(L):
                    for j in range(depth):
                        mean[s, k, l, j] = np.nan
                        if squares:
                            sq[s, k, l, j] = np.nan


@njit(parallel=True, cache=True)
def diagonal_fibre_means_two_tokens(
    a, omega, ZU, Binv_sh, logdet_sh, node_base, inv_vU, v_last, W, lognorm, mean, sq
):
    """:func:`diagonal_fibre_means` written out for depth 2 and L = 2 (the shared-node
    kernel of state evolution at depth 2), the same arguments and formulas:

        w_± = exp(node_base_i + Σ_l t_l ω_l0 / v_0 - |±B_i^{-1} a - ω_1|² / (2 v_last) - M)

    in three vectorised loops per observation over the nodes (padded to ``LANES``): the
    exponents, their maximum ``M``, the exponentials (:func:`vexp`); then the sums
    (:func:`_two_token_moment_sums`).  Nodes with ``log|det B_i| = -inf`` have weight 0.
    """
    K = a.shape[0]
    n = ZU.shape[0]
    squares = sq.shape[0] > 0
    iv = inv_vU[0]
    const0 = math.log(iv) - math.log(2.0 * math.pi * v_last)
    inv2v = 0.5 / v_last
    npad = _padded_size(n)
    U0 = np.zeros(npad)
    U1 = np.zeros(npad)
    base = np.full(npad, -np.inf)
    P00 = np.zeros(npad)
    P01 = np.zeros(npad)
    P10 = np.zeros(npad)
    P11 = np.zeros(npad)
    for i in range(n):
        U0[i] = ZU[i, 0, 0]
        U1[i] = ZU[i, 1, 0]
        if logdet_sh[i] != -np.inf:
            base[i] = node_base[i]
            P00[i] = Binv_sh[i, 0, 0]
            P01[i] = Binv_sh[i, 0, 1]
            P10[i] = Binv_sh[i, 1, 0]
            P11[i] = Binv_sh[i, 1, 1]
    Wp = _padded_weights(W, npad)
    for k in prange(K):
        X0 = np.empty(npad)
        X1 = np.empty(npad)
        LP = np.empty(npad)
        LM = np.empty(npad)
        tot = np.empty(15)
        a0 = a[k, 0]
        a1 = a[k, 1]
        o0 = omega[k, 0, 0] * iv
        o1 = omega[k, 1, 0] * iv
        const = const0 - 0.5 * omega[k, 0, 0] * o0 - 0.5 * omega[k, 1, 0] * o1
        m0 = omega[k, 0, 1]
        m1 = omega[k, 1, 1]
        for i in range(npad):
            lb = base[i] + U0[i] * o0 + U1[i] * o1
            x0 = P00[i] * a0 + P01[i] * a1
            x1 = P10[i] * a0 + P11[i] * a1
            X0[i] = x0
            X1[i] = x1
            dp0 = x0 - m0
            dp1 = x1 - m1
            dm0 = x0 + m0
            dm1 = x1 + m1
            LP[i] = lb - inv2v * (dp0 * dp0 + dp1 * dp1)
            LM[i] = lb - inv2v * (dm0 * dm0 + dm1 * dm1)
        lmax = _lane_max(LP, LM)
        if lmax > -np.inf:
            for i in range(npad):
                LP[i] = vexp(LP[i] - lmax)
                LM[i] = vexp(LM[i] - lmax)
        _write_weight_sets(k, LP, LM, lmax, const, Wp, U0, U1, X0, X1, tot, squares, lognorm,
                           mean, sq)


@njit(parallel=True, cache=True)
def mean_forward(omega, offsets, weights, skip, beta, out):
    """``out[k] = Σ_i w_i y(ω_k + offset_i)`` with ``y = softmax_rows(β s sᵀ)``,
    ``s = B(z_U) z_last`` (rank 1): the Bayes prediction on an inner rule.

    omega (K, L, depth); offsets (M, L, depth); weights (M,); out (K, L, L).
    """
    K, L, depth = omega.shape
    M = offsets.shape[0]
    m = depth - 1
    for k in prange(K):
        zU = np.empty((L, m))
        B = np.empty((L, L))
        A = np.empty((L, L))
        tmp = np.empty((L, L))
        sv = np.empty(L)
        s = np.empty(L)
        row = np.empty(L)
        acc = np.zeros((L, L))
        for i in range(M):
            for l in range(L):
                for j in range(m):
                    zU[l, j] = omega[k, l, j] + offsets[i, l, j]
            mixer_into(zU, skip, beta, B, A, sv, tmp)
            for r in range(L):
                t = 0.0
                for c in range(L):
                    t += B[r, c] * (omega[k, c, m] + offsets[i, c, m])
                s[r] = t
            w = weights[i]
            for r in range(L):
                mx = -np.inf
                for c in range(L):
                    v = beta * s[r] * s[c]
                    row[c] = v
                    if v > mx:
                        mx = v
                tot = 0.0
                for c in range(L):
                    row[c] = math.exp(row[c] - mx)
                    tot += row[c]
                for c in range(L):
                    acc[r, c] += w * row[c] / tot
        for r in range(L):
            for c in range(L):
                out[k, r, c] = acc[r, c]


@njit(cache=True)
def _add_folded_node(W, i, e, d, z, odd, with_second, accZ, accM, accS):
    """Add node ``i`` (entries ``z (P,)``, sign-pair weights ``e = e_+ + e_-``,
    ``d = e_+ - e_-``) to every weight set's sums: even entries (``odd = 0``) by ``e``, odd
    ones by ``d``; second moments ``z_r z_c`` (upper triangle) by ``e`` when ``r``, ``c``
    have the same parity, else by ``d``."""
    P = z.shape[0]
    for q in range(W.shape[0]):
        we = W[q, i] * e
        if we == 0.0:
            continue
        wd = W[q, i] * d
        accZ[q] += we
        for r in range(P):
            w_r = wd if odd[r] == 1.0 else we
            accM[q, r] += w_r * z[r]
            if with_second:
                for c in range(r, P):
                    w_rc = wd if odd[r] != odd[c] else we
                    accS[q, r, c] += w_rc * z[r] * z[c]


@njit(cache=True)
def _write_folded(k, accZ, accM, accS, lmax, const, depth, with_second, lognorm, mean,
                  second):
    """Observation ``k``'s outputs from the sums of :func:`_add_folded_node`:
    ``lognorm = log Σ + lmax + const``, ``mean = Σ z / Σ``, ``second`` mirrored (NaN where the
    sum is 0)."""
    P = accM.shape[1]
    for q in range(accZ.shape[0]):
        if accZ[q] > 0.0:
            lognorm[q, k] = math.log(accZ[q]) + lmax + const
            inv = 1.0 / accZ[q]
            for r in range(P):
                mean[q, k, r // depth, r % depth] = accM[q, r] * inv
                if with_second:
                    for c in range(r, P):
                        v = accS[q, r, c] * inv
                        second[q, k, r // depth, r % depth, c // depth, c % depth] = v
                        second[q, k, c // depth, c % depth, r // depth, r % depth] = v
        else:
            lognorm[q, k] = -np.inf
            for r in range(P):
                mean[q, k, r // depth, r % depth] = np.nan
                for c in range(P):
                    second[q, k, r // depth, r % depth, c // depth, c % depth] = np.nan


@njit(parallel=True, cache=True)
def fibre_moments_two_tokens_general(
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
    """:func:`fibre_moments` written out for L = 2 and a general ``V`` (any depth): AMP's
    ``V = Ĉ``.  Per node ``z_U = ω_U + C t`` (``C = chol``, the Cholesky factor of
    ``V_UU``), the mixer ``B = Π_j (softmax(β s_j s_jᵀ) + cI)`` on 2×2 scalars (sigmoid
    rows), ``x = B^{-1} a`` by the adjugate and, with the last layer conditioned on the
    upstream ones (``cvec``: regression coefficients, ``vc``: conditional variance),

        log w_± = -Σ_l (±x_l - μ_l)² / (2 v_c) - log|det B|,   μ_l = ω_last,l + cvec·(C t_l);

    the sign pair folded, two passes per observation (``log w_±`` and their maximum ``M``,
    then the sums of ``W e^{log w - M}``).  ``e^{log w - M}`` is 0 below ``log w - M <
    -746`` (under the smallest subnormal), so it is not evaluated there; the first layer's
    mixer skips the product with ``B = I`` (exact), and at depth 2 the sums are written
    out.  Arguments, outputs and floating-point operations as :func:`fibre_moments` (the
    same sums in the same order: bitwise equal today, the tests check 1e-12); ``shared``:
    the mixers are ``Binv_sh, logdet_sh``.
    """
    K = a.shape[0]
    n = T.shape[0]
    m = T.shape[2]
    depth = m + 1
    S = W.shape[0]
    P = 2 * depth  # the entries (l, j) of z, flattened l * depth + j
    const = -math.log(2.0 * math.pi * vc)
    inv2v = 0.5 / vc
    # per node: C t and the regression part c·(C t_l) of the last layer's mean
    CT = np.empty((n, 2, m))
    MU = np.zeros((n, 2))
    for i in range(n):
        for l in range(2):
            mu = 0.0
            for j in range(m):
                acc = 0.0
                for q in range(j + 1):
                    acc += chol[j, q] * T[i, l, q]
                CT[i, l, j] = acc
                mu += cvec[j] * acc
            MU[i, l] = mu
    for k in prange(K):
        X = np.empty((n, 2))
        LW = np.empty((n, 2))
        z = np.empty(P)
        odd = np.zeros(P)
        odd[m] = 1.0
        odd[depth + m] = 1.0
        accZ = np.zeros(S)
        accM = np.zeros((S, P))
        accS = np.zeros((S, P, P) if with_second else (S, 1, 1))
        a0 = a[k, 0]
        a1 = a[k, 1]
        m0 = omega[k, 0, m]
        m1 = omega[k, 1, m]
        lmax = -np.inf
        for i in range(n):
            if shared:
                ld = logdet_sh[i]
                if ld == -np.inf:
                    LW[i, 0] = -np.inf
                    LW[i, 1] = -np.inf
                    continue
                x0 = Binv_sh[i, 0, 0] * a0 + Binv_sh[i, 0, 1] * a1
                x1 = Binv_sh[i, 1, 0] * a0 + Binv_sh[i, 1, 1] * a1
            else:
                b00, b01, b10, b11 = 1.0, 0.0, 0.0, 1.0
                for j in range(m):
                    b00, b01, b10, b11 = _two_token_layer(
                        b00, b01, b10, b11, omega[k, 0, j] + CT[i, 0, j],
                        omega[k, 1, j] + CT[i, 1, j], skip, beta)
                det = b00 * b11 - b01 * b10
                if det == 0.0:
                    LW[i, 0] = -np.inf
                    LW[i, 1] = -np.inf
                    continue
                inv = 1.0 / det
                x0 = (b11 * inv) * a0 + (-b01 * inv) * a1
                x1 = (-b10 * inv) * a0 + (b00 * inv) * a1
                ld = math.log(abs(det))
            X[i, 0] = x0
            X[i, 1] = x1
            mu0 = m0 + MU[i, 0]
            mu1 = m1 + MU[i, 1]
            dp0 = x0 - mu0
            dp1 = x1 - mu1
            dm0 = x0 + mu0
            dm1 = x1 + mu1
            lwp = -ld - inv2v * (dp0 * dp0 + dp1 * dp1)
            lwm = -ld - inv2v * (dm0 * dm0 + dm1 * dm1)
            LW[i, 0] = lwp
            LW[i, 1] = lwm
            if lwp > lmax:
                lmax = lwp
            if lwm > lmax:
                lmax = lwm
        if lmax > -np.inf:
            for i in range(n):
                tp = LW[i, 0] - lmax
                tm = LW[i, 1] - lmax
                if tp < -746.0 and tm < -746.0:
                    continue  # e^{t} == 0 for both signs
                ep = math.exp(tp)
                em = math.exp(tm)
                e = ep + em
                if e == 0.0:
                    continue
                d = ep - em
                if m == 1:
                    # depth 2: the sums written out, z = (u_0, x_0, u_1, x_1)
                    u0 = omega[k, 0, 0] + CT[i, 0, 0]
                    u1 = omega[k, 1, 0] + CT[i, 1, 0]
                    x0 = X[i, 0]
                    x1 = X[i, 1]
                    for q in range(S):
                        we = W[q, i] * e
                        if we == 0.0:
                            continue
                        wd = W[q, i] * d
                        eu0 = we * u0
                        du0 = wd * u0
                        ex0 = we * x0
                        dx0 = wd * x0
                        eu1 = we * u1
                        du1 = wd * u1
                        ex1 = we * x1
                        accZ[q] += we
                        accM[q, 0] += eu0
                        accM[q, 1] += dx0
                        accM[q, 2] += eu1
                        accM[q, 3] += wd * x1
                        if with_second:
                            accS[q, 0, 0] += eu0 * u0
                            accS[q, 0, 1] += du0 * x0
                            accS[q, 0, 2] += eu0 * u1
                            accS[q, 0, 3] += du0 * x1
                            accS[q, 1, 1] += ex0 * x0
                            accS[q, 1, 2] += dx0 * u1
                            accS[q, 1, 3] += ex0 * x1
                            accS[q, 2, 2] += eu1 * u1
                            accS[q, 2, 3] += du1 * x1
                            accS[q, 3, 3] += ex1 * x1
                    continue
                for l in range(2):
                    for j in range(m):
                        z[l * depth + j] = omega[k, l, j] + CT[i, l, j]
                    z[l * depth + m] = X[i, l]
                _add_folded_node(W, i, e, d, z, odd, with_second, accZ, accM, accS)
        _write_folded(np.int64(k), accZ, accM, accS, lmax, const, depth, with_second, lognorm, mean,
                      second)


@njit(parallel=True, cache=True)
def null_moments_two_tokens(a, v_last, Binv_sh, logdet_sh, ZU, W, lognorm, layer_second):
    """:func:`unlearned_inner_moments` at ``ω_last = 0`` for L = 2, depth 2 (the default
    table), written with scalar accumulators: per pair ``x = B_i^{-1} a`` and one
    ``exp(log w - M)``, ``log w = -|x|²/(2 v_last) - log|det B_i|`` (both signs equal, the
    mean is 0).  Nodes with a singular mixer must be dropped by the caller.

    a (K, 2); Binv_sh (n, 2, 2); logdet_sh (n,) finite; ZU (n, 2, 1); W (S, n).
    Outputs: lognorm (S, K); layer_second (S, K, 2, 2, 2).
    """
    K = a.shape[0]
    n = ZU.shape[0]
    S = W.shape[0]
    const = -math.log(2.0 * math.pi * v_last) + math.log(2.0)
    inv2v = 0.5 / v_last
    for k in prange(K):
        a0 = a[k, 0]
        a1 = a[k, 1]
        lmax = -np.inf
        for i in range(n):
            x0 = Binv_sh[i, 0, 0] * a0 + Binv_sh[i, 0, 1] * a1
            x1 = Binv_sh[i, 1, 0] * a0 + Binv_sh[i, 1, 1] * a1
            lw = -inv2v * (x0 * x0 + x1 * x1) - logdet_sh[i]
            lmax = max(lmax, lw)
        for s in range(S):
            z = 0.0
            u00 = 0.0
            u01 = 0.0
            u11 = 0.0
            x00 = 0.0
            x01 = 0.0
            x11 = 0.0
            for i in range(n):
                x0 = Binv_sh[i, 0, 0] * a0 + Binv_sh[i, 0, 1] * a1
                x1 = Binv_sh[i, 1, 0] * a0 + Binv_sh[i, 1, 1] * a1
                lw = -inv2v * (x0 * x0 + x1 * x1) - logdet_sh[i]
                e = W[s, i] * math.exp(lw - lmax)
                t0 = ZU[i, 0, 0]
                t1 = ZU[i, 1, 0]
                z += e
                u00 += e * t0 * t0
                u01 += e * t0 * t1
                u11 += e * t1 * t1
                x00 += e * x0 * x0
                x01 += e * x0 * x1
                x11 += e * x1 * x1
            lognorm[s, k] = math.log(z) + lmax + const
            inv = 1.0 / z
            layer_second[s, k, 0, 0, 0] = u00 * inv
            layer_second[s, k, 0, 0, 1] = u01 * inv
            layer_second[s, k, 0, 1, 0] = u01 * inv
            layer_second[s, k, 0, 1, 1] = u11 * inv
            layer_second[s, k, 1, 0, 0] = x00 * inv
            layer_second[s, k, 1, 0, 1] = x01 * inv
            layer_second[s, k, 1, 1, 0] = x01 * inv
            layer_second[s, k, 1, 1, 1] = x11 * inv


@njit(cache=True)
def _lane_max(LP, LM):
    """``max(LP ∪ LM)`` over two arrays whose length is a multiple of ``LANES``, in
    ``LANES`` partial maxima (lane vectors; ``max`` as numba's, the same bits as the
    scalar loop)."""
    mx = lanes_fill(-np.inf)
    for b in range(0, LP.size, LANES):
        mx = lanes_max(mx, lanes_max(lanes_load(LP, b), lanes_load(LM, b)))
    return lanes_largest(mx)


@njit(cache=True)
def _write_two_token_means(s, k, tot, shift, squares, lognorm, mean, sq):
    """``lognorm = log Σe + shift``, the means ``Σ(e u, d x) / Σe`` and, with ``squares``,
    the second moments ``Σ e (u², x²) / Σe`` of weight set ``s``, observation ``k``, from
    :func:`_two_token_moment_sums`' ``tot`` (entry ``r`` of ``z`` is ``(r // 2, r % 2)``;
    the squares are the diagonal of its second block); ``-inf`` and ``nan`` where every
    weight is 0."""
    if tot[0] > 0.0:
        lognorm[s, k] = math.log(tot[0]) + shift
        inv = 1.0 / tot[0]
        for r in range(4):
            mean[s, k, r // 2, r % 2] = tot[1 + r] * inv
            if squares:  # z_r² sits at 5 + (upper-triangle entries before row r) in tot
                sq[s, k, r // 2, r % 2] = tot[5 + r * 4 - r * (r - 1) // 2] * inv
    else:
        lognorm[s, k] = -np.inf
        for r in range(2):
            for c in range(2):
                mean[s, k, r, c] = np.nan
                if squares:
                    sq[s, k, r, c] = np.nan


@njit(inline="always", cache=True)
def _two_token_node(u0, u1, mu0, mu1, a0, a1, beta, skip, inv2v, valid):
    """One node of the depth-2, two-token kernels: ``B = softmax(β u uᵀ) + cI`` (two
    sigmoids ``1 / (1 + e^{β u_l (u_l' - u_l)})``), ``x = B^{-1} a`` by the adjugate;
    returns ``x_0, x_1, |det B|^{-1}`` and the exponents ``-|±x - μ|² / (2 v)`` (0 and
    ``-inf`` where ``det B = 0`` or the node is padding, ``valid`` False)."""
    p0 = 1.0 / (1.0 + vexp(beta * u0 * (u1 - u0)))
    p1 = 1.0 / (1.0 + vexp(beta * u1 * (u0 - u1)))
    b00 = p0 + skip
    b01 = 1.0 - p0
    b10 = 1.0 - p1
    b11 = p1 + skip
    det = b00 * b11 - b01 * b10
    ok = det != 0.0 and valid
    inv = 1.0 / det if ok else 0.0
    x0 = (b11 * inv) * a0 + (-b01 * inv) * a1
    x1 = (-b10 * inv) * a0 + (b00 * inv) * a1
    dp0 = x0 - mu0
    dp1 = x1 - mu1
    dm0 = x0 + mu0
    dm1 = x1 + mu1
    lp = -inv2v * (dp0 * dp0 + dp1 * dp1) if ok else -np.inf
    lm = -inv2v * (dm0 * dm0 + dm1 * dm1) if ok else -np.inf
    return x0, x1, abs(inv), lp, lm


@njit(cache=True)
def _padded_size(n):
    """``n`` rounded up to a multiple of ``LANES``."""
    return ((n + LANES - 1) // LANES) * LANES


@njit(cache=True)
def _write_weight_sets(k, EP, EM, lmax, const, Wp, U0, U1, X0, X1, tot, squares, lognorm,
                       mean, sq):
    """Observation ``k``'s outputs on every weight set (rows of the padded ``Wp``) from its
    weights ``EP``, ``EM`` (``e^{log w_± - lmax}``; none when ``lmax = -inf``)."""
    for s in range(Wp.shape[0]):
        if lmax > -np.inf:
            _two_token_moment_sums(EP, EM, Wp[s], U0, U1, X0, X1, squares, tot)
        else:
            tot[0] = 0.0
        _write_two_token_means(s, k, tot, lmax + const, squares, lognorm, mean, sq)


@njit(cache=True)
def _padded_weights(W, npad):
    """``W`` (S, n) padded with zero weights to ``npad`` columns.  Copied element by
    element: a slice assignment would compile numba's shape-mismatch message (string
    formatting, about 2 s on first use in a process)."""
    Wp = np.zeros((W.shape[0], npad))
    for s in range(W.shape[0]):
        for i in range(W.shape[1]):
            Wp[s, i] = W[s, i]
    return Wp


@njit(parallel=True, cache=True)
def fibre_means_two_tokens(a, omega, T, W, sd_first, v_last, skip, beta, lognorm, mean, sq):
    """:func:`fibre_moments` without second moments, written out for depth 2, L = 2 and a
    diagonal ``V = diag(v_first, v_last)`` (``sd_first = sqrt(v_first)``): the general
    (shifted-node) mean kernel of state evolution at depth 2.

    Per pair ``z = ω_0 + sd_first t`` (both tokens), ``B = softmax(β z zᵀ) + cI`` (two
    sigmoids ``1 / (1 + e^{β z_l (z_l' - z_l)})``), ``x = B^{-1} a`` by the adjugate and

        w_± = |det B|^{-1} exp(-|±x - ω_1|² / (2 v_last) - M),

    ``M`` the largest exponent over the nodes and both signs (``|det B|^{-1}`` is not in
    the shift: ``det B >= c (1 + c)`` bounds it where ``c > 0``, and it is a finite factor
    otherwise); the sign pair is folded (``e_+ + e_-`` weighs ``z_0``, ``e_+ - e_-``
    weighs ``x``).  Three vectorised loops per observation over the nodes (padded to
    ``LANES``): the exponents, their maximum, the exponentials (:func:`vexp`); then the
    sums (:func:`_two_token_moment_sums`).  A node where ``det B = 0`` has weight 0.
    a (K, 2); omega (K, 2, 2); T (n, 2, 1); W (S, n).  Outputs: lognorm (S, K),
    mean (S, K, 2, 2) and, when ``sq`` has that shape too (else (0, 0, 0, 0)), the second
    moments ``E[z_lj²]`` (weighed by ``e_+ + e_-``).
    """
    K = a.shape[0]
    squares = sq.shape[0] > 0
    n = T.shape[0]
    const = -math.log(2.0 * math.pi * v_last)
    inv2v = 0.5 / v_last
    npad = _padded_size(n)
    T0 = np.zeros(npad)
    T1 = np.zeros(npad)
    for i in range(n):
        T0[i] = T[i, 0, 0]
        T1[i] = T[i, 1, 0]
    Wp = _padded_weights(W, npad)
    for k in prange(K):
        Z0 = np.empty(npad)
        Z1 = np.empty(npad)
        X0 = np.empty(npad)
        X1 = np.empty(npad)
        LP = np.empty(npad)
        LM = np.empty(npad)
        AI = np.empty(npad)
        tot = np.empty(15)
        a0 = a[k, 0]
        a1 = a[k, 1]
        w0 = omega[k, 0, 0]
        w1 = omega[k, 1, 0]
        m0 = omega[k, 0, 1]
        m1 = omega[k, 1, 1]
        for i in range(npad):
            z0 = w0 + sd_first * T0[i]
            z1 = w1 + sd_first * T1[i]
            Z0[i] = z0
            Z1[i] = z1
            X0[i], X1[i], AI[i], LP[i], LM[i] = _two_token_node(
                z0, z1, m0, m1, a0, a1, beta, skip, inv2v, i < n)
        lmax = _lane_max(LP, LM)
        if lmax > -np.inf:
            for i in range(npad):
                LP[i] = AI[i] * vexp(LP[i] - lmax)
                LM[i] = AI[i] * vexp(LM[i] - lmax)
        _write_weight_sets(k, LP, LM, lmax, const, Wp, Z0, Z1, X0, X1, tot, squares, lognorm,
                           mean, sq)


@njit(parallel=True, cache=True)
def fibre_moments_two_tokens(a, omega, T, W, sd, v_last, skip, beta, lognorm, mean, second,
                             with_second):
    """:func:`fibre_moments` written out for L = 2 and a diagonal ``V`` (any depth):
    ``z_U = ω_U + sd t`` per layer (``sd (m,)``: the square roots of ``V``'s first ``m``
    diagonal entries), the mixer ``B = Π_j (softmax(β s_j s_jᵀ) + cI)`` on 2×2 scalars
    (sigmoid rows, as :func:`mixer_into`), ``x = B^{-1} a`` by the adjugate,

        log w_± = -|±x - ω_last|² / (2 v_last) - log|det B|,

    the sign pair folded (even parts by ``e_+ + e_-``, odd ones by ``e_+ - e_-``), two
    passes per observation.  Same outputs as :func:`fibre_moments`.
    """
    K = a.shape[0]
    n = T.shape[0]
    m = T.shape[2]
    depth = m + 1
    S = W.shape[0]
    P = 2 * depth  # the entries (l, j) of z, flattened l * depth + j
    const = -math.log(2.0 * math.pi * v_last)
    inv2v = 0.5 / v_last
    for k in prange(K):
        ZU = np.empty((n, 2, m))
        X = np.empty((n, 2))
        LW = np.empty((n, 2))
        z = np.empty(P)
        odd = np.zeros(P)
        odd[m] = 1.0
        odd[depth + m] = 1.0
        accZ = np.zeros(S)
        accM = np.zeros((S, P))
        accS = np.zeros((S, P, P) if with_second else (S, 1, 1))
        a0 = a[k, 0]
        a1 = a[k, 1]
        m0 = omega[k, 0, m]
        m1 = omega[k, 1, m]
        lmax = -np.inf
        for i in range(n):
            b00 = 1.0
            b01 = 0.0
            b10 = 0.0
            b11 = 1.0
            for j in range(m):
                u0 = omega[k, 0, j] + sd[j] * T[i, 0, j]
                u1 = omega[k, 1, j] + sd[j] * T[i, 1, j]
                ZU[i, 0, j] = u0
                ZU[i, 1, j] = u1
                b00, b01, b10, b11 = _two_token_layer(b00, b01, b10, b11, u0, u1, skip, beta)
            det = b00 * b11 - b01 * b10
            if det == 0.0:
                LW[i, 0] = -np.inf
                LW[i, 1] = -np.inf
                continue
            inv = 1.0 / det
            x0 = (b11 * inv) * a0 + (-b01 * inv) * a1
            x1 = (-b10 * inv) * a0 + (b00 * inv) * a1
            X[i, 0] = x0
            X[i, 1] = x1
            ld = math.log(abs(det))
            dp0 = x0 - m0
            dp1 = x1 - m1
            dm0 = x0 + m0
            dm1 = x1 + m1
            lwp = -ld - inv2v * (dp0 * dp0 + dp1 * dp1)
            lwm = -ld - inv2v * (dm0 * dm0 + dm1 * dm1)
            LW[i, 0] = lwp
            LW[i, 1] = lwm
            if lwp > lmax:
                lmax = lwp
            if lwm > lmax:
                lmax = lwm
        if lmax > -np.inf:
            for i in range(n):
                ep = math.exp(LW[i, 0] - lmax)
                em = math.exp(LW[i, 1] - lmax)
                e = ep + em
                if e == 0.0:
                    continue
                d = ep - em
                for l in range(2):
                    for j in range(m):
                        z[l * depth + j] = ZU[i, l, j]
                    z[l * depth + m] = X[i, l]
                _add_folded_node(W, i, e, d, z, odd, with_second, accZ, accM, accS)
        _write_folded(np.int64(k), accZ, accM, accS, lmax, const, depth, with_second, lognorm, mean,
                      second)


@njit(cache=True)
def _two_token_moment_sums(EP, EM, W, U0, U1, X0, X1, with_second, tot):
    """The folded sums of a depth-2, two-token node set on one weight set ``W`` (padded to
    a multiple of ``LANES``), ``e = W (e_+ + e_-)``, ``d = W (e_+ - e_-)``, ``z = (u0, x0,
    u1, x1)`` (``x`` odd under the sign flip):

        tot[0:5]  = Σ_i (e, e u0, d x0, e u1, d x1),
        tot[5:15] = Σ_i z_r z_c (e where r, c have the same parity, else d), r <= c,

    the second block only ``with_second``; in ``LANES`` partial sums added last (lane
    vectors, a fixed order on every CPU; see ``LANES``)."""
    s0 = s1 = s2 = s3 = s4 = s5 = s6 = s7 = s8 = s9 = lanes_zero()
    s10 = s11 = s12 = s13 = s14 = lanes_zero()
    for b in range(0, EP.size, LANES):
        w = lanes_load(W, b)
        ep = lanes_load(EP, b)
        em = lanes_load(EM, b)
        e = w * (ep + em)
        d = w * (ep - em)
        u0 = lanes_load(U0, b)
        x0 = lanes_load(X0, b)
        u1 = lanes_load(U1, b)
        x1 = lanes_load(X1, b)
        eu0 = e * u0
        du0 = d * u0
        ex0 = e * x0
        dx0 = d * x0
        eu1 = e * u1
        s0 = s0 + e
        s1 = s1 + eu0
        s2 = s2 + dx0
        s3 = s3 + eu1
        s4 = s4 + d * x1
        if with_second:
            s5 = s5 + eu0 * u0
            s6 = s6 + du0 * x0
            s7 = s7 + eu0 * u1
            s8 = s8 + du0 * x1
            s9 = s9 + ex0 * x0
            s10 = s10 + dx0 * u1
            s11 = s11 + ex0 * x1
            s12 = s12 + eu1 * u1
            s13 = s13 + d * u1 * x1
            s14 = s14 + e * x1 * x1
    sums = (s0, s1, s2, s3, s4, s5, s6, s7, s8, s9, s10, s11, s12, s13, s14)
    for r in range(15 if with_second else 5):
        tot[r] = lanes_total(sums[r])


@njit(cache=True)
def _write_two_token_moments(s, k, tot, shift, with_second, lognorm, mean, second):
    """Weight set ``s``, observation ``k``: ``lognorm = log Σe + shift``, the means and
    (``with_second``) the mirrored second moments from :func:`_two_token_moment_sums`'
    ``tot``, laid out as :func:`_write_folded` (entry ``r`` of ``z`` is ``(r // 2, r %
    2)``); ``-inf`` and ``nan`` where every weight is 0."""
    if tot[0] > 0.0:
        lognorm[s, k] = math.log(tot[0]) + shift
        inv = 1.0 / tot[0]
        for r in range(4):
            mean[s, k, r // 2, r % 2] = tot[1 + r] * inv
        if with_second:
            q = 5
            for r in range(4):
                for c in range(r, 4):
                    v = tot[q] * inv
                    second[s, k, r // 2, r % 2, c // 2, c % 2] = v
                    second[s, k, c // 2, c % 2, r // 2, r % 2] = v
                    q += 1
    else:
        lognorm[s, k] = -np.inf
        for r in range(4):
            mean[s, k, r // 2, r % 2] = np.nan
            for c in range(4):
                second[s, k, r // 2, r % 2, c // 2, c % 2] = np.nan


@njit(parallel=True, cache=True)
def fibre_moments_two_tokens_depth2(a, omega, T, W, c_first, c_reg, v_cond, skip, beta,
                                    lognorm, mean, second, with_second):
    """:func:`fibre_moments_two_tokens_general` at depth 2, vectorised: AMP's posterior
    (general ``V = Ĉ``) and the full second moments of state evolution (diagonal ``V``).

    Per node ``u_l = ω_{l,0} + c_first t_l`` (``c_first = sqrt(V_00)``), ``B = softmax(β u
    uᵀ) + cI`` (two sigmoids), ``x = B^{-1} a`` by the adjugate, the last layer's mean
    ``μ_l = ω_{l,1} + c_reg c_first t_l`` (``c_reg = V_01 / V_00``, ``v_cond = V_11 −
    V_01² / V_00``: the last layer conditioned on the first) and

        w_± = |det B|^{-1} exp(-|±x - μ|² / (2 v_cond) - M),

    ``M`` the largest exponent over the nodes and both signs (``|det B|^{-1}`` is a factor
    outside the shift, as in :func:`fibre_means_two_tokens`: ``det B >= c (1 + c)`` where
    ``c > 0``).  Three vectorised loops per observation (exponents, their maximum,
    :func:`vexp`), then the folded sums (:func:`_two_token_moment_sums`).  A node where
    ``det B = 0`` has weight 0.  Arguments and outputs as :func:`fibre_moments` (the same
    numbers to rounding: a test holds 1e-12 against the generic kernel).
    """
    K = a.shape[0]
    n = T.shape[0]
    const = -math.log(2.0 * math.pi * v_cond)
    inv2v = 0.5 / v_cond
    npad = _padded_size(n)
    CT0 = np.zeros(npad)
    CT1 = np.zeros(npad)
    MU0 = np.zeros(npad)
    MU1 = np.zeros(npad)
    for i in range(n):
        CT0[i] = c_first * T[i, 0, 0]
        CT1[i] = c_first * T[i, 1, 0]
        MU0[i] = c_reg * CT0[i]
        MU1[i] = c_reg * CT1[i]
    Wp = _padded_weights(W, npad)
    for k in prange(K):
        U0 = np.empty(npad)
        U1 = np.empty(npad)
        X0 = np.empty(npad)
        X1 = np.empty(npad)
        LP = np.empty(npad)
        LM = np.empty(npad)
        AI = np.empty(npad)
        tot = np.empty(15)
        a0 = a[k, 0]
        a1 = a[k, 1]
        w0 = omega[k, 0, 0]
        w1 = omega[k, 1, 0]
        m0 = omega[k, 0, 1]
        m1 = omega[k, 1, 1]
        for i in range(npad):
            u0 = w0 + CT0[i]
            u1 = w1 + CT1[i]
            U0[i] = u0
            U1[i] = u1
            X0[i], X1[i], AI[i], LP[i], LM[i] = _two_token_node(
                u0, u1, m0 + MU0[i], m1 + MU1[i], a0, a1, beta, skip, inv2v, i < n)
        lmax = _lane_max(LP, LM)
        if lmax > -np.inf:
            for i in range(npad):
                LP[i] = AI[i] * vexp(LP[i] - lmax)
                LM[i] = AI[i] * vexp(LM[i] - lmax)
        for s in range(Wp.shape[0]):
            if lmax > -np.inf:
                _two_token_moment_sums(LP, LM, Wp[s], U0, U1, X0, X1, with_second, tot)
            else:
                tot[0] = 0.0
            _write_two_token_moments(s, k, tot, lmax + const, with_second, lognorm, mean,
                                     second)


# the kernels above inline the lane vectors and vexp, which numba's cache does not track
_kernel_cache.drop_stale_cached_kernels(mixer_into,
                                        (_lane_vectors.__file__, _vector_exp.__file__))
