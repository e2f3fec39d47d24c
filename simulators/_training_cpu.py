"""The per-sample algebra of attention training on the CPU: the GPU kernel's device function
compiled by numba for the CPU.

Between the two products with X, a training step does per sample ``mu`` (``L x p``)

    Z = scale U,   s_k = B_{k-1} z_k,   P_k = softmax_rows(beta s_k s_k^T),
    B_k = (P_k + c I) B_{k-1},   y = P_depth,   loss_mu = ||y - y*_mu||_F^2,
    G = coef (y - y*_mu),   bar Z  by the backward recursion,

as :mod:`simulators._training_cuda` documents.  The array path does it in about 40 numpy
operations over all samples (3.8 ms a step at N = 7 500, L = 2: as long as the two
products); here one loop over the samples runs ``_training_cuda._sample_step`` itself,
the one definition of the algebra, compiled for the CPU: its ``cuda.local.array`` scratch
arrays become arrays on the stack (:func:`stack_array`), nothing else changes.  Samples are
independent and the per-sample losses are summed by the caller in a fixed order, so the
results do not depend on the number of threads.
"""

from __future__ import annotations

import types as pytypes

import numpy as np
from numba import float64, njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic
from numba.np.arrayobj import populate_array

from asymptotics import _kernel_cache

from . import _training_cuda as tc

MAX_L, MAX_P = tc.MAX_L, tc.MAX_P


@intrinsic(prefer_literal=True)
def stack_array(typingctx, shape, dtype):
    """A C-ordered array of constant ``shape`` and number class ``dtype`` on the stack of
    the calling function (one ``alloca`` in its entry block; uninitialised, as
    ``cuda.local.array``)."""
    dims = [getattr(s, "literal_value", None) for s in getattr(shape, "types", ())]
    if not dims or None in dims or not isinstance(dtype, types.NumberClass):
        return None
    array_type = types.Array(dtype.dtype, len(dims), "C")

    def codegen(context, builder, signature, args):
        item = context.get_data_type(dtype.dtype)
        data = cgutils.alloca_once(builder, item, size=int(np.prod(dims)))
        itemsize = context.get_abi_sizeof(item)
        strides = [itemsize * int(np.prod(dims[k + 1:])) for k in range(len(dims))]
        intp = context.get_value_type(types.intp)
        array = context.make_array(array_type)(context, builder)
        populate_array(array, data=data, shape=[intp(d) for d in dims],
                       strides=[intp(s) for s in strides], itemsize=intp(itemsize),
                       meminfo=None)
        return array._getvalue()

    return array_type(shape, dtype), codegen


def _compiled_for_cpu(device_function):
    """``device_function``'s Python function compiled by numba for the CPU, with its
    global ``cuda`` replaced by a module whose ``local.array`` is :func:`stack_array`."""
    py_func = getattr(device_function, "py_func", None) or device_function.fn  # simulator
    local = pytypes.ModuleType("local")
    local.array = stack_array
    cuda_on_cpu = pytypes.ModuleType("cuda_on_cpu")
    cuda_on_cpu.local = local
    clone = pytypes.FunctionType(py_func.__code__, {**py_func.__globals__, "cuda": cuda_on_cpu},
                                 py_func.__name__, py_func.__defaults__, py_func.__closure__)
    return njit(clone)


_sample_step = _compiled_for_cpu(tc._sample_step)


@njit(cache=True)
def _one_sample(i, U, scale, beta, c, rank, Y, G, coef, loss, dZ, mode):
    L = U.shape[1]
    p = U.shape[2]
    z = stack_array((MAX_L, MAX_P), float64)
    for a in range(L):
        for j in range(p):
            z[a, j] = U[i, a, j] * scale
    _sample_step(i, z, L, p, beta, c, rank, Y, G, coef, loss, dZ, mode)


@njit(parallel=True, cache=True)
def _samples(U, scale, beta, c, rank, Y, G, coef, loss, dZ, mode):
    # the scratch arrays are allocated per sample in _one_sample: a parallel loop's body
    # is typed again without the constant shapes the stack arrays need
    for i in prange(U.shape[0]):
        _one_sample(i, U, scale, beta, c, rank, Y, G, coef, loss, dZ, mode)


# the kernels above inline _training_cuda._sample_step, which numba's cache does not track
_kernel_cache.drop_stale_cached_kernels(_samples, (tc.__file__,))


def fused_step(U, scale: float, beta: float, skip: float, rank: int, *, mode: int, Y=None,
               G=None, coef: float = 0.0):
    """:func:`simulators._training_cuda.fused_step` on numpy arrays, on the CPU (numba's
    threads): the same arguments (no ``xp``) and results."""
    n, L, p = U.shape
    tc._check_network(L, p, rank)
    U = np.ascontiguousarray(U)
    Y, G, loss, dZ = tc._step_arrays(n, L, p, U.dtype, np, mode, Y, G)
    if n > 0:
        _samples(U, float(scale), float(beta), float(skip), np.int64(rank), Y, G,
                 float(coef), loss, dZ, np.int64(mode))
    return tc._step_results(mode, loss, G, dZ)
