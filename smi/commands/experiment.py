"""``smi experiment NAME --budget {quick,full} --output DIR``: optimizer experiments.

``smi experiment list`` prints the registry.  Each run writes ``DIR/summary.json`` and
``DIR/NAME.png`` and prints one line per claim (``holds`` / ``does not hold``).
"""

from __future__ import annotations

import os

from validation.experiments import BUDGETS, EXPERIMENTS, get_experiment

from ..options import fail, integer

PROG = "smi experiment"


NAME = "experiment"
HELP = "optimizer experiments from the literature (summary.json + figure)"
DESCRIPTION = ("Small falsifiable reproductions of published optimizer claims: "
               + "; ".join(f"{k}: {v[1]}" for k, v in EXPERIMENTS.items()))


def add_arguments(p) -> None:
    # validated by run, for one-line error messages naming the option
    p.add_argument("name", help="experiment name, or 'list': " + ", ".join(EXPERIMENTS))
    p.add_argument("--budget", default="quick", help="quick (seconds) or full (minutes) [quick]")
    p.add_argument("--output", default=None,
                   help="output folder for summary.json and NAME.png [experiments/NAME]")
    p.add_argument("--seed", default="0", help="base seed of every random generator [0]")


def run(args) -> int:
    name = str(args.name).strip().lower()
    if name == "list":
        for k, (_, desc) in EXPERIMENTS.items():
            print(f"{k:22s} {desc}")
        return 0
    if name not in EXPERIMENTS:
        raise fail("NAME", f"unknown experiment {args.name!r}; known: " + ", ".join(EXPERIMENTS),
                   PROG)
    budget = str(args.budget).strip().lower()
    if budget not in BUDGETS:
        raise fail("--budget", f"expected one of {', '.join(BUDGETS)}, got {args.budget!r}",
                   PROG)
    seed = integer(args.seed, "--seed", 0, PROG)
    out = args.output if args.output else os.path.join("experiments", name)
    if os.path.exists(out) and not os.path.isdir(out):
        raise fail("--output", f"{out!r} exists and is not a folder", PROG)
    try:
        os.makedirs(out, exist_ok=True)
        probe = os.path.join(out, ".smi-write-test")
        with open(probe, "w"):
            pass
        os.remove(probe)
    except OSError as exc:
        raise fail("--output", f"cannot write to {out!r}: {exc.strerror or exc}", PROG) from None
    summary = get_experiment(name).run(budget, out, seed)
    for claim, res in summary.get("claims", {}).items():
        verdict = "holds" if res.get("holds") else "does not hold"
        print(f"{name}: {claim}: {verdict}")
    print(f"{name}: wrote {os.path.join(out, 'summary.json')} and "
          f"{os.path.join(out, name + '.png')} ({summary.get('wall_s', 0):.1f} s)")
    return 0
