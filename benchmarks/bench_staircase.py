"""Benchmark: the depth-3 sequential staircase (issue 15), the work of
``smi thresholds --depth 3 --skip 1 --staircase``: Q = 0 thresholds, then
:func:`~asymptotics.staircase.staircase_thresholds`, timed separately after a warm-up
that compiles the kernels.  ``--compare`` runs the fibre kernels before issue 15
(benchmarks/previous_kernels.py) first, in this one process, and prints the ratio and the
largest change of a threshold in units of its standard error.

    python benchmarks/bench_staircase.py [--depth 3] [--skip 1] [--points 11] [--groups 4]
                                         [--compare]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout, not an install

from asymptotics.channels.registry import make_channel  # noqa: E402
from asymptotics.staircase import StaircaseSettings, staircase_thresholds  # noqa: E402
from asymptotics.thresholds import weak_recovery_thresholds  # noqa: E402
from benchmarks.previous_kernels import previous_kernels  # noqa: E402


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
    return stairs, t2 - t1


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--depth", type=int, default=3)
    ap.add_argument("--skip", type=float, default=1.0)
    ap.add_argument("--points", type=int, default=11, help="log2 outer points per group")
    ap.add_argument("--groups", type=int, default=4)
    ap.add_argument("--compare", action="store_true",
                    help="run the previous fibre kernels first, side by side")
    args = ap.parse_args()
    runs = [("previous", previous_kernels), ("current", contextlib.nullcontext)]
    out = {}
    for name, context in runs if args.compare else runs[1:]:
        print(f"--- {name} kernels", flush=True)
        with context():
            out[name] = run(args)
    if args.compare:
        (s0, t0), (s1, t1) = out["previous"], out["current"]
        gap = max(abs(a.alpha - b.alpha) / max(a.stderr, 1e-300)
                  for a, b in zip(s0, s1, strict=True))
        print(f"\nstaircase: previous {t0:.1f} s, current {t1:.1f} s: ratio {t0 / t1:.2f}; "
              f"largest |Δα| / stderr {gap:.2e}")


if __name__ == "__main__":
    main()
