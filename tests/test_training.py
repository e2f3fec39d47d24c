"""Training simulator: hand-written backward pass, learning, determinism, CLI contract."""

import math
from types import SimpleNamespace

import numpy as np
import pytest

from asymptotics.backend import BackendError, get_namespace
from asymptotics.channels.attention_map import Architecture
from asymptotics.results import read_result_file
from simulators.attention_training import (
    AttentionModel,
    AttentionOracle,
    TrainConfig,
    layer_alignment,
    log_schedule,
    make_problem,
    project,
    sample_sequences,
    train_run,
)
from smi.cli import main as smi_main


def main(argv):
    """``smi simulate train`` with ``argv``."""
    return smi_main(["simulate", "train", *argv])


def _fd_grad(f, W, h=1e-5):
    g = np.zeros_like(W)
    for idx in np.ndindex(*W.shape):
        E = np.zeros_like(W)
        E[idx] = h
        g[idx] = (f(W + E) - f(W - E)) / (2 * h)
    return g


@pytest.mark.parametrize("depth", [1, 2, 3])
@pytest.mark.parametrize("rank", [1, 2])
@pytest.mark.parametrize("L", [2, 3])
def test_gradient_matches_finite_differences(depth, rank, L):
    arch = Architecture(depth=depth, seq_len=L, skip=0.8, beta=1.3, rank=rank)
    model = AttentionModel(arch)
    cfg = TrainConfig(arch=arch, dim=6, alpha=1.0, n_test=2, init_scale=0.8)
    prob = make_problem(cfg, seed=depth * 10 + rank + L)
    oracle = AttentionOracle(prob.X, prob.y, model)
    W = prob.W0
    loss, g = oracle.loss_and_grad(W)
    assert loss > 1e-3  # a non-trivial point
    fd = _fd_grad(oracle.loss, W)
    assert np.linalg.norm(fd - g) / np.linalg.norm(g) < 1e-6
    # vector-Jacobian product with an arbitrary cotangent: d/dW <C, yhat(W)>
    C = np.random.default_rng(1).standard_normal(prob.y.shape)
    vjp = oracle.vjp(W, C)
    fd = _fd_grad(lambda V: float((C * model.forward(project(prob.X, V))).sum()), W)
    assert np.linalg.norm(fd - vjp) / np.linalg.norm(vjp) < 1e-6


def test_gradient_on_minibatch_and_cotangent_cache():
    model = AttentionModel()
    cfg = TrainConfig(arch=model.arch, dim=8, alpha=2.0, n_test=2, init_scale=0.7)
    prob = make_problem(cfg, seed=5)
    oracle = AttentionOracle(prob.X, prob.y, model)
    idx = np.array([3, 0, 7, 11])
    oracle.set_batch(idx)
    assert oracle.n == 4
    loss, g = oracle.loss_and_grad(prob.W0)
    ref = AttentionOracle(prob.X[idx], prob.y[idx], model)
    l2, g2 = ref.loss_and_grad(prob.W0)
    assert loss == pytest.approx(l2, rel=1e-14)
    np.testing.assert_allclose(g, g2, rtol=1e-13)
    assert oracle.output_cotangent(prob.W0) is oracle._cache[1]  # cached, no recompute
    G = oracle.output_cotangent(prob.W0 + 0.0)  # a different array: recomputed
    np.testing.assert_allclose(G, oracle._cache[1])


def test_test_loss_at_zero_weights_is_plug_in_error_at_q0():
    """THEORY §4: at Q = 0 the default model's plug-in error is about 0.386."""
    cfg = TrainConfig(dim=40, alpha=1.0, n_test=40000, init_scale=0.0)
    prob = make_problem(cfg, seed=0)
    test = AttentionOracle(prob.X_test, prob.y_test, cfg.model)
    # W* columns have |w*|^2/D = 1 + O(1/sqrt(D)); the MC error of 40000 samples ~ 0.002
    assert test.loss(prob.W0) == pytest.approx(0.386, abs=0.015)


def _final_cosines(opt, lr, steps, seed=0):
    cfg = TrainConfig(dim=200, alpha=15.0, optimizer=opt, lr=lr, steps=steps,
                      init_scale=0.1, n_test=500, log_points=5)
    records, res = train_run(cfg, seed)
    assert not res["diverged"]
    assert [r["step"] for r in records][0] == 0 and records[-1]["step"] == steps
    return records


def test_gd_learns_both_layers():
    recs = _final_cosines("gd", 100.0, 250)
    assert min(recs[-1]["cosine"]) > 0.9
    assert recs[0]["test_loss"] > 0.3 and recs[-1]["test_loss"] < 0.02
    assert max(recs[0]["cosine"]) < 0.2  # started uninformed


def test_adam_learns_both_layers():
    recs = _final_cosines("adam", 2e-2, 400)
    assert min(recs[-1]["cosine"]) > 0.9
    assert recs[-1]["test_loss"] < 0.02


