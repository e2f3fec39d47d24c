import numpy as np
import pytest

from asymptotics.channels.attention import AttentionChannel
from asymptotics.channels.closed_form import LinearChannel, PhaseRetrievalChannel, SignChannel
from asymptotics.integrate import gauss_hermite
from asymptotics.solver import solve_fixed_point
from asymptotics.state_evolution import (
    SESettings,
    StateEvolution,
    _replicate_fixed_point_error,
    _solve,
    initial_overlap,
    linear_channel_fixed_point,
    overlap_error,
    replicate_rules,
    run_state_evolution,
)


@pytest.mark.parametrize("alpha,noise", [(0.3, 0.1), (1.0, 0.5), (2.5, 0.05)])
def test_linear_channel_fixed_point_matches_closed_form(alpha, noise):
    res = run_state_evolution(LinearChannel(noise), alpha, tol=1e-13, max_iter=5000)
    assert res.converged
    assert abs(res.Q[0, 0] - linear_channel_fixed_point(alpha, noise)) < 1e-8
    # Q̂ = α / (Δ + 1 - Q) at the fixed point
    assert abs(res.Qhat[0, 0] - alpha / (noise + 1 - res.Q[0, 0])) < 1e-8


def test_sign_perceptron_matches_independent_scalar_quadrature():
    alpha = 1.3
    res = run_state_evolution(SignChannel(), alpha, tol=1e-12, max_iter=2000)
    assert res.converged
    # independent scalar SE: Q̂ = α/(1-q) ∫Dξ 2 N(√(q/(1-q)) ξ)² / Φ(√(q/(1-q)) ξ) ... written
    # directly as a 1-D integral over ξ with scipy's normal functions
    from scipy.integrate import quad
    from scipy.stats import norm

    def qhat(q):
        s = np.sqrt(q / (1 - q))

        def integrand(x):
            return 2 * norm.pdf(x) * norm.pdf(s * x) ** 2 / norm.cdf(s * x)

        return alpha / (1 - q) * quad(integrand, -12, 12, epsabs=1e-13, limit=200)[0]

    q = 0.5
    for _ in range(3000):
        qh = qhat(q)
        new = qh / (1 + qh)
        if abs(new - q) < 1e-13:
            break
        q = 0.5 * q + 0.5 * new
    assert abs(res.Q[0, 0] - q) < 1e-8


def test_phase_retrieval_overlap_zero_below_half_positive_above():
    below = run_state_evolution(PhaseRetrievalChannel(), 0.4, tol=1e-11, max_iter=5000)
    above = run_state_evolution(PhaseRetrievalChannel(), 0.7, tol=1e-11, max_iter=5000)
    assert below.converged and above.converged
    assert below.Q[0, 0] < 1e-6
    assert above.Q[0, 0] > 0.05


def test_solver_reports_non_convergence():
    res = solve_fixed_point(lambda x: -x + 1.0, np.array([0.3]), damping=1.0, max_iter=20)
    assert not res.converged and res.status == "max-iter"
    bad = solve_fixed_point(lambda x: x * np.nan, np.array([0.3]), max_iter=5)
    assert not bad.converged and bad.status == "invalid-update"


def test_solver_rolls_back_invalid_updates():
    # the undamped update leaves [0, 1): rollback halves the damping until it is valid
    res = solve_fixed_point(
        lambda x: 1.5 - x,
        np.array([0.2]),
        damping=1.0,
        max_iter=200,
        is_valid=lambda x: bool(0 <= x[0] < 1),
    )
    assert res.converged and abs(res.x[0] - 0.75) < 1e-8 and res.rollbacks >= 1


def test_attention_se_map_is_pure_and_diagonal():
    ch = AttentionChannel(inner_rule=gauss_hermite(2, 12))
    se = StateEvolution(ch, 1.0, SESettings(sobol_log2=8))
    Q = np.diag([0.2, 0.5])
    a, b = se.qhat(Q), se.qhat(Q)
    np.testing.assert_array_equal(a.Qhat, b.Qhat)
    assert a.Qhat[0, 1] == 0 and np.all(np.diag(a.Qhat) > 0)
    assert np.all(a.error >= 0)


