"""Memory estimates refuse sizes beyond memory before any work (issue item 4)."""

import time
import tracemalloc

import pytest

from asymptotics.channels.registry import make_channel
from asymptotics.checks import ResourceError
from asymptotics.resources import (
    GiB,
    check_memory,
    check_se,
    check_threshold_job,
    memory_limit,
    se_bytes,
    staircase_bytes,
    threshold_bytes,
)
from asymptotics.staircase import StaircaseSettings
from asymptotics.state_evolution import SESettings
from asymptotics.tables import threshold_jobs
from asymptotics.thresholds import ThresholdSettings
from simulators.amp import AMPConfig, run_amp
from simulators.attention_training import TrainConfig, train_run
from simulators.resources import amp_bytes, check_amp, check_training, training_bytes

ATTENTION = dict(model="attention", depth=2, seq_len=2, skip=1.0, beta=1.0)


@pytest.fixture
def one_gib(monkeypatch):
    monkeypatch.setenv("SMI_MEMORY_LIMIT_GB", "1")


@pytest.fixture
def four_gib(monkeypatch):
    monkeypatch.setenv("SMI_MEMORY_LIMIT_GB", "4")


def test_limit_and_message(monkeypatch):
    monkeypatch.delenv("SMI_MEMORY_LIMIT_GB", raising=False)
    limit, source = memory_limit()
    assert limit > 0 and source in ("MemAvailable", "physical memory", "cgroup memory.max")
    monkeypatch.setenv("SMI_MEMORY_LIMIT_GB", "1.5")
    assert memory_limit() == (int(1.5 * GiB), "SMI_MEMORY_LIMIT_GB")
    with pytest.raises(ResourceError) as exc:
        check_memory(3 * GiB, "the job")
    assert str(exc.value) == ("the job needs about 3 GiB, more than the 1.5 GiB available "
                              "(SMI_MEMORY_LIMIT_GB)")
    assert isinstance(exc.value, ValueError) and "\n" not in str(exc.value)
    assert check_memory(GiB, "the job") == GiB
    with pytest.raises(ResourceError, match="given limit"):
        check_memory(2, "x", limit_bytes=1)
    monkeypatch.setenv("SMI_MEMORY_LIMIT_GB", "lots")
    with pytest.raises(ValueError, match="SMI_MEMORY_LIMIT_GB"):
        memory_limit()


def test_estimates_grow_as_expected():
    ch = make_channel("attention")
    small = AMPConfig(dim=2000, alpha=1.2, n_test=1)
    big = AMPConfig(dim=4000, alpha=1.2, n_test=1)
    # N·L·D grows 4x; the drawn block of at most 4096 sequences a little less
    assert 3.5 < amp_bytes(ch, big) / amp_bytes(ch, small) <= 4.0
    fixed_n = AMPConfig(dim=4000, alpha=0.6, n_test=1)  # same N, twice D: twice the memory
    assert amp_bytes(ch, fixed_n) / amp_bytes(ch, small) == pytest.approx(2, rel=0.05)
    t64 = TrainConfig(dim=1000, alpha=15.0)
    t32 = TrainConfig(dim=1000, alpha=15.0, dtype="float32")
    assert training_bytes(t32) == training_bytes(t64) // 2
    assert training_bytes(TrainConfig(dim=1000, alpha=7.5)) < training_bytes(t64)
    s12, s13 = SESettings(sobol_log2=12), SESettings(sobol_log2=13)
    assert se_bytes(ATTENTION, s13) / se_bytes(ATTENTION, s12) == pytest.approx(2, rel=0.1)
    r0, r1 = ThresholdSettings(resolution=0), ThresholdSettings(resolution=1)
    assert threshold_bytes(ATTENTION, r1) / threshold_bytes(ATTENTION, r0) == \
        pytest.approx(4, rel=0.2)  # a 2-D outer grid and a 2-D inner grid
    mc = ThresholdSettings(method="mc", mc_samples=2**16)
    mc2 = ThresholdSettings(method="mc", mc_samples=2**17)
    assert threshold_bytes(ATTENTION, mc2) / threshold_bytes(ATTENTION, mc) == \
        pytest.approx(2, rel=0.1)
    # a Channel and its make_channel keyword arguments give the same estimate
    assert se_bytes(ch, s12) == se_bytes(ATTENTION, s12)
    assert threshold_bytes(ch) == threshold_bytes(ATTENTION)


