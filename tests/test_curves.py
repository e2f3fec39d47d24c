import json

import numpy as np
import pytest

from asymptotics.channels.attention import AttentionChannel
from asymptotics.channels.closed_form import LinearChannel, PhaseRetrievalChannel, SignChannel
from asymptotics.channels.registry import make_channel
from asymptotics.curves import sweep
from asymptotics.priors import GaussianPrior
from asymptotics.results import read_rows
from asymptotics.state_evolution import (
    SESettings,
    StateEvolution,
    linear_channel_fixed_point,
    nishimori_combination,
    run_state_evolution,
)
from smi.cli import main


def test_linear_curve_matches_closed_form_on_both_branches():
    alphas = [0.3, 0.8, 1.5, 3.0]
    rows = sweep(LinearChannel(0.25), alphas, "both", tol=1e-12, max_iter=5000)
    for r in rows:
        assert r["converged"]
        assert abs(r["Q"][0][0] - linear_channel_fixed_point(r["alpha"], 0.25)) < 1e-9
        # the noiseless-output errors of a Gaussian channel are both 1 - Q
        assert abs(r["gen_error_plugin"] - (1 - r["Q"][0][0])) < 1e-9
    assert {r["branch"] for r in rows} == {"amp", "informed", "bayes"}


def test_phase_retrieval_curve_zero_below_half_positive_above():
    rows = sweep(PhaseRetrievalChannel(), [0.35, 0.45, 0.6, 0.8], "amp", tol=1e-11,
                 max_iter=5000)
    q = {r["alpha"]: r["Q"][0][0] for r in rows}
    assert q[0.35] < 1e-6 and q[0.45] < 1e-6
    assert q[0.6] > 0.02 and q[0.8] > q[0.6]


@pytest.mark.parametrize("channel,alpha", [(SignChannel(), 1.2), (LinearChannel(0.3), 0.9)],
                         ids=["sign", "linear"])
def test_free_entropy_derivative_identities_at_a_fixed_point(channel, alpha):
    fp = run_state_evolution(channel, alpha, tol=1e-12, max_iter=5000)
    assert fp.converged
    q = fp.Q[0, 0]
    se = StateEvolution(channel, alpha)
    h = 1e-5
    # Q̂ = 2α ∂ψ_out/∂Q  (finite differences, central)
    psi_p = se.qhat(np.array([[q + h]])).psi_out
    psi_m = se.qhat(np.array([[q - h]])).psi_out
    dpsi = (psi_p - psi_m) / (2 * h)
    assert abs(2 * alpha * dpsi - fp.Qhat[0, 0]) < 1e-6 * max(1, fp.Qhat[0, 0])
    # Q = 2 ∂ψ_in/∂Q̂ for the Gaussian prior
    prior = GaussianPrior()
    qh = fp.Qhat
    dpsi_in = (prior.free_entropy(qh + h) - prior.free_entropy(qh - h)) / (2 * h)
    assert abs(2 * dpsi_in - q) < 1e-8
    # the fixed point is a stationary point of Φ in Q at fixed Q̂:  ∂Φ/∂Q = -Q̂/2 + α ψ_out'
    assert abs(-0.5 * qh[0, 0] + alpha * dpsi) < 1e-6 * max(1, qh[0, 0])


def test_bayes_branch_never_has_lower_free_entropy():
    rows = sweep(PhaseRetrievalChannel(), [0.4, 0.7, 0.9], "both", tol=1e-10, max_iter=3000)
    by = {}
    for r in rows:
        by.setdefault(r["alpha"], {})[r["branch"]] = r
    for pair in by.values():
        b = pair["bayes"]
        if b["source_branch"] == "undetermined":
            assert not b["converged"]
            continue
        for other in ("amp", "informed"):
            tol = pair[other]["free_entropy_stderr"] + b["free_entropy_stderr"]
            assert b["free_entropy"] >= pair[other]["free_entropy"] - tol