def test_bad_inputs_rejected():
    with pytest.raises(ValueError):
        StateEvolution(LinearChannel(), -1.0)
    with pytest.raises(ValueError):
        StateEvolution(LinearChannel(), float("nan"))
    se = StateEvolution(LinearChannel(), 1.0)
    with pytest.raises(ValueError):
        se.qhat(np.array([[1.2]]))
    with pytest.raises(ValueError):
        se.qhat(np.ones((2, 2)) * 0.1)


def test_aitken_extrapolation_speeds_up_slow_contractions_to_the_same_point():
    A = np.array([[0.98, 0.0], [0.0, 0.5]])
    b = np.array([0.02, 0.5])
    plain = solve_fixed_point(lambda x: A @ x + b, np.zeros(2), damping=1.0, tol=1e-10,
                              max_iter=5000)
    fast = solve_fixed_point(lambda x: A @ x + b, np.zeros(2), damping=1.0, tol=1e-10,
                             max_iter=5000, extrapolate=True)
    assert plain.converged and fast.converged
    np.testing.assert_allclose(fast.x, [1.0, 1.0], atol=1e-8)
    assert fast.iterations < plain.iterations / 5


def test_aitken_extrapolation_keeps_the_branch_of_the_plain_iteration():
    """x -> 1.3 x (1 - x) from 1e-3: 0 is an unstable fixed point; both runs must end at
    the stable one, 0.3/1.3, as the plain iteration does."""
    for extrapolate in (False, True):
        res = solve_fixed_point(lambda x: 1.3 * x * (1 - x), np.array([1e-3]), damping=0.5,
                                tol=1e-12, max_iter=5000, extrapolate=extrapolate)
        assert res.converged and abs(res.x[0] - 0.3 / 1.3) < 1e-10


def test_anderson_acceleration_reaches_the_plain_fixed_point_in_few_steps():
    A = np.array([[0.95, 0.03], [0.01, 0.9]])
    b = np.array([0.1, 0.2])
    exact = np.linalg.solve(np.eye(2) - A, b)
    plain = solve_fixed_point(lambda x: A @ x + b, np.zeros(2), damping=1.0, tol=1e-10,
                              max_iter=5000)
    fast = solve_fixed_point(lambda x: A @ x + b, np.zeros(2), damping=1.0, tol=1e-10,
                             max_iter=5000, anderson=3)
    assert plain.converged and fast.converged
    np.testing.assert_allclose(fast.x, exact, atol=1e-8)
    assert fast.iterations <= 10 < plain.iterations / 20
    assert fast.accelerated_steps > 0


@pytest.mark.parametrize("mu", [1.3, 1.02])
def test_anderson_and_escape_steps_keep_the_branch_of_the_plain_iteration(mu):
    """x -> μ x (1 - x) from 1e-3 leaves the unstable 0 slowly (near the bifurcation μ = 1
    very slowly); the accelerated run must still end at the stable 1 - 1/μ."""
    plain = solve_fixed_point(lambda x: mu * x * (1 - x), np.array([1e-3]), damping=0.5,
                              tol=1e-12, max_iter=20000)
    fast = solve_fixed_point(lambda x: mu * x * (1 - x), np.array([1e-3]), damping=0.5,
                             tol=1e-12, max_iter=20000, anderson=3)
    for res in (plain, fast):
        assert res.converged and abs(res.x[0] - (1 - 1 / mu)) < 1e-9
    assert fast.iterations < plain.iterations / 5
    assert fast.extrapolations > 0  # escape jumps were taken


def test_escape_jumps_only_near_the_unstable_point():
    """Steps growing by r = 1.01 imply an unstable point |d|/(r - 1) away: 0.001 away the
    jump is the linear escape, 0.39 away (a slow start between two fixed points, as at
    α = 0.9 of the attention curve) it would overshoot, so none is taken."""
    from asymptotics.solver import ESCAPE_GROWTH, _escape_jump

    for d0, jumps in ((1e-5, True), (3.9e-3, False)):
        steps = [np.array([d0 * 1.01**k]) for k in range(3)]
        x = np.array([0.5])
        jump = _escape_jump(x, steps, None)
        assert (jump is not None) == jumps
        if jumps:  # the distance from the unstable point grows ESCAPE_GROWTH-fold
            dist = steps[2][0] / 0.01
            assert ESCAPE_GROWTH <= (jump[0] - x[0] + dist) / dist < 1.05 * ESCAPE_GROWTH


