"""``smi simulate amp``: finite-size Bayes-AMP (GAMP) for SMI models, optionally against SE.

The lead CLI registers this sub-command with :func:`add_amp_parser` and dispatches to
:func:`run_amp`; for stand-alone use, ``python -m simulators.amp_cli ...``.  The sweep
itself is :func:`simulators.sweeps.iter_amp_rows`; this module parses, calls it and writes.

Output: JSON lines.
- with ``--compare-se``, first one ``"se": true`` line: the SE fixed point from the
  uninformed start (``Q``, its error, the plug-in error at that ``Q``);
- one line per (dimension, seed, iteration) (unless ``--summary-only``) with ``seed, dim,
  iteration, M, Q, M_raw, m, q, gen_error, V, delta, psd_projected, g_rel_quad_error``
  (``M`` in the per-layer sign gauge: ``diag M = |M_kk|``; iteration 0 is the start);
- one ``"final": true`` line per (dimension, seed) with its status and final numbers, and
  the mean and std of ``m``, ``q`` over its last 20 iterations (``*_tail20_*``: a run that
  wanders instead of converging shows it there);
- one ``"summary": true`` line per dimension with ``*_mean``, ``*_std`` (ddof=1) and
  ``*_stderr`` over seeds of ``M, Q, m, q, gen_error, iterations``, ``n_converged``,
  ``n_failed``; with ``--compare-se`` it holds ``se_comparison`` (agreement within the
  stated tolerance, :mod:`validation.amp_vs_se`), and the last one, when ``--dims`` lists
  several dimensions, holds ``finite_size_fit`` (discrepancy against 1/D).

Input errors are reported before any work, as one line on stderr naming the option, with
exit status 2.
"""

from __future__ import annotations

import argparse
import json
import sys

from asymptotics.backend import BackendError, get_namespace
from asymptotics.executors import ExecutorError, make_executor
from asymptotics.state_evolution import SESettings
from asymptotics.sweeps import add_executor_arguments, executor_options

from ._cli_common import InputError
from ._cli_common import int_at_least as _int_at_least
from ._cli_common import parse_number as _num
from .amp import MODELS, AMPConfig, make_channel
from .sweeps import iter_amp_rows


def add_amp_parser(subparsers):
    """Register the ``amp`` sub-command on an argparse ``subparsers`` object."""
    p = subparsers.add_parser(
        "amp",
        help="finite-size Bayes-AMP (GAMP) on teacher data, optionally against SE",
        description=(
            "Run Bayes-optimal GAMP (THEORY §3) on data of dimension D labelled by a planted "
            "teacher through the model's channel; log overlaps and the plug-in "
            "generalisation error per iteration (JSON lines)."
        ),
    )
    add_amp_arguments(p)
    p.set_defaults(func=run_amp)
    return p


def add_amp_arguments(p):
    a = p.add_argument
    a("--model", default="attention", help=f"one of {', '.join(MODELS)} [attention]")
    a("--depth", default="2", help="attention: number of layers (>= 1) [2]")
    a("--seq-len", default="2", help="attention: tokens per sequence L (>= 2) [2]")
    a("--skip", default="1", help="attention: skip strength c (>= 0) [1]")
    a("--beta", default="1", help="attention: softmax inverse temperature (> 0) [1]")
    a("--inner-resolution", default="0",
      help="attention: resolution of the posterior's inner rule (each step doubles the "
           "nodes per axis, cost x4 at depth 2) [0]")
    a("--noise", default="0.1", help="linear: noise variance Δ (>= 0) [0.1]")
    a("--alpha", default="1.2", help="sample ratio N/D (> 0) [1.2]")
    a("--dim", default="1000", help="input dimension D (>= 2) [1000]")
    a("--dims", default=None, help="comma list of dimensions (overrides --dim), e.g. "
                                   "250,500,1000: with --compare-se, fit the discrepancy "
                                   "against 1/D")
    a("--seeds", default="8", help="number of seeds (>= 1) [8]")
    a("--seed", default="0", help="first seed; seeds are seed, seed+1, ... [0]")
    a("--max-iter", default="50", help="GAMP iterations at most (>= 1) [50]")
    a("--damping", default="0.5", help="η in (0, 1] on g and A; 1 = undamped [0.5]")
    a("--tol", default="1e-5", help="stop when the RMS change of the entries of Ŵ < tol [1e-5]")
    a("--init-scale", default="1e-3", help="variance of the entries of the start Ŵ_0 [1e-3]")
    a("--n-test", default="2000", help="fresh test sequences for the generalisation error "
                                       "[2000]")
    a("--psd-projection", action="store_true",
      help="project A on the PSD cone when it has a negative eigenvalue (logged per "
           "iteration); without it a non-positive-definite I + A stops the run")
    a("--device", default="cpu", help="cpu or gpu (needs cupy) [cpu]")
    a("--compare-se", action="store_true",
      help="run SE from the uninformed start at the same alpha and compare")
    a("--se-sobol-log2", default=str(SESettings.sobol_log2),
      help=f"SE outer Sobol' points 2^k (Monte Carlo SE) [{SESettings.sobol_log2}]")
    a("--output", default="-", help="output file for JSON lines ('-': stdout) [-]")
    a("--summary-only", action="store_true", help="write only se, final and summary rows")
    add_executor_arguments(p)
    return p


# ----------------------------------------------------------------------- validation




