"""Fused GPU kernel for the per-sample algebra of attention training (numba-cuda).

One thread per sample ``mu`` does, on ``U_mu = x_mu W`` (``L x p``, the unscaled large
product), everything :class:`simulators.attention_training.AttentionOracle` does between
the two products with X (module docstring of :mod:`simulators.attention_training`):

    Z = scale U,   s_k = B_{k-1} z_k,   P_k = softmax_rows(beta s_k s_k^T),
    B_k = (P_k + c I) B_{k-1},   y = P_depth,
    loss_mu = ||y - y*_mu||_F^2,   G = coef (y - y*_mu),
    bar Z  from  bar P_depth = G  by the backward recursion of ``attention_backward``.

The arithmetic is that of the array path, operation for operation, carried out in float64
whatever the dtype of the arrays (float32 inputs are widened on load, outputs rounded once
on store), so float64 results agree with the numpy reference to rounding and float32
results are at least as accurate as the float32 array path.  ``mode`` selects what is computed:

    LOSS (0): loss_mu;   COTANGENT (1): loss_mu and G;   GRAD (2): loss_mu, G and bar Z;
    VJP (3): bar Z from a given G (no labels, no loss).

The per-sample loss is written to a float64 vector and summed by the caller (a two-level,
deterministic reduction).  Sizes are bounded by ``MAX_L``, ``MAX_DEPTH``, ``MAX_RANK``
(:func:`supports`); larger networks use the array path.  The kernel runs under numba's
CUDA simulator (``NUMBA_ENABLE_CUDASIM=1`` set before numba.cuda is imported) on numpy
arrays, which is how it is tested without a GPU; on a GPU it takes cupy arrays (through
``__cuda_array_interface__``) and runs on cupy's current stream.
"""

from __future__ import annotations

import math
import warnings

import numpy as np

from asymptotics.backend import prepare_numba_cuda

prepare_numba_cuda()  # numpy 2.5 and numba-cuda

from numba import cuda, float64  # noqa: E402
from numba.core.errors import NumbaPerformanceWarning  # noqa: E402

MAX_L = 8
MAX_DEPTH = 4
MAX_RANK = 4
MAX_P = 16  # MAX_DEPTH * MAX_RANK, spelled out: local array shapes must be literals
LOSS, COTANGENT, GRAD, VJP = 0, 1, 2, 3
THREADS = 128


def supports(seq_len: int, depth: int, rank: int) -> bool:
    """Whether the kernel's fixed-size per-thread arrays hold this network."""
    return seq_len <= MAX_L and depth <= MAX_DEPTH and rank <= MAX_RANK


def available() -> bool:
    """Whether numba.cuda can launch the kernel here (a GPU, or the simulator)."""
    try:
        return bool(cuda.is_available())
    except Exception:  # pragma: no cover - driver-dependent failures
        return False


