"""The link channel (issue 14): any model y = g(Z) (+ noise) from a formula."""

import math

import numpy as np
import pytest

from asymptotics.channels.closed_form import LinearChannel, SignChannel, SignProductChannel
from asymptotics.channels.link import LinkChannel, LinkError, parse_link
from asymptotics.channels.registry import make_channel
from asymptotics.state_evolution import StateEvolution
from asymptotics.thresholds import ThresholdSettings, weak_recovery_thresholds
from smi.cli import main

PRODUCT_ALPHA = 0.593751  # y = z1 z2 (noiseless), THEORY §6
ATTENTION_DEPTH1_ALPHA = 1.0 / 6.0  # AttentionChannel(depth=1, seq_len=2): 0.16666666667
# depth-1 attention, L = 2, p = 1, as a link: the diagonal of softmax_rows(s sᵀ)
ATTENTION_LINK = "(1/(1 + exp(z2_1*z1_1 - z1_1**2)), 1/(1 + exp(z1_1*z2_1 - z2_1**2)))"


def alpha_c(ch, **kw):
    r = weak_recovery_thresholds(ch, ThresholdSettings(**kw))
    return r, [(d.alpha_c, d.stderr, d.status) for d in r.directions]


# ------------------------------------------------------------------------------- parsing


def test_parse_infers_shape_text_and_discreteness():
    s = parse_link("sign(z1*z2)")
    assert (s.seq_len, s.dim, s.out_dim, s.discrete) == (1, 2, 1, True)
    assert s.text == "sign(z1*z2)" and s.values[:, 0].tolist() == [-1.0, 1.0]
    s = parse_link("z1_1*z2_1 + z2_2", dim=3)
    assert (s.seq_len, s.dim, s.out_dim, s.discrete) == (2, 3, 1, False)
    Z = np.arange(6.0).reshape(1, 2, 3)
    assert s.func(Z)[0, 0] == 0.0 * 3.0 + 4.0
    s = parse_link("(z1, z2**2)")
    assert s.out_dim == 2 and np.array_equal(s.func(np.array([[[2.0, -3.0]]])), [[2.0, 9.0]])
    assert parse_link("relu(z)").text == parse_link("Max(z, 0)").text
    f = parse_link(lambda Z: Z[..., 0, 0] * Z[..., 1, 0], seq_len=2, dim=1)
    assert (f.seq_len, f.dim, f.out_dim) == (2, 1, 1)


@pytest.mark.parametrize("link,kw,option", [
    ("x + z", {}, "--link"),
    ("z1 + z", {}, "--link"),
    ("log(z)", {}, "--link"),
    ("z1 +", {}, "--link"),
    ("z1*z3", {"dim": 2}, "--dim"),
    ("z", {"dim": 2}, "--dim"),
    ("z1", {"seq_len": 2}, "--seq-len"),
    ("z2_1", {"seq_len": 1}, "--seq-len"),
])
def test_parse_refusals_name_the_option(link, kw, option):
    with pytest.raises(LinkError) as exc:
        parse_link(link, **kw)
    assert exc.value.option == option


@pytest.mark.parametrize("noise,outputs,option", [
    (None, "auto", "--noise"), (-0.1, "auto", "--noise"), (float("nan"), "auto", "--noise"),
])
def test_channel_refuses_bad_noise(noise, outputs, option):
    with pytest.raises(LinkError) as exc:
        LinkChannel("z**2", noise=noise, outputs=outputs)
    assert exc.value.option == option


# ------------------------------------------------------------------------- posteriors


def test_sign_links_equal_the_closed_forms():
    rng = np.random.default_rng(1)
    omega = rng.standard_normal((7, 1, 1))
    for y in (-1.0, 1.0):
        a = LinkChannel("sign(z)").posterior(np.full(7, y), omega, np.array([[0.3]]))
        b = SignChannel().posterior(np.full(7, y), omega, np.array([[0.3]]))
        assert np.allclose(a.log_norm, b.log_norm, atol=1e-13)
        assert np.allclose(a.mean, b.mean, atol=1e-12)
        assert np.allclose(a.second, b.second, atol=1e-12)
    omega = rng.standard_normal((5, 1, 2))
    V = np.diag([0.4, 0.7])
    a = LinkChannel("sign(z1*z2)").posterior(np.ones(5), omega, V)
    b = SignProductChannel().posterior(np.ones(5), omega, V)
    assert np.allclose(a.log_norm, b.log_norm, atol=1e-10)
    assert np.allclose(a.mean, b.mean, atol=1e-9)


