"""Bayes-GAMP: closed-form SE, weak recovery, attention layers, back-ends, CLI contract."""

import math

import numpy as np
import pytest

from asymptotics.backend import BackendError, get_namespace
from asymptotics.channels.registry import make_channel
from asymptotics.results import read_result_file
from asymptotics.state_evolution import linear_channel_fixed_point
from simulators.amp import AMPConfig, make_problem, run_amp, summarise
from smi.cli import main as smi_main
from tests.fibre_reference import fibre_reference
from validation.amp_vs_se import compare, fit_inverse_dim, se_plugin_error


def main(argv):
    """``smi simulate amp`` with ``argv``."""
    return smi_main(["simulate", "amp", *argv])


def _gpu_or_skip():
    try:
        get_namespace("gpu")
    except (BackendError, ImportError, ValueError) as exc:
        pytest.skip(f"no GPU back-end: {exc}")


def test_linear_channel_matches_closed_form_se():
    """D = 500, α = 1.2, Δ = 0.1: SE gives Q = 0.8 exactly.

    Per-seed spread of M is about 0.065 (mostly the teacher norm |w*|²/D, std sqrt(2/D) =
    0.063), so 16 seeds give stderr ≈ 0.016; tolerance 3 stderr + 2/D (the finite-size
    allowance of validation.amp_vs_se).
    """
    ch = make_channel("linear", noise=0.1)
    cfg = AMPConfig(dim=500, alpha=1.2, max_iter=200)
    results = [run_amp(ch, cfg, seed) for seed in range(16)]
    assert all(r.converged for r in results)
    s = summarise(results)
    q_se = linear_channel_fixed_point(1.2, 0.1)
    assert q_se == pytest.approx(0.8)
    for key in ("m", "q"):
        tol = 3 * s[f"{key}_stderr"][0] + 2 / 500
        assert abs(s[f"{key}_mean"][0] - q_se) < tol, (key, s[f"{key}_mean"], tol)
        assert 0.005 < s[f"{key}_stderr"][0] < 0.04  # the spread is what we claim it is
    # Nishimori at the fixed point: Ĉ = V = 1 - Q_SE (a self-averaging quantity)
    for r in results:
        assert r.C[0, 0] == pytest.approx(1 - q_se, abs=0.03)
    # the comparison helper says the same
    se = {"q": [q_se], "q_error": [0.0], "gen_error": 1 - q_se, "gen_error_stderr": 0.0}
    assert compare(s, se, 500)["agree"]


def test_linear_trajectory_follows_se_iterates():
    """Undamped GAMP from Ŵ_0 = 0 follows the SE iterates Q_t (tests the Onsager term).

    SE: Q̂_t = α/(Δ + 1 − Q_t), Q_{t+1} = Q̂_t/(1 + Q̂_t) from Q_0 = 0.  D = 2000, 30 seeds:
    per-iteration stderr ≈ 0.005 for m (mostly the teacher norm |w*|²/D, std sqrt(2/D) per
    seed) and ≈ 0.0025 for m_rel (norm divided out, same limit Q_t); tolerance 3 stderr + 2/D.
    """
    ch = make_channel("linear", noise=0.1)
    alpha, T = 1.2, 6
    q, se = 0.0, [0.0]
    for _ in range(T):
        qh = alpha / (0.1 + 1 - q)
        q = qh / (1 + qh)
        se.append(q)
    cfg = AMPConfig(dim=2000, alpha=alpha, max_iter=T, damping=1.0, init_scale=0.0,
                    n_test=100)
    n = 30
    runs = [run_amp(ch, cfg, s).records for s in range(n)]
    for key in ("m", "m_rel"):
        ms = np.array([[r[key][0] for r in records] for records in runs])
        mean, err = ms.mean(axis=0), ms.std(axis=0, ddof=1) / math.sqrt(n)
        assert ms.shape == (n, T + 1)
        for t in range(1, T + 1):
            assert abs(mean[t] - se[t]) < 3 * err[t] + 2 / 2000, (key, t, mean[t], se[t], err[t])


