"""The solvers of asymptotics.solver on problems with known answers; failures are statuses."""

import math

import numpy as np
import pytest

from asymptotics.solver import SolveResult, bisect, brent, fd_jacobian, newton, solve_fixed_point


def circle_and_diagonal(x):
    """x0² + x1² = 4 and x0 = x1: the root (√2, √2) from a start in the first quadrant."""
    return np.array([x[0] ** 2 + x[1] ** 2 - 4.0, x[0] - x[1]])


def test_solve_result_reads_extras_as_attributes():
    res = SolveResult(np.zeros(1), True, "converged", extras={"bracket": (0.0, 1.0)})
    assert res.bracket == (0.0, 1.0) and math.isnan(res.residual) and res.evaluations == 0
    with pytest.raises(AttributeError):
        res.jacobian  # noqa: B018


def test_fd_jacobian_matches_the_analytic_one():
    x = np.array([0.7, -1.3])
    J = fd_jacobian(circle_and_diagonal, x, circle_and_diagonal(x))
    exact = np.array([[2 * x[0], 2 * x[1]], [1.0, -1.0]])
    np.testing.assert_allclose(J, exact, atol=2e-6)


@pytest.mark.parametrize("refresh", [False, True])
def test_broyden_newton_finds_the_known_root(refresh):
    res = newton(circle_and_diagonal, np.array([1.0, 0.5]), tol=1e-12, max_iter=50,
                 refresh=refresh)
    assert res.converged and res.status == "converged"
    np.testing.assert_allclose(res.x, [math.sqrt(2), math.sqrt(2)], atol=1e-11)
    assert res.residual < 1e-10
    # one forward-difference Jacobian (2 evaluations) plus one evaluation per iteration
    assert res.iterations < 15 and res.evaluations >= res.iterations + 2
    # Broyden's J need not approach the true Jacobian, only steer: its exact row stays
    np.testing.assert_allclose(res.jacobian[1], [1, -1], atol=1e-6)


def test_chord_newton_with_the_jacobian_at_the_root_converges_with_its_aux():
    root = np.array([math.sqrt(2), math.sqrt(2)])
    J = np.array([[2 * root[0], 2 * root[1]], [1.0, -1.0]])
    res = newton(lambda x: (circle_and_diagonal(x), x.sum()), np.array([1.3, 1.5]),
                 tol=1e-12, max_iter=50, jacobian=J, method="chord", aux=True)
    assert res.converged and res.aux == pytest.approx(2 * math.sqrt(2), abs=1e-11)
    np.testing.assert_allclose(res.x, root, atol=1e-11)
    np.testing.assert_array_equal(res.jacobian, J)  # the chord method keeps J
    assert res.evaluations == res.iterations  # no forward differences


def test_newton_without_a_root_returns_a_status_not_an_exception():
    res = newton(lambda x: x**2 + 1.0, np.array([0.5]), tol=1e-12, max_iter=20)
    assert not res.converged and res.status == "max-iter" and res.iterations == 20
    assert res.residual >= 1.0  # x² + 1 >= 1 everywhere
    left = newton(lambda x: x - 3.0, np.array([0.5]), tol=1e-12, max_iter=20,
                  in_domain=lambda x: 0 < x[0] < 1)
    assert not left.converged and left.status == "left-domain" and left.x[0] == pytest.approx(3)
    with np.errstate(invalid="ignore"):
        nan = newton(lambda x: np.sqrt(x) - 2.0, np.array([-1.0]), tol=1e-12, max_iter=20)
    assert not nan.converged and nan.status == "invalid-residual"
    singular = newton(lambda x: x - 1.0, np.array([0.0, 0.0]), tol=1e-12, max_iter=5,
                      jacobian=np.zeros((2, 2)))
    assert singular.status == "singular-jacobian"
    with pytest.raises(ValueError):
        newton(lambda x: x, np.array([0.0]), tol=1e-12, max_iter=5, method="secant")


def test_brent_finds_pi_over_two_and_reports_failures():
    res = brent(np.cos, 0.0, 2.0, xtol=1e-14, rtol=1e-14)
    assert res.converged and res.x == pytest.approx(math.pi / 2, abs=1e-13)
    assert res.residual < 1e-13 and res.evaluations >= 3 and res.bracket == (0.0, 2.0)
    shifted = brent(lambda x, c: x**3 - c, 0.0, 2.0, args=(2.0,), xtol=1e-14)
    assert shifted.x == pytest.approx(2 ** (1 / 3), abs=1e-13)
    same_sign = brent(np.cos, 0.0, 1.0)
    assert not same_sign.converged and same_sign.status == "not-bracketed"
    bad = brent(lambda x: math.nan if x > 1.5 else x - 1.7, 0.0, 2.0)
    assert not bad.converged and bad.status == "invalid-value"


