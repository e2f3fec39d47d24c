import math

import numpy as np
import pytest

from asymptotics.channels.attention import AttentionChannel
from asymptotics.channels.closed_form import (
    LinearChannel,
    PhaseRetrievalChannel,
    ProductChannel,
    SignChannel,
    SignProductChannel,
)
from asymptotics.thresholds import ThresholdSettings, weak_recovery_thresholds


def _alphas(res):
    return [d.alpha_c for d in res.directions]


def test_phase_retrieval_threshold_is_one_half():
    res = weak_recovery_thresholds(PhaseRetrievalChannel())
    assert abs(res.directions[0].alpha_c - 0.5) < 1e-12
    assert res.directions[0].stderr < 1e-10


def test_sign_product_threshold_is_pi_squared_over_four():
    res = weak_recovery_thresholds(SignProductChannel())
    for d in res.directions:
        assert abs(d.alpha_c - math.pi**2 / 4) < 1e-10
    # F = (4/π²) times the swap of the diagonal entries: eigenvalues ±4/π² on the diagonal
    # block and 4/π² on the off-diagonal direction
    ev = np.sort(np.linalg.eigvalsh(res.operator))
    np.testing.assert_allclose(ev, np.array([-1, 1, 1]) * 4 / math.pi**2, atol=1e-10)


@pytest.mark.parametrize("channel", [SignChannel(), LinearChannel(0.3)], ids=["sign", "linear"])
def test_trivial_directions_are_learned_at_any_alpha(channel):
    res = weak_recovery_thresholds(channel)
    assert res.directions[0].status == "trivial"
    assert res.directions[0].alpha_c == 0.0


def test_product_channel_converges_under_refinement():
    a0 = _alphas(weak_recovery_thresholds(ProductChannel(), ThresholdSettings(resolution=0)))
    a1 = _alphas(weak_recovery_thresholds(ProductChannel(), ThresholdSettings(resolution=1)))
    np.testing.assert_allclose(a0, a1, rtol=1e-10)
    assert a0[0] == pytest.approx(a0[1])


@pytest.mark.parametrize(
    "levels", [(0, 1), pytest.param((1, 2), marks=pytest.mark.slow)], ids=["0-1", "1-2"]
)
def test_default_attention_thresholds_converged_and_ordered(levels):
    coarse = weak_recovery_thresholds(AttentionChannel(), ThresholdSettings(resolution=levels[0]))
    fine = weak_recovery_thresholds(AttentionChannel(), ThresholdSettings(resolution=levels[1]))
    for dc, df in zip(coarse.directions, fine.directions, strict=True):
        assert abs(dc.alpha_c - df.alpha_c) < 1e-6
        assert abs(dc.alpha_c - df.alpha_c) <= dc.stderr + 1e-12  # the error bar is honest
        assert dc.stderr < 1e-4 * dc.alpha_c
    a1, a2 = _alphas(coarse)
    # the last layer is learned first; Jensen bound α_c >= 1/(L(L+1)) for the last layer
    assert a2 < a1
    assert a2 >= 1 / 6
    np.testing.assert_allclose(coarse.diagnostics["normalisation"][0], 1.0, atol=1e-10)


@pytest.mark.parametrize("skip", [0.05, 4.0])
def test_extreme_skips_converge_under_refinement(skip):
    ch = AttentionChannel(skip=skip)
    r0 = weak_recovery_thresholds(ch, ThresholdSettings(resolution=0))
    r1 = weak_recovery_thresholds(ch, ThresholdSettings(resolution=1))
    for d0, d1 in zip(r0.directions, r1.directions, strict=True):
        assert abs(d0.alpha_c - d1.alpha_c) < 1e-5 * d1.alpha_c
        assert abs(d0.alpha_c - d1.alpha_c) <= d0.stderr
    assert r1.directions[1].alpha_c >= 1 / 6


def test_jensen_bound_holds_across_skips_and_lengths():
    for skip in (0.25, 2.0):
        a2 = weak_recovery_thresholds(AttentionChannel(skip=skip)).directions[1].alpha_c
        assert a2 >= 1 / 6


def test_monte_carlo_path_agrees_with_quadrature_on_the_default_model():
    quad = weak_recovery_thresholds(AttentionChannel())
    mc = weak_recovery_thresholds(
        AttentionChannel(), ThresholdSettings(method="mc", mc_samples=2**14)
    )
    for dq, dm in zip(quad.directions, mc.directions, strict=True):
        assert abs(dq.alpha_c - dm.alpha_c) < 4 * dm.stderr


@pytest.mark.parametrize(
    "depth,L", [(3, 2), pytest.param(2, 3, marks=pytest.mark.slow)], ids=["3-2", "2-3"])
def test_monte_carlo_thresholds_have_stderr_below_one_percent(depth, L):
    res = weak_recovery_thresholds(
        AttentionChannel(depth=depth, seq_len=L),
        ThresholdSettings(method="mc", mc_samples=2**15, resolution=1),
    )
    assert len(res.directions) == depth
    for d in res.directions:
        assert d.status == "finite"
        assert 0 < d.stderr < 0.01 * d.alpha_c
    # the last layer has the lowest threshold and respects the Jensen bound 1/(L(L+1))
    last = res.directions[-1].alpha_c
    assert last == min(_alphas(res))
    assert last >= 1 / (L * (L + 1)) - 3 * res.directions[-1].stderr


def test_monte_carlo_is_deterministic_for_a_seed():
    s = ThresholdSettings(method="mc", mc_samples=2**10, seed=3)
    a = _alphas(weak_recovery_thresholds(AttentionChannel(), s))
    b = _alphas(weak_recovery_thresholds(AttentionChannel(), s))
    assert a == b


def test_quadrature_refused_where_dimension_too_high():
    with pytest.raises(ValueError, match="mc"):
        weak_recovery_thresholds(AttentionChannel(depth=3), ThresholdSettings(method="quadrature"))
