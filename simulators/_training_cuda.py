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
deterministic reduction).  The algebra is one device function (``_sample_step``), run by
the per-sample kernel on a given U (:func:`fused_step`) or by the streaming X W kernel
right after it has summed U (:func:`fused_products_step`, one launch for X W and the
algebra; products section below).  Sizes are bounded by ``MAX_L``, ``MAX_DEPTH``, ``MAX_RANK``
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

from llvmlite import ir  # noqa: E402
from numba import config, cuda, float64, types  # noqa: E402
from numba.core.errors import NumbaPerformanceWarning  # noqa: E402
from numba.extending import intrinsic  # noqa: E402

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


@cuda.jit(device=True)
def _sample_step(i, z, L, p, beta, c, rank, Y, G, coef, loss, dZ, mode):  # noqa: C901
    """Forward, loss and backward of sample ``i`` from ``z = Z_i`` (``L x p`` in a local
    array); writes ``loss[i]``, ``G[i]``, ``dZ[i]`` as ``mode`` asks (module docstring)."""
    depth = p // rank
    zero = 0.0
    one = 1.0
    S = cuda.local.array((MAX_DEPTH, MAX_L, MAX_RANK), float64)
    P = cuda.local.array((MAX_DEPTH, MAX_L, MAX_L), float64)
    B = cuda.local.array((MAX_DEPTH, MAX_L, MAX_L), float64)  # B[k] = mixer of layer k
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


@cuda.jit(cache=True)
def _kernel(U, scale, beta, c, rank, Y, G, coef, loss, dZ, mode):
    i = cuda.grid(1)
    if i >= U.shape[0]:
        return
    L = U.shape[1]
    p = U.shape[2]
    z = cuda.local.array((MAX_L, MAX_P), float64)
    for a in range(L):
        for j in range(p):
            z[a, j] = U[i, a, j] * scale
    _sample_step(i, z, L, p, beta, c, rank, Y, G, coef, loss, dZ, mode)


