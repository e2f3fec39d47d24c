"""``smi thresholds``: the threshold table over a grid of settings (THEORY §5–6)."""

from __future__ import annotations

import sys
import time

import asymptotics as asy
from asymptotics.cache import default_cache
from asymptotics.channels.names import MODELS
from asymptotics.frames import require_extra, write_parquet
from asymptotics.results import threshold_columns

from ..options import (
    add_model_arguments,
    add_table_output_arguments,
    executor_options,
    exists_refusal,
    fail,
    integer,
    integers,
    link_job,
    one_value,
    refuse_inapplicable,
    refused_as,
    resume_refusal,
    values,
)
from ..output import command_line, format_thresholds, task_progress
from .curve import add_cache_argument

DEFAULT_SKIPS = "0.25,0.5,0.75,1,1.5,2,3,4"


NAME = "thresholds"
HELP = "weak-recovery thresholds alpha_c at Q = 0"
DESCRIPTION = ("Weak-recovery thresholds α_c = 1/ρ(F) of each direction (layer), with error "
               "estimates (THEORY.md §5).")


def add_arguments(p) -> None:
    add_model_arguments(p, MODELS, skip=DEFAULT_SKIPS)
    p.add_argument("--method", default="auto", choices=["auto", "quadrature", "mc"])
    p.add_argument("--resolution", default="0",
                   help="grid refinement level (each level doubles nodes per axis; default 0: "
                   "α_c within 1e-8 relative of level 1, the errors from half-step shifted "
                   "rules cover the change to level 1)")
    p.add_argument("--mc-samples", default=str(2**15), help="outer Monte Carlo samples")
    p.add_argument("--seed", default="0", help="seed of every Monte Carlo rule")
    p.add_argument(
        "--staircase", action="store_true",
        help="add the sequential staircase: staircase_alpha, the α at which each layer starts "
        "to be learned once the layers staircase_learned are, and staircase_order, its stage "
        "(attention, Monte Carlo with standard errors; depth 2 ~20 s, depth 3 a few minutes "
        "per setting)",
    )
    p.add_argument("--staircase-points", default="11",
                   help="log2 of the outer points per group of the staircase (default 11)")
    p.add_argument("--alpha", default=None,
                   help="mark which layers are learnable at this sample ratio")
    p.add_argument("--quiet", action="store_true",
                   help="no progress on stderr (otherwise a bar on a terminal, one line per "
                   "finished task in a log)")
    add_table_output_arguments(
        p, "write to FILE instead of stdout; while the grid runs FILE holds JSON lines, "
        "appended per grid point")
    fmt = next(a for a in p._actions if a.dest == "format")
    fmt.choices = [*fmt.choices, "parquet"]
    fmt.help = ("table, csv or json; parquet (with --output only: a binary file, the "
                "settings record in its metadata; needs the data extra)")
    add_cache_argument(p)