def test_bayes_choice_switches_where_the_free_entropies_cross():
    """Rademacher sign perceptron: the informed branch is perfect recovery, whose free
    entropy is known independently, -log 2 (the prior's entropy; ψ_out = 0 for a noiseless
    sign).  The AMP branch's Φ crosses it at α_IT ≈ 1.245 (Györgyi 1990): the Bayes row is
    the AMP branch at 1.2 and the informed one at 1.3, below the AMP spinodal 1.493."""
    import math

    from asymptotics.channels.closed_form import SignChannel
    from asymptotics.priors import RademacherPrior

    rows = sweep(SignChannel(), [1.2, 1.3], "both", prior=RademacherPrior(), tol=1e-10,
                 max_iter=5000)
    by = {(r["alpha"], r["branch"]): r for r in rows}
    for a in (1.2, 1.3):
        assert by[(a, "informed")]["free_entropy"] == -math.log(2.0)
        assert by[(a, "amp")]["Q"][0][0] < 0.9  # the AMP branch has not jumped yet
    phi_amp = {a: by[(a, "amp")]["free_entropy"] for a in (1.2, 1.3)}
    err = {a: by[(a, "amp")]["free_entropy_stderr"] for a in (1.2, 1.3)}
    assert phi_amp[1.2] - err[1.2] > -math.log(2.0) > phi_amp[1.3] + err[1.3]
    assert by[(1.2, "bayes")]["source_branch"] == "amp"
    assert by[(1.3, "bayes")]["source_branch"] == "informed"


def test_interrupted_sweep_resumes_to_the_same_rows(tmp_path):
    alphas = [0.5, 0.6, 0.7, 0.8, 0.9]
    ref_file = tmp_path / "ref.jsonl"
    ref = sweep(PhaseRetrievalChannel(), alphas, "both", tol=1e-9, max_iter=2000,
                output=str(ref_file))
    out = tmp_path / "run.jsonl"

    class Interrupt(Exception):
        pass

    def stop_after_six(done, total, elapsed):
        if done == 6:
            raise Interrupt

    with pytest.raises(Interrupt):
        sweep(PhaseRetrievalChannel(), alphas, "both", tol=1e-9, max_iter=2000,
              output=str(out), progress=stop_after_six)
    with open(out, "a") as fh:
        fh.write('{"alpha": 0.9, "bra')  # a line cut by the interruption
    resumed = sweep(PhaseRetrievalChannel(), alphas, "both", tol=1e-9, max_iter=2000,
                    output=str(out), resume=True)
    assert resumed == ref
    assert [json.loads(line) for line in open(out)] == [json.loads(line) for line in open(ref_file)]


def test_curve_cli_rows_and_bad_input(tmp_path, capsys):
    out = tmp_path / "c.jsonl"
    rc = main(["curve", "--model", "linear", "--noise", "0.2", "--alphas", "0.5,1",
               "--format", "json", "--output", str(out)])
    assert rc == 0
    rows = json.loads(capsys.readouterr().out)
    keys = {"alpha", "branch", "Q", "free_entropy", "gen_error_plugin", "gen_error_bayes",
            "converged", "iterations", "Q_stderr", "gen_error_plugin_stderr"}
    assert all(keys <= set(r) for r in rows)
    # the file holds exactly the printed rows: amp, informed and the Bayes choice
    assert read_rows(out) == (rows, False) and len(rows) == 6
    for bad in (["--alphas", "0"], ["--damping", "2"], ["--resume"], ["--depth", "0"]):
        assert main(["curve", *bad]) == 2


def test_rademacher_sign_perceptron_it_threshold_below_amp():
    """Teacher–student Ising perceptron: first-order transition to perfect recovery at
    α_IT ≈ 1.245 (Györgyi 1990; 1.249 in Barbier et al. 2019) and the AMP spinodal at
    α ≈ 1.493 (Barbier et al. 2019).  Both located here by bisection to ±0.002."""
    from asymptotics.channels.closed_form import SignChannel
    from asymptotics.curves import locate_transitions
    from asymptotics.priors import RademacherPrior

    prior = RademacherPrior()
    rows = sweep(SignChannel(), [1.1, 1.2, 1.3, 1.4, 1.5, 1.6], "both", prior=prior,
                 tol=1e-10, max_iter=5000)
    found = {t.kind: t for t in locate_transitions(SignChannel(), rows, prior)}
    it, amp = found["it-threshold"], found["amp-spinodal"]
    assert it.reliable and it.error <= 0.002 and amp.error <= 0.002
    assert abs(it.alpha - 1.247) < 0.01
    assert abs(amp.alpha - 1.493) < 0.01
    assert it.alpha + it.error < amp.alpha - amp.error
    # hysteresis: between the two, AMP stays low while the Bayes-optimal branch is perfect
    row = {(r["alpha"], r["branch"]): r for r in rows}
    assert row[(1.4, "amp")]["Q"][0][0] < 0.9
    assert row[(1.4, "bayes")]["source_branch"] == "informed"
    assert row[(1.4, "bayes")]["Q"][0][0] == 1.0


