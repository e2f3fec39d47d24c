"""Result rows as labelled data: pandas DataFrames and xarray Datasets, and Parquet files.

pandas, xarray and pyarrow are optional (``pip install -e ".[data]"``); they are imported
here, inside the functions that need them, and a missing one is an :class:`ImportError`
naming the extra.  Rows come from :mod:`asymptotics.results` (any result file, any kind):

- :func:`to_frame` — one DataFrame row per result row, nested overlaps expanded into one
  column per entry (``Q_11``, ``Q_12``, ..., ``Q_stderr_11``; ``Q_1_10`` past 9 layers);
  a threshold table is already one row per direction;
- :func:`read_frame` — any result file (JSON lines, JSON, CSV, Parquet) as a DataFrame,
  its header in ``df.attrs["header"]``;
- :func:`to_dataset` — curve rows on dims (grid keys that vary) × alpha × branch × layer,
  threshold rows on dims (grid keys that vary) × direction; grid keys that do not vary
  are scalar coordinates; units and long names in each variable's attrs, the header in
  ``ds.attrs["header"]`` as JSON text (netCDF attributes cannot nest);
- :func:`write_parquet` — rows and header as a Parquet file (the header in the file's
  metadata, key ``smi_header``), written atomically.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable

from .results import decode, encode, read_result_file, row_kind

#: keys that identify a model (the grid of a sweep), in the order of their dimensions
GRID_KEYS = ["model", "depth", "seq_len", "skip", "beta", "noise"]
NESTED_KEYS = ("Q", "Q_stderr")
PARQUET_HEADER_KEY = b"smi_header"
PARQUET_MAGIC = b"PAR1"

_EXTRA = 'pip install -e ".[data]"'

#: (long_name, units) of the coordinates and variables of :func:`to_dataset`
ATTRS = {
    "model": ("model (channel) name", ""),
    "depth": ("number of attention layers", "1"),
    "seq_len": ("sequence length (tokens)", "1"),
    "skip": ("skip-connection strength", "1"),
    "beta": ("softmax inverse temperature", "1"),
    "noise": ("output noise variance", "1"),
    "alpha": ("sample ratio n/d", "1"),
    "branch": ("branch (amp: uninformed start, informed, bayes: larger free entropy)", ""),
    "layer": ("layer (direction) index, 1-based", ""),
    "layer_2": ("second layer index of an overlap entry, 1-based", ""),
    "direction": ("direction (layer) of the threshold, 1-based", ""),
    "overlap": ("overlap Q_ll of each layer with the teacher", "1"),
    "overlap_stderr": ("standard error of the overlap Q_ll", "1"),
    "Q": ("overlap matrix Q", "1"),
    "Q_stderr": ("standard error of the overlap matrix Q", "1"),
    "free_entropy": ("free entropy per dimension", "nats"),
    "free_entropy_stderr": ("standard error of the free entropy", "nats"),
    "gen_error_plugin": ("plug-in generalisation error", "1"),
    "gen_error_plugin_stderr": ("standard error of the plug-in generalisation error", "1"),
    "gen_error_bayes": ("Bayes-optimal generalisation error", "1"),
    "gen_error_bayes_stderr": ("standard error of the Bayes-optimal generalisation error", "1"),
    "converged": ("whether the fixed-point iteration converged", ""),
    "iterations": ("fixed-point iterations", "1"),
    "alpha_c": ("weak-recovery threshold alpha_c (sample ratio)", "1"),
    "stderr": ("standard error of alpha_c", "1"),
    "staircase_alpha": ("sample ratio at which the direction is learned (staircase)", "1"),
    "staircase_stderr": ("standard error of staircase_alpha", "1"),
}


def require_extra(module: str):
    """Import an optional module of the ``data`` extra, or say how to install it."""
    import importlib

    try:
        mod = importlib.import_module(module)
    except ImportError:
        mod = None
    if mod is None:  # also a module blocked with sys.modules[name] = None
        raise ImportError(f"{module} is needed for labelled results (DataFrames, Datasets, "
                          f"Parquet), an optional extra: {_EXTRA}")
    return mod


def _entry_name(key: str, i: int, j: int, p: int) -> str:
    return f"{key}_{i + 1}{j + 1}" if p < 10 else f"{key}_{i + 1}_{j + 1}"


def flat_row(row: dict) -> dict:
    """``row`` with each nested overlap matrix replaced, in place in the key order, by one
    key per entry (:func:`to_frame`)."""
    out = {}
    for key, value in row.items():
        if key in NESTED_KEYS and isinstance(value, list):
            p = len(value)
            for i, line in enumerate(value):
                for j, v in enumerate(line):
                    out[_entry_name(key, i, j, p)] = v
        else:
            out[key] = value
    return out


def to_frame(rows: Iterable[dict], header: dict | None = None):
    """The rows as a pandas DataFrame, one row each, nested ``Q`` and ``Q_stderr``
    expanded to per-entry columns (``Q_11``, ``Q_12``, ...); ``header`` (when given) in
    ``df.attrs["header"]``, the rows' kind (:func:`asymptotics.results.row_kind`) in
    ``df.attrs["kind"]``."""
    pd = require_extra("pandas")
    rows = [decode(encode(r)) for r in rows]
    df = pd.DataFrame([flat_row(r) for r in rows])
    kinds = {row_kind(r) for r in rows}
    df.attrs["kind"] = kinds.pop() if len(kinds) == 1 else None
    if header is not None:
        df.attrs["header"] = header
    return df


def read_frame(path: str | os.PathLike):
    """Any result file as a DataFrame (:func:`to_frame`): JSON lines, a JSON array, CSV or
    Parquet (:func:`write_parquet`); its header, if it has one, in ``df.attrs["header"]``.
    A cut last line (an interrupted run) is left out, with ``df.attrs["torn"] = True``."""
    if _is_parquet(path):
        pq = require_extra("pyarrow.parquet")
        require_extra("pandas")
        table = pq.read_table(path)
        meta = table.schema.metadata or {}
        df = table.to_pandas()
        df.attrs.clear()  # pandas' own copy of the attrs: replaced by the header below
        header = json.loads(meta[PARQUET_HEADER_KEY]) if PARQUET_HEADER_KEY in meta else None
        rows = df.to_dict("records")
        df.attrs["kind"] = row_kind(rows[0]) if rows else None
        if header is not None:
            df.attrs["header"] = decode(header)
        return df
    found = read_result_file(path)
    df = to_frame(found.rows, found.header)
    df.attrs["torn"] = found.torn
    return df


def _is_parquet(path) -> bool:
    try:
        with open(path, "rb") as fh:
            return fh.read(4) == PARQUET_MAGIC
    except OSError:
        return False


def write_parquet(rows: list[dict], path: str | os.PathLike, header: dict | None = None,
                  columns: list[str] | None = None) -> None:
    """The rows (only ``columns``, in order, where given; :func:`flat_row` otherwise) as
    a Parquet file, ``header`` as JSON in the file's metadata (key ``smi_header``).  The
    file is written to a temporary name and renamed: an existing file is replaced whole
    or not at all."""
    pa = require_extra("pyarrow")
    pq = require_extra("pyarrow.parquet")
    if columns is not None:
        data = [{k: r.get(k) for k in columns} for r in rows]
    else:
        data = [flat_row(r) for r in rows]
    keys = columns or list(dict.fromkeys(k for r in data for k in r))
    table = pa.Table.from_pylist([{k: r.get(k) for k in keys} for r in data])
    meta = dict(table.schema.metadata or {})
    if header is not None:
        meta[PARQUET_HEADER_KEY] = json.dumps(encode(header)).encode()
    table = table.replace_schema_metadata(meta)
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        pq.write_table(table, tmp)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    os.replace(tmp, path)


# ------------------------------------------------------------------------- xarray


def to_dataset(rows: Iterable[dict], header: dict | None = None):
    """Curve or threshold rows as an xarray Dataset with named coordinates.

    Curve rows: dims (grid keys that vary) × ``alpha`` × ``branch``, and ``layer`` for
    ``overlap`` / ``overlap_stderr`` (the diagonal of Q), ``layer`` × ``layer_2`` for the
    whole ``Q`` / ``Q_stderr`` (NaN-padded where the depth varies).  Threshold rows: dims
    (grid keys that vary) × ``direction``.  Grid keys (:data:`GRID_KEYS`) that take one
    value are scalar coordinates.  Each variable and coordinate has ``long_name`` and
    ``units`` attrs; ``ds.attrs["header"]`` is the header as JSON text, with ``kind``
    beside it."""
    pd = require_extra("pandas")
    require_extra("xarray")
    rows = [decode(encode(r)) for r in rows]
    kinds = {row_kind(r) for r in rows}
    if len(kinds) != 1 or kinds & {None}:
        raise ValueError(f"to_dataset needs curve or threshold rows of one kind, got "
                         f"{sorted(map(str, kinds))}")
    kind = kinds.pop()
    if kind not in ("curve", "thresholds"):
        raise ValueError(f"to_dataset needs curve or threshold rows, got {kind} rows")
    grid = [k for k in GRID_KEYS if any(k in r for r in rows)]
    varying = [k for k in grid if len({_hashable(r.get(k)) for r in rows}) > 1]
    constant = [k for k in grid if k not in varying]
    inner = ["alpha", "branch"] if kind == "curve" else ["direction"]
    dims = varying + inner
    flat = pd.DataFrame([{k: v for k, v in r.items() if k not in NESTED_KEYS} for r in rows])
    flat = flat.drop(columns=constant)
    if flat.duplicated(subset=dims).any():
        raise ValueError(f"rows repeat a point of the dims {dims}")
    ds = flat.set_index(dims).to_xarray()
    if kind == "curve":
        ds = ds.merge(_layer_arrays(pd, rows, dims))
        ds = ds.reindex(branch=[b for b in ("amp", "informed", "bayes")
                                if b in set(ds["branch"].values)])
    ds = ds.assign_coords({k: rows[0].get(k) for k in constant})
    for name in list(ds.variables):
        long_name, units = ATTRS.get(name, (name, ""))
        ds[name].attrs.update(long_name=long_name, units=units)
    ds.attrs["kind"] = kind
    if header is not None:
        ds.attrs["header"] = json.dumps(encode(header))
    return ds


def _hashable(value):
    return json.dumps(encode(value))


def _layer_arrays(pd, rows: list[dict], dims: list[str]):
    """``overlap``, ``overlap_stderr`` on dims × layer and ``Q``, ``Q_stderr`` on dims ×
    layer × layer_2 from the rows' nested matrices."""
    diag, full = [], []
    for r in rows:
        at = {k: r.get(k) for k in dims}
        Q, E = r["Q"], r.get("Q_stderr")
        for i in range(len(Q)):
            diag.append({**at, "layer": i + 1, "overlap": Q[i][i],
                         "overlap_stderr": E[i][i] if E is not None else float("nan")})
            for j in range(len(Q)):
                full.append({**at, "layer": i + 1, "layer_2": j + 1, "Q": Q[i][j],
                             "Q_stderr": E[i][j] if E is not None else float("nan")})
    a = pd.DataFrame(diag).set_index([*dims, "layer"]).to_xarray()
    b = pd.DataFrame(full).set_index([*dims, "layer", "layer_2"]).to_xarray()
    return a.merge(b)


def header_of(ds) -> dict | None:
    """The header of a Dataset made by :func:`to_dataset` (decoded from its JSON text)."""
    text = ds.attrs.get("header")
    return decode(json.loads(text)) if text is not None else None


__all__ = ["ATTRS", "GRID_KEYS", "PARQUET_HEADER_KEY", "flat_row", "header_of", "read_frame",
           "require_extra",
           "to_dataset", "to_frame", "write_parquet"]
