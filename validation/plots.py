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
"""

from __future__ import annotations

import math
import os
from collections import defaultdict

import numpy as np

from asymptotics.results import ResultFileError, read_rows, row_kind

from . import style

KINDS = ("overlaps", "errors", "phase-diagram", "dynamics")
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


def _mark_thresholds(ax, rows, xlim):
    for r in rows:
        k = int(r["direction"]) - 1
        for key, err_key, ls, name in (("alpha_c", "stderr", ":", r"$\alpha_c$"),
                                       ("staircase_alpha", "staircase_stderr", "-.",
                                        "staircase")):
            a = r.get(key)
            if a is None or not isinstance(a, (int, float)) or not math.isfinite(a):
                continue
            if key == "staircase_alpha" and r.get("staircase_status") == "learned-first":
                continue
            if not xlim[0] <= a <= xlim[1]:
                continue
            ax.axvline(a, color=style.colour(k), ls=ls, lw=0.8,
                       label=f"{name} layer {k + 1} = {a:.4g}")
            err = r.get(err_key) or 0.0
            if err > 0:
                ax.axvspan(a - err, a + err, color=style.colour(k), alpha=0.15, lw=0)


def _curve_branches(rows):
    branches = defaultdict(list)
    for r in rows:
        branches[r["branch"]].append(r)
    if "bayes" in branches:
        branches.pop("informed", None)
    for v in branches.values():
        v.sort(key=lambda r: r["alpha"])
    return branches


BRANCH_STYLE = {"amp": ("--", "SE, AMP branch"), "bayes": ("-", "SE, Bayes-optimal"),
                "informed": ("-.", "SE, informed branch")}


def _x_range(results) -> tuple[float, float]:
    xs = [r["alpha"] for t in ("curve", "amp", "train") for r in results[t]
          if r.get("alpha") is not None]
    return (min(xs), max(xs)) if xs else (0.0, math.inf)


def _finish(ax, legend=True, loc="best"):
    if legend and ax.get_legend_handles_labels()[0]:
        ax.legend(loc=loc)


# ---------------------------------------------------------------------------- kinds


def plot_overlaps(results, ax, thresholds_skip=None):
    """Overlap of each layer against α: SE lines, AMP and training points, thresholds."""
    _need(results, ("curve", "amp", "train"), "overlaps")
    for b, rows in _curve_branches(results["curve"]).items():
        ls, name = BRANCH_STYLE.get(b, (":", b))
        alphas = [r["alpha"] for r in rows]
        q = np.array([_diag(r["Q"]) for r in rows])
        qe = np.array([_diag(r.get("Q_stderr") or np.zeros_like(r["Q"])) for r in rows])
        for k in range(q.shape[1]):
            ax.errorbar(alphas, q[:, k], yerr=qe[:, k], color=style.colour(k), ls=ls,
                        marker=".", ms=2.5, label=f"{name}, layer {k + 1}")
    amp = sorted(results["amp"], key=lambda r: r.get("alpha") or 0)
    amp = [r for r in amp if r.get("q_mean") is not None and r.get("alpha") is not None]
    if amp:
        q = np.array([np.atleast_1d(r["q_mean"]) for r in amp])
        e = np.array([np.atleast_1d(r["q_stderr"]) for r in amp])
        for k in range(q.shape[1]):
            ax.errorbar([r["alpha"] for r in amp], q[:, k], yerr=e[:, k], ls="none",
                        marker=style.marker(k), mfc="none", color=style.colour(k),
                        label=f"AMP (D = {amp[0].get('dim', '?')}), layer {k + 1}")
    train = [r for r in results["train"] if r.get("cosine_mean") is not None]
    train.sort(key=lambda r: r["alpha"])
    if train:
        c = np.array([np.atleast_1d(r["cosine_mean"]) for r in train])
        e = np.array([np.atleast_1d(r["cosine_stderr"]) for r in train])
        for k in range(c.shape[1]):
            ax.errorbar([r["alpha"] for r in train], c[:, k] ** 2,
                        yerr=2 * np.abs(c[:, k]) * e[:, k], ls="none",
                        marker=style.marker(k + 3), color=style.colour(k),
                        label=f"training ({train[0].get('optimizer', '?')}), "
                              fr"$\cos^2$ layer {k + 1}")
    if results["thresholds"]:
        _mark_thresholds(ax, select_thresholds(results["thresholds"], thresholds_skip),
                         _x_range(results))
    ax.set_xlabel(r"sample ratio $\alpha = N/D$")
    ax.set_ylabel(r"overlap $Q_{kk}$")
    ax.set_ylim(-0.03, 1.03)
    _finish(ax)


def plot_errors(results, ax, thresholds_skip=None):
    """Plug-in and Bayes-optimal generalisation errors against α (log y)."""
    _need(results, ("curve", "amp", "train"), "errors")
    for b, rows in _curve_branches(results["curve"]).items():
        ls, name = BRANCH_STYLE.get(b, (":", b))
        alphas = [r["alpha"] for r in rows]
        for j, (key, lab) in enumerate((("gen_error_plugin", "plug-in"),
                                        ("gen_error_bayes", "Bayes-optimal"))):
            y = np.array([r[key] for r in rows], dtype=float)
            e = np.array([r.get(f"{key}_stderr") or 0.0 for r in rows], dtype=float)
            ax.errorbar(alphas, y, yerr=e, color=style.colour(j), ls=ls, marker=".", ms=2.5,
                        label=f"{lab}, {name}")
    amp = [r for r in results["amp"] if r.get("gen_error_mean") is not None]
    amp.sort(key=lambda r: r["alpha"])
    if amp:
        ax.errorbar([r["alpha"] for r in amp], [r["gen_error_mean"] for r in amp],
                    yerr=[r["gen_error_stderr"] for r in amp], ls="none", marker="o",
                    mfc="none", color=style.colour(0),
                    label=f"plug-in, AMP (D = {amp[0].get('dim', '?')})")
    train = [r for r in results["train"] if r.get("test_loss_mean") is not None]
    train.sort(key=lambda r: r["alpha"])
    if train:
        ax.errorbar([r["alpha"] for r in train], [r["test_loss_mean"] for r in train],
                    yerr=[r["test_loss_stderr"] for r in train], ls="none", marker="^",
                    color=style.colour(2),
                    label=f"test error, training ({train[0].get('optimizer', '?')})")
    if results["thresholds"]:
        _mark_thresholds(ax, select_thresholds(results["thresholds"], thresholds_skip),
                         _x_range(results))
    ax.set_yscale("log")
    ax.set_xlabel(r"sample ratio $\alpha = N/D$")
    ax.set_ylabel(r"generalisation error $E\|g(Z^*) - \hat g\|^2$")
    _finish(ax)


def _phase_axis(rows) -> str:
    for key in ("skip", "depth", "seq_len", "beta"):
        if len({r.get(key) for r in rows}) > 1:
            return key
    return "skip"


AXIS_LABEL = {"skip": "skip strength $c$", "depth": r"depth $\ell$",
              "seq_len": "sequence length $L$", "beta": r"inverse temperature $\beta$"}


def plot_phase_diagram(results, ax, reference: list[dict] | None = None):
    """Thresholds of each layer against skip strength (or depth, L, β when those vary).

    ``reference``: optional extra points ``{"x", "direction", "alpha", "label"}``
    (e.g. published values), drawn as crosses without error bars.
    """
    _need(results, ("thresholds",), "phase-diagram")
    rows = [r for r in results["thresholds"] if r.get("skip") is not None]
    if not rows:
        raise PlotInputError("plot phase-diagram: needs attention threshold rows (with skip)")
    xkey = _phase_axis(rows)
    others = [k for k in ("model", "depth", "seq_len", "skip", "beta") if k != xkey]
    groups = defaultdict(list)
    for r in rows:
        groups[(tuple(r.get(k) for k in others), int(r["direction"]))].append(r)
    n_settings = len({g[0] for g in groups})
    i = 0
    for (setting, direction), rs in sorted(groups.items(), key=lambda kv: str(kv[0])):
        rs.sort(key=lambda r: r[xkey])
        x = [r[xkey] for r in rs]
        y = np.array([r["alpha_c"] for r in rs], dtype=float)
        e = np.array([r.get("stderr") or 0.0 for r in rs], dtype=float)
        fin = np.isfinite(y)
        tag = "" if n_settings == 1 else " (" + ", ".join(
            f"{k}={v}" for k, v in zip(others, setting, strict=True)
            if k != "model" and v is not None) + ")"
        c = style.colour(direction - 1 + 2 * (i // 2 if n_settings > 1 else 0))
        ax.errorbar(np.array(x)[fin], y[fin], yerr=e[fin], color=c, ls="-",
                    marker=style.marker(direction - 1),
                    label=fr"layer {direction}, $Q = 0$" + tag)
        st = [r for r in rs if r.get("staircase_alpha") is not None
              and r.get("staircase_status") != "learned-first"]
        if st:
            ys = np.array([r["staircase_alpha"] for r in st], dtype=float)
            es = np.array([r.get("staircase_stderr") or 0.0 for r in st], dtype=float)
            f2 = np.isfinite(ys)
            ax.errorbar(np.array([r[xkey] for r in st])[f2], ys[f2], yerr=es[f2], color=c,
                        ls="--", marker=style.marker(direction - 1), mfc="none",
                        label=f"layer {direction}, staircase" + tag)
        i += 1
    for ref in _group_reference(reference or []):
        k = ref["direction"] - 1
        ax.plot(ref["x"], ref["alpha"], ls="none", marker="x" if k % 2 else "+", ms=4.5,
                color=style.colour(k), label=ref["label"])
    lens = {r.get("seq_len") for r in rows}
    if xkey == "skip" and len(lens) == 1 and isinstance(next(iter(lens)), int):
        L = next(iter(lens))
        ax.axhline(1 / (L * (L + 1)), color="0.5", lw=0.7, ls=":",
                   label=f"Jensen bound 1/(L(L+1)) = 1/{L * (L + 1)}")
    ax.set_yscale("log")
    ax.set_xlabel(AXIS_LABEL.get(xkey, xkey))
    ax.set_ylabel(r"threshold $\alpha$")
    _finish(ax, loc="upper left")


def _group_reference(points):
    groups = defaultdict(lambda: {"x": [], "alpha": []})
    for p in points:
        g = groups[(p["label"], p["direction"])]
        g["x"].append(p["x"])
        g["alpha"].append(p["alpha"])
        g["label"], g["direction"] = p["label"], p["direction"]
    return list(groups.values())


def plot_dynamics(results, axes_factory):
    """Per-layer cosine against steps (log axis): thin line per seed, thick mean."""
    _need(results, ("train-steps",), "dynamics")
    groups = defaultdict(list)
    for r in results["train-steps"]:
        if r.get("diverged") is True:
            continue
        groups[(r.get("optimizer"), r.get("alpha"))].append(r)
    if not groups:
        raise PlotInputError("plot dynamics: every run diverged")
    keys = sorted(groups, key=str)
    axes = axes_factory(len(keys))
    for ax, key in zip(axes, keys, strict=False):
        rows = groups[key]
        by_seed = defaultdict(list)
        for r in rows:
            by_seed[r["seed"]].append(r)
        n_layers = len(np.atleast_1d(rows[0]["cosine"]))
        mean_acc = defaultdict(list)
        for _seed, rs in sorted(by_seed.items()):
            rs = sorted((r for r in rs if r["step"] > 0), key=lambda r: r["step"])
            steps = [r["step"] for r in rs]
            cos = np.array([np.atleast_1d(r["cosine"]) for r in rs])
            for k in range(n_layers):
                ax.plot(steps, cos[:, k], color=style.colour(k), lw=0.4, alpha=0.35)
            for s, c in zip(steps, cos, strict=True):
                mean_acc[s].append(c)
        steps = sorted(mean_acc)
        mean = np.array([np.mean(mean_acc[s], axis=0) for s in steps])
        for k in range(n_layers):
            ax.plot(steps, mean[:, k], color=style.colour(k), lw=1.4, ls=style.linestyle(k),
                    label=f"layer {k + 1}, mean of {len(by_seed)} seeds")
        ax.set_xscale("log")
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel("optimizer step")
        ax.set_ylabel("cosine similarity")
        opt, alpha = key
        ax.set_title(f"{opt}, " + fr"$\alpha$ = {alpha}")
        _finish(ax)
    return axes


# ---------------------------------------------------------------------------- entry


def make_plot(kind: str, paths, output: str, width: str = "single",
              skip: float | None = None, reference=None) -> str:
    """Render ``kind`` from the result files ``paths`` to ``output`` (.pdf or .png)."""
    if kind not in KINDS:
        raise PlotInputError(f"unknown plot kind {kind!r}; choose from {', '.join(KINDS)}")
    if not str(output).lower().endswith((".pdf", ".png")):
        raise PlotInputError(f"--output: {output!r} must end in .pdf or .png")
    if width not in style.WIDTHS:
        raise PlotInputError(f"--width: one of {', '.join(style.WIDTHS)}")
    results = load_results(paths)
    with style.style():
        if kind == "dynamics":
            holder = {}

            def factory(n):
                holder["fig"], axes = style.new_figure(width, ncols=min(n, 4))
                return axes

            plot_dynamics(results, factory)
            fig = holder["fig"]
        else:
            fig, (ax,) = style.new_figure(width)
            if kind == "overlaps":
                plot_overlaps(results, ax, skip)
            elif kind == "errors":
                plot_errors(results, ax, skip)
            else:
                plot_phase_diagram(results, ax, reference)
        try:
            style.save(fig, output)
        except OSError as exc:
            raise PlotInputError(f"--output: cannot write {output!r}: {exc}") from None
    return output
