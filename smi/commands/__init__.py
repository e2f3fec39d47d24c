"""One module per subcommand, each with ``NAME``, ``HELP``, ``DESCRIPTION``,
``add_arguments(parser)`` and, for a leaf command, ``run(args)``."""

from __future__ import annotations

from ..options import Parser


def add_command(sub, command) -> Parser:
    """Register a command module on an argparse ``subparsers`` object."""
    p = sub.add_parser(command.NAME, help=command.HELP, description=command.DESCRIPTION)
    command.add_arguments(p)
    if hasattr(command, "run"):
        p.set_defaults(func=command.run)
    return p
