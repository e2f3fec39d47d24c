"""``smi plot``: every kind renders from small result files and is not blank; its layout
is checked with matplotlib bounding boxes (no legend over data or text, no text over text,
panels sorted, labels once per row/column, the Bayes branch drawn, overlap error bars in
[0, 1], labelled log ticks); bad input exits with status 2."""

from __future__ import annotations

import json
import math
import re
from contextlib import contextmanager

import numpy as np
import pytest
from matplotlib.image import imread
from matplotlib.lines import Line2D

from asymptotics.channels.closed_form import PhaseRetrievalChannel
from asymptotics.curves import sweep
from asymptotics.thresholds import weak_recovery_thresholds
from smi.cli import main
from validation import style
from validation.plots import CAPTIONS, build_figure, load_results, row_type


def _pixels_ok(path, min_ink=0.02, min_colours=8):
    img = imread(path)
    rgb = (img[..., :3] * 255).round().astype(np.uint8).reshape(-1, 3)
    ink = np.mean(np.any(rgb < 245, axis=1))
    colours = len(np.unique(rgb, axis=0))
    assert ink > min_ink, f"{path}: only {ink:.3%} non-white pixels"
    assert colours > min_colours, f"{path}: {colours} distinct colours"
    return ink, colours


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("results")
    rows = sweep(PhaseRetrievalChannel(), [0.3, 0.5, 0.7, 0.9, 1.1, 1.3], "both", tol=1e-9,
                 max_iter=3000)
    curve = d / "curve.json"
    curve.write_text(json.dumps(rows, indent=1))  # as `smi curve --format json`
    thr = d / "thresholds.json"
    thr.write_text(json.dumps(
        weak_recovery_thresholds(PhaseRetrievalChannel()).rows("phase-retrieval"),
        default=float))
    amp = d / "amp.jsonl"
    amp.write_text("\n".join(json.dumps(r) for r in [
        {"seed": 0, "dim": 200, "iteration": 3, "M": [[0.1]], "Q": [[0.1]], "gen_error": 2.8},
        {"final": True, "seed": 0, "dim": 200, "m": [0.2], "q": [0.21]},
        {"summary": True, "alpha": 0.7, "dim": 200, "q_mean": [0.13], "q_stderr": [0.02],
         "gen_error_mean": 2.6, "gen_error_stderr": 0.05},
        {"summary": True, "alpha": 1.3, "dim": 200, "q_mean": [0.99], "q_stderr": [0.01],
         "gen_error_mean": 0.01, "gen_error_stderr": 0.003},
    ]) + "\n")
    train = d / "train.jsonl"
    lines = []
    rng = np.random.default_rng(0)
    for alpha in (0.5, 1.0):
        for seed in range(3):
            for step in (0, 1, 3, 10, 30, 100, 300, 1000):
                grow = 1 - np.exp(-step / (200 / alpha))
                cos = [float(0.1 + 0.5 * grow * (alpha > 0.7) + 0.02 * rng.random()),
                       float(0.1 + 0.85 * grow + 0.02 * rng.random())]
                lines.append({"seed": seed, "optimizer": "adam", "alpha": alpha, "lr": 0.01,
                              "step": step, "train_loss": 0.3, "test_loss": 0.35,
                              "M": [[0.0, 0.0], [0.0, 0.0]], "Q": [[1.0, 0], [0, 1.0]],
                              "cosine": cos, "diverged": False})
        lines.append({"summary": True, "optimizer": "adam", "alpha": alpha, "dim": 100,
                      "cosine_mean": [0.2 * alpha, 0.9], "cosine_stderr": [0.02, 0.01],
                      "test_loss_mean": 0.1 / alpha, "test_loss_stderr": 0.01})
    train.write_text("\n".join(json.dumps(r) for r in lines) + "\n")
    phase = d / "phase.json"
    prow = []
    for c in (0.5, 1.0, 2.0, 4.0):
        for k, (a, sa) in enumerate(((6.0 / c**0.2, 0.72), (0.2 - 0.008 * c, None)), 1):
            r = {"model": "attention", "depth": 2, "seq_len": 2, "skip": c, "beta": 1.0,
                 "direction": k, "alpha_c": a, "stderr": 1e-3, "method": "quadrature",
                 "status": "finite"}
            if sa is not None:
                r.update(staircase_alpha=sa, staircase_stderr=0.003,
                         staircase_status="finite")
            else:
                r.update(staircase_alpha=a, staircase_stderr=1e-3,
                         staircase_status="learned-first")
            prow.append(r)
    phase.write_text(json.dumps(prow, indent=1))
    csv_phase = d / "phase.csv"
    csv_phase.write_text("model,depth,seq_len,skip,beta,direction,alpha_c,stderr,method,status\n"
                         + "".join(f"attention,2,2,{c},1.0,{k},{a},1e-6,quadrature,finite\n"
                                   for c in (0.5, 1, 2) for k, a in ((1, 6.1), (2, 0.18))))
    # a two-layer attention curve (as `smi curve --model attention --skip 1 --format
    # json`, with the setting key), overlaps of the informed branch close to 1
    attn = []
    for a in (0.5, 1.0, 2.0, 3.0, 4.0):
        qa = [min(0.9, 0.3 * a), min(0.995, 0.25 * a * a)]
        qi = [min(0.999, 0.2 + 0.25 * a), 0.999]
        for branch, q in (("amp", qa), ("informed", qi), ("bayes", qi if a > 2 else qa)):
            attn.append({"skip": 1.0, "alpha": a, "branch": branch,
                         "Q": [[q[0], 0.0], [0.0, q[1]]],
                         "Q_stderr": [[0.004, 0.0], [0.0, 0.01]], "free_entropy": -1.0 / a,
                         "free_entropy_stderr": 1e-3, "gen_error_plugin": 1.0 / a,
                         "gen_error_plugin_stderr": 1e-3, "gen_error_bayes": 0.8 / a,
                         "gen_error_bayes_stderr": 1e-3, "converged": True})
    attn_curve = d / "attn_curve.json"
    attn_curve.write_text(json.dumps(attn))
    journal = d / "attn_journal.jsonl"  # `smi curve --output`: AMP and informed rows only
    journal.write_text("".join(json.dumps(r) + "\n" for r in attn if r["branch"] != "bayes"))
    attn_amp = d / "attn_amp.jsonl"  # overlaps within a standard error of 1 and of 0
    attn_amp.write_text("".join(json.dumps(r) + "\n" for r in [
        {"summary": True, "model": "attention", "alpha": 1.0, "dim": 400,
         "q_mean": [0.004, 0.3], "q_stderr": [0.01, 0.02], "gen_error_mean": 1.1,
         "gen_error_stderr": 0.02},
        {"summary": True, "model": "attention", "alpha": 4.0, "dim": 400,
         "q_mean": [0.99, 0.995], "q_stderr": [0.02, 0.03], "gen_error_mean": 0.3,
         "gen_error_stderr": 0.02}]))
    attn_train = d / "attn_train.jsonl"
    attn_train.write_text("".join(json.dumps(r) + "\n" for r in [
        {"summary": True, "optimizer": "adam", "alpha": a, "dim": 100, "depth": 2,
         "seq_len": 2, "skip": 1.0, "beta": 1.0, "cosine_mean": [c1, c2],
         "cosine_stderr": [0.03, 0.02], "test_loss_mean": 0.5 / a, "test_loss_stderr": 0.01}
        for a, c1, c2 in ((1.0, 0.3, 0.6), (3.0, 0.9, 0.99))]))
    attn_thr = d / "attn_thresholds.json"
    attn_thr.write_text(json.dumps([r for r in prow if r["skip"] == 1.0]))
    # dynamics: α in file order 10, 2, 6 (one optimizer, one row); six panels (two rows);
    # two optimizers (a row each)
    dyn = {}
    for name, runs in (("dyn3", [("adam", a) for a in (10.0, 2.0, 6.0)]),
                       ("dyn6", [("adam", a) for a in (10.0, 2.0, 6.0, 0.5, 4.0, 1.0)]),
                       ("dyn2opt", [(o, a) for o in ("sgd", "adam") for a in (6.0, 2.0)])):
        out = []
        for opt, alpha in runs:
            for seed in range(2):
                for step in (0, 1, 10, 100, 1000):
                    g = 1 - np.exp(-step * alpha / 300)
                    out.append({"seed": seed, "optimizer": opt, "alpha": alpha, "step": step,
                                "cosine": [0.1 + 0.6 * g, 0.1 + 0.85 * g + 0.01 * seed],
                                "diverged": False})
        dyn[name] = d / f"{name}.jsonl"
        dyn[name].write_text("".join(json.dumps(r) + "\n" for r in out))
    return {"curve": curve, "thr": thr, "amp": amp, "train": train, "phase": phase,
            "csv": csv_phase, "dir": d, "attn_curve": attn_curve, "journal": journal,
            "attn_amp": attn_amp, "attn_train": attn_train, "attn_thr": attn_thr, **dyn}


