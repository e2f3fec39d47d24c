"""Two curve result files, row by row: do they give the same overlaps within error?

    python benchmarks/compare_curves.py GPU.jsonl CPU.jsonl

For every (alpha, branch) present in both files (a file cut short by a time limit
compares on the rows it has) prints the largest ``|Q_a - Q_b|`` over the diagonal in units
of the combined fixed-point standard error ``sqrt(se_a^2 + se_b^2)``, and ends with the
largest such ratio and the number of rows compared.  Used by ``benchmarks/run_gpu.sh``:
the GPU curve against the CPU curve on the same machine (issue 16).
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from asymptotics.results import read_rows


def compare(path_a: str, path_b: str) -> tuple[float, int]:
    """``(largest |ΔQ| / combined stderr, rows compared)``; prints one line per row."""
    rows_b = {(r["alpha"], r["branch"]): r for r in read_rows(path_b)[0] if "Q" in r}
    worst, count = 0.0, 0
    for ra in read_rows(path_a)[0]:
        rb = rows_b.get((ra.get("alpha"), ra.get("branch")))
        if rb is None or "Q" not in ra:
            continue
        qa, qb = np.diag(np.asarray(ra["Q"], float)), np.diag(np.asarray(rb["Q"], float))
        sa = np.diag(np.asarray(ra["Q_stderr"], float))
        sb = np.diag(np.asarray(rb["Q_stderr"], float))
        gap = np.abs(qa - qb)
        # rows at perfect recovery (Q = I, zero error) agree exactly or not at all
        ratio = float(np.max(np.where(gap > 0, gap / np.maximum(np.hypot(sa, sb), 1e-300),
                                      0.0)))
        worst, count = max(worst, ratio), count + 1
        print(f"alpha {ra['alpha']:<6g} {ra['branch']:<9s} diag Q {np.round(qa, 5)} vs "
              f"{np.round(qb, 5)}  |ΔQ| / stderr {ratio:.2f}")
    print(f"{count} rows compared; largest |ΔQ| / combined stderr {worst:.2f}")
    return worst, count


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("a")
    ap.add_argument("b")
    args = ap.parse_args(argv)
    compare(args.a, args.b)
    return 0


if __name__ == "__main__":
    sys.exit(main())