def test_rademacher_prior_identity_and_bad_input():
    from asymptotics.priors import RademacherPrior

    prior = RademacherPrior()
    h = 1e-5
    for qh in (0.3, 2.0, 15.0):
        d = (prior.free_entropy(np.array([[qh + h]])) - prior.free_entropy(np.array([[qh - h]])))
        assert abs(d / h - prior.overlap(np.array([[qh]]))[0, 0]) < 1e-7  # Q = 2 ∂ψ_in/∂Q̂
    with pytest.raises(ValueError):
        prior.overlap(np.array([[1.0, 0.5], [0.5, 1.0]]))


def test_nishimori_combination_keeps_the_mean_and_lowers_the_variance():
    """``h + λ (f - h)``: where ``f`` is exact (an invariant overlap, f ≡ 0) the combination
    is ``f`` exactly; with two noisy estimators of one mean its variance is at most the
    smaller of theirs, and its mean stays within the noise of the truth."""
    rng = np.random.default_rng(0)
    n = 4096
    w = np.full(n, 1.0 / n)
    noisy = rng.standard_normal((1, n))
    np.testing.assert_array_equal(nishimori_combination(np.zeros((1, n)), noisy, w), 0.0)
    common = rng.standard_normal(n)
    f = (2.0 + common + 0.5 * rng.standard_normal(n))[None]
    h = (2.0 + 0.8 * common + 0.3 * rng.standard_normal(n))[None]
    c = nishimori_combination(f, h, w)
    assert c.var() <= min(f.var(), h.var())
    assert abs(c.mean() - 2.0) < 4 * c.std() / np.sqrt(n)


def test_both_nishimori_forms_of_qhat_agree_and_the_combination_is_more_precise():
    """``α E[g gᵀ]`` and the combined estimate of ``Q̂`` at one Q of the attention channel
    (2^12 outer points): equal within their standard errors, the combination's error
    smaller on the learned direction (measured: 0.0289 -> 0.0176).  On nets below
    ``CONTROL_VARIATE_MIN_NET`` points, and on channels that do not declare it, the map
    keeps the plain form."""
    ch = AttentionChannel()
    Q = np.diag([0.0, 0.75])
    plain, combined = (StateEvolution(ch, 0.5, SESettings(sobol_log2=12, control_variate=cv))
                       .qhat(Q) for cv in (False, True))
    d = np.diag(plain.Qhat - combined.Qhat)
    assert np.all(np.abs(d) <= 3 * np.hypot(np.diag(plain.error), np.diag(combined.error)))
    assert combined.error[1, 1] < 0.8 * plain.error[1, 1]
    assert combined.Qhat[0, 0] == 0.0  # Q11 = 0 is invariant: g ≡ 0 there, kept exactly
    small = [StateEvolution(ch, 0.5, SESettings(sobol_log2=10, control_variate=cv)).qhat(Q)
             for cv in (False, True)]  # nets of 128 points: no fitted weight
    np.testing.assert_array_equal(small[0].Qhat, small[1].Qhat)
    product = make_channel("product")
    assert not product.capabilities.control_variate


def test_error_target_refines_the_outer_rule_until_met_or_capped(tmp_path):
    """``target_error``: an unreachable target climbs to ``max_sobol_log2`` and says it was
    not met; a lax one keeps the first rule; the file's settings record the target."""
    ch = AttentionChannel()
    kw = dict(settings=SESettings(sobol_log2=7), tol=1e-6)
    strict = sweep(ch, [0.5], "amp", target_error=1e-9, max_sobol_log2=9,
                   output=str(tmp_path / "c.jsonl"), **kw)[0]
    assert strict["sobol_log2"] == 9 and strict["error_target_met"] is False
    # at 2^7-2^9 points the inner rule's bound hides in the spread: no inner refinement
    assert strict["inner_resolution"] == 0
    assert strict["amplification"] > 1.0
    lax = sweep(ch, [0.5], "amp", target_error=1.0, max_sobol_log2=9, **kw)[0]
    assert lax["sobol_log2"] == 7 and lax["error_target_met"] is True
    assert lax["inner_resolution"] == 0
    assert max(map(max, lax["Q_stderr"])) <= 1.0
    header = json.loads(open(tmp_path / "c.jsonl").readline())["header"]
    assert header["settings"]["target_error"] == 1e-9
    assert header["settings"]["max_sobol_log2"] == 9
    assert header["settings"]["max_inner_resolution"] == 1
    from smi.commands.curve import error_target_report
    from smi.output import format_curve

    csv_text = format_curve([strict, lax], "csv")
    assert csv_text.splitlines()[0].endswith(
        "sobol_log2,inner_resolution,error_target_met,amplification")
    report = error_target_report([strict, lax], 1e-3, [])
    assert "not met on 1 row(s)" in report
    assert "at 2^9 points, inner resolution 0" in report
    for bad in (["--target-error", "0"], ["--max-sobol-log2", "14"],
                ["--target-error", "1e-3", "--max-sobol-log2", "40"],
                ["--max-inner-resolution", "1"],
                ["--target-error", "1e-3", "--max-inner-resolution", "-1"],
                ["--target-error", "1e-3", "--max-inner-resolution", "40"]):
        assert main(["curve", "--alphas", "0.5", *bad]) == 2