def test_bisect_brackets_the_switch_point():
    res = bisect(lambda x: x > 0.3, 0.0, 1.0, 1e-6)
    lo, hi = res.bracket
    assert res.converged and lo <= 0.3 < hi and hi - lo <= 2e-6
    assert res.x == 0.5 * (lo + hi) and res.residual == 0.5 * (hi - lo)
    assert res.iterations == 19  # 2^-19 <= 2e-6 < 2^-18
    assert res.evaluations == 2 + res.iterations
    wrong = bisect(lambda x: x > 0.3, 0.5, 1.0, 1e-6)
    assert not wrong.converged and wrong.status == "not-bracketed"
    assert "no transition bracketed" in wrong.message


@pytest.mark.parametrize("anderson", [0, 3])
def test_fixed_point_stop_test_ends_the_solve_with_its_status(anderson):
    """x -> 0.5 + 0.5 x converges to 1; a stop test at 0.9 ends it there, converged."""
    res = solve_fixed_point(lambda x: 0.5 + 0.5 * x, np.array([0.0]), damping=1.0,
                            tol=1e-12, max_iter=100, anderson=anderson,
                            stop=lambda t: "reached" if t[0] > 0.9 else None)
    assert res.converged and res.status == "reached" and res.x[0] > 0.9
    plain = solve_fixed_point(lambda x: 0.5 + 0.5 * x, np.array([0.0]), damping=1.0,
                              tol=1e-12, max_iter=100, anderson=anderson)
    assert plain.converged and plain.status == "converged" and abs(plain.x[0] - 1) < 1e-11
    assert plain.evaluations >= plain.iterations and "tol" in plain.message
    assert isinstance(plain.history, list) and plain.damping == 1.0


def two_rates(x):
    """x0 -> 0.58 x0 + 0.5 x0² decays to its edge 0 (valid: x0 >= 0), x1 -> 0.92 x1 +
    0.0624 converges slowly to 0.78: the two rates of the SE map at α = 0.5."""
    return np.array([0.58 * x[0] + 0.5 * x[0] ** 2, 0.92 * x[1] + 0.08 * 0.78])


def test_anderson_needs_far_fewer_steps_than_damping_on_a_contraction_with_two_rates():
    valid = lambda x: bool(x[0] >= 0.0)  # noqa: E731
    x0 = np.array([1e-3, 0.75])
    kw = dict(damping=0.5, tol=1e-9, max_iter=2000, is_valid=valid)
    plain = solve_fixed_point(two_rates, x0, **kw)
    fast = solve_fixed_point(two_rates, x0, anderson=3, **kw)
    assert plain.converged and fast.converged
    # the plain step at the end is below tol: its distance to 0.78 at rate 0.96 is 25 tol
    assert abs(fast.x[1] - 0.78) < 1e-8 and abs(plain.x[1] - 0.78) < 5e-8
    assert 0.0 <= fast.x[0] < 5e-9  # its damped residual 0.21 x0 is below tol
    assert plain.iterations > 300 and fast.iterations < 20 and fast.accelerated_steps > 0  # 344, 7
    # the secant move overshoots x0 below its edge: cut back, not dropped
    dropped = solve_fixed_point(two_rates, x0, anderson=3, cut_back=lambda x: False,
                                **kw)
    assert dropped.converged and dropped.iterations >= 1.5 * fast.iterations  # 14, 7


def test_anderson_on_a_map_without_a_stable_fixed_point_reports_it():
    """x -> 2x + 1: the fixed point -1 repels, the steps grow and Anderson never starts
    (it waits for contracting steps); x -> x + 1 has no fixed point."""
    grow = solve_fixed_point(lambda x: 2.0 * x + 1.0, np.array([0.0]), anderson=3,
                             max_iter=60, is_valid=lambda x: bool(abs(x[0]) < 1e6))
    assert not grow.converged and grow.status in ("max-iter", "invalid-update")
    assert grow.accelerated_steps == 0 and abs(grow.x[0] + 1.0) > 1.0
    shift = solve_fixed_point(lambda x: x + 1.0, np.array([0.0]), anderson=3, max_iter=50)
    assert not shift.converged and shift.status == "max-iter" and shift.iterations == 50
    assert "cap" in shift.message and shift.x[0] == pytest.approx(25.0)


def test_anderson_falls_back_to_plain_steps_when_its_residual_grows():
    """A map that contracts near its fixed point 0.3 but whose secant slope misleads further
    out (a maximum of |T(x) - x| in between): the result is the plain iteration's 0.3."""
    def T(x):
        return 0.3 + 0.9 * (x - 0.3) + 0.2 * np.sin(6.0 * (x - 0.3)) ** 2
    res = solve_fixed_point(T, np.array([1.4]), anderson=3, tol=1e-12, max_iter=3000)
    ref = solve_fixed_point(T, np.array([1.4]), tol=1e-12, max_iter=20000)
    assert res.converged and ref.converged
    assert res.x[0] == pytest.approx(ref.x[0], abs=1e-9)
    assert res.evaluations < ref.evaluations


