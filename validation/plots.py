"""Figures from result files: ``smi plot KIND RESULTS... --output FIG.pdf``.

Result files are recognised by their keys, row by row, whatever their format (a JSON array
as written by ``--format json``, JSON lines as streamed by ``--output``, or the CSV of
``smi thresholds --format csv``):

- ``curve``: rows of ``smi curve`` (``alpha, branch, Q, free_entropy, ...``);
- ``amp``: ``"summary": true`` rows of ``smi simulate amp`` (``q_mean, gen_error_mean``);
- ``train``: ``"summary": true`` rows of ``smi simulate train`` (``cosine_mean``);
- ``train-steps``: per-step rows of ``smi simulate train`` (``seed, step, cosine``);
- ``thresholds``: rows of ``smi thresholds`` (``direction, alpha_c``, optionally
  ``staircase_alpha``).
Rows that are recognised but not plotted (AMP iterations, ``final`` and ``se`` rows) are
skipped; a file with no recognised row, or one that cannot be read, is an input error.

Nothing is smoothed or interpolated: lines join the computed points, in α order, and every
computed point carries a marker.  Trained networks enter the overlap plot as ``cos²`` (the
squared per-layer cosine, from the summary's mean cosine with error ``2 cos · stderr``):
for the Bayes-optimal estimator ``M = Q`` and ``|w*|²/D → 1``, so ``cos² = Q``.

Visual conventions (the same in every figure, :mod:`validation.style`):

- colour = layer (layer 1 blue, layer 2 vermillion, ...) for every per-layer quantity:
  overlaps, cosines, thresholds; the ``errors`` figure's whole-network errors take colours
  no layer uses (plug-in bluish green, Bayes-optimal black, test error reddish purple);
- line style = SE branch or quantity: Bayes-optimal branch solid, AMP branch dashed; the
  informed branch, dotted, only when the rows hold no ``branch == "bayes"`` rows (a journal
  written by ``smi curve --output`` holds the AMP and informed branches only; ``smi curve
  --format json`` adds the Bayes rows); thresholds are vertical dash-dot (``α_c``) and
  dash-dot-dot (staircase) lines; in the phase diagram ``α_c`` is solid, the staircase
  dashed;
- marker = source: AMP points open circles, trained networks filled triangles;
- one legend per figure, below the axes, never over data; a title states the model and
  its setting (depth, L, skip c, β) from the rows' keys when they carry them.

Error bars are one standard error.  An overlap lies in ``[0, 1]``: the bars of the
``overlaps`` figure are clipped to that range (asymmetric where clipped); the caption
stored in the file's metadata says so (:data:`CAPTIONS`).
"""

from __future__ import annotations

import math
import os
from collections import defaultdict

import numpy as np

from asymptotics.results import ResultFileError, read_rows, row_kind

from . import PLOT_KINDS, style

KINDS = PLOT_KINDS
FILE_TYPES = ("curve", "amp", "train", "train-steps", "thresholds")


class PlotInputError(ValueError):
    """A result file that cannot be read or is not a known kind (exit status 2)."""


# ------------------------------------------------------------------------- reading


row_type = row_kind  # the kind of one result row, from its keys (asymptotics.results)


def load_results(paths) -> dict[str, list[dict]]:
    """Rows of every file, grouped by type (see the module docstring)."""
    out: dict[str, list[dict]] = {t: [] for t in FILE_TYPES}
    for path in paths:
        if not os.path.exists(path):
            raise PlotInputError(f"{path}: cannot read (no such file)")
        try:
            rows, torn = read_rows(path)
        except ResultFileError as exc:
            raise PlotInputError(str(exc)) from None
        if torn:  # a journal still being written, or a damaged line: plot nothing of it
            raise PlotInputError(f"{path}: its last line is incomplete or not JSON (a sweep "
                                 "still running, or an interrupted one: resume it first)")
        if not rows:
            raise PlotInputError(f"{path}: empty file")
        found = 0
        for row in rows:
            t = row_kind(row)
            if t is not None:
                r = dict(row)
                r["_file"] = str(path)
                out[t].append(r)
                found += 1
        if found == 0:
            raise PlotInputError(
                f"{path}: no known result rows (expected rows of smi curve, smi thresholds, "
                "smi simulate amp or smi simulate train)")
    return out


