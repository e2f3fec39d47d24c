"""Fault injection, for every command that writes a result file (thresholds, curve,
simulate amp, simulate train): runs killed (SIGKILL, SIGINT) at a seeded row, a cut last line, a
resume with other settings, a rerun over an existing file, a full disk.  Nothing written
before the fault is lost, a resume with the same settings gives the bytes of an
uninterrupted run, and every refusal or failure is one line."""

from __future__ import annotations

import errno
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from asymptotics.results import read_result_file
from smi.cli import main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
THRESHOLDS = ["thresholds", "--skip", "0.5:3:0.5", "--method", "mc", "--mc-samples", "4096",
              "--resolution", "0", "--format", "csv", "--workers", "1"]
CURVE = ["curve", "--alphas", "0.2:0.7:0.1", "--branch", "amp", "--sobol-log2", "7",
         "--tol", "1e-5", "--workers", "1"]
AMP = ["simulate", "amp", "--model", "linear", "--dim", "600", "--seeds", "6", "--max-iter",
       "60", "--tol", "1e-12", "--n-test", "50", "--summary-only", "--workers", "1"]
TRAIN = ["simulate", "train", "--dim", "100", "--alpha", "4", "--steps", "400", "--seeds", "6",
         "--n-test", "50", "--log-points", "4", "--workers", "1"]
COMMANDS = {"thresholds": (THRESHOLDS, "--mc-samples", "8192"),
            "curve": (CURVE, "--sobol-log2", "8"),
            "amp": (AMP, "--max-iter", "61"),
            "train": (TRAIN, "--steps", "401")}


