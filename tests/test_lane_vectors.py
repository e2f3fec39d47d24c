"""Lane vectors (asymptotics/channels/_lane_vectors.py) and the fibre kernels' lane sums.

The sums are written with lane vectors; their scalar form (benchmarks/previous_kernels.py,
the code they replaced) does the same IEEE operations lane by lane, so the two must agree
to the bit, whatever the CPU's vector width.
"""

from __future__ import annotations

import numpy as np
import pytest
from numba import njit
from numba.core.errors import TypingError

from asymptotics.channels import _attention_kernels as kern
from asymptotics.channels._lane_vectors import (
    LANES,
    lanes_load,
    lanes_store,
    lanes_total,
    lanes_zero,
)
from benchmarks.previous_kernels import (
    scalar_lane_depth3_sums,
    scalar_lane_max,
    scalar_lane_two_token_moment_sums,
)


@njit
def _lanewise(x, y):
    """Per block of LANES: x + y, x - y, x * y (lane vectors), and Σ x·y in lane sums."""
    out = np.empty((3, x.size))
    acc = lanes_zero()
    for b in range(0, x.size, LANES):
        a, c = lanes_load(x, b), lanes_load(y, b)
        lanes_store(out[0], b, a + c)
        lanes_store(out[1], b, a - c)
        lanes_store(out[2], b, a * c)
        acc = acc + a * c
    return out, lanes_total(acc)


def _nodes(rng, n, rows):
    """Random node arrays with the kernels' edge cases: zero weights at the end (padding),
    signed zeros, large and tiny magnitudes."""
    x = rng.standard_normal((rows, n))
    x[:, -5:] = 0.0
    x[:, 3] = -0.0
    x[:, 11] = 1e300
    x[:, 12] = 1e-300
    return x


def test_lanes_are_ieee_operations_lane_by_lane_and_sum_in_lane_order():
    rng = np.random.default_rng(0)
    x, y = _nodes(rng, 8 * LANES, 2)
    y[5] = -0.0
    out, _ = _lanewise(x, y)
    np.testing.assert_array_equal(out[0], x + y)
    np.testing.assert_array_equal(out[1], x - y)
    with np.errstate(over="ignore"):  # 1e300 · 1e300 = inf in both
        np.testing.assert_array_equal(out[2], x * y)
    # the order of the sum, on terms of one scale (where another order changes the bits)
    x, y = rng.standard_normal((2, 8 * LANES))
    _, total = _lanewise(x, y)
    lanes = [0.0] * LANES
    for i, v in enumerate(x * y):
        lanes[i % LANES] += v
    expected = 0.0
    for v in lanes:
        expected += v
    assert total == expected  # lane j adds nodes j, j + 8, ... in order, then lanes 0..7
    assert total != float(np.sum(x * y)) or total != sum(x * y)  # another order differs


def test_lanes_load_refuses_strided_arrays():
    @njit
    def first(x):
        return lanes_total(lanes_load(x, 0))

    with pytest.raises(TypingError):
        first(np.arange(32.0)[::2])
    assert first(np.arange(16.0)) == sum(range(8))


@pytest.mark.parametrize("mode", [kern.FIBRE_MEANS, kern.FIBRE_LAYER_BLOCKS, kern.FIBRE_FULL])
def test_depth3_sums_equal_their_scalar_form_bit_for_bit(mode):
    rng = np.random.default_rng(mode)
    Z = _nodes(rng, 64 * LANES, 6)
    E, D, w = np.abs(_nodes(rng, 64 * LANES, 1)[0]), _nodes(rng, 64 * LANES, 1)[0], \
        rng.random(64 * LANES)
    got, ref = np.full(28, np.nan), np.full(28, np.nan)
    kern._depth3_sums(Z, E, D, w, mode, got)
    scalar_lane_depth3_sums(Z, E, D, w, mode, ref)
    np.testing.assert_array_equal(got, ref)


@pytest.mark.parametrize("with_second", [True, False])
def test_two_token_sums_equal_their_scalar_form_bit_for_bit(with_second):
    rng = np.random.default_rng(3)
    EP, EM, W, U0, U1, X0, X1 = _nodes(rng, 301 * LANES, 7)
    EP, EM = np.abs(EP), np.abs(EM)
    got, ref = np.full(15, np.nan), np.full(15, np.nan)
    kern._two_token_moment_sums(EP, EM, W, U0, U1, X0, X1, with_second, got)
    scalar_lane_two_token_moment_sums(EP, EM, W, U0, U1, X0, X1, with_second, ref)
    np.testing.assert_array_equal(got, ref)



@pytest.mark.parametrize("case", ["random", "all -inf", "signed zeros", "nan"])
def test_lane_max_equals_its_scalar_form_bit_for_bit(case):
    """numba's ``max`` (``b if b > a else a``) lane by lane: the same value and sign of zero
    as the scalar loop, also where every exponent is -inf (no node with weight) or NaN."""
    rng = np.random.default_rng(5)
    LP, LM = -np.abs(rng.standard_normal((2, 16 * LANES)))
    if case == "all -inf":
        LP[:], LM[:] = -np.inf, -np.inf
    elif case == "signed zeros":
        LP[:], LM[:] = -0.0, 0.0
        LP[9] = 0.0
    elif case == "nan":
        LP[7] = np.nan
    got, ref = kern._lane_max(LP, LM), scalar_lane_max(LP, LM)
    assert np.array_equal([got], [ref], equal_nan=True) and np.signbit(got) == np.signbit(ref)

