"""The vectorisable exponential of the fibre kernels against libm's."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
from numba import njit

from asymptotics.channels._vector_exp import EXP_MAX, EXP_UNDERFLOW, fused_multiply_add, vexp


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


def _packed(kernel, op: str) -> int:
    asm = next(iter(kernel.inspect_asm().values()))
    return sum(op in line and ("ymm" in line or "zmm" in line) for line in asm.splitlines())


def test_the_loop_is_vectorised():
    """The point of vexp: LLVM turns a loop over it into packed (4 or 8 doubles)
    arithmetic, the 13 Horner steps as packed fused multiply-adds, where a loop over
    math.exp has none (one libm call per element)."""
    from llvmlite import binding

    features = binding.get_host_cpu_features()
    if not (features.get("avx2", False) and features.get("fma", False)):
        pytest.skip("CPU without AVX2 and FMA")
    _both([0.0])
    assert _packed(_vexp_array, "vfmadd") >= 13
    assert _packed(_libm_exp_array, "vmulpd") == 0
    assert _packed(_libm_exp_array, "vfmadd") == 0


@njit
def _fma_array(a, b, c, out):
    for i in range(a.size):
        out[i] = fused_multiply_add(a[i], b[i], c[i])


def test_fused_multiply_add_rounds_once():
    """``a * b + c`` to the nearest double of the exact value (IEEE fusedMultiplyAdd: the
    same bits on every CPU), where a multiply then an add can differ."""
    rng = np.random.default_rng(3)
    a, b = rng.uniform(-2.0, 2.0, (2, 2000))
    c = -(a * b) * rng.uniform(0.999, 1.001, 2000)  # cancellation: rounding twice shows
    eps = 2.0**-30
    a = np.append(a, 1.0 + eps)
    b = np.append(b, 1.0 - eps)
    c = np.append(c, -1.0)
    out = np.empty_like(a)
    _fma_array(a, b, c, out)
    exact = [float(Fraction(x) * Fraction(y) + Fraction(z))
             for x, y, z in zip(a, b, c, strict=True)]
    np.testing.assert_array_equal(out, exact)
    assert out[-1] == -(2.0**-60) and a[-1] * b[-1] + c[-1] == 0.0
    assert np.mean(out != a * b + c) > 0.1
