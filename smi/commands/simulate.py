"""``smi simulate amp|train``: finite-size simulations."""

from __future__ import annotations

from ..options import Parser
from . import add_command, amp, train

NAME = "simulate"
HELP = "finite-size simulations (AMP, training)"
DESCRIPTION = "Finite-size simulations: Bayes-AMP at dimension D, training of the network."
COMMANDS = (train, amp)


def add_arguments(p) -> None:
    simsub = p.add_subparsers(dest="simulation", required=True, parser_class=Parser)
    for command in COMMANDS:
        add_command(simsub, command)