def test_phase_retrieval_weak_recovery_threshold():
    """α_c = 1/2: at α = 1.5 GAMP escapes the uninformed fixed point, at α = 0.3 not."""
    ch = make_channel("phase-retrieval")
    D = 500
    up = run_amp(ch, AMPConfig(dim=D, alpha=1.5, max_iter=200), seed=3)
    assert up.converged
    assert up.final["m"][0] > 0.9  # above α = 1 the noiseless problem is recovered
    assert up.final["gen_error"] < 0.05
    for seed in (0, 1):
        down = run_amp(ch, AMPConfig(dim=D, alpha=0.3, max_iter=100), seed=seed)
        ms = [abs(r["m"][0]) for r in down.records]
        assert max(ms[1:]) < 3 / math.sqrt(D)  # O(1/sqrt(D)) and shrinking
        assert abs(down.final["m"][0]) < 1 / math.sqrt(D)
        assert down.final["gen_error"] > 2.0  # E(z*² - 0)² = 3 at Q = 0


def test_attention_both_layers_learned_small():
    """Default model at α = 1.2, D = 300, 2 seeds: the last layer first, then the first.

    The first layer decays while the last is unlearned and escapes after it; its escape
    time varies with the seed (12-21 iterations at D = 300 for seeds 0-3).
    """
    ch = make_channel("attention")
    cfg = AMPConfig(dim=300, alpha=1.2, max_iter=40, n_test=500)
    for seed in (2, 3):
        res = run_amp(ch, cfg, seed)
        assert res.status in ("converged", "max-iter")
        m0 = [r["m"] for r in res.records]
        assert m0[0][0] < 0.01 and m0[0][1] < 0.01  # small random start
        # staircase: layer 2 (index 1) is learned before layer 1 (index 0)
        t2 = next(i for i, m in enumerate(m0) if m[1] > 0.5)
        t1 = next(i for i, m in enumerate(m0) if m[0] > 0.5)
        assert t2 < t1
        assert min(res.final["m"]) > 0.8
        assert res.final["gen_error"] < 0.05 < res.records[0]["gen_error"]
        # at the start the plug-in error is the Q = 0 value 0.386 (THEORY §4)
        assert res.records[0]["gen_error"] == pytest.approx(0.386, abs=0.03)
        # the off-diagonal overlaps stay at the finite-size level (sign symmetry)
        assert abs(res.final["M"][0][1]) < 0.2 and abs(res.final["M"][1][0]) < 0.2


@pytest.mark.slow
def test_attention_matches_se_at_d500():
    """α = 1.2, D = 500, 4 seeds against SE from the uninformed start (Sobol' 2^10)."""
    from asymptotics.state_evolution import SESettings
    from validation.amp_vs_se import se_prediction

    ch = make_channel("attention")
    se = se_prediction(ch, 1.2, SESettings(sobol_log2=10))
    cfg = AMPConfig(dim=500, alpha=1.2, max_iter=200)
    s = summarise([run_amp(ch, cfg, seed) for seed in range(4)])
    cmp = compare(s, se, 500)
    assert cmp["agree"], cmp


def test_plug_in_error_at_q0_and_q1():
    ch = make_channel("attention")
    e0, se0 = se_plugin_error(ch, np.zeros((2, 2)), n=2**14)
    assert e0 == pytest.approx(0.386, abs=4 * se0 + 0.005)
    e1, _ = se_plugin_error(ch, (1 - 1e-12) * np.eye(2), n=2**10)
    assert e1 < 1e-8


def test_determinism_and_problem_uses_channel_forward():
    ch = make_channel("attention")
    cfg = AMPConfig(dim=40, alpha=1.0, max_iter=3, n_test=20)
    a = run_amp(ch, cfg, 7)
    b = run_amp(ch, cfg, 7)
    assert a.records == b.records
    prob = make_problem(ch, cfg, 7)
    Z = np.einsum("nld,dp->nlp", prob.X, prob.W_star) / math.sqrt(cfg.dim)
    np.testing.assert_allclose(np.abs(prob.obs), np.abs(ch.observe(Z)), atol=1e-8)