def test_anderson_falls_back_to_the_plain_step_where_the_map_is_not_finite():
    """An accelerated point outside the map's domain (here: the first point reached by a
    jump longer than any plain step) must not end the solve as ``invalid-update``."""
    last = [None]
    refused = []

    def update(x):
        jump = last[0] is not None and abs(x[0] - last[0]) > 0.05
        last[0] = x[0]
        if jump and not refused:
            refused.append(x[0])
            return np.array([np.nan])
        return 0.5 + 0.9 * (x - 0.5)

    res = solve_fixed_point(update, np.array([0.0]), damping=0.5, tol=1e-12, max_iter=2000,
                            anderson=3)
    assert refused and res.converged and abs(res.x[0] - 0.5) < 1e-10
    assert res.rollbacks >= 1 and res.accelerated_steps > 0
    # the plain iteration itself hitting a non-finite update is still reported
    bad = solve_fixed_point(lambda x: np.array([np.nan]), np.array([0.0]), anderson=3)
    assert bad.status == "invalid-update" and not bad.converged


def test_anderson_stays_at_a_stable_zero_below_the_bifurcation():
    res = solve_fixed_point(lambda x: 0.9 * x * (1 - x), np.array([1e-3]), damping=0.5,
                            tol=1e-12, max_iter=5000, anderson=3)
    assert res.converged and abs(res.x[0]) < 1e-10


def test_fixed_point_standard_error_covers_the_spread_over_seeds():
    """Randomised QMC: the replicate-map fixed-point error is larger than the error of one
    map evaluation (amplification near the layer's onset) and matches the spread of the
    fixed point over independent seeds."""
    from asymptotics.channels.attention import AttentionChannel
    from asymptotics.state_evolution import SESettings, overlap_error

    ch = AttentionChannel(depth=2, seq_len=2)
    q22, se22, map22 = [], [], []
    for seed in range(6):
        res = run_state_evolution(ch, 0.5, np.diag([0.0, 0.7]), tol=1e-7,
                                  settings=SESettings(sobol_log2=9, seed=seed))
        assert res.converged and abs(res.Q[0, 0]) < 1e-20
        q22.append(res.Q[1, 1])
        se22.append(res.Q_stderr[1, 1])
        map22.append(overlap_error(res.Qhat, res.Qhat_error)[1, 1])
    assert np.mean(se22) > 2.5 * np.mean(map22)
    ratio = np.std(q22, ddof=1) / np.mean(se22)
    assert 0.4 < ratio < 2.5, (q22, se22)


def test_noiseless_attention_reaches_perfect_recovery_above_the_counting_bound():
    """y determines 2 numbers per sequence, the weights 2 per dimension: past α = 1 the
    informed iteration goes to Q = I (recognised, not iterated on ever narrower
    posteriors); at α = 0.5 it does not."""
    from asymptotics.channels.attention import AttentionChannel
    from asymptotics.state_evolution import SESettings

    ch = AttentionChannel(depth=2, seq_len=2)
    settings = SESettings(sobol_log2=9)
    above = run_state_evolution(ch, 1.3, "informed", settings=settings, tol=1e-6)
    assert above.status == "perfect-recovery"
    np.testing.assert_array_equal(above.Q, np.eye(2))
    below = run_state_evolution(ch, 0.5, "informed", settings=settings, tol=1e-6)
    assert below.status == "converged" and below.Q[1, 1] < 0.95


def test_discrete_prior_reaching_perfect_recovery_is_a_solver_status():
    """Rademacher prior, sign channel, α = 2.5 (past both transitions, IT 1.249 and AMP
    1.493): the informed iteration reaches Q = I, reported by the fixed-point solver as
    the status ``perfect-recovery`` (converged), which run_state_evolution turns into
    ``Q = I``, ``Q̂ = ∞``."""
    from asymptotics.priors import RademacherPrior
    from asymptotics.state_evolution import _solve, initial_overlap

    se = StateEvolution(SignChannel(), 2.5, prior=RademacherPrior())
    res = _solve(se, initial_overlap(1, "informed"), damping=0.5, tol=1e-8, max_iter=500,
                 acceleration="anderson")
    assert res.converged and res.status == "perfect-recovery"
    assert 1.0 - res.x[0, 0] < 1e-10 and res.evaluations == res.iterations
    full = run_state_evolution(SignChannel(), 2.5, "informed", prior=RademacherPrior())
    assert full.status == "perfect-recovery" and full.converged
    np.testing.assert_array_equal(full.Q, np.eye(1))
    assert np.isinf(full.Qhat[0, 0])