def test_linear_link_equals_the_linear_channel():
    rng = np.random.default_rng(2)
    y, omega = rng.standard_normal(9), rng.standard_normal((9, 1, 1))
    V = np.array([[0.6]])
    a = LinkChannel("z", noise=0.1).posterior(y, omega, V)
    b = LinearChannel(0.1).posterior(y, omega, V)
    assert np.allclose(a.log_norm, b.log_norm, atol=1e-10)
    assert np.allclose(a.mean, b.mean, atol=1e-10)
    assert np.allclose(a.second, b.second, atol=1e-10)
    assert np.all(a.error < 1e-8)
    ra, la = alpha_c(LinkChannel("z", noise=0.1))
    rb, lb = alpha_c(LinearChannel(0.1))
    assert la[0][2] == lb[0][2] == "trivial"
    assert ra.directions[0].eigenvalue == pytest.approx(rb.directions[0].eigenvalue, abs=1e-6)


def test_inner_error_covers_refinement():
    rng = np.random.default_rng(3)
    y, omega = 0.5 * rng.standard_normal(6), 0.5 * rng.standard_normal((6, 1, 2))
    V = np.array([[0.7, 0.2], [0.2, 0.5]])
    ch = LinkChannel("z1*z2", noise=0.1)
    a, b = ch.posterior(y, omega, V), ch.refined(2).posterior(y, omega, V)
    change = np.abs(a.mean - b.mean)
    assert change.max() > 0
    assert np.all(change <= a.error + 1e-12)
    assert np.all(b.error <= a.error + 1e-15)


def test_qmc_error_matches_the_spread_over_seeds():
    """L·p = 5: randomised QMC; the replicate standard error against 8 seeds' spread."""
    y = np.array([0.3, -1.0])
    omega = np.array([[[0.2, -0.1, 0.4, 0.0, 0.3]], [[0.0, 0.5, -0.2, 0.1, 0.0]]])
    V = 0.6 * np.eye(5)
    base = LinkChannel("z1*z2 + z3*z4 + z5", noise=0.5)
    assert base.rule.kind == "rqmc"
    posts = [base.refined(0, seed).posterior(y, omega, V) for seed in range(8)]
    means = np.array([p.mean for p in posts])
    spread = means.std(axis=0, ddof=1)
    err = np.mean([p.error for p in posts], axis=0)
    ratio = spread / err
    assert 0.3 < np.median(ratio) < 3.0


# -------------------------------------------------------------------------- thresholds


def test_sign_product_threshold_is_pi_squared_over_4():
    r, dirs = alpha_c(make_channel("link", link="sign(z1*z2)", seq_len=None))
    for a, err, status in dirs:
        assert status == "finite" and abs(a - math.pi**2 / 4) < 1e-6 and err < 1e-6


def test_trivial_and_not_learnable_links():
    assert alpha_c(LinkChannel("sign(z)"))[1][0][2] == "trivial"
    assert alpha_c(LinkChannel("z**3 - 3*z", noise=0.1))[1][0][2] == "trivial"
    assert alpha_c(LinkChannel("relu(z)", noise=0.1))[1][0][2] == "trivial"
    r, dirs = alpha_c(LinkChannel("sign(z1*z2*z3)"))
    assert [d[2] for d in dirs] == ["not-learnable"] * 3
    assert np.abs(r.operator).max() < 1e-12  # F ≡ 0


def test_phase_retrieval_with_noise_tends_to_one_half():
    vals = [alpha_c(LinkChannel("z**2", noise=d))[1][0] for d in (1.0, 0.1, 0.01)]
    gaps = [a - 0.5 for a, _, _ in vals]
    assert gaps[0] > gaps[1] > gaps[2] > 0 and gaps[2] < 0.005
    assert all(err < 0.1 * g for (_, err, _), g in zip(vals, gaps, strict=True))
    # the error bar covers the change under refinement
    a0, e0, _ = vals[1]
    a1 = alpha_c(LinkChannel("z**2", noise=0.1), resolution=1)[1][0][0]
    assert abs(a1 - a0) <= e0


def test_product_with_noise_tends_to_the_product_channel():
    vals = [alpha_c(LinkChannel("z1*z2", noise=d))[1][0] for d in (0.1, 0.01)]
    gaps = [abs(a - PRODUCT_ALPHA) for a, _, _ in vals]
    assert gaps[0] > gaps[1] + vals[1][1] and gaps[1] < 0.02


def test_attention_link_tends_to_the_attention_channel():
    vals = [alpha_c(LinkChannel(ATTENTION_LINK, noise=d))[1][0] for d in (0.1, 0.01)]
    gaps = [a - ATTENTION_DEPTH1_ALPHA for a, _, _ in vals]
    assert gaps[0] > gaps[1] > 0
    assert all(err < 0.01 * g for (_, err, _), g in zip(vals, gaps, strict=True))