def _warps_for(items: int, most: int) -> int:
    """Threads per block for one thread per item: ``most``, or the whole warps that hold
    fewer items (a batch of 5 samples launches 32 threads, not 128: what each thread
    computes does not depend on the block size, and the CUDA simulator runs every thread
    as a Python thread)."""
    return min(most, 32 * -(-items // 32))


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


def _check_network(L: int, p: int, rank: int) -> None:
    if p % rank or not supports(L, p // rank, rank):
        raise ValueError(f"the fused kernel holds L <= {MAX_L}, depth <= {MAX_DEPTH}, "
                         f"rank <= {MAX_RANK}; got L = {L}, p = {p}, rank = {rank}")


def _step_arrays(n, L, p, dtype, xp, mode, Y, G):
    """``(Y, G, loss, dZ)`` as the kernels take them for ``mode`` (unused ones: a dummy)."""
    dummy = xp.zeros((1, 1, 1), dtype=dtype)
    loss = xp.zeros(n if mode != VJP else 1, dtype=np.float64)
    if mode == VJP:
        Y = dummy
        G = xp.ascontiguousarray(G, dtype=dtype)
    else:
        Y = xp.ascontiguousarray(Y, dtype=dtype)
        G = xp.empty((n, L, L), dtype=dtype) if mode != LOSS else dummy
    dZ = xp.empty((n, L, p), dtype=dtype) if mode in (GRAD, VJP) else dummy
    return Y, G, loss, dZ


def _step_results(mode, loss, G, dZ):
    return (
        None if mode == VJP else loss.sum(),
        G if mode != LOSS else None,
        dZ if mode in (GRAD, VJP) else None,
    )


def fused_step(U, scale: float, beta: float, skip: float, rank: int, xp, *, mode: int,
               Y=None, G=None, coef: float = 0.0):
    """Launch the kernel on ``U = X W`` (``n x L x p``, unscaled) in namespace ``xp``.

    Returns ``(loss_sum, G, dZ)``: ``loss_sum = sum_mu ||y_mu - Y_mu||_F^2`` as a float64
    0-d array of ``xp`` (None for VJP), ``G = coef (y - Y)`` (COTANGENT, GRAD; for VJP the
    given ``G``) and ``bar Z`` with respect to ``Z = scale U`` (GRAD, VJP; else None).
    """
    n, L, p = U.shape
    _check_network(L, p, rank)
    dt = np.float64
    U = xp.ascontiguousarray(U)
    Y, G, loss, dZ = _step_arrays(n, L, p, U.dtype, xp, mode, Y, G)
    if n > 0:
        threads = _warps_for(n, THREADS)
        blocks = (n + threads - 1) // threads
        with warnings.catch_warnings():  # small batches: a grid of few blocks is expected
            warnings.simplefilter("ignore", NumbaPerformanceWarning)
            _kernel[blocks, threads, _stream(xp)](
                _device(U, xp), dt(scale), dt(beta), dt(skip), np.int64(rank),
                _device(Y, xp), _device(G, xp), dt(coef), _device(loss, xp), _device(dZ, xp),
                np.int64(mode))
    return _step_results(mode, loss, G, dZ)


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
# Float32 X is read two columns per load: through its float64 view (the same bytes) each
# lane loads one 8-byte word and splits it into its two float32 (``_f32_pair``, a bitcast;
# the pair compiles to one ld.global.v2.f32).  On the H200, float32 X read one 4-byte
# element per lane streamed at 48-73 % of the HBM peak where float64 reached 78-91 %
# (BENCHMARKS.md, issue 16): the bytes per load, not the bytes, fell short.
#
# The xw kernel can also finish the step (``fused_products_step``): when a block's rows
# are whole samples (``rows_per_block`` a multiple of L), it runs the per-sample algebra
# (``_sample_step``) on U straight from shared memory, in float64, with no second launch
# and no round trip of U through device memory.

PROD_MAX_P = 4  # columns held in registers (constant loop bounds unroll)
XW_ROWS = 4  # rows of X per warp
XW_WARPS = 4  # warps per block
XW_E = 16  # XW_ROWS * PROD_MAX_P, spelled out (a shared array's shape must be literal)
XW_BLOCK_ROWS = 16  # XW_WARPS * XW_ROWS
XTG_UNROLL = 8


def products_support(p: int) -> bool:
    """Whether the product kernels hold ``p`` columns."""
    return p <= PROD_MAX_P


@intrinsic
def _f32_pair_bits(typingctx, word):
    """The two float32 stored in the 8 bytes of the float64 ``word``, first in memory
    first: a bitcast to ``<2 x float>`` (no arithmetic, every bit pattern kept)."""
    if word != types.float64:
        return None
    sig = types.UniTuple(types.float32, 2)(types.float64)

    def codegen(context, builder, signature, args):
        pair = builder.bitcast(args[0], ir.VectorType(ir.FloatType(), 2))
        halves = [builder.extract_element(pair, ir.Constant(ir.IntType(32), k)) for k in (0, 1)]
        return context.make_tuple(builder, signature.return_type, halves)

    return sig, codegen


def _f32_pair_simulated(word):
    """``_f32_pair_bits`` for the CUDA simulator, which runs kernels as Python."""
    pair = np.array([word], dtype=np.float64).view(np.float32)
    return pair[0], pair[1]


_f32_pair = _f32_pair_simulated if config.ENABLE_CUDASIM else _f32_pair_bits


@cuda.jit(device=True)
def _store_pair(word, x, row, col):
    """``x[row, col], x[row, col + 1]`` = the two float32 of the 8-byte ``word``."""
    lo, hi = _f32_pair(word)
    x[row, col] = lo
    x[row, col + 1] = hi


def _xw_kernel(WIDTH: int, STEP: bool):  # noqa: C901 - the loops are spelled out
    """The xw kernel for X read ``WIDTH`` columns per load (1: X's own elements; 2:
    float32 X through its float64 view), finishing each sample's step if ``STEP``.  Both
    are compile-time constants (branches on them are pruned before typing), so the plain
    product keeps the registers of a streaming loop."""

    @cuda.jit(cache=True)
    def xw_kernel(X, W, out, rows_per_block, L, scale, beta, c, rank, Y, G, coef, loss,
                  dZ, mode):
        # block b holds rows b*rows_per_block ...; warp w of it rows r0 .. r0 + XW_ROWS - 1
        tid = cuda.threadIdx.x
        lane = tid % 32
        wp = tid // 32
        M = X.shape[0]
        Dv = X.shape[1]  # words per row
        p = W.shape[1]
        row0 = cuda.blockIdx.x * rows_per_block
        r0 = row0 + wp * XW_ROWS
        end = row0 + rows_per_block
        if end > M:
            end = M
        nrows = end - r0  # rows this warp holds: XW_ROWS, fewer (ragged), or none
        if nrows > XW_ROWS:
            nrows = XW_ROWS
        acc = cuda.local.array((XW_ROWS, PROD_MAX_P), float64)
        x = cuda.local.array((XW_ROWS, 4), float64)  # two words a row, WIDTH columns each
        for a in range(XW_ROWS):
            for j in range(PROD_MAX_P):
                acc[a, j] = 0.0
        if nrows == XW_ROWS:
            # all rows present: 2 * XW_ROWS unconditional loads in flight per iteration
            q = lane
            while q + 32 < Dv:
                for a in range(XW_ROWS):
                    for u in range(2):
                        word = X[r0 + a, q + 32 * u]
                        if WIDTH == 2:
                            _store_pair(word, x, a, 2 * u)
                        else:
                            x[a, u] = word
                for u in range(2):
                    for e in range(WIDTH):
                        d = (q + 32 * u) * WIDTH + e
                        for j in range(PROD_MAX_P):
                            if j < p:
                                w = float64(W[d, j])
                                for a in range(XW_ROWS):
                                    acc[a, j] += x[a, u * WIDTH + e] * w
                q += 64
            if q < Dv:
                for a in range(XW_ROWS):
                    word = X[r0 + a, q]
                    if WIDTH == 2:
                        _store_pair(word, x, a, 0)
                    else:
                        x[a, 0] = word
                for e in range(WIDTH):
                    d = q * WIDTH + e
                    for j in range(PROD_MAX_P):
                        if j < p:
                            w = float64(W[d, j])
                            for a in range(XW_ROWS):
                                acc[a, j] += x[a, e] * w
        elif nrows > 0:  # the ragged last rows
            for q in range(lane, Dv, 32):
                for a in range(XW_ROWS):
                    if a < nrows:
                        word = X[r0 + a, q]
                        if WIDTH == 2:
                            _store_pair(word, x, a, 0)
                        else:
                            x[a, 0] = word
                        for e in range(WIDTH):
                            d = q * WIDTH + e
                            for j in range(PROD_MAX_P):
                                if j < p:
                                    acc[a, j] += x[a, e] * W[d, j]
        # the 32 lanes' partial sums, added in lane order by one thread per (warp, row, col)
        sh = cuda.shared.array((XW_WARPS, XW_E, 33), float64)
        us = cuda.shared.array((XW_BLOCK_ROWS, PROD_MAX_P), float64)
        for a in range(XW_ROWS):
            for j in range(PROD_MAX_P):
                sh[wp, a * PROD_MAX_P + j, lane] = acc[a, j]
        cuda.syncthreads()
        if tid < XW_WARPS * XW_E:
            ww = tid // XW_E
            e = tid % XW_E
            a = e // PROD_MAX_P
            j = e % PROD_MAX_P
            local = ww * XW_ROWS + a
            r = row0 + local
            if j < p and local < rows_per_block and r < M:
                v = 0.0
                for k in range(32):
                    v += sh[ww, e, k]
                if STEP:
                    us[local, j] = v
                else:
                    out[r, j] = v
        if STEP:  # the block's samples, one thread each, from U in shared memory
            cuda.syncthreads()
            samples = rows_per_block // L
            i = cuda.blockIdx.x * samples + tid
            if tid < samples and i < M // L:
                z = cuda.local.array((MAX_L, MAX_P), float64)
                for a in range(L):
                    for j in range(p):
                        z[a, j] = us[tid * L + a, j] * scale
                _sample_step(i, z, L, p, beta, c, rank, Y, G, coef, loss, dZ, mode)

    return xw_kernel


def _xtg_kernel(WIDTH: int):
    """The xtg kernel for X read ``WIDTH`` columns per load (as :func:`_xw_kernel`)."""

    @cuda.jit(cache=True)
    def xtg_kernel(X, G, part, chunk):
        q = cuda.blockIdx.x * cuda.blockDim.x + cuda.threadIdx.x  # word column
        s = cuda.blockIdx.y
        M = X.shape[0]
        Dv = X.shape[1]
        p = G.shape[1]
        if q >= Dv:
            return
        acc = cuda.local.array((2, PROD_MAX_P), float64)
        x = cuda.local.array((XTG_UNROLL, 2), float64)
        for e in range(2):
            for j in range(PROD_MAX_P):
                acc[e, j] = 0.0
        m0 = s * chunk
        m1 = m0 + chunk if m0 + chunk < M else M
        m = m0
        while m + XTG_UNROLL <= m1:  # XTG_UNROLL unconditional loads in flight
            for u in range(XTG_UNROLL):
                word = X[m + u, q]
                if WIDTH == 2:
                    _store_pair(word, x, u, 0)
                else:
                    x[u, 0] = word
            for u in range(XTG_UNROLL):
                for j in range(PROD_MAX_P):
                    if j < p:
                        g = G[m + u, j]
                        for e in range(WIDTH):
                            acc[e, j] += x[u, e] * g
            m += XTG_UNROLL
        while m < m1:
            word = X[m, q]
            if WIDTH == 2:
                _store_pair(word, x, 0, 0)
            else:
                x[0, 0] = word
            for j in range(PROD_MAX_P):
                if j < p:
                    g = G[m, j]
                    for e in range(WIDTH):
                        acc[e, j] += x[0, e] * g
            m += 1
        for e in range(WIDTH):
            for j in range(PROD_MAX_P):
                if j < p:
                    part[s, q * WIDTH + e, j] = acc[e, j]

    return xtg_kernel


_XW_KERNELS = {(width, step): _xw_kernel(width, step) for width in (1, 2)
               for step in (False, True)}
_XTG_KERNELS = {width: _xtg_kernel(width) for width in (1, 2)}


def _address(a) -> int:
    """The address of ``a``'s first element (a cupy or a numpy array)."""
    iface = getattr(a, "__cuda_array_interface__", None) or a.__array_interface__
    return iface["data"][0]


def _words(X2, xp, pairs: bool):
    """``(X2 or its float64 view, columns per word)``: contiguous float32 rows of even
    length at an 8-byte-aligned address are read two columns per load."""
    if (pairs and X2.dtype == np.float32 and X2.shape[1] % 2 == 0
            and _address(X2) % 8 == 0):
        return X2.view(np.float64), 2
    return X2, 1


def _launch_xw(X2, W, out, xp, pairs, rows_per_block, blocks, step=None):
    """Run the xw kernel; ``step = (L, scale, beta, skip, rank, Y, G, coef, loss, dZ,
    mode)`` makes it finish each sample (``fused_products_step``)."""
    words, width = _words(X2, xp, pairs)
    if step is None:  # never read or written: uninitialised (no fill kernel on a GPU)
        dummy = xp.empty((1, 1, 1), dtype=X2.dtype)
        step_args = (1, 0.0, 0.0, 0.0, 1, dummy, dummy, 0.0,
                     xp.empty(1, dtype=np.float64), dummy, LOSS)
    else:
        step_args = step
    L, scale, beta, skip, rank, Y, G, coef, loss, dZ, mode = step_args
    dt = np.float64
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NumbaPerformanceWarning)
        _XW_KERNELS[width, step is not None][blocks, 32 * XW_WARPS, _stream(xp)](
            _device(words, xp), _device(W, xp), _device(out, xp), np.int64(rows_per_block),
            np.int64(L), dt(scale), dt(beta), dt(skip), np.int64(rank),
            _device(Y, xp), _device(G, xp), dt(coef), _device(loss, xp), _device(dZ, xp),
            np.int64(mode))


def _check_products(p: int) -> None:
    if not products_support(p):
        raise ValueError(f"the product kernels hold p <= {PROD_MAX_P} columns, got {p}")


def xw(X2, W, xp, pairs: bool = True):
    """``X2 @ W`` (``M x D`` times ``D x p``, ``p <= PROD_MAX_P``) in the dtype of ``X2``,
    accumulated in float64 (``pairs=False``: float32 read one element per load)."""
    M, D = X2.shape
    p = W.shape[1]
    _check_products(p)
    X2 = xp.ascontiguousarray(X2)
    W = xp.ascontiguousarray(W)
    out = xp.empty((M, p), dtype=X2.dtype)
    if M:
        _launch_xw(X2, W, out, xp, pairs, XW_BLOCK_ROWS, -(-M // XW_BLOCK_ROWS))
    return out


def fused_products_step(X2, W, seq_len: int, scale: float, beta: float, skip: float,
                        rank: int, xp, *, mode: int, Y=None, G=None, coef: float = 0.0,
                        pairs: bool = True):
    """:func:`fused_step` on ``U = X2 W`` (``X2``: ``n L x D``, the samples' rows in
    order) computed by the xw kernel, which then does each sample's algebra from U in
    shared memory (float64, one launch).  Returns what :func:`fused_step` returns."""
    M, D = X2.shape
    L = seq_len
    p = W.shape[1]
    n = M // L
    if n * L != M:
        raise ValueError(f"{M} rows of X are not whole sequences of length {L}")
    _check_network(L, p, rank)
    _check_products(p)
    X2 = xp.ascontiguousarray(X2)
    W = xp.ascontiguousarray(W)
    Y, G, loss, dZ = _step_arrays(n, L, p, X2.dtype, xp, mode, Y, G)
    samples = XW_BLOCK_ROWS // L
    if n:
        _launch_xw(X2, W, xp.empty((1, 1), dtype=X2.dtype), xp, pairs, samples * L,
                   -(-n // samples), (L, scale, beta, skip, rank, Y, G, coef, loss, dZ, mode))
    return _step_results(mode, loss, G, dZ)


def xtg(X2, G, xp, splits: int | None = None, pairs: bool = True):
    """``X2^T @ G`` (``D x p``) in the dtype of ``X2``: float64 partial sums over row
    chunks, added in a fixed order (``pairs=False``: float32 read one element per load)."""
    M, D = X2.shape
    p = G.shape[1]
    _check_products(p)
    X2 = xp.ascontiguousarray(X2)
    G = xp.ascontiguousarray(G)
    words, width = _words(X2, xp, pairs)
    threads = _warps_for(words.shape[1], 128)
    if splits is None:  # about 8 resident blocks of work per multiprocessor, counted in
        # columns (not words): the row chunks, hence the sums, do not depend on the loads
        sms = 1 if xp is np else cuda.get_current_device().MULTIPROCESSOR_COUNT
        splits = max(1, min(M // 64 or 1, (8 * sms * 16) // -(-D // 128)))
    bx = (words.shape[1] + threads - 1) // threads
    chunk = -(-M // splits) if M else 1
    splits = -(-M // chunk) if M else 1
    part = xp.zeros((splits, D, p), dtype=np.float64)
    if M and D:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NumbaPerformanceWarning)
            _XTG_KERNELS[width][(bx, splits), threads, _stream(xp)](
                _device(words, xp), _device(G, xp), _device(part, xp), np.int64(chunk))
    return part.sum(axis=0).astype(X2.dtype)
