"""Fused CUDA kernel (numba-cuda) for the fibre integral of the attention channel.

The same integral as :func:`._attention_kernels.fibre_moments` and
:func:`._attention_kernels.diagonal_fibre_means` (see there for the formulas), in one launch:
one warp per observation ``k``, its 32 lanes striding over the inner nodes ``i``.  Per node
both signs are taken together,

    log w_± = b_i - |±x - μ|² / (2 v_c),   x = B(z_U)^{-1} a,   e_± = exp(log w_± - lmax),

with ``b_i = -log|det B|`` (nodes ``z_U = ω_U + C t_i``; ``shared``: ``B^{-1}`` precomputed,
``ω_U = 0``) or ``b_i = node_base_i + Σ t ω_U / v_U`` (``importance``: shared standard
nodes, diagonal ``V``).  Entries of ``Z = [z_U, ±x]`` that are even in the sign are weighted
by ``e_+ + e_-``, odd ones (and odd products) by ``e_+ - e_-``.  Each lane keeps a running
maximum ``lmax`` (log-sum-exp) and its sums; the warp then rescales them to the warp's
maximum and adds them up in shared memory, and writes ``log Z``, the mean and the upper
triangle of the second moment (mirrored) to device arrays.  Float64 throughout.

``L <= 4`` and ``depth <= 3`` (local arrays of fixed size), and at most 48 KiB of shared
memory (``S <= 13`` weight sets at L = 4, depth = 3); other sizes raise ``ValueError`` naming
them: no silent fallback (the old cupy array path, ``AttentionChannel.fibre_moments(...,
_gpu_kernel="array")``, still takes them).  Kernels are specialised per ``(L, depth, S,
second, mode)`` (fewer than asked for: :func:`compiled_variant`), kept for the process,
compiled at their first launch (about a second each) and cached on disk by numba
(``__pycache__`` beside this file, or ``NUMBA_CACHE_DIR``), so a later process loads them.

Runs on numba's CUDA simulator (``NUMBA_ENABLE_CUDASIM=1`` before ``numba.cuda`` is
imported) with numpy arrays, which is how the default test suite checks it.
"""

from __future__ import annotations

import math
from functools import cache

import numpy as np

from ..backend import prepare_numba_cuda

prepare_numba_cuda()  # numpy 2.5 and numba-cuda

from numba import cuda, float64  # noqa: E402

MAX_SEQ_LEN = 4
MAX_DEPTH = 3
WARP = 32
WARPS_PER_BLOCK = 4
CHUNK = 8  # sums reduced through shared memory per round
SHARED_BYTES = 48 * 1024  # static shared memory a block may take without opting in
MODES = ("general", "shared", "importance")
NEG_INF = -math.inf
MIN_SETS = 2  # weight sets of the smallest compiled kernel (see compiled_variant)


def check_sizes(seq_len: int, depth: int) -> None:
    """``ValueError`` naming the size unless ``2 <= seq_len <= 4`` and ``1 <= depth <= 3``."""
    if not 2 <= seq_len <= MAX_SEQ_LEN:
        raise ValueError(f"the fused CUDA fibre kernel takes seq_len <= {MAX_SEQ_LEN}, "
                         f"got seq_len = {seq_len}")
    if not 1 <= depth <= MAX_DEPTH:
        raise ValueError(f"the fused CUDA fibre kernel takes depth <= {MAX_DEPTH}, "
                         f"got depth = {depth}")


def flops_per_pair(seq_len: int, depth: int, n_sets: int, second: bool | str) -> int:
    """Floating-point operations per (observation, node) of the general kernel, both signs
    together (exp, log and division counted as one each): the ``L×L`` mixer of each of the
    ``depth-1`` layers, its inverse, ``x``, the two exponents and the sums."""
    L, m = seq_len, depth - 1
    P = L * depth
    mixer = m * (2 * L * L + (6 if L == 2 else 4 * L * L) + 2 * L**3 + 2 * L)
    inverse = 10 if L == 2 else 2 * L**3 + L
    x = 2 * L * L
    expo = 4 * L + 2 * L + 8
    nsec = P if second == "diagonal" else P * (P + 1) // 2 if second else 0
    sums = n_sets * (3 + 2 * P + 3 * nsec)
    return mixer + inverse + x + expo + sums