# ------------------------------------------------------------------------- helpers


def _diag(m) -> list[float]:
    a = np.asarray(m, dtype=float)
    return np.diag(a).tolist() if a.ndim == 2 else np.atleast_1d(a).tolist()


def _need(results, types, kind):
    if not any(results[t] for t in types):
        raise PlotInputError(
            f"plot {kind}: needs rows of type {' or '.join(types)}; "
            f"got {', '.join(t for t in FILE_TYPES if results[t]) or 'none'}")


def _setting(row) -> tuple:
    return tuple(row.get(k) for k in ("model", "depth", "seq_len", "skip", "beta"))


def select_thresholds(rows: list[dict], skip: float | None = None) -> list[dict]:
    """Threshold rows of one setting: ``skip`` if given, else the only one, else skip 1."""
    if skip is not None:
        rows = [r for r in rows if r.get("skip") is not None and abs(r["skip"] - skip) < 1e-12]
        if not rows:
            raise PlotInputError(f"no threshold rows with skip = {skip}")
    settings = sorted({_setting(r) for r in rows}, key=str)
    if len(settings) > 1:
        ones = [s for s in settings if s[3] is not None and abs(s[3] - 1.0) < 1e-12]
        if len(ones) != 1:
            raise PlotInputError("the thresholds file holds several settings; choose one "
                                 "with --skip")
        rows = [r for r in rows if _setting(r) == ones[0]]
    return rows


def _clipped_yerr(y, e, lo: float = 0.0, hi: float = 1.0) -> np.ndarray:
    """Asymmetric error bars ``y ± e`` cut to the physical range ``[lo, hi]``."""
    y = np.asarray(y, dtype=float)
    e = np.abs(np.nan_to_num(np.asarray(e, dtype=float)))
    lower = np.maximum(y - np.clip(y - e, lo, hi), 0.0)
    upper = np.maximum(np.clip(y + e, lo, hi) - y, 0.0)
    return np.vstack([lower, upper])


SETTING_KEYS = ("model", "depth", "seq_len", "skip", "beta")
SETTING_NAMES = {"depth": "depth {}", "seq_len": "L = {}", "skip": "skip c = {}",
                 "beta": "β = {}"}


def _fmt(v) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def setting_title(rows, omit=()) -> str:
    """``attention, depth 2, L = 2, skip c = 1, β = 1``: the setting the rows' keys state.

    A key with several values lists them all; keys no row has are left out; depth, L, skip
    and β are left out for a model other than ``attention`` (they do not apply to it).
    """
    vals: dict[str, list] = {k: [] for k in SETTING_KEYS}
    for r in rows:
        for k in SETTING_KEYS:
            v = r.get(k)
            if v is not None and not (isinstance(v, float) and math.isnan(v)) \
                    and v not in vals[k]:
                vals[k].append(v)
    parts = []
    models = vals.pop("model")
    if models:
        parts.append(", ".join(str(m) for m in models))
    links = list(dict.fromkeys(r["link"] for r in rows if r.get("link")))
    if links:
        parts.append("g = " + ", ".join(str(g) for g in links))
    if not models or "attention" in models:
        for k, v in vals.items():
            if v and k not in omit:
                v = sorted(v, key=lambda x: (isinstance(x, str), x))
                parts.append(SETTING_NAMES[k].format(", ".join(_fmt(x) for x in v)))
    return ", ".join(parts)


def component_word(rows) -> str:
    """What a direction k is called: ``layer`` for attention networks (direction k is layer
    k) and rows that name no model, ``direction`` for any other model."""
    models = {r.get("model") for r in rows} - {None}
    return "layer" if not models or "attention" in models else "direction"


def _title(ax, rows, omit=()):
    t = setting_title(rows, omit)
    if t:
        ax.set_title(t)


