import csv
import io
import json
import subprocess
import sys

import pytest

from asymptotics.results import THRESHOLD_KEYS as ROW_KEYS
from smi.cli import main


def test_json_schema_and_values(capsys, tmp_path):
    out = tmp_path / "t.json"
    rc = main(
        ["thresholds", "--skip", "1", "--resolution", "0", "--format", "json", "--output", str(out)]
    )
    assert rc == 0
    rows = json.loads(out.read_text())
    assert len(rows) == 2
    for row in rows:
        assert set(ROW_KEYS) <= set(row)
    by_layer = {r["direction"]: r for r in rows}
    assert abs(by_layer[2]["alpha_c"] - 0.1854778406) < 1e-6
    assert by_layer[1]["alpha_c"] > by_layer[2]["alpha_c"]
    assert by_layer[2]["stderr"] < 1e-5


def test_csv_and_table_formats(capsys):
    assert main(["thresholds", "--model", "phase-retrieval", "--format", "csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert float(rows[0]["alpha_c"]) == pytest.approx(0.5, abs=1e-12)
    assert main(["thresholds", "--model", "sign"]) == 0
    table = capsys.readouterr().out
    assert "alpha_c" in table.splitlines()[0] and "sign" in table


def test_skip_ranges(capsys):
    assert (
        main(["thresholds", "--skip", "0.5:1:0.25", "--resolution", "0", "--format", "json"]) == 0
    )
    rows = json.loads(capsys.readouterr().out)
    assert sorted({r["skip"] for r in rows}) == [0.5, 0.75, 1.0]


@pytest.mark.parametrize(
    "args,option",
    [
        (["--depth", "0"], "--depth"),
        (["--depth", "two"], "--depth"),
        (["--seq-len", "1"], "--seq-len"),
        (["--skip", "-0.5"], "--skip"),
        (["--skip", "nan"], "--skip"),
        (["--skip", "1:0:0.1"], "--skip"),
        (["--beta", "0"], "--beta"),
        (["--beta", "inf"], "--beta"),
        (["--model", "nope"], "--model"),
        (["--format", "xml"], "--format"),
    ],
)
def test_bad_input_exits_2_with_one_line(args, option, capsys):
    rc = main(["thresholds", *args])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert len(err) == 1 and option in err[0]


def test_module_entry_point_runs():
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "smi",
            "thresholds",
            "--model",
            "sign-product",
            "--format",
            "json",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    rows = json.loads(res.stdout)
    assert abs(rows[0]["alpha_c"] - 2.4674011002723395) < 1e-9


def test_curve_device_gpu_without_a_gpu_is_a_one_line_error(capsys):
    from asymptotics.backend import gpu_available

    if gpu_available():
        pytest.skip("a GPU is present")
    assert main(["curve", "--alphas", "0.5", "--device", "gpu"]) == 2
    err = capsys.readouterr().err.strip()
    assert "--device gpu" in err and len(err.splitlines()) == 1


def test_help_and_usage_errors_load_no_numerics():
    """``smi --help`` and a usage error answer without importing scipy, numba or the SE
    (they took 4-12 s when the parser imported the libraries)."""
    code = ("import sys; from smi.cli import main; rc = main(['curve', '--depth', '0']); "
            "heavy = [m for m in ('scipy', 'numba', 'matplotlib', 'asymptotics.state_evolution')"
            " if m in sys.modules]; print(rc, heavy)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert res.stdout.split("\n")[0] == "2 []", res.stdout + res.stderr
    from asymptotics.state_evolution import SESettings
    from smi.commands import amp

    assert amp.SE_SOBOL_LOG2 == str(SESettings.sobol_log2)