def compiled_variant(n_sets: int, second: bool | str, mode: str) -> tuple[int, bool | str]:
    """The kernel specialisation ``(n_sets', second')`` that serves a request: at least
    :data:`MIN_SETS` weight sets, and the second moments on the general and shared paths
    even where they are not asked for.  Compiling a specialisation costs about 1.3 s per
    process (NVVM and ptxas, measured 0.6-1.0 s for the PTX alone), while the extra sums
    cost microseconds at the sizes of an SE map (512-4096 observations): a curve then
    compiles 3 kernels rather than 6.  The sums of a weight set do not depend on the others,
    so the results asked for are the same bits either way."""
    if mode != "importance" and second is False:
        second = True
    return max(n_sets, MIN_SETS), second


@cache
def fibre_kernel(seq_len: int, depth: int, n_sets: int, second: bool | str, mode: str):
    """The kernel for one specialisation; launch ``[blocks, WARP * WARPS_PER_BLOCK]``.
    ``second``: False, True (the upper triangle of the second moment) or ``"diagonal"``
    (only ``E[Z_p²]``, written to ``sec[q, k, p, p]``)."""
    check_sizes(seq_len, depth)
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if second not in (False, True, "diagonal"):
        raise ValueError(f"second must be False, True or 'diagonal', got {second!r}")
    L, S = seq_len, n_sets
    m = depth - 1
    P = L * depth
    DIAG = second == "diagonal"
    NSEC = P if DIAG else P * (P + 1) // 2 if second else 0
    NPER = 1 + P + NSEC
    NV = S * NPER
    SHARED = mode != "general"
    IMP = mode == "importance"
    WPB = WARPS_PER_BLOCK
    MM = max(m, 1)
    shared_bytes = 8 * WPB * (WARP * CHUNK + NV + WARP)
    if shared_bytes > SHARED_BYTES:
        raise ValueError(f"the fused CUDA fibre kernel would need {shared_bytes} bytes of "
                         f"shared memory for {n_sets} weight sets (at most {SHARED_BYTES})")
    # flat index p = l*depth + j of Z (odd in the fibre sign where j = m); second moments
    # in the upper triangle p1 <= p2, row by row

    @cuda.jit(device=True)
    def sigmoid(x):
        if x >= 0:
            return 1.0 / (1.0 + math.exp(-x))
        e = math.exp(x)
        return e / (1.0 + e)

    @cuda.jit(device=True)
    def mixer(zU, skip, beta, B, A, s, tmp):
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
                d0 = beta * s[0] * (s[1] - s[0])
                d1 = beta * s[1] * (s[0] - s[1])
                A[0, 0] = sigmoid(-d0)
                A[0, 1] = 1.0 - A[0, 0]
                A[1, 1] = sigmoid(-d1)
                A[1, 0] = 1.0 - A[1, 1]
                A[0, 0] += skip
                A[1, 1] += skip
            else:
                for r in range(L):
                    mx = NEG_INF
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

    @cuda.jit(device=True)
    def inverse_logdet(B, Binv, work):
        """Closed-form 2×2 adjugate, else Gauss–Jordan with partial pivoting."""
        if L == 2:
            det = B[0, 0] * B[1, 1] - B[0, 1] * B[1, 0]
            if det == 0.0:
                return NEG_INF
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
                return NEG_INF
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

    @cuda.jit(cache=True)  # on disk, keyed by the closure's constants (numba hashes them)
    def kernel(a, omega, CT, CMU, W, Binv_sh, logdet_sh, node_base, inv_vU, vc, skip, beta,
               const, lognorm, mean, sec):
        """a (K, L); omega (K, L, depth); CT (n, L, max(m,1)) = C t (importance: t);
        CMU (n, L) = coef·(C t); W (S, n); Binv_sh (n', L, L), logdet_sh, node_base (n',);
        inv_vU (max(m,1),).  Out: lognorm (S, K), mean (S, K, P), sec (S, K, P, P)."""
        red = cuda.shared.array((WPB, WARP, CHUNK), float64)
        tot = cuda.shared.array((WPB, NV), float64)
        mxs = cuda.shared.array((WPB, WARP), float64)
        K = a.shape[0]
        n = W.shape[1]
        lane = cuda.threadIdx.x % WARP
        w = cuda.threadIdx.x // WARP
        k = cuda.blockIdx.x * WPB + w
        active = k < K
        acc = cuda.local.array(NV, float64)
        zU = cuda.local.array((L, MM), float64)
        B = cuda.local.array((L, L), float64)
        Binv = cuda.local.array((L, L), float64)
        A = cuda.local.array((L, L), float64)
        tmp = cuda.local.array((L, L), float64)
        work = cuda.local.array((L, L), float64)
        s = cuda.local.array(L, float64)
        x = cuda.local.array(L, float64)
        z = cuda.local.array(P, float64)
        for v in range(NV):
            acc[v] = 0.0
        lmax = NEG_INF
        inv2v = 0.5 / vc
        if active:
            for i in range(lane, n, WARP):
                for l in range(L):
                    for j in range(m):
                        if IMP:
                            zU[l, j] = CT[i, l, j]
                        else:
                            zU[l, j] = omega[k, l, j] + CT[i, l, j]
                if SHARED:
                    ld = logdet_sh[i]
                    for r in range(L):
                        for c in range(L):
                            Binv[r, c] = Binv_sh[i, r, c]
                else:
                    mixer(zU, skip, beta, B, A, s, tmp)
                    ld = inverse_logdet(B, Binv, work)
                if ld == NEG_INF:
                    continue
                if IMP:
                    base = node_base[i]
                    for l in range(L):
                        for j in range(m):
                            base += zU[l, j] * (omega[k, l, j] * inv_vU[j])
                else:
                    base = -ld
                qp = 0.0
                qm = 0.0
                for r in range(L):
                    t = 0.0
                    for c in range(L):
                        t += Binv[r, c] * a[k, c]
                    x[r] = t
                    mu = omega[k, r, m]
                    if not IMP:
                        mu += CMU[i, r]
                    dp = t - mu
                    dm = t + mu
                    qp += dp * dp
                    qm += dm * dm
                lwp = base - inv2v * qp
                lwm = base - inv2v * qm
                lw = lwp if lwp > lwm else lwm  # (builtin max: no CUDA overload for 2 floats)
                if lw > lmax:
                    if lmax > NEG_INF:
                        f = math.exp(lmax - lw)
                        for v in range(NV):
                            acc[v] *= f
                    lmax = lw
                ep = math.exp(lwp - lmax)
                em = math.exp(lwm - lmax)
                e = ep + em
                d = ep - em
                for l in range(L):
                    for j in range(m):
                        z[l * depth + j] = zU[l, j]
                    z[l * depth + m] = x[l]
                for q in range(S):  # no skip of zero weights: lanes would diverge for nothing
                    ws = W[q, i]
                    we = ws * e
                    wd = ws * d
                    o = q * NPER
                    acc[o] += we
                    for p in range(P):
                        if p % depth == m:
                            acc[o + 1 + p] += wd * z[p]
                        else:
                            acc[o + 1 + p] += we * z[p]
                    if DIAG:
                        for p in range(P):
                            acc[o + 1 + P + p] += we * z[p] * z[p]
                    elif NSEC > 0:
                        t2 = o + 1 + P
                        for p1 in range(P):
                            odd1 = p1 % depth == m
                            for p2 in range(p1, P):
                                if odd1 == (p2 % depth == m):
                                    acc[t2] += we * z[p1] * z[p2]
                                else:
                                    acc[t2] += wd * z[p1] * z[p2]
                                t2 += 1
        # warp maximum, then the sums rescaled to it and added up in shared memory
        mxs[w, lane] = lmax
        cuda.syncthreads()
        M = NEG_INF
        for r in range(WARP):
            if mxs[w, r] > M:
                M = mxs[w, r]
        f = math.exp(lmax - M) if lmax > NEG_INF else 0.0
        for v0 in range(0, NV, CHUNK):
            for c in range(CHUNK):
                if v0 + c < NV:
                    red[w, lane, c] = acc[v0 + c] * f
            cuda.syncthreads()
            if lane < CHUNK and v0 + lane < NV:
                t = 0.0
                for r in range(WARP):
                    t += red[w, r, lane]
                tot[w, v0 + lane] = t
            cuda.syncthreads()
        if not active:
            return
        ck = const
        if IMP:
            for l in range(L):
                for j in range(m):
                    ck -= 0.5 * omega[k, l, j] * omega[k, l, j] * inv_vU[j]
        for v in range(lane, NV, WARP):
            q = v // NPER
            r = v - q * NPER
            Z = tot[w, q * NPER]
            ok = Z > 0.0 and M > NEG_INF
            if r == 0:
                lognorm[q, k] = math.log(Z) + M + ck if ok else NEG_INF
            elif r <= P:
                mean[q, k, r - 1] = tot[w, v] / Z if ok else math.nan
            elif DIAG:
                p1 = r - 1 - P
                sec[q, k, p1, p1] = tot[w, v] / Z if ok else math.nan
            else:
                rem = r - 1 - P
                p1 = 0
                while rem >= P - p1:
                    rem -= P - p1
                    p1 += 1
                p2 = p1 + rem
                val = tot[w, v] / Z if ok else math.nan
                sec[q, k, p1, p2] = val
                sec[q, k, p2, p1] = val

    return kernel


