"""Before/after check of a restructuring: the same commands give the same numbers.

    python benchmarks/compare_restructuring.py capture DIR   # run the commands, keep stdout
    python benchmarks/compare_restructuring.py compare A B   # numbers of A against B

The commands are those issue 13 pins: the default threshold table, a two-point AMP-branch
curve, and seeded AMP and training runs.  ``compare`` reads every number out of the two
outputs (timings dropped) and reports the largest relative difference per command; exit 1
if one exceeds ``--rtol`` (default 0: bit for bit).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import subprocess
import sys

COMMANDS = {
    "thresholds": ["thresholds", "--format", "json"],
    "curve": ["curve", "--alphas", "0.3,0.5", "--branch", "amp", "--format", "json",
              "--sobol-log2", "9"],
    "amp": ["simulate", "amp", "--dim", "200", "--alpha", "1.2", "--seeds", "2",
            "--max-iter", "8", "--n-test", "200", "--summary-only", "--workers", "1"],
    "train": ["simulate", "train", "--dim", "100", "--alpha", "4", "--seeds", "2",
              "--steps", "60", "--n-test", "200", "--log-points", "4", "--workers", "1"],
}
TIMING_KEYS = {"wall_s", "elapsed_s", "time_s", "seconds"}
NUMBER = re.compile(r"[-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?|inf|nan")


def capture(directory: str) -> None:
    os.makedirs(directory, exist_ok=True)
    for name, argv in COMMANDS.items():
        out = subprocess.run([sys.executable, "-m", "smi", *argv] if _has_smi() else
                             [sys.executable, "-m", "asymptotics", *argv],
                             capture_output=True, text=True, check=True)
        with open(os.path.join(directory, name + ".out"), "w") as fh:
            fh.write(out.stdout)
        print(f"{name}: {len(out.stdout)} characters", file=sys.stderr)


def _has_smi() -> bool:
    try:
        import smi  # noqa: F401
    except ImportError:
        return False
    return True


def _numbers(text: str) -> list[float]:
    """Every number of a command's output, JSON timing fields left out."""
    values: list[float] = []
    for line in text.splitlines():
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            obj = None
        if obj is not None:
            values.extend(_walk(obj))
        else:
            values.extend(float(m) for m in NUMBER.findall(line))
    if not values:
        try:
            values = list(_walk(json.loads(text)))
        except json.JSONDecodeError:
            pass
    return values


def _walk(obj):
    if isinstance(obj, dict):
        for k, v in obj.items():
            if k not in TIMING_KEYS:
                yield from _walk(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _walk(v)
    elif isinstance(obj, bool) or obj is None:
        return
    elif isinstance(obj, (int, float)):
        yield float(obj)
    elif isinstance(obj, str) and obj in ("inf", "-inf", "nan"):
        yield float(obj)


def compare(a: str, b: str, rtol: float) -> int:
    worst_all = 0.0
    for name in COMMANDS:
        with open(os.path.join(a, name + ".out")) as fa, open(os.path.join(b, name + ".out")) as fb:
            x, y = _numbers(fa.read()), _numbers(fb.read())
        if len(x) != len(y):
            print(f"{name}: {len(x)} numbers before, {len(y)} after")
            worst_all = math.inf
            continue
        worst = 0.0
        for u, v in zip(x, y, strict=True):
            if u == v or (math.isnan(u) and math.isnan(v)):
                continue
            worst = max(worst, abs(u - v) / max(abs(u), abs(v), 1e-300))
        worst_all = max(worst_all, worst)
        print(f"{name}: {len(x)} numbers, largest relative difference {worst:.3g}")
    return 0 if worst_all <= rtol else 1


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="what", required=True)
    c = sub.add_parser("capture")
    c.add_argument("directory")
    d = sub.add_parser("compare")
    d.add_argument("before")
    d.add_argument("after")
    d.add_argument("--rtol", type=float, default=0.0)
    args = p.parse_args()
    if args.what == "capture":
        capture(args.directory)
        return 0
    return compare(args.before, args.after, args.rtol)


if __name__ == "__main__":
    sys.exit(main())
