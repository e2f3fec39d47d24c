"""``smi figure theory-vs-simulation``: a paper figure computed and drawn in one command."""

from __future__ import annotations

import sys
import time

import asymptotics as asy
import validation as val
from asymptotics.channels.names import MODELS

from ..options import (
    Parser,
    add_executor_arguments,
    add_model_arguments,
    check_device,
    executor_options,
    fail,
    integer,
    integers,
    number,
    optimizer_names,
    refuse_inapplicable,
    values,
)
from ..output import command_line, task_progress
from . import add_command
from .plot import add_style_argument

NAME = "figure"
HELP = "paper figures computed and drawn in one command"
DESCRIPTION = "Paper figures: compute every curve and simulation they need, draw, save the data."

#: validation.theory_vs_simulation.BUDGETS, written out: --help must not load the library.
BUDGETS = {
    "quick": {"alphas": "0.1,0.6,1.2", "dims": "100,200", "seeds": "2", "sobol_log2": "7",
              "max_iter": "40", "n_test": "500", "train_steps": "200"},
    "paper": {"alphas": "0.1:2:0.1", "dims": "1000,4000", "seeds": "8", "sobol_log2": "12",
              "max_iter": "100", "n_test": "2000", "train_steps": "2000"},
}


class TheoryVsSimulation:
    NAME = "theory-vs-simulation"
    PROG = "smi figure theory-vs-simulation"
    HELP = "per-layer overlaps: SE, Bayes-AMP over seeds, training; AMP-SE gap vs 1/D"
    DESCRIPTION = (
        "Left panel: the overlap of each layer against α from state evolution (both "
        "branches), Bayes-AMP at each --dims over --seeds (error bars: one standard error), "
        "optionally trained networks (--optimizers), the thresholds (Q = 0, and with "
        "--staircase the staircase) as vertical lines. Right panel: |AMP − SE| per layer "
        "against 1/D at each α. The data go to FIG.jsonl beside FIG (JSON lines with a "
        "header). --budget sets every unset size: quick (~30 s on 2 cores) or paper.")

    @staticmethod
    def add_arguments(p) -> None:
        a = p.add_argument
        add_model_arguments(p, [m for m in MODELS if m != "link"], several=False,
                            link=False)
        a("--budget", default="quick", choices=list(BUDGETS),
          help="sizes of every option not given: quick (~30 s on 2 cores) or paper "
          "(α 0.1:2:0.1, D 1000,4000, 8 seeds) [quick]")
        a("--alphas", nargs="+", default=None, help="α values: comma list or start:stop:step")
        a("--dims", nargs="+", default=None, help="AMP dimensions D, comma list (>= 2 each)")
        a("--seeds", default=None, help="number of seeds per (α, D), >= 2 (error bars)")
        a("--seed", default="0", help="first seed [0]")
        a("--optimizers", nargs="+", default=None,
          help="attention: also train the network with these optimizers (comma list, "
          "default learning rates), at the smallest D")
        a("--train-steps", default=None, help="optimizer steps of each training run")
        a("--staircase", action="store_true",
          help="attention: mark the staircase thresholds too (Monte Carlo, ~20 s at depth 2)")
        a("--sobol-log2", default=None, help="log2 of the SE outer Sobol' points")
        a("--max-iter", default=None, help="AMP iterations at most")
        a("--n-test", default=None, help="test sequences of each simulation")
        a("--device", default="cpu", help="cpu or gpu (cupy): SE integrals, AMP, training "
          "[cpu]")
        a("--output", required=True, help="figure file FIG.pdf or FIG.png; the data go to "
          "FIG.jsonl")
        a("--width", default="double", choices=["single", "double"],
          help="one-column (3.4 in) or two-column (7 in) figure [double]")
        add_style_argument(p)
        a("--quiet", action="store_true", help="no progress on stderr")
        add_executor_arguments(p)

    @staticmethod
    def parse(args):
        prog = TheoryVsSimulation.PROG
        budget = BUDGETS[args.budget]

        def given(name):
            v = getattr(args, name)
            return budget[name] if v is None else v

        refuse_inapplicable(args, ("--depth", "--seq-len", "--skip", "--beta", "--optimizers",
                                   "--train-steps", "--staircase"),
                            args.model == "attention", "--model attention", prog)
        refuse_inapplicable(args, ("--noise",), args.model == "linear", "--model linear", prog)
        job = {"model": args.model}
        if args.model == "attention":
            job.update(depth=integer(args.depth, "--depth", 1, prog),
                       seq_len=integer(args.seq_len, "--seq-len", 2, prog),
                       skip=number(args.skip, "--skip", prog, minimum=0),
                       beta=number(args.beta, "--beta", prog, above=0))
        elif args.model == "linear":
            job["noise"] = number(args.noise, "--noise", prog, minimum=0)
        alphas = values(given("alphas"), "--alphas", prog)
        if not alphas or min(alphas) <= 0:
            raise fail("--alphas", f"every alpha must be > 0, got {given('alphas')!r}", prog)
        dims = integers(given("dims"), "--dims", 2, prog)
        for d in dims:
            if round(min(alphas) * d) < 1:
                raise fail("--dims", f"alpha*D = {min(alphas) * d:g} gives no samples", prog)
        first = integer(args.seed, "--seed", 0, prog)
        seeds = [first + i for i in range(integer(given("seeds"), "--seeds", 2, prog))]
        optimizers = []
        if args.optimizers is not None:
            optimizers = optimizer_names(args.optimizers, "--optimizers", prog)
        output = str(args.output)
        if not output.lower().endswith((".pdf", ".png")):
            raise fail("--output", f"{output!r} must end in .pdf or .png", prog)
        try:
            spec = val.FigureSpec(
                job=job, alphas=alphas, dims=dims, seeds=seeds,
                sobol_log2=integer(given("sobol_log2"), "--sobol-log2", 3, prog),
                max_iter=integer(given("max_iter"), "--max-iter", 1, prog),
                n_test=integer(given("n_test"), "--n-test", 1, prog),
                device=check_device(args.device, prog), staircase=args.staircase,
                optimizers=optimizers, se_tol=val.FIGURE_BUDGETS[args.budget]["se_tol"],
                train_steps=integer(given("train_steps"), "--train-steps", 1, prog))
            spec.check()
        except val.SpecError as exc:
            raise fail("--" + exc.option, str(exc), prog) from None
        return spec

    @staticmethod
    def run(args) -> int:
        prog = TheoryVsSimulation.PROG
        spec = TheoryVsSimulation.parse(args)
        why = asy.check_writable(args.output)
        if why is not None:
            raise fail("--output", f"cannot write {args.output!r}: {why}", prog)
        opts = executor_options(args, len(spec.seeds) * len(spec.dims), prog)
        t0 = time.perf_counter()
        with asy.make_executor(**opts) as ex:
            rows = val.compute_rows(spec, ex, task_progress(sys.stderr, args.quiet))
        fig, data = val.write_figure(rows, spec, args.output, args.width, args.style,
                                     command_line(args))
        if not args.quiet:
            print(f"wrote {fig} and {data} ({len(rows)} rows, "
                  f"{time.perf_counter() - t0:.0f}s)", file=sys.stderr)
        return 0


COMMANDS = (TheoryVsSimulation,)


def add_arguments(p) -> None:
    figsub = p.add_subparsers(dest="figure", required=True, parser_class=Parser)
    for command in COMMANDS:
        add_command(figsub, command)
