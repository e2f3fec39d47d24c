"""One data generator for AMP and training; one architecture; sweeps as library functions."""

import json
import math

import numpy as np
import pytest

from asymptotics.channels.attention import AttentionChannel
from asymptotics.channels.attention_map import Architecture, fibre_from_output
from asymptotics.channels.closed_form import LinearChannel
from asymptotics.executors import ProcessExecutor
from asymptotics.results import read_result_file
from simulators import amp, attention_training
from simulators.data import seed_streams, teacher_data
from simulators.sweeps import amp_rows, default_lr, training_rows


def test_same_seed_same_teacher_and_data_for_amp_and_training():
    """The rank-1 network whose channel is the AMP channel: bit-identical W*, X, test set."""
    arch = Architecture(depth=2, seq_len=3, skip=0.7, beta=1.3)
    ch = AttentionChannel.from_architecture(arch)
    acfg = amp.AMPConfig(dim=30, alpha=2.0, n_test=20, init_scale=1e-2)
    tcfg = attention_training.TrainConfig(arch=ch.architecture, dim=30, alpha=2.0, n_test=20,
                                          init_scale=0.1)
    a = amp.make_problem(ch, acfg, seed=11)
    t = attention_training.make_problem(tcfg, seed=11)
    for name in ("W_star", "X", "X_test"):
        np.testing.assert_array_equal(getattr(a, name), getattr(t, name))
    np.testing.assert_array_equal(a.g_test, t.y_test)  # y = channel.forward in both
    np.testing.assert_array_equal(a.obs, np.asarray(fibre_from_output(t.y, arch.beta)))
    # one init stream, each its own scale: variance init_scale (AMP), std init_scale (training)
    np.testing.assert_allclose(a.W0 / math.sqrt(1e-2), t.W0 / 0.1, rtol=1e-14)
    assert not np.array_equal(t.X, attention_training.make_problem(tcfg, seed=12).X)


def test_streams_are_nested_and_independent():
    ch = LinearChannel(0.3)
    big = teacher_data(ch, 4, dim=20, n_train=50, n_test=7)
    small = teacher_data(ch, 4, dim=20, n_train=20, n_test=3)
    np.testing.assert_array_equal(big.head(20).X, small.X)
    np.testing.assert_array_equal(big.head(20).y, small.y)  # label noise nested as well
    np.testing.assert_array_equal(big.W_star, small.W_star)
    np.testing.assert_array_equal(big.X_test[:3], small.X_test)
    # labels: the channel's own sample() on the noise stream
    Z = np.einsum("nld,dp->nlp", big.X, big.W_star) / math.sqrt(20)
    np.testing.assert_allclose(big.y, ch.sample(Z, seed_streams(4)["noise"]), rtol=1e-12)
    np.testing.assert_allclose(big.y_test, ch.forward(
        np.einsum("nld,dp->nlp", big.X_test, big.W_star) / math.sqrt(20)), rtol=1e-12)


def test_labels_through_channel_for_rank1_and_forward_map_for_rank2():
    arch1, arch2 = Architecture(depth=2), Architecture(depth=2, rank=2)
    assert isinstance(attention_training.teacher_labels(arch1), AttentionChannel)
    t2 = attention_training.teacher_labels(arch2)
    assert isinstance(t2, attention_training.NetworkTeacher) and t2.dim == 4
    cfg = attention_training.TrainConfig(arch=arch2, dim=12, alpha=1.0, n_test=3)
    prob = attention_training.make_problem(cfg, seed=0)
    assert prob.W_star.shape == (12, 4)
    np.testing.assert_array_equal(
        prob.y, cfg.model.forward(attention_training.project(prob.X, prob.W_star)))


def test_training_rows_match_the_cli_and_any_executor(tmp_path):
    from smi.cli import main as smi_main

    def main(argv):
        return smi_main(["simulate", "train", *argv])

    cfg = attention_training.TrainConfig(arch=Architecture(depth=2), dim=20, steps=6,
                                         n_test=10, log_points=3)
    runs = [("gd", default_lr("gd", 20)), ("adam", 0.01)]

    def strip(rows):
        return [{k: v for k, v in r.items() if k != "wall_s"} for r in rows]

    serial = training_rows(cfg, [0, 1], [1.0, 2.0], runs)
    with ProcessExecutor(2) as ex:
        pooled = training_rows(cfg, [0, 1], [1.0, 2.0], runs, executor=ex)
    assert strip(serial) == strip(pooled)
    out = tmp_path / "t.jsonl"
    assert main(["--dim", "20", "--steps", "6", "--n-test", "10", "--log-points", "3",
                 "--seeds", "2", "--alphas", "1,2", "--optimizer", "gd,adam", "--lr",
                 "10,0.01", "--workers", "1", "--output", str(out)]) == 0
    cli = read_result_file(out).rows
    assert strip(cli) == strip(json.loads(json.dumps(serial)))
    summ = [r for r in serial if r.get("summary")]
    assert [(r["optimizer"], r["alpha"]) for r in summ] == [
        ("gd", 1.0), ("gd", 2.0), ("adam", 1.0), ("adam", 2.0)]
    assert summ[0]["depth"] == 2 and summ[0]["seq_len"] == 2 and summ[0]["n_seeds"] == 2


def test_amp_rows_match_the_cli(tmp_path):
    from smi.cli import main as smi_main

    def main(argv):
        return smi_main(["simulate", "amp", *argv])

    ch = LinearChannel(0.1)
    cfg = amp.AMPConfig(alpha=1.5, max_iter=4, n_test=20)
    rows = amp_rows(ch, cfg, [0, 1], [30, 40], summary_only=True)
    out = tmp_path / "a.jsonl"
    assert main(["--model", "linear", "--alpha", "1.5", "--dims", "30,40", "--seeds", "2",
                 "--max-iter", "4", "--n-test", "20", "--summary-only", "--workers", "1",
                 "--output", str(out)]) == 0
    cli = read_result_file(out).rows

    def strip(rows):
        return [{k: v for k, v in r.items() if k != "wall_s"} for r in rows]

    assert strip(cli) == strip(json.loads(json.dumps(rows)))
    # each dimension's summary follows the next dimension's final rows
    assert [(r["dim"], bool(r.get("summary"))) for r in rows] == [
        (30, False), (30, False), (40, False), (40, False), (30, True), (40, True)]


@pytest.mark.parametrize("kwargs, match", [
    (dict(alphas=[0.0]), "alpha"),
    (dict(optimizers=[("lbfgs", 1.0)]), "lbfgs"),
    (dict(optimizers=[("gd", 0.0)]), "lr"),
    (dict(seeds=[]), "seed"),
])
def test_training_rows_reject_bad_settings_before_work(kwargs, match):
    cfg = attention_training.TrainConfig(dim=10, steps=1, n_test=2)
    args = {"seeds": [0], **kwargs}
    with pytest.raises(ValueError, match=match):
        training_rows(cfg, **args)


def test_simulation_rows_carry_no_timings():
    """Identical runs give identical bytes: no wall-clock time goes into a row."""
    cfg = amp.AMPConfig(alpha=1.5, max_iter=3, n_test=20)
    rows = amp_rows(LinearChannel(0.1), cfg, [0], [30])
    assert rows and not any("wall_s" in r for r in rows)
    assert rows == amp_rows(LinearChannel(0.1), cfg, [0], [30])