def _smi(args, **kw):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.Popen([sys.executable, "-m", "smi", *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def _is_progress(line: str) -> bool:
    """A progress line of a slow run (``[3/6] 8.1s elapsed, ~8s left``)."""
    return re.fullmatch(r"\[\d+/\d+\].* elapsed, ~\S+ left", line) is not None


def _stopped(pid: int) -> bool:
    """Whether process ``pid`` is stopped (state T in /proc)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] == "T"
    except OSError:
        return False


def _rows(path) -> int:
    try:
        return len(read_result_file(path).rows)
    except ValueError:
        return 0


# ``smi`` in a child that stops itself (SIGSTOP) once its journal holds ``rows`` rows, so the
# signal arrives at that point however loaded the machine is (polling the file raced with
# fast runs: a run could finish between two polls)
_STOPPING_SMI = """
import os, signal, sys
from asymptotics import sweeps
from smi.cli import main
real, written = sweeps.Journal.append, [0]
def append(self, rows):
    real(self, rows)
    written[0] += len(rows)
    if written[0] >= {rows}:
        os.kill(os.getpid(), signal.SIGSTOP)
sweeps.Journal.append = append
# Ctrl-C as in a terminal, also when the tests run as a background job (which starts every
# child with SIGINT ignored, and Python then installs no KeyboardInterrupt handler)
signal.signal(signal.SIGINT, signal.default_int_handler)
sys.exit(main(sys.argv[1:]))
"""


def _interrupt_after(args, path, rows: int, sig) -> subprocess.CompletedProcess:
    """Run ``smi args``; once its file holds ``rows`` complete rows (the child stops
    itself there), send ``sig`` and let it continue."""
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen([sys.executable, "-c", _STOPPING_SMI.format(rows=rows), *args],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.monotonic() + 120
    while not _stopped(proc.pid) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert proc.poll() is None, "the run ended before its journal held the rows"
    proc.send_signal(sig)
    os.kill(proc.pid, signal.SIGCONT)
    out, err = proc.communicate(timeout=120)
    return subprocess.CompletedProcess(args, proc.returncode, out, err)


@pytest.fixture(scope="module")
def references(tmp_path_factory):
    """The file of an uninterrupted run of each command."""
    d = tmp_path_factory.mktemp("reference")
    out = {}
    for name, (args, _, _) in COMMANDS.items():
        path = d / f"{name}.out"
        assert main([*args, "--output", str(path)]) == 0
        out[name] = path.read_bytes()
    return out


@pytest.mark.parametrize("name", list(COMMANDS))
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT], ids=["kill", "int"])
def test_interrupted_run_resumes_to_the_same_bytes(name, sig, references, tmp_path, capsys):
    args, _, _ = COMMANDS[name]
    path = tmp_path / "run.out"
    at = int(np.random.default_rng(int(sig) + len(name)).integers(1, 4))  # a seeded row
    res = _interrupt_after([*args, "--output", str(path)], path, at, sig)
    kept = _rows(path)
    assert kept >= at
    if sig == signal.SIGINT:
        assert res.returncode == 130
        # progress lines may come first on a slow machine; the interruption is one line
        *progress, line = res.stderr.strip().splitlines()
        assert all(_is_progress(p) for p in progress), progress
        assert line.startswith("interrupted: ")
        assert f"{kept} rows in {path}" in line and "--resume" in line
        assert "Traceback" not in res.stderr
    else:
        assert res.returncode == -signal.SIGKILL
    # a cut last line as well: half of a row appended without its newline
    with open(path, "a") as fh:
        fh.write('{"alpha": 0.4, "bra')
    assert main([*args, "--output", str(path), "--resume"]) == 0
    capsys.readouterr()
    assert path.read_bytes() == references[name]


@pytest.mark.parametrize("name", list(COMMANDS))
def test_other_settings_and_existing_files_are_refused(name, references, tmp_path, capsys):
    args, option, other = COMMANDS[name]
    path = tmp_path / "done.out"
    path.write_bytes(references[name])
    changed = list(args)
    changed[changed.index(option) + 1] = other
    assert main([*changed, "--output", str(path), "--resume"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and option in err and "other settings" in err
    assert main([*args, "--output", str(path)]) == 2  # neither --resume nor --overwrite
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "exists" in err and "--overwrite" in err
    assert path.read_bytes() == references[name]  # untouched by either refusal
    assert main([*args, "--output", str(path), "--resume"]) == 0  # same settings: as is
    capsys.readouterr()
    assert path.read_bytes() == references[name]


@pytest.mark.parametrize("text", ['{"broken": ', "not a result file\nat all\n",
                                  '{"header": {"kind": "curve"}}\n{"a": 1\n{"b": 2}\n'])
def test_a_file_that_is_not_a_journal_is_refused(text, tmp_path, capsys):
    path = tmp_path / "bad.out"
    path.write_text(text)
    assert main([*CURVE, "--output", str(path), "--resume"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "--resume" in err
    assert path.read_text() == text


@pytest.mark.parametrize("name", list(COMMANDS))
def test_a_full_disk_loses_nothing_written_before(name, monkeypatch, tmp_path, capsys):
    """The third write fails with ENOSPC: one line, exit 1, the rows of the first two
    writes (and the header) stay, and a resume later completes the file."""
    from asymptotics import sweeps

    args, _, _ = COMMANDS[name]
    path = tmp_path / "full.out"
    real, calls = sweeps.Journal.append, []

    def append(self, rows):
        calls.append(len(rows))
        if len(calls) == 3:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), self.path)
        real(self, rows)

    monkeypatch.setattr(sweeps.Journal, "append", append)
    assert main([*args, "--output", str(path)]) == 1
    *progress, err = capsys.readouterr().err.strip().splitlines()
    assert all(_is_progress(p) for p in progress), progress
    assert "No space left on device" in err
    found = read_result_file(path)
    assert found.header is not None and len(found.rows) == sum(calls[:2])
    monkeypatch.setattr(sweeps.Journal, "append", real)
    assert main([*args, "--output", str(path), "--resume"]) == 0
    assert _rows(path) > len(found.rows)


def test_simulations_refuse_an_existing_output(tmp_path, capsys):
    path = tmp_path / "amp.jsonl"
    path.write_text('{"kept": true}\n')
    for cmd in (["simulate", "amp", "--model", "linear", "--dim", "20"],
                ["simulate", "train", "--dim", "20", "--steps", "2"]):
        assert main([*cmd, "--output", str(path)]) == 2
        assert "exists" in capsys.readouterr().err
    assert path.read_text() == '{"kept": true}\n'


def test_a_json_array_is_refused_for_resume_with_the_format_that_resumes(tmp_path, capsys):
    path = tmp_path / "t.json"
    args = ["thresholds", "--model", "sign-product", "--format", "json", "--output", str(path)]
    assert main(args) == 0
    assert main([*args, "--resume"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "no settings record" in err and "--format csv" in err