def test_file_types_detected_by_keys(files):
    res = load_results([files["curve"], files["thr"], files["amp"], files["train"],
                        files["csv"]])
    assert len(res["curve"]) == 18 and len(res["amp"]) == 2 and len(res["train"]) == 2
    assert len(res["train-steps"]) == 48 and len(res["thresholds"]) == 1 + 6
    assert row_type({"alpha": 1, "foo": 2}) is None


# ------------------------------------------------------------------ layout checks


@contextmanager
def figure(files, kind, keys, width="single", skip=None):
    """The figure ``smi plot`` would save, drawn (constrained layout done), then closed."""
    import matplotlib.pyplot as plt

    with style.style():
        fig = build_figure(kind, load_results([files[k] for k in keys]), width, skip)
        try:
            fig.canvas.draw()
            yield fig
        finally:
            plt.close(fig)


def _overlap(a, b, tol=0.5) -> bool:
    """Bounding boxes sharing more than ``tol`` pixels in both directions."""
    return (min(a.x1, b.x1) - max(a.x0, b.x0) > tol
            and min(a.y1, b.y1) - max(a.y0, b.y0) > tol)


def _texts(fig):
    """Every visible, non-empty text outside legends: tick labels, axis labels, titles."""
    out = []
    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            # the ticks drawn (inside the view); get_ticklabels also returns stale ones
            out += [t for tick in axis._update_ticks() for t in (tick.label1, tick.label2)]
            out.append(axis.label)
        out += [ax.title, ax._left_title, ax._right_title, *ax.texts]
    out += list(fig.texts)
    if fig._suptitle is not None:
        out.append(fig._suptitle)
    return [t for t in out if t.get_visible() and t.get_text().strip()]