def parse(args) -> tuple:
    """Validate every option and list the settings to compute, before any work: the jobs,
    the threshold and staircase settings, and the α of ``--alpha``."""
    link = link_job(args)
    depths = integers(args.depth, "--depth", 1)
    seq_lens = integers(args.seq_len, "--seq-len", 2 if args.model == "attention" else 1)
    refuse_inapplicable(args, ("--depth", "--skip", "--beta", "--staircase"),
                        args.model == "attention", "--model attention")
    if link is None:
        refuse_inapplicable(args, ("--seq-len",), args.model == "attention",
                            "--model attention or --link")
    betas = values(args.beta, "--beta")
    noise = values(args.noise, "--noise")
    skips = values(args.skip, "--skip")
    if not betas or any(b <= 0 for b in betas):
        raise fail("--beta", f"values must be > 0, got {args.beta}")
    if len(noise) != 1 or noise[0] < 0:
        raise fail("--noise", f"must be one value >= 0, got {args.noise!r}")
    if any(c < 0 for c in skips):
        raise fail("--skip", f"values must be >= 0, got {args.skip}")
    refuse_inapplicable(args, ("--noise",), args.model in ("linear", "link"),
                        "--model linear or --link")
    refuse_inapplicable(args, ("--staircase-points",), args.staircase, "--staircase")
    refuse_inapplicable(args, ("--mc-samples",), args.method != "quadrature",
                        "--method auto or mc")
    with refused_as("--resolution"):
        settings = asy.ThresholdSettings(
            method=args.method, resolution=integer(args.resolution, "--resolution", 0),
            mc_samples=integer(args.mc_samples, "--mc-samples", 64),
            seed=integer(args.seed, "--seed", 0))
    stair_log2 = integer(args.staircase_points, "--staircase-points", 6)
    alpha = None
    if args.alpha is not None:
        alpha = one_value(args.alpha, "--alpha", lambda a: a > 0, "> 0")
    if (args.model == "attention" and args.method == "quadrature"
            and max(depths) * max(seq_lens) > 4):
        raise fail("--method", "quadrature needs depth·seq_len <= 4; use --method mc")
    jobs = ([link] if link is not None
            else asy.threshold_jobs(args.model, depths, seq_lens, skips, betas, noise[0]))
    stair = None
    if args.staircase:
        with refused_as("--staircase-points"):
            stair = asy.StaircaseSettings(log2_points=stair_log2, seed=settings.seed)
    for job in jobs:  # every size of the grid, before any work
        with refused_as("--depth/--seq-len/--resolution/--mc-samples/--staircase-points"):
            asy.check_threshold_job(job, settings, stair)
    return jobs, settings, stair, alpha


def run(args) -> int:
    jobs, settings, stair, alpha = parse(args)
    tasks = asy.threshold_tasks(jobs, settings, stair, alpha,
                                None if args.no_cache else default_cache())
    opts = executor_options(args, len(tasks))
    if (getattr(args, "workers", None) is None and opts.get("kind") == "process"
            and asy.table_workers(jobs, settings, stair) == 1):
        opts = {"kind": "serial", "workers": 1}  # see asymptotics.tables.table_workers
    if args.resume and not args.output:
        raise fail("--resume", "needs --output")
    if args.format == "parquet":
        if not args.output:
            raise fail("--format", "parquet is a binary format: needs --output FILE")
        try:
            require_extra("pyarrow")
        except ImportError as exc:
            raise fail("--format parquet", str(exc)) from None
    header = asy.make_header("thresholds", asy.table_settings(jobs, settings, stair, alpha),
                             command_line(args))
    with asy.make_executor(**opts) as ex:  # a cluster is connected to before any file is touched
        journal = open_journal(args, asy.threshold_task_key, header)
        results = journal.by_task() if journal is not None else {}
        todo = [t for t in tasks if t.key not in results]
        progress = task_progress(sys.stderr, quiet=args.quiet)
        job_of = {t.key: t.params["job"] for t in tasks}
        t0 = time.perf_counter()
        for key, rows in ex.map_unordered(asy.threshold_task, todo) if todo else ():
            results[key] = rows
            if journal is not None:
                journal.append(rows)
            done = sum(t.key in results for t in tasks)
            progress(done, len(tasks), job_of[key], time.perf_counter() - t0)
    rows = [dict(r) for job in jobs for r in results[asy.threshold_task_key(job)]]
    if args.format == "parquet":
        write_parquet(rows, args.output, header, threshold_columns(rows) + ["status"])
        return 0
    text = format_thresholds(rows, args.format, header if journal is not None else None)
    if journal is not None:
        journal.finish(text)
    else:
        sys.stdout.write(text)
    return 0


def open_journal(args, task_of, header: dict) -> asy.Journal | None:
    """The ``--output`` journal (read back with ``--resume``), or None without --output."""
    if args.resume and not args.output:
        raise fail("--resume", "needs --output")
    if args.resume and args.overwrite:
        raise fail("--overwrite", "contradicts --resume")
    if not args.output:
        return None
    why = asy.check_writable(args.output)
    if why is not None:
        raise fail("--output", f"cannot write {args.output!r}: {why}")
    try:
        return asy.Journal(args.output, args.resume, task_of, True, header, args.overwrite)
    except asy.OutputExistsError:
        raise exists_refusal(args.output) from None
    except asy.ResumeError as exc:
        raise resume_refusal(exc) from None