def legend_below(fig, handles, labels, max_ncol: int = 4):
    """One legend for the whole figure, centred below the axes (outside the data area).

    As many columns as fit the figure's width; the figure grows by the legend's height,
    so the axes keep their size.
    """
    if not handles:
        return None
    renderer = fig.canvas.get_renderer()
    width = fig.get_figwidth() * fig.dpi
    leg = None
    for ncol in range(min(max_ncol, len(handles)), 0, -1):
        if leg is not None:
            leg.remove()
        leg = fig.legend(handles, labels, loc="outside lower center", ncol=ncol)
        if leg.get_window_extent(renderer).width <= 0.97 * width:
            break
    h = leg.get_window_extent(renderer).height / fig.dpi
    fig.set_figheight(fig.get_figheight() + h + 0.04)
    return leg


def _mark_thresholds(ax, rows, xlim, entries):
    """Vertical lines at the thresholds of each layer (band: ± stderr), in layer colour."""
    for r in sorted(rows, key=lambda r: int(r["direction"])):
        k = int(r["direction"]) - 1
        for key, err_key, name in (("alpha_c", "stderr", r"$\alpha_c$"),
                                   ("staircase_alpha", "staircase_stderr", "staircase")):
            a = r.get(key)
            if a is None or not isinstance(a, (int, float)) or not math.isfinite(a):
                continue
            if key == "staircase_alpha" and r.get("staircase_status") == "learned-first":
                continue
            if not xlim[0] <= a <= xlim[1]:
                continue
            ls = style.THRESHOLD_LINESTYLES["alpha_c" if key == "alpha_c" else "staircase"]
            line = ax.axvline(a, color=style.layer_colour(k), ls=ls, lw=0.8)
            entries.append((line, f"{name} {component_word([r])} {k + 1} = {a:.4g}"))
            err = r.get(err_key) or 0.0
            if err > 0:
                ax.axvspan(a - err, a + err, color=style.layer_colour(k), alpha=0.15, lw=0)


def _positive(values) -> np.ndarray:
    """Values for a log axis: zeros (perfect recovery) and negatives become gaps (NaN)."""
    y = np.array(values, dtype=float)
    y[~(y > 0)] = np.nan
    return y


def _curve_branches(rows):
    """SE rows by branch, each in α order; the informed branch only without Bayes rows."""
    branches = defaultdict(list)
    for r in rows:
        branches[r["branch"]].append(r)
    if "bayes" in branches:
        branches.pop("informed", None)
    for v in branches.values():
        v.sort(key=lambda r: r["alpha"])
    order = {"bayes": 0, "amp": 1, "informed": 2}
    return dict(sorted(branches.items(), key=lambda kv: (order.get(kv[0], 3), kv[0])))


BRANCH_NAME = {"amp": "SE, AMP branch", "bayes": "SE, Bayes-optimal",
               "informed": "SE, informed branch"}


def _branch_style(b):
    return style.BRANCH_LINESTYLES.get(b, "-."), BRANCH_NAME.get(b, f"SE, {b}")


def _x_range(results) -> tuple[float, float]:
    xs = [r["alpha"] for t in ("curve", "amp", "train") for r in results[t]
          if r.get("alpha") is not None]
    return (min(xs), max(xs)) if xs else (0.0, math.inf)


def _key_handle(ls="-", marker=None, mfc=None, colour=style.NEUTRAL, lw=None):
    from matplotlib.lines import Line2D

    kw = {} if lw is None else {"lw": lw}
    return Line2D([], [], color=colour, ls=ls, marker=marker,
                  mfc=colour if mfc is None else mfc, ms=2.5 if marker == "." else 3.5, **kw)


ALPHA_LABEL = r"sample ratio $\alpha = N/D$"