def validate(args):
    """Parsed argparse strings -> checked values; raises :class:`InputError`."""
    v = {}
    if args.model not in MODELS:
        raise InputError("--model", f"expected one of {', '.join(MODELS)}, got {args.model!r}")
    v["model"] = args.model
    v["depth"] = _int_at_least(args.depth, "--depth", 1)
    v["seq_len"] = _int_at_least(args.seq_len, "--seq-len", 2)
    v["skip"] = _num(args.skip, "--skip")
    if v["skip"] < 0:
        raise InputError("--skip", f"must be >= 0, got {v['skip']}")
    v["beta"] = _num(args.beta, "--beta")
    if v["beta"] <= 0:
        raise InputError("--beta", f"must be > 0, got {v['beta']}")
    v["noise"] = _num(args.noise, "--noise")
    if v["noise"] < 0:
        raise InputError("--noise", f"must be >= 0, got {v['noise']}")
    v["inner_resolution"] = _int_at_least(args.inner_resolution, "--inner-resolution", 0)
    v["alpha"] = _num(args.alpha, "--alpha")
    if v["alpha"] <= 0:
        raise InputError("--alpha", f"must be > 0, got {v['alpha']}")
    if args.dims is not None:
        dims = [s.strip() for s in str(args.dims).split(",") if s.strip()]
        if not dims:
            raise InputError("--dims", "empty list")
        v["dims"] = [_int_at_least(d, "--dims", 2) for d in dims]
    else:
        v["dims"] = [_int_at_least(args.dim, "--dim", 2)]
    for d in v["dims"]:
        if round(v["alpha"] * d) < 1:
            opt = "--dims" if args.dims is not None else "--dim"
            raise InputError(opt, f"alpha*D = {v['alpha'] * d} gives no samples")
    v["seeds"] = _int_at_least(args.seeds, "--seeds", 1)
    v["seed"] = _int_at_least(args.seed, "--seed", 0)
    v["max_iter"] = _int_at_least(args.max_iter, "--max-iter", 1)
    v["damping"] = _num(args.damping, "--damping")
    if not 0 < v["damping"] <= 1:
        raise InputError("--damping", f"must be in (0, 1] (1 = undamped), got {v['damping']}")
    v["tol"] = _num(args.tol, "--tol")
    if v["tol"] <= 0:
        raise InputError("--tol", f"must be > 0, got {v['tol']}")
    v["init_scale"] = _num(args.init_scale, "--init-scale")
    if v["init_scale"] < 0:
        raise InputError("--init-scale", f"must be >= 0, got {v['init_scale']}")
    v["n_test"] = _int_at_least(args.n_test, "--n-test", 1)
    v["se_sobol_log2"] = _int_at_least(args.se_sobol_log2, "--se-sobol-log2", 4)
    try:
        get_namespace(args.device)
    except (ValueError, BackendError) as exc:
        raise InputError("--device", str(exc)) from None
    v["device"] = args.device
    try:
        v["channel"] = make_channel(v["model"], depth=v["depth"], seq_len=v["seq_len"],
                                    skip=v["skip"], beta=v["beta"], noise=v["noise"],
                                    inner_resolution=v["inner_resolution"])
    except ValueError as exc:  # pragma: no cover - the checks above come first
        raise InputError("--model", str(exc)) from None
    return v


# ----------------------------------------------------------------------------- run


def run_amp(args) -> int:
    """Run the ``amp`` sub-command; returns the exit status (2 on bad input)."""
    try:
        v = validate(args)
    except InputError as exc:
        print(f"smi simulate amp: error: {exc}", file=sys.stderr)
        return 2
    try:
        executor = make_executor(**executor_options(args, v["seeds"] * len(v["dims"])))
    except ExecutorError as exc:
        print(f"smi simulate amp: error: {exc}", file=sys.stderr)
        return 2
    try:
        out = sys.stdout if args.output == "-" else open(args.output, "w")  # noqa: SIM115
    except OSError as exc:
        executor.close()
        print(f"smi simulate amp: error: --output: cannot write {args.output!r}: "
              f"{exc.strerror}", file=sys.stderr)
        return 2
    try:
        with executor:
            return _run(v, out, args.summary_only, args.compare_se, args.psd_projection,
                        executor)
    finally:
        if out is not sys.stdout:
            out.close()


def _emit(out, row):
    out.write(json.dumps(row) + "\n")
    out.flush()


def _run(v, out, summary_only, compare_se, psd_projection, executor) -> int:
    cfg = AMPConfig(dim=v["dims"][0], alpha=v["alpha"], max_iter=v["max_iter"],
                    damping=v["damping"], tol=v["tol"], init_scale=v["init_scale"],
                    n_test=v["n_test"], device=v["device"], psd_projection=psd_projection)
    se = SESettings(sobol_log2=v["se_sobol_log2"]) if compare_se else None
    seeds = [v["seed"] + i for i in range(v["seeds"])]
    for row in iter_amp_rows(v["channel"], cfg, seeds, v["dims"], se_settings=se,
                             summary_only=summary_only, executor=executor):
        _emit(out, row)
    return 0


def main(argv=None) -> int:
    """Stand-alone entry point: ``python -m simulators.amp_cli [options]``."""
    parser = argparse.ArgumentParser(
        prog="python -m simulators.amp_cli",
        description="Bayes-AMP for SMI models (same options as `smi simulate amp`).",
    )
    add_amp_arguments(parser)
    return run_amp(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
