"""``smi figure theory-vs-simulation`` on a tiny budget (phase retrieval: closed-form SE,
a finite threshold α_c = 1/2, AMP in a second): it exits 0, its figure is not blank and has
the structure of the paper figure, its data file the expected rows; bad input is one line
and exit status 2.  Also: the style files (paper variant serif) and the progress output."""

from __future__ import annotations

import io
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib.container import ErrorbarContainer
from matplotlib.image import imread

import smi.output
from asymptotics.results import read_result_file
from smi.cli import main
from smi.commands.plot import STYLES
from validation import style
from validation import theory_vs_simulation as tvs

DIMS = (50, 100)
ALPHAS = (0.4, 1.0)
TINY = ["figure", "theory-vs-simulation", "--model", "phase-retrieval", "--alphas",
        ",".join(map(str, ALPHAS)), "--dims", ",".join(map(str, DIMS)), "--seeds", "2",
        "--max-iter", "20", "--n-test", "100", "--workers", "1"]


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    d = tmp_path_factory.mktemp("figure")
    fig = d / "fig.png"
    assert main([*TINY, "--output", str(fig), "--quiet"]) == 0
    return fig, d / "fig.jsonl"


def test_figure_is_not_blank(made):
    fig, _ = made
    img = imread(fig)
    rgb = (img[..., :3] * 255).round().astype(np.uint8).reshape(-1, 3)
    assert np.mean(np.any(rgb < 245, axis=1)) > 0.02
    assert len(np.unique(rgb, axis=0)) > 8


def test_data_file_rows(made):
    _, data = made
    f = read_result_file(data)
    assert f.header["kind"] == "theory-vs-simulation"
    assert f.header["settings"]["dims"] == list(DIMS)
    parts = {r["part"] for r in f.rows}
    assert parts == {"se", "thresholds", "amp", "amp-final", "gap"}
    se = [r for r in f.rows if r["part"] == "se"]
    assert {r["branch"] for r in se} == {"amp", "informed", "bayes"}
    assert {r["alpha"] for r in se} == set(ALPHAS)
    amp = [r for r in f.rows if r["part"] == "amp"]
    assert sorted((r["alpha"], r["dim"]) for r in amp) == \
        sorted((a, d) for a in ALPHAS for d in DIMS)
    assert all({"q_mean", "q_stderr", "n_seeds"} <= set(r) for r in amp)
    gaps = [r for r in f.rows if r["part"] == "gap"]
    assert len(gaps) == len(ALPHAS) * len(DIMS)  # one layer
    for r in gaps:
        assert {"alpha", "dim", "inv_dim", "layer", "amp", "se", "gap", "gap_stderr"} <= set(r)
        assert r["gap"] == pytest.approx(abs(r["amp"] - r["se"]))
        assert r["inv_dim"] == pytest.approx(1 / r["dim"])
    thr = [r for r in f.rows if r["part"] == "thresholds"]
    assert thr and thr[0]["alpha_c"] == pytest.approx(0.5, abs=1e-6)


def test_figure_structure(made):
    _, data = made
    rows = read_result_file(data).rows
    with style.style():
        fig = tvs.build_figure(rows)
        try:
            fig.canvas.draw()
            axes = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]
            assert len(axes) == 2
            left, right = axes
            labels = [ln.get_label() for ln in left.get_lines()]
            for branch in ("bayes", "amp"):  # one SE line per layer and branch
                assert labels.count(f"SE {branch} layer 1") == 1
            bars = [c for c in left.containers if isinstance(c, ErrorbarContainer)]
            assert sorted(c.get_label() for c in bars) == sorted(f"AMP D={d}" for d in DIMS)
            vertical = [ln for ln in left.get_lines()
                        if len(ln.get_xdata()) == 2 and ln.get_xdata()[0] == ln.get_xdata()[1]
                        and tuple(ln.get_ydata()) == (0, 1)]
            assert [float(ln.get_xdata()[0]) for ln in vertical] == pytest.approx([0.5])
            assert "1/D" in right.get_xlabel()
            gap_bars = [c for c in right.containers if isinstance(c, ErrorbarContainer)]
            assert len(gap_bars) == len(ALPHAS)
            for c in gap_bars:
                x = sorted(c.lines[0].get_xdata())
                assert x == pytest.approx(sorted(1 / d for d in DIMS))
            assert right.get_xlim()[0] == 0
        finally:
            plt.close(fig)


