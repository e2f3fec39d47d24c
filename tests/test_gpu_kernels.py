"""The fused CUDA fibre kernel (asymptotics/channels/_attention_cuda.py).

Default suite: the kernel on numba's CUDA simulator (its own process, tiny sizes) equals the
numba CPU kernels.  ``-m gpu``: the same on a real GPU at realistic sizes, AMP and an SE step
on the GPU against the CPU.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from asymptotics.channels.attention import AttentionChannel, FibreMoments

HERE = os.path.dirname(os.path.abspath(__file__))
TOL = 1e-10


def test_fused_kernel_on_the_cuda_simulator_equals_the_numba_kernels(tmp_path):
    """General nodes (correlated and lopsided V, skip 0.05), precomputed shared mixers,
    importance-weighted means (and the diagonal second moments the SE map's control variate
    asks for: the fused kernel sums all of them on the importance nodes); depth 1, 2, 3
    and L = 2, 3; sizes outside L <= 4, depth <= 3 refused by name.  One weight set without
    second moments, run by the kernel of two sets with them, gives the same bits.  The
    simulator runs in its own process; the numba references are computed here."""
    from tests.cudasim_fibre import cases, errors

    path = tmp_path / "fused.npz"
    res = subprocess.run([sys.executable, os.path.join(HERE, "cudasim_fibre.py"), str(path)],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    refused = out["refused"]
    assert len(refused) == 2 and "seq_len = 5" in refused[0] and "depth = 4" in refused[1]
    assert out["variant"] is True
    fused = np.load(path)
    seen = 0
    for name, ch, a, om, V, second, inner_path in cases():
        ref = ch.fibre_moments(a, om, V, second=second, inner_path=inner_path)
        got = FibreMoments(*(fused[f"{name}/{f}"] for f in ("log_norm", "mean", "second")))
        errs = errors(ref, got, second, ch.seq_len, ch.depth)
        for key in ("log_norm", "mean"):
            assert errs[key] < TOL, (name, key, errs[key])
        if name == "d2-L2-importance":
            assert errs["second"] is None  # means only, second NaN as on the CPU
        else:
            assert errs["second"] < TOL, (name, errs["second"])
        seen += 1
    assert seen == 9


def test_compiled_variants_serve_a_curve_with_three_kernels():
    """The six requests an SE curve makes (measured: general, shared and importance paths,
    one or two weight sets, with and without second moments) need three kernels."""
    from asymptotics.channels import _attention_cuda as cu

    asked = [("general", True, 1), ("general", True, 2), ("general", False, 1),
             ("shared", True, 1), ("shared", True, 2), ("importance", False, 1)]
    variants = {(mode, *cu.compiled_variant(S, second, mode)) for mode, second, S in asked}
    assert variants == {("general", 2, True), ("shared", 2, True), ("importance", 2, False)}
    assert cu.compiled_variant(3, "diagonal", "importance") == (3, "diagonal")


def test_cached_kernels_are_told_apart_and_found_again():
    """numba's on-disk cache keys (closure constants hashed) of the kernel specialisations
    differ from one another, so no process loads another specialisation's binary, and are
    the same in a second process, so the binary compiled once is found again."""
    def keys():
        res = subprocess.run([sys.executable, os.path.join(HERE, "cudasim_fibre.py"), "keys"],
                             capture_output=True, text=True, timeout=300)
        assert res.returncode == 0, res.stderr[-3000:]
        return json.loads(res.stdout.strip().splitlines()[-1])["keys"]

    first, second = keys(), keys()
    assert len(first) == 14 and len(set(first.values())) == 14
    assert first == second


@pytest.mark.slow
def test_every_kernel_specialisation_compiles_for_the_device():
    """numba's CUDA typing and lowering (PTX for sm_90), which the simulator skips."""
    res = subprocess.run([sys.executable, os.path.join(HERE, "cudasim_fibre.py"), "ptx"],
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    if "skip" in out:
        pytest.skip(out["skip"])
    assert out["ptx"] and all(v == "ok" for v in out["ptx"].values()), out


@pytest.mark.slow
def test_amp_device_path_on_the_simulator_equals_the_cpu_run():
    """run_amp(device="gpu") with the fused kernel on the simulator and numpy standing in for
    cupy (ω, g and the posterior kept in the device namespace) against the CPU run."""
    res = subprocess.run([sys.executable, os.path.join(HERE, "cudasim_fibre.py"), "amp"],
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])["amp"]
    assert out["iterations"] == [4, 4]
    assert out["M_raw"] < 1e-12 and out["V"] < 1e-12 and out["quad"] < 1e-10, out