@pytest.mark.slow
def test_attention_link_small_noise_and_the_channel_value():
    from asymptotics.channels.attention import AttentionChannel

    att = weak_recovery_thresholds(AttentionChannel(depth=1, seq_len=2)).directions[0]
    assert att.alpha_c == pytest.approx(ATTENTION_DEPTH1_ALPHA, abs=3 * att.stderr + 1e-6)
    a, err, _ = alpha_c(LinkChannel(ATTENTION_LINK, noise=0.001))[1][0]
    assert 0 < a - ATTENTION_DEPTH1_ALPHA < 0.06 and err < 0.01 * (a - ATTENTION_DEPTH1_ALPHA)


# ------------------------------------------------------------------ state evolution


def test_state_evolution_equals_the_closed_forms():
    # SignProductChannel's SE map at α = 3, Q = diag(0.5, 0.3) (its Legendre rules, 4 s)
    a = StateEvolution(LinkChannel("sign(z1*z2)"), 3.0).qhat(np.diag([0.5, 0.3]))
    assert np.allclose(np.diag(a.Qhat), [0.46530028, 0.73105554], atol=1e-8)
    assert a.psi_out == pytest.approx(-0.6591675760284436, abs=1e-12)
    Q = np.array([[0.4]])
    a = StateEvolution(LinkChannel("z", noise=0.1), 1.0).qhat(Q)
    b = StateEvolution(LinearChannel(0.1), 1.0).qhat(Q)
    assert np.allclose(a.Qhat, b.Qhat, rtol=1e-8)
    assert a.Qhat[0, 0] == pytest.approx(1.0 / (0.1 + 1 - 0.4), rel=1e-8)  # α/(Δ + 1 - Q)


def test_fixed_point_equals_the_sign_product_channel():
    """α = 3: SignProductChannel's fixed point is 0.24270628 (its Legendre rules, 40 s)."""
    from asymptotics.state_evolution import run_state_evolution

    r = run_state_evolution(LinkChannel("sign(z1*z2)"), 3.0)
    assert r.converged
    assert np.allclose(np.diag(r.Q), 0.24270628, atol=2e-7) and r.Q[0, 1] == 0.0


# ------------------------------------------------------------------------------- CLI


def test_cli_curve_with_a_link(capsys):
    argv = ["curve", "--link", "sign(z1*z2)", "--alphas", "1", "--branch", "amp",
            "--format", "json", "--no-cache", "--quiet"]
    assert main(argv) == 0
    import json

    rows = json.loads(capsys.readouterr().out)
    assert rows[0]["link"] == "sign(z1*z2)" and rows[0]["dim"] == 2
    assert max(np.ravel(rows[0]["Q"])) < 1e-6  # below α_c = π²/4: Q = 0


def test_cli_thresholds_with_a_link(capsys):
    assert main(["thresholds", "--link", "sign(z1*z2)", "--format", "csv", "--no-cache"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("model,link,dim,")
    assert out[1].startswith("link,sign(z1*z2),2,") and "2.4674011002" in out[1]


@pytest.mark.parametrize("args,option", [
    (["--link", "x + z"], "--link"),
    (["--link", "z1*z3", "--dim", "2"], "--dim"),
    (["--link", "z1", "--seq-len", "2"], "--seq-len"),
    (["--link", "log(z)"], "--link"),
    (["--link", "z", "--noise", "-1"], "--noise"),
    (["--link", "z", "--noise", "nan"], "--noise"),
    (["--link", "z"], "--noise"),
    (["--link", "z", "--model", "attention"], "--link"),
    (["--model", "link"], "--model"),
    (["--dim", "2"], "--dim"),
])
@pytest.mark.parametrize("command", ["thresholds", "curve"])
def test_cli_bad_links_exit_2_naming_the_option(command, args, option, capsys):
    rc = main([command, *args])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert len(err) == 1 and f"{option}:" in err[0]


def test_cli_simulate_amp_bad_link(capsys):
    assert main(["simulate", "amp", "--link", "z1 + y"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--link:" in err[0]


# -------------------------------------------------------------------------------- AMP


def test_amp_on_the_linear_link_follows_the_linear_channel():
    """Same seed, same data: the link's posterior equals the linear channel's to 1e-10,
    so the GAMP trajectories agree."""
    from simulators.amp import AMPConfig, run_amp

    cfg = AMPConfig(dim=200, alpha=1.2, max_iter=15)
    a = run_amp(LinkChannel("z", noise=0.1), cfg, seed=4)
    b = run_amp(LinearChannel(0.1), cfg, seed=4)
    assert a.iterations == b.iterations
    assert np.allclose(a.final["M"], b.final["M"], atol=1e-7)
    assert np.allclose(a.final["Q"], b.final["Q"], atol=1e-7)
    assert 0.6 < a.final["M"][0][0] < 1.0