#: Captions stored in each figure file's metadata (what the error bars are).
CAPTIONS = {
    "overlaps": "Overlaps Q_kk against alpha (colour = layer; SE: Bayes-optimal solid, AMP "
                "branch dashed, informed dotted; AMP: open circles; training: filled "
                "triangles, cos^2). Error bars: one standard error, clipped to the physical "
                "range [0, 1] of an overlap (asymmetric where clipped).",
    "errors": "Generalisation errors against alpha (log axis; plug-in green, Bayes-optimal "
              "black, test error purple; SE Bayes-optimal branch solid, AMP branch dashed). "
              "Error bars: one standard error. Errors equal to 0 (perfect recovery) are "
              "off the log axis and not drawn.",
    "phase-diagram": "Weak-recovery thresholds of each layer (colour = layer; alpha_c solid, "
                     "staircase dashed). Error bars: one standard error.",
    "dynamics": "Per-layer cosine similarity against optimizer steps (colour = layer): thin "
                "lines single seeds, thick lines their mean; panels in alpha order.",
}


# ---------------------------------------------------------------------------- kinds


def plot_overlaps(results, ax, thresholds_skip=None):
    """Overlap of each layer against α: SE lines, AMP and training points, thresholds.

    Returns the legend entries ``[(handle, label)]``: one per layer (its colour) and one
    per branch / source (its line style or marker), then the thresholds.  Error bars are
    clipped to ``[0, 1]``.
    """
    _need(results, ("curve", "amp", "train"), "overlaps")
    styles, thresholds = [], []
    n_layers = 0
    used_rows = []
    for b, rows in _curve_branches(results["curve"]).items():
        ls, name = _branch_style(b)
        alphas = [r["alpha"] for r in rows]
        q = np.array([_diag(r["Q"]) for r in rows])
        qe = np.array([_diag(r.get("Q_stderr") or np.zeros_like(r["Q"])) for r in rows])
        for k in range(q.shape[1]):
            ax.errorbar(alphas, q[:, k], yerr=_clipped_yerr(q[:, k], qe[:, k]),
                        color=style.layer_colour(k), ls=ls, marker=".", ms=2.5)
        n_layers = max(n_layers, q.shape[1])
        styles.append((ls, ".", None, name))
        used_rows += rows
    amp = sorted(results["amp"], key=lambda r: r.get("alpha") or 0)
    amp = [r for r in amp if r.get("q_mean") is not None and r.get("alpha") is not None]
    if amp:
        q = np.array([np.atleast_1d(r["q_mean"]) for r in amp], dtype=float)
        e = np.array([np.atleast_1d(r.get("q_stderr") or np.zeros_like(q[0]))
                      for r in amp], dtype=float)
        for k in range(q.shape[1]):
            ax.errorbar([r["alpha"] for r in amp], q[:, k], yerr=_clipped_yerr(q[:, k], e[:, k]),
                        ls="none", marker=style.SOURCE_MARKERS["amp"], mfc="none",
                        color=style.layer_colour(k))
        n_layers = max(n_layers, q.shape[1])
        styles.append(("none", style.SOURCE_MARKERS["amp"], "none",
                       f"AMP (D = {amp[0].get('dim', '?')})"))
        used_rows += amp
    train = [r for r in results["train"] if r.get("cosine_mean") is not None]
    train.sort(key=lambda r: r["alpha"])
    if train:
        c = np.array([np.atleast_1d(r["cosine_mean"]) for r in train], dtype=float)
        e = np.array([np.atleast_1d(r["cosine_stderr"]) for r in train], dtype=float)
        for k in range(c.shape[1]):
            ax.errorbar([r["alpha"] for r in train], c[:, k] ** 2,
                        yerr=_clipped_yerr(c[:, k] ** 2, 2 * np.abs(c[:, k]) * e[:, k]),
                        ls="none", marker=style.SOURCE_MARKERS["train"],
                        color=style.layer_colour(k))
        n_layers = max(n_layers, c.shape[1])
        styles.append(("none", style.SOURCE_MARKERS["train"], None,
                       fr"trained network ({train[0].get('optimizer', '?')}), $\cos^2$"))
        used_rows += train
    if results["thresholds"]:
        thr = select_thresholds(results["thresholds"], thresholds_skip)
        _mark_thresholds(ax, thr, _x_range(results), thresholds)
        used_rows += thr
    ax.set_xlabel(ALPHA_LABEL)
    ax.set_ylabel(r"overlap $Q_{kk}$")
    ax.set_ylim(-0.03, 1.03)
    _title(ax, used_rows)
    one = n_layers == 1
    word = component_word(used_rows)
    entries = [] if one else [(_key_handle(colour=style.layer_colour(k)), f"{word} {k + 1}")
                              for k in range(n_layers)]
    neutral = style.layer_colour(0) if one else style.NEUTRAL
    for ls, mk, mfc, name in styles:
        entries.append((_key_handle(ls=ls, marker=mk, mfc=mfc, colour=neutral), name))
    return entries + thresholds


