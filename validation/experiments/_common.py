"""Shared helpers of the experiments: budgets, JSON output, figures, statistics.

Figures take the package's figure style (:mod:`validation.style`, as ``smi plot``).
"""

from __future__ import annotations

import json
import math
import os
import time
from contextlib import contextmanager

import numpy as np

__all__ = ["check_budget", "write_summary", "figure", "mean_se", "Timer"]


def check_budget(budget: str) -> str:
    if budget not in ("quick", "full"):
        raise ValueError(f"budget must be 'quick' or 'full', got {budget!r}")
    return budget


def _clean(obj):
    """Numpy scalars/arrays -> Python; non-finite floats -> None (strict JSON)."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _clean(obj.tolist())
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        x = float(obj)
        return x if math.isfinite(x) else None
    return obj


def write_summary(output_dir, summary: dict) -> dict:
    """Write ``output_dir/summary.json`` (creating the folder); return the cleaned dict."""
    os.makedirs(output_dir, exist_ok=True)
    clean = _clean(summary)
    with open(os.path.join(output_dir, "summary.json"), "w") as fh:
        json.dump(clean, fh, indent=1, allow_nan=False)
        fh.write("\n")
    return clean


@contextmanager
def figure(output_dir, name: str, ncols: int = 1, width: str = "double"):
    """Panels of one experiment figure in the project style, saved on leaving the block.

    ``with figure(output_dir, NAME, ncols=2) as axes:`` draws on ``axes`` (a list of
    ``ncols`` panels side by side) inside :func:`validation.style.style` (no LaTeX, the
    Okabe–Ito palette, paper font sizes) and writes ``output_dir/NAME.png`` with
    :func:`validation.style.save` when the block ends.  ``width`` is ``"single"`` (3.4 in)
    or ``"double"`` (7 in, the default: the experiments have two or three panels).  The
    figure is closed whether or not the block raises; nothing is saved if it does.
    """
    import matplotlib.pyplot as plt

    from .. import style

    os.makedirs(output_dir, exist_ok=True)
    with style.style():
        fig, axes = style.new_figure(width, ncols=ncols)
        try:
            yield axes
            style.save(fig, os.path.join(output_dir, f"{name}.png"))
        finally:
            plt.close(fig)


def mean_se(values):
    """``(mean, standard error)`` over axis 0 (standard error 0 for one value)."""
    a = np.asarray(values, dtype=float)
    m = a.mean(axis=0)
    se = a.std(axis=0, ddof=1) / math.sqrt(a.shape[0]) if a.shape[0] > 1 else np.zeros_like(m)
    return m, se


class Timer:
    def __init__(self):
        self.t0 = time.perf_counter()

    def __call__(self) -> float:
        return time.perf_counter() - self.t0
