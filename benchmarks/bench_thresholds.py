"""Benchmark: the default threshold table (``smi thresholds``: depth 2, L = 2, 8 skips, 16
thresholds), cold and warm, against the code before issue 15 measured side by side.

    git archive 9d75abb | tar -x -C /tmp/smi-prev     # the previous code, once
    python benchmarks/bench_thresholds.py --previous /tmp/smi-prev [--repeats 3]

Prints, each the minimum over ``--repeats`` runs, new and previous interleaved:

* ``smi thresholds --no-cache`` end to end in a fresh process: "fresh install cold" (the
  package's numba cache files ``__pycache__/*.nbi, *.nbc`` deleted first: compilation
  included) and warm (cache files present), wall and CPU seconds, and their ratios;
* the Q = 0 kernel alone per (outer, inner) node pair, CPU time on one numba thread: the
  previous kernel (one pass with a running maximum, kept below) and the two-pass kernel on
  the same unfolded grids, the two-token kernel of ω_last = 0, L = 2 (unfolded, and folded
  with the primary weights only: what the table runs), and a floor: a loop doing only one
  ``exp`` per pair;
* the new code on a spawned pool of 2 workers (``--workers 2``), warm;
* the table's accuracy: the worst relative change from the previous default numbers and
  whether every error covers it.

Without ``--previous`` only the new code is timed.
"""

from __future__ import annotations

import argparse
import glob
import json
import math
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numba
import numpy as np
from numba import njit, prange

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from asymptotics.channels.attention import AttentionChannel  # noqa: E402
from benchmarks.previous_kernels import previous_unlearned_inner_moments  # noqa: E402


@njit(parallel=True)  # no cache: a script's cache breaks when it is imported
def exp_floor(a, logdet_sh, out):
    """One ``exp`` per (observation, node) pair and nothing else: the floor of a pair at
    Q = 0 (both signs share the weight)."""
    K = a.shape[0]
    n = logdet_sh.shape[0]
    for k in prange(K):
        acc = 0.0
        for i in range(n):
            acc += math.exp(a[k, 0] * a[k, 1] - logdet_sh[i])
        out[k] = acc


def clear_numba_cache(root: Path) -> int:
    files = [f for pat in ("*.nbi", "*.nbc")
             for f in glob.glob(str(root / "**" / "__pycache__" / pat), recursive=True)]
    for f in files:
        os.remove(f)
    return len(files)


def cli_run(root: Path, cold: bool, extra: tuple = ()) -> tuple[float, float, list]:
    """Wall and CPU seconds of ``smi thresholds --no-cache --format json`` run in ``root``."""
    if cold:
        clear_numba_cache(root / "asymptotics")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "smi", "thresholds", "--no-cache", "--quiet",
                          "--format", "json", *extra], cwd=root, capture_output=True, text=True,
                         check=True, env={**os.environ, "PYTHONPATH": str(root)}).stdout
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, json.loads(out)


def _cpu_best(fn, args, repeats: int) -> float:
    fn(*args)
    best = math.inf
    for _ in range(repeats):
        t0 = time.process_time()
        fn(*args)
        best = min(best, time.process_time() - t0)
    return best


def two_token(args: tuple) -> tuple:
    """The arguments of the general kernel less ω_last and the mean: the two-token one's."""
    return tuple(x for i, x in enumerate(args) if i not in (1, 8))


