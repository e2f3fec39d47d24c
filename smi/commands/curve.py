"""``smi curve``: SE overlap curves over α on both branches (THEORY §3–4)."""

from __future__ import annotations

import sys
from dataclasses import replace

import asymptotics as asy
from asymptotics.cache import default_cache
from asymptotics.channels.names import MODELS

from ..options import (
    UsageError,
    add_model_arguments,
    add_table_output_arguments,
    executor_options,
    exists_refusal,
    fail,
    integer,
    integers,
    link_job,
    refuse_inapplicable,
    refused_as,
    resume_refusal,
    values,
)
from ..output import command_line, format_curve, progress_bar

NAME = "curve"
HELP = "SE overlap curves over alpha (AMP and Bayes-optimal branches)"
DESCRIPTION = ("State-evolution fixed points over α from the uninformed (AMP) and informed "
               "starts, free entropy, plug-in and Bayes-optimal generalisation errors.")


def add_arguments(p) -> None:
    add_model_arguments(p, MODELS)
    p.add_argument("--alphas", nargs="+", default=["0.1:2:0.1"],
                   help="values, comma lists or start:stop:step ranges")
    p.add_argument("--branch", default="both", choices=["amp", "bayes", "both"])
    p.add_argument("--prior", default="gaussian", choices=["gaussian", "rademacher"])
    p.add_argument("--transitions", action="store_true",
                   help="locate first-order transitions bracketed by the sweep (bisection)")
    p.add_argument("--tol", default="1e-7", help="fixed-point tolerance on max|ΔQ|")
    p.add_argument("--max-iter", default="500")
    p.add_argument("--damping", default="0.5")
    p.add_argument("--sobol-log2", default="12",
                   help="log2 of the outer randomised-QMC points (Monte Carlo channels)")
    p.add_argument("--target-error", default=None,
                   help="largest standard error of an overlap: rows above it are solved "
                   "again on 4x the outer points, or on a refined inner rule where its part "
                   "of the error is larger, until it is met or --max-sobol-log2 and "
                   "--max-inner-resolution are reached (rows then carry sobol_log2, "
                   "inner_resolution, error_target_met, amplification)")
    p.add_argument("--max-sobol-log2", default=None,
                   help="the largest outer rule --target-error may use (log2 of its points; "
                   "default 18)")
    p.add_argument("--max-inner-resolution", default=None,
                   help="how many times --target-error may refine the inner rule (each time "
                   "4x the nodes of a 2-D grid; default 1)")
    p.add_argument("--seed", default="0")
    p.add_argument("--device", default="cpu", choices=["cpu", "gpu", "numba"],
                   help="where the posterior integrals run: cpu (default) or gpu (cupy on a "
                   "CUDA device); 'numba' is the former name of cpu")
    p.add_argument("--cpu-kernel", default="numba", choices=["numba", "array"],
                   help="on the CPU: the compiled numba kernels (default) or the array path "
                   "the GPU runs, on numpy")
    p.add_argument("--quiet", action="store_true",
                   help="no progress on stderr (otherwise a bar on a terminal, one line per "
                   "finished task in a log)")
    add_table_output_arguments(
        p, "JSON-lines file the rows are appended to as they are computed; when done it "
        "holds the printed rows (Bayes rows included)")
    add_cache_argument(p)


def add_cache_argument(p) -> None:
    p.add_argument("--no-cache", action="store_true",
                   help="neither read nor write the cache of computed results (smi cache "
                   "info; also SMI_NO_CACHE=1)")