def test_paper_style_pdf(made, tmp_path):
    _, data = made
    out = tmp_path / "paper.pdf"
    assert main([*TINY, "--output", str(out), "--style", "paper", "--width", "single",
                 "--quiet"]) == 0
    assert out.stat().st_size > 1000 and (tmp_path / "paper.jsonl").exists()


@pytest.mark.parametrize("extra,option", [
    (["--alphas", "0,1"], "--alphas"),
    (["--dims", "1,100"], "--dims"),
    (["--seeds", "1"], "--seeds"),
    (["--output", "fig.svg"], "--output"),
    (["--optimizers", "adam"], "--optimizers"),  # attention only
    (["--depth", "3"], "--depth"),  # attention only
    (["--sobol-log2", "2"], "--sobol-log2"),
])
def test_bad_input_exits_2(extra, option, tmp_path, capsys):
    argv = [*TINY, "--output", str(tmp_path / "f.png"), *extra]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and option in err[0] and err[0].startswith("smi figure")
    assert not list(tmp_path.iterdir())  # nothing written


def test_bad_optimizer_name(tmp_path, capsys):
    argv = ["figure", "theory-vs-simulation", "--optimizers", "nonsense", "--output",
            str(tmp_path / "f.png")]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--optimizers" in err[0]


def test_budgets_written_out_match_the_library():
    from smi.commands.figure import BUDGETS
    from smi.options import parse_values

    assert set(BUDGETS) == set(tvs.BUDGETS)
    for name, sizes in BUDGETS.items():
        assert parse_values(sizes["alphas"], "alphas") == \
            pytest.approx(tvs.BUDGETS[name]["alphas"])
        assert [int(d) for d in sizes["dims"].split(",")] == tvs.BUDGETS[name]["dims"]
        for key in ("seeds", "sobol_log2", "max_iter", "n_test", "train_steps"):
            assert int(sizes[key]) == tvs.BUDGETS[name][key]


# ------------------------------------------------------------------------------- style


def test_style_files_are_package_data():
    for f in style.style_files("paper"):
        assert f.is_file() and f.suffix == ".mplstyle"
    assert set(STYLES) == set(style.VARIANTS)
    text = Path(style.STYLE_DIR / "smi-paper.mplstyle").read_text()
    assert "usetex: True" not in text


def test_paper_variant_is_serif_without_latex():
    with style.style("paper"):
        assert plt.rcParams["font.family"] == ["serif"]
        assert plt.rcParams["mathtext.fontset"] in ("dejavuserif", "stix")
        assert not plt.rcParams["text.usetex"]
        with style.style():  # a drawing function's own style() keeps the variant
            assert plt.rcParams["font.family"] == ["serif"]
    with style.style():
        assert plt.rcParams["font.family"] == ["sans-serif"]


def test_style_file_matches_rc():
    with style.style():
        for key, value in style.RC.items():
            assert plt.rcParams[key] == plt.rcParams.validate[key](value), key


# ---------------------------------------------------------------------------- progress


LINEAR_CURVE = ["curve", "--model", "linear", "--alphas", "0.5,1,1.5", "--workers", "1"]
THRESHOLDS = ["thresholds", "--model", "attention", "--depth", "1", "--skip", "0.5,1",
              "--workers", "1"]


@pytest.mark.parametrize("argv,tasks", [(LINEAR_CURVE, 6), (THRESHOLDS, 2)])
def test_progress_off_a_terminal_is_one_line_per_task(argv, tasks, monkeypatch, capsys):
    monkeypatch.setattr(smi.output, "DELAY_S", 0.0)
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert "\r" not in err
    lines = err.strip().splitlines()
    assert len(lines) == tasks
    assert [ln.split("]")[0] for ln in lines] == [f"[{i}/{tasks}" for i in range(1, tasks + 1)]
    assert all("left" in ln for ln in lines)
    assert main([*argv, "--quiet"]) == 0
    assert capsys.readouterr().err == ""


def test_progress_on_a_terminal_is_a_tqdm_bar(monkeypatch):
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    monkeypatch.setattr(smi.output, "DELAY_S", 0.0)
    out = Terminal()
    show = smi.output.progress_bar(out)
    for i in range(1, 4):
        show(i, 3, 0.1 * i)
    text = out.getvalue()
    assert "\r" in text and "3/3" in text and text.endswith("\n")
    quiet = Terminal()
    show = smi.output.task_progress(quiet, quiet=True)
    show(1, 2, {"skip": 1}, 5.0)
    assert quiet.getvalue() == ""
