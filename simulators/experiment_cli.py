"""``smi experiment NAME --budget {quick,full} --output DIR``: optimizer experiments.

The lead CLI registers this sub-command with :func:`add_experiment_parser` and dispatches
to :func:`run_experiment`; stand-alone: ``python -m simulators.experiment_cli NAME ...``.
``smi experiment list`` prints the registry.  Each run writes ``DIR/summary.json`` and
``DIR/NAME.png`` and prints one line per claim (``holds`` / ``does not hold``).

Input errors are reported before any work, as one line on stderr naming the option, with
exit status 2.
"""

from __future__ import annotations

import argparse
import os
import sys

from validation.experiments import BUDGETS, EXPERIMENTS, get_experiment

PROG = "smi experiment"


def add_experiment_arguments(p):
    # validated by run_experiment, for one-line error messages naming the option
    p.add_argument("name", help="experiment name, or 'list': " + ", ".join(EXPERIMENTS))
    p.add_argument("--budget", default="quick", help="quick (seconds) or full (minutes) [quick]")
    p.add_argument("--output", default=None,
                   help="output folder for summary.json and NAME.png [experiments/NAME]")
    p.add_argument("--seed", default="0", help="base seed of every random generator [0]")
    return p


def add_experiment_parser(subparsers):
    """Register the ``experiment`` sub-command on an argparse ``subparsers`` object."""
    p = subparsers.add_parser(
        "experiment",
        help="optimizer experiments from the literature (summary.json + figure)",
        description="Small falsifiable reproductions of published optimizer claims: "
        + "; ".join(f"{k}: {v[1]}" for k, v in EXPERIMENTS.items()),
    )
    add_experiment_arguments(p)
    p.set_defaults(func=run_experiment)
    return p


def _fail(option, message) -> int:
    print(f"{PROG}: error: {option}: {message}", file=sys.stderr)
    return 2


def run_experiment(args) -> int:
    name = str(args.name).strip().lower()
    if name == "list":
        for k, (_, desc) in EXPERIMENTS.items():
            print(f"{k:22s} {desc}")
        return 0
    if name not in EXPERIMENTS:
        return _fail("NAME", f"unknown experiment {args.name!r}; known: "
                     + ", ".join(EXPERIMENTS))
    budget = str(args.budget).strip().lower()
    if budget not in BUDGETS:
        return _fail("--budget", f"expected one of {', '.join(BUDGETS)}, got {args.budget!r}")
    try:
        seed = int(str(args.seed), 10)
    except ValueError:
        return _fail("--seed", f"expected a non-negative integer, got {args.seed!r}")
    if seed < 0:
        return _fail("--seed", f"expected a non-negative integer, got {args.seed!r}")
    out = args.output if args.output else os.path.join("experiments", name)
    if os.path.exists(out) and not os.path.isdir(out):
        return _fail("--output", f"{out!r} exists and is not a folder")
    try:
        os.makedirs(out, exist_ok=True)
        probe = os.path.join(out, ".smi-write-test")
        with open(probe, "w"):
            pass
        os.remove(probe)
    except OSError as exc:
        return _fail("--output", f"cannot write to {out!r}: {exc.strerror or exc}")
    summary = get_experiment(name).run(budget, out, seed)
    for claim, res in summary.get("claims", {}).items():
        verdict = "holds" if res.get("holds") else "does not hold"
        print(f"{name}: {claim}: {verdict}")
    print(f"{name}: wrote {os.path.join(out, 'summary.json')} and "
          f"{os.path.join(out, name + '.png')} ({summary.get('wall_s', 0):.1f} s)")
    return 0


def main(argv=None) -> int:
    """Stand-alone entry point: ``python -m simulators.experiment_cli NAME [options]``."""
    parser = argparse.ArgumentParser(
        prog="python -m simulators.experiment_cli",
        description="Optimizer experiments (same options as `smi experiment`).",
    )
    add_experiment_arguments(parser)
    return run_experiment(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