def test_outer_moments_take_a_diagonal_or_a_matrix_overlap():
    """ω = Q^{1/2} ξ, Z* = ω + V^{1/2} u: per entry for a diagonal ``q``, by the symmetric
    square roots for a matrix; the same nodes and moments for ``Q = diag(q)``."""
    from asymptotics.state_evolution import outer_moments

    ch = AttentionChannel(inner_rule=gauss_hermite(2, 12))
    rng = np.random.default_rng(0)
    xi, u = rng.standard_normal((2, 50, 2, 2))
    q = np.array([0.3, 0.8])
    om_d, fm_d = outer_moments(ch, xi, u, q)
    om_m, fm_m = outer_moments(ch, xi, u, np.diag(q))
    np.testing.assert_allclose(om_d, np.sqrt(q) * xi, rtol=1e-15)
    np.testing.assert_allclose(om_m, om_d, rtol=1e-14)
    np.testing.assert_allclose(fm_m.mean, fm_d.mean, rtol=1e-10, atol=1e-12)
    assert fm_d.mean.shape == (2, 50, 2, 2)  # primary and embedded inner weight sets


@pytest.mark.parametrize("depth,L,Q", [(2, 2, [0.3, 0.6]), (3, 2, [0.2, 0.3, 0.5]),
                                       (2, 3, [0.1, 0.4])])
def test_attention_qhat_on_the_array_namespace_matches_the_numba_kernels(depth, L, Q):
    """The numpy (and, on a GPU, cupy) path of the SE map gives the numba numbers: exactly
    on the same shifted inner nodes, within the inner error on the shared ones."""
    from asymptotics.channels.attention import AttentionChannel
    from asymptotics.integrate import gauss_hermite
    from asymptotics.state_evolution import SESettings

    inner = None if (depth, L) == (2, 2) else gauss_hermite((depth - 1) * L, 4)
    ch = AttentionChannel(depth=depth, seq_len=L, skip=0.8, inner_rule=inner)
    Qm = np.diag(Q)
    fast = StateEvolution(ch, 0.7, SESettings(sobol_log2=6)).qhat(Qm, inner_error=False)
    ref = StateEvolution(ch, 0.7, SESettings(sobol_log2=6, cpu_kernel="array")).qhat(
        Qm, inner_error=False)
    np.testing.assert_allclose(np.diag(ref.Qhat), np.diag(fast.Qhat), rtol=2e-5)
    assert abs(ref.psi_out - fast.psi_out) < 2e-5


@pytest.mark.gpu
def test_attention_se_step_on_the_gpu_matches_numpy():
    from asymptotics.channels.attention import AttentionChannel
    from asymptotics.state_evolution import SESettings

    ch = AttentionChannel(depth=2, seq_len=2)
    Q = np.diag([0.3, 0.6])
    cpu = StateEvolution(ch, 0.7, SESettings(sobol_log2=9)).qhat(Q)  # same kernels as the GPU
    gpu = StateEvolution(ch, 0.7, SESettings(sobol_log2=9, device="gpu")).qhat(Q)
    np.testing.assert_allclose(gpu.Qhat, cpu.Qhat, rtol=1e-10, atol=1e-12)


def test_unknown_se_device_is_rejected():
    from asymptotics.state_evolution import SESettings

    with pytest.raises(ValueError, match="device"):
        SESettings(device="tpu")


def test_an_unconverged_point_has_no_error_bar():
    res = run_state_evolution(PhaseRetrievalChannel(), 0.7, tol=1e-14, max_iter=3)
    assert res.status == "max-iter" and not res.converged
    assert np.all(np.isnan(res.Q_stderr))