@cuda.jit(cache=True)
def _kernel(U, scale, beta, c, rank, Y, G, coef, loss, dZ, mode):  # noqa: C901
    i = cuda.grid(1)
    if i >= U.shape[0]:
        return
    L = U.shape[1]
    p = U.shape[2]
    depth = p // rank
    zero = 0.0
    one = 1.0
    z = cuda.local.array((MAX_L, MAX_P), float64)
    S = cuda.local.array((MAX_DEPTH, MAX_L, MAX_RANK), float64)
    P = cuda.local.array((MAX_DEPTH, MAX_L, MAX_L), float64)
    B = cuda.local.array((MAX_DEPTH, MAX_L, MAX_L), float64)  # B[k] = mixer of layer k
    for a in range(L):
        for j in range(p):
            z[a, j] = U[i, a, j] * scale
    for a in range(L):
        for b in range(L):
            B[0, a, b] = one if a == b else zero
    # ------------------------------------------------------------------ forward
    for k in range(depth):
        for a in range(L):
            for r in range(rank):
                if k == 0:
                    S[0, a, r] = z[a, r]
                else:
                    acc = zero
                    for b in range(L):
                        acc += B[k, a, b] * z[b, k * rank + r]
                    S[k, a, r] = acc
        for a in range(L):
            m = -math.inf
            for b in range(L):
                acc = zero
                for r in range(rank):
                    acc += S[k, a, r] * S[k, b, r]
                t = beta * acc
                P[k, a, b] = t
                if t > m:
                    m = t
            tot = zero
            for b in range(L):
                e = math.exp(P[k, a, b] - m)
                P[k, a, b] = e
                tot += e
            for b in range(L):
                P[k, a, b] = P[k, a, b] / tot
        if k < depth - 1:
            for a in range(L):
                for b in range(L):
                    acc = zero
                    for e in range(L):
                        A = P[k, a, e] + c if a == e else P[k, a, e]
                        acc += A * B[k, e, b]
                    B[k + 1, a, b] = acc
    # --------------------------------------------------------------- loss, G
    dP = cuda.local.array((MAX_L, MAX_L), float64)
    last = depth - 1
    if mode == VJP:
        for a in range(L):
            for b in range(L):
                dP[a, b] = G[i, a, b]
    else:
        tot64 = 0.0
        for a in range(L):
            for b in range(L):
                d = P[last, a, b] - Y[i, a, b]
                tot64 += d * d
                dP[a, b] = coef * d
        loss[i] = tot64
        if mode == LOSS:
            return
        for a in range(L):
            for b in range(L):
                G[i, a, b] = dP[a, b]
        if mode == COTANGENT:
            return
    # ----------------------------------------------------------------- backward
    dB = cuda.local.array((MAX_L, MAX_L), float64)
    dBp = cuda.local.array((MAX_L, MAX_L), float64)
    dT = cuda.local.array((MAX_L, MAX_L), float64)
    ds = cuda.local.array((MAX_L, MAX_RANK), float64)
    for k in range(depth - 1, -1, -1):
        if k < depth - 1:
            # bar P_k = bar B_k B_{k-1}^T (B_0 = I: a copy);  bar B_{k-1} = A_k^T bar B_k
            for a in range(L):
                for b in range(L):
                    if k == 0:
                        dP[a, b] = dB[a, b]
                    else:
                        acc = zero
                        for e in range(L):
                            acc += dB[a, e] * B[k, b, e]
                        dP[a, b] = acc
            if k > 0:
                for a in range(L):
                    for b in range(L):
                        acc = zero
                        for e in range(L):
                            A = P[k, e, a] + c if e == a else P[k, e, a]
                            acc += A * dB[e, b]
                        dBp[a, b] = acc
        # softmax: bar T = P (bar P - rowsum(bar P * P))
        for a in range(L):
            rs = zero
            for b in range(L):
                rs += dP[a, b] * P[k, a, b]
            for b in range(L):
                dT[a, b] = P[k, a, b] * (dP[a, b] - rs)
        # bar s = beta (bar T + bar T^T) s
        for a in range(L):
            for r in range(rank):
                acc = zero
                for b in range(L):
                    acc += (dT[a, b] + dT[b, a]) * S[k, b, r]
                ds[a, r] = beta * acc
        if k == 0:
            for a in range(L):
                for r in range(rank):
                    dZ[i, a, r] = ds[a, r]
        else:
            # bar z_k = B_{k-1}^T bar s_k;  bar B_{k-1} = (A_k^T bar B_k) + bar s_k z_k^T
            for a in range(L):
                for r in range(rank):
                    acc = zero
                    for b in range(L):
                        acc += B[k, b, a] * ds[b, r]
                    dZ[i, a, k * rank + r] = acc
            for a in range(L):
                for b in range(L):
                    acc = zero
                    for r in range(rank):
                        acc += ds[a, r] * z[b, k * rank + r]
                    dB[a, b] = dBp[a, b] + acc if k < depth - 1 else acc


def _device(a, xp):
    """A numba view of a cupy array (no copy, no stream sync); numpy arrays pass through."""
    if xp is np:
        return a
    return cuda.from_cuda_array_interface(a.__cuda_array_interface__, owner=a, sync=False)


def _stream(xp):
    if xp is np:
        return 0
    ptr = xp.cuda.get_current_stream().ptr
    return cuda.default_stream() if ptr == 0 else cuda.external_stream(ptr)


