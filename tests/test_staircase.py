import json

import numpy as np
import pytest

from asymptotics.channels.attention import AttentionChannel
from asymptotics.staircase import StaircaseSettings, staircase_thresholds
from asymptotics.state_evolution import SESettings, StateEvolution
from asymptotics.thresholds import weak_recovery_thresholds
from smi.cli import main

CHEAP = StaircaseSettings(groups=4, log2_points=9)


@pytest.fixture(scope="module")
def default_staircase():
    return staircase_thresholds(AttentionChannel(), CHEAP)[0]


def test_first_layer_staircase_lies_between_the_q0_thresholds(default_staircase):
    q0 = weak_recovery_thresholds(AttentionChannel())
    a1, a2 = (d.alpha_c for d in q0.directions)
    s = default_staircase
    assert s.layer == 1 and s.status == "finite" and s.learned == [2]
    assert a2 < s.alpha - 3 * s.stderr and s.alpha + 3 * s.stderr < a1
    assert 0 < s.stderr < 0.05 * s.alpha


def test_threshold_point_is_a_fixed_point_of_the_generic_se_map(default_staircase):
    """At (α*, q*) the general SE map (general fibre kernel, independent outer rule) must
    return Q_22 = q* within its Monte Carlo error, and keep Q_11 = 0."""
    s = default_staircase
    se = StateEvolution(AttentionChannel(), s.alpha, SESettings(sobol_log2=13, seed=7))
    est = se.qhat(np.diag([0.0, s.q_last]))
    q_new = est.Qhat[1, 1] / (1 + est.Qhat[1, 1])
    dq = est.error[1, 1] / (1 + est.Qhat[1, 1]) ** 2
    assert abs(q_new - s.q_last) < 4 * dq + 2e-3
    assert abs(est.Qhat[0, 0]) < 1e-20


def test_growth_rate_of_the_first_layer_is_one_at_the_threshold(default_staircase):
    """Independent of λ_1 = E‖G‖²: the generic SE map's Q̂_11 / Q_11 for a tiny Q_11 (g_out
    route, general kernel) is the linear growth factor α λ_1, which must be 1 at α*."""
    s = default_staircase
    eps = 1e-5
    se = StateEvolution(AttentionChannel(), s.alpha, SESettings(sobol_log2=13, seed=11))
    est = se.qhat(np.diag([eps, s.q_last]))
    growth = est.Qhat[0, 0] / eps
    err = est.error[0, 0] / eps
    assert abs(growth - 1.0) < 4 * err + 5 * s.stderr / s.alpha


def test_more_samples_agree_within_errors(default_staircase):
    finer = staircase_thresholds(AttentionChannel(), StaircaseSettings(log2_points=10, seed=1))[0]
    s = default_staircase
    assert abs(finer.alpha - s.alpha) < 3 * np.hypot(finer.stderr, s.stderr)


