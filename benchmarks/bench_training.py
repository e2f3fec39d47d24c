"""Throughput of the attention-network training simulator (issue 5).

Full-batch training steps per second of the default model (depth 2, rank 1, L = 2, c = 1,
beta = 1) at alpha = 15, with GD and Adam:

    python benchmarks/bench_training.py                       # CPU, D = 500
    python benchmarks/bench_training.py --device gpu --peak-gbs 3350   # GPU, D = 10^4

A full-batch step reads X (N x L x D) at least twice (S = X W/sqrt(D) and X^T dS/sqrt(D)),
so the memory-traffic lower bound is ``2 N L D itemsize`` bytes per step (itemsize 8 for
float64, 4 for float32); the effective bandwidth is that over the measured step time, and
with ``--peak-gbs`` its fraction of the peak is printed.  ``--profile`` breaks a step into
the two large products, the per-sample L x L algebra and the optimizer update.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), os.pardir))

from asymptotics.backend import get_namespace  # noqa: E402
from asymptotics.channels.attention_map import Architecture  # noqa: E402
from simulators.attention_training import (  # noqa: E402
    AttentionModel,
    AttentionOracle,
    attention_backward,
    project,
    project_transpose,
    sample_sequences,
)
from simulators.optimizers import make_optimizer  # noqa: E402


def _sync(xp):
    if xp is not np:
        xp.cuda.Device().synchronize()


def _data(xp, n, L, D, dtype, seed=0):
    if xp is np:
        return sample_sequences(np.random.default_rng(seed), n, L, D, xp, dtype)
    # on the GPU, draw on the device (host drawing of 10^9+ numbers would dominate setup)
    return xp.random.default_rng(seed).standard_normal((n, L, D), dtype=dtype)


def _timeit(fn, xp, reps):
    fn()
    _sync(xp)
    t0 = time.perf_counter()
    for _ in range(reps):
        fn()
    _sync(xp)
    return (time.perf_counter() - t0) / reps


def bench(device, dim, alpha, steps, optimizers, dtype, peak_gbs, profile, seq_len=2):
    xp = get_namespace(device)
    dtype = np.dtype(dtype)
    model = AttentionModel(Architecture(seq_len=seq_len))
    n = int(round(alpha * dim))
    t0 = time.perf_counter()
    X = _data(xp, n, seq_len, dim, dtype)
    rng = np.random.default_rng(1)
    W_star = xp.asarray(rng.standard_normal((dim, model.p)).astype(dtype))
    y = model.forward(project(X, W_star))
    _sync(xp)
    setup = time.perf_counter() - t0
    bytes_per_step = 2 * n * seq_len * dim * dtype.itemsize
    print(f"# device={device} D={dim} alpha={alpha} N={n} L={seq_len} dtype={dtype.name} "
          f"X={n * seq_len * dim * dtype.itemsize / 1e9:.2f} GB (setup {setup:.1f} s)")
    oracle = AttentionOracle(X, y, model)
    results = {}
    for name in optimizers:
        W0 = xp.asarray(0.1 * rng.standard_normal((dim, model.p)).astype(dtype))
        opt = make_optimizer(name, 0.5 * dim if name in ("gd", "sgd") else 1e-2, oracle=oracle)
        state = {"W": W0}

        def step(opt=opt, state=state):
            _, g = oracle.loss_and_grad(state["W"])
            state["W"] = opt.step(state["W"], g, oracle)

        for _ in range(3):
            step()
        t = _timeit(step, xp, steps)
        gbs = bytes_per_step / t / 1e9
        line = (f"{name:6s} {1 / t:9.1f} steps/s  {t * 1e3:8.2f} ms/step  "
                f"effective {gbs:7.1f} GB/s (2 reads of X)")
        if peak_gbs:
            line += f"  = {100 * gbs / peak_gbs:5.1f}% of {peak_gbs:g} GB/s"
        print(line)
        results[name] = {"steps_per_s": 1 / t, "ms_per_step": 1e3 * t, "gbs": gbs}
    if profile:
        W = xp.asarray(0.1 * rng.standard_normal((dim, model.p)).astype(dtype))
        S = project(X, W)
        fwd = model.forward(S, keep=True)
        G = (2.0 / n) * (fwd.y - y)
        dS = attention_backward(S, fwd, G, model)
        g = project_transpose(X, dS)
        opt = make_optimizer("adam", 1e-2)
        parts = {
            "S = X W/sqrt(D)": lambda: project(X, W),
            "X^T dS/sqrt(D)": lambda: project_transpose(X, dS),
            "forward LxL algebra": lambda: model.forward(S, keep=True),
            "backward LxL algebra": lambda: attention_backward(S, fwd, G, model),
            "loss and cotangent": lambda: float(((fwd.y - y) ** 2).sum()),
            "adam update": lambda: opt.step(W, g),
        }
        times = {k: _timeit(f, xp, max(5, steps // 2)) for k, f in parts.items()}
        total = sum(times.values())
        print("# profile of one full-batch step (Adam):")
        for k, t in times.items():
            print(f"#   {k:22s} {t * 1e3:8.3f} ms  {100 * t / total:5.1f}%")
        results["profile_ms"] = {k: 1e3 * t for k, t in times.items()}
    return results


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu", choices=("cpu", "gpu"))
    p.add_argument("--dim", type=int, default=None, help="D (default 500 cpu, 10^4 gpu)")
    p.add_argument("--alpha", type=float, default=15.0)
    p.add_argument("--steps", type=int, default=None, help="timed steps (default 50/200)")
    p.add_argument("--optimizers", default="gd,adam")
    p.add_argument("--dtype", default="float64", choices=("float64", "float32"))
    p.add_argument("--peak-gbs", type=float, default=None,
                   help="peak memory bandwidth in GB/s (H100 SXM ~3350, H200 ~4800)")
    p.add_argument("--profile", action="store_true")
    a = p.parse_args(argv)
    dim = a.dim or (500 if a.device == "cpu" else 10_000)
    steps = a.steps or (50 if a.device == "cpu" else 200)
    bench(a.device, dim, a.alpha, steps, a.optimizers.split(","), a.dtype, a.peak_gbs,
          a.profile)
    return 0


if __name__ == "__main__":
    sys.exit(main())
