"""AMP and training sweeps as library functions: seeded tasks in, JSON-able rows out.

A sweep is a list of :class:`asymptotics.executors.Task`, one per (dimension, seed) for AMP
and per (seed, α) for training, run by any executor (serial by default) and gathered in
task order by :func:`asymptotics.executors.run_ordered`.  Each task draws its data from its
seed alone (:mod:`simulators.data`), so the rows do not depend on the executor.  The
``iter_*`` functions yield the rows as the tasks finish; ``amp_rows`` and ``training_rows``
return them as a list.  Nothing here parses options, prints or exits; bad settings raise
``ValueError`` before any work.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Callable, Iterator, Sequence

import numpy as np

from asymptotics.backend import get_namespace
from asymptotics.channels.base import Channel
from asymptotics.executors import Executor, SerialExecutor, Task, run_ordered
from asymptotics.results import plain

from .amp import AMPConfig, AMPResult, run_amp, summarise
from .attention_training import TrainConfig, layer_overlaps, make_problem, train_run
from .optimizers import parse_optimizer_name

__all__ = [
    "DEFAULT_LR",
    "amp_rows",
    "amp_task",
    "default_lr",
    "iter_amp_rows",
    "iter_training_rows",
    "summarise_training",
    "train_task",
    "training_rows",
]


def _executor(executor: Executor | None):
    """The given executor (left open) or a serial one (closed after the sweep)."""
    if executor is None:
        return SerialExecutor()
    return contextlib.nullcontext(executor)


def task_outputs(ex: Executor, fn, tasks: list[Task], done: dict | None = None,
                 record: Callable[[str, dict], None] | None = None):
    """``(task, fn(task.params))`` in task order; the outputs of tasks in ``done`` (key ->
    output, from a journal) are taken from there, each new one is passed to ``record``
    as it arrives (to journal it), so an interrupted sweep resumes where it stopped."""
    done = done or {}
    stream = run_ordered(ex, fn, [t for t in tasks if t.key not in done])
    for task in tasks:
        if task.key in done:
            yield task, done[task.key]
            continue
        _, out = next(stream)
        if record is not None:
            record(task.key, out)
        yield task, out


# ---------------------------------------------------------------------------------- AMP


def amp_task(params: dict) -> dict:
    """One (dimension, seed): its rows (iterations unless ``summary_only``, a failure
    record, the final row) and the fields of its result the summary needs."""
    ch, cfg, seed = params["channel"], AMPConfig(**params["config"]), params["seed"]
    tag = {"seed": seed, "dim": cfg.dim}
    rows = []

    def cb(rec):
        if not params["summary_only"]:
            rows.append({**tag, **rec})

    res = run_amp(ch, cfg, seed, callback=cb)
    last = res.final
    if last.get("failed"):
        rows.append({**tag, **last})  # the failure record (not passed to cb)
    tails = {}
    for key in ("m", "q"):
        tails[f"{key}_tail20_mean"], tails[f"{key}_tail20_std"] = res.tail(key)
    rows.append({"final": True, **tag, "status": res.status, "converged": res.converged,
                 "iterations": res.iterations, "psd_projections": res.psd_projections,
                 **{k: last.get(k) for k in ("M", "Q", "m", "q", "gen_error",
                                                            "delta", "g_rel_quad_error")},
                 **tails})
    result = {"seed": res.seed, "status": res.status, "converged": res.converged,
              "iterations": res.iterations, "final": last}
    return plain({"rows": rows, "result": result})


def iter_amp_rows(channel: Channel, config: AMPConfig, seeds: Sequence[int],
                  dims: Sequence[int] | None = None, *, summary_only: bool = False,
                  executor: Executor | None = None, done: dict | None = None,
                  record: Callable[[str, dict], None] | None = None) -> Iterator[dict]:
    """GAMP (:func:`simulators.amp.run_amp`) on the data of every (dimension, seed).

    ``done`` and ``record`` resume a sweep: see :func:`task_outputs`.

    ``config`` holds every setting but the dimension; ``dims`` defaults to
    ``[config.dim]``.  Rows, in order: per dimension, per seed its iteration rows (unless
    ``summary_only``), failure record and ``"final": true`` row; one ``"summary": true``
    row per dimension (mean, std, stderr over seeds), written after the next dimension's
    seeds.  (:func:`validation.amp_vs_se.iter_amp_rows_against_se` adds the SE side.)
    """
    dims = [config.dim] if dims is None else list(dims)
    seeds = list(seeds)
    if not dims or not seeds:
        raise ValueError("amp sweep: need at least one dimension and one seed")
    configs = {dim: dataclasses.replace(config, dim=dim).validate() for dim in dims}
    meta = {"model": channel.name, "channel": channel.describe(), "alpha": config.alpha,
            "device": config.device}
    tasks = [Task(f"dim={dim}|seed={seed}",
                  {"channel": channel, "config": dataclasses.asdict(configs[dim]),
                   "seed": seed, "summary_only": summary_only})
             for dim in dims for seed in seeds]
    pending = None
    with _executor(executor) as ex:
        stream = task_outputs(ex, amp_task, tasks, done, record)
        for dim in dims:
            cfg = configs[dim]
            results = []
            for _ in seeds:
                _, res = next(stream)
                yield from res["rows"]
                r = res["result"]
                results.append(AMPResult(r["seed"], r["status"], r["converged"],
                                         r["iterations"], records=[r["final"]]))
            row = {**summarise(results), **meta, "dim": dim, "n_samples": cfg.n_samples,
                   "seeds": seeds, "max_iter": cfg.max_iter, "tol": cfg.tol,
                   "damping": cfg.damping, "init_scale": cfg.init_scale,
                   "psd_projection": cfg.psd_projection, "gen_error_kind": "plug-in"}
            if pending is not None:
                yield pending
            pending = row
    yield pending


def amp_rows(channel: Channel, config: AMPConfig, seeds: Sequence[int],
             dims: Sequence[int] | None = None, *, summary_only: bool = False,
             executor: Executor | None = None) -> list[dict]:
    """The rows of :func:`iter_amp_rows`, as a list."""
    return list(iter_amp_rows(channel, config, seeds, dims, summary_only=summary_only,
                              executor=executor))


# ----------------------------------------------------------------------------- training

#: Default learning rates, for the loss normalisation of
#: :mod:`simulators.attention_training`.  Gradient entries scale like 1/D there, so
#: gradient-magnitude methods (GD, SGD, (M-)SVAG, SAM/FSAM on GD) use ``lr = c * D``;
#: scale-free methods (Adam, sign methods) use a fixed ``lr``.
DEFAULT_LR = {
    "gd": ("dim", 0.5),
    "sgd": ("dim", 0.05),  # heavy ball with momentum 0.9: effective 0.5 D
    "msvag": ("dim", 0.5),
    "svag": ("dim", 0.5),
    "adam": ("abs", 1e-2),
    "adamw": ("abs", 1e-2),
    "signgd": ("abs", 1e-2),
    "signum": ("abs", 1e-2),
}


def default_lr(name: str, dim: int) -> float:
    """The default learning rate of optimizer ``name`` at dimension ``dim``."""
    _, base = parse_optimizer_name(name)
    kind, c = DEFAULT_LR[base]
    return c * dim if kind == "dim" else c


def _n_train(alpha: float, dim: int) -> int:
    return max(1, int(round(alpha * dim)))


def train_task(params: dict) -> dict:
    """One (seed, α), every optimizer: its rows and, per optimizer (in order), the final
    record, or ``None`` when it diverged.  The data are those of ``make_problem(seed)`` at
    ``n_max`` samples cut to ``α D``, whoever runs the task."""
    base, seed, a = params["config"], params["seed"], params["alpha"]
    xp = get_namespace(params["device"])
    prob = make_problem(base, seed, xp, n_train=params["n_max"]).head(_n_train(a, base.dim))
    rows, finals = [], []
    for nm, lr in params["optimizers"]:
        cfg = dataclasses.replace(base, alpha=a, optimizer=nm, lr=lr)
        records, res = train_run(cfg, seed, xp, problem=prob)
        tag = {"seed": seed, "optimizer": nm, "alpha": a, "lr": lr}
        if not params["summary_only"] or res["diverged"]:
            for r in records:
                row = {**tag, **r}
                row.setdefault("diverged", False)
                rows.append(row)
        final = None
        if not res["diverged"]:
            last = records[-1]
            ms, qs = layer_overlaps(np.asarray(last["M"]), np.asarray(last["Q"]),
                                    base.arch.depth, base.arch.rank)
            final = {**last, "m": ms, "q": qs}
        finals.append(final)
    return plain({"rows": rows, "finals": finals})


def _stats(values):
    """Mean, std (ddof=1; 0 for one value) and standard error; ``None`` when empty."""
    a = np.asarray(values, dtype=float)
    if a.shape[0] == 0:
        return None, None, None
    mean = a.mean(axis=0)
    std = a.std(axis=0, ddof=1) if a.shape[0] > 1 else np.zeros_like(mean)
    se = std / math.sqrt(a.shape[0])
    conv = (lambda x: x.tolist()) if a.ndim > 1 else float  # noqa: E731
    return conv(mean), conv(std), conv(se)


def summarise_training(finals: list[dict], n_seeds: int, meta: dict) -> dict:
    """Summary row of one (optimizer, α) from the final records of the finished seeds:
    mean, std (ddof=1), stderr of the final losses, cosines, ``m_k``, ``q_k``."""
    row = {"summary": True, **meta, "n_seeds": n_seeds, "n_finished": len(finals),
           "diverged": n_seeds - len(finals)}
    for k in ("train_loss", "test_loss", "cosine", "m", "q"):
        mean, std, se = _stats([f[k] for f in finals])
        row[f"{k}_mean"], row[f"{k}_std"], row[f"{k}_stderr"] = mean, std, se
    return row


def iter_training_rows(config: TrainConfig, seeds: Sequence[int],
                       alphas: Sequence[float] | None = None,
                       optimizers: Sequence[tuple[str, float]] | None = None, *,
                       device: str = "cpu", summary_only: bool = False,
                       executor: Executor | None = None, done: dict | None = None,
                       record: Callable[[str, dict], None] | None = None) -> Iterator[dict]:
    """Train the network of ``config.arch`` for every (seed, α, optimizer).

    ``done`` and ``record`` resume a sweep: see :func:`task_outputs`.
    ``config`` holds every setting but the swept ones: ``alphas`` (default
    ``[config.alpha]``) and ``optimizers``, ``(name, lr)`` pairs (default
    ``[(config.optimizer, config.lr)]``).  Rows, in order: per (seed, α) and optimizer its
    logged records ``seed, optimizer, alpha, lr, step, train_loss, test_loss, M, Q,
    cosine, diverged`` (unless ``summary_only``; a divergence marker always), then one
    ``"summary": true`` row per (optimizer, α) (:func:`summarise_training`).
    """
    seeds = list(seeds)
    alphas = [config.alpha] if alphas is None else list(alphas)
    runs = [(config.optimizer, config.lr)] if optimizers is None else \
        [(str(nm), float(lr)) for nm, lr in optimizers]
    if not seeds or not alphas or not runs:
        raise ValueError("training sweep: need at least one seed, alpha and optimizer")
    for a in alphas:
        if not a > 0:
            raise ValueError(f"every alpha must be > 0, got {a}")
    for nm, lr in runs:
        parse_optimizer_name(nm)
        if not lr > 0:
            raise ValueError(f"lr must be > 0, got {lr} for {nm}")
    n_max = max(_n_train(a, config.dim) for a in alphas)
    n_min = min(_n_train(a, config.dim) for a in alphas)
    if config.batch is not None and config.batch > n_min:
        raise ValueError(f"batch {config.batch} is larger than the number of training "
                         f"sequences N = alpha*D = {n_min}")
    get_namespace(device)  # ValueError / BackendError before any work
    tasks = [Task(f"seed={seed}|alpha={a!r}",
                  {"config": config, "seed": seed, "alpha": a, "n_max": n_max,
                   "optimizers": runs, "device": device, "summary_only": summary_only})
             for seed in seeds for a in alphas]
    finals: dict[tuple[int, float], list] = {(i, a): [] for i in range(len(runs))
                                             for a in alphas}
    with _executor(executor) as ex:
        for task, res in task_outputs(ex, train_task, tasks, done, record):
            yield from res["rows"]
            for i, final in enumerate(res["finals"]):
                if final is not None:
                    finals[(i, task.params["alpha"])].append(final)
    arch = config.arch
    for i, (nm, lr) in enumerate(runs):
        for a in alphas:
            meta = {"optimizer": nm, "alpha": a, "lr": lr, "n_train": int(round(a * config.dim)),
                    "dim": config.dim, "depth": arch.depth, "rank": arch.rank,
                    "seq_len": arch.seq_len, "skip": arch.skip, "beta": arch.beta,
                    "steps": config.steps, "batch": config.batch or "full",
                    "device": device, "dtype": config.dtype}
            yield summarise_training(finals[(i, a)], len(seeds), meta)


def training_rows(config: TrainConfig, seeds: Sequence[int],
                  alphas: Sequence[float] | None = None,
                  optimizers: Sequence[tuple[str, float]] | None = None, *,
                  device: str = "cpu", summary_only: bool = False,
                  executor: Executor | None = None) -> list[dict]:
    """The rows of :func:`iter_training_rows`, as a list."""
    return list(iter_training_rows(config, seeds, alphas, optimizers, device=device,
                                   summary_only=summary_only, executor=executor))
