"""The two large products of Bayes-AMP on the CPU, in numba's thread pool.

AMP alternates the products with the data, ``ω = x Ŵ / √D`` and ``xᵀ g / √D`` (N·L x D
times D x p, p small), with the posterior integrals, a numba kernel in parallel.  Done by
BLAS, the products leave OpenBLAS's threads spinning for a while after each call, on the
cores numba's threads then need: on 2 cores an AMP iteration of the default model took
twice as long as with one BLAS thread (BENCHMARKS.md, issue 16, session 9).  Here the
products run in numba's own pool, one pool for the whole iteration, and each output entry
is summed in a fixed order (``LANES`` partial sums along D for ``x Ŵ``; ``CHUNKS`` chunks of
rows, each in order, for ``xᵀ g``), so the results do not depend on the number of threads.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

LANES = 8  # partial sums of a dot product (one AVX-512 register of doubles)
ROWS = 16  # rows of x per task of x Ŵ
CHUNKS = 32  # row chunks of xᵀ g, summed apart and then in order


@njit(parallel=True, cache=True)
def _rows_times(X2, WT, scale, out):
    """``out[r, j] = scale Σ_d X2[r, d] WT[j, d]``, each sum in ``LANES`` partial sums
    (lane ``l`` takes ``d ≡ l mod LANES`` below the last full block, the rest after); one
    dot product per column, the row read again from cache."""
    M, D = X2.shape
    p = WT.shape[0]
    full = D - D % LANES
    for task in prange((M + ROWS - 1) // ROWS):
        acc = np.empty(LANES)
        for r in range(task * ROWS, min(M, (task + 1) * ROWS)):
            for j in range(p):
                for lane in range(LANES):
                    acc[lane] = 0.0
                for b in range(0, full, LANES):
                    for lane in range(LANES):
                        acc[lane] += X2[r, b + lane] * WT[j, b + lane]
                tot = 0.0
                for lane in range(LANES):
                    tot += acc[lane]
                for d in range(full, D):
                    tot += X2[r, d] * WT[j, d]
                out[r, j] = tot * scale


@njit(parallel=True, cache=True)
def _columns_times(X2, G, scale, parts, out):
    """``out[d, j] = scale Σ_r X2[r, d] G[r, j]``: ``parts.shape[0]`` chunks of rows (a
    number fixed by the caller, not by the threads), each summed in row order into its
    own ``parts[c]`` (contiguous rows, a loop over d that vectorises), then the chunks
    added in order."""
    M, D = X2.shape
    p = G.shape[1]
    chunks = parts.shape[0]
    size = (M + chunks - 1) // chunks
    for c in prange(chunks):
        acc = parts[c]
        acc[:, :] = 0.0
        for r in range(c * size, min(M, (c + 1) * size)):
            for j in range(p):
                g = G[r, j]
                for d in range(D):
                    acc[j, d] += X2[r, d] * g
    for j in prange(p):
        for d in range(D):
            tot = 0.0
            for c in range(chunks):
                tot += parts[c, j, d]
            out[d, j] = tot * scale


def project(X, W):
    """``X W / √D`` for ``X`` (n, L, D), as :func:`simulators.data.project`."""
    n, L, D = X.shape
    X2 = np.ascontiguousarray(X.reshape(n * L, D))
    out = np.empty((n * L, W.shape[1]), dtype=np.result_type(X, W))
    _rows_times(X2, np.ascontiguousarray(W.T), 1.0 / math.sqrt(D), out)
    return out.reshape(n, L, W.shape[1])


def project_transpose(X, G):
    """``Xᵀ G / √D`` (D x p) for ``X`` (n, L, D), ``G`` (n, L, p), as
    :func:`simulators.data.project_transpose`."""
    n, L, D = X.shape
    X2 = np.ascontiguousarray(X.reshape(n * L, D))
    G2 = np.ascontiguousarray(G.reshape(n * L, G.shape[-1]))
    p = G2.shape[1]
    out = np.empty((D, p), dtype=np.result_type(X, G))
    parts = np.empty((min(CHUNKS, max(n * L, 1)), p, D))
    _columns_times(X2, G2, 1.0 / math.sqrt(D), parts, out)
    return out
