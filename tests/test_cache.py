"""The cache of computed results (asymptotics.cache): a hit gives the bytes of a computed
run without solving, any change of a numerical setting misses, a corrupted entry is
recomputed, concurrent writers leave valid entries, ``smi cache info|clear`` and
``--no-cache``."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest

import asymptotics.curves as curves
import asymptotics.tables as tables
from asymptotics.cache import ResultCache, default_cache
from smi.cli import main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# the Rademacher sign perceptron: perfect-recovery rows (warm starts from their approach)
SIGN = ["curve", "--model", "sign", "--prior", "rademacher", "--alphas", "0.5:2:0.5",
        "--tol", "1e-6", "--format", "json", "--workers", "1"]
# attention: a Monte Carlo outer rule, where --sobol-log2 matters
ATTENTION = ["curve", "--alphas", "0.2:0.5:0.1", "--branch", "amp", "--sobol-log2", "7",
             "--tol", "1e-5", "--format", "json", "--workers", "1"]
THRESHOLDS = ["thresholds", "--skip", "0.5,1", "--method", "mc", "--mc-samples", "4096",
              "--resolution", "0", "--format", "csv", "--workers", "1"]


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    """The cache on (the suite turns it off), in a folder of this test."""
    d = tmp_path / "cache"
    monkeypatch.setenv("SMI_CACHE_DIR", str(d))
    monkeypatch.delenv("SMI_NO_CACHE", raising=False)
    return d


@pytest.fixture
def solves(monkeypatch):
    """How many SE runs (fixed points) and threshold jobs were computed."""
    count = {"se": 0, "thresholds": 0}
    run, rows = curves.run_state_evolution, tables._compute_rows

    def counted_run(*a, **k):
        count["se"] += 1
        return run(*a, **k)

    def counted_rows(*a, **k):
        count["thresholds"] += 1
        return rows(*a, **k)

    monkeypatch.setattr(curves, "run_state_evolution", counted_run)
    monkeypatch.setattr(tables, "_compute_rows", counted_rows)
    return count


def _smi(args, capsys) -> str:
    capsys.readouterr()
    assert main(args) == 0
    return capsys.readouterr().out


def _entries(d) -> list:
    return sorted(p for p in d.rglob("*.json"))


@pytest.mark.parametrize("args", [SIGN, ATTENTION], ids=["sign", "attention"])
def test_a_second_identical_curve_is_a_hit_with_the_same_bytes(args, cache_dir, solves,
                                                               capsys):
    computed = _smi([*args, "--no-cache"], capsys)
    assert solves["se"] > 0 and not cache_dir.exists()  # --no-cache writes nothing
    first = _smi(args, capsys)
    n = solves["se"]
    assert first == computed and len(_entries(cache_dir)) == n / 2
    second = _smi(args, capsys)
    assert solves["se"] == n  # nothing solved
    assert second == computed


def test_a_changed_numerical_setting_misses(cache_dir, solves, capsys):
    base = _smi(ATTENTION, capsys)
    n = solves["se"]
    _smi(ATTENTION, capsys)
    assert solves["se"] == n
    for option, value in [("--sobol-log2", "8"), ("--tol", "1e-6")]:
        args = list(ATTENTION)
        args[args.index(option) + 1] = value
        before = solves["se"]
        other = _smi(args, capsys)
        assert solves["se"] - before == n, option  # every point recomputed
        assert other != base
    # a wider α range: the old points are hits, the new one is computed
    args = list(ATTENTION)
    args[args.index("--alphas") + 1] = "0.2:0.6:0.1"
    before = solves["se"]
    _smi(args, capsys)
    assert solves["se"] - before == 1


@pytest.mark.parametrize("damage", ["truncate", "garbage", "checksum", "key"])
def test_a_corrupted_entry_is_recomputed(damage, cache_dir, solves, capsys):
    computed = _smi(SIGN, capsys)
    n = solves["se"]
    victim = _entries(cache_dir)[0]
    text = victim.read_text()
    if damage == "truncate":
        victim.write_text(text[: len(text) // 2])
    elif damage == "garbage":
        victim.write_bytes(b"\x00\xff not json")
    else:
        entry = json.loads(text)
        if damage == "checksum":
            entry["value"]["row"]["free_entropy"] = 0.125  # a changed value, old checksum
        else:
            entry["key"]["alpha"] = 99.0  # an entry under another key's file
        victim.write_text(json.dumps(entry))
    again = _smi(SIGN, capsys)
    assert again == computed
    assert solves["se"] - n == 1  # only the damaged point
    entry = json.loads(victim.read_text())  # rewritten whole, under its own key
    assert entry["key"]["alpha"] != 99.0
    assert entry["value"]["row"]["free_entropy"] != 0.125
    before = solves["se"]
    _smi(SIGN, capsys)
    assert solves["se"] == before


def test_values_round_trip_exactly(tmp_path):
    cache = ResultCache(tmp_path)
    value = {"a": 0.1 + 0.2, "inf": math.inf, "ninf": -math.inf, "zero": -0.0, "n": 3,
             "ok": True, "none": None, "Q": [[1e-300, 2.5e-17]], "s": "converged"}
    key = {"alpha": 0.30000000000000004, "x": math.inf}
    assert cache.get("k", key) is None
    assert cache.put("k", key, value)
    got = cache.get("k", key)
    assert json.dumps(got) == json.dumps(value) and math.copysign(1, got["zero"]) == -1
    assert cache.put("k", key, {"nan": math.nan})  # a second write replaces the first
    assert list(cache.get("k", key)) == ["nan"] and math.isnan(cache.get("k", key)["nan"])
    assert cache.get("k", {**key, "alpha": 0.3}) is None
    assert cache.get("other", key) is None
    with pytest.raises(ValueError):
        cache.path("../up", key)


def test_an_unwritable_cache_does_not_stop_the_work(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    cache = ResultCache(blocker / "cache")
    assert cache.put("k", {"a": 1}, {"v": 1}) is False
    assert cache.get("k", {"a": 1}) is None
    assert cache.info()["total_entries"] == 0


_WRITER = """
import sys
from asymptotics.cache import ResultCache
cache = ResultCache(sys.argv[1])
me = int(sys.argv[2])
for rep in range(150):
    for i in range(8):
        key = {"i": i}
        cache.put("race", key, {"i": i, "payload": [float(i)] * 400})
        got = cache.get("race", key)
        assert got is None or got == {"i": i, "payload": [float(i)] * 400}, got
