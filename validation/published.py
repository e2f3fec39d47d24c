"""Published data of Troiani, Cui, Dandi, Krzakala, Zdeborová (ICML 2025, arXiv 2502.00901).

The CSV files under ``validation/data/`` are copies of the files published with the paper
(see ``validation/data/README.md``); nothing here reads outside the package.
"""

from __future__ import annotations

import csv
from pathlib import Path

CITATION = ("Troiani, Cui, Dandi, Krzakala, Zdeborová, \"Fundamental limits of learning in "
            "sequence multi-index models and deep attention networks\", ICML 2025, "
            "arXiv:2502.00901")
DATA_DIR = Path(__file__).resolve().parent / "data"
FILES = ("alpha_critical", "BO_2w", "BO_3w", "AMP_2w", "gen_error_AMP_2w", "gen_error_BO_2w",
         "gen_error_BO_2w_one_layer", "gen_error_BO_3w", "gen_error_BO_3w_last_layer")


def load(name: str) -> dict[str, list[float]]:
    """Columns of the published file ``name`` (without ``.csv``), as lists of floats."""
    if name not in FILES:
        raise ValueError(f"unknown published file {name!r}; choose from {', '.join(FILES)}")
    with open(DATA_DIR / f"{name}.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    return {k: [float(r[k]) for r in rows] for k in rows[0]}


def alpha_critical() -> list[dict]:
    """Rows ``{skip, alpha1, alpha2}`` sorted by skip (alpha1: layer 1, alpha2: layer 2)."""
    d = load("alpha_critical")
    rows = [dict(skip=s, alpha1=a1, alpha2=a2)
            for s, a1, a2 in zip(d["skip"], d["alpha1"], d["alpha2"], strict=True)]
    return sorted(rows, key=lambda r: r["skip"])
