"""Benchmark: a 16-point threshold grid in-process, on the local process pool and on a Dask
LocalCluster, and the overhead per task of each executor.

The grid is the depth-2, L = 2 attention model at 16 skip strengths 0.25:4:0.25 (resolution
1 by default, about 1.3 s per point).  Each executor runs it twice: "cold" includes starting
the workers, importing the package and loading the numba kernels there; "warm" is the second
run on the same workers.  The overhead per task is the wall time of ``--noop`` trivial tasks
divided by their number.  The rows of every run are checked to be identical.

    python benchmarks/bench_executors.py [--resolution 1] [--workers 2] [--noop 400]
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from dataclasses import asdict

import numba

from asymptotics.executors import (
    DaskExecutor,
    ProcessExecutor,
    SerialExecutor,
    Task,
    import_distributed,
    noop_task,
)
from asymptotics.tables import threshold_task, threshold_task_key
from asymptotics.thresholds import ThresholdSettings
from smi.options import parse_values


def grid_tasks(resolution: int) -> list[Task]:
    settings = ThresholdSettings(resolution=resolution)
    tasks = []
    for c in parse_values("0.25:4:0.25", "skip"):
        job = dict(model="attention", depth=2, seq_len=2, skip=c, beta=1.0)
        tasks.append(Task(threshold_task_key(job), {"job": job, "settings": asdict(settings),
                                                   "staircase": None, "alpha": None}))
    return tasks


def timed(executor, fn, tasks) -> tuple[float, dict]:
    t0 = time.perf_counter()
    out = dict(executor.map_unordered(fn, tasks))
    return time.perf_counter() - t0, out


def _numba_threads(n: int) -> int:
    numba.set_num_threads(n)
    return numba.get_num_threads()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--resolution", type=int, default=1)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--noop", type=int, default=400)
    args = ap.parse_args()
    tasks = grid_tasks(args.resolution)
    noops = [Task(str(i), {"i": i}) for i in range(args.noop)]
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python "
          f"{platform.python_version()}, numba {numba.__version__}; load average before: "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    results, rows = {}, {}

    serial = SerialExecutor()
    threshold_task(tasks[0].params)  # compile / load the numba kernels in this process
    default_threads = numba.config.NUMBA_NUM_THREADS
    for threads in (default_threads, 1):
        _numba_threads(threads)
        t, rows[f"serial-{threads}"] = timed(serial, threshold_task, tasks)
        results[f"serial, in-process, {threads} numba thread(s)"] = (t, None)
    _numba_threads(default_threads)
    t_noop, _ = timed(serial, noop_task, noops)
    overhead = {"serial": t_noop / len(noops)}

    with ProcessExecutor(args.workers) as pool:
        cold, rows["pool-cold"] = timed(pool, threshold_task, tasks)
        warm, rows["pool-warm"] = timed(pool, threshold_task, tasks)
        t_noop, _ = timed(pool, noop_task, noops)
    results[f"local process pool, {args.workers} workers x 1 numba thread"] = (warm, cold)
    overhead["process pool"] = t_noop / len(noops)

    distributed = import_distributed()
    t0 = time.perf_counter()
    with distributed.LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as lc, \
            distributed.Client(lc) as client:
        start = time.perf_counter() - t0
        client.run(_numba_threads, 1)
        ex = DaskExecutor(client=client)
        cold, rows["dask-cold"] = timed(ex, threshold_task, tasks)
        warm, rows["dask-warm"] = timed(ex, threshold_task, tasks)
        t_noop, _ = timed(ex, noop_task, noops)
    results[f"Dask LocalCluster, {args.workers} workers x 1 thread"] = (warm, cold)
    overhead["dask LocalCluster"] = t_noop / len(noops)

    ref = rows["serial-1"]
    same = all(r == ref for r in rows.values())
    base = results[f"serial, in-process, {default_threads} numba thread(s)"][0]
    print(f"\n16-point threshold grid (depth 2, L = 2, skip 0.25:4:0.25, resolution "
          f"{args.resolution}); rows identical across executors: {same}")
    print(f"Dask LocalCluster start: {start:.1f} s\n")
    print("| executor | warm wall | speed-up vs serial | cold wall (workers started, "
          "kernels loaded) |")
    print("|---|---|---|---|")
    for name, (warm, cold) in results.items():
        cold_s = "-" if cold is None else f"{cold:.1f} s"
        print(f"| {name} | {warm:.1f} s | {base / warm:.2f}x | {cold_s} |")
    print(f"\noverhead per task ({len(noops)} no-op tasks):")
    for name, t in overhead.items():
        print(f"| {name} | {t * 1e3:.2f} ms |")
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