def plot_errors(results, ax, thresholds_skip=None):
    """Plug-in and Bayes-optimal generalisation errors against α (log y).

    Colour = quantity (never a layer colour), line style = SE branch; an error of exactly 0
    (perfect recovery) has no place on the log axis and is left out (the line ends).
    Returns the legend entries: quantities (colour), branches (line style), points,
    thresholds.
    """
    _need(results, ("curve", "amp", "train"), "errors")
    quantities, branches, points, used_rows, ys = {}, [], [], [], []
    qc = style.QUANTITY_COLOURS
    for b, rows in _curve_branches(results["curve"]).items():
        ls, name = _branch_style(b)
        alphas = [r["alpha"] for r in rows]
        for key, lab, c in (("gen_error_plugin", "plug-in error", qc["plugin"]),
                            ("gen_error_bayes", "Bayes-optimal error", qc["bayes"])):
            y = _positive([r[key] for r in rows])
            e = np.array([r.get(f"{key}_stderr") or 0.0 for r in rows], dtype=float)
            ys += list(y)
            ax.errorbar(alphas, y, yerr=e, color=c, ls=ls, marker=".", ms=2.5)
            quantities[lab] = c
        branches.append((_key_handle(ls=ls, marker="."), name))
        used_rows += rows
    amp = [r for r in results["amp"] if r.get("gen_error_mean") is not None]
    amp.sort(key=lambda r: r["alpha"])
    if amp:
        art = ax.errorbar([r["alpha"] for r in amp], _positive([r["gen_error_mean"] for r in amp]),
                          yerr=[r.get("gen_error_stderr") or 0.0 for r in amp], ls="none",
                          marker=style.SOURCE_MARKERS["amp"], mfc="none", color=qc["plugin"])
        points.append((art, f"plug-in error, AMP (D = {amp[0].get('dim', '?')})"))
        ys += [r["gen_error_mean"] for r in amp]
        used_rows += amp
    train = [r for r in results["train"] if r.get("test_loss_mean") is not None]
    train.sort(key=lambda r: r["alpha"])
    if train:
        art = ax.errorbar([r["alpha"] for r in train],
                          _positive([r["test_loss_mean"] for r in train]),
                          yerr=[r.get("test_loss_stderr") or 0.0 for r in train], ls="none",
                          marker=style.SOURCE_MARKERS["train"], color=qc["test"])
        points.append((art, f"test error, trained network "
                            f"({train[0].get('optimizer', '?')})"))
        ys += [r["test_loss_mean"] for r in train]
        used_rows += train
    entries = [(_key_handle(colour=c), lab) for lab, c in quantities.items()]
    entries += branches + points
    if results["thresholds"]:
        thr = select_thresholds(results["thresholds"], thresholds_skip)
        _mark_thresholds(ax, thr, _x_range(results), entries)
        used_rows += thr
    ax.set_yscale("log")
    log_ticks(ax.yaxis, ys)
    ax.set_xlabel(ALPHA_LABEL)
    ax.set_ylabel(r"generalisation error $E\|g(Z^*) - \hat g\|^2$")
    _title(ax, used_rows)
    return entries


def _phase_axis(rows) -> str:
    for key in ("skip", "depth", "seq_len", "beta"):
        if len({r.get(key) for r in rows}) > 1:
            return key
    return "skip"