def _data_boxes(fig, renderer):
    """Window extents of every drawn line, marker, error bar and band, cut to its axes."""
    from matplotlib.transforms import Bbox

    boxes = []
    for ax in fig.axes:
        frame = ax.get_window_extent(renderer)
        for art in [*ax.lines, *ax.collections, *ax.patches]:
            if not art.get_visible():
                continue
            bb = art.get_window_extent(renderer)
            if not np.all(np.isfinite(bb.extents)):
                continue
            cut = Bbox.intersection(bb, frame)
            if cut is not None:
                boxes.append((cut, art))
    return boxes


def check_layout(fig):
    """No legend over data, axes or text; no text over other text; everything inside."""
    renderer = fig.canvas.get_renderer()
    legends = list(fig.legends) + [ax.get_legend() for ax in fig.axes if ax.get_legend()]
    assert len(legends) == 1, f"{len(legends)} legends (one per figure)"
    texts = _texts(fig)
    tboxes = [(t.get_window_extent(renderer), t.get_text()) for t in texts]
    data = _data_boxes(fig, renderer)
    assert data, "nothing drawn"
    page = fig.bbox
    for leg in legends:
        lb = leg.get_window_extent(renderer)
        assert page.x0 - 1 <= lb.x0 and lb.x1 <= page.x1 + 1 and page.y0 - 1 <= lb.y0, \
            "legend outside the figure"
        for ax in fig.axes:
            assert not _overlap(lb, ax.get_window_extent(renderer)), "legend over an axes"
        for bb, art in data:
            assert not _overlap(lb, bb), f"legend over {art}"
        for bb, txt in tboxes:
            assert not _overlap(lb, bb), f"legend over the text {txt!r}"
    for i, (a, ta) in enumerate(tboxes):
        for b, tb in tboxes[i + 1:]:
            assert not _overlap(a, b), f"text {ta!r} over text {tb!r}"
    return legends[0]


