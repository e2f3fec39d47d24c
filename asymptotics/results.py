"""One row schema for every result kind: keys, types, non-finite numbers, files.

A result is a list of rows (flat dicts of JSON values).  Files hold them as JSON lines (a
sweep's journal, and what ``--output`` of ``smi curve`` and ``smi simulate`` writes), as a
JSON array or as CSV (``--format json|csv`` of ``smi thresholds``).  Everything that
writes or reads rows goes through this module:

- non-finite floats are written as the strings ``"inf"``, ``"-inf"``, ``"nan"`` in JSON
  (strict JSON has no literal for them) and read back as floats;
- CSV cells are typed back by key (:data:`INT_KEYS`, :data:`FLOAT_KEYS`, ...), so a row
  read from a file equals the row that was written, and formats again to the same bytes;
- :func:`row_kind` tells the kind of a row from its keys.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Iterable

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

INT_KEYS = {"depth", "seq_len", "direction", "staircase_order", "iterations", "seed",
            "dim", "step", "iteration", "rank"}
FLOAT_KEYS = {"skip", "beta", "noise", "alpha_c", "stderr", "staircase_alpha",
              "staircase_stderr", "alpha", "free_entropy", "free_entropy_stderr",
              "gen_error_plugin", "gen_error_plugin_stderr", "gen_error_bayes",
              "gen_error_bayes_stderr"}
BOOL_KEYS = {"learnable_at_alpha", "converged", "summary", "final", "se", "diverged"}
JSON_KEYS = {"Q", "Q_stderr"}  # nested values: JSON text inside a CSV cell

_NONFINITE = {"inf": math.inf, "-inf": -math.inf, "nan": math.nan}


class ResultFileError(ValueError):
    """A result file that cannot be read as rows."""


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


def to_json_lines(rows: Iterable[dict]) -> str:
    return "".join(json_line(r) for r in rows)


def to_json(rows: Iterable[dict], keys: list[str] | None = None) -> str:
    """A JSON array of the rows (only ``keys``, in that order, where given)."""
    rows = [r if keys is None else {k: r[k] for k in keys if k in r} for r in rows]
    return json.dumps(encode(rows), indent=1) + "\n"


def to_csv(rows: Iterable[dict], keys: list[str]) -> str:
    """CSV with a header of ``keys``; nested values (``Q``) as JSON text, None empty."""
    buf = io.StringIO()
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
    return keys


# -------------------------------------------------------------------------- reading


def parse_rows(text: str, source: str = "text") -> tuple[list[dict], bool]:
    """Rows of a JSON array, JSON lines or CSV text, and whether its last line was torn.

    JSON lines: a last line without its newline, or a line that is not JSON, was cut by an
    interruption; the rows before it are returned with ``torn = True``.  Raises
    :class:`ResultFileError` when the text is none of the three formats.
    """
    stripped = text.lstrip()
    if not stripped:
        return [], False
    if stripped.startswith("["):
        try:
            data = json.loads(text)
        except json.JSONDecodeError:
            raise ResultFileError(f"{source}: not a complete JSON array of rows") from None
        if not all(isinstance(r, dict) for r in data):
            raise ResultFileError(f"{source}: a JSON array whose items are not rows")
        return [decode(r) for r in data], False
    if stripped.startswith("{"):
        lines = text.split("\n")
        torn = lines[-1].strip() != ""  # the final newline never came
        rows = []
        for line in lines[:-1]:
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                torn = True
                break  # a damaged line: keep what precedes it
            if not isinstance(row, dict):
                raise ResultFileError(f"{source}: a JSON line that is not a row")
            rows.append(decode(row))
        return rows, torn
    try:
        reader = csv.DictReader(io.StringIO(text))
        rows = [{k: _typed_cell(k, v) for k, v in r.items() if k is not None}
                for r in reader if None not in r.values()]
    except (csv.Error, ValueError) as exc:
        raise ResultFileError(f"{source}: not JSON, JSON lines or CSV ({exc})") from None
    if not rows or reader.fieldnames is None or len(reader.fieldnames) < 2:
        raise ResultFileError(f"{source}: not JSON, JSON lines or CSV")
    return rows, False


def read_rows(path: str | os.PathLike) -> tuple[list[dict], bool]:
    """:func:`parse_rows` of a file (missing file: no rows)."""
    if not os.path.exists(path):
        return [], False
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise ResultFileError(f"{path}: cannot read ({exc})") from None
    return parse_rows(text, str(path))


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


__all__ = ["CURVE_KEYS", "THRESHOLD_EXTRA_KEYS", "THRESHOLD_KEYS", "ResultFileError", "decode",
           "encode", "json_line", "parse_rows", "plain", "read_rows", "row_kind",
           "threshold_columns", "to_csv", "to_json", "to_json_lines"]
