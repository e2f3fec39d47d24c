"""``smi simulate amp|train``: finite-size simulations."""

from __future__ import annotations

from simulators.amp_cli import add_amp_parser
from simulators.train_cli import add_train_parser

from ..options import Parser


def add_parser(sub) -> None:
    p = sub.add_parser("simulate", help="finite-size simulations (AMP, training)")
    simsub = p.add_subparsers(dest="simulation", required=True, parser_class=Parser)
    add_train_parser(simsub)
    add_amp_parser(simsub)