def _quick(f, *args, **kwargs):
    t0 = time.perf_counter()
    with pytest.raises(ResourceError) as exc:
        f(*args, **kwargs)
    assert time.perf_counter() - t0 < 1.0
    return str(exc.value)


def test_issue_cases_refused_quickly(one_gib):
    # smi thresholds --resolution 100: sanity bound, at construction
    assert "resolution" in _quick(ThresholdSettings, resolution=100)
    # --resolution 12: within the bound, refused by memory
    msg = _quick(check_threshold_job, ATTENTION, ThresholdSettings(resolution=12))
    assert "needs about" in msg and "1 GiB available" in msg
    # --depth 1000000 --method mc: Sobol' nets beyond scipy's dimensions / memory
    deep = dict(ATTENTION, depth=1_000_000)
    _quick(check_threshold_job, deep, ThresholdSettings(method="mc"))
    _quick(make_channel, **deep)
    _quick(check_se, deep, SESettings())
    # smi curve --sobol-log2 40 (terabytes) and 100 (sanity bound)
    assert "TiB" not in _quick(check_se, ATTENTION, SESettings(sobol_log2=40))
    assert "sobol_log2" in _quick(SESettings, sobol_log2=100)
    # --inner-resolution 50 (bound) and 20 (memory), before the rule is built
    assert "inner_resolution" in _quick(make_channel, "attention", inner_resolution=50)
    assert "inner rule" in _quick(make_channel, "attention", inner_resolution=20)
    _quick(check_se, dict(ATTENTION, inner_resolution=20))
    # smi simulate train / amp --dim 10000000
    assert "training at D = 10000000" in _quick(check_training, TrainConfig(dim=10_000_000))
    assert "AMP at D = 10000000" in _quick(check_amp, make_channel("attention"),
                                           AMPConfig(dim=10_000_000))
    # an α sweep is sized by its largest α
    cfg = TrainConfig(dim=2000, alpha=0.5)
    check_training(cfg)
    _quick(check_training, cfg, alphas=[0.5, 30.0])


def test_realistic_defaults_pass(four_gib):
    for job in threshold_jobs("attention", depths=(1, 2, 3), seq_lens=(2, 3, 4)):
        check_threshold_job(job, ThresholdSettings())
    for model in ("linear", "phase-retrieval", "sign", "sign-product", "product"):
        check_threshold_job(dict(model=model), ThresholdSettings())
    check_threshold_job(ATTENTION, ThresholdSettings(), StaircaseSettings())
    assert staircase_bytes(ATTENTION) < GiB
    for kw in (ATTENTION, dict(model="linear"), dict(model="sign-product"),
               dict(model="product")):
        check_se(kw, SESettings())
    check_se(make_channel("attention"), SESettings(sobol_log2=14, cpu_kernel="array"))
    check_amp(make_channel("attention"), AMPConfig(dim=1000))
    check_amp(make_channel("linear"), AMPConfig(dim=1000, alpha=2.0))
    check_training(TrainConfig(dim=500))
    check_training(TrainConfig(dim=500), alphas=[1.0, 5.0, 15.0, 30.0])


def _peak(f):
    tracemalloc.start()
    try:
        f()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_training_estimate_matches_measurement():
    cfg = TrainConfig(dim=200, alpha=5.0, steps=3, n_test=200)
    train_run(TrainConfig(dim=10, alpha=1.0, steps=1, n_test=2), 0)  # warm up
    peak = _peak(lambda: train_run(cfg, 0))
    est = training_bytes(cfg)
    assert peak / 2 <= est <= 2 * peak, (peak, est)


def test_amp_estimate_matches_measurement():
    ch = make_channel("attention")
    run_amp(ch, AMPConfig(dim=20, alpha=1.2, max_iter=1, n_test=5), 0)  # compile kernels
    cfg = AMPConfig(dim=200, alpha=1.2, max_iter=3, n_test=200)
    peak = _peak(lambda: run_amp(ch, cfg, 0))
    est = amp_bytes(ch, cfg)
    assert peak / 2 <= est <= 2 * peak, (peak, est)
