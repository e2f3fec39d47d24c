"""``smi simulate amp``: finite-size Bayes-AMP (GAMP) for SMI models, optionally against SE.

The sweep is :func:`simulators.sweeps.iter_amp_rows`; this command parses, calls it and
writes its rows as JSON lines:
- with ``--compare-se``, first one ``"se": true`` row: the SE fixed point from the
  uninformed start (``Q``, its error, the plug-in error at that ``Q``);
- one row per (dimension, seed, iteration) (unless ``--summary-only``) with ``seed, dim,
  iteration, M, Q, M_raw, m, q, gen_error, V, delta, psd_projected, g_rel_quad_error``
  (``M`` in the per-layer sign gauge: ``diag M = |M_kk|``; iteration 0 is the start);
- one ``"final": true`` row per (dimension, seed) with its status and final numbers, and
  the mean and std of ``m``, ``q`` over its last 20 iterations (``*_tail20_*``);
- one ``"summary": true`` row per dimension with ``*_mean``, ``*_std`` (ddof=1) and
  ``*_stderr`` over seeds of ``M, Q, m, q, gen_error, iterations``, ``n_converged``,
  ``n_failed``; with ``--compare-se`` it holds ``se_comparison``
  (:mod:`validation.amp_vs_se`), and the last one, when ``--dims`` lists several
  dimensions, holds ``finite_size_fit`` (discrepancy against 1/D).
"""

from __future__ import annotations

import dataclasses

import asymptotics as asy
import simulators as sim
import validation as val
from asymptotics.channels.names import MODELS

from ..options import (
    add_model_arguments,
    add_simulation_arguments,
    executor_options,
    fail,
    integer,
    integers,
    link_job,
    number,
    refuse_inapplicable,
    refused_as,
    run_simulation,
    simulation_values,
)

NAME = "amp"
HELP = "finite-size Bayes-AMP (GAMP) on teacher data, optionally against SE"
DESCRIPTION = ("Run Bayes-optimal GAMP (THEORY §3) on data of dimension D labelled by a "
               "planted teacher through the model's channel; log overlaps and the plug-in "
               "generalisation error per iteration (JSON lines).")
PROG = "smi simulate amp"
SE_SOBOL_LOG2 = "12"  # SESettings.sobol_log2, written out: --help must not load the SE


def add_arguments(p) -> None:
    a = p.add_argument
    add_model_arguments(p, MODELS, several=False, link_dim=False)
    a("--inner-resolution", default="0",
      help="attention: resolution of the posterior's inner rule (each step doubles the "
           "nodes per axis, cost x4 at depth 2) [0]")
    a("--alpha", default="1.2", help="sample ratio N/D (> 0) [1.2]")
    a("--dim", default="1000", help="input dimension D (>= 2) [1000]")
    a("--dims", nargs="+", default=None, help="comma list of dimensions (overrides --dim), e.g. "
                                   "250,500,1000: with --compare-se, fit the discrepancy "
                                   "against 1/D")
    a("--max-iter", default="50", help="GAMP iterations at most (>= 1) [50]")
    a("--damping", default="0.5", help="η in (0, 1] on g and A; 1 = undamped [0.5]")
    a("--tol", default="1e-5", help="stop when the RMS change of the entries of Ŵ < tol [1e-5]")
    a("--init-scale", default="1e-3", help="variance of the entries of the start Ŵ_0 [1e-3]")
    a("--psd-projection", action="store_true",
      help="project A on the PSD cone when it has a negative eigenvalue (logged per "
           "iteration); without it a non-positive-definite I + A stops the run")
    a("--compare-se", action="store_true",
      help="run SE from the uninformed start at the same alpha and compare")
    a("--se-sobol-log2", default=SE_SOBOL_LOG2,
      help=f"SE outer Sobol' points 2^k (Monte Carlo SE) [{SE_SOBOL_LOG2}]")
    add_simulation_arguments(p, "write only se, final and summary rows")


