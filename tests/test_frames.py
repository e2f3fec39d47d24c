"""Labelled results (DataFrames, Datasets, Parquet) and the provenance of result files."""

from __future__ import annotations

import json
import math
import sys

import numpy as np
import pytest

import asymptotics as asy
from asymptotics import frames
from asymptotics.results import make_header, read_result_file, settings_differences
from smi.cli import main

pd = pytest.importorskip("pandas")
xr = pytest.importorskip("xarray")
pytest.importorskip("pyarrow")

THRESHOLDS = ["thresholds", "--skip", "0.5,1,2", "--method", "mc", "--mc-samples", "4096",
              "--resolution", "0", "--workers", "1"]


@pytest.fixture(scope="module")
def product_curve(tmp_path_factory):
    """A 2-layer curve (the product channel), its file and its rows."""
    path = tmp_path_factory.mktemp("curve") / "curve.jsonl"
    rows = asy.sweep(asy.make_channel("product"), [0.5, 1.0],
                     settings=asy.SESettings(sobol_log2=7), tol=1e-5, output=str(path))
    return path, rows


@pytest.fixture(scope="module")
def threshold_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("thresholds") / "t.csv"
    assert main([*THRESHOLDS, "--format", "csv", "--output", str(path)]) == 0
    return path


def test_curve_file_to_frame_keeps_the_numbers_and_expands_q(product_curve):
    path, rows = product_curve
    df = frames.read_frame(path)
    assert len(df) == len(rows) and df.attrs["kind"] == "curve"
    assert df.attrs["header"]["kind"] == "curve" and df.attrs["torn"] is False
    assert "Q" not in df and "Q_stderr" not in df
    for i, r in enumerate(rows):
        for a in range(2):
            for b in range(2):
                assert df[f"Q_{a + 1}{b + 1}"][i] == r["Q"][a][b]
                assert df[f"Q_stderr_{a + 1}{b + 1}"][i] == r["Q_stderr"][a][b]
        for key in ("alpha", "branch", "free_entropy", "gen_error_bayes", "iterations",
                    "model"):
            assert df[key][i] == r[key]
    cols = list(df.columns)  # the expansion stands where Q stood
    assert cols.index("Q_11") == cols.index("branch") + 1


def test_curve_dataset_has_alpha_branch_layer(product_curve):
    path, rows = product_curve
    header = read_result_file(path).header
    ds = frames.to_dataset(rows, header)
    assert ds["overlap"].dims == ("alpha", "branch", "layer")
    assert ds["Q"].dims == ("alpha", "branch", "layer", "layer_2")
    assert list(ds["alpha"].values) == [0.5, 1.0]
    assert list(ds["branch"].values) == ["amp", "informed", "bayes"]
    assert list(ds["layer"].values) == [1, 2]
    assert ds["model"].item() == "product"  # one setting: a scalar coordinate
    for r in rows:
        at = ds.sel(alpha=r["alpha"], branch=r["branch"])
        assert list(at["overlap"].values) == [r["Q"][0][0], r["Q"][1][1]]
        assert list(at["overlap_stderr"].values) == [r["Q_stderr"][0][0], r["Q_stderr"][1][1]]
        assert at["free_entropy"].item() == r["free_entropy"]
    assert ds["overlap"].attrs["units"] == "1" and ds["free_entropy"].attrs["units"] == "nats"
    assert "long_name" in ds["alpha"].attrs
    assert frames.header_of(ds) == header
    assert json.loads(ds.attrs["header"])["kind"] == "curve"


def test_threshold_file_frame_and_skip_grid_dataset(threshold_file):
    found = read_result_file(threshold_file)
    df = frames.read_frame(threshold_file)
    assert len(df) == len(found.rows) == 6  # 3 skips x 2 directions, one row per direction
    assert list(df["alpha_c"]) == [r["alpha_c"] for r in found.rows]
    assert df.attrs["header"] == found.header
    ds = frames.to_dataset(found.rows, found.header)
    assert ds["alpha_c"].dims == ("skip", "direction")
    assert list(ds["skip"].values) == [0.5, 1.0, 2.0]
    assert list(ds["direction"].values) == [1, 2]
    assert ds["depth"].item() == 2 and ds["model"].item() == "attention"
    for r in found.rows:
        assert ds["alpha_c"].sel(skip=r["skip"], direction=r["direction"]).item() == r["alpha_c"]
    assert ds["alpha_c"].attrs["long_name"].startswith("weak-recovery threshold")


