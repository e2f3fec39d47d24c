"""Benchmark: the default depth-2 attention curve (issue 3), time and fixed-point errors.

Runs ``smi curve``'s sweep on the default model (depth 2, L = 2, c = 1, β = 1) over
``--alphas`` (default 0.05:1.6:0.05, 32 values) on both branches, in this process, after
a warm-up that compiles the numba kernels, and prints one line per row as it is computed
(time, SE steps: coarse / full / replicate, SE-map evaluations: calls and full-map
equivalents, i.e. outer points / 2^sobol-log2, Q with its fixed-point standard error), then
the wall time and the largest overlap standard error.  ``--compare`` first runs the same
sweep on the fibre kernels before issue 15 (benchmarks/previous_kernels.py), then on the
current ones, in this one process, and prints the ratio of the wall times and the largest
difference of the overlaps (in units of their standard error).

    python benchmarks/bench_curve.py [--alphas 0.05:1.6:0.05] [--branch both] [--sobol-log2 12]
                                     [--tol 1e-8] [--depth 2] [--max-iter N] [--compare] [--map]
                                     [--device cpu|gpu]

The notebook's depth-3 curve: ``--depth 3 --alphas 0.15:2.25:0.15 --sobol-log2 10 --tol 1e-6
--max-iter 500``.

``--map`` times only single SE-map evaluations (``qhat`` without the inner rule's second
weight set, the call the iterations make; 2^sobol-log2 outer points) at fixed Q on the
general and the shared fibre kernels, the previous and the current kernels alternately,
min of ``--repeat`` runs each; then the same on a replicate map (2^(sobol-log2 - 3)
points), the call the solver makes most.  ``--device gpu`` runs the fused CUDA kernel (no
previous kernels there): per-call times that, times the calls per chain the sweep prints,
make up a GPU curve's time.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

# this checkout, and previous_kernels always as benchmarks.previous_kernels: numba's cache
# of its kernels records the module's name, so a second name cannot load the first's entries
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from asymptotics.channels.registry import make_channel  # noqa: E402
from asymptotics.curves import sweep  # noqa: E402
from asymptotics.state_evolution import SESettings, StateEvolution  # noqa: E402
from benchmarks.previous_kernels import previous_kernels  # noqa: E402
from smi.options import parse_values  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--alphas", default="0.05:1.6:0.05")
    ap.add_argument("--branch", default="both", choices=["amp", "bayes", "both"])
    ap.add_argument("--sobol-log2", type=int, default=12)
    ap.add_argument("--tol", type=float, default=1e-8)
    ap.add_argument("--depth", type=int, default=2, help="attention depth (L = 2, c = β = 1)")
    ap.add_argument("--max-iter", type=int, default=None,
                    help="the sweep's max_iter (default: its own)")
    ap.add_argument("--compare", action="store_true",
                    help="run the previous fibre kernels first, side by side")
    ap.add_argument("--map", action="store_true", help="time single SE-map evaluations only")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--device", default="cpu", choices=["cpu", "gpu"])
    args = ap.parse_args()
    if args.compare and args.device != "cpu":
        ap.error("--compare runs the previous CPU kernels: --device cpu only")
    if args.map:
        return time_map(args)
    alphas = parse_values(args.alphas, "alphas")
    runs = [("previous", previous_kernels), ("current", contextlib.nullcontext)]
    results = {}
    for name, context in runs if args.compare else runs[1:]:
        with context():
            print(f"--- {name} kernels", flush=True)
            results[name] = run(alphas, args)
    if args.compare:
        (rows0, wall0), (rows1, wall1) = results["previous"], results["current"]
        gap = max(float(np.max(np.abs(np.diag(np.array(r1["Q"])) - np.diag(np.array(r0["Q"])))
                               / np.maximum(np.diag(np.array(r0["Q_stderr"])), 1e-300)))
                  for r0, r1 in zip(rows0, rows1, strict=True) if r0["branch"] != "bayes")
        print(f"\nprevious {wall0:.1f} s, current {wall1:.1f} s: ratio {wall0 / wall1:.2f}; "
              f"largest |ΔQ| / stderr {gap:.2e}")


def time_map(args):
    """Per-call times of the SE map at fixed Q, previous against current kernels."""
    channel = make_channel()
    cases = [((0.3, 0.7), "general"), ((0.3, 0.7), "shared"), ((0.9, 0.99), "general"),
             ((0.05, 0.999), "general")]
    kernels = [("previous", previous_kernels), ("current", contextlib.nullcontext)]
    if args.device == "gpu":
        kernels = kernels[1:]
    for log2, label in ((args.sobol_log2, "full map"), (args.sobol_log2 - 3, "replicate map")):
        settings = SESettings(sobol_log2=log2, device=args.device)
        print(f"{label}: 2^{log2} outer points, {args.device}", flush=True)
        for q, path in cases:
            se = StateEvolution(channel, 0.5, settings, inner_path=path)
            Q = np.diag(q)
            times = {name: [] for name, _ in kernels}
            out = {}
            for _ in range(args.repeat + 1):  # the first round compiles, not counted
                for name, context in kernels:
                    with context():
                        t0 = time.perf_counter()
                        out[name] = se.qhat(Q, inner_error=False).Qhat
                        times[name].append(time.perf_counter() - t0)
            t_cur = min(times["current"][1:])
            line = f"  Q = diag{q} {path:<8} current {t_cur * 1e3:8.2f} ms"
            if "previous" in times:
                t_prev = min(times["previous"][1:])
                diff = float(np.max(np.abs(out["previous"] - out["current"])))
                line += (f"  previous {t_prev * 1e3:8.2f} ms  ratio {t_prev / t_cur:.2f}"
                         f"  |ΔQ̂| {diff:.1e}")
            print(line, flush=True)


class MapCounter:
    """Counts ``StateEvolution.qhat`` calls (every SE-map evaluation goes through it) and
    their outer points, in full-map equivalents (points / ``full``)."""

    def __init__(self, full: int):
        self.full, self.calls, self.points = full, 0, 0
        self._qhat = StateEvolution.qhat

    def __enter__(self):
        counter = self

        def qhat(se, Q, inner_error=True):
            counter.calls += 1
            counter.points += se.rule.size
            return counter._qhat(se, Q, inner_error)

        StateEvolution.qhat = qhat
        return self

    def __exit__(self, *exc):
        StateEvolution.qhat = self._qhat

    def take(self) -> tuple[int, float]:
        out = (self.calls, self.points / self.full)
        self.calls, self.points = 0, 0
        return out


def run(alphas, args):
    """One sweep (after a compiling warm-up): its rows and wall time, printed."""
    channel = make_channel(depth=args.depth)
    settings = SESettings(sobol_log2=args.sobol_log2, device=args.device)
    sweep(channel, [0.5], "amp", settings=SESettings(sobol_log2=9, device=args.device))
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "curve.jsonl")
        seen, last = 0, time.perf_counter()
        counter = MapCounter(2**args.sobol_log2)
        totals = [0, 0.0]

        def progress(done, total, elapsed):
            nonlocal seen, last
            with open(path) as fh:
                rows = [r for r in (json.loads(line) for line in fh if line.strip())
                        if "Q" in r]  # the file's first line is its header
            now = time.perf_counter()
            calls, equiv = counter.take()
            totals[0] += calls
            totals[1] += equiv
            for r in rows[seen:]:
                q = np.diag(np.array(r["Q"]))
                e = np.diag(np.array(r["Q_stderr"]))
                its = (f"{r.get('coarse_iterations', 0)}/{r['iterations']}/"
                       f"{r.get('replicate_iterations', 0)}")
                qs = "  ".join(f"{a:.4f}±{b:.4f}" for a, b in zip(q, e, strict=True))
                print(f"{r['alpha']:5.2f} {r['branch']:<8} {now - last:6.1f}s  steps {its:<10}"
                      f" maps {calls:4d} = {equiv:5.1f} full  Q {qs}  {r['status']}",
                      flush=True)
            seen, last = len(rows), now

        t0 = time.perf_counter()
        with counter:
            extra = {} if args.max_iter is None else {"max_iter": args.max_iter}
            rows = sweep(channel, alphas, args.branch, settings=settings, tol=args.tol,
                         output=path, progress=progress, **extra)
        wall = time.perf_counter() - t0
    errs = [max(np.diag(np.array(r["Q_stderr"]))) for r in rows if r["branch"] != "bayes"]
    print(f"\n{len(alphas)} alphas, depth {args.depth}, branch {args.branch}, "
          f"outer 8 x 2^{args.sobol_log2 - 3}: "
          f"{wall:.1f} s on {os.cpu_count()} cores ({platform.processor() or 'cpu'}), "
          f"device {args.device}; "
          f"SE-map evaluations {totals[0]} = {totals[1]:.1f} full-map equivalents")
    print(f"largest overlap standard error {np.nanmax(errs):.2e}; "
          f"rows above 2e-3: {sum(e > 2e-3 for e in errs)} of {len(errs)}")
    return rows, wall

if __name__ == "__main__":
    main()