def kernel_times(repeats: int, skip: float = 1.0) -> dict:
    """CPU seconds (one numba thread) and pairs of the previous kernel and the two-pass one
    on the same unfolded grids with the embedded weights (S = 2), of the two-pass one on the
    folded grids with the primary weights (S = 1: what the table runs), and of the floor."""
    from asymptotics.channels import _attention_kernels as kern

    threads = numba.get_num_threads()
    numba.set_num_threads(1)
    out = {}
    for res in (0, 1):
        ch = AttentionChannel(skip=skip).refined(res)
        obs_full = np.ascontiguousarray(ch.output_grid(res)[0])
        obs_fold = np.ascontiguousarray(ch.output_grid(res, fold=True)[0])
        T, W = ch._inner_nodes()
        n = len(T)
        Binv, logdet = np.empty((n, 2, 2)), np.empty(n)
        kern.precompute_mixers(T, ch.skip, ch.beta, Binv, logdet)
        Tf, Wf, Binvf, logdetf = ch._folded_unlearned_nodes()
        Wf = np.ascontiguousarray(Wf[:1])

        def args_of(obs, Bi, ld, TT, WW):
            K, S = len(obs), WW.shape[0]
            return (obs, np.zeros_like(obs), 1.0, Bi, ld, TT, WW, np.empty((S, K)),
                    np.empty((S, K, 2)), np.empty((S, K, 2, 2, 2))), K * len(TT)

        full, pairs = args_of(obs_full, Binv, logdet, T, W)
        folded, pairs_f = args_of(obs_fold, Binvf, logdetf, Tf, Wf)
        out[f"previous, res {res}"] = (
            _cpu_best(previous_unlearned_inner_moments, full, repeats), pairs)
        out[f"two-pass, res {res}"] = (_cpu_best(kern.unlearned_inner_moments, full, repeats),
                                       pairs)
        out[f"two-pass folded S=1, res {res}"] = (
            _cpu_best(kern.unlearned_inner_moments, folded, repeats), pairs_f)
        out[f"two-token, res {res}"] = (
            _cpu_best(kern.null_moments_two_tokens, two_token(full), repeats), pairs)
        out[f"two-token folded S=1, res {res}"] = (
            _cpu_best(kern.null_moments_two_tokens, two_token(folded), repeats), pairs_f)
        out[f"floor (1 exp), res {res}"] = (
            _cpu_best(exp_floor, (obs_full, logdet, np.empty(len(obs_full))), repeats), pairs)
    numba.set_num_threads(threads)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--previous", default=None, help="a copy of the previous code (see above)")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    prev = Path(args.previous) if args.previous else None
    load = os.getloadavg()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python "
          f"{platform.python_version()}, load average {load[0]:.1f} / {load[1]:.1f} at start")
    roots = {"new": ROOT} | ({"previous": prev} if prev else {})
    best = {(name, cold): (math.inf, math.inf) for name in roots for cold in (True, False)}
    pool = (math.inf, math.inf)
    tables = {}
    for _ in range(args.repeats):
        for cold in (True, False):
            for name, root in roots.items():
                wall, cpu, rows = cli_run(root, cold)
                w0, c0 = best[name, cold]
                best[name, cold] = (min(w0, wall), min(c0, cpu))
                tables[name] = rows
        wall, cpu, _ = cli_run(ROOT, False, ("--workers", "2"))
        pool = (min(pool[0], wall), min(pool[1], cpu))
    for cold in (True, False):
        what = "fresh install cold" if cold else "warm (numba cache)"
        line = f"smi thresholds {what:>19}: new {best['new', cold][0]:6.2f} s wall " \
               f"{best['new', cold][1]:6.2f} CPU-s"
        if prev:
            pw, pc = best["previous", cold]
            line += (f" | previous {pw:6.2f} s wall {pc:6.2f} CPU-s | ratio "
                     f"{pw / best['new', cold][0]:.1f}x wall, {pc / best['new', cold][1]:.1f}x CPU")
        print(line)
    print(f"smi thresholds warm --workers 2 (a spawned pool): new {pool[0]:6.2f} s wall "
          f"{pool[1]:6.2f} CPU-s (the default runs in process)")
    for name, (t, pairs) in kernel_times(args.repeats).items():
        print(f"kernel {name:>30}: {pairs:.2e} pairs, {t:.3f} CPU-s, "
              f"{1e9 * t / pairs:5.1f} ns/pair (1 thread)")
    if prev:
        new, old = tables["new"], tables["previous"]
        rel = max(abs(a["alpha_c"] - b["alpha_c"]) / b["alpha_c"] for a, b in zip(new, old,
                                                                                  strict=True))
        cover = all(abs(a["alpha_c"] - b["alpha_c"]) <= a["stderr"]
                    for a, b in zip(new, old, strict=True))
        ratios = [a["stderr"] / max(abs(a["alpha_c"] - b["alpha_c"]), 1e-12 * b["alpha_c"])
                  for a, b in zip(new, old, strict=True)]
        print(f"worst relative change from the previous table: {rel:.1e}; errors cover it: "
              f"{cover}; error / change: {min(ratios):.1f} to {max(ratios):.1f} "
              f"(median {np.median(ratios):.1f})")
    load = os.getloadavg()
    print(f"load average {load[0]:.1f} / {load[1]:.1f} at the end")


if __name__ == "__main__":
    main()
