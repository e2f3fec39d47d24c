"""Benchmark: the depth-3 sequential staircase (issue 15), the work of
``smi thresholds --depth 3 --skip 1 --staircase``: Q = 0 thresholds, then
:func:`~asymptotics.staircase.staircase_thresholds`, timed separately after a warm-up
that compiles the kernels.  ``--compare`` runs the fibre kernels before issue 15
(benchmarks/previous_kernels.py: for depth 3 the kernels at commit ff6a747) with the
coarse-rule solve to ``newton_tol`` (as before ``COARSE_TOL``) first, in this one process,
and prints the ratio and the largest change of a threshold in units of its standard error.

    python benchmarks/bench_staircase.py [--depth 3] [--skip 1] [--points 11] [--groups 4]
                                         [--compare]
    NUMBA_NUM_THREADS=1 python benchmarks/bench_staircase.py --kernels
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout, not an install

import numpy as np  # noqa: E402
from numba import njit  # noqa: E402

from asymptotics import staircase  # noqa: E402
from asymptotics.channels import _attention_kernels as kern  # noqa: E402
from asymptotics.channels.registry import make_channel  # noqa: E402
from asymptotics.integrate import gauss_hermite  # noqa: E402
from asymptotics.staircase import StaircaseSettings, staircase_thresholds  # noqa: E402
from asymptotics.thresholds import weak_recovery_thresholds  # noqa: E402
from benchmarks.previous_kernels import (  # noqa: E402
    head_fibre_moments_two_tokens,
    head_mean_forward,
    head_unlearned_inner_moments,
    previous_kernels,
)


@contextlib.contextmanager
def before_depth3_work():
    """The fibre kernels before issue 15 (and the depth-3 kernels' predecessors, see
    previous_kernels.py), and the coarse-rule joint solve to ``newton_tol`` as before."""
    saved = staircase.COARSE_TOL
    staircase.COARSE_TOL = 0.0
    try:
        with previous_kernels():
            yield
    finally:
        staircase.COARSE_TOL = saved


def run(args):
    channel = make_channel(depth=args.depth, skip=args.skip)
    settings = StaircaseSettings(log2_points=args.points, groups=args.groups)
    staircase_thresholds(make_channel(depth=args.depth, skip=args.skip),
                         StaircaseSettings(log2_points=4, groups=2))  # compile
    t0 = time.perf_counter()
    q0 = weak_recovery_thresholds(channel)
    t1 = time.perf_counter()
    stairs = staircase_thresholds(channel, settings, q0=q0)
    t2 = time.perf_counter()
    for s in stairs:
        print(f"  layer {s.layer} order {s.order}: α = {s.alpha:.5f} ± {s.stderr:.1e} "
              f"({s.status})", flush=True)
    print(f"  Q = 0 thresholds {t1 - t0:.1f} s, staircase {t2 - t1:.1f} s, "
          f"total {t2 - t0:.1f} s on {os.cpu_count()} cores", flush=True)
    return stairs, t2 - t1, t2 - t0


@njit  # no cache: a script's cache breaks when it is imported
def _exp_log_loop(x, n_exp, n_log):
    """``n_exp`` exps and ``n_log`` logs per element, dependent only through a sum: the
    libm throughput a pair of the fibre kernels is bounded by."""
    acc = 0.0
    for i in range(x.shape[0]):
        for j in range(n_exp):
            acc += math.exp(-x[i] - 1e-3 * j)  # distinct arguments: no common subexpression
        for j in range(n_log):
            acc += math.log(x[i] + 1e-3 * j)
    return acc


def time_kernels(repeats: int = 5, K: int = 256) -> None:
    """Per-pair times of the depth-3 kernels and of the kernels they replaced, alternately
    (min of ``repeats``), and the libm bound ``exps·t_exp + logs·t_log`` per pair (run on
    one thread: ``NUMBA_NUM_THREADS=1``)."""
    ch = make_channel(depth=3, skip=1.0)
    rng = np.random.default_rng(0)
    q = np.array([0.3, 0.0, 0.9])  # the staircase's last stage: layer 2 unlearned
    xi, u = rng.standard_normal((2, K, 2, 3))
    om = np.ascontiguousarray(np.sqrt(q) * xi)
    a = np.ascontiguousarray(ch.observe(om + np.sqrt(1.0 - q) * u))
    T, W = ch._inner_nodes()
    n = T.shape[0]
    sd, vl = np.sqrt(1.0 - q[:2]), 1.0 - q[2]
    Tf, Wf, Binv, logdet = ch._folded_unlearned_nodes()
    inner = gauss_hermite(6, 6)
    gh = np.ascontiguousarray(0.7 * inner.points.reshape(-1, 2, 3))
    x = rng.uniform(0.5, 2.0, 2**20)

    def best(f):
        f()
        ts = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            f()
            ts.append(time.perf_counter() - t0)
        return min(ts)

    t_exp = (best(lambda: _exp_log_loop(x, 5, 0)) - best(lambda: _exp_log_loop(x, 1, 0))) / (
        4 * len(x))
    t_log = (best(lambda: _exp_log_loop(x, 1, 4)) - best(lambda: _exp_log_loop(x, 1, 0))) / (
        4 * len(x))
    print(f"libm on one thread: exp {t_exp * 1e9:.1f} ns, log {t_log * 1e9:.1f} ns")

    def fib(S, mode):
        out = (np.empty((S, K)), np.empty((S, K, 2, 3)), np.full((S, K, 2, 3, 2, 3), np.nan))
        Wx = np.ascontiguousarray(W[:S])

        def new():
            kern.fibre_moments_depth3(a, om, T, Wx, sd, vl, 1.0, 1.0, *out, mode)

        def old():
            head_fibre_moments_two_tokens(a, om, T, Wx, sd, vl, 1.0, 1.0, *out,
                                          mode != kern.FIBRE_MEANS)
        return old, new

    def unl(signed):
        ol = np.ascontiguousarray(om[:, :, 2] if signed else np.zeros((K, 2)))
        out = (np.empty((2, K)), np.empty((2, K, 2)), np.empty((2, K, 3, 2, 2)))
        args = (a, ol, vl, Binv, logdet, Tf, Wf, *out)
        return (lambda: head_unlearned_inner_moments(*args),
                lambda: kern.unlearned_moments_depth3(*args))

    def fwd():
        out = np.empty((K // 8, 2, 2))
        omk = np.ascontiguousarray(om[: K // 8])
        return (lambda: head_mean_forward(omk, gh, inner.weights, 1.0, 1.0, out),
                lambda: ch.mean_forward(omk, gh, inner.weights))

    cases = [  # name, (old, new), pairs, (exps, logs) per pair of the new kernel
        ("fibre, layer blocks, S = 2 (staircase)", fib(2, kern.FIBRE_LAYER_BLOCKS), K * n,
         (6, 1)),
        ("fibre, means, S = 1 (curve iterations)", fib(1, kern.FIBRE_MEANS), K * n, (6, 1)),
        ("unlearned, ω_last ≠ 0 (staircase stage 2)", unl(True), K * len(Tf), (2, 0)),
        ("unlearned, ω_last = 0 (Q = 0)", unl(False), K * len(Tf), (1, 0)),
        ("mean_forward (generalisation errors)", fwd(), K // 8 * len(gh), (2 + 4 / 36, 0)),
    ]
    for name, (old, new), pairs, (ne, nl) in cases:
        t_old, t_new = [], []
        for _ in range(repeats):  # alternately, so that load changes hit both alike
            t_old.append(best_once(old))
            t_new.append(best_once(new))
        to, tn = min(t_old) / pairs, min(t_new) / pairs
        bound = ne * t_exp + nl * t_log
        print(f"{name:<44} previous {to * 1e9:6.1f} ns/pair, current {tn * 1e9:6.1f} ns/pair, "
              f"ratio {to / tn:.2f}; libm bound {bound * 1e9:.1f} ns: {bound / tn:.0%}")


def best_once(f):
    t0 = time.perf_counter()
    f()
    return time.perf_counter() - t0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--depth", type=int, default=3)
    ap.add_argument("--skip", type=float, default=1.0)
    ap.add_argument("--points", type=int, default=11, help="log2 outer points per group")
    ap.add_argument("--groups", type=int, default=4)
    ap.add_argument("--compare", action="store_true",
                    help="run the previous fibre kernels first, side by side")
    ap.add_argument("--kernels", action="store_true",
                    help="per-pair kernel times only (run with NUMBA_NUM_THREADS=1)")
    args = ap.parse_args()
    if args.kernels:
        return time_kernels()
    runs = [("previous", before_depth3_work), ("current", contextlib.nullcontext)]
    out = {}
    for name, context in runs if args.compare else runs[1:]:
        print(f"--- {name} kernels", flush=True)
        with context():
            out[name] = run(args)
    if args.compare:
        (s0, t0, T0), (s1, t1, T1) = out["previous"], out["current"]
        gap = max(abs(a.alpha - b.alpha) / max(a.stderr, 1e-300)
                  for a, b in zip(s0, s1, strict=True))
        err = max(abs(a.stderr - b.stderr) / max(a.stderr, 1e-300)
                  for a, b in zip(s0, s1, strict=True))
        print(f"\nstaircase: previous {t0:.1f} s, current {t1:.1f} s: ratio {t0 / t1:.2f}; "
              f"with Q = 0: previous {T0:.1f} s, current {T1:.1f} s: ratio {T0 / T1:.2f}; "
              f"largest |Δα| / stderr {gap:.2e}, largest relative change of a stderr "
              f"{err:.1e}")


if __name__ == "__main__":
    main()