def launch(kernel, K: int, *args) -> None:
    """Launch ``kernel`` over ``K`` observations (nothing for ``K = 0``)."""
    if K == 0:
        return
    blocks = (K + WARPS_PER_BLOCK - 1) // WARPS_PER_BLOCK
    kernel[blocks, WARP * WARPS_PER_BLOCK](*args)


def fibre_moments_cuda(xp, a, omega, CT, CMU, W, Binv_sh, logdet_sh, node_base, inv_vU, vc,
                       skip, beta, const, mode, second):
    """Run the fused kernel.  ``xp``: cupy (arrays on the GPU, results left there) or numpy
    (host arrays copied to the device and back: numba's CUDA simulator in the tests).
    Returns ``lognorm (S, K)``, ``mean (S, K, L, depth)``, ``second (S, K, L, depth, L,
    depth)`` (NaN when ``second`` is False; only its diagonal with ``"diagonal"``)."""
    K, L = a.shape
    depth = omega.shape[2]
    S = W.shape[0]
    P = L * depth
    asked = second if second == "diagonal" else bool(second)
    S_run, second = compiled_variant(S, asked, mode)
    kernel = fibre_kernel(L, depth, S_run, second, mode)
    if S_run > S:  # the extra sets repeat the first one; their sums are dropped
        W = xp.concatenate([W] + [W[:1]] * (S_run - S))
    inputs = [a, omega, CT, CMU, W, Binv_sh, logdet_sh, node_base, inv_vU]
    lognorm = xp.empty((S_run, K))
    mean = xp.empty((S_run, K, P))
    if second == "diagonal":
        sec = xp.full((S_run, K, P, P), xp.nan)
    else:
        sec = xp.empty((S_run, K, P, P)) if second else xp.empty((1, 1, 1, 1))
    outputs = [lognorm, mean, sec]
    host = xp is np
    if host:
        inputs = [cuda.to_device(np.ascontiguousarray(x)) for x in inputs]
        outputs = [cuda.to_device(x) for x in outputs]
    launch(kernel, K, *inputs, float(vc), float(skip), float(beta), float(const), *outputs)
    if host:
        lognorm, mean, sec = (x.copy_to_host() for x in outputs)
    lognorm, mean = lognorm[:S], mean[:S]
    sec = sec[:S] if asked else xp.full((S, K, P, P), xp.nan)
    return lognorm, mean.reshape(S, K, L, depth), sec.reshape(S, K, L, depth, L, depth)