def run(args) -> int:
    link = link_job(args)
    depths = integers(args.depth, "--depth", 1)
    seq_lens = integers(args.seq_len, "--seq-len", 2 if args.model == "attention" else 1)
    skip = values(args.skip, "--skip")
    beta = values(args.beta, "--beta")
    noise = values(args.noise, "--noise")
    alphas = values(args.alphas, "--alphas")
    for name, vals, ok in [("--skip", skip, lambda v: v >= 0), ("--beta", beta, lambda v: v > 0),
                           ("--noise", noise, lambda v: v >= 0),
                           ("--alphas", alphas, lambda v: v > 0)]:
        if not vals or not all(ok(v) for v in vals):
            raise fail(name, f"invalid value(s) {vals}")
    tol = values([args.tol], "--tol")[0]
    damping = values([args.damping], "--damping")[0]
    if tol <= 0:
        raise fail("--tol", "must be > 0")
    if not 0 < damping <= 1:
        raise fail("--damping", "must be in (0, 1]")
    max_iter = integer(args.max_iter, "--max-iter", 1)
    device = "cpu" if args.device == "numba" else args.device
    if device == "gpu" and not asy.gpu_available():
        raise fail("--device gpu", "cupy with a CUDA device is not available "
                   "(pip install -e '.[gpu]')")
    if device == "gpu" and args.cpu_kernel != "numba":
        raise fail("--cpu-kernel", "applies to --device cpu only")
    refuse_inapplicable(args, ("--depth", "--skip", "--beta"), args.model == "attention",
                        "--model attention")
    refuse_inapplicable(args, ("--seq-len",), args.model in ("attention", "link"),
                        "--model attention or --link")
    refuse_inapplicable(args, ("--noise",), args.model in ("linear", "link"),
                        "--model linear or --link")
    with refused_as("--sobol-log2"):
        settings = asy.SESettings(sobol_log2=integer(args.sobol_log2, "--sobol-log2", 6),
                              seed=integer(args.seed, "--seed", 0), device=device,
                              cpu_kernel=args.cpu_kernel)
    target_error = None
    if args.target_error is not None:
        target_error = values([args.target_error], "--target-error")[0]
        if not target_error > 0:
            raise fail("--target-error", "must be > 0")
    refuse_inapplicable(args, ("--max-sobol-log2", "--max-inner-resolution"),
                        target_error is not None, "--target-error")
    max_log2 = max(settings.sobol_log2, 18)
    if args.max_sobol_log2 is not None:
        max_log2 = integer(args.max_sobol_log2, "--max-sobol-log2", settings.sobol_log2)
    max_inner = 1
    if args.max_inner_resolution is not None:
        max_inner = integer(args.max_inner_resolution, "--max-inner-resolution", 0)
    if args.resume and not args.output:
        raise fail("--resume", "needs --output")
    if args.resume and args.overwrite:
        raise fail("--overwrite", "contradicts --resume")
    if link is not None:
        grid = [{}]
    elif args.model == "attention":
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
        if link is not None:
            spec = dict(link)
        try:
            asy.make_channel(**spec)
        except ValueError as exc:
            raise UsageError(f"smi: error: {exc}") from None
        with refused_as("--sobol-log2/--depth/--seq-len"):
            asy.check_se(spec, settings)
        if target_error is not None:
            with refused_as("--max-sobol-log2"):
                asy.check_se(spec, replace(settings, sobol_log2=max_log2))
            if spec.get("model") == "attention" and max_inner:
                with refused_as("--max-inner-resolution"):
                    asy.check_se({**spec, "inner_resolution": max_inner},
                                 replace(settings, sobol_log2=max_log2))
        specs.append(({k: g[k] for k in varying}, spec))
    prior = asy.make_prior(args.prior)
    if args.transitions and args.branch != "both":
        raise fail("--transitions", "needs --branch both")
    n_chains = len(specs) * (1 if args.branch == "amp" else 2)
    opts = executor_options(args, n_chains)
    if args.output:
        why = asy.check_writable(args.output)
        if why is not None:
            raise fail("--output", f"cannot write {args.output!r}: {why}")
    with asy.make_executor(**opts) as ex:
        try:
            rows = asy.sweep_settings(specs, alphas, args.branch, settings=settings,
                                  damping=damping, tol=tol, max_iter=max_iter,
                                  output=args.output, resume=args.resume,
                                  progress=progress_bar(sys.stderr, args.quiet),
                                  prior=prior, executor=ex,
                                  overwrite=args.overwrite, command=command_line(args),
                                  cache=None if args.no_cache else default_cache(),
                                  target_error=target_error, max_sobol_log2=max_log2,
                                  max_inner_resolution=max_inner)
        except asy.ResumeError as exc:  # raised when the file is read, before any work
            raise resume_refusal(exc) from None
        except asy.OutputExistsError:
            raise exists_refusal(args.output) from None
    sys.stdout.write(format_curve(rows, args.format, varying))
    if target_error is not None and args.format == "table":
        sys.stdout.write(error_target_report(rows, target_error, varying))
    if args.transitions:
        for tag, spec in specs:
            mine = [r for r in rows if all(r.get(k) == v for k, v in tag.items())]
            label = "".join(f"{k}={v} " for k, v in tag.items())
            channel = asy.make_channel(**spec)
            for t in asy.locate_transitions(channel, mine, prior, settings=settings):
                flag = "" if t.reliable else "  (free entropies equal within their error)"
                print(f"{label}{t.kind}: alpha = {t.alpha:.5f} ± {t.error:.1e}  "
                      f"(bracket {t.bracket[0]:.5f}..{t.bracket[1]:.5f}){flag}")
    return 0


def error_target_report(rows: list[dict], target: float, setting_keys: list[str]) -> str:
    """Lines under the table naming the rows whose error target was not met, with the rule
    they reached and the amplification ``‖(I - J)⁻¹‖`` that explains why (a threshold's
    window: the map's slope near 1)."""
    missed = [r for r in rows if r["branch"] != "bayes" and r.get("error_target_met") is False]
    if not missed:
        return f"error target {target:g} met on every row\n"
    lines = [f"error target {target:g} not met on {len(missed)} row(s):"]
    for r in missed:
        label = "".join(f"{k}={r[k]} " for k in setting_keys)
        err = max(max(row) for row in r["Q_stderr"])
        lines.append(f"  {label}alpha {r['alpha']:g} {r['branch']}: largest stderr {err:.1e} "
                     f"at 2^{r['sobol_log2']} points, inner resolution "
                     f"{r.get('inner_resolution', 0)}, amplification {r['amplification']:.3g}")
    return "\n".join(lines) + "\n"