def test_a_solve_keeps_one_fibre_kernel_with_a_one_way_switch():
    """The shared-node kernel is locked at the start of a solve and kept inside the
    hysteresis band (the map must not change where the automatic choice would, which made
    α = 0.95 oscillate for 500 steps); below the band it switches once, for good."""
    from asymptotics.state_evolution import SESettings, StateEvolution

    ch = AttentionChannel(depth=2, seq_len=2)
    se = StateEvolution(ch, 0.9, SESettings(sobol_log2=7))
    se.lock_inner_path(np.diag([0.7, 0.9]))
    assert se.inner_path == "shared"
    inside = np.diag([0.85, 0.9])  # v1 = 0.15: auto would take the general kernel here
    shared = se.update(inside)
    assert se.inner_path == "shared"
    general = StateEvolution(ch, 0.9, SESettings(sobol_log2=7), inner_path="general")
    assert not np.array_equal(shared, general.update(inside))  # the kernels differ ...
    np.testing.assert_allclose(shared, general.update(inside), atol=3e-4)  # ... within 3e-4
    se.update(np.diag([0.95, 0.9]))  # v1 = 0.05, below the band: switch
    assert se.inner_path == "general"
    np.testing.assert_array_equal(se.update(np.diag([0.7, 0.9])),
                                  general.update(np.diag([0.7, 0.9])))  # and no way back
    se.lock_inner_path(np.diag([0.7, 0.9]))  # a locked map stays locked
    assert se.inner_path == "general"
    with pytest.raises(ValueError, match="inner_path must be one of"):
        StateEvolution(ch, 0.9, inner_path="fast")



def test_anderson_trust_region_near_a_maximum_of_the_residual(monkeypatch):
    """q -> q + ε q (1 - q/q*) from q*/2, where |T(q) - q| is largest and the secant slope
    flat (α = 0.2 of the attention curve): unlimited Anderson moves overshoot to many times
    q*, go astray and restart, again and again; the trust region converges in few steps."""
    import asymptotics.solver as solver

    q_star, eps = 0.0046, 0.0063

    def update(x):
        return x + eps * x * (1.0 - x / q_star)

    def solve():
        return solve_fixed_point(update, np.array([q_star / 2]), damping=0.5, tol=1e-10,
                                 max_iter=3000, anderson=3)

    fast = solve()
    assert fast.converged and abs(fast.x[0] - q_star) < 1e-7 and fast.iterations < 60
    monkeypatch.setattr(solver, "ANDERSON_TRUST_START", np.inf)
    monkeypatch.setattr(solver, "ANDERSON_TRUST_MIN", np.inf)
    unlimited = solve()
    assert unlimited.iterations > 3 * fast.iterations


def test_perfect_recovery_is_recognised_from_the_linear_approach_of_the_gaps():
    """Gaps g = 1 - diag Q closing by a linear map J with very different rates per layer
    (per-direction ratios still drifting: 0.74 -> 0.69, as in the attention curve at
    α = 1.6) are recognised; an affine map (a fixed point 2e-5 below I, gaps comparable
    to the start's) is not."""
    from types import SimpleNamespace

    from asymptotics.priors import GaussianPrior
    from asymptotics.state_evolution import _heads_to_perfect_recovery

    J = np.array([[0.7, 0.05], [0.01, 0.55]])

    def fake(g_star):
        def update(Q):
            g = 1.0 - np.diag(Q)
            return np.diag(1.0 - (g_star + J @ (g - g_star)))
        return SimpleNamespace(update=update, prior=GaussianPrior(), discrete=False,
                               channel=SimpleNamespace(noise_dim=0))

    Q0 = np.diag([1 - 5e-5, 1 - 1e-6])
    approach = _heads_to_perfect_recovery(fake(np.zeros(2)), Q0)
    assert approach is not None and np.all(np.diag(approach) > np.diag(Q0))
    assert _heads_to_perfect_recovery(fake(np.array([2e-5, 2e-5])), Q0) is None
    assert _heads_to_perfect_recovery(fake(np.zeros(2)), np.diag([0.99, 0.99])) is None


