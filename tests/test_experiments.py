"""Optimizer experiments (``smi experiment``): quick-budget claims, gradient checks, CLI.

Each experiment runs once on the quick budget (module-scoped fixture) and its published
claim is asserted on the numbers it wrote to ``summary.json``.
"""

import json
import os

import numpy as np
import pytest

from simulators.optimizers import NormalizedGD, make_optimizer
from smi.cli import add_command
from smi.cli import main as smi_main
from smi.commands import experiment as experiment_command
from validation.experiments import EXPERIMENTS, get_experiment, run_experiment


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    """``quick(name)`` -> summary of the quick run of ``name`` (run once per module)."""
    cache = {}

    def get(name):
        if name not in cache:
            out = tmp_path_factory.mktemp(name.replace("-", "_"))
            summary = run_experiment(name, "quick", str(out), seed=0)
            with open(out / "summary.json") as fh:
                assert json.load(fh) == summary
            assert (out / f"{name}.png").stat().st_size > 1000
            cache[name] = summary
        return cache[name]

    return get


def central_differences(f, w, h=1e-6, idx=None):
    idx = range(w.size) if idx is None else idx
    out = []
    for i in idx:
        e = np.zeros_like(w)
        e[i] = h
        out.append((f(w + e) - f(w - e)) / (2 * h))
    return np.array(out)


# ------------------------------------------------------------------------ registry, CLI


def test_registry_modules_have_run_and_docstring():
    assert set(EXPERIMENTS) == {"stochastic-quadratic", "signgd-transformer", "next-token",
                                "functional-sam", "rotation-symmetry"}
    for name in EXPERIMENTS:
        mod = get_experiment(name)
        assert callable(mod.run) and mod.NAME == name
        assert len(mod.__doc__) > 800  # data model and hyperparameters are documented
    with pytest.raises(ValueError, match="budget"):
        run_experiment("next-token", "medium", ".")


def main(argv):
    return smi_main(["experiment", *argv])


