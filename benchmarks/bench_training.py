"""Throughput of the attention-network training simulator (issues 5 and 16).

Full-batch training steps per second of the default model (depth 2, rank 1, L = 2, c = 1,
beta = 1) at alpha = 15, with GD and Adam:

    python benchmarks/bench_training.py                       # CPU, D = 500
    python benchmarks/bench_training.py --device gpu --peak-gbs 3350   # GPU, D = 10^4
    python benchmarks/bench_training.py --fused               # GPU: fused kernel vs arrays

``--fused`` times, at D = 10^4, alpha = 15, L = 2, in float64 and float32, a full-batch Adam
step whose per-sample algebra is the fused kernel (:mod:`simulators._training_cuda`), with
the products with X by cuBLAS or by the streaming kernels ``xw``/``xtg``, against the same
step on the array path, side by side (min over interleaved repetitions), split into the two
products with X, the per-sample algebra and the update, with the fraction of the HBM bound
(``--peak-gbs``, default 4800 for the H200).  Without cupy and a GPU it prints one skip
line.  The default run (CPU) ends with this comparison.

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
    # the default oracle (CPU: the fused kernel in numba's threads), and on the CPU the
    # array path beside it, interleaved (minimum of 3 alternating timings each)
    paths = {"default": AttentionOracle(X, y, model)}
    if xp is np:
        paths["array path"] = AttentionOracle(X, y, model, fused=False)
    results = {}
    for name in optimizers:
        W0 = xp.asarray(0.1 * rng.standard_normal((dim, model.p)).astype(dtype))
        steps_of = {}
        for path, oracle in paths.items():
            opt = make_optimizer(name, 0.5 * dim if name in ("gd", "sgd") else 1e-2,
                                 oracle=oracle)
            state = {"W": W0}

            def step(opt=opt, state=state, oracle=oracle):
                _, g = oracle.loss_and_grad(state["W"])
                state["W"] = opt.step(state["W"], g, oracle)

            for _ in range(3):
                step()
            steps_of[path] = step
        times = dict.fromkeys(steps_of, float("inf"))
        for _ in range(3):
            for path, f in steps_of.items():
                times[path] = min(times[path], _timeit(f, xp, steps))
        for path, t in times.items():
            gbs = bytes_per_step / t / 1e9
            label = name if path == "default" else f"{name} ({path})"
            line = (f"{label:18s} {1 / t:9.1f} steps/s  {t * 1e3:8.2f} ms/step  "
                    f"effective {gbs:7.1f} GB/s (2 reads of X)")
            if peak_gbs:
                line += f"  = {100 * gbs / peak_gbs:5.1f}% of {peak_gbs:g} GB/s"
            if path != "default":
                line += f"  (the default is {t / times['default']:.2f}x faster)"
            print(line)
        t = times["default"]
        results[name] = {"steps_per_s": 1 / t, "ms_per_step": 1e3 * t,
                         "gbs": bytes_per_step / t / 1e9}
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


def compare_fused(dim, alpha, steps, reps, peak_gbs, seq_len=2):
    """Fused kernel vs array path on the GPU (module docstring); returns the numbers."""
    from asymptotics.backend import gpu_available

    if not gpu_available():
        print("# fused vs array path: skipped (needs cupy and a CUDA device)")
        return None
    import cupy as cp

    out = {}
    for dtype in ("float64", "float32"):
        out[dtype] = _compare_one(cp, np.dtype(dtype), dim, alpha, steps, reps, peak_gbs,
                                  seq_len)
        cp.get_default_memory_pool().free_all_blocks()
    return out


def _compare_one(cp, dtype, dim, alpha, steps, reps, peak_gbs, seq_len):
    from simulators import _training_cuda as tc

    model = AttentionModel(Architecture(seq_len=seq_len))
    n = int(round(alpha * dim))
    X = _data(cp, n, seq_len, dim, dtype)
    rng = np.random.default_rng(1)
    W_star = cp.asarray(rng.standard_normal((dim, model.p)).astype(dtype))
    y = model.forward(project(X, W_star))
    W = cp.asarray(0.1 * rng.standard_normal((dim, model.p)).astype(dtype))
    bound = 2 * X.nbytes / (peak_gbs * 1e9)  # seconds to read X twice at peak
    print(f"# GPU D={dim} alpha={alpha} N={n} L={seq_len} {dtype.name}: X = "
          f"{X.nbytes / 1e9:.2f} GB, HBM bound (2 reads of X at {peak_gbs:g} GB/s) "
          f"{bound * 1e3:.2f} ms/step", flush=True)
    step_fns = {}
    variants = (("array", False, False), ("fused", True, False),
                ("fused+products", True, True))
    X2 = X.reshape(n * seq_len, dim)
    scale = 1.0 / np.sqrt(dim)

    def products_grad(W, pairs, one_kernel):
        """What ``fused+products`` does, with the earlier choices: the algebra in its own
        kernel (``one_kernel=False``), float32 read one element per load (``pairs``)."""
        if one_kernel:
            total, _, dZ = tc.fused_products_step(X2, W, seq_len, scale, 1.0, 1.0, 1, cp,
                                                  mode=tc.GRAD, Y=y, coef=2.0 / n,
                                                  pairs=pairs)
        else:
            U = tc.xw(X2, W, cp, pairs=pairs).reshape(n, seq_len, model.p)
            total, _, dZ = tc.fused_step(U, scale, 1.0, 1.0, 1, cp, mode=tc.GRAD, Y=y,
                                         coef=2.0 / n)
        float(total)  # the oracle's sync point: the loss goes to the host
        return tc.xtg(X2, dZ.reshape(n * seq_len, model.p), cp, pairs=pairs) * scale

    for name, fused, products in variants:
        oracle = AttentionOracle(X, y, model, fused=fused, fused_products=products)
        opt = make_optimizer("adam", 1e-2, oracle=oracle)
        state = {"W": W}

        def step(opt=opt, state=state, oracle=oracle):
            _, g = oracle.loss_and_grad(state["W"])
            state["W"] = opt.step(state["W"], g, oracle)

        step_fns[name] = step
    for name, pairs in (("products, 2 kernels", True), ("products, 4-byte", False)):
        opt = make_optimizer("adam", 1e-2)
        state = {"W": W}

        def step(opt=opt, state=state, pairs=pairs):
            state["W"] = opt.step(state["W"], products_grad(state["W"], pairs, False))

        step_fns[name] = step
    for step in step_fns.values():
        for _ in range(3):  # warm-up: kernel compilation, cuBLAS plans, memory pool
            step()
    best = {name: np.inf for name in step_fns}
    for _ in range(reps):  # interleaved, min over repetitions
        for name, fn in step_fns.items():
            best[name] = min(best[name], _timeit(fn, cp, steps))

    # the split of one step, each part timed alone
    U3 = (X2 @ W).reshape(n, seq_len, model.p)
    S = U3 * scale
    fwd = model.forward(S, keep=True)
    dS = attention_backward(S, fwd, (2.0 / n) * (fwd.y - y), model)
    g = project_transpose(X, dS)
    opt = make_optimizer("adam", 1e-2)

    def algebra_array():  # what the array path does between the two GEMMs
        S_ = U3 * scale
        fw = model.forward(S_, keep=True)
        diff = fw.y - y
        float((diff * diff).sum())
        return attention_backward(S_, fw, (2.0 / n) * diff, model)

    def algebra_fused():
        total, _, dZ = tc.fused_step(U3, scale, 1.0, 1.0, 1, cp, mode=tc.GRAD, Y=y,
                                     coef=2.0 / n)
        float(total)
        return dZ

    parts = {
        "X W (GEMM)": lambda: X2 @ W,
        "X^T dS (GEMM)": lambda: project_transpose(X, dS),
        "X W (xw kernel)": lambda: tc.xw(X2, W, cp),
        "X W (xw, 4-byte loads)": lambda: tc.xw(X2, W, cp, pairs=False),
        "X W + algebra (1 kernel)": lambda: tc.fused_products_step(
            X2, W, seq_len, scale, 1.0, 1.0, 1, cp, mode=tc.GRAD, Y=y, coef=2.0 / n),
        "X^T dS (xtg kernel)": lambda: tc.xtg(X2, dS.reshape(n * seq_len, model.p), cp),
        "X^T dS (xtg, 4-byte loads)": lambda: tc.xtg(
            X2, dS.reshape(n * seq_len, model.p), cp, pairs=False),
        "algebra, array path": algebra_array,
        "algebra, fused kernel": algebra_fused,
        "adam update": lambda: opt.step(W, g),
        "read X once (X.sum)": lambda: X.sum(),
    }
    t_part = {k: min(_timeit(f, cp, steps) for _ in range(max(2, reps // 2)))
              for k, f in parts.items()}
    for name, t in best.items():
        print(f"  {name:19s} step {t * 1e3:8.3f} ms  = {best['array'] / t:5.2f}x the array "
              f"path, {100 * bound / t:5.1f}% of the HBM bound ({2 * X.nbytes / t / 1e9:7.1f}"
              " GB/s effective)")
    for k, t in t_part.items():
        line = f"    {k:26s} {t * 1e3:8.3f} ms"
        if k.startswith(("X W", "X^T")):  # one read of X each
            line += f"  = {100 * X.nbytes / t / 1e9 / peak_gbs:5.1f}% of peak for one read"
        print(line)
    x_read = t_part["read X once (X.sum)"]
    print(f"    X.sum reads X at {X.nbytes / x_read / 1e9:7.1f} GB/s = "
          f"{100 * X.nbytes / x_read / 1e9 / peak_gbs:5.1f}% of peak", flush=True)
    return {"ms_step": {k: 1e3 * v for k, v in best.items()},
            "ms_parts": {k: 1e3 * v for k, v in t_part.items()}, "bound_ms": 1e3 * bound}


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
    p.add_argument("--fused", action="store_true",
                   help="GPU: fused per-sample kernel vs the array path, float64 and float32")
    p.add_argument("--reps", type=int, default=5, help="interleaved repetitions (--fused)")
    a = p.parse_args(argv)
    if a.fused:
        compare_fused(a.dim or 10_000, a.alpha, a.steps or 20, a.reps, a.peak_gbs or 4800.0)
        return 0
    dim = a.dim or (500 if a.device == "cpu" else 10_000)
    steps = a.steps or (50 if a.device == "cpu" else 200)
    bench(a.device, dim, a.alpha, steps, a.optimizers.split(","), a.dtype, a.peak_gbs,
          a.profile)
    if a.device == "cpu":  # then the GPU comparison, one skip line without a GPU
        compare_fused(10_000, a.alpha, 20, a.reps, a.peak_gbs or 4800.0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