@pytest.mark.parametrize("anderson", [0, 3])
def test_fixed_point_tolerance_per_entry(anderson):
    """x -> (x0 / 2, 0.9 x1 + 0.1): a loose tolerance on x1 ends the solve sooner, while
    x0 is still held to its own; a tolerance that is not positive is refused."""
    T = lambda x: np.array([0.5 * x[0], 0.9 * x[1] + 0.1])  # noqa: E731
    x0 = np.array([1.0, 0.0])
    tight = solve_fixed_point(T, x0, damping=1.0, tol=1e-12, max_iter=2000, anderson=anderson)
    loose = solve_fixed_point(T, x0, damping=1.0, tol=np.array([1e-12, 1e-3]), max_iter=2000,
                              anderson=anderson)
    assert tight.converged and loose.converged and loose.iterations <= tight.iterations
    if not anderson:  # Anderson solves this linear map exactly either way
        assert loose.iterations < tight.iterations / 2
    assert abs(loose.x[0]) < 2e-12 and abs(loose.x[1] - 1.0) < 1e-2
    assert abs(tight.x[1] - 1.0) < 1e-10
    with pytest.raises(ValueError):
        solve_fixed_point(T, x0, tol=np.array([1e-9, 0.0]), anderson=anderson)


# the SE map's residual Jacobian at α = 0.9 (Q11, Q22): non-normal, slowest rate 0.92
SLOW_NON_NORMAL = np.array([[-0.2755, 12.55], [0.00197, -0.2102]])


def affine_map(G: np.ndarray, root: np.ndarray):
    """T(x) = x + G (x - root): fixed point ``root``, residual Jacobian ``G``."""
    return lambda x: x + G @ (x - root)


def test_seeded_secant_steps_reach_a_nearby_maps_fixed_point_in_a_few_steps():
    """From the fixed point of a nearby map, with that map's secant pairs (its Jacobian
    1 % off), the replicate-like map's fixed point in ≤ 5 steps, where Anderson with
    its safeguards needs several times more; the same point either way."""
    near_root, root = np.array([0.5889, 0.99466]), np.array([0.5954, 0.99480])
    dX = np.array([[1e-3, 2e-4], [-3e-6, 4e-6]])
    dG = 1.01 * SLOW_NON_NORMAL @ dX
    T = affine_map(SLOW_NON_NORMAL, root)
    kw = dict(damping=0.5, tol=1e-10, max_iter=500, anderson=3)
    seeded = solve_fixed_point(T, near_root, secant=(dX, dG), **kw)
    plain = solve_fixed_point(T, near_root, **kw)
    assert seeded.converged and plain.converged
    np.testing.assert_allclose(seeded.x, root, atol=2e-8)  # tol / (1 - 0.92), and better
    np.testing.assert_allclose(plain.x, root, atol=2e-8)
    assert seeded.iterations <= 5 and plain.iterations >= 3 * seeded.iterations
    # the last pairs come back, for the next map: secant pairs of this map (to round-off,
    # the last ones being ~1e-10) or the given ones (1 % off)
    dX1, dG1 = seeded.secant
    assert dX1.shape[0] == 2 and 1 <= dX1.shape[1] <= 3
    for dx, dg in zip(dX1.T, dG1.T, strict=True):
        np.testing.assert_allclose(dg, SLOW_NON_NORMAL @ dx, rtol=0.02,
                                   atol=1e-6 * np.abs(dg).max())


def test_seeded_secant_steps_to_a_repelling_point_give_way_to_the_safeguarded_solve():
    """Far from a fixed point (outside the seeded solve's use), the secant steps of
    ``T(x) = 0.3 + 0.9 (x - 0.3) + 0.2 sin²(6 (x - 0.3))`` from 1.4 converge to its
    repelling fixed point 1.4944; that is recognised from the last pairs, and the
    safeguarded solve from x0 reaches the attracting 1.2227, as without the pairs."""
    def T(x):
        return 0.3 + 0.9 * (x - 0.3) + 0.2 * np.sin(6.0 * (x - 0.3)) ** 2
    kw = dict(damping=0.5, tol=1e-12, max_iter=3000, anderson=3)
    seeded = solve_fixed_point(T, np.array([1.4]), secant=(np.array([[1e-3]]),
                                                            np.array([[5e-4]])), **kw)
    alone = solve_fixed_point(T, np.array([1.4]), **kw)
    assert seeded.converged and alone.converged
    assert seeded.x[0] == pytest.approx(alone.x[0], abs=1e-10)
    assert seeded.x[0] == pytest.approx(1.22274, abs=1e-5)
    assert seeded.iterations == seeded.evaluations > alone.iterations  # both solves count


def test_seeded_secant_pairs_are_checked():
    T = affine_map(-0.5 * np.eye(2), np.zeros(2))
    with pytest.raises(ValueError, match="anderson"):
        solve_fixed_point(T, np.ones(2), secant=(np.eye(2), np.eye(2)))
    with pytest.raises(ValueError, match="same shape"):
        solve_fixed_point(T, np.ones(2), secant=(np.eye(2), np.ones((2, 1))), anderson=3)
    with pytest.raises(ValueError, match="finite"):
        solve_fixed_point(T, np.ones(2), secant=(np.eye(2), np.full((2, 2), np.nan)),
                          anderson=3)
