"""The attention posterior at N = 12 000 (issue #16): fused CUDA kernel vs the old cupy array
path vs the numba CPU kernel, side by side in one run.

    python benchmarks/bench_gpu_fibre.py            # GPU columns skipped without cupy + GPU

Default model (depth 2, L = 2, c = 1, β = 1, inner rule 49² sinh-trapezoid, 2 weight sets),
a correlated ``V`` as in AMP, second moments on.  Printed per path: ms per call (min over
repeats, synchronised), (sample, node, sign) pairs per second, and for the fused kernel the
fraction of the H200's FP64 bound (67 TFLOP/s; 34 without tensor cores, which a scalar
kernel cannot use) from the flops per node counted in
:func:`asymptotics.channels._attention_cuda.flops_per_pair` (both signs of a node share the
mixer, so a pair is charged half a node's work).  Then one SE curve point (α = 0.6, Sobol'
2^12 outer points) on cpu and gpu.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), os.pardir))

from asymptotics.backend import gpu_available, to_numpy  # noqa: E402
from asymptotics.channels.attention import AttentionChannel  # noqa: E402
from asymptotics.state_evolution import SESettings, run_state_evolution  # noqa: E402

FP64_PEAK = 67e12  # H200 FP64 tensor-core peak (the figure the issue quotes)
FP64_VECTOR = 34e12  # H200 FP64 without tensor cores: the bound this scalar kernel can reach


def best(fn, reps, sync=lambda: None):
    fn()
    sync()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return min(times)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=12_000, help="observations N [12000]")
    p.add_argument("--reps", type=int, default=20, help="repeats of the fast paths [20]")
    p.add_argument("--no-se", action="store_true", help="skip the SE curve point")
    a = p.parse_args(argv)
    ch = AttentionChannel()
    rng = np.random.default_rng(0)
    K = a.n
    obs = ch.observe(rng.standard_normal((K, 2, 2)))
    omega = 0.5 * rng.standard_normal((K, 2, 2))
    V = np.array([[0.7, 0.2], [0.2, 0.5]])
    n = ch.inner_rule.points.shape[0]
    S = ch.inner_rule.weight_sets.shape[0]
    pairs = K * n * 2
    have_gpu = gpu_available()
    print(f"N={K} model={ch.params()} inner={ch.inner_description} nodes={n} sets={S} "
          f"pairs={pairs:.3e} cores={os.cpu_count()} load={os.getloadavg()[0]:.2f}")
    t_cpu = best(lambda: ch.posterior_on(obs, omega, V, "cpu"), 3)
    rows = [("numba CPU", t_cpu)]
    if have_gpu:
        import cupy as cp

        from asymptotics.channels import _attention_cuda as cu

        sync = cp.cuda.Device().synchronize
        om_d, obs_d = cp.asarray(omega), cp.asarray(obs)
        t0 = time.perf_counter()
        ch.posterior_on(obs_d, om_d, V, "gpu")
        sync()
        print(f"first fused call (numba-cuda compile, or its cache): "
              f"{time.perf_counter() - t0:.2f} s")
        t_fused = best(lambda: ch.posterior_on(obs_d, om_d, V, "gpu"), a.reps, sync)
        Vs = [V, V + 1e-3 * np.eye(2)]  # AMP: a new V (node arrays rebuilt) every call
        t_newV = best(lambda: [ch.posterior_on(obs_d, om_d, v, "gpu") for v in Vs], a.reps,
                      sync) / 2
        t_host = best(lambda: ch.posterior_on(obs, omega, V, "gpu"), a.reps, sync)
        t_old = best(lambda: ch.fibre_moments(obs, omega, V, "gpu", _gpu_kernel="array"), 3,
                     sync)
        rows += [("GPU fused (cupy in, on device)", t_fused),
                 ("GPU fused, new V each call (AMP)", t_newV),
                 ("GPU fused (numpy in, upload)", t_host),
                 ("GPU old array path", t_old)]
        ref = ch.posterior_on(obs, omega, V, "cpu")
        got = ch.posterior_on(obs_d, om_d, V, "gpu")
        err = max(float(np.max(np.abs(to_numpy(got.mean) - ref.mean))),
                  float(np.max(np.abs(to_numpy(got.second) - ref.second))))
        flops = K * n * cu.flops_per_pair(ch.seq_len, ch.depth, S, True)
    for name, t in rows:
        print(f"  {name:34s} {1e3 * t:10.3f} ms  {pairs / t:10.3e} pairs/s  "
              f"x{t_cpu / t:8.1f} vs numba CPU")
    if have_gpu:
        print(f"  fused vs old array path: x{t_old / t_fused:.1f}; flops/call {flops:.3e} -> "
              f"{flops / t_fused / 1e12:.2f} TFLOP/s = {100 * flops / t_fused / FP64_PEAK:.2f} % "
              f"of the 67 TFLOP/s FP64 peak ({100 * flops / t_fused / FP64_VECTOR:.2f} % of the "
              f"34 TFLOP/s vector FP64); max |fused - numba| = {err:.2e}")
        print(f"  flops per (sample, node, sign) pair: "
              f"{cu.flops_per_pair(ch.seq_len, ch.depth, S, True) / 2:.0f}")
    else:
        print("  GPU columns skipped: no cupy / CUDA device")
    if a.no_se:
        return
    for device in ("cpu", "gpu") if have_gpu else ("cpu",):
        st = SESettings(device=device)
        run_state_evolution(ch, 0.6, settings=st, max_iter=2)  # warm-up
        t0 = time.perf_counter()
        res = run_state_evolution(ch, 0.6, settings=st)
        t = time.perf_counter() - t0
        print(f"SE curve point alpha=0.6 device={device}: {t:.2f} s, {res.iterations} "
              f"iterations, status={res.status}, diag Q={np.round(np.diag(res.Q), 6).tolist()}")
    if not have_gpu:
        print("SE curve point device=gpu skipped: no cupy / CUDA device")


if __name__ == "__main__":
    main()
