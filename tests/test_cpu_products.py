"""AMP's two large products on the CPU (simulators/_cpu_products.py) equal numpy's to
rounding, on ragged sizes, and give the same bits whatever the number of threads."""

from __future__ import annotations

import numba
import numpy as np
import pytest

from simulators import _cpu_products as cp
from simulators import data


@pytest.mark.parametrize("n, L, D, p", [(37, 2, 45, 3), (5, 3, 8, 1), (1, 2, 7, 2),
                                        (200, 2, 1003, 2)])
def test_products_equal_numpy(n, L, D, p):
    """Rows not a multiple of ``ROWS``, D not a multiple of ``LANES``, fewer rows than
    ``CHUNKS``: ``x W / √D`` and ``xᵀ g / √D`` as :mod:`simulators.data` computes them."""
    rng = np.random.default_rng(n + D)
    X = rng.standard_normal((n, L, D))
    W = rng.standard_normal((D, p))
    G = rng.standard_normal((n, L, p))
    for got, ref in ((cp.project(X, W), data.project(X, W)),
                     (cp.project_transpose(X, G), data.project_transpose(X, G))):
        assert got.shape == ref.shape
        np.testing.assert_allclose(got, ref, rtol=1e-13, atol=1e-13 * np.abs(ref).max())


def test_products_do_not_depend_on_the_number_of_threads():
    rng = np.random.default_rng(1)
    X = rng.standard_normal((300, 2, 517))
    W = rng.standard_normal((517, 2))
    G = rng.standard_normal((300, 2, 2))
    threads = numba.get_num_threads()
    try:
        runs = []
        for k in sorted({1, threads}):
            numba.set_num_threads(k)
            runs.append((cp.project(X, W), cp.project_transpose(X, G)))
    finally:
        numba.set_num_threads(threads)
    for a, b in zip(runs[0], runs[-1], strict=True):
        assert np.array_equal(a, b)
    # and a single-threaded sum in another order is not bitwise equal (the test can fail)
    assert not np.array_equal(runs[0][1], data.project_transpose(X, G))
