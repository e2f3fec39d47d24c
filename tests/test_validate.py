"""``smi validate``: the report has every section and one PASS/FAIL line per check.

The battery runs here on the ``test`` budget (smallest settings, ~15 s); ``quick`` is the
same code with larger settings and is run from the CLI (see README)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from smi.cli import main
from validation.report import SECTIONS, run_validation

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    d = tmp_path_factory.mktemp("validate")
    summary = run_validation("test", str(d))
    return d, summary, (d / "report.md").read_text()


def test_report_has_every_section_and_a_verdict_per_check(report):
    d, summary, text = report
    for s in SECTIONS:
        assert f"## {s}" in text
    verdicts = re.findall(r"^- \*\*(PASS|FAIL)\*\*", text, flags=re.M)
    assert len(verdicts) == summary["total"] >= 20
    assert verdicts.count("PASS") == summary["passed"]
    # every section has at least one check, and each check states a tolerance
    for s, body in zip(SECTIONS, re.split(r"^## ", text, flags=re.M)[1:], strict=True):
        assert body.startswith(s)
        assert re.search(r"^- \*\*(PASS|FAIL)\*\*.*Tolerance: ", body, flags=re.M), s
    assert "arXiv:2502.00901" in text


def test_only_documented_disagreements_fail(report):
    _, summary, text = report
    assert summary["undocumented_failures"] == 0, [
        (c.name, c.values) for c in summary["checks"] if not c.passed and not c.documented]
    # the known disagreement with the published alpha2 column is reported with its size
    line = next(x for x in text.splitlines() if "published alpha2, c = 1:" in x)
    assert line.startswith("- **FAIL** (documented disagreement)")
    assert "-22.6%" in line and "Jensen" in line
    assert re.search(r"\*\*PASS\*\* published alpha2 violates the Jensen bound", text)


def test_report_figures_are_written(report):
    d, _, text = report
    for f in ("phase_diagram.png", "overlaps_phase_retrieval.png",
              "errors_phase_retrieval.png", "training_dynamics.png"):
        assert (d / f).stat().st_size > 5000
        assert f"]({f})" in text


def test_validate_does_not_read_shared_data():
    src = (ROOT / "validation" / "report.py").read_text()
    src += (ROOT / "validation" / "published.py").read_text()
    assert "shared" not in src and "../" not in src


def test_validate_bad_input_exits_2(tmp_path, capsys):
    assert main(["validate", "--budget", "huge", "--output", str(tmp_path)]) == 2
    assert main(["validate"]) == 2
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["validate", "--budget", "quick", "--output", str(blocker / "sub")]) == 2


def test_quick_budget_is_wired_to_the_cli():
    out = subprocess.run([sys.executable, "-m", "smi", "validate", "--help"],
                         capture_output=True, text=True, cwd=ROOT,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 0 and "quick" in out.stdout and "full" in out.stdout