print("ok")
"""


def test_two_concurrent_writers_leave_valid_entries(tmp_path):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    procs = [subprocess.Popen([sys.executable, "-c", _WRITER, str(tmp_path), str(k)],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for k in range(2)]
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0 and out.strip() == "ok", err
    cache = ResultCache(tmp_path)
    for i in range(8):
        assert cache.get("race", {"i": i}) == {"i": i, "payload": [float(i)] * 400}
    info = cache.info()
    assert info["entries"] == {"race": 8}
    assert not [p for p in tmp_path.rglob("*.tmp")]  # no temporary file left behind


def test_thresholds_hit_with_the_same_bytes(cache_dir, solves, capsys):
    computed = _smi([*THRESHOLDS, "--no-cache"], capsys)
    assert _smi(THRESHOLDS, capsys) == computed
    n = solves["thresholds"]
    assert n == 2 + 2
    assert _smi(THRESHOLDS, capsys) == computed
    assert solves["thresholds"] == n
    args = list(THRESHOLDS)
    args[args.index("--mc-samples") + 1] = "8192"
    assert _smi(args, capsys) != computed
    assert solves["thresholds"] == n + 2


def test_smi_cache_info_and_clear(cache_dir, capsys):
    out = _smi(["cache", "info"], capsys)
    assert f"directory: {cache_dir}" in out and "entries: 0 (none)" in out
    _smi(SIGN, capsys)
    out = _smi(["cache", "info"], capsys)
    assert "entries: 8 (curve_point 8)" in out and "size: " in out
    other = cache_dir / "notes.txt"
    other.write_text("not the cache's")
    out = _smi(["cache", "clear"], capsys)
    assert out.startswith("removed 8 entries")
    assert "entries: 0 (none)" in _smi(["cache", "info"], capsys)
    assert other.read_text() == "not the cache's"  # only the cache's own files go


def test_the_cache_is_off_with_the_option_or_the_environment(cache_dir, monkeypatch, capsys):
    _smi([*SIGN, "--no-cache"], capsys)
    assert not cache_dir.exists()
    monkeypatch.setenv("SMI_NO_CACHE", "1")
    assert default_cache() is None
    _smi(SIGN, capsys)
    assert not cache_dir.exists()
    assert "status: off" in _smi(["cache", "info"], capsys)
    monkeypatch.setenv("SMI_NO_CACHE", "0")
    assert default_cache() is not None


def test_the_library_computes_without_a_cache_unless_given_one(cache_dir, tmp_path):
    from asymptotics import make_channel, sweep

    ch = make_channel(model="linear", noise=0.1)
    rows = sweep(ch, [0.5, 1.0], "amp")
    assert not cache_dir.exists()
    cache = ResultCache(tmp_path / "mine")
    assert sweep(ch, [0.5, 1.0], "amp", cache=cache) == rows
    assert sweep(ch, [0.5, 1.0], "amp", cache=cache) == rows
    assert cache.info()["entries"] == {"curve_point": 2}


def test_a_process_pool_shares_the_cache(cache_dir, solves, capsys):
    computed = _smi([*SIGN, "--no-cache"], capsys)
    args = list(SIGN)
    args[args.index("--workers") + 1] = "2"
    assert _smi(args, capsys) == computed
    assert len(_entries(cache_dir)) == 8  # written by the workers
    n = solves["se"]
    assert _smi(SIGN, capsys) == computed
    assert solves["se"] == n


def test_a_resume_with_the_cache_gives_the_bytes_of_an_uninterrupted_run(cache_dir, tmp_path,
                                                                         solves, capsys):
    whole = tmp_path / "whole.jsonl"
    _smi([*SIGN, "--no-cache", "--output", str(whole)], capsys)
    part = tmp_path / "part.jsonl"
    _smi([*SIGN, "--output", str(part)], capsys)  # fills the cache
    lines = part.read_text().splitlines(keepends=True)
    part.write_text("".join(lines[:3]) + lines[3][:10])  # header, two rows, a cut line
    n = solves["se"]
    _smi([*SIGN, "--output", str(part), "--resume"], capsys)
    assert solves["se"] == n
    assert part.read_bytes() == whole.read_bytes()
