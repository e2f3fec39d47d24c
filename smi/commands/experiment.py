"""``smi experiment``: the optimizer-claim experiments."""

from __future__ import annotations

from simulators.experiment_cli import add_experiment_parser


def add_parser(sub) -> None:
    add_experiment_parser(sub)
