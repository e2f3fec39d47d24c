"""Optimizer experiments from the literature (``smi experiment NAME``).

Each experiment is one module with ``run(budget, output_dir, seed) -> dict``: it runs a
small, falsifiable reproduction of a published claim, writes ``output_dir/summary.json``
(the returned dict) and a figure ``output_dir/NAME.png`` and returns the summary.  The
summary has a ``"claims"`` mapping ``claim -> {"holds": bool, ...numbers}`` that the tests
assert on the ``quick`` budget.  ``budget`` is ``"quick"`` (seconds, used by the tests) or
``"full"`` (minutes).  Modules are imported lazily, so listing the registry is cheap.

=====================  ====================================================================
name                   reproduction
=====================  ====================================================================
stochastic-quadratic   Balles & Hennig 2018: sign vs. gradient steps on noisy quadratics
signgd-transformer     Li et al. 2025: SignGD/Adam memorise noise in a two-layer transformer
next-token             Huang, Liang & Yang 2024: normalised GD -> max-margin directions
functional-sam         Singh et al. 2025: logit- vs functional-path parts of SAM's update
rotation-symmetry      GD/SGD are rotation-equivariant on the attention model, Adam/sign not
=====================  ====================================================================
"""

from __future__ import annotations

import importlib

__all__ = ["EXPERIMENTS", "BUDGETS", "get_experiment", "run_experiment"]

#: experiment name -> (module, one-line description)
EXPERIMENTS = {
    "stochastic-quadratic": (
        "stochastic_quadratic",
        "SGD vs sign descent, M-SVAG and Adam on noisy quadratics (Balles & Hennig 2018)",
    ),
    "signgd-transformer": (
        "signgd_transformer",
        "SignGD/Adam vs GD on a two-layer transformer with sparse noise (Li et al. 2025)",
    ),
    "next-token": (
        "next_token",
        "two-stage normalised GD for next-token prediction, max-margin bias (Huang et al. 2024)",
    ),
    "functional-sam": (
        "functional_sam",
        "SAM's logit- and functional-path parts, AdamW/SAM/FSAM comparison (Singh et al. 2025)",
    ),
    "rotation-symmetry": (
        "rotation_symmetry",
        "rotation equivariance of GD/SGD (not Adam/sign) on the attention teacher-student model",
    ),
}

BUDGETS = ("quick", "full")


def get_experiment(name: str):
    """The module of experiment ``name`` (raises ``KeyError`` for an unknown name)."""
    if name not in EXPERIMENTS:
        raise KeyError(name)
    return importlib.import_module(f"{__name__}.{EXPERIMENTS[name][0]}")


def run_experiment(name: str, budget: str = "quick", output_dir=".", seed: int = 0) -> dict:
    """Run experiment ``name`` and return its summary (also written to ``output_dir``)."""
    if budget not in BUDGETS:
        raise ValueError(f"budget must be one of {BUDGETS}, got {budget!r}")
    return get_experiment(name).run(budget, output_dir, seed)
