"""``smi plot``: every kind renders from small result files and is not blank; bad input
exits with status 2."""

from __future__ import annotations

import json

import numpy as np
import pytest
from matplotlib.image import imread

from asymptotics.channels.closed_form import PhaseRetrievalChannel
from asymptotics.curves import sweep
from asymptotics.thresholds import weak_recovery_thresholds
from smi.cli import main
from validation import style
from validation.plots import load_results, row_type


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
    return {"curve": curve, "thr": thr, "amp": amp, "train": train, "phase": phase,
            "csv": csv_phase, "dir": d}


def test_file_types_detected_by_keys(files):
    res = load_results([files["curve"], files["thr"], files["amp"], files["train"],
                        files["csv"]])
    assert len(res["curve"]) == 18 and len(res["amp"]) == 2 and len(res["train"]) == 2
    assert len(res["train-steps"]) == 48 and len(res["thresholds"]) == 1 + 6
    assert row_type({"alpha": 1, "foo": 2}) is None


@pytest.mark.parametrize("kind,keys", [
    ("overlaps", ["curve", "thr", "amp", "train"]),
    ("errors", ["curve", "amp", "train"]),
    ("phase-diagram", ["phase"]),
    ("phase-diagram", ["csv"]),
    ("dynamics", ["train"]),
])
def test_every_kind_renders_non_blank(files, kind, keys, tmp_path):
    out = tmp_path / f"{kind}.png"
    assert main(["plot", kind, *map(str, (files[k] for k in keys)), "--output", str(out)]) == 0
    _pixels_ok(out)


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
