"""The quickstart notebook executes (nbclient, timeout) against this checkout's package."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")


def test_quickstart_notebook_executes(tmp_path, monkeypatch):
    # the kernel is a subprocess: make it import this worktree's package
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]))
    nb = nbformat.read(ROOT / "notebooks" / "quickstart.ipynb", as_version=4)
    client = nbclient.NotebookClient(nb, timeout=120, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code"
                   for o in c.get("outputs", []))
    assert "0.185477" in text  # layer 2 at c = 1
    assert f"package: {ROOT / 'asymptotics'}" in text  # this checkout, not another install
    assert any("image/png" in o.get("data", {}) for c in nb.cells if c.cell_type == "code"
               for o in c.get("outputs", []))
    assert not any(o.get("output_type") == "error" for c in nb.cells if c.cell_type == "code"
                   for o in c.get("outputs", []))


def test_published_figures_notebook_executes_in_smoke_mode(tmp_path, monkeypatch):
    """Every cell of the paper-figures notebook runs (SMI_NOTEBOOK_MODE=smoke: seconds)
    against this checkout, draws its figures, and computes with the package only."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]))
    monkeypatch.setenv("SMI_NOTEBOOK_MODE", "smoke")
    nb = nbformat.read(ROOT / "notebooks" / "published_figures.ipynb", as_version=4)
    src = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    assert "make_channel(\"attention\"" in src
    for forbidden in ("def forward", "softmax", "class ", "../shared", "np.exp("):
        assert forbidden not in src
    client = nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not any(o.get("output_type") == "error" for o in outputs)
    assert sum("image/png" in o.get("data", {}) for o in outputs) == 6
    out = tmp_path / "published_figures_out"
    for name in ("curve_2w.jsonl", "curve_3w.jsonl", "amp_2w.jsonl", "compare_3w.png"):
        assert (out / name).stat().st_size > 0
