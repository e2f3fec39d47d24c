"""The paper figure "theory against simulation" in one call (``smi figure
theory-vs-simulation``).

:func:`compute_rows` runs, for one model setting,

- state evolution over α on both branches (:func:`asymptotics.curves.sweep`);
- the Q = 0 weak-recovery thresholds, optionally with the staircase
  (:func:`asymptotics.tables.threshold_rows`);
- Bayes-AMP at every dimension D over seeds, per α (:func:`simulators.sweeps.amp_rows`,
  summary and final rows);
- optionally training with chosen optimizers (:func:`simulators.sweeps.training_rows`,
  summary rows, at the smallest D);
- the gap ``|AMP − SE|`` per layer, per (α, D), against the SE AMP branch: ``gap`` rows.

Every row carries ``part`` (``se``, ``thresholds``, ``amp``, ``amp-final``, ``train``,
``gap``) so that the data file beside the figure is one table.  :func:`build_figure` draws

- left: overlap ``Q_kk`` of each layer against α: SE lines (colour = layer; Bayes-optimal
  solid, AMP branch dashed), AMP points with error bars (one standard error over seeds),
  one marker per D, trained networks (``cos²``), thresholds as vertical lines
  (α_c dash-dot, staircase dash-dot-dot);
- right: ``|AMP − SE|`` per layer against ``1/D``, one marker per α, error bars
  ``sqrt(stderr_AMP² + err_SE²)``.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Sequence

import numpy as np

from asymptotics.channels.attention_map import Architecture
from asymptotics.channels.registry import make_channel
from asymptotics.curves import sweep
from asymptotics.resources import check_se
from asymptotics.results import make_header, provenance, to_json_lines
from asymptotics.staircase import StaircaseSettings
from asymptotics.state_evolution import SESettings
from asymptotics.tables import threshold_rows
from asymptotics.thresholds import ThresholdSettings
from simulators.amp import AMPConfig
from simulators.attention_training import TrainConfig
from simulators.resources import check_amp, check_training
from simulators.sweeps import amp_rows, default_lr, training_rows

from . import plots, style

KIND = "theory-vs-simulation"

#: Sizes of a run: ``quick`` finishes in well under a minute on two cores (attention,
#: depth 2), ``paper`` is the published figure's.
BUDGETS = {
    "quick": {"alphas": [0.1, 0.6, 1.2], "dims": [100, 200], "seeds": 2, "sobol_log2": 7,
              "se_tol": 1e-5, "max_iter": 40, "n_test": 500, "train_steps": 200},
    "paper": {"alphas": [round(0.1 * i, 10) for i in range(1, 21)], "dims": [1000, 4000],
              "seeds": 8, "sobol_log2": 12, "se_tol": 1e-7, "max_iter": 100, "n_test": 2000,
              "train_steps": 2000},
}

CAPTION = ("Left: overlaps Q_kk against alpha (colour = layer; SE Bayes-optimal solid, AMP "
           "branch dashed; AMP points: one marker per D, error bars one standard error over "
           "seeds, clipped to [0, 1]; thresholds: alpha_c dash-dot, staircase "
           "dash-dot-dot). Right: |AMP - SE (AMP branch)| per layer against 1/D, one marker "
           "per alpha; error bars sqrt(stderr_AMP^2 + err_SE^2).")

DIM_MARKERS = ["o", "s", "D", "v", "P", "X"]
#: Right panel, one filled marker per α (the left panel's open markers are the D).
ALPHA_MARKERS = ["v", "<", ">", "p", "h", "*", "d", "X"]


class SpecError(ValueError):
    """A setting out of range or too large; ``option`` names it (without ``--``)."""

    def __init__(self, message: str, option: str):
        super().__init__(message)
        self.option = option


@dataclasses.dataclass
class FigureSpec:
    """What to compute: the model ``job`` (keyword arguments of ``make_channel``: ``model``
    and its setting), α values, dimensions, seeds and the numerical settings."""

    job: dict
    alphas: Sequence[float]
    dims: Sequence[int]
    seeds: Sequence[int]
    sobol_log2: int = 12
    se_tol: float = 1e-7
    max_iter: int = 100
    n_test: int = 2000
    device: str = "cpu"
    staircase: bool = False
    optimizers: Sequence[str] = ()
    train_steps: int = 2000

    def se_settings(self) -> SESettings:
        return SESettings(sobol_log2=self.sobol_log2, device=self.device)

    def amp_config(self, alpha: float, dim: int) -> AMPConfig:
        return AMPConfig(dim=dim, alpha=alpha, max_iter=self.max_iter, n_test=self.n_test,
                         device=self.device)

    def train_config(self) -> TrainConfig:
        j = self.job
        arch = Architecture(j.get("depth", 2), j.get("seq_len", 2), j.get("skip", 1.0),
                            j.get("beta", 1.0))
        return TrainConfig(arch=arch, dim=min(self.dims), steps=self.train_steps,
                           n_test=self.n_test)

    def check(self) -> None:
        """Every setting and size, before any work: a :class:`SpecError` naming the
        option (``sobol-log2``, ``dims``, ``train-steps``, ...) otherwise."""
        checks = [
            ("sobol-log2", lambda: check_se(make_channel(**self.job), self.se_settings())),
            ("dims", lambda: check_amp(make_channel(**self.job),
                                       self.amp_config(max(self.alphas), max(self.dims)))),
        ]
        if self.optimizers:
            checks.append(("train-steps",
                           lambda: check_training(self.train_config(), list(self.alphas))))
        for option, check in checks:
            try:
                check()
            except ValueError as exc:
                raise SpecError(str(exc).splitlines()[0], option) from None

    def settings(self) -> dict:
        return {k: (list(v) if isinstance(v, (list, tuple)) else v)
                for k, v in dataclasses.asdict(self).items()}


def _tag(rows: list[dict], part: str, **extra) -> list[dict]:
    return [{"part": part, **extra, **r} for r in rows]


def compute_rows(spec: FigureSpec, executor=None,
                 progress: Callable[[int, int, dict, float], None] | None = None) -> list[dict]:
    """Every row of the figure (see the module docstring), in the order computed.

    ``progress(done, total, label, elapsed)`` is called after each finished task (the SE
    sweep, the thresholds, each α's AMP runs, the training)."""
    channel = make_channel(**spec.job)
    alphas = sorted(float(a) for a in spec.alphas)
    train = bool(spec.optimizers) and spec.job.get("model") == "attention"
    total = 2 + len(alphas) + int(train)
    done, t0 = 0, time.perf_counter()

    def step(label: dict) -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress(done, total, label, time.perf_counter() - t0)

    rows = _tag(sweep(channel, alphas, "both", settings=spec.se_settings(),
                      tol=spec.se_tol, executor=executor),
                "se", **_setting(spec.job))
    step({"step": "state evolution"})
    stair = StaircaseSettings() if spec.staircase and spec.job.get("model") == "attention" \
        else None
    rows += _tag(threshold_rows(dict(spec.job), ThresholdSettings(), stair), "thresholds")
    step({"step": "thresholds"})
    for a in alphas:
        cfg = spec.amp_config(a, min(spec.dims))
        for r in amp_rows(channel, cfg, list(spec.seeds), list(spec.dims),
                          summary_only=True, executor=executor):
            part = "amp" if r.get("summary") else "amp-final"
            rows.append({"part": part, **_setting(spec.job), **r, "alpha": a})
        step({"step": "AMP", "alpha": a})
    if train:
        config = spec.train_config()
        dim = config.dim
        runs = [(nm, default_lr(nm, dim)) for nm in spec.optimizers]
        out = training_rows(config, list(spec.seeds), alphas, runs, device=spec.device,
                            summary_only=True, executor=executor)
        rows += _tag([r for r in out if r.get("summary")], "train", model="attention")
        step({"step": "training"})
    rows += gap_rows(rows)
    return rows


def _setting(job: dict) -> dict:
    return {k: job[k] for k in ("model", "depth", "seq_len", "skip", "beta", "noise")
            if k in job}


def gap_rows(rows: list[dict]) -> list[dict]:
    """``|AMP − SE|`` of each layer's overlap ``q`` per (α, D), against the SE fixed point
    of the AMP branch at the same α: ``part = "gap"`` rows with ``alpha, dim, inv_dim,
    layer, amp, amp_stderr, se, se_stderr, gap, gap_stderr``."""
    se = {r["alpha"]: r for r in rows if r.get("part") == "se" and r.get("branch") == "amp"}
    out = []
    for r in rows:
        if r.get("part") != "amp" or r.get("q_mean") is None:
            continue
        s = se.get(r["alpha"])
        if s is None:
            continue
        q_se = plots._diag(s["Q"])
        q_se_err = plots._diag(s.get("Q_stderr") or np.zeros_like(s["Q"]))
        q = np.atleast_1d(np.asarray(r["q_mean"], dtype=float))
        e = np.atleast_1d(np.asarray(r.get("q_stderr") or np.zeros_like(q), dtype=float))
        for k in range(min(len(q), len(q_se))):
            out.append({"part": "gap", "alpha": r["alpha"], "dim": r["dim"],
                        "inv_dim": 1.0 / r["dim"], "layer": k + 1, "amp": float(q[k]),
                        "amp_stderr": float(e[k]), "se": float(q_se[k]),
                        "se_stderr": float(q_se_err[k]), "gap": abs(float(q[k] - q_se[k])),
                        "gap_stderr": math.hypot(float(e[k]), float(q_se_err[k]))})
    return out


def data_text(rows: list[dict], spec: FigureSpec, command: str | None = None) -> str:
    """The data file beside the figure: JSON lines with a header (``kind``
    ``theory-vs-simulation``, the settings and the provenance)."""
    return to_json_lines(rows, make_header(KIND, spec.settings(), command))


# ------------------------------------------------------------------------------ figure


def _part(rows, part):
    return [r for r in rows if r.get("part") == part]


def plot_left(ax, rows) -> list[tuple]:
    """Overlaps against α; returns the legend entries."""
    entries: list[tuple] = []
    se = _part(rows, "se")
    n_layers = 0
    branches = plots._curve_branches(se)
    for b, brs in branches.items():
        ls, name = plots._branch_style(b)
        q = np.array([plots._diag(r["Q"]) for r in brs])
        for k in range(q.shape[1]):
            ax.plot([r["alpha"] for r in brs], q[:, k], color=style.layer_colour(k), ls=ls,
                    marker=".", ms=2.5, label=f"SE {b} layer {k + 1}")
        n_layers = max(n_layers, q.shape[1])
        entries.append((plots._key_handle(ls=ls, marker="."), name))
    amp = sorted(_part(rows, "amp"), key=lambda r: r["alpha"])
    dims = sorted({r["dim"] for r in amp})
    for i, d in enumerate(dims):
        mine = [r for r in amp if r["dim"] == d and r.get("q_mean") is not None]
        if not mine:
            continue
        q = np.array([np.atleast_1d(r["q_mean"]) for r in mine], dtype=float)
        e = np.array([np.atleast_1d(r.get("q_stderr") or np.zeros_like(q[0])) for r in mine],
                     dtype=float)
        mk = DIM_MARKERS[i % len(DIM_MARKERS)]
        # points of different D side by side, not on top of one another
        shift = (i - (len(dims) - 1) / 2) * 0.012 * (max(r["alpha"] for r in amp) or 1)
        for k in range(q.shape[1]):
            ax.errorbar([r["alpha"] + shift for r in mine], q[:, k],
                        yerr=plots._clipped_yerr(q[:, k], e[:, k]), ls="none", marker=mk,
                        mfc="none", color=style.layer_colour(k), label=f"AMP D={d}")
        n_layers = max(n_layers, q.shape[1])
        entries.append((plots._key_handle(ls="none", marker=mk, mfc="none"), f"AMP, D = {d}"))
    train = sorted(_part(rows, "train"), key=lambda r: r["alpha"])
    for nm in dict.fromkeys(r["optimizer"] for r in train):
        mine = [r for r in train if r["optimizer"] == nm and r.get("cosine_mean") is not None]
        if not mine:
            continue
        c = np.array([np.atleast_1d(r["cosine_mean"]) for r in mine], dtype=float)
        e = np.array([np.atleast_1d(r["cosine_stderr"]) for r in mine], dtype=float)
        for k in range(c.shape[1]):
            ax.errorbar([r["alpha"] for r in mine], c[:, k] ** 2,
                        yerr=plots._clipped_yerr(c[:, k] ** 2, 2 * np.abs(c[:, k]) * e[:, k]),
                        ls="none", marker=style.SOURCE_MARKERS["train"],
                        color=style.layer_colour(k), label=f"train {nm}")
        entries.append((plots._key_handle(ls="none", marker=style.SOURCE_MARKERS["train"]),
                        fr"{nm}, $\cos^2$"))
    alphas = [r["alpha"] for r in se + amp]
    thresholds: list[tuple] = []
    if alphas:
        hi = max(alphas) * 1.1
        plots._mark_thresholds(ax, _part(rows, "thresholds"), (1e-12, hi), thresholds)
    ax.set_xlabel(plots.ALPHA_LABEL)
    ax.set_ylabel(r"overlap $Q_{kk}$")
    ax.set_ylim(-0.03, 1.03)
    layers = [(plots._key_handle(colour=style.layer_colour(k)), f"layer {k + 1}")
              for k in range(n_layers)]
    return layers + entries + thresholds


def plot_right(ax, rows) -> list[tuple]:
    """``|AMP − SE|`` per layer against ``1/D``; returns the legend entries (markers = α)."""
    gaps = _part(rows, "gap")
    alphas = sorted({r["alpha"] for r in gaps})
    entries = []
    for i, a in enumerate(alphas):
        mk = ALPHA_MARKERS[i % len(ALPHA_MARKERS)]
        for layer in sorted({r["layer"] for r in gaps if r["alpha"] == a}):
            mine = sorted((r for r in gaps if r["alpha"] == a and r["layer"] == layer),
                          key=lambda r: r["inv_dim"])
            ax.errorbar([r["inv_dim"] for r in mine], [r["gap"] for r in mine],
                        yerr=[r["gap_stderr"] for r in mine], color=style.layer_colour(layer - 1),
                        marker=mk, ls="-", lw=0.6,
                        label=f"gap alpha={a:g} layer {layer}")
        entries.append((plots._key_handle(ls="none", marker=mk), fr"gap, $\alpha$ = {a:g}"))
    ax.set_xlabel(r"$1/D$")
    ax.set_ylabel(r"$|Q_{kk}^{\mathrm{AMP}} - Q_{kk}^{\mathrm{SE}}|$")
    ax.set_xlim(left=0)
    top = ax.get_ylim()[1]
    ax.set_ylim(-0.03 * top, top)  # a gap of 0 drawn whole, not cut by the axis
    ax.ticklabel_format(axis="x", style="sci", scilimits=(-2, 2))
    return entries


def build_figure(rows: list[dict], width: str = "double"):
    """The two-panel figure (not saved); call inside :func:`validation.style.style`."""
    fig, (left, right) = style.new_figure(width, ncols=2)
    entries = plot_left(left, rows) + plot_right(right, rows)
    setting = _part(rows, "se") or _part(rows, "thresholds")
    title = plots.setting_title(setting)
    if title:
        fig.suptitle(title)
    plots.legend_below(fig, [h for h, _ in entries], [lab for _, lab in entries],
                       max_ncol=5)
    return fig


def write_figure(rows: list[dict], spec: FigureSpec, output: str, width: str = "double",
                 variant: str = "default", command: str | None = None) -> tuple[str, str]:
    """Draw the figure to ``output`` (.pdf or .png) and the rows beside it
    (``output`` with ``.jsonl`` for its extension); returns both paths."""
    stem = output.rsplit(".", 1)[0]
    data = stem + ".jsonl"
    with open(data, "w", encoding="utf-8") as f:
        f.write(data_text(rows, spec, command))
    with style.style(variant):
        fig = build_figure(rows, width)
        style.save(fig, output, CAPTION, {**provenance(command), "data": data})
    return output, data


FIGURE_BUDGETS = BUDGETS  # exported by the validation package under this name