@pytest.mark.parametrize("inner, spread, steps", [
    # the inner rule's bound dominates: refine it first, then the outer rule
    (3e-3, 1e-3, [(7, 1), (9, 1)]),
    # the spread dominates: the outer rule, then whichever dominates; at the outer cap
    # the inner rule only if the spread alone would meet the target
    (1e-3, 3e-3, [(9, 0), (9, 1)]),
    (1e-3, 5e-3, [(9, 0)]),
    (2e-3, 0.5e-3, [(7, 1)]),
])
def test_error_target_refines_the_dominant_part_of_the_error(monkeypatch, inner, spread,
                                                               steps):
    """Which rule ``_refined`` refines, on results whose error parts are set: every solve
    shrinks both parts 4x (a model of 4x the points or nodes) only where refined."""
    import asymptotics.curves as curves
    from asymptotics.state_evolution import SEResult

    calls = []

    def result(inner, spread):
        return SEResult(0.5, "amp", np.diag([0.3, 0.6]), np.eye(2), np.eye(2), True,
                        "converged", 3, 0.0, Q_stderr=np.diag([np.hypot(inner, spread), 0.0]),
                        Q_stderr_inner=np.diag([inner, 0.0]))

    def fake_solve(channel, alpha, Q, settings=None, **kw):
        log2 = settings.sobol_log2
        level = 0 if channel.inner_description == AttentionChannel().inner_description else 1
        calls.append((log2, level))
        return result(inner / 4**level, spread / 4 ** ((log2 - 7) // 2))

    monkeypatch.setattr(curves, "run_state_evolution", fake_solve)
    settings = SESettings(sobol_log2=7)
    res, log2, level = curves._refined(result(inner, spread), AttentionChannel(), 0.5,
                                       settings, 0.5, 1e-8, 50, None, (1e-3, 9, 1))
    assert calls == steps
    assert (log2, level) == steps[-1]


def test_amp_rows_above_perfect_recovery_need_no_map_evaluation(monkeypatch):
    """Rademacher sign perceptron past the AMP spinodal (1.493): once the AMP chain reaches
    perfect recovery, the rows above it are perfect recovery without evaluating the map
    (Q̂ ∝ α at fixed Q); each of them, solved on its own from the uninformed start, is
    perfect recovery too, with the same row."""
    from asymptotics.priors import RademacherPrior

    calls: dict[float, int] = {}
    update = StateEvolution.update

    def counted(self, Q):
        calls[self.alpha] = calls.get(self.alpha, 0) + 1
        return update(self, Q)

    monkeypatch.setattr(StateEvolution, "update", counted)
    prior, alphas = RademacherPrior(), [1.45, 1.55, 1.7, 2.0]
    rows = sweep(SignChannel(), alphas, "amp", prior=prior, tol=1e-10, max_iter=5000)
    status = {r["alpha"]: r["status"] for r in rows}
    assert status[1.45] == "converged" and calls[1.45] > 0
    assert status[1.55] == "perfect-recovery" and calls[1.55] > 0
    for a in (1.7, 2.0):
        assert status[a] == "perfect-recovery" and a not in calls
        alone = run_state_evolution(SignChannel(), a, "uninformed", prior=prior, tol=1e-10,
                                    max_iter=5000)
        assert alone.status == "perfect-recovery" and calls[a] > 0
        row = next(r for r in rows if r["alpha"] == a)
        assert row["free_entropy"] == pytest.approx(alone.free_entropy()[0], abs=1e-12)
    # only a smaller α vouches for this one
    calls.clear()
    res = run_state_evolution(SignChannel(), 1.45, "uninformed", prior=prior, tol=1e-10,
                              max_iter=5000, recovered_at=1.7)
    assert res.status == "converged" and calls[1.45] > 0
    with pytest.raises(ValueError, match="recovered_at"):
        run_state_evolution(SignChannel(), 1.45, prior=prior, recovered_at=float("nan"))