def test_parquet_round_trip_keeps_rows_and_header(threshold_file, tmp_path, capsys):
    found = read_result_file(threshold_file)
    path = tmp_path / "t.parquet"
    assert main([*THRESHOLDS, "--format", "parquet", "--output", str(path)]) == 0
    df = frames.read_frame(path)
    assert df.attrs["header"]["settings"] == found.header["settings"]
    assert df.attrs["header"]["provenance"]["command"].count("--format parquet") == 1
    assert df.attrs["kind"] == "thresholds"
    keys = [k for k in df.columns if k != "status"]
    assert df[keys].to_dict("records") == [{k: r[k] for k in keys} for r in found.rows]
    # the library function, with a non-finite value and Q
    rows = [{"model": "x", "alpha": 1.0, "branch": "amp", "Q": [[1.0, 0.0], [0.0, math.inf]],
             "free_entropy": math.nan}]
    frames.write_parquet(rows, tmp_path / "r.parquet", {"kind": "curve", "x": [1, {"y": 2}]})
    back = frames.read_frame(tmp_path / "r.parquet")
    assert back.attrs["header"] == {"kind": "curve", "x": [1, {"y": 2}]}
    assert back["Q_22"][0] == math.inf and math.isnan(back["free_entropy"][0])


def test_parquet_needs_an_output_file(capsys):
    assert main([*THRESHOLDS, "--format", "parquet"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "--format" in err and "--output" in err


def test_result_objects_convert(monkeypatch):
    res = asy.weak_recovery_thresholds(asy.make_channel("linear"))
    df = res.to_frame()
    assert list(df["alpha_c"]) == [r["alpha_c"] for r in res.rows()]
    se = asy.run_state_evolution(asy.make_channel("product"), 1.0, tol=1e-5,
                                 settings=asy.SESettings(sobol_log2=7))
    one = se.to_frame()
    assert len(one) == 1 and one["Q_12"][0] == se.Q[0, 1] and one["alpha"][0] == 1.0


@pytest.mark.parametrize("missing", ["pandas", "xarray"])
def test_a_missing_extra_is_named(missing, monkeypatch):
    monkeypatch.setitem(sys.modules, missing, None)
    rows = [{"depth": 1, "direction": 1, "alpha_c": 1.0}]
    with pytest.raises(ImportError, match=r'\[data\]') as info:
        (frames.to_dataset if missing == "xarray" else frames.to_frame)(rows)
    assert missing in str(info.value) and "pip install" in str(info.value)


def test_the_extra_is_imported_lazily():
    import subprocess

    code = ("import sys, asymptotics.frames, asymptotics.results, smi.cli; "
            "print(sorted(m for m in ('pandas', 'xarray', 'pyarrow') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "[]"


def test_provenance_in_headers(threshold_file):
    prov = read_result_file(threshold_file).header["provenance"]
    assert prov["package_version"] == asy.__version__
    assert prov["libraries"]["numpy"] == np.__version__
    assert prov["python"].count(".") == 2
    assert prov["command"].startswith("smi thresholds --model attention")
    assert "--skip 0.5,1,2" in prov["command"] and "--mc-samples 4096" in prov["command"]
    assert "--output" not in prov["command"] and "--resume" not in prov["command"]
    assert "--workers" not in prov["command"]  # the rows do not depend on the executor
    commit = prov["git_commit"]
    assert commit is None or (len(commit) == 40 and int(commit, 16) >= 0)
    assert "cupy" not in prov["libraries"] or "cupy" in sys.modules
    assert not any(k in json.dumps(prov) for k in ("time", "date"))  # same inputs, same bytes


def test_resume_accepts_other_provenance_with_the_same_settings(threshold_file, tmp_path,
                                                                capsys):
    text = threshold_file.read_text()
    head = json.loads(text.partition("\n")[0][2:])
    head["header"]["provenance"] = {"package_version": "0.0.1", "git_commit": "f" * 40,
                                    "command": "smi thresholds --other"}
    assert settings_differences(head["header"], "thresholds",
                                read_result_file(threshold_file).header["settings"]) == []
    path = tmp_path / "t.csv"
    path.write_text("# " + json.dumps(head) + "\n" + text.partition("\n")[2])
    assert main([*THRESHOLDS, "--format", "csv", "--output", str(path), "--resume"]) == 0
    assert read_result_file(path).rows == read_result_file(threshold_file).rows
    other = make_header("thresholds", {"a": 1}, "x")
    assert settings_differences(other, "thresholds", {"a": 2}) == ["a: 1 in the file, 2 now"]


def test_every_curve_row_names_its_model(product_curve, tmp_path, capsys):
    _, rows = product_curve
    assert all(r["model"] == "product" for r in rows)
    lin = asy.sweep(asy.make_channel("linear", noise=0.2), [0.5, 1.0])
    assert all(r["model"] == "linear" and r["noise"] == 0.2 for r in lin)
    assert main(["curve", "--depth", "1", "--seq-len", "2", "--alphas", "0.5", "--sobol-log2",
                 "7", "--tol", "1e-5", "--format", "json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out and all({"model": "attention", "depth": 1, "seq_len": 2, "skip": 1.0,
                        "beta": 1.0}.items() <= r.items() for r in out)
    # the printed table keeps its columns: no setting keys for a single setting
    assert main(["curve", "--depth", "1", "--seq-len", "2", "--alphas", "0.5", "--sobol-log2",
                 "7", "--tol", "1e-5"]) == 0
    assert capsys.readouterr().out.startswith("alpha    branch")


def test_figures_and_the_report_record_their_provenance(tmp_path, capsys):
    """A figure's metadata holds the package version, the command and its sources; the
    validation report states the package version and commit."""
    import json as _json

    from PIL import Image

    from asymptotics import __version__
    from smi.cli import main

    fig = tmp_path / "p.png"
    curve = tmp_path / "c.jsonl"
    assert main(["curve", "--model", "phase-retrieval", "--alphas", "0.3", "0.6",
                 "--output", str(curve), "--no-cache"]) == 0
    assert main(["plot", "overlaps", str(curve), "--output", str(fig)]) == 0
    capsys.readouterr()
    info = Image.open(fig).info
    prov = _json.loads(info["Provenance"])
    assert prov["package_version"] == __version__ and info["Software"].endswith(__version__)
    assert prov["sources"] == [str(curve)] and prov["command"].startswith("smi plot")
    from validation.report import _provenance_line

    assert f"smi-asymptotics {__version__}" in _provenance_line()


def test_every_list_option_takes_spaces_and_commas(capsys):
    """--noise 0.1 0.2 and --noise 0.1,0.2 (and likewise --alphas, --dims, --optimizer,
    --lr) mean the same wherever lists are accepted."""
    from smi.cli import build_parser

    parser = build_parser()
    pairs = [(["curve", "--alphas", "0.1", "0.2"], ["curve", "--alphas", "0.1,0.2"], "alphas"),
             (["curve", "--model", "linear", "--noise", "0.1", "0.2"],
              ["curve", "--model", "linear", "--noise", "0.1,0.2"], "noise"),
             (["simulate", "amp", "--dims", "100", "200"],
              ["simulate", "amp", "--dims", "100,200"], "dims"),
             (["simulate", "train", "--optimizer", "gd", "adam", "--lr", "1", "0.01"],
              ["simulate", "train", "--optimizer", "gd,adam", "--lr", "1,0.01"], "optimizer")]
    from smi.options import values

    for spaced, commas, key in pairs:
        a, b = parser.parse_args(spaced), parser.parse_args(commas)
        if key == "optimizer":
            assert ",".join(a.optimizer) == ",".join(b.optimizer)
            assert values(a.lr, "--lr") == values(b.lr, "--lr")
        else:
            assert values(getattr(a, key), key) == values(getattr(b, key), key)