def fused_step(U, scale: float, beta: float, skip: float, rank: int, xp, *, mode: int,
               Y=None, G=None, coef: float = 0.0):
    """Launch the kernel on ``U = X W`` (``n x L x p``, unscaled) in namespace ``xp``.

    Returns ``(loss_sum, G, dZ)``: ``loss_sum = sum_mu ||y_mu - Y_mu||_F^2`` as a float64
    0-d array of ``xp`` (None for VJP), ``G = coef (y - Y)`` (COTANGENT, GRAD; for VJP the
    given ``G``) and ``bar Z`` with respect to ``Z = scale U`` (GRAD, VJP; else None).
    """
    n, L, p = U.shape
    if p % rank or not supports(L, p // rank, rank):
        raise ValueError(f"the fused kernel holds L <= {MAX_L}, depth <= {MAX_DEPTH}, "
                         f"rank <= {MAX_RANK}; got L = {L}, p = {p}, rank = {rank}")
    dt = np.float64
    U = xp.ascontiguousarray(U)
    dummy = xp.zeros((1, 1, 1), dtype=U.dtype)
    loss = xp.zeros(n if mode != VJP else 1, dtype=np.float64)
    if mode == VJP:
        Y = dummy
        G = xp.ascontiguousarray(G, dtype=U.dtype)
    else:
        Y = xp.ascontiguousarray(Y, dtype=U.dtype)
        G = xp.empty((n, L, L), dtype=U.dtype) if mode != LOSS else dummy
    dZ = xp.empty_like(U) if mode in (GRAD, VJP) else dummy
    if n > 0:
        blocks = (n + THREADS - 1) // THREADS
        with warnings.catch_warnings():  # small batches: a grid of few blocks is expected
            warnings.simplefilter("ignore", NumbaPerformanceWarning)
            _kernel[blocks, THREADS, _stream(xp)](
                _device(U, xp), dt(scale), dt(beta), dt(skip), np.int64(rank),
                _device(Y, xp), _device(G, xp), dt(coef), _device(loss, xp), _device(dZ, xp),
                np.int64(mode))
    return (
        None if mode == VJP else loss.sum(),
        G if mode != LOSS else None,
        dZ if mode in (GRAD, VJP) else None,
    )


# ------------------------------------------------------------- the products with X
#
# cuBLAS runs the two skinny products (p = depth * rank columns) well below the memory
# bound in float32 (measured on the H200: X W 7.7 ms and X^T dS up to 20 ms against 2.5 ms
# per read of X).  Two streaming kernels, accumulating in float64:
#   xw:   U = X W        one warp per XW_ROWS rows of X (n L x D), lanes stride over D,
#                        the lanes' partial sums added through shared memory;
#   xtg:  X^T dS         one thread per column d of X, the rows split into chunks (grid
#                        axis y) whose float64 partial sums are added by the caller (a
#                        fixed order: deterministic).

PROD_MAX_P = 4  # columns held in registers (constant loop bounds unroll)
XW_ROWS = 4  # rows of X per warp
XW_WARPS = 4  # warps per block
XW_E = 16  # XW_ROWS * PROD_MAX_P, spelled out (a shared array's shape must be literal)
XTG_UNROLL = 8


def products_support(p: int) -> bool:
    """Whether the product kernels hold ``p`` columns."""
    return p <= PROD_MAX_P


@cuda.jit(cache=True)
def _xw_kernel(X, W, out):
    # block = XW_WARPS warps; warp w of block b takes rows r0 .. r0 + XW_ROWS - 1
    tid = cuda.threadIdx.x
    lane = tid % 32
    wp = tid // 32
    r0 = (cuda.blockIdx.x * XW_WARPS + wp) * XW_ROWS
    M = X.shape[0]
    D = X.shape[1]
    p = W.shape[1]
    acc = cuda.local.array((XW_ROWS, PROD_MAX_P), float64)
    for a in range(XW_ROWS):
        for j in range(PROD_MAX_P):
            acc[a, j] = 0.0
    if r0 + XW_ROWS <= M:
        # all rows present: 2 * XW_ROWS unconditional loads in flight per iteration
        xa = cuda.local.array(XW_ROWS, float64)
        xb = cuda.local.array(XW_ROWS, float64)
        d = lane
        while d + 32 < D:
            for a in range(XW_ROWS):
                xa[a] = X[r0 + a, d]
                xb[a] = X[r0 + a, d + 32]
            for j in range(PROD_MAX_P):
                if j < p:
                    wa = float64(W[d, j])
                    wb = float64(W[d + 32, j])
                    for a in range(XW_ROWS):
                        acc[a, j] += xa[a] * wa
                        acc[a, j] += xb[a] * wb
            d += 64
        if d < D:
            for a in range(XW_ROWS):
                xa[a] = X[r0 + a, d]
            for j in range(PROD_MAX_P):
                if j < p:
                    wa = float64(W[d, j])
                    for a in range(XW_ROWS):
                        acc[a, j] += xa[a] * wa
    elif r0 < M:  # the ragged last rows
        for d in range(lane, D, 32):
            for a in range(XW_ROWS):
                if r0 + a < M:
                    x = float64(X[r0 + a, d])
                    for j in range(PROD_MAX_P):
                        if j < p:
                            acc[a, j] += x * W[d, j]
    # the 32 lanes' partial sums, added in lane order by one thread per (warp, row, col)
    sh = cuda.shared.array((XW_WARPS, XW_E, 33), float64)
    for a in range(XW_ROWS):
        for j in range(PROD_MAX_P):
            sh[wp, a * PROD_MAX_P + j, lane] = acc[a, j]
    cuda.syncthreads()
    if tid < XW_WARPS * XW_ROWS * PROD_MAX_P:
        ww = tid // (XW_ROWS * PROD_MAX_P)
        e = tid % (XW_ROWS * PROD_MAX_P)
        a = e // PROD_MAX_P
        j = e % PROD_MAX_P
        r = (cuda.blockIdx.x * XW_WARPS + ww) * XW_ROWS + a
        if j < p and r < M:
            v = 0.0
            for k in range(32):
                v += sh[ww, e, k]
            out[r, j] = v


@cuda.jit(cache=True)
def _xtg_kernel(X, G, part, chunk):
    d = cuda.blockIdx.x * cuda.blockDim.x + cuda.threadIdx.x
    s = cuda.blockIdx.y
    M = X.shape[0]
    D = X.shape[1]
    p = G.shape[1]
    if d >= D:
        return
    acc = cuda.local.array(PROD_MAX_P, float64)
    x = cuda.local.array(XTG_UNROLL, float64)
    for j in range(PROD_MAX_P):
        acc[j] = 0.0
    m0 = s * chunk
    m1 = min(M, m0 + chunk)
    m = m0
    while m + XTG_UNROLL <= m1:
        for u in range(XTG_UNROLL):
            x[u] = X[m + u, d]
        for u in range(XTG_UNROLL):
            for j in range(PROD_MAX_P):
                if j < p:
                    acc[j] += x[u] * G[m + u, j]
        m += XTG_UNROLL
    while m < m1:
        xm = float64(X[m, d])
        for j in range(PROD_MAX_P):
            if j < p:
                acc[j] += xm * G[m, j]
        m += 1
    for j in range(PROD_MAX_P):
        if j < p:
            part[s, d, j] = acc[j]


def xw(X2, W, xp):
    """``X2 @ W`` (``M x D`` times ``D x p``, ``p <= PROD_MAX_P``) in the dtype of ``X2``,
    accumulated in float64."""
    M, D = X2.shape
    p = W.shape[1]
    if not products_support(p):
        raise ValueError(f"the product kernels hold p <= {PROD_MAX_P} columns, got {p}")
    X2 = xp.ascontiguousarray(X2)
    W = xp.ascontiguousarray(W)
    out = xp.empty((M, p), dtype=X2.dtype)
    if M:
        threads = 32 * XW_WARPS
        blocks = -(-M // (XW_ROWS * XW_WARPS))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NumbaPerformanceWarning)
            _xw_kernel[blocks, threads, _stream(xp)](_device(X2, xp), _device(W, xp),
                                                     _device(out, xp))
    return out


def xtg(X2, G, xp, splits: int | None = None):
    """``X2^T @ G`` (``D x p``) in the dtype of ``X2``: float64 partial sums over row
    chunks, added in a fixed order."""
    M, D = X2.shape
    p = G.shape[1]
    if not products_support(p):
        raise ValueError(f"the product kernels hold p <= {PROD_MAX_P} columns, got {p}")
    X2 = xp.ascontiguousarray(X2)
    G = xp.ascontiguousarray(G)
    threads = 128
    bx = (D + threads - 1) // threads
    if splits is None:  # about 8 resident blocks of work per multiprocessor
        sms = 132 if xp is not np else 1
        if xp is not np:
            sms = cuda.get_current_device().MULTIPROCESSOR_COUNT
        splits = max(1, min(M // 64 or 1, (8 * sms * 16) // bx))
    chunk = -(-M // splits) if M else 1
    splits = -(-M // chunk) if M else 1
    part = xp.zeros((splits, D, p), dtype=np.float64)
    if M and D:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NumbaPerformanceWarning)
            _xtg_kernel[(bx, splits), threads, _stream(xp)](
                _device(X2, xp), _device(G, xp), _device(part, xp), np.int64(chunk))
    return part.sum(axis=0).astype(X2.dtype)
