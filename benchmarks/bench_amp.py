"""Throughput of finite-size Bayes-AMP (issue 4).

GAMP iterations per second and the wall time of a converged run of the default attention
model (depth 2, L = 2, c = 1, β = 1) at α = 1.2:

    python benchmarks/bench_amp.py                    # CPU, D = 1000
    python benchmarks/bench_amp.py --device gpu       # GPU, D = 10^4

Printed: data set-up time (host drawing, one seeded generator), the converged run
(iterations, wall time, status), iterations/s over that run (every iteration includes the
metrics on the test set), and a profile of one iteration at the run's final state: the
two large products ``x Ŵ`` and ``xᵀ g``, the per-sample posterior integrals (ms per
iteration; on the GPU the fused CUDA kernel with ``ω`` on the device, as the run has it), the
metrics.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), os.pardir))

from asymptotics.backend import get_namespace  # noqa: E402
from asymptotics.channels.registry import make_channel  # noqa: E402
from simulators.amp import AMPConfig, _metrics, make_problem, run_amp  # noqa: E402
from simulators.data import project, project_transpose  # noqa: E402


def _sync(xp):
    if xp is not np:
        xp.cuda.Device().synchronize()


def _timeit(fn, xp, reps):
    fn()
    _sync(xp)
    t0 = time.perf_counter()
    for _ in range(reps):
        fn()
    _sync(xp)
    return (time.perf_counter() - t0) / reps


def bench(device, dim, alpha, max_iter, tol, n_test, seed=0, reps=3):
    xp = get_namespace(device)
    ch = make_channel("attention")
    cfg = AMPConfig(dim=dim, alpha=alpha, max_iter=max_iter, tol=tol, n_test=n_test,
                    device=device)
    print(f"device={device} D={dim} alpha={alpha} N={cfg.n_samples} n_test={n_test} "
          f"model={ch.describe()}")
    t0 = time.perf_counter()
    prob = make_problem(ch, cfg, seed, xp)
    _sync(xp)
    print(f"set-up (data on host, copy to device): {time.perf_counter() - t0:.2f} s")
    # warm-up: numba kernel load/compile, cupy kernels
    run_amp(ch, AMPConfig(**{**cfg.__dict__, "max_iter": 1}), seed, problem=prob)
    t0 = time.perf_counter()
    res = run_amp(ch, cfg, seed, problem=prob)
    _sync(xp)
    wall = time.perf_counter() - t0
    fin = res.final
    print(f"run: status={res.status} iterations={res.iterations} wall={wall:.2f} s "
          f"-> {res.iterations / wall:.2f} iterations/s")
    print(f"final m={np.round(fin['m'], 4).tolist()} q={np.round(fin['q'], 4).tolist()} "
          f"gen_error={fin['gen_error']:.3g}")
    # profile one iteration at the final state
    W, C = res.W, res.C
    N, L, p = prob.X.shape[0], ch.seq_len, ch.dim
    omega = project(prob.X, W)
    parts = {
        "x W/sqrt(D) (N·L×D times D×p)": lambda: project(prob.X, W),
        "posterior integrals (N samples)": lambda: ch.posterior_on(
            prob.obs, omega, C, device),
        "x^T g/sqrt(D)": lambda: project_transpose(prob.X, xp.asarray(np.ones((N, L, p)))),
        "metrics (Q, M, test gen. error)": lambda: _metrics(ch, prob, W, C, dim, xp),
    }
    times = {k: _timeit(f, xp, reps) for k, f in parts.items()}
    tot = sum(times.values())
    print("profile of one iteration:")
    for k, t in times.items():
        print(f"  {k:40s} {1e3 * t:9.2f} ms  {100 * t / tot:5.1f} %")
    print(f"posterior: {1e3 * times['posterior integrals (N samples)']:.2f} ms/iteration; "
          f"{res.iterations / wall:.2f} iterations/s over the run")
    return {"iterations": res.iterations, "wall": wall, "status": res.status, "profile": times}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu", choices=("cpu", "gpu"))
    p.add_argument("--dim", type=int, default=None, help="D (default 1000 cpu, 10^4 gpu)")
    p.add_argument("--alpha", type=float, default=1.2)
    p.add_argument("--max-iter", type=int, default=400)
    p.add_argument("--tol", type=float, default=1e-5)
    p.add_argument("--n-test", type=int, default=2000)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    dim = a.dim or (1000 if a.device == "cpu" else 10_000)
    bench(a.device, dim, a.alpha, a.max_iter, a.tol, a.n_test, a.seed)


if __name__ == "__main__":
    main()
