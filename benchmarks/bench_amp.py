"""Throughput of finite-size Bayes-AMP (issue 4).

GAMP iterations per second and the wall time of a converged run of the default attention
model (depth 2, L = 2, c = 1, β = 1) at α = 1.2:

    python benchmarks/bench_amp.py                    # CPU, D = 1000
    python benchmarks/bench_amp.py --device gpu       # GPU, D = 10^4
    python benchmarks/bench_amp.py --compare          # CPU kernels, previous vs current

Printed: data set-up time (host drawing, one seeded generator), the converged run
(iterations, wall time, status), iterations/s over that run (every iteration includes the
metrics on the test set), and a profile of one iteration at the run's final state: the
two large products ``x Ŵ`` and ``xᵀ g``, the per-sample posterior integrals (ms per
iteration; on the GPU the fused CUDA kernel with ``ω`` on the device, as the run has it), the
metrics.

``--compare`` (CPU) times GAMP iterations of the published-figures notebook's AMP cell
(D = 1000, default attention model, ``max_iter = 100``) on three kernels for AMP's general
``V = Ĉ``, alternately in this one process, min of ``--repeats`` runs of ``--iters``
iterations at each of ``--alphas``: the generic two-pass fibre kernel
(``benchmarks/previous_kernels.py``, ``generic_amp_kernel``), the written-out L = 2 kernel
(scalar loops, libm; ``written_out_amp_kernel``) and the vectorised depth-2 kernel
(``fibre_moments_two_tokens_depth2``, the current one).  It prints how far apart the three
trajectories are (relative, rounding), times one posterior call alone and against its libm
floor (4 ``exp`` and one ``log`` per sample·node, what the scalar kernels cannot avoid, on
the same threads), and estimates the cell's total (7 α × 4 seeds × 100 iterations; the
per-iteration time ``a + b N`` fitted on the measured α, ``N = αD``: the test-set metrics
do not scale with N).
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import sys
import time

import numpy as np
from numba import njit, prange

sys.path.insert(0, os.path.join(os.path.dirname(__file__), os.pardir))

from asymptotics.backend import get_namespace  # noqa: E402
from asymptotics.channels.registry import make_channel  # noqa: E402
from benchmarks.bench_kernels import VECTOR_FLOPS_PER_CYCLE, clock_ghz  # noqa: E402
from benchmarks.previous_kernels import generic_amp_kernel, written_out_amp_kernel  # noqa: E402
from simulators.amp import AMPConfig, _metrics, _products, make_problem, run_amp  # noqa: E402

#: the notebook's AMP cell (notebooks/published_figures.ipynb, full mode)
NOTEBOOK_ALPHAS = (0.2, 0.3, 0.4, 0.6, 0.8, 1.0, 1.2)
NOTEBOOK_SEEDS = 4
NOTEBOOK_ITERS = 100


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
    project, project_transpose = _products(xp)  # the products the run uses
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


@njit(parallel=True, cache=True)
def _libm_floor(t, out):
    """4 ``exp`` and one ``log`` per entry of ``t (K, n)`` (the transcendental calls per
    sample·node of the fibre kernel: two sigmoids, ``log|det B|``, the two weights)."""
    K, n = t.shape
    for k in prange(K):
        acc = 0.0
        for i in range(n):
            x = t[k, i]
            acc += math.exp(x) + math.exp(-x) + math.exp(0.5 * x) + math.exp(-0.5 * x)
            acc += math.log(1.0 + x * x)
        out[k] = acc


def _amp_runs(ch, cfg, prob, iters):
    """One run of ``iters`` GAMP iterations (tol 0: none stops early); wall time, result."""
    c = AMPConfig(**{**cfg.__dict__, "max_iter": iters, "tol": 1e-300})
    t0 = time.perf_counter()
    res = run_amp(ch, c, 0, problem=prob)
    return time.perf_counter() - t0, res


#: floating-point operations per (sample, node) of ``fibre_moments_two_tokens_depth2`` with
#: second moments on 2 weight sets, counted in its source (both signs; vexp 35 each):
#: the node 117, the maximum 2, the weights 74, the sums 2 x 37
VECTORISED_FLOPS = 267


def compare(dim, alphas, iters, repeats, n_test, seed=0):
    """Previous (generic kernel) vs current (written-out L = 2 kernel), side by side."""
    ch = make_channel("attention")
    runs = (("generic", generic_amp_kernel), ("written-out", written_out_amp_kernel),
            ("vectorised", contextlib.nullcontext))
    print(f"D={dim} model={ch.describe()} iterations per run={iters} repeats={repeats} "
          f"(min); load average {os.getloadavg()[0]:.2f} at the start")
    per_iter = {name: [] for name, _ in runs}  # s per iteration at each alpha
    sizes = []
    for alpha in alphas:
        cfg = AMPConfig(dim=dim, alpha=alpha, n_test=n_test)
        prob = make_problem(ch, cfg, seed)
        best, results = {}, {}
        for _name, context in runs:  # warm-up (compile / load the kernels)
            with context():
                _amp_runs(ch, cfg, prob, 2)
        for _ in range(repeats):
            for name, context in runs:
                with context():
                    wall, res = _amp_runs(ch, cfg, prob, iters)
                best[name] = min(best.get(name, np.inf), wall)
                results[name] = res
        # the same trajectory to rounding: the largest relative change of M_raw and V
        gap = max(float(np.max(np.abs(np.subtract(ra[key], rb[key])))
                        / max(float(np.max(np.abs(rb[key]))), 1e-300))
                  for name in ("generic", "written-out")
                  for ra, rb in zip(results["vectorised"].records[1:],
                                    results[name].records[1:], strict=True)
                  for key in ("M_raw", "V"))
        # the posterior call alone at the final state (a general V)
        res = results["vectorised"]
        omega = _products(np)[0](prob.X, res.W)
        tk = {}
        for _ in range(repeats):
            for name, context in runs:
                with context():
                    t0 = time.perf_counter()
                    ch.posterior(prob.obs, omega, res.C)
                    t = time.perf_counter() - t0
                tk[name] = min(tk.get(name, np.inf), t)
        N = cfg.n_samples
        n = ch._inner_nodes()[0].shape[0]
        grid, out = np.linspace(-3.0, 3.0, N * n).reshape(N, n), np.empty(N)
        _libm_floor(grid, out)
        floor = np.inf
        for _ in range(repeats):
            t0 = time.perf_counter()
            _libm_floor(grid, out)
            floor = min(floor, time.perf_counter() - t0)
        last = tk["vectorised"]
        print(f"alpha={alpha} N={N}: per iteration " + ", ".join(
            f"{name} {1e3 * best[name] / iters:6.1f} ms" for name, _ in runs)
            + f"; ratios {best['generic'] / best['vectorised']:.2f}, "
            f"{best['written-out'] / best['vectorised']:.2f}; trajectories equal to "
            f"{gap:.1e} (relative)")
        print(f"  posterior call ({N} samples x {n} nodes): " + ", ".join(
            f"{name} {1e3 * tk[name]:6.1f} ms" for name, _ in runs)
            + f"; libm floor {1e3 * floor:6.1f} ms = {floor / last:.2f} of the vectorised "
            f"call ({1e9 * last / (N * n):.1f} ns per sample.node)")
        gflops = VECTORISED_FLOPS * N * n / last / os.cpu_count() / 1e9
        ghz = clock_ghz()
        bound = (f" = {gflops / (VECTOR_FLOPS_PER_CYCLE * ghz):.0%} of "
                 f"{VECTOR_FLOPS_PER_CYCLE} flops per cycle at {ghz:.2f} GHz") if ghz else ""
        print(f"    vectorised: {VECTORISED_FLOPS} flops per sample.node, {gflops:.1f} "
              f"GFLOP/s per core{bound}")
        sizes.append(N)
        for name in per_iter:
            per_iter[name].append(best[name] / iters)
    # per iteration a + b N (the test-set metrics do not scale with N); one alpha: b N
    Ns = np.array([round(a * dim) for a in NOTEBOOK_ALPHAS], dtype=float)
    est = {}
    for name, t in per_iter.items():
        if len(set(sizes)) > 1:
            b, a0 = np.polyfit(sizes, t, 1)
        else:
            b, a0 = t[0] / sizes[0], 0.0
        est[name] = NOTEBOOK_SEEDS * NOTEBOOK_ITERS * float(np.sum(a0 + b * Ns))
    fit = "a + b N fitted" if len(set(sizes)) > 1 else "proportional to N"
    print(f"AMP cell estimate (alpha in {NOTEBOOK_ALPHAS}, {NOTEBOOK_SEEDS} seeds, "
          f"{NOTEBOOK_ITERS} iterations; per iteration {fit} on alpha in {tuple(alphas)}): "
          + ", ".join(f"{name} {t:.0f} s" for name, t in est.items()))
    return est


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu", choices=("cpu", "gpu"))
    p.add_argument("--dim", type=int, default=None, help="D (default 1000 cpu, 10^4 gpu)")
    p.add_argument("--alpha", type=float, default=1.2)
    p.add_argument("--max-iter", type=int, default=400)
    p.add_argument("--tol", type=float, default=1e-5)
    p.add_argument("--n-test", type=int, default=2000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--compare", action="store_true",
                   help="CPU: previous vs current fibre kernel on the notebook's AMP cell")
    p.add_argument("--alphas", default="0.8",
                   help="--compare: comma-separated alphas (default 0.8)")
    p.add_argument("--iters", type=int, default=10, help="--compare: iterations per run")
    p.add_argument("--repeats", type=int, default=3, help="--compare: runs (min)")
    a = p.parse_args(argv)
    if a.compare:
        alphas = [float(x) for x in a.alphas.split(",")]
        compare(a.dim or 1000, alphas, a.iters, a.repeats, a.n_test, a.seed)
        return
    dim = a.dim or (1000 if a.device == "cpu" else 10_000)
    bench(a.device, dim, a.alpha, a.max_iter, a.tol, a.n_test, a.seed)


if __name__ == "__main__":
    main()