def _legend_labels(fig):
    return [t.get_text() for t in fig.legends[0].get_texts()]


def _rows(axes, pick):
    """Axes grouped by their row (or column), with ``pick(ax)`` of each."""
    groups = {}
    for ax in axes:
        p = ax.get_position()
        groups.setdefault(round(p.y0, 3), []).append(pick(ax))
    return groups


@pytest.mark.parametrize("kind,keys", [
    ("overlaps", ["curve", "thr", "amp", "train"]),
    ("overlaps", ["attn_curve", "attn_thr", "attn_amp", "attn_train"]),
    ("errors", ["curve", "amp", "train"]),
    ("errors", ["attn_curve", "attn_thr", "attn_amp", "attn_train"]),
    ("phase-diagram", ["phase"]),
    ("phase-diagram", ["csv"]),
    ("dynamics", ["train"]),
    ("dynamics", ["dyn3"]),
    ("dynamics", ["dyn6"]),
    ("dynamics", ["dyn2opt"]),
])
def test_every_kind_renders_with_a_clean_layout_at_every_width(files, kind, keys, tmp_path):
    out = tmp_path / f"{kind}.png"
    assert main(["plot", kind, *map(str, (files[k] for k in keys)), "--output", str(out)]) == 0
    _pixels_ok(out)
    for width in style.WIDTHS:
        with figure(files, kind, keys, width) as fig:
            check_layout(fig)


def test_layout_check_catches_a_legend_over_data(files):
    """The check is not vacuous: a legend inside the axes, over the curves, fails it."""
    with figure(files, "overlaps", ["attn_curve", "attn_amp"]) as fig:
        fig.legends[0].remove()
        ax = fig.axes[0]
        ax.legend([Line2D([], [])] * 3, ["a long legend entry"] * 3, loc="center")
        fig.canvas.draw()
        with pytest.raises(AssertionError, match="legend over"):
            check_layout(fig)


