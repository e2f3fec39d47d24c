"""``smi simulate amp|train``: finite-size simulations."""

from __future__ import annotations

from simulators.amp_cli import add_amp_parser
from simulators.train_cli import add_train_parser

from ..options import Parser

NAME = "simulate"
HELP = "finite-size simulations (AMP, training)"
DESCRIPTION = "Finite-size simulations: Bayes-AMP at dimension D, training of the network."


def add_arguments(p) -> None:
    simsub = p.add_subparsers(dest="simulation", required=True, parser_class=Parser)
    add_train_parser(simsub)
    add_amp_parser(simsub)
