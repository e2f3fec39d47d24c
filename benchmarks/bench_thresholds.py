"""Benchmark: the default depth-2 threshold table (8 skip values), time and accuracy.

Times ``smi thresholds`` at its default resolution (after a warm-up that compiles the numba
kernels) and measures its accuracy against a twice-finer quadrature (resolution + 1).
Prints the wall time, the worst relative difference and the worst reported error.

    python benchmarks/bench_thresholds.py [--resolution 1]
"""

from __future__ import annotations

import argparse
import os
import platform
import time

from asymptotics.channels.registry import make_channel
from asymptotics.thresholds import ThresholdSettings, weak_recovery_thresholds
from smi.commands.thresholds import DEFAULT_SKIPS
from smi.options import parse_values


def table(resolution: int):
    out = {}
    for c in parse_values(DEFAULT_SKIPS, "skip"):
        res = weak_recovery_thresholds(
            make_channel(skip=c), ThresholdSettings(resolution=resolution)
        )
        for d in res.directions:
            out[(c, d.direction)] = (d.alpha_c, d.stderr)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--resolution", type=int, default=1)
    args = ap.parse_args()
    weak_recovery_thresholds(make_channel(), ThresholdSettings(resolution=0))  # compile
    t0 = time.perf_counter()
    base = table(args.resolution)
    t_base = time.perf_counter() - t0
    t0 = time.perf_counter()
    fine = table(args.resolution + 1)
    t_fine = time.perf_counter() - t0
    worst_rel = max(abs(base[k][0] - fine[k][0]) / fine[k][0] for k in base)
    worst_err = max(base[k][1] / base[k][0] for k in base)
    honest = all(abs(base[k][0] - fine[k][0]) <= base[k][1] + 1e-15 for k in base)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores")
    print(f"default table (resolution {args.resolution}, 16 thresholds): {t_base:.2f} s")
    print(f"twice-finer table (resolution {args.resolution + 1}): {t_fine:.2f} s")
    print(f"worst relative change under refinement: {worst_rel:.2e}")
    print(f"worst reported relative error: {worst_err:.2e}; error bars cover the change: {honest}")
    for (c, k), (a, e) in sorted(base.items()):
        print(f"  skip={c:<5} layer {k}: {a:.12g} ± {e:.1e}   (finer: {fine[(c, k)][0]:.12g})")


if __name__ == "__main__":
    main()
