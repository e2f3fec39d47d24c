"""``smi plot``: publication figures from result files."""

from __future__ import annotations

import sys

import asymptotics as asy
import validation as val
from validation import PLOT_KINDS

from ..options import UsageError, fail, values
from ..output import command_line

NAME = "plot"
HELP = "publication figures from result files"
DESCRIPTION = ("Figures from result files of smi curve, smi thresholds, smi simulate amp and "
               "smi simulate train (types detected by their keys). Nothing is smoothed.")


def add_arguments(p) -> None:
    p.add_argument("kind", choices=list(PLOT_KINDS))
    p.add_argument("results", nargs="+", help="result files (JSON, JSON lines or CSV)")
    p.add_argument("--output", required=True, help="figure file, .pdf or .png")
    p.add_argument("--width", default="single", choices=["single", "double"],
                   help="one-column (3.4 in) or two-column (7 in) figure")
    add_style_argument(p)
    p.add_argument("--skip", default=None,
                   help="overlaps/errors: the skip strength whose thresholds are marked "
                   "when the thresholds file holds several")


#: validation.style.VARIANTS, written out: building the parser must not load matplotlib.
STYLES = ("default", "paper")


def add_style_argument(p) -> None:
    p.add_argument("--style", default="default", choices=list(STYLES),
                   help="figure style: default (sans-serif) or paper (serif text and "
                   "mathematics, no LaTeX needed) [default]")


def run(args) -> int:
    skip = None
    if args.skip is not None:
        vals = values([args.skip], "--skip")
        if len(vals) != 1:
            raise fail("--skip", "one value")
        skip = vals[0]
    try:
        with val.use_style(args.style):
            val.make_plot(args.kind, args.results, args.output, args.width, skip,
                          provenance=asy.provenance(command_line(args)))
    except val.PlotInputError as exc:
        raise UsageError(f"smi plot: error: {exc}") from None
    print(f"wrote {args.output}", file=sys.stderr)
    return 0