def test_same_seed_same_numbers_and_seed_matters():
    cfg = TrainConfig(dim=30, alpha=3.0, optimizer="sgd", lr=1.0, steps=20, batch=16,
                      n_test=50, log_points=4)
    a, _ = train_run(cfg, 7)
    b, _ = train_run(cfg, 7)
    c, _ = train_run(cfg, 8)
    assert a == b
    assert a[-1]["train_loss"] != c[-1]["train_loss"]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_chunked_sampling_is_one_stream(dtype):
    """Drawn into the output (numpy) or through a reused host buffer (any other array
    namespace, here a stand-in for cupy): the bits of one big draw, chunk by chunk."""
    b = np.random.default_rng(3).standard_normal((10, 2, 5), dtype=dtype)
    a = sample_sequences(np.random.default_rng(3), 10, 2, 5, dtype=dtype, chunk=3)
    device = SimpleNamespace(empty=np.empty, asarray=np.array)  # not numpy: the buffer path
    c = sample_sequences(np.random.default_rng(3), 10, 2, 5, device, dtype=dtype, chunk=3)
    assert a.dtype == c.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(c, b)


def test_log_schedule():
    s = log_schedule(2000, 50)
    assert s[0] == 0 and s[-1] == 2000 and len(s) <= 51 and s == sorted(set(s))
    assert log_schedule(1, 50) == [0, 1]
    assert log_schedule(0, 10) == [0]


def test_alignment_rank1_and_rank2_rotation_invariance():
    rng = np.random.default_rng(0)
    D = 400
    Ws = rng.standard_normal((D, 4))
    # rank 1: |m| / sqrt(q rho)
    W = 0.6 * Ws[:, :2] + rng.standard_normal((D, 2))
    M, Q, R = W.T @ Ws[:, :2] / D, W.T @ W / D, Ws[:, :2].T @ Ws[:, :2] / D
    cos = layer_alignment(M, Q, R, depth=2, rank=1)
    for k in range(2):
        assert cos[k] == pytest.approx(abs(M[k, k]) / math.sqrt(Q[k, k] * R[k, k]))
    # rank 2, depth 2: a layer rotated within its rank is perfectly aligned
    th = 0.7
    O = np.array([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]])
    W = Ws.copy()
    W[:, :2] = 3.0 * Ws[:, :2] @ O
    W[:, 2:] = rng.standard_normal((D, 2))
    M, Q, R = W.T @ Ws / D, W.T @ W / D, Ws.T @ Ws / D
    a = layer_alignment(M, Q, R, depth=2, rank=2)
    assert a[0] == pytest.approx(1.0, abs=1e-12)
    assert a[1] < 0.2  # random layer: cosines ~ 1/sqrt(D)


def test_divergence_is_reported():
    cfg = TrainConfig(dim=20, alpha=2.0, optimizer="gd", lr=1e12, steps=50, init_scale=1.0,
                      n_test=10, log_points=50)
    records, res = train_run(cfg, 0)
    assert res["diverged"] and "W" not in res
    assert records[-1]["diverged"] is True and "test_loss" not in records[-1]
    cfg = TrainConfig(dim=20, alpha=2.0, optimizer="gd", lr=1e305, steps=5, init_scale=1.0,
                      n_test=10, log_points=50)
    records, res = train_run(cfg, 0)
    assert res["diverged"] and records[-1]["diverged"] is True


# ------------------------------------------------------------------------------- CLI


def _run_cli(tmp_path, *argv):
    out = tmp_path / "out.jsonl"
    rc = main([*argv, "--output", str(out)])
    rows = read_result_file(out).rows if out.exists() else None
    return rc, rows


def test_cli_single_run_rows_and_summary(tmp_path):
    rc, rows = _run_cli(tmp_path, "--dim", "40", "--alpha", "5", "--steps", "30",
                        "--seeds", "3", "--log-points", "6", "--n-test", "100",
                        "--optimizer", "adam", "--lr", "0.02")
    assert rc == 0
    traj = [r for r in rows if not r.get("summary")]
    summ = [r for r in rows if r.get("summary")]
    assert len(summ) == 1 and summ[0]["n_seeds"] == 3 and summ[0]["diverged"] == 0
    for key in ("seed", "step", "train_loss", "test_loss", "M", "Q", "cosine"):
        assert key in traj[0]
    assert len(traj[0]["M"]) == 2 and len(traj[0]["cosine"]) == 2
    finals = [r for r in traj if r["step"] == 30]
    assert len(finals) == 3
    te = np.array([r["test_loss"] for r in finals])
    assert summ[0]["test_loss_mean"] == pytest.approx(te.mean())
    assert summ[0]["test_loss_stderr"] == pytest.approx(te.std(ddof=1) / math.sqrt(3))
    cos = np.array([r["cosine"] for r in finals])
    np.testing.assert_allclose(summ[0]["cosine_mean"], cos.mean(axis=0))


