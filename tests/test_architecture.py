"""The house rules, checked on the source tree (ast, no imports executed).

Floors, imports only downwards: smi -> validation -> simulators -> asymptotics; argparse
and sys.exit only in smi/; no library module outside asymptotics/channels/ names the
attention channel's class (algorithms ask the channel for capabilities).
"""

from __future__ import annotations

import ast
import importlib
import pathlib
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
FLOORS = {"asymptotics": 0, "simulators": 1, "validation": 2, "smi": 3}


def _modules(package: str):
    for path in sorted((ROOT / package).rglob("*.py")):
        yield path, ast.parse(path.read_text(encoding="utf-8"), str(path))


def _absolute_imports(tree: ast.AST, path: pathlib.Path, package: str):
    """Every imported module name, relative imports resolved against ``path``."""
    rel = path.relative_to(ROOT).with_suffix("").parts
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                yield node.module or "", node.lineno
            else:
                base = rel[: len(rel) - node.level]
                yield ".".join(base + ((node.module,) if node.module else ())), node.lineno


def upward_imports(package: str) -> list[str]:
    found = []
    for path, tree in _modules(package):
        for name, line in _absolute_imports(tree, path, package):
            top = name.split(".")[0]
            if top in FLOORS and FLOORS[top] > FLOORS[package]:
                found.append(f"{path.relative_to(ROOT)}:{line}: {name}")
            if top == "argparse" and package != "smi":
                found.append(f"{path.relative_to(ROOT)}:{line}: argparse outside smi/")
    return found


@pytest.mark.parametrize("package", list(FLOORS))
def test_imports_only_run_downwards(package):
    assert upward_imports(package) == []


def test_the_checker_sees_an_upward_import(tmp_path, monkeypatch):
    """The walker itself: a planted upward and a planted argparse import are found."""
    pkg = tmp_path / "asymptotics"
    pkg.mkdir()
    (pkg / "bad.py").write_text("import argparse\nfrom validation.report import x\n"
                                "from ..smi import cli\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    assert len(upward_imports("asymptotics")) == 3


def test_no_library_module_names_the_attention_class_outside_channels():
    offenders = []
    for package in ("asymptotics", "simulators", "validation"):
        for path, tree in _modules(package):
            if path.is_relative_to(ROOT / "asymptotics" / "channels"):
                continue
            for node in ast.walk(tree):
                if isinstance(node, ast.Name) and node.id == "AttentionChannel" or (
                        isinstance(node, ast.alias) and node.name == "AttentionChannel"):
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert offenders == []


def test_sys_exit_only_in_the_command_layer():
    offenders = []
    for package in ("asymptotics", "simulators", "validation"):
        for path, tree in _modules(package):
            for node in ast.walk(tree):
                if (isinstance(node, ast.Attribute) and node.attr == "exit"
                        and isinstance(node.value, ast.Name) and node.value.id == "sys"):
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert offenders == []


@pytest.mark.parametrize("package", ["asymptotics", "simulators", "validation"])
def test_every_exported_name_resolves(package):
    module = importlib.import_module(package)
    missing = [name for name in module.__all__ if not hasattr(module, name)]
    assert missing == [] and len(module.__all__) >= 8


def test_benchmarks_import_their_shared_modules_by_one_name():
    """numba's on-disk cache of a kernel records its module's name: a script importing
    ``previous_kernels`` bare (its folder on the path) writes entries that the tests,
    importing ``benchmarks.previous_kernels``, then fail to load (ModuleNotFoundError)."""
    shared = {p.stem for p in (ROOT / "benchmarks").glob("*.py")}
    bare = [(path.name, line, name) for path, tree in _modules("benchmarks")
            for name, line in _absolute_imports(tree, path, "benchmarks")
            if name.split(".")[0] in shared]
    assert not bare, bare