def parse(args) -> dict:
    """Checked values of every option, before any work (usage errors name the option)."""
    v = simulation_values(args, PROG)
    link = link_job(args, PROG, link_dim=False)  # --dim is D here: p from the formula
    v["depth"] = integer(args.depth, "--depth", 1, PROG)
    v["seq_len"] = integer(args.seq_len, "--seq-len", 2 if link is None else 1, PROG)
    v["skip"] = number(args.skip, "--skip", PROG, minimum=0)
    v["beta"] = number(args.beta, "--beta", PROG, above=0)
    v["noise"] = number(args.noise, "--noise", PROG, minimum=0)
    if link is not None:
        v.update(link=link["link"], seq_len=link["seq_len"], noise=link["noise"])
    v["inner_resolution"] = integer(args.inner_resolution, "--inner-resolution", 0, PROG)
    v["alpha"] = number(args.alpha, "--alpha", PROG, above=0)
    if args.dims is not None:
        if not ",".join(args.dims).strip(", "):
            raise fail("--dims", "empty list", PROG)
        v["dims"] = integers(args.dims, "--dims", 2, PROG)
    else:
        v["dims"] = [integer(args.dim, "--dim", 2, PROG)]
    for d in v["dims"]:
        if round(v["alpha"] * d) < 1:
            opt = "--dims" if args.dims is not None else "--dim"
            raise fail(opt, f"alpha*D = {v['alpha'] * d} gives no samples", PROG)
    v["max_iter"] = integer(args.max_iter, "--max-iter", 1, PROG)
    v["damping"] = number(args.damping, "--damping", PROG, above=0)
    if v["damping"] > 1:
        raise fail("--damping", f"must be in (0, 1] (1 = undamped), got {v['damping']}", PROG)
    v["tol"] = number(args.tol, "--tol", PROG, above=0)
    v["init_scale"] = number(args.init_scale, "--init-scale", PROG, minimum=0)
    v["se_sobol_log2"] = integer(args.se_sobol_log2, "--se-sobol-log2", 4, PROG)
    refuse_inapplicable(args, ("--depth", "--skip", "--beta"), args.model == "attention",
                        "--model attention", PROG)
    refuse_inapplicable(args, ("--seq-len", "--inner-resolution"),
                        args.model in ("attention", "link"), "--model attention or --link",
                        PROG)
    refuse_inapplicable(args, ("--noise",), args.model in ("linear", "link"),
                        "--model linear or --link", PROG)
    refuse_inapplicable(args, ("--se-sobol-log2",), args.compare_se, "--compare-se", PROG)
    with refused_as("--inner-resolution", PROG):
        if link is not None:
            v["channel"] = asy.make_channel(**link, inner_resolution=v["inner_resolution"])
        else:
            v["channel"] = asy.make_channel(args.model, depth=v["depth"], seq_len=v["seq_len"],
                                            skip=v["skip"], beta=v["beta"], noise=v["noise"],
                                            inner_resolution=v["inner_resolution"])
    if args.compare_se:
        with refused_as("--se-sobol-log2", PROG):
            v["se_settings"] = asy.SESettings(sobol_log2=v["se_sobol_log2"])
            asy.check_se(v["channel"], v["se_settings"])
    return v


def run(args) -> int:
    v = parse(args)
    opts = executor_options(args, len(v["seeds"]) * len(v["dims"]), PROG)
    cfg = sim.AMPConfig(dim=v["dims"][0], alpha=v["alpha"], max_iter=v["max_iter"],
                    damping=v["damping"], tol=v["tol"], init_scale=v["init_scale"],
                    n_test=v["n_test"], device=v["device"], psd_projection=args.psd_projection)
    with refused_as("--dims" if args.dims is not None else "--dim", PROG):
        sim.check_amp(v["channel"], dataclasses.replace(cfg, dim=max(v["dims"])))
    seeds = v["seeds"]
    settings = {"model": args.model, "channel": v["channel"].describe(),
                **{k: x for k, x in v.items() if k not in ("channel", "se_settings")},
                "psd_projection": args.psd_projection, "compare_se": args.compare_se,
                "summary_only": args.summary_only}
    with asy.make_executor(**opts) as executor:
        def rows_of(done, record):
            kw = dict(summary_only=args.summary_only, executor=executor, done=done,
                      record=record)
            if args.compare_se:
                return val.iter_amp_rows_against_se(v["channel"], cfg, seeds, v["dims"],
                                                    se_settings=v["se_settings"], **kw)
            return sim.iter_amp_rows(v["channel"], cfg, seeds, v["dims"], **kw)

        run_simulation(args, PROG, "amp", settings, rows_of)
    return 0
