"""One row schema for every result kind: keys, types, non-finite numbers, files.

A result is a list of rows (flat dicts of JSON values).  Files hold them as JSON lines (a
sweep's journal, and what ``--output`` of ``smi curve`` and ``smi simulate`` writes), as a
JSON array or as CSV (``--format json|csv`` of ``smi thresholds``).  Everything that
writes or reads rows goes through this module:

- non-finite floats are written as the strings ``"inf"``, ``"-inf"``, ``"nan"`` in JSON
  (strict JSON has no literal for them) and read back as floats;
- CSV cells are typed back by key (:data:`INT_KEYS`, :data:`FLOAT_KEYS`, ...), so a row
  read from a file equals the row that was written, and formats again to the same bytes;
- :func:`row_kind` tells the kind of a row from its keys;
- a file may begin with a *header*: what made it (``kind``, ``settings``, the package and
  numerics versions, and its :func:`provenance`: git commit, library versions, command).
  In JSON lines it is the first line, ``{"header": {...}}``; in CSV a first comment line
  ``# {"header": {...}}``.  A resume compares it with the settings at hand
  (:func:`settings_differences`: never the provenance) and refuses to mix results of
  different settings.
"""

from __future__ import annotations

import csv
import functools
import io
import json
import math
import os
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

#: columns of ``smi thresholds``, in order; ``noise`` follows ``beta`` when present
THRESHOLD_KEYS = ["model", "depth", "seq_len", "skip", "beta", "direction", "alpha_c",
                  "stderr", "method"]
#: optional columns of ``smi thresholds`` (staircase, learnable at a given α)
THRESHOLD_EXTRA_KEYS = ["staircase_alpha", "staircase_stderr", "staircase_status",
                        "staircase_order", "staircase_learned", "alpha", "learnable_at_alpha"]
#: columns of ``smi curve`` after the keys of its setting
CURVE_KEYS = ["alpha", "branch", "Q", "Q_stderr", "free_entropy", "free_entropy_stderr",
              "gen_error_plugin", "gen_error_plugin_stderr", "gen_error_bayes",
              "gen_error_bayes_stderr", "converged", "iterations"]
#: the columns a curve with an error target adds (``smi curve --target-error``)
CURVE_TARGET_KEYS = ["sobol_log2", "inner_resolution", "error_target_met", "amplification"]

INT_KEYS = {"depth", "seq_len", "direction", "staircase_order", "iterations", "seed",
            "dim", "step", "iteration", "rank", "sobol_log2", "inner_resolution"}
FLOAT_KEYS = {"skip", "beta", "noise", "alpha_c", "stderr", "staircase_alpha",
              "staircase_stderr", "alpha", "free_entropy", "free_entropy_stderr",
              "gen_error_plugin", "gen_error_plugin_stderr", "gen_error_bayes",
              "gen_error_bayes_stderr", "amplification"}
BOOL_KEYS = {"learnable_at_alpha", "converged", "summary", "final", "se", "diverged",
             "error_target_met"}
JSON_KEYS = {"Q", "Q_stderr"}  # nested values: JSON text inside a CSV cell

_NONFINITE = {"inf": math.inf, "-inf": -math.inf, "nan": math.nan}


NUMERICS_VERSION = "1"  # bumped whenever a change moves computed numbers beyond their error


class ResultFileError(ValueError):
    """A result file that cannot be read as rows."""


@dataclass
class ResultFile:
    """A result file read back: its header (None if it has none), its complete rows, and
    whether its last line was cut (by an interruption)."""

    header: dict | None
    rows: list[dict] = field(default_factory=list)
    torn: bool = False


def make_header(kind: str, settings: dict, command: str | None = None) -> dict:
    """The header of a result file of ``kind`` made with ``settings`` (plain JSON values),
    with its :func:`provenance` (``command``: the command line that made it, if any).

    A resume compares only the kind, the settings and the numerics version
    (:func:`settings_differences`), never the provenance."""
    from . import __version__

    return {"kind": kind, "settings": encode(settings), "package_version": __version__,
            "numerics_version": NUMERICS_VERSION, "provenance": provenance(command)}


def provenance(command: str | None = None) -> dict:
    """What made a result file, besides its settings: the package version and the git commit
    of its checkout (None outside a git work tree or without git), the Python, numpy,
    scipy and numba versions (cupy's only when it is already imported: never imported
    here), the platform and ``command``.

    There is deliberately no timestamp: the same inputs give the same bytes, so an
    interrupted run resumed writes the file of an uninterrupted one.  Every entry is
    therefore a property of the software, not of the moment; ``command`` is the one given
    by the caller (``smi`` records its options without ``--output``, ``--resume`` and
    ``--overwrite``, which name or continue the file rather than make its rows)."""
    import platform
    import sys

    from . import __version__

    libraries = {name: _library_version(name) for name in ("numpy", "scipy", "numba")}
    cupy = sys.modules.get("cupy")
    if cupy is not None:
        libraries["cupy"] = getattr(cupy, "__version__", None)
    return {"package_version": __version__, "git_commit": git_commit(),
            "python": platform.python_version(), "libraries": libraries,
            "platform": f"{platform.system()}-{platform.machine()}", "command": command}