@pytest.mark.parametrize(
    "argv, option",
    [
        (["no-such-experiment"], "NAME"),
        (["next-token", "--budget", "huge"], "--budget"),
        (["next-token", "--seed", "-1"], "--seed"),
        (["next-token", "--seed", "x"], "--seed"),
    ],
)
def test_cli_bad_input_exits_2_naming_the_option(argv, option, capsys, tmp_path):
    assert main(argv + ["--output", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and option in err
    assert not (tmp_path / "o" / "summary.json").exists()


def test_cli_output_is_a_file(capsys, tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    assert main(["rotation-symmetry", "--output", str(f)]) == 2
    assert "--output" in capsys.readouterr().err


def test_cli_list_and_subparser(capsys):
    import argparse

    assert main(["list"]) == 0
    assert "functional-sam" in capsys.readouterr().out
    parser = argparse.ArgumentParser(prog="smi")
    add_command(parser.add_subparsers(dest="command"), experiment_command)
    args = parser.parse_args(["experiment", "next-token", "--budget", "full"])
    assert args.func is experiment_command.run and args.budget == "full"


def test_cli_runs_an_experiment(capsys, tmp_path):
    out = tmp_path / "rot"
    assert main(["rotation-symmetry", "--budget", "quick", "--output", str(out)]) == 0
    assert "holds" in capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    assert summary["experiment"] == "rotation-symmetry" and summary["budget"] == "quick"
    assert os.path.getsize(out / "rotation-symmetry.png") > 1000


# ------------------------------------------------------------------- normalised GD


def test_normalized_gd_step_length_and_direction():
    w = np.array([1.0, 2.0, -1.0])
    g = np.array([3.0, 0.0, -4.0])
    opt = make_optimizer("ngd", 0.5)
    assert isinstance(opt, NormalizedGD)
    w1 = opt.step(w, g)
    np.testing.assert_allclose(w1, w - 0.5 * g / 5.0, rtol=0, atol=1e-15)
    assert np.linalg.norm(w1 - w) == pytest.approx(0.5, abs=1e-15)
    np.testing.assert_array_equal(opt.step(w1, np.zeros(3)), w1)
    assert opt.step(w1, np.zeros(3)) is not w1
    # invariant to the gradient's scale
    np.testing.assert_allclose(NormalizedGD(0.5).step(w, 1e-9 * g), w1, atol=1e-15)


# ------------------------------------------------------------------ rotation symmetry


def test_rotation_symmetry_quick(quick):
    s = quick("rotation-symmetry")
    c = s["claims"]
    assert c["gd_sgd_equivariant"]["holds"]
    assert max(c["gd_sgd_equivariant"]["max_abs_loss_diff"].values()) < 1e-10
    assert c["adam_sign_not_equivariant"]["holds"]
    assert min(c["adam_sign_not_equivariant"]["max_rel_loss_diff"].values()) > 0.1
    for k in ("gd", "sgd"):
        assert s["results"][k]["weight_discrepancy"] < 1e-10
    for k in ("adam", "signgd", "signum"):
        assert s["results"][k]["weight_discrepancy"] > 0.1


# --------------------------------------------------------------- stochastic quadratic


def test_stochastic_quadratic_quick(quick):
    s = quick("stochastic-quadratic")
    c = s["claims"]
    assert c["well_conditioned_noiseless_sgd_beats_ssd"]["holds"]
    assert c["ill_conditioned_axis_aligned_noisy_ssd_beats_sgd"]["holds"]
    assert c["rotation_removes_ssd_advantage"]["holds"]
    fl = c["ill_conditioned_axis_aligned_noisy_ssd_beats_sgd"]["final_loss"]["nu=0.1"]
    assert fl["SSD"] < 0.5 * fl["SGD"]  # a clear advantage, not a tie
    for row in s["results"].values():  # every tuned step is inside the grid
        for opt, r in row.items():
            if isinstance(r, dict):
                assert not r["best_lr_on_grid_edge"], opt


# ----------------------------------------------------------------------- next token


def test_next_token_gradients_and_max_margin():
    from validation.experiments import next_token as nt

    rng = np.random.default_rng(1)
    V, L = 7, 4
    tokens, labels, opt, nextmap, _ = nt.make_data(rng, V, L, 12)
    W_ov = rng.standard_normal((V, V))
    W_kq = rng.standard_normal((V, V))
    _, G = nt.sentence_loss_grad(W_kq, W_ov, tokens, labels)
    fd = central_differences(
        lambda w: nt.sentence_loss_grad(w.reshape(V, V), W_ov, tokens, labels)[0],
        W_kq.ravel())
    np.testing.assert_allclose(G.ravel(), fd, atol=1e-8)
    _, G = nt.collocation_loss_grad(W_ov, nextmap)
    fd = central_differences(lambda w: nt.collocation_loss_grad(w.reshape(V, V), nextmap)[0],
                             W_ov.ravel())
    np.testing.assert_allclose(G.ravel(), fd, atol=1e-8)
    # tiny losses keep their relative precision (log1p) and the label gradient is exact
    big = 60.0 * np.eye(V)[nextmap].T
    loss, G = nt.collocation_loss_grad(big, nextmap)
    assert loss == pytest.approx((V - 1) * np.exp(-60.0), rel=1e-12)
    np.testing.assert_allclose(G.sum(axis=0), 0.0, atol=1e-40)
    # collocation max-margin: closed form (V-1)/V on n(x), -1/V elsewhere
    W, margin = nt.max_margin(nt.collocation_constraints(nextmap), (V, V))
    expected = -np.ones((V, V)) / V
    expected[nextmap, np.arange(V)] = (V - 1) / V
    np.testing.assert_allclose(W, expected, atol=1e-6)
    assert margin == pytest.approx(1.0, abs=1e-6)
    Wa, margin = nt.max_margin(nt.attention_constraints(tokens, opt), (V, V))
    assert margin == pytest.approx(1.0, abs=1e-5)


def test_next_token_quick(quick):
    s = quick("next-token")
    c = s["claims"]
    assert c["loss_decreases_geometrically"]["holds"]
    assert c["direction_converges_to_max_margin"]["holds"]
    assert min(c["direction_converges_to_max_margin"]["cosine_final"].values()) > 0.99
    assert c["norm_grows_linearly"]["holds"]
    assert s["max_margin"]["W_ov_min_constraint"] == pytest.approx(1.0, abs=1e-6)
    assert s["max_margin"]["W_kq_min_constraint"] == pytest.approx(1.0, abs=1e-5)


# ---------------------------------------------------------------- signgd transformer


def test_signgd_transformer_gradient_by_finite_differences():
    from validation.experiments import signgd_transformer as st

    rng = np.random.default_rng(2)
    shp = st.Shapes(d=7, m_k=3, m_v=4)
    X, y = st.sample_data(rng, n=5, d=7, s=3, sigma_p=1.0, mu_norm=1.5)
    w = 0.7 * rng.standard_normal(shp.size)
    loss, g = st.loss_and_grad(w, X, y, shp)
    assert loss == pytest.approx(st.evaluate(w, X, y, shp)["loss"], rel=1e-14)
    fd = central_differences(lambda v: st.loss_and_grad(v, X, y, shp)[0], w)
    np.testing.assert_allclose(g, fd, atol=1e-9)


def test_signgd_transformer_quick(quick):
    s = quick("signgd-transformer")
    c = s["claims"]
    assert c["signgd_fast_train_but_test_loss_order_one"]["holds"]
    assert c["adam_like_signgd"]["holds"]
    assert c["gd_generalises_at_least_as_well"]["holds"]
    acc = c["gd_generalises_at_least_as_well"]["final_test_accuracy"]
    assert acc["gd"] > 0.9 and acc["signgd"] < 0.7 and acc["adam"] < 0.7
    assert c["reported_attention_noise_to_signal"]["final"]["signgd"] < 0.1


# -------------------------------------------------------------------- functional SAM


def test_functional_sam_oracle_and_decomposition():
    from validation.experiments import functional_sam as fs

    rng = np.random.default_rng(3)
    V, d = 11, 4
    succ, p = fs.make_chain(rng, V, 1.1)
    prev, nxt = fs.sample_corpus(rng, succ, p, 40, 0.5)
    oracle = fs.BigramOracle(prev, nxt, V, d)
    w = oracle.init(rng)
    fd = central_differences(oracle.loss, w, idx=range(0, w.size, 3))
    np.testing.assert_allclose(oracle.grad(w)[::3], fd, atol=1e-8)
    # vjp is linear in the cotangent and the transpose of a finite-difference JVP
    G = rng.standard_normal((40, V))
    v = rng.standard_normal(w.size)
    h = 1e-6
    def logits(u):
        E, W, U, c = oracle.unpack(u)
        return np.tanh(E[oracle.x] @ W) @ U + c

    jvp = (logits(w + h * v) - logits(w - h * v)) / (2 * h)
    assert np.sum(G * jvp) == pytest.approx(oracle.vjp(w, G) @ v, rel=1e-7)
    for pre in ("sam-adamw", "psam-adamw"):
        opt = make_optimizer(pre, 1e-3, rho=0.1)
        opt.base.step(w, oracle.grad(w))  # give the base a second moment
        rec = fs.decompose(opt, oracle, w, oracle.grad(w))
        assert rec["residual_sum"] < 1e-12 and rec["residual_logit_direct"] < 1e-10
        assert rec["eps_norm"] == pytest.approx(0.1, rel=1e-12)


def test_functional_sam_quick(quick):
    s = quick("functional-sam")
    c = s["claims"]
    assert c["decomposition_exact"]["holds"]
    assert c["decomposition_exact"]["max_relative_residual"] < 1e-10
    assert c["rho_zero_recovers_base"]["holds"]
    assert c["rho_zero_recovers_base"]["max_diff_rho0"] == 0.0
    assert c["rho_zero_recovers_base"]["linear_scaling_ratio"] == pytest.approx(2.0, rel=0.02)
    for m, r in s["comparison"].items():
        assert np.isfinite(r["eval_loss_mean"]) and r["eval_loss_mean"] < 6.0, m
