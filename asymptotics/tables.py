"""Threshold tables: the Q = 0 thresholds, the sequential staircase and learnability at α,
one row per (setting, direction), over a grid of settings (THEORY §5–6).

A *job* is one channel setting, the keyword arguments of
:func:`asymptotics.channels.registry.make_channel`.  Each distinct job is one seeded task
(:func:`threshold_task`) whose rows do not depend on the executor that runs it.
"""

from __future__ import annotations

import os
from dataclasses import asdict
from typing import TYPE_CHECKING

from .cache import ResultCache, as_cache, cache_location
from .channels.registry import make_channel
from .executors import Task
from .results import plain
from .thresholds import ThresholdSettings, weak_recovery_thresholds

if TYPE_CHECKING:
    from .staircase import StaircaseSettings


def threshold_jobs(model: str, depths=(2,), seq_lens=(2,), skips=(1.0,), betas=(1.0,),
                   noise: float = 0.1) -> list[dict]:
    """The settings of a table, in grid order: attention over depth × seq_len × skip × β;
    every other model is one setting (``noise`` for the linear channel)."""
    if model != "attention":
        return [dict(model=model, noise=noise)]
    return [dict(model="attention", depth=depth, seq_len=seq_len, skip=c, beta=beta)
            for depth in depths for seq_len in seq_lens for c in skips for beta in betas]


def threshold_rows(
    job: dict, settings: ThresholdSettings, staircase: StaircaseSettings | None = None,
    alpha: float | None = None, cache: ResultCache | None = None,
) -> list[dict]:
    """Rows of one setting: the Q = 0 threshold of every direction; with ``staircase`` the
    staircase columns, with ``alpha`` a ``learnable_at_alpha`` column (against the
    staircase value where present).  With ``cache`` the rows are looked up under the job
    and every setting, and stored once computed (as plain values)."""
    if cache is None:
        return _compute_rows(job, settings, staircase, alpha)
    key = {"job": job, "settings": asdict(settings),
           "staircase": asdict(staircase) if staircase is not None else None, "alpha": alpha}
    hit = cache.get("thresholds", key)
    if hit is not None and isinstance(hit.get("rows"), list):
        return hit["rows"]
    rows = plain(_compute_rows(job, settings, staircase, alpha))
    cache.put("thresholds", key, {"rows": rows})
    return rows


def _compute_rows(job: dict, settings: ThresholdSettings,
                  staircase: StaircaseSettings | None, alpha: float | None) -> list[dict]:
    channel = make_channel(**job)
    if staircase is not None:
        from .staircase import staircase_table  # here: it loads scipy.optimize

        rows = staircase_table(channel, staircase, settings)
    else:
        rows = weak_recovery_thresholds(channel, settings).rows(job["model"])
    for r in rows:
        if alpha is not None:
            r["alpha"] = alpha
            r["learnable_at_alpha"] = bool(alpha > r.get("staircase_alpha", r["alpha_c"]))
        if job["model"] != "attention":
            r["skip"] = None
            r["beta"] = None
    return rows


def threshold_table(jobs: list[dict], settings: ThresholdSettings,
                    staircase: StaircaseSettings | None = None,
                    alpha: float | None = None,
                    cache: ResultCache | None = None) -> list[dict]:
    """Rows of every job, in job order (computed here, one job after another, or taken
    from ``cache``)."""
    return [r for job in jobs
            for r in threshold_rows(job, settings, staircase, alpha, cache)]


def table_settings(jobs: list[dict], settings: ThresholdSettings,
                   staircase: StaircaseSettings | None = None,
                   alpha: float | None = None) -> dict:
    """Everything that makes the rows of a table (the header of its result file): the
    grid of settings, the numerical settings, the staircase's and the α of
    ``learnable_at_alpha``."""
    out = {"grid": jobs, **asdict(settings), "staircase": staircase is not None, "alpha": alpha}
    if staircase is not None:
        out.update({f"staircase_{k}": v for k, v in asdict(staircase).items()})
    return out


def threshold_task_key(row_or_job: dict) -> str:
    """The grid point a threshold row (or job) belongs to."""
    if row_or_job.get("model") != "attention":
        return str(row_or_job.get("model"))
    j = row_or_job
    return (f"attention|depth={int(j['depth'])}|seq_len={int(j['seq_len'])}|"
            f"skip={float(j['skip'])!r}|beta={float(j['beta'])!r}")


def threshold_tasks(jobs: list[dict], settings: ThresholdSettings,
                    staircase: StaircaseSettings | None = None,
                    alpha: float | None = None,
                    cache: ResultCache | None = None) -> list[Task]:
    """One task of :func:`threshold_task` per distinct job, in grid order (with the folder
    of ``cache``, where given, for the task to look its rows up in)."""
    tasks: dict[str, Task] = {}
    for job in jobs:
        key = threshold_task_key(job)
        if key not in tasks:
            tasks[key] = Task(key, {"job": job, "settings": asdict(settings),
                                    "staircase": asdict(staircase) if staircase else None,
                                    "alpha": alpha, "cache": cache_location(cache)})
    return list(tasks.values())


QUICK_RESOLUTION = 1  # quadrature thresholds at resolution <= this take < ~1 s per task


def table_workers(jobs: list[dict], settings: ThresholdSettings,
                  staircase: StaircaseSettings | None = None,
                  cpus: int | None = None) -> int:
    """Local workers a table runs on by default: 1 (in this process) on a machine with
    <= 2 cores or when every task is quick (Q = 0 quadrature at resolution <= 1, no
    staircase: < ~1 s each); otherwise one per core, no more than there are jobs.

    A spawned worker imports the package and loads (cold: compiles) the numba kernels,
    1-2 s (cold ~8 CPU-s) before its first task, more than quick tasks take; on 2 cores
    the pool measured 1.2x slower warm (BENCHMARKS.md, "Default table")."""
    cpus = (os.cpu_count() or 1) if cpus is None else cpus
    quick = staircase is None and settings.method != "mc" and all(
        job.get("model") != "attention" or settings.resolution <= QUICK_RESOLUTION
        and int(job.get("depth", 2)) * int(job.get("seq_len", 2)) <= 4 for job in jobs)
    if cpus <= 2 or quick:
        return 1
    return max(1, min(len(jobs), cpus))


def threshold_task(params: dict) -> list[dict]:
    """All threshold rows of one job (``params``: job, settings, staircase and alpha as
    plain values; ``cache``: a cache folder or None), as plain JSON-able rows."""
    settings = ThresholdSettings(**params["settings"])
    stair = None
    if params.get("staircase"):
        from .staircase import StaircaseSettings

        stair = StaircaseSettings(**params["staircase"])
    return plain(threshold_rows(params["job"], settings, stair, params.get("alpha"),
                                as_cache(params.get("cache"))))


__all__ = ["table_settings", "table_workers", "threshold_jobs", "threshold_rows", "threshold_table",
           "threshold_task", "threshold_task_key", "threshold_tasks"]
