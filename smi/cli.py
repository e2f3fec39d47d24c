"""The ``smi`` command (also ``python -m smi``): parses, checks, runs, prints.

Every subcommand is a module of :mod:`smi.commands` that calls library functions of
``asymptotics``, ``simulators`` and ``validation``; bad input is one line on stderr and
exit status 2, before any work.
"""

from __future__ import annotations

import sys

from asymptotics import __version__
from asymptotics.backend import BackendError
from asymptotics.executors import ExecutorError

from .commands import add_command, curve, experiment, plot, simulate, thresholds, validate
from .options import Parser, UsageError

COMMANDS = (thresholds, curve, simulate, experiment, plot, validate)


def build_parser() -> Parser:
    parser = Parser(
        prog="smi",
        description="Asymptotics of sequence multi-index models and deep attention networks.",
    )
    parser.add_argument("--version", action="version", version=f"smi {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    for command in COMMANDS:
        add_command(sub, command)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run ``smi`` with ``argv`` (default: the command line); returns the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        return int(args.func(args) or 0)
    except UsageError as exc:
        print(str(exc).splitlines()[0], file=sys.stderr)
        return 2
    except (ExecutorError, BackendError) as exc:  # settings refused before any work
        print(f"smi: error: {str(exc).splitlines()[0]}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