def test_non_pd_variance_is_reported_not_regularised():
    """When I + A loses positive definiteness the run stops and says so; the named
    ``psd_projection`` option instead projects A (counted, logged per iteration).

    The failure is built directly: a posterior covariance far above V makes A < -I.
    """
    from asymptotics.channels.base import Posterior
    from asymptotics.channels.closed_form import LinearChannel

    class Wild(LinearChannel):
        def posterior(self, obs, omega, V):
            p = super().posterior(obs, omega, V)
            return Posterior(p.log_norm, p.mean, p.second + 50.0)  # Cov >> V

    cfg = AMPConfig(dim=50, alpha=2.0, max_iter=5)
    res = run_amp(Wild(0.1), cfg, 0)
    assert res.status == "non-pd-variance" and not res.converged
    assert res.final["failed"] and min(res.final["eig_I_plus_A"]) <= 0
    cfg_p = AMPConfig(dim=50, alpha=2.0, max_iter=2, psd_projection=True)
    res_p = run_amp(Wild(0.1), cfg_p, 0)
    assert res_p.status != "non-pd-variance" and res_p.psd_projections >= 1
    assert any(r["psd_projected"] for r in res_p.records)


@pytest.mark.parametrize(
    "field,value",
    [("alpha", 0.0), ("alpha", -1.0), ("alpha", float("nan")), ("dim", 1),
     ("device", "tpu"), ("damping", 0.0), ("tol", float("nan")), ("max_iter", 0)],
)
def test_bad_config_rejected(field, value):
    cfg = AMPConfig(dim=10, alpha=1.0)
    setattr(cfg, field, value)
    with pytest.raises(ValueError, match=field.split("_")[0]):
        cfg.validate()