def _library_version(name: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(name)  # without importing it (numba is slow to import)
    except metadata.PackageNotFoundError:
        return None


@functools.lru_cache(maxsize=1)
def git_commit() -> str | None:
    """``git rev-parse HEAD`` of the checkout holding this package, or None when it is not
    a git work tree, git is missing or slower than 2 s."""
    import subprocess

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if not os.path.exists(os.path.join(root, ".git")):
        return None  # an installed copy, not a checkout
    try:
        out = subprocess.run(["git", "-C", root, "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=2, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    commit = out.stdout.strip()
    return commit if out.returncode == 0 and len(commit) == 40 else None


def settings_differences(header: dict | None, kind: str, settings: dict) -> list[str]:
    """What differs between a file's header and (``kind``, ``settings``): one entry per
    differing setting, ``"name: FILE_VALUE in the file, VALUE now"``; the kind and numerics
    version are compared too.  A file without a header differs in everything."""
    if header is None:
        return ["the file holds no settings record"]
    out = []
    if header.get("kind") != kind:
        out.append(f"kind: {header.get('kind')!r} in the file, {kind!r} now")
    if header.get("numerics_version") != NUMERICS_VERSION:
        out.append(f"numerics version: {header.get('numerics_version')!r} in the file, "
                   f"{NUMERICS_VERSION!r} now")
    old, new = header.get("settings") or {}, encode(settings)
    for key in sorted(set(old) | set(new)):
        if old.get(key) != new.get(key):
            out.append(f"{key}: {old.get(key)!r} in the file, {new.get(key)!r} now")
    return out


# ------------------------------------------------------------------------------ values


def plain(value):
    """``value`` with numpy scalars and arrays turned into Python numbers and lists."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return plain(value.tolist())
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    return value


def encode(value):
    """A plain JSON value: numpy turned into Python, non-finite floats into strings."""
    value = plain(value)
    if isinstance(value, dict):
        return {k: encode(v) for k, v in value.items()}
    if isinstance(value, list):
        return [encode(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    return value


def decode(value):
    """Inverse of :func:`encode`: the strings ``"inf"``, ``"-inf"``, ``"nan"`` as floats."""
    if isinstance(value, dict):
        return {k: decode(v) for k, v in value.items()}
    if isinstance(value, list):
        return [decode(v) for v in value]
    if isinstance(value, str) and value in _NONFINITE:
        return _NONFINITE[value]
    return value


def _typed_cell(key: str, text: str | None):
    """A CSV cell typed by its key (unknown keys: number, boolean or text)."""
    if text is None or text == "":
        return None
    if key in JSON_KEYS:
        return decode(json.loads(text))
    if key in INT_KEYS:
        return int(text)
    if key in FLOAT_KEYS:
        return float(text)
    if key in BOOL_KEYS:
        return text == "True"
    for conv in (int, float):
        try:
            return conv(text)
        except ValueError:
            pass
    if text in ("True", "False"):
        return text == "True"
    return text


# -------------------------------------------------------------------------- writing


def json_line(row: dict) -> str:
    """One row as a JSON line (with its newline)."""
    return json.dumps(encode(row)) + "\n"


def to_json_lines(rows: Iterable[dict], header: dict | None = None) -> str:
    """Rows as JSON lines, after the header line when given."""
    head = json.dumps({"header": encode(header)}) + "\n" if header is not None else ""
    return head + "".join(json_line(r) for r in rows)


def to_json(rows: Iterable[dict], keys: list[str] | None = None) -> str:
    """A JSON array of the rows (only ``keys``, in that order, where given)."""
    rows = [r if keys is None else {k: r[k] for k in keys if k in r} for r in rows]
    return json.dumps(encode(rows), indent=1) + "\n"


def to_csv(rows: Iterable[dict], keys: list[str], header: dict | None = None) -> str:
    """CSV with a header of ``keys``; nested values (``Q``) as JSON text, None empty; the
    file header, when given, as a first comment line."""
    buf = io.StringIO()
    if header is not None:
        buf.write("# " + json.dumps({"header": encode(header)}) + "\n")
    w = csv.DictWriter(buf, fieldnames=keys, extrasaction="ignore")
    w.writeheader()
    for r in rows:
        w.writerow({k: json.dumps(encode(r.get(k))) if k in JSON_KEYS else r.get(k)
                    for k in keys})
    return buf.getvalue()


def threshold_columns(rows: list[dict]) -> list[str]:
    """The columns of a threshold table holding ``rows`` (without ``status``)."""
    keys = list(THRESHOLD_KEYS) + [k for k in THRESHOLD_EXTRA_KEYS if any(k in r for r in rows)]
    if any("noise" in r for r in rows):
        keys.insert(keys.index("beta") + 1, "noise")
    if any("link" in r for r in rows):  # a link channel: its formula and directions p
        keys[keys.index("model") + 1:keys.index("model") + 1] = ["link", "dim"]
    return keys


# -------------------------------------------------------------------------- reading


def parse_result_text(text: str, source: str = "text") -> ResultFile:
    """Header and rows of a JSON array, JSON lines or CSV text.

    JSON lines: a last line without its newline, or that is not JSON, was cut by an
    interruption; the rows before it are returned with ``torn = True``.  A damaged line
    that is *not* the last one, a line that is not a row, or text in none of the three
    formats raise :class:`ResultFileError`.
    """
    stripped = text.lstrip()
    if not stripped:
        return ResultFile(None)
    if stripped.startswith("["):
        try:
            data = json.loads(text)
        except json.JSONDecodeError:
            raise ResultFileError(f"{source}: not a complete JSON array of rows") from None
        if not all(isinstance(r, dict) for r in data):
            raise ResultFileError(f"{source}: a JSON array whose items are not rows")
        return ResultFile(None, [decode(r) for r in data])
    if stripped.startswith("{"):
        return _parse_json_lines(text, source)
    header = None
    if stripped.startswith("#"):
        first, _, text = stripped.partition("\n")
        try:
            header = json.loads(first[1:])["header"]
        except (json.JSONDecodeError, KeyError, TypeError):
            raise ResultFileError(f"{source}: its first line is a comment but not a "
                                  "settings record") from None
    try:
        reader = csv.DictReader(io.StringIO(text))
        rows = [{k: _typed_cell(k, v) for k, v in r.items() if k is not None}
                for r in reader if None not in r.values()]
    except (csv.Error, ValueError) as exc:
        raise ResultFileError(f"{source}: not JSON, JSON lines or CSV ({exc})") from None
    if reader.fieldnames is None or len(reader.fieldnames) < 2 or (not rows and not header):
        raise ResultFileError(f"{source}: not JSON, JSON lines or CSV")
    return ResultFile(header, rows)


def _parse_json_lines(text: str, source: str) -> ResultFile:
    lines = text.split("\n")
    torn = lines[-1].strip() != ""  # the final newline never came
    body = [(n, line) for n, line in enumerate(lines[:-1], 1) if line.strip()]
    header, rows = None, []
    for i, (n, line) in enumerate(body):
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            if i == len(body) - 1 and not torn:
                torn = True  # the last line, cut inside (its newline written early)
                break
            raise ResultFileError(f"{source}: line {n} is damaged (only a cut last line "
                                  "can be repaired)") from None
        if not isinstance(row, dict):
            raise ResultFileError(f"{source}: line {n} is not a row")
        if n == body[0][0] and set(row) == {"header"}:
            header = row["header"]
            continue
        rows.append(decode(row))
    return ResultFile(header, rows, torn)


def read_result_file(path: str | os.PathLike) -> ResultFile:
    """:func:`parse_result_text` of a file (a missing file: no header, no rows)."""
    if not os.path.exists(path):
        return ResultFile(None)
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise ResultFileError(f"{path}: cannot read ({exc})") from None
    return parse_result_text(text, str(path))


def read_rows(path: str | os.PathLike) -> tuple[list[dict], bool]:
    """The rows of a file and whether its last line was torn (:func:`read_result_file`)."""
    f = read_result_file(path)
    return f.rows, f.torn


def row_kind(row) -> str | None:
    """The kind of one result row, from its keys: ``curve``, ``thresholds``, ``amp`` and
    ``train`` (summary rows), ``train-steps``; None for any other row."""
    if not isinstance(row, dict):
        return None
    keys = set(row)
    if {"alpha", "branch", "Q"} <= keys and ("free_entropy" in keys or "gen_error_plugin" in keys):
        return "curve"
    if {"direction", "alpha_c"} <= keys:
        return "thresholds"
    if row.get("summary") is True and "cosine_mean" in keys:
        return "train"
    if row.get("summary") is True and "q_mean" in keys:
        return "amp"
    if {"seed", "step", "cosine"} <= keys:
        return "train-steps"
    return None


__all__ = ["CURVE_KEYS", "CURVE_TARGET_KEYS", "NUMERICS_VERSION", "THRESHOLD_EXTRA_KEYS",
           "THRESHOLD_KEYS",
           "ResultFile", "ResultFileError", "decode", "encode", "git_commit", "json_line",
           "make_header", "parse_result_text", "plain", "provenance",
           "read_result_file", "read_rows",
           "row_kind", "settings_differences", "threshold_columns", "to_csv", "to_json",
           "to_json_lines"]