@pytest.mark.parametrize("rate, kicked", [(1.01, True), (0.9, False)])
def test_a_fixed_point_at_an_unstable_q_equal_identity_is_kicked_back(rate, kicked):
    """Gaps 1 - Q_kk below 1e-6 (where damped steps are below the tolerance) are tested
    jointly: kicked back to 1e-3 if the map grows them (I unstable, as at α = 1.0 of the
    attention curve), left alone if it shrinks them."""
    from types import SimpleNamespace

    from asymptotics.priors import GaussianPrior
    from asymptotics.state_evolution import START_EPS, _unstable_vanishing_direction

    se = SimpleNamespace(prior=GaussianPrior(),
                         update=lambda Q: np.eye(2) - rate * (np.eye(2) - Q))
    kick = _unstable_vanishing_direction(se, np.diag([1 - 5e-7, 1 - 1e-8]))
    if kicked:
        np.testing.assert_allclose(np.diag(kick), 1 - START_EPS)
    else:
        assert kick is None


def test_a_result_evaluates_with_the_map_it_was_solved_with():
    """Φ and the errors of an SEResult come from its own map: equal to a fresh map's at the
    same Q (same rule), and the attention kernel path is the one the solve locked."""
    import math

    from asymptotics.priors import RademacherPrior
    from asymptotics.state_evolution import SESettings

    ch = LinearChannel(0.2)
    res = run_state_evolution(ch, 1.0, tol=1e-12, max_iter=5000)
    fresh = StateEvolution(ch, 1.0)
    assert res.free_entropy()[0] == fresh.free_entropy(res.Q)[0]
    assert res.generalisation_errors() == fresh.generalisation_errors(res.Q)
    att = run_state_evolution(AttentionChannel(), 0.5, settings=SESettings(sobol_log2=6),
                              tol=1e-6)
    assert att.solved_map.inner_path == att.inner_path in ("shared", "general")
    assert math.isfinite(att.free_entropy()[0])
    # perfect recovery of the Rademacher sign perceptron: Φ = -log 2 (its entropy), ψ_out = 0
    pr = run_state_evolution(SignChannel(), 2.5, prior=RademacherPrior(), tol=1e-10,
                             max_iter=5000)
    assert pr.status == "perfect-recovery"
    assert pr.free_entropy() == (-math.log(2.0), 0.0)


def test_a_solve_ending_next_to_identity_checks_for_perfect_recovery():
    """α = 1.05 of the default model from the AMP row at α = 1.0 of an error-target run
    (gaps 2.03e-3 and 1.9e-5: just outside the 2e-3 within which the start is checked).
    The solve stepped along the geometric approach (ratio 0.952 = 1/α) until its steps fell
    below tol and stopped at gaps 4.3e-7 and 1.4e-9 as "converged", with a finite free
    entropy; the approach is now checked where a solve ends within 1e-6 of I."""
    from asymptotics.channels.registry import make_channel

    res = run_state_evolution(make_channel(), 1.05, np.diag([0.99796918, 0.99998096]),
                              tol=1e-7)
    assert res.status == "perfect-recovery"
    assert res.free_entropy()[0] == np.inf


def test_perfect_recovery_is_recognised_after_a_widening_first_step(monkeypatch):
    """From the informed start at α = 2 (default attention model) the first undamped step
    widens a gap (1e-3 -> 4e-3) before the geometric approach to I: the check follows it
    (the old check, bounded by 2e-3 and p + 1 steps, gave up, and the solver then stopped
    at Q = I - 1e-10 with a finite free entropy)."""
    import asymptotics.state_evolution as se_mod
    from asymptotics.channels.registry import make_channel

    se = StateEvolution(make_channel(), 2.0, SESettings(sobol_log2=9))
    start = initial_overlap(2, "informed")
    assert se_mod._heads_to_perfect_recovery(se, start) is not None
    monkeypatch.setattr(se_mod, "RECOVERY_TRANSIENT_GAP", se_mod.CONTINUOUS_RECOVERY_GAP)
    assert se_mod._heads_to_perfect_recovery(se, start) is None


