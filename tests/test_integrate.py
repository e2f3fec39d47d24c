import numpy as np
import pytest

from asymptotics.integrate import (
    gauss_hermite,
    monte_carlo,
    sinh_trapezoid_2d,
    sobol,
    sobol_replicates,
    trapezoid,
)

EXACT = np.exp(-0.5)  # E[cos(t0) t1^2] for t ~ N(0, I_2)


def _f(pts):
    return np.cos(pts[:, 0]) * pts[:, 1] ** 2


@pytest.mark.parametrize(
    "rule",
    [trapezoid(2, 41), gauss_hermite(2, 20), sinh_trapezoid_2d(41, 61, 9, 9, 0.3, True)],
    ids=["trapezoid", "gauss-hermite", "sinh-trapezoid"],
)
def test_deterministic_rules_are_accurate_and_error_bounds_hold(rule):
    value, err = rule.expect(_f(rule.points))
    assert abs(value - EXACT) < 1e-10
    assert abs(value - EXACT) <= err + 1e-15  # the embedded estimate bounds the error


@pytest.mark.parametrize(
    "rule",
    [sobol(2, 12), monte_carlo(2, 8192), sobol_replicates(2, 10, 8)],
    ids=["sobol", "mc", "rqmc"],
)
def test_random_rules_within_a_few_error_bars(rule):
    value, err = rule.expect(_f(rule.points))
    assert err > 0
    assert abs(value - EXACT) < 5 * err


def test_trapezoid_converges_under_refinement():
    errs = []
    for n in (11, 21, 41):
        r = trapezoid(1, n, 9.0)
        errs.append(abs(r.expect(np.cos(r.points[:, 0]))[0] - EXACT))
    assert errs[0] > 1e-4 and errs[2] < 1e-13


def test_rules_are_deterministic_for_a_seed():
    assert np.array_equal(sobol(3, 8, seed=4).points, sobol(3, 8, seed=4).points)
    assert not np.array_equal(sobol(3, 8, seed=4).points, sobol(3, 8, seed=5).points)


def test_bad_rule_arguments_rejected():
    with pytest.raises(ValueError):
        trapezoid(1, 10)
    with pytest.raises(ValueError):
        monte_carlo(1, 10, batches=16)