def test_overlaps_branches_and_clipped_error_bars(files):
    rows = json.loads(files["attn_curve"].read_text())
    with figure(files, "overlaps", ["attn_curve", "attn_amp", "attn_train"]) as fig:
        (ax,) = fig.axes
        for branch, ls in (("bayes", "-"), ("amp", "--")):
            q = np.array([np.diag(r["Q"]) for r in rows if r["branch"] == branch])
            for k in range(2):
                assert any(line.get_linestyle() == ls and len(line.get_ydata()) == len(q)
                           and np.allclose(line.get_ydata(), q[:, k])
                           and line.get_color() == style.layer_colour(k)
                           for line in ax.lines), (branch, k)
        assert not [ln for ln in ax.lines if ln.get_linestyle() == ":"], \
            "informed branch drawn although bayes rows are present"
        labels = _legend_labels(fig)
        assert {"layer 1", "layer 2", "SE, Bayes-optimal", "SE, AMP branch"} <= set(labels)
        assert "SE, informed branch" not in labels
        # error bars: at least one was clipped (q = 0.995 ± 0.03), none leaves [0, 1]
        ys = np.concatenate([seg[:, 1] for c in ax.containers for bars in c.lines[2]
                             for seg in bars.get_segments()])
        assert ys.min() >= -1e-12 and ys.max() <= 1 + 1e-12
        assert np.isclose(ys.max(), 1.0) and np.isclose(ys.min(), 0.0)
        assert "skip c = 1" in ax.get_title() and "attention" in ax.get_title()
        check_layout(fig)
    with figure(files, "overlaps", ["journal"]) as fig:  # no bayes rows: informed dotted
        (ax,) = fig.axes
        assert [ln for ln in ax.lines if ln.get_linestyle() == ":"]
        assert "SE, informed branch" in _legend_labels(fig)
        assert "SE, Bayes-optimal" not in _legend_labels(fig)


def test_overlaps_caption_in_metadata(files, tmp_path):
    from PIL import Image

    out = tmp_path / "o.png"
    assert main(["plot", "overlaps", str(files["attn_curve"]), str(files["attn_amp"]),
                 "--output", str(out)]) == 0
    assert Image.open(out).text["Description"] == CAPTIONS["overlaps"]
    assert "clipped to the physical range [0, 1]" in CAPTIONS["overlaps"]


def test_errors_colours_are_not_layer_colours(files):
    with figure(files, "errors", ["attn_curve", "attn_amp", "attn_train"]) as fig:
        (ax,) = fig.axes
        layer = {style.layer_colour(k) for k in range(2)}
        colours = {ln.get_color() for ln in ax.lines if len(ln.get_xdata()) > 0}
        assert colours and not colours & layer
        assert {"plug-in error", "Bayes-optimal error"} <= set(_legend_labels(fig))


@pytest.mark.parametrize("name,n", [("dyn3", 3), ("dyn6", 6), ("dyn2opt", 4)])
def test_dynamics_panels_sorted_labels_once(files, name, n):
    with figure(files, "dynamics", [name], "double") as fig:
        axes = fig.axes
        assert len(axes) == n
        titles = [ax.get_title() for ax in axes]
        keys = [(t.split(",")[0], float(re.search(r"= ([0-9.]+)", t).group(1)))
                for t in titles]
        # reading order (rows top to bottom, then left to right) is sorted
        order = sorted(range(n), key=lambda i: (-axes[i].get_position().y0,
                                                axes[i].get_position().x0))
        assert [keys[i] for i in order] == sorted(keys), titles
        if name == "dyn3":
            assert [k[1] for k in keys] == [2.0, 6.0, 10.0]
        for row in _rows(axes, lambda ax: ax.get_ylabel()).values():
            assert [y for y in row if y] == ["cosine similarity"], row
        cols = {}
        for ax in axes:
            cols.setdefault(round(ax.get_position().x0, 3), []).append(ax.get_xlabel())
        for col in cols.values():
            assert [x for x in col if x] == ["optimizer step"], col
        # one y scale: shared axes
        assert len({ax.get_ylim() for ax in axes}) == 1
        labels = _legend_labels(fig)
        assert labels.count("layer 1") == 1 and labels.count("layer 2") == 1