AXIS_LABEL = {"skip": "skip strength $c$", "depth": r"depth $\ell$",
              "seq_len": "sequence length $L$", "beta": r"inverse temperature $\beta$"}


def log_ticks(axis, values) -> None:
    """Labelled major ticks of a log axis inside the data range, as plain numbers (``0.2``,
    not ``2×10⁻¹``): 1-2-3-5 per decade when the data span about a decade, 1-2-5 up to
    3.5 decades; minor ticks unlabelled.  Wider ranges keep matplotlib's decades (10ⁿ)."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    v = np.asarray([x for x in values if np.isfinite(x) and x > 0], dtype=float)
    if v.size == 0:
        return
    decades = math.log10(v.max() / v.min())
    if decades >= 3.5:
        return
    subs = (1.0, 2.0, 3.0, 5.0) if decades < 1.2 else (1.0, 2.0, 5.0)
    axis.set_major_locator(LogLocator(base=10, subs=subs))
    axis.set_major_formatter(FuncFormatter(lambda x, _pos: f"{x:.4g}"))
    axis.set_minor_locator(LogLocator(base=10, subs=np.arange(2, 10) * 1.0))
    axis.set_minor_formatter(NullFormatter())


def plot_phase_diagram(results, ax, reference: list[dict] | None = None):
    """Thresholds of each layer against skip strength (or depth, L, β when those vary).

    Colour = layer, line style = quantity (``α_c`` solid, staircase dashed), marker =
    setting when the rows hold several fixed settings.  ``reference``: optional extra
    points ``{"x", "direction", "alpha", "label"}`` (e.g. published values), drawn as
    crosses without error bars.
    """
    _need(results, ("thresholds",), "phase-diagram")
    rows = [r for r in results["thresholds"] if r.get("skip") is not None]
    if not rows:
        raise PlotInputError("plot phase-diagram: needs attention threshold rows (with skip)")
    xkey = _phase_axis(rows)
    others = [k for k in SETTING_KEYS if k != xkey]
    groups = defaultdict(list)
    for r in rows:
        groups[(tuple(r.get(k) for k in others), int(r["direction"]))].append(r)
    settings = sorted({g[0] for g in groups}, key=str)
    n_settings = len(settings)
    entries, ys = [], []
    for (setting, direction), rs in sorted(groups.items(), key=lambda kv: str(kv[0])):
        rs.sort(key=lambda r: r[xkey])
        x = [r[xkey] for r in rs]
        y = np.array([r["alpha_c"] for r in rs], dtype=float)
        e = np.array([r.get("stderr") or 0.0 for r in rs], dtype=float)
        fin = np.isfinite(y)
        tag = "" if n_settings == 1 else " (" + ", ".join(
            f"{k}={v}" for k, v in zip(others, setting, strict=True)
            if k != "model" and v is not None) + ")"
        c = style.layer_colour(direction - 1)
        mk = style.marker(direction - 1 if n_settings == 1 else settings.index(setting))
        art = ax.errorbar(np.array(x)[fin], y[fin], yerr=e[fin], color=c, ls="-", marker=mk)
        word = component_word(rs)
        entries.append((art, fr"{word} {direction}, $\alpha_c$ ($Q = 0$)" + tag))
        ys += list(y[fin])
        st = [r for r in rs if r.get("staircase_alpha") is not None
              and r.get("staircase_status") != "learned-first"]
        if st:
            yst = np.array([r["staircase_alpha"] for r in st], dtype=float)
            es = np.array([r.get("staircase_stderr") or 0.0 for r in st], dtype=float)
            f2 = np.isfinite(yst)
            art = ax.errorbar(np.array([r[xkey] for r in st])[f2], yst[f2], yerr=es[f2],
                              color=c, ls="--", marker=mk, mfc="none")
            entries.append((art, f"{word} {direction}, staircase" + tag))
            ys += list(yst[f2])
    for ref in _group_reference(reference or []):
        k = ref["direction"] - 1
        (art,) = ax.plot(ref["x"], ref["alpha"], ls="none", marker="x" if k % 2 else "+",
                         ms=4.5, color=style.layer_colour(k))
        entries.append((art, ref["label"]))
        ys += list(ref["alpha"])
    lens = {r.get("seq_len") for r in rows}
    if xkey == "skip" and len(lens) == 1 and isinstance(next(iter(lens)), int):
        L = next(iter(lens))
        bound = 1 / (L * (L + 1))
        art = ax.axhline(bound, color="0.5", lw=0.7, ls=":")
        entries.append((art, f"Jensen bound 1/(L(L+1)) = 1/{L * (L + 1)}"))
        ys.append(bound)
    ax.set_yscale("log")
    log_ticks(ax.yaxis, ys)
    ax.set_xlabel(AXIS_LABEL.get(xkey, xkey))
    ax.set_ylabel(r"threshold $\alpha$")
    _title(ax, rows, omit=(xkey,))
    return entries


def _group_reference(points):
    groups = defaultdict(lambda: {"x": [], "alpha": []})
    for p in points:
        g = groups[(p["label"], p["direction"])]
        g["x"].append(p["x"])
        g["alpha"].append(p["alpha"])
        g["label"], g["direction"] = p["label"], p["direction"]
    return list(groups.values())


def _panel_key(key):
    opt, alpha = key
    return (str(opt), alpha if isinstance(alpha, (int, float)) else math.inf, str(alpha))


def dynamics_panels(results) -> list[tuple]:
    """``(optimizer, α)`` of each dynamics panel, in order: by optimizer, then α."""
    _need(results, ("train-steps",), "dynamics")
    keys = {(r.get("optimizer"), r.get("alpha")) for r in results["train-steps"]
            if r.get("diverged") is not True}
    if not keys:
        raise PlotInputError("plot dynamics: every run diverged")
    return sorted(keys, key=_panel_key)


def plot_dynamics(results, axes):
    """Per-layer cosine against steps (log axis): thin line per seed, thick mean.

    ``axes``: one panel per :func:`dynamics_panels` key, in that order.  Returns the
    legend entries (one per layer, then what thin and thick lines are).
    """
    keys = dynamics_panels(results)
    groups = defaultdict(list)
    for r in results["train-steps"]:
        if r.get("diverged") is not True:
            groups[(r.get("optimizer"), r.get("alpha"))].append(r)
    n_layers, n_seeds = 0, set()
    for ax, key in zip(axes, keys, strict=True):
        rows = groups[key]
        by_seed = defaultdict(list)
        for r in rows:
            by_seed[r["seed"]].append(r)
        nl = len(np.atleast_1d(rows[0]["cosine"]))
        n_layers = max(n_layers, nl)
        n_seeds.add(len(by_seed))
        mean_acc = defaultdict(list)
        for _seed, rs in sorted(by_seed.items()):
            rs = sorted((r for r in rs if r["step"] > 0), key=lambda r: r["step"])
            steps = [r["step"] for r in rs]
            cos = np.array([np.atleast_1d(r["cosine"]) for r in rs])
            for k in range(nl):
                ax.plot(steps, cos[:, k], color=style.layer_colour(k), lw=0.4, alpha=0.35)
            for s, c in zip(steps, cos, strict=True):
                mean_acc[s].append(c)
        steps = sorted(mean_acc)
        mean = np.array([np.mean(mean_acc[s], axis=0) for s in steps])
        for k in range(nl):
            ax.plot(steps, mean[:, k], color=style.layer_colour(k), lw=1.4, ls="-")
        ax.set_xscale("log")
        ax.set_ylim(-0.02, 1.02)
        opt, alpha = key
        ax.set_title(f"{opt}, " + fr"$\alpha$ = {_fmt(alpha)}")
    seeds = "/".join(str(n) for n in sorted(n_seeds))
    entries = [(_key_handle(colour=style.layer_colour(k), lw=1.4), f"layer {k + 1}")
               for k in range(n_layers)]
    entries += [(_key_handle(lw=1.4), f"mean of {seeds} seeds"),
                (_key_handle(lw=0.4), "single seed")]
    return entries


#: Panels side by side at most, per figure width (narrower panels crowd their labels).
MAX_COLUMNS = {"single": 3, "double": 4}


def _dynamics_figure(results, width):
    """Panels sorted by (optimizer, α): one row per optimizer when several, else rows of
    at most 3 (``single`` width) or 4 (``double``); x and y shared, the y label once per
    row, the x label once per column."""
    keys = dynamics_panels(results)
    opts = sorted({str(k[0]) for k in keys})
    if len(opts) > 1:
        alphas = sorted({k[1] for k in keys}, key=lambda a: _panel_key((None, a)))
        pos = {k: (opts.index(str(k[0])), alphas.index(k[1])) for k in keys}
        nrows, ncols = len(opts), len(alphas)
    else:
        ncols = min(len(keys), MAX_COLUMNS[width])
        nrows = -(-len(keys) // ncols)
        pos = {k: divmod(i, ncols) for i, k in enumerate(keys)}
    fig, grid = style.new_figure(width, ncols=ncols, nrows=nrows, sharex=True, sharey=True)
    used = {rc[0] * ncols + rc[1] for rc in pos.values()}
    axes = [grid[pos[k][0] * ncols + pos[k][1]] for k in keys]
    for i, ax in enumerate(grid):
        if i not in used:
            fig.delaxes(ax)
    occupied = set(pos.values())
    for k, ax in zip(keys, axes, strict=True):
        r, c = pos[k]
        bottom = not any((rr, c) in occupied for rr in range(r + 1, nrows))
        left = not any((r, cc) in occupied for cc in range(c))
        ax.tick_params(labelbottom=bottom, labelleft=left)
        ax.set_xlabel("optimizer step" if bottom else "")
        ax.set_ylabel("cosine similarity" if left else "")
    entries = plot_dynamics(results, axes)
    title = setting_title(results["train"])
    if title:
        fig.suptitle(title)
    return fig, entries


# ---------------------------------------------------------------------------- entry


def _check_args(kind, width):
    if kind not in KINDS:
        raise PlotInputError(f"unknown plot kind {kind!r}; choose from {', '.join(KINDS)}")
    if width not in style.WIDTHS:
        raise PlotInputError(f"--width: one of {', '.join(style.WIDTHS)}")


def build_figure(kind: str, results, width: str = "single", skip: float | None = None,
                 reference=None):
    """The figure of ``kind`` from loaded ``results`` (:func:`load_results`), legend
    included, not saved.  Call inside :func:`validation.style.style` (and draw it there)."""
    _check_args(kind, width)
    if kind == "dynamics":
        fig, entries = _dynamics_figure(results, width)
    else:
        fig, (ax,) = style.new_figure(width)
        try:
            if kind == "overlaps":
                entries = plot_overlaps(results, ax, skip)
            elif kind == "errors":
                entries = plot_errors(results, ax, skip)
            else:
                entries = plot_phase_diagram(results, ax, reference)
        except Exception:
            import matplotlib.pyplot as plt

            plt.close(fig)
            raise
    legend_below(fig, [h for h, _ in entries], [lab for _, lab in entries])
    return fig


def make_plot(kind: str, paths, output: str, width: str = "single",
              skip: float | None = None, reference=None, provenance: dict | None = None) -> str:
    """Render ``kind`` from the result files ``paths`` to ``output`` (.pdf or .png); the
    figure's metadata records ``provenance`` and the files it was drawn from."""
    _check_args(kind, width)
    if not str(output).lower().endswith((".pdf", ".png")):
        raise PlotInputError(f"--output: {output!r} must end in .pdf or .png")
    results = load_results(paths)
    with style.style():
        fig = build_figure(kind, results, width, skip, reference)
        try:
            style.save(fig, output, CAPTIONS[kind],
                       {**(provenance or {}), "sources": [str(p) for p in paths]})
        except OSError as exc:
            raise PlotInputError(f"--output: cannot write {output!r}: {exc}") from None
    return output
