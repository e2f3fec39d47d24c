"""The vectorisable exponential of the fibre kernels against libm's."""

from __future__ import annotations

import math

import numpy as np
import pytest
from numba import njit

from asymptotics.channels._vector_exp import EXP_MAX, EXP_UNDERFLOW, vexp


@njit  # not cached: a cached function's assembly cannot be inspected
def _vexp_array(x, out):
    for i in range(x.size):
        out[i] = vexp(x[i])


@njit
def _libm_exp_array(x, out):
    for i in range(x.size):
        out[i] = math.exp(x[i])


def _both(x):
    x = np.asarray(x, dtype=float)
    ours, libm = np.empty_like(x), np.empty_like(x)
    _vexp_array(x, ours)
    _libm_exp_array(x, libm)
    return ours, libm


@pytest.mark.parametrize("lo, hi", [(-1.0, 1.0), (-40.0, 0.0), (-708.0, 709.7),
                                    (EXP_UNDERFLOW, -708.0)])
def test_within_one_ulp_of_libm(lo, hi):
    """Normal and subnormal results: at most 1 ulp from glibc's exp (which is within
    1 ulp of the exact value), equal on most arguments."""
    x = np.random.default_rng(7).uniform(lo, hi, 200_000)
    ours, libm = _both(x)
    ulps = np.abs(ours - libm) / np.spacing(libm)
    assert ulps.max() <= 1.0
    assert np.mean(ours == libm) > 0.85


def test_special_values_and_range_ends():
    x = [0.0, -0.0, 1.0, np.inf, -np.inf, np.nan, EXP_MAX, EXP_MAX + 1e-9, 710.0,
         EXP_UNDERFLOW, EXP_UNDERFLOW - 1e-9, -800.0, -1e300, 1e300]
    ours, libm = _both(x)
    exact = np.array([v != 1.0 for v in x])
    np.testing.assert_array_equal(ours[exact], libm[exact])  # nan == nan here
    assert abs(ours[2] - math.e) <= np.spacing(math.e)


def _packed_multiplies(kernel) -> int:
    asm = next(iter(kernel.inspect_asm().values()))
    return sum("vmulpd" in line and ("ymm" in line or "zmm" in line)
               for line in asm.splitlines())


def test_the_loop_is_vectorised():
    """The point of vexp: LLVM turns a loop over it into packed (4 or 8 doubles)
    arithmetic, where a loop over math.exp has none (one libm call per element); and no
    fused multiply-add, so the same bytes on every x86-64 CPU."""
    from llvmlite import binding

    if not binding.get_host_cpu_features().get("avx2", False):
        pytest.skip("CPU without AVX2")
    _both([0.0])
    assert _packed_multiplies(_vexp_array) >= 8
    assert _packed_multiplies(_libm_exp_array) == 0
    asm = next(iter(_vexp_array.inspect_asm().values()))
    assert "fmadd" not in asm
