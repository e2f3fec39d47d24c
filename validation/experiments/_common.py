"""Shared helpers of the experiments: budgets, JSON output, figures, statistics."""

from __future__ import annotations

import json
import math
import os
import time

import numpy as np

__all__ = ["check_budget", "write_summary", "new_figure", "save_figure", "mean_se", "Timer"]


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


def new_figure(nrows=1, ncols=1, size=(4.2, 3.4)):
    """A matplotlib figure on the Agg backend (no display, no LaTeX)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    plt.rcParams["text.usetex"] = False
    fig, axes = plt.subplots(nrows, ncols, figsize=(size[0] * ncols, size[1] * nrows),
                             squeeze=False)
    return fig, axes


def save_figure(fig, output_dir, name: str) -> str:
    import matplotlib.pyplot as plt

    os.makedirs(output_dir, exist_ok=True)
    path = os.path.join(output_dir, f"{name}.png")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


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