@pytest.mark.parametrize(
    "argv,option",
    [(["--alpha", "0"], "--alpha"), (["--alpha", "-2"], "--alpha"),
     (["--alpha", "nan"], "--alpha"), (["--dim", "1"], "--dim"), (["--seeds", "0"], "--seeds"),
     (["--device", "tpu"], "--device"), (["--model", "foo"], "--model"),
     (["--dims", "250,1"], "--dims"), (["--damping", "1.5"], "--damping"),
     (["--noise", "inf"], "--noise")],
)
def test_cli_bad_input(argv, option, capsys, tmp_path):
    out = tmp_path / "o.jsonl"
    assert main([*argv, "--output", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and option in err[0]
    assert not out.exists()  # no work done


def test_cli_gpu_without_cupy(capsys):
    try:
        get_namespace("gpu")
        pytest.skip("a GPU back-end is present")
    except (BackendError, ImportError):
        pass
    assert main(["--device", "gpu"]) == 2
    assert "--device" in capsys.readouterr().err


def test_cli_schema(tmp_path):
    out = tmp_path / "amp.jsonl"
    rc = main(["--model", "linear", "--alpha", "2", "--dims", "60,120", "--seeds", "3",
               "--max-iter", "30", "--compare-se", "--output", str(out)])
    assert rc == 0
    rows = read_result_file(out).rows
    assert rows[0]["se"] and rows[0]["q"][0] == pytest.approx(
        linear_channel_fixed_point(2.0, 0.1), abs=1e-6)
    iters = [r for r in rows if "iteration" in r and not r.get("final")]
    for key in ("seed", "dim", "iteration", "M", "Q", "gen_error", "m", "q", "delta"):
        assert all(key in r for r in iters), key
    assert {r["iteration"] for r in iters if r["seed"] == 0 and r["dim"] == 60} >= {0, 1, 2}
    assert np.asarray(iters[0]["M"]).shape == (1, 1)
    finals = [r for r in rows if r.get("final")]
    assert len(finals) == 6
    assert all(len(r["m_tail20_mean"]) == 1 and r["m_tail20_std"][0] >= 0 for r in finals)
    summaries = [r for r in rows if r.get("summary")]
    assert len(summaries) == 2 and rows[-1] is summaries[-1]
    last = rows[-1]
    for key in ("M", "Q", "m", "q", "gen_error", "iterations"):
        for stat in ("mean", "std", "stderr"):
            assert f"{key}_{stat}" in last
    assert last["n_seeds"] == 3 and 0 <= last["n_converged"] <= 3
    assert "agree" in last["se_comparison"]
    fit = last["finite_size_fit"]
    assert fit["dims"] == [60, 120] and "a" in fit["m_0"]


def test_cli_attention_sign_gauge(tmp_path):
    out = tmp_path / "a.jsonl"
    assert main(["--alpha", "1.0", "--dim", "30", "--seeds", "1", "--max-iter", "3",
                 "--n-test", "50", "--output", str(out)]) == 0
    rows = read_result_file(out).rows
    for r in rows:
        if "iteration" in r and not r.get("final"):
            M = np.asarray(r["M"])
            assert M.shape == (2, 2) and np.all(np.diag(M) >= 0)
            np.testing.assert_allclose(np.abs(M), np.abs(np.asarray(r["M_raw"])))


def test_fit_inverse_dim_recovers_line():
    D = np.array([250, 500, 1000, 2000])
    y = 0.01 + 3.0 / D
    fit = fit_inverse_dim(D, y, np.full(4, 1e-3))
    assert fit["a"] == pytest.approx(0.01, abs=1e-9) and fit["b"] == pytest.approx(3.0)
    with pytest.raises(ValueError):
        fit_inverse_dim([100, 100], [0.1, 0.2], [0.01, 0.01])


def test_vectorised_posterior_path_matches_numba():
    """The GPU code path (vectorised fibre integral) run with numpy equals the numba one."""
    ch = make_channel("attention")
    runs = [run_amp(ch, AMPConfig(dim=40, alpha=1.2, max_iter=6, n_test=50, cpu_kernel=kernel), 1)
            for kernel in ("numba", "array")]
    for ra, rb in zip(runs[0].records, runs[1].records, strict=True):
        np.testing.assert_allclose(ra["M_raw"], rb["M_raw"], atol=1e-10)
        np.testing.assert_allclose(ra["V"], rb["V"], atol=1e-10)


@pytest.mark.gpu
@pytest.mark.parametrize("model", ["attention", "linear"])
def test_numpy_and_cupy_paths_agree(model):
    _gpu_or_skip()
    ch = make_channel(model)
    runs = {}
    for device in ("cpu", "gpu"):
        cfg = AMPConfig(dim=200, alpha=1.2, max_iter=15, n_test=200, device=device)
        runs[device] = run_amp(ch, cfg, seed=4)
    a, b = runs["cpu"].records, runs["gpu"].records
    assert len(a) == len(b)
    for ra, rb in zip(a, b, strict=True):
        np.testing.assert_allclose(ra["M_raw"], rb["M_raw"], atol=1e-7)
        np.testing.assert_allclose(ra["Q"], rb["Q"], atol=1e-7)
        assert ra["gen_error"] == pytest.approx(rb["gen_error"], abs=1e-7)


def test_compare_widens_the_tolerance_for_few_seeds():
    """The standard error of n seeds is uncertain: the tolerance uses the Student-t
    quantile of n - 1 degrees of freedom at the confidence of 3 normal deviations."""
    se = {"q": [1.0], "q_error": [0.0], "gen_error": 0.0, "gen_error_stderr": 0.0}

    def summary(n):
        return {"n_seeds": n, "n_failed": 0, "m_mean": [0.9], "m_stderr": [0.02],
                "gen_error_mean": 0.0, "gen_error_stderr": 0.0}

    few, many = compare(summary(4), se, 10**6), compare(summary(1000), se, 10**6)
    assert few["t"] == pytest.approx(9.219, abs=1e-3) and few["agree"]  # 5 stderr off
    assert many["t"] == pytest.approx(3.0, abs=0.03) and not many["agree"]


@pytest.mark.slow  # compiling the generic kernel, the reference, is most of its 12 s
@pytest.mark.parametrize("depth, skip", [(1, 1.0), (2, 1.0), (2, 0.05), (3, 0.05)])
def test_two_token_general_v_kernel_equals_the_generic_kernel(depth, skip):
    """AMP's posterior (L = 2, general ``V = Ĉ``) runs on the written-out kernel
    ``fibre_moments_two_tokens_general``; it makes the generic kernel's sums in the same
    order, so the moments agree to 1e-12 relative (bitwise today) on random observations,
    near-singular mixers (skip c = 0.05), a lopsided correlated ``V`` (variances 2 and
    1e-3) and a random one, on shifted nodes and on the shared ones (``ω_U = 0``, depth >=
    2); depth 1 has no mixer (``B = I``)."""
    from asymptotics.channels import _attention_kernels as kern

    ch = make_channel("attention", depth=depth, seq_len=2, skip=skip, beta=1.0)
    rng = np.random.default_rng(depth + int(100 * skip))
    G = rng.normal(size=(depth, depth))
    lopsided = np.diag([2.0] + [1e-3] * (depth - 1))
    lopsided[0, -1] = lopsided[-1, 0] = 0.03
    T, W = ch._inner_nodes()
    S, K = W.shape[0], 6
    for V in (lopsided, G @ G.T / depth + 0.05 * np.eye(depth)):
        chol, coef, vc = ch._conditional(V)
        for shared in (False, True)[: 1 + (depth > 1)]:
            a = 1.5 * rng.normal(size=(K, 2))
            om = 0.7 * rng.normal(size=(K, 2, depth))
            if shared:
                om[:, :, : depth - 1] = 0.0
            got = ch.fibre_moments(a, om, V, inner_path="general")
            Binv, logdet = ch._shared_mixers(chol) if shared else (np.zeros((1, 2, 2)),
                                                                   np.zeros(1))
            ref = (np.empty((S, K)), np.empty((S, K, 2, depth)),
                   np.empty((S, K, 2, depth, 2, depth)))
            kern.fibre_moments(a, om, T, W, chol, coef, vc, skip, 1.0, Binv, logdet, shared,
                               *ref, True)
            for x, y in zip((got.log_norm, got.mean, got.second), ref, strict=True):
                assert np.all(np.isfinite(y[0]))  # the primary set (a coarse one may be empty)
                np.testing.assert_allclose(x, y, rtol=1e-12, atol=1e-300)


@pytest.mark.parametrize("skip, c_reg, v_cond", [(1.0, 0.0, 0.5), (0.05, 0.4, 1e-3),
                                                 (0.3, -1.2, 2.0)])
def test_vectorised_depth2_kernel_equals_the_fibre_integral(skip, c_reg, v_cond):
    """``fibre_moments_two_tokens_depth2`` (AMP's posterior at depth 2, vectorised with
    ``vexp``) = the fibre integral written in numpy from its definition, to 1e-11, on
    near-singular mixers (c = 0.05), a lopsided conditional variance (1e-3) and a
    regression on the first layer; with and without second moments (then NaN)."""
    from asymptotics.channels import _attention_kernels as kern

    ch = make_channel("attention", depth=2, seq_len=2, skip=skip, beta=1.3)
    T, W = ch._inner_nodes()
    rng = np.random.default_rng(int(10 * skip))
    K, c_first = 5, 0.8
    a = 1.5 * rng.normal(size=(K, 2))
    om = 0.7 * rng.normal(size=(K, 2, 2))
    ref = fibre_reference(a, om, T, W, [c_first], [c_reg], v_cond, skip, 1.3)
    for with_second in (True, False):
        got = (np.empty((2, K)), np.empty((2, K, 2, 2)), np.full((2, K, 2, 2, 2, 2), np.nan))
        kern.fibre_moments_two_tokens_depth2(a, om, T, W, c_first, c_reg, v_cond, skip, 1.3,
                                             *got, with_second)
        np.testing.assert_allclose(got[0], ref[0], rtol=1e-11)
        np.testing.assert_allclose(got[1], ref[1], rtol=1e-11, atol=1e-13)
        if with_second:
            np.testing.assert_allclose(got[2], ref[2], rtol=1e-11, atol=1e-13)
        else:
            assert np.isnan(got[2]).all()


def test_se_prediction_at_perfect_recovery_has_a_finite_error(monkeypatch):
    """At α = 1.2 SE reaches perfect recovery (Q = I, Q̂ = ∞); its error is 0, so an AMP
    summary can be compared with it (a NaN tolerance never agrees).  The solver's own
    perfect-recovery result, reached here from ``recovered_at`` without evaluating the map
    (``smi simulate amp --compare-se`` at α = 1.2 reaches it by iterating)."""
    import functools

    import validation.amp_vs_se as avs
    from asymptotics.state_evolution import SESettings, run_state_evolution

    monkeypatch.setattr(avs, "run_state_evolution",
                        functools.partial(run_state_evolution, recovered_at=1.0))
    se = avs.se_prediction(make_channel("attention"), 1.2, SESettings(sobol_log2=9))
    assert se["status"] == "perfect-recovery" and se["q"] == [1.0, 1.0]
    assert se["q_error"] == [0.0, 0.0]
    summary = {"n_seeds": 4, "n_failed": 0, "m_mean": [0.999, 0.998],
               "m_stderr": [0.001, 0.001], "gen_error_mean": 1e-4, "gen_error_stderr": 1e-5}
    cmp = compare(summary, se, 10**4)
    assert all(math.isfinite(e["tolerance"]) for e in cmp["entries"]) and cmp["agree"]