# ----------------------------------------------------------------------------- real GPU


def _cupy():
    from asymptotics.backend import get_namespace

    return get_namespace("gpu")


def _inputs(ch, K, seed, zero_u=False):
    rng = np.random.default_rng(seed)
    L, p = ch.seq_len, ch.depth
    a = ch.observe(rng.standard_normal((K, L, p)))
    om = 0.5 * rng.standard_normal((K, L, p))
    if zero_u:
        om[:, :, : p - 1] = 0.0
    return a, om


def _assert_equal(ref, got, second=True):
    np.testing.assert_allclose(got.log_norm, ref.log_norm, rtol=0, atol=TOL)
    np.testing.assert_allclose(got.mean, ref.mean, rtol=0, atol=TOL)
    if second:
        np.testing.assert_allclose(got.second, ref.second, rtol=0, atol=TOL)
    else:
        assert np.all(np.isnan(got.second))


@pytest.mark.gpu
@pytest.mark.parametrize("depth, L, skip, V, K", [
    (2, 2, 1.0, np.array([[0.8, 0.3], [0.3, 0.6]]), 12_000),
    (2, 2, 0.05, np.diag([3.0, 0.02]), 12_000),
    (1, 3, 0.05, np.array([[0.7]]), 12_000),
    (3, 2, 0.05, np.array([[0.9, 0.2, 0.1], [0.2, 0.7, 0.3], [0.1, 0.3, 0.5]]), 2_000),
    (2, 3, 0.05, np.diag([0.9, 0.5]), 2_000),
])
def test_fused_kernel_on_the_gpu_equals_numba(depth, L, skip, V, K):
    ch = AttentionChannel(depth, L, skip=skip)
    a, om = _inputs(ch, K, seed=depth * 10 + L)
    ref = ch.fibre_moments(a, om, V, device="cpu")
    _assert_equal(ref, ch.fibre_moments(a, om, V, device="gpu"))
    # cupy inputs, results left on the device
    cp = _cupy()
    dev = ch.fibre_moments(cp.asarray(a), cp.asarray(om), V, device="gpu", on_device=True)
    assert isinstance(dev.mean, cp.ndarray)
    np.testing.assert_allclose(cp.asnumpy(dev.mean), ref.mean, rtol=0, atol=TOL)


@pytest.mark.gpu
def test_a_second_process_loads_the_compiled_kernel_from_disk(tmp_path):
    """The first process compiles the fibre kernel and caches it (NUMBA_CACHE_DIR); the
    second loads it without compiling and gives the same bits."""
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path)}
    runs = []
    for _ in range(2):
        res = subprocess.run([sys.executable, os.path.join(HERE, "cudasim_fibre.py"),
                              "gpu-cache"], capture_output=True, text=True, timeout=300,
                             env=env)
        assert res.returncode == 0, res.stderr[-3000:]
        runs.append(json.loads(res.stdout.strip().splitlines()[-1]))
    assert (runs[0]["hits"], runs[0]["misses"]) == (0, 1)
    assert (runs[1]["hits"], runs[1]["misses"]) == (1, 0)
    assert runs[0]["digest"] == runs[1]["digest"]


