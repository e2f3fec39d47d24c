"""The ``smi`` command (also ``python -m smi``): parses, checks, runs, prints.

Every subcommand is a module of :mod:`smi.commands` that calls library functions of
``asymptotics``, ``simulators`` and ``validation``; bad input is one line on stderr and
exit status 2, before any work.
"""

from __future__ import annotations

import os
import signal
import sys
import threading

from asymptotics import __version__
from asymptotics.backend import BackendError
from asymptotics.executors import ExecutorError
from asymptotics.results import ResultFileError, read_result_file

from .commands import (
    add_command,
    cache,
    curve,
    experiment,
    figure,
    link,
    plot,
    simulate,
    thresholds,
    validate,
)
from .options import Parser, UsageError, given_options

COMMANDS = (thresholds, curve, simulate, experiment, plot, figure, validate, cache, link)


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
    argv = list(sys.argv[1:] if argv is None else argv)
    args = None
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _interrupt) if main_thread else None
    try:
        args = parser.parse_args(argv)
        args.given = given_options(argv)
        return int(args.func(args) or 0)
    except UsageError as exc:
        line = str(exc).splitlines()[0]
        if args is not None and line.startswith("smi: error:"):  # name the subcommand
            line = f"smi {args.command}: error:" + line[len("smi: error:"):]
        print(line, file=sys.stderr)
        return 2
    except (ExecutorError, BackendError) as exc:  # settings refused before any work
        print(f"smi: error: {str(exc).splitlines()[0]}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        end_of_bar = "\n" if sys.stderr.isatty() else ""  # after a progress bar's frame
        print(f"{end_of_bar}interrupted: {_saved(args)}", file=sys.stderr)
        return 130
    except OSError as exc:  # a write that failed during the work (a full disk, ...)
        where = f" {exc.filename}" if exc.filename else ""
        print(f"smi: error: {exc.strerror or exc}{where}: {_saved(args)}", file=sys.stderr)
        return 1
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous)


def _interrupt(signum, frame):
    raise KeyboardInterrupt  # SIGTERM ends a run the way Ctrl-C does: cleanly, resumable


def _saved(args) -> str:
    """What an interrupted run left: the complete rows in its --output file."""
    path = getattr(args, "output", None) if args is not None else None
    if not path or path == "-" or not os.path.exists(path):
        return "nothing was saved (no --output file)"
    try:
        n = len(read_result_file(path).rows)
    except ResultFileError:
        return f"{path} could not be read back"
    resume = " --resume" if hasattr(args, "resume") else ""
    return f"{n} rows in {path}; rerun the same command with{resume or ' --overwrite'} " \
           f"to {'continue' if resume else 'start again'}"


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