def test_phase_diagram_log_ticks_labelled_in_the_data_range(files):
    with figure(files, "phase-diagram", ["phase"]) as fig:
        (ax,) = fig.axes
        curves = [np.asarray(ln.get_ydata(), dtype=float) for ln in ax.lines
                  if len(ln.get_ydata()) > 1]
        ys = np.concatenate(curves)
        ys = ys[np.isfinite(ys) & (ys > 0)]
        lo, hi = ax.get_ylim()
        ticks = [(loc, t.get_text()) for loc, t in zip(ax.yaxis.get_majorticklocs(),
                                                        ax.yaxis.get_majorticklabels(),
                                                        strict=True)
                 if lo <= loc <= hi and t.get_text()]
        inside = [loc for loc, _ in ticks if ys.min() <= loc <= ys.max()]
        assert len(inside) >= 2, ticks
        # every curve (the layer-2 one at 0.17-0.20 included) has a labelled tick near it
        for y in curves:
            y = y[np.isfinite(y) & (y > 0)]
            mid = math.exp(np.mean(np.log(y)))
            assert min(abs(math.log(loc / mid)) for loc, _ in ticks) < math.log(1.6), \
                (mid, ticks)
        # plain numbers, not 2×10^-1
        assert all(re.fullmatch(r"[0-9.]+", txt.replace("\u2212", "-")) for _, txt in ticks)


def test_pdf_output(files, tmp_path):
    pdf = tmp_path / "overlaps.pdf"
    assert main(["plot", "overlaps", str(files["curve"]), str(files["amp"]), "--output",
                 str(pdf), "--width", "double"]) == 0
    assert pdf.read_bytes()[:4] == b"%PDF"


def test_widths_follow_the_style(files, tmp_path):
    out = {}
    for w in ("single", "double"):
        p = tmp_path / f"{w}.png"
        assert main(["plot", "phase-diagram", str(files["phase"]), "--output", str(p),
                     "--width", w]) == 0
        out[w] = imread(p).shape[1]
    # bbox "tight" trims a little; the ratio of widths stays close to 7 / 3.4
    assert 1.7 < out["double"] / out["single"] < 2.4
    assert style.WIDTHS == {"single": 3.4, "double": 7.0}
    assert not style.RC["text.usetex"]


def test_bad_input_exits_2(files, tmp_path, capsys):
    junk = tmp_path / "junk.txt"
    junk.write_bytes(b"\x00\x01 not a result")
    unknown = tmp_path / "unknown.json"
    unknown.write_text(json.dumps([{"hello": 1}]))
    badjson = tmp_path / "bad.jsonl"
    badjson.write_text('{"alpha": 1}\n{oops\n')
    empty = tmp_path / "empty.json"
    empty.write_text("")
    png = str(tmp_path / "x.png")
    cases = [
        ["plot", "overlaps", str(tmp_path / "missing.json"), "--output", png],
        ["plot", "overlaps", str(junk), "--output", png],
        ["plot", "overlaps", str(unknown), "--output", png],
        ["plot", "overlaps", str(badjson), "--output", png],
        ["plot", "overlaps", str(empty), "--output", png],
        ["plot", "dynamics", str(files["curve"]), "--output", png],  # wrong type for kind
        ["plot", "phase-diagram", str(files["curve"]), "--output", png],
        ["plot", "overlaps", str(files["curve"]), "--output", str(tmp_path / "x.svg")],
        ["plot", "nonsense", str(files["curve"]), "--output", png],
        ["plot", "overlaps", str(files["curve"]), "--output", png, "--width", "triple"],
        ["plot", "overlaps", str(files["curve"]), str(files["phase"]), "--output", png,
         "--skip", "3"],
    ]
    for argv in cases:
        capsys.readouterr()
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert err and len(err.splitlines()) == 1, (argv, err)


def test_a_link_model_names_its_formula_and_directions():
    from validation.plots import component_word, setting_title

    rows = [{"model": "link", "link": "sign(z1*z2)", "direction": 1},
            {"model": "link", "link": "sign(z1*z2)", "direction": 2}]
    assert setting_title(rows) == "link, g = sign(z1*z2)"
    assert component_word(rows) == "direction"
    assert component_word([{"model": "attention", "depth": 2}]) == "layer"
    assert component_word([{"alpha": 1.0}]) == "layer"  # network rows name no model