@pytest.fixture(scope="module")
def seeded_fixed_point_near_the_staircase():
    """α = 0.8, next to the staircase threshold (slow, non-normal directions), 2^11 points:
    replicate maps of 256 points, the fewest that are seeded; and each replicate's fixed
    point solved to 1e-12."""
    res = run_state_evolution(AttentionChannel(), 0.8, "informed",
                              settings=SESettings(sobol_log2=11))
    assert res.converged
    se = res.solved_map
    exact = np.array([
        _solve(StateEvolution(se.channel, se.alpha, se.settings, se.prior, rule=rule,
                              inner_path=se.inner_path), res.Q, tol=1e-12,
               damping=0.5, max_iter=3000, acceleration="anderson").x
        for rule in replicate_rules(se.rule)])
    return res, exact


def test_seeded_replicate_solves_find_the_fixed_points_in_few_steps(
        seeded_fixed_point_near_the_staircase):
    """Replicate fixed points seeded with the full map's secant pairs are within 1e-3 of
    their spread of the fixed points solved to 1e-12 (1.4e-5 measured), in 47 steps for
    the 8 replicates (101 unseeded, see the slow test)."""
    res, exact = seeded_fixed_point_near_the_staircase
    spread = np.diag(exact.std(axis=0))
    gap = np.abs(res.replicate_Q - exact).max(axis=0).diagonal() / spread
    assert np.all(gap < 1e-3)
    assert res.replicate_iterations <= 60
    # the error's parts: Q_stderr² = (spread of the replicate fixed points / √8)² + inner²
    outer = np.diag(res.replicate_Q.std(axis=0, ddof=1)) / np.sqrt(8)
    np.testing.assert_allclose(np.diag(res.Q_stderr) ** 2,
                               outer**2 + np.diag(res.Q_stderr_inner) ** 2, rtol=1e-12)


@pytest.mark.slow
def test_seeded_replicate_solves_are_closer_than_unseeded_ones_in_half_the_steps(
        seeded_fixed_point_near_the_staircase):
    """The unseeded replicate solves, which stop on the damped residual alone, are
    0.5–0.9 % of the spread off the exact fixed points (over 10x the seeded ones), give
    the same standard error within 5 %, and take over twice the steps (101 against 47)."""
    res, exact = seeded_fixed_point_near_the_staircase
    kw = dict(damping=0.5, max_iter=3000, acceleration="anderson")
    err = overlap_error(res.estimate.Qhat, res.estimate.error)
    unseeded, its, fixed, _, _ = _replicate_fixed_point_error(res.solved_map, res.Q, 1e-8, kw,
                                                           err)
    spread = np.diag(exact.std(axis=0))
    seeded_gap = np.abs(res.replicate_Q - exact).max(axis=0).diagonal() / spread
    unseeded_gap = np.abs(fixed - exact).max(axis=0).diagonal() / spread
    assert np.all(unseeded_gap > 10 * seeded_gap)
    np.testing.assert_allclose(np.diag(res.Q_stderr), np.diag(unseeded), rtol=0.05)
    assert res.replicate_iterations <= 0.5 * its


class _LinearOverlapMap:
    """A stand-in SE map near ``Q = 0`` of the first direction: ``Q11 -> rate Q11``, the
    second direction fixed at 0.98 (what :func:`_marginal_direction_kick` evaluates)."""

    def __init__(self, rate: float):
        self.rate, self.calls = rate, 0

    def update(self, Q):
        self.calls += 1
        return np.diag([self.rate * Q[0, 0], 0.98])


@pytest.mark.parametrize("q11, rate, kicked", [
    (7.5e-5, 1.05, True),   # coarse fixed point just above 0, which the full map repels
    (7.5e-5, 0.95, False),  # ... which the full map attracts: no kick
    (0.0, 1.05, False),     # exactly at the invariant 0: the kick test after the solve
    (5e-3, 1.05, False),    # an overlap that has grown: a plain start
])
def test_a_coarse_overlap_just_above_zero_is_kicked_where_the_full_map_grows_it(
        q11, rate, kicked):
    from asymptotics.state_evolution import START_EPS, _marginal_direction_kick

    se = _LinearOverlapMap(rate)
    Q = np.diag([q11, 0.98])
    kick = _marginal_direction_kick(se, Q)
    assert (kick is not None) == kicked
    assert se.calls == (1 if 1e-6 < q11 < START_EPS else 0)  # one full evaluation at most
    if kicked:
        np.testing.assert_array_equal(kick, np.diag([START_EPS, 0.98]))
