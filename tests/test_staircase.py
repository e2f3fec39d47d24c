import json

import numpy as np
import pytest

from asymptotics.channels.attention import AttentionChannel
from asymptotics.cli import main
from asymptotics.staircase import StaircaseSettings, staircase_thresholds
from asymptotics.state_evolution import SESettings, StateEvolution
from asymptotics.thresholds import weak_recovery_thresholds

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