def test_cli_staircase_and_alpha_columns(capsys):
    rc = main(["thresholds", "--skip", "1", "--resolution", "0", "--staircase",
               "--staircase-points", "8", "--alpha", "0.5", "--format", "json"])
    assert rc == 0
    rows = {r["direction"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows[2]["staircase_status"] == "learned-first"
    assert rows[2]["learnable_at_alpha"] is True
    assert rows[1]["learnable_at_alpha"] is False  # 0.5 is below the staircase threshold
    assert rows[1]["staircase_alpha"] < rows[1]["alpha_c"]


def test_staircase_rejects_other_models(capsys):
    assert main(["thresholds", "--model", "sign", "--staircase"]) == 2


def test_last_layer_onset_matches_its_q0_threshold():
    """The restricted SE branch α(q) = q / ((1 - q) m(q)) starts, as q -> 0, at the Q = 0
    threshold of the last layer: the onset of Q22 on the curve is α_2(Q = 0)."""
    from scipy.special import ndtri
    from scipy.stats import qmc

    from asymptotics.staircase import _RestrictedProblem

    ch = AttentionChannel()
    alphas = []
    for seed in range(4):
        pts = ndtri(qmc.Sobol(6, scramble=True, seed=np.random.default_rng(seed)).random_base2(11))
        q = 1e-4
        m, _ = _RestrictedProblem(ch, pts).evaluate(q)
        alphas.append(q / ((1 - q) * m[0]))
    onset, err = np.mean(alphas), np.std(alphas, ddof=1) / 2
    a2 = weak_recovery_thresholds(ch).directions[1].alpha_c
    assert abs(onset - a2) < 4 * err + 1e-3 * a2


@pytest.mark.parametrize("offset,grows", [(-0.06, False), (0.06, True)])
def test_first_layer_grows_only_past_the_staircase(default_staircase, offset, grows):
    """On the curve, Q11 leaves 0 only past the staircase α: the SE map's growth factor of a
    tiny Q11 (at the last layer's restricted fixed point) is < 1 below and > 1 above."""
    from scipy.optimize import brentq
    from scipy.special import ndtri
    from scipy.stats import qmc

    from asymptotics.staircase import _RestrictedProblem

    ch = AttentionChannel()
    alpha = default_staircase.alpha + offset
    pts = ndtri(qmc.Sobol(6, scramble=True, seed=np.random.default_rng(5)).random_base2(11))
    prob = _RestrictedProblem(ch, pts)

    def gap(q):
        m, _ = prob.evaluate(q)
        return q / ((1 - q) * m[0]) - alpha

    q = brentq(gap, 0.5, 0.999, xtol=1e-6)
    se = StateEvolution(ch, alpha, SESettings(sobol_log2=13, seed=3))
    est = se.qhat(np.diag([1e-5, q]))
    growth, err = est.Qhat[0, 0] / 1e-5, est.error[0, 0] / 1e-5
    if grows:
        # with the last layer at q ≈ 0.98 this estimator is heavy-tailed (error ≈ ±0.35 at
        # 2^13 points), so only its point estimate is required to exceed 1 (measured: 1.25)
        assert growth > 1.0
    else:
        assert growth < 1 - 2 * err  # measured 0.67 ± 0.015


# ------------------------------------------------------------------ sequential staircase

def _nets(depth, log2, seed=0):
    """One (ξ_last, u) net and one ξ_U net, drawn as staircase_thresholds draws them."""
    from asymptotics.integrate import sobol_nets

    rng = np.random.default_rng(seed)
    L = 2
    (pts,) = sobol_nets(L + L * depth, log2, 1, rng)
    (extra,) = sobol_nets(L * (depth - 1), log2, 1, rng)
    return pts, extra


@pytest.mark.parametrize("depth", [2, 3])
def test_general_branch_reproduces_the_explicit_last_layer_stage(depth):
    """With only the last layer learned the general machinery (fibre_moments, s = q_last)
    gives the explicit method's H_k(q) = α(q) λ_k(q) - 1 to rounding."""
    from asymptotics.staircase import _Branch, _OuterNet, _RestrictedProblem

    ch = AttentionChannel(depth=depth).refined(0)
    pts, extra = _nets(depth, 6)
    branch = _Branch(_OuterNet(ch, pts, extra), [depth - 1], np.zeros(depth), StaircaseSettings())
    explicit = _RestrictedProblem(ch, pts)
    for q in (0.3, 0.9):
        m, lam = explicit.evaluate(q)
        for k in range(depth - 1):
            h = q / ((1 - q) * m[0]) * lam[0, k] - 1
            assert branch.H(q, k) == pytest.approx(h, rel=1e-9, abs=1e-12)


def test_restricted_fixed_point_pins_the_unlearned_layer():
    """Depth 3 with layers 3 and 1 learned: the branch point solves q_i/(1-q_i) = α m_i on
    the learned layers and keeps Q_22 exactly 0, although the numerical (Sobol' inner
    rule) map would move it: its m_2 there is not 0."""
    from asymptotics.staircase import _Branch, _OuterNet

    ch = AttentionChannel(depth=3).refined(0)
    pts, extra = _nets(3, 6)
    net = _OuterNet(ch, pts, extra)
    branch = _Branch(net, [2, 0], np.array([0.0, 0.0, 0.97]), StaircaseSettings())
    res = branch.solve(0.3)
    assert res.converged and res.status == "converged"
    alpha, lam, q = res.alpha, res.lam, res.q
    assert q[1] == 0.0 and q[0] == 0.3
    m, _ = net.moments(q)
    assert q[2] / (1 - q[2]) == pytest.approx(alpha * m[0, 2], rel=1e-7)
    assert 0.3 / 0.7 == pytest.approx(alpha * m[0, 0], rel=1e-12)
    assert m[0, 1] > 1e-6  # the unpinned map would give Q̂_22 = α m_2 > 0
    assert 0.5 < alpha < 3 and lam[1] > 0


def test_failed_restricted_solve_is_a_status_not_an_exception():
    """A restricted solve capped at one Newton step cannot converge: the branch reports
    ``max-iter`` (and caches nothing), the threshold search ``not-converged``, no number."""
    from asymptotics.staircase import _Branch, _locate_general, _OuterNet

    ch = AttentionChannel(depth=3).refined(0)
    pts, extra = _nets(3, 6)
    capped = StaircaseSettings(newton_max=1)
    branch = _Branch(_OuterNet(ch, pts, extra), [2, 0], np.array([0.0, 0.0, 0.97]), capped)
    res = branch.solve(0.3)
    assert not res.converged and res.status == "max-iter" and res.iterations == 1
    assert "s = 0.3" in res.message and 0.3 not in branch.solved
    assert np.isnan(branch.H(0.3, 1))
    located = _locate_general(branch, 1, 0.9, capped)
    assert located.status == "not-converged" and np.isnan(located.alpha)
    assert np.all(np.isnan(located.q)) and "iteration cap" in located.message


def test_outer_net_moments_are_the_se_maps_outer_moments():
    """The staircase's m_i(q) from the SE map's outer moments: ``outer_moments`` with the
    diagonal ``q`` (the staircase's form) and with the matrix ``diag(q)`` (the SE map's)
    agree on the same nodes."""
    from asymptotics.staircase import _OuterNet
    from asymptotics.state_evolution import outer_moments

    ch = AttentionChannel(depth=3).refined(0)
    pts, extra = _nets(3, 5)
    net = _OuterNet(ch, pts, extra)
    q = np.array([0.2, 0.0, 0.9])
    m, _ = net.moments(q)
    omega, fm = outer_moments(ch, net.xi, net.u, np.diag(q), second=False, inner_error=False)
    g = (fm.mean[0] - omega) / (1.0 - q)
    np.testing.assert_allclose(np.mean(np.sum(g**2, axis=1), axis=0), m[0], rtol=1e-10)


@pytest.fixture(scope="module")
def depth3_staircase():
    from asymptotics.thresholds import ThresholdSettings

    return staircase_thresholds(AttentionChannel(depth=3), StaircaseSettings(log2_points=7),
                                ThresholdSettings(mc_samples=2**13))


def test_depth3_staircase_is_sequential(depth3_staircase):
    """Layer 3 first (Q = 0), then layer 1 with {3} learned, then layer 2 with {3, 1}
    learned; thresholds increase along the order."""
    t1, t2, t3 = depth3_staircase
    assert [t.layer for t in (t1, t2, t3)] == [1, 2, 3]
    assert (t3.order, t1.order, t2.order) == (1, 2, 3)
    assert t3.status == "learned-first" and t3.learned == []
    assert t1.learned == [3] and t2.learned == [3, 1]
    # at 4 nets of 2^7 points one net has layer 2 unstable as soon as layer 1 is learned
    assert t1.status == "finite" and t2.status in ("finite", "at-previous")
    assert t3.alpha < t1.alpha < t2.alpha
    assert all(g2 >= g1 for g1, g2 in zip(t1.group_alphas, t2.group_alphas, strict=True))
    assert sum(g2 > g1 for g1, g2 in zip(t1.group_alphas, t2.group_alphas, strict=True)) >= 3
    # default nets (4 x 2^11) give 0.963 ± 0.007 and 1.126 ± 0.013; 2^7-point nets are
    # biased upwards (the root is a nonlinear function of the averages): 1.11 and 1.19
    assert 0.2 < t3.alpha < 0.21 and 0.9 < t1.alpha < 1.2 and 1.0 < t2.alpha < 1.35
    assert t2.overlaps[1] == 0.0 and 0.05 < t2.overlaps[0] < 0.6 and t2.overlaps[2] > 0.95
    assert 0 < t2.stderr < 0.1 * t2.alpha


def test_growth_rate_of_the_last_placed_layer_is_one_at_its_threshold(depth3_staircase):
    """Generic SE map (general kernel, independent outer rule) at the sequential threshold
    of layer 2 with layers 3 and 1 at their overlaps there: Q̂_22 / Q_22 for a tiny Q_22
    is α λ_2 = 1, and layers 1 and 3 are at a fixed point."""
    t2 = depth3_staircase[1]
    eps = 1e-5
    q = np.array(t2.overlaps)
    se = StateEvolution(AttentionChannel(depth=3), t2.alpha, SESettings(sobol_log2=11, seed=9))
    est = se.qhat(np.diag([q[0], eps, q[2]]))
    growth, err = est.Qhat[1, 1] / eps, est.error[1, 1] / eps
    assert abs(growth - 1.0) < 4 * err + 3 * t2.stderr / t2.alpha
    q_new = est.Qhat[0, 0] / (1 + est.Qhat[0, 0])
    assert abs(q_new - q[0]) < 4 * est.error[0, 0] + 0.1 * q[0]


@pytest.mark.slow
def test_coarse_solve_tolerance_changes_only_the_inner_error(depth3_staircase, monkeypatch):
    """The coarse-rule joint solve to ``COARSE_TOL`` instead of ``newton_tol`` (fewer
    evaluations): the primary thresholds are the same numbers, the inner-rule errors and
    the combined errors change by less than 1 %."""
    from asymptotics import staircase
    from asymptotics.thresholds import ThresholdSettings

    monkeypatch.setattr(staircase, "COARSE_TOL", 0.0)  # every solve to newton_tol
    tight = staircase_thresholds(AttentionChannel(depth=3), StaircaseSettings(log2_points=7),
                                 ThresholdSettings(mc_samples=2**13))
    for loose, ref in zip(depth3_staircase, tight, strict=True):
        assert loose.group_alphas == ref.group_alphas and loose.alpha == ref.alpha
        assert abs(loose.inner_error - ref.inner_error) <= 0.01 * ref.inner_error
        assert abs(loose.stderr - ref.stderr) <= 0.01 * ref.stderr


def test_cli_staircase_order_columns(capsys):
    rc = main(["thresholds", "--skip", "1", "--resolution", "0", "--staircase",
               "--staircase-points", "7", "--format", "json"])
    assert rc == 0
    rows = {r["direction"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows[2]["staircase_order"] == 1 and rows[2]["staircase_learned"] is None
    assert rows[1]["staircase_order"] == 2 and rows[1]["staircase_learned"] == "2"
    assert rows[1]["staircase_status"] == "finite"


def test_staircase_api_rejects_bad_input():
    from asymptotics.channels.closed_form import SignChannel

    with pytest.raises(TypeError):
        staircase_thresholds(SignChannel())
    with pytest.raises(ValueError):
        staircase_thresholds(AttentionChannel(), StaircaseSettings(groups=1))
    assert staircase_thresholds(AttentionChannel(depth=1)) == []
