"""Command-line interface ``smi`` (also ``python -m asymptotics``): a thin layer over the API."""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import sys
import time

from . import __version__
from .executors import ExecutorError, Task, make_executor
from .models import MODELS, make_channel, parse_values
from .staircase import StaircaseSettings, staircase_table
from .sweeps import (
    Journal,
    ResumeError,
    add_executor_arguments,
    check_writable,
    executor_options,
    threshold_task,
    threshold_task_key,
)
from .thresholds import ThresholdSettings, weak_recovery_thresholds

DEFAULT_SKIPS = "0.25,0.5,0.75,1,1.5,2,3,4"
ROW_KEYS = ["model", "depth", "seq_len", "skip", "beta", "direction", "alpha_c", "stderr", "method"]


class UsageError(Exception):
    """Bad command-line input: reported on one line with exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit status 2
        raise UsageError(f"{self.prog}: error: {message}")


def _add_threshold_parser(sub) -> None:
    p = sub.add_parser(
        "thresholds",
        help="weak-recovery thresholds alpha_c at Q = 0",
        description="Weak-recovery thresholds α_c = 1/ρ(F) of each direction (layer), with "
        "error estimates (THEORY.md §5).",
    )
    p.add_argument("--model", default="attention", choices=MODELS)
    p.add_argument("--depth", nargs="+", default=["2"],
                   help="attention depth (>= 1); several values make a grid")
    p.add_argument("--seq-len", nargs="+", default=["2"],
                   help="tokens per sequence L (>= 2 for attention); several make a grid")
    p.add_argument(
        "--skip",
        nargs="+",
        default=[DEFAULT_SKIPS],
        help="skip strengths c >= 0: values, comma lists or start:stop:step "
        f"(default {DEFAULT_SKIPS})",
    )
    p.add_argument("--beta", nargs="+", default=["1"],
                   help="softmax inverse temperature (> 0); several values make a grid")
    p.add_argument("--noise", default="0.1", help="noise variance Δ of the linear channel")
    p.add_argument("--method", default="auto", choices=["auto", "quadrature", "mc"])
    p.add_argument(
        "--resolution",
        default="1",
        help="grid refinement level (each level doubles nodes per axis; default 1)",
    )
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
    p.add_argument("--format", default="table", choices=["table", "csv", "json"])
    p.add_argument("--output", default=None,
                   help="write to FILE instead of stdout; while the grid runs FILE holds JSON "
                   "lines, appended per grid point")
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted grid from --output (computes missing points)")
    add_executor_arguments(p)
    p.set_defaults(func=run_thresholds)


def _int(text: str, name: str, minimum: int) -> int:
    try:
        v = int(text)
    except ValueError:
        raise UsageError(f"smi: error: {name}: expected an integer, got {text!r}") from None
    if v < minimum:
        raise UsageError(f"smi: error: {name}: must be >= {minimum}, got {v}")
    return v


def _ints(text_list, name: str, minimum: int) -> list[int]:
    out = []
    for v in _values(text_list, name):
        if v != int(v):
            raise UsageError(f"smi: error: {name}: expected integers, got {v}")
        if v < minimum:
            raise UsageError(f"smi: error: {name}: must be >= {minimum}, got {int(v)}")
        out.append(int(v))
    return out


def _values(text_list, name: str) -> list[float]:
    try:
        vals = [v for t in text_list for v in parse_values(t, name)]
    except ValueError as exc:
        raise UsageError(f"smi: error: {exc}") from None
    return vals


def _threshold_jobs(args) -> tuple[list[dict], ThresholdSettings]:
    """Validate every option and list the settings to compute, before any work."""
    depths = _ints(args.depth, "--depth", 1)
    seq_lens = _ints(args.seq_len, "--seq-len", 2 if args.model == "attention" else 1)
    betas = _values(args.beta, "--beta")
    noise = _values([args.noise], "--noise")
    skips = _values(args.skip, "--skip")
    if not betas or any(b <= 0 for b in betas):
        raise UsageError(f"smi: error: --beta: values must be > 0, got {args.beta}")
    if len(noise) != 1 or noise[0] < 0:
        raise UsageError(f"smi: error: --noise: must be one value >= 0, got {args.noise!r}")
    if any(c < 0 for c in skips):
        raise UsageError(f"smi: error: --skip: values must be >= 0, got {args.skip}")
    resolution = _int(args.resolution, "--resolution", 0)
    mc = _int(args.mc_samples, "--mc-samples", 64)
    seed = _int(args.seed, "--seed", 0)
    settings = ThresholdSettings(
        method=args.method, resolution=resolution, mc_samples=mc, seed=seed
    )
    args.staircase_log2 = _int(args.staircase_points, "--staircase-points", 6)
    if args.staircase and args.model != "attention":
        raise UsageError("smi: error: --staircase: only defined for --model attention")
    if args.alpha is not None:
        alpha = _values([args.alpha], "--alpha")
        if len(alpha) != 1 or alpha[0] <= 0:
            raise UsageError(f"smi: error: --alpha: must be one value > 0, got {args.alpha!r}")
        args.alpha_value = alpha[0]
    else:
        args.alpha_value = None
    if args.model != "attention":
        skips = [skips[0]] if skips else [1.0]
        jobs = [dict(model=args.model, noise=noise[0])]
    else:
        if args.method == "quadrature" and max(depths) * max(seq_lens) > 4:
            raise UsageError(
                "smi: error: --method: quadrature needs depth·seq_len <= 4; use --method mc"
            )
        jobs = [
            dict(model="attention", depth=depth, seq_len=seq_len, skip=c, beta=beta)
            for depth in depths for seq_len in seq_lens for c in skips for beta in betas
        ]
    return jobs, settings


def compute_threshold_rows(
    jobs, settings, progress=None, staircase: StaircaseSettings | None = None,
    alpha: float | None = None,
) -> list[dict]:
    """Rows of ``smi thresholds``; with ``staircase`` settings the staircase columns too,
    with ``alpha`` a ``learnable_at_alpha`` column (using the staircase value if present).
    """
    rows = []
    t0 = time.perf_counter()
    for i, job in enumerate(jobs):
        channel = make_channel(**job)
        if staircase is not None:
            model_rows = staircase_table(channel, staircase, settings)
        else:
            model_rows = weak_recovery_thresholds(channel, settings).rows(job["model"])
        if alpha is not None:
            for r in model_rows:
                threshold = r.get("staircase_alpha", r["alpha_c"])
                r["alpha"] = alpha
                r["learnable_at_alpha"] = bool(alpha > threshold)
        for r in model_rows:
            if job["model"] != "attention":
                r["skip"] = None
                r["beta"] = None
        rows.extend(model_rows)
        if progress is not None:
            progress(i + 1, len(jobs), job, time.perf_counter() - t0)
    return rows


def _progress_printer(stream):
    def show(done, total, job, elapsed):
        if total > 1 and elapsed > 2.0:
            label = ", ".join(f"{k}={v}" for k, v in job.items() if k != "model")
            eta = elapsed / done * (total - done)
            print(
                f"[{done}/{total}] {label}  {elapsed:.1f}s elapsed, ~{eta:.0f}s left",
                file=stream,
                flush=True,
            )

    return show


EXTRA_KEYS = ["staircase_alpha", "staircase_stderr", "staircase_status", "staircase_order",
              "staircase_learned", "alpha", "learnable_at_alpha"]


def format_rows(rows: list[dict], fmt: str) -> str:
    keys = list(ROW_KEYS) + [k for k in EXTRA_KEYS if any(k in r for r in rows)]
    if any("noise" in r for r in rows):
        keys.insert(5, "noise")
    if fmt == "json":
        clean = [{k: _json_value(r.get(k)) for k in keys + ["status"] if k in r} for r in rows]
        return json.dumps(clean, indent=1) + "\n"
    if fmt == "csv":
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=keys + ["status"], extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: r.get(k) for k in keys + ["status"]})
        return buf.getvalue()
    header = keys
    lines = []
    for r in rows:
        cells = []
        for k in header:
            v = r.get(k)
            if k == "alpha_c":
                cells.append(_fmt_alpha(v, r.get("stderr")))
            elif k == "staircase_alpha":
                cells.append(_fmt_alpha(v, r.get("staircase_stderr")))
            elif k in ("stderr", "staircase_stderr"):
                cells.append(f"{v:.1e}" if isinstance(v, float) else str(v))
            elif v is None:
                cells.append("-")
            else:
                cells.append(str(v))
        lines.append(cells)
    widths = [max(len(h), *(len(c[i]) for c in lines)) for i, h in enumerate(header)]
    out = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))]
    out += ["  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) for cells in lines]
    return "\n".join(out) + "\n"


def _fmt_alpha(v, err) -> str:
    if v is None:
        return "-"
    if math.isinf(v):
        return "inf"
    if not err or err <= 0:
        return f"{v:.10g}"
    digits = max(1, min(12, int(-math.floor(math.log10(err))) + 1))
    return f"{v:.{digits}f}"


def _json_value(v):
    if isinstance(v, float) and math.isinf(v):
        return "inf"
    return v


def _threshold_tasks(jobs, settings, stair, alpha) -> list[Task]:
    """One task per distinct grid point, in grid order."""
    from dataclasses import asdict

    tasks: dict[str, Task] = {}
    for job in jobs:
        key = threshold_task_key(job)
        if key not in tasks:
            tasks[key] = Task(key, {"job": job, "settings": asdict(settings),
                                    "staircase": asdict(stair) if stair else None,
                                    "alpha": alpha})
    return list(tasks.values())


def _open_journal(args, task_of, whole_tasks: bool = True):
    if args.resume and not args.output:
        raise UsageError("smi: error: --resume: needs --output")
    if not args.output:
        return None
    why = check_writable(args.output)
    if why is not None:
        raise UsageError(f"smi: error: --output: cannot write {args.output!r}: {why}")
    try:
        return Journal(args.output, args.resume, task_of, whole_tasks)
    except ResumeError as exc:
        raise UsageError(f"smi: error: --resume: {exc}") from None


def run_thresholds(args) -> int:
    jobs, settings = _threshold_jobs(args)
    stair = StaircaseSettings(log2_points=args.staircase_log2, seed=settings.seed) \
        if args.staircase else None
    tasks = _threshold_tasks(jobs, settings, stair, args.alpha_value)
    executor_opts = _checked_executor_options(args, len(tasks))
    if args.resume and not args.output:
        raise UsageError("smi: error: --resume: needs --output")
    with _make(executor_opts) as ex:  # a cluster is connected to before any file is touched
        journal = _open_journal(args, threshold_task_key)
        results = journal.by_task() if journal is not None else {}
        todo = [t for t in tasks if t.key not in results]
        progress = _progress_printer(sys.stderr)
        job_of = {t.key: t.params["job"] for t in tasks}
        t0 = time.perf_counter()
        if todo:
            for key, rows in ex.map_unordered(threshold_task, todo):
                results[key] = rows
                if journal is not None:
                    journal.append(rows)
                done = sum(t.key in results for t in tasks)
                progress(done, len(tasks), job_of[key], time.perf_counter() - t0)
    rows = [dict(r) for job in jobs for r in results[threshold_task_key(job)]]
    text = format_rows(rows, args.format)
    if journal is not None:
        journal.finish(text)
    else:
        sys.stdout.write(text)
    return 0


def _checked_executor_options(args, n_tasks: int) -> dict:
    try:
        return executor_options(args, n_tasks)
    except ExecutorError as exc:
        raise UsageError(f"smi: error: {exc}") from None


def _make(opts: dict):
    try:
        return make_executor(**opts)
    except ExecutorError as exc:
        raise UsageError(f"smi: error: {exc}") from None


def _add_curve_parser(sub) -> None:
    p = sub.add_parser(
        "curve",
        help="SE overlap curves over alpha (AMP and Bayes-optimal branches)",
        description="State-evolution fixed points over α from the uninformed (AMP) and "
        "informed starts, free entropy, plug-in and Bayes-optimal generalisation errors.",
    )
    p.add_argument("--model", default="attention", choices=MODELS)
    p.add_argument("--depth", default="2", help="value or list: several settings make a grid")
    p.add_argument("--seq-len", default="2", help="value or list")
    p.add_argument("--skip", default="1", help="value, comma list or start:stop:step")
    p.add_argument("--beta", default="1", help="value or list")
    p.add_argument("--noise", default="0.1", help="value or list (linear channel)")
    p.add_argument("--alphas", default="0.1:2:0.1", help="values, comma list or start:stop:step")
    p.add_argument("--branch", default="both", choices=["amp", "bayes", "both"])
    p.add_argument("--prior", default="gaussian", choices=["gaussian", "rademacher"])
    p.add_argument("--transitions", action="store_true",
                   help="locate first-order transitions bracketed by the sweep (bisection)")
    p.add_argument("--tol", default="1e-7", help="fixed-point tolerance on max|ΔQ|")
    p.add_argument("--max-iter", default="500")
    p.add_argument("--damping", default="0.5")
    p.add_argument("--sobol-log2", default="12",
                   help="log2 of the outer randomised-QMC points (Monte Carlo channels)")
    p.add_argument("--seed", default="0")
    p.add_argument("--device", default="numba", choices=["numba", "cpu", "gpu"],
                   help="attention fibre integrals: numba kernels (default), numpy, or cupy "
                   "on a CUDA GPU")
    p.add_argument("--format", default="table", choices=["table", "csv", "json"])
    p.add_argument("--output", default=None,
                   help="JSON-lines file the rows are appended to as they are computed")
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted sweep from --output")
    add_executor_arguments(p)
    p.set_defaults(func=run_curve)


CURVE_KEYS = ["alpha", "branch", "Q", "Q_stderr", "free_entropy", "free_entropy_stderr",
              "gen_error_plugin", "gen_error_plugin_stderr", "gen_error_bayes",
              "gen_error_bayes_stderr", "converged", "iterations"]


def run_curve(args) -> int:
    from .curves import locate_transitions, progress_bar, sweep_settings
    from .priors import make_prior
    from .state_evolution import SESettings

    depths = _ints([args.depth], "--depth", 1)
    seq_lens = _ints([args.seq_len], "--seq-len", 2 if args.model == "attention" else 1)
    skip = _values([args.skip], "--skip")
    beta = _values([args.beta], "--beta")
    noise = _values([args.noise], "--noise")
    alphas = _values([args.alphas], "--alphas")
    for name, vals, ok in [("--skip", skip, lambda v: v >= 0), ("--beta", beta, lambda v: v > 0),
                           ("--noise", noise, lambda v: v >= 0),
                           ("--alphas", alphas, lambda v: v > 0)]:
        if not vals or not all(ok(v) for v in vals):
            raise UsageError(f"smi: error: {name}: invalid value(s) {vals}")
    tol = _values([args.tol], "--tol")[0]
    damping = _values([args.damping], "--damping")[0]
    if tol <= 0:
        raise UsageError("smi: error: --tol: must be > 0")
    if not 0 < damping <= 1:
        raise UsageError("smi: error: --damping: must be in (0, 1]")
    max_iter = _int(args.max_iter, "--max-iter", 1)
    if args.device == "gpu":
        from .backend import gpu_available

        if not gpu_available():
            raise UsageError("smi: error: --device gpu: cupy with a CUDA device is not "
                             "available (pip install -e '.[gpu]')")
    settings = SESettings(sobol_log2=_int(args.sobol_log2, "--sobol-log2", 6),
                          seed=_int(args.seed, "--seed", 0), device=args.device)
    if args.resume and not args.output:
        raise UsageError("smi: error: --resume: needs --output")
    if args.model == "attention":
        grid = [dict(depth=d, seq_len=n, skip=c, beta=b)
                for d in depths for n in seq_lens for c in skip for b in beta]
    elif args.model == "linear":
        grid = [dict(noise=v) for v in noise]
    else:
        grid = [{}]
    varying = [k for k in (grid[0] if grid else {}) if len({g[k] for g in grid}) > 1]
    specs = []
    for g in grid:
        spec = dict(model=args.model, depth=depths[0], seq_len=seq_lens[0], skip=skip[0],
                    beta=beta[0], noise=noise[0])
        spec.update(g)
        try:
            make_channel(**spec)
        except ValueError as exc:
            raise UsageError(f"smi: error: {exc}") from None
        specs.append(({k: g[k] for k in varying}, spec))
    prior = make_prior(args.prior)
    if args.transitions and args.branch != "both":
        raise UsageError("smi: error: --transitions: needs --branch both")
    n_chains = len(specs) * (1 if args.branch == "amp" else 2)
    opts = _checked_executor_options(args, n_chains)
    if args.output:
        why = check_writable(args.output)
        if why is not None:
            raise UsageError(f"smi: error: --output: cannot write {args.output!r}: {why}")
    with _make(opts) as ex:
        try:
            rows = sweep_settings(specs, alphas, args.branch, settings=settings,
                                  damping=damping, tol=tol, max_iter=max_iter,
                                  output=args.output, resume=args.resume,
                                  progress=progress_bar(sys.stderr), prior=prior, executor=ex)
        except ResumeError as exc:  # raised when the file is read, before any work
            raise UsageError(f"smi: error: --resume: {exc}") from None
    sys.stdout.write(_format_curve(rows, args.format, varying))
    if args.transitions:
        for tag, spec in specs:
            mine = [r for r in rows if all(r.get(k) == v for k, v in tag.items())]
            label = "".join(f"{k}={v} " for k, v in tag.items())
            for t in locate_transitions(make_channel(**spec), mine, prior, settings=settings):
                flag = "" if t.reliable else "  (free entropies equal within their error)"
                print(f"{label}{t.kind}: alpha = {t.alpha:.5f} ± {t.error:.1e}  "
                      f"(bracket {t.bracket[0]:.5f}..{t.bracket[1]:.5f}){flag}")
    return 0


def _format_curve(rows: list[dict], fmt: str, setting_keys: list[str] | None = None) -> str:
    setting_keys = list(setting_keys or [])
    if fmt == "json":
        return json.dumps(rows, indent=1) + "\n"
    if fmt == "csv":
        buf = io.StringIO()
        keys = setting_keys + CURVE_KEYS
        w = csv.DictWriter(buf, fieldnames=keys, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: json.dumps(r[k]) if k in ("Q", "Q_stderr") else r[k]
                        for k in keys})
        return buf.getvalue()
    prefix = "".join(f"{k:<9}" for k in setting_keys)
    lines = [prefix + "alpha    branch    diag(Q) ± stderr                      free_entropy"
             "        gen_plugin         gen_bayes          conv  iters"]
    for r in rows:
        q = ", ".join(f"{r['Q'][i][i]:.5f}±{r['Q_stderr'][i][i]:.0e}" for i in range(len(r["Q"])))
        lines.append(
            "".join(f"{r[k]!s:<9}" for k in setting_keys) +
            f"{r['alpha']:<8.4g} {r['branch']:<9} {q:<37} "
            f"{r['free_entropy']:>9.6f}±{r['free_entropy_stderr']:.0e} "
            f"{r['gen_error_plugin']:.5f}±{r['gen_error_plugin_stderr']:.0e} "
            f"{r['gen_error_bayes']:.5f}±{r['gen_error_bayes_stderr']:.0e} "
            f"{str(r['converged']):<5} {r['iterations']}"
        )
    return "\n".join(lines) + "\n"


def _add_simulate_parser(sub) -> None:
    p = sub.add_parser("simulate", help="finite-size simulations (AMP, training)")
    simsub = p.add_subparsers(dest="simulation", required=True, parser_class=_Parser)
    from simulators.train_cli import add_train_parser

    add_train_parser(simsub)
    try:
        from simulators.amp_cli import add_amp_parser
    except ImportError:  # pragma: no cover - present once the AMP simulator lands
        add_amp_parser = None
    if add_amp_parser is not None:
        add_amp_parser(simsub)


def _add_experiment_parser(sub) -> None:
    from simulators.experiment_cli import add_experiment_parser

    add_experiment_parser(sub)


def _add_plot_parser(sub) -> None:
    p = sub.add_parser(
        "plot",
        help="publication figures from result files",
        description="Figures from result files of smi curve, smi thresholds, smi simulate amp "
        "and smi simulate train (types detected by their keys). Nothing is smoothed.",
    )
    p.add_argument("kind", choices=["overlaps", "errors", "phase-diagram", "dynamics"])
    p.add_argument("results", nargs="+", help="result files (JSON, JSON lines or CSV)")
    p.add_argument("--output", required=True, help="figure file, .pdf or .png")
    p.add_argument("--width", default="single", choices=["single", "double"],
                   help="one-column (3.4 in) or two-column (7 in) figure")
    p.add_argument("--skip", default=None,
                   help="overlaps/errors: the skip strength whose thresholds are marked "
                   "when the thresholds file holds several")
    p.set_defaults(func=run_plot)


def run_plot(args) -> int:
    from validation.plots import PlotInputError, make_plot

    skip = None
    if args.skip is not None:
        vals = _values([args.skip], "--skip")
        if len(vals) != 1:
            raise UsageError("smi: error: --skip: one value")
        skip = vals[0]
    try:
        make_plot(args.kind, args.results, args.output, args.width, skip)
    except PlotInputError as exc:
        raise UsageError(f"smi plot: error: {exc}") from None
    print(f"wrote {args.output}", file=sys.stderr)
    return 0


def _add_validate_parser(sub) -> None:
    p = sub.add_parser(
        "validate",
        help="run the validation battery and write a report",
        description="Closed forms, identities, published data, SE against AMP and training: "
        "writes DIR/report.md and figures, one PASS/FAIL line per check.",
    )
    p.add_argument("--budget", default="quick", choices=["quick", "full"])
    p.add_argument("--output", required=True, help="directory for report.md and figures")
    p.set_defaults(func=run_validate)


def run_validate(args) -> int:
    from validation.report import run_validation

    try:
        summary = run_validation(args.budget, args.output, stream=sys.stderr)
    except OSError as exc:
        raise UsageError(f"smi validate: error: --output: {exc}") from None
    print(f"{summary['passed']} PASS, {summary['failed']} FAIL "
          f"({summary['failed'] - summary['undocumented_failures']} documented disagreements "
          f"with published numbers) in {summary['wall_s']:.0f} s; report: {summary['report']}")
    return 0 if summary["undocumented_failures"] == 0 else 1


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="smi",
        description="Asymptotics of sequence multi-index models and deep attention networks.",
    )
    parser.add_argument("--version", action="version", version=f"smi {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    _add_threshold_parser(sub)
    _add_curve_parser(sub)
    _add_simulate_parser(sub)
    _add_experiment_parser(sub)
    _add_plot_parser(sub)
    _add_validate_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        return int(args.func(args) or 0)
    except UsageError as exc:
        print(str(exc).splitlines()[0], file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