def test_cli_sweep_one_row_per_optimizer_and_alpha(tmp_path):
    rc, rows = _run_cli(tmp_path, "--dim", "30", "--alphas", "1:2:0.5", "--steps", "5",
                        "--seeds", "2", "--n-test", "20", "--summary-only",
                        "--optimizer", "gd,adam,signgd,sam,fsam", "--batch", "full")
    assert rc == 0
    assert all(r["summary"] for r in rows)
    keys = {(r["optimizer"], r["alpha"]) for r in rows}
    assert keys == {(o, a) for o in ("gd", "adam", "signgd", "sam", "fsam")
                    for a in (1.0, 1.5, 2.0)}
    r = rows[0]
    for k in ("test_loss_mean", "test_loss_stderr", "cosine_mean", "cosine_stderr",
              "m_mean", "q_mean", "m_stderr", "n_train"):
        assert k in r
    assert r["lr"] == pytest.approx(0.5 * 30)  # per-optimizer default for gd


def test_cli_divergence_reported_without_fake_numbers(tmp_path):
    rc, rows = _run_cli(tmp_path, "--dim", "20", "--alpha", "2", "--steps", "30",
                        "--seeds", "2", "--optimizer", "gd", "--lr", "1e12",
                        "--init-scale", "1", "--n-test", "10")
    assert rc == 0
    summ = rows[-1]
    assert summ["summary"] and summ["diverged"] == 2 and summ["n_finished"] == 0
    assert summ["test_loss_mean"] is None and summ["cosine_mean"] is None
    marks = [r for r in rows if r.get("diverged") is True]
    assert sorted(r["seed"] for r in marks) == [0, 1]
    assert all("test_loss" not in r and "cosine" not in r for r in marks)


@pytest.mark.parametrize(
    "argv, option",
    [
        (["--optimizer", "lbfgs"], "--optimizer"),
        (["--lr", "0"], "--lr"),
        (["--lr=-1e-3"], "--lr"),
        (["--lr", "nan"], "--lr"),
        (["--batch", "10000", "--dim", "10", "--alpha", "2"], "--batch"),
        (["--beta", "NaN"], "--beta"),
        (["--beta", "0"], "--beta"),
        (["--skip", "-1"], "--skip"),
        (["--depth", "0"], "--depth"),
        (["--seq-len", "1"], "--seq-len"),
        (["--alpha", "0"], "--alpha"),
        (["--alphas", "1,-2"], "--alphas"),
        (["--dim", "1"], "--dim"),
        (["--device", "tpu"], "--device"),
        (["--steps", "many"], "--steps"),
        (["--dtype", "float16"], "--dtype"),
    ],
)
def test_cli_bad_input_rejected_before_work(tmp_path, capsys, argv, option):
    rc, rows = _run_cli(tmp_path, *argv)
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert rows is None  # nothing written: rejected before any work
    assert len(err.splitlines()) == 1 and option in err


def test_cli_unwritable_output(tmp_path, capsys):
    rc = main(["--steps", "1", "--output", str(tmp_path / "no" / "such" / "dir.jsonl")])
    assert rc == 2 and "--output" in capsys.readouterr().err


def test_cli_gpu_without_cupy_rejected(tmp_path, capsys):
    try:
        get_namespace("gpu")
    except BackendError:
        rc, rows = _run_cli(tmp_path, "--device", "gpu")
        assert rc == 2 and rows is None
        assert "--device" in capsys.readouterr().err
    else:
        pytest.skip("a GPU is available here")


@pytest.mark.gpu
def test_numpy_and_cupy_agree():
    try:
        cp = get_namespace("gpu")
    except BackendError as exc:
        pytest.skip(f"no GPU: {exc}")
    from asymptotics.backend import to_numpy

    for opt, lr in (("gd", 50.0), ("adam", 1e-2), ("fsam", 50.0)):
        cfg = TrainConfig(dim=100, alpha=5.0, optimizer=opt, lr=lr, steps=30, n_test=200,
                          log_points=5)
        a, ra = train_run(cfg, 3, np)
        b, rb = train_run(cfg, 3, cp)
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            assert x["step"] == y["step"]
            assert x["train_loss"] == pytest.approx(y["train_loss"], rel=1e-8)
            assert x["test_loss"] == pytest.approx(y["test_loss"], rel=1e-8)
            np.testing.assert_allclose(x["M"], y["M"], rtol=1e-8, atol=1e-12)
        np.testing.assert_allclose(ra["W"], to_numpy(rb["W"]), rtol=1e-8, atol=1e-12)


def test_add_train_parser_registers_subcommand(tmp_path):
    import argparse

    from smi.commands import add_command, train

    parser = argparse.ArgumentParser(prog="smi simulate")
    sub = parser.add_subparsers(dest="command")
    add_command(sub, train)
    out = tmp_path / "o.jsonl"
    args = parser.parse_args(["train", "--dim", "20", "--alpha", "2", "--steps", "3",
                              "--seeds", "1", "--n-test", "10", "--output", str(out)])
    assert args.func is train.run
    assert args.func(args) == 0
    rows = read_result_file(out).rows
    assert rows[-1]["summary"] and rows[0]["step"] == 0 and rows[-2]["step"] == 3
