"""``smi validate``: the validation battery and its report."""

from __future__ import annotations

import sys

import validation as val

from ..options import UsageError

NAME = "validate"
HELP = "run the validation battery and write a report"
DESCRIPTION = ("Closed forms, identities, published data, SE against AMP and training: writes "
               "DIR/report.md and figures, one PASS/FAIL line per check.")


def add_arguments(p) -> None:
    p.add_argument("--budget", default="quick", choices=["quick", "full"])
    p.add_argument("--output", required=True, help="directory for report.md and figures")


def run(args) -> int:
    try:
        summary = val.run_validation(args.budget, args.output, stream=sys.stderr)
    except OSError as exc:
        raise UsageError(f"smi validate: error: --output: {exc}") from None
    print(f"{summary['passed']} PASS, {summary['failed']} FAIL "
          f"({summary['failed'] - summary['undocumented_failures']} documented disagreements "
          f"with published numbers) in {summary['wall_s']:.0f} s; report: {summary['report']}")
    return 0 if summary["undocumented_failures"] == 0 else 1