@pytest.mark.gpu
def test_shared_and_importance_paths_on_the_gpu_equal_numba():
    ch = AttentionChannel(2, 2, skip=0.5)
    V = np.diag([0.8, 0.6])
    a, om = _inputs(ch, 12_000, seed=3)
    for second in (True, False):
        ref = ch.fibre_moments(a, om, V, second=second, inner_path="shared")
        got = ch.fibre_moments(a, om, V, device="gpu", second=second, inner_path="shared")
        _assert_equal(ref, got, second)
    a, om = _inputs(ch, 12_000, seed=4, zero_u=True)  # precomputed mixers (ω_U = 0)
    _assert_equal(ch.fibre_moments(a, om, V), ch.fibre_moments(a, om, V, device="gpu"))


@pytest.mark.gpu
def test_posterior_on_the_gpu_stays_there_and_matches():
    cp = _cupy()
    ch = AttentionChannel()
    a, om = _inputs(ch, 5_000, seed=5)
    V = np.array([[0.7, 0.2], [0.2, 0.5]])
    post = ch.posterior_on(a, cp.asarray(om), V, "gpu")
    ref = ch.posterior_on(a, om, V, "cpu")
    assert all(isinstance(x, cp.ndarray) for x in (post.log_norm, post.mean, post.second,
                                                   post.error))
    np.testing.assert_allclose(cp.asnumpy(post.second), ref.second, rtol=0, atol=TOL)
    np.testing.assert_allclose(cp.asnumpy(post.error), ref.error, rtol=0, atol=TOL)
    # the old array path stays reachable for comparisons
    old = ch.fibre_moments(a, om, V, device="gpu", _gpu_kernel="array")
    np.testing.assert_allclose(old.mean[0], ref.mean, rtol=0, atol=1e-9)


@pytest.mark.gpu
def test_amp_on_the_gpu_equals_the_cpu():
    from asymptotics.channels.registry import make_channel
    from simulators.amp import AMPConfig, run_amp

    ch = make_channel("attention")
    runs = [run_amp(ch, AMPConfig(dim=400, alpha=1.2, max_iter=8, n_test=200, device=d),
                    seed=2) for d in ("cpu", "gpu")]
    assert len(runs[0].records) == len(runs[1].records)
    for ra, rb in zip(runs[0].records, runs[1].records, strict=True):
        np.testing.assert_allclose(rb["M_raw"], ra["M_raw"], atol=1e-9)
        np.testing.assert_allclose(rb["V"], ra["V"], atol=1e-9)


@pytest.mark.gpu
def test_se_step_on_the_gpu_equals_the_cpu():
    from asymptotics.state_evolution import SESettings, StateEvolution

    ch = AttentionChannel()
    for Q in (np.diag([0.3, 0.6]), np.diag([0.9, 0.3])):  # shared (V_UU >= 0.2), general
        cpu = StateEvolution(ch, 0.7, SESettings(sobol_log2=9)).qhat(Q)
        gpu = StateEvolution(ch, 0.7, SESettings(sobol_log2=9, device="gpu")).qhat(Q)
        np.testing.assert_allclose(gpu.Qhat, cpu.Qhat, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(gpu.error, cpu.error, rtol=1e-8, atol=1e-12)


@pytest.mark.gpu
def test_curve_point_on_the_gpu_equals_the_cpu(tmp_path, capsys):
    from smi.cli import main

    rows = {}
    for device in ("cpu", "gpu"):
        out = tmp_path / f"{device}.jsonl"
        assert main(["curve", "--alphas", "0.6", "--sobol-log2", "9", "--device", device,
                     "--output", str(out), "--no-cache", "--quiet"]) == 0
        lines = (json.loads(x) for x in out.read_text().splitlines() if x.strip())
        rows[device] = [r for r in lines if "Q" in r]
    assert len(rows["cpu"]) == len(rows["gpu"]) >= 2
    for a, b in zip(rows["cpu"], rows["gpu"], strict=True):
        assert a["branch"] == b["branch"] and a["iterations"] == b["iterations"]
        np.testing.assert_allclose(b["Q"], a["Q"], rtol=0, atol=1e-9)
