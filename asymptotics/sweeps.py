"""Sweeps through an executor: task functions, result files that grow as tasks finish, resume.

A result file (``--output``) is a journal while a sweep runs: JSON lines, one per row, the
rows of a task appended in one write as the task finishes (a curve chain appends each row
as it is computed).  ``--resume`` reads it back, drops a line cut by an interruption (and,
for whole-task writes, the rest of the task it belongs to) and computes only the tasks that
are missing.  When the sweep is done the file is replaced, atomically, by the final rows in
a deterministic order (the grid order), in the requested format.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Callable

import numpy as np

from .executors import ExecutorError, check_options, default_workers

# ------------------------------------------------------------------- plain JSON rows


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


# ------------------------------------------------------------------------- journal

_INT_KEYS = {"depth", "seq_len", "direction", "staircase_order"}
_FLOAT_KEYS = {"skip", "beta", "noise", "alpha_c", "stderr", "staircase_alpha",
               "staircase_stderr", "alpha"}
_BOOL_KEYS = {"learnable_at_alpha"}


class ResumeError(ValueError):
    """The result file cannot be read back for ``--resume``."""


def _typed(row: dict) -> dict:
    """A row read from CSV or a finished JSON table with its numbers restored."""
    out = {}
    for k, v in row.items():
        if v == "" or v is None:
            out[k] = None
        elif k in _INT_KEYS:
            out[k] = int(v)
        elif k in _FLOAT_KEYS:
            out[k] = math.inf if v == "inf" else float(v)
        elif k in _BOOL_KEYS and isinstance(v, str):
            out[k] = v == "True"
        else:
            out[k] = v
    return out


def read_result_rows(path: str, whole_tasks: bool, task_of: Callable[[dict], str]) -> list[dict]:
    """Complete rows of a result file: JSON lines (a journal), a JSON array or CSV.

    A last line without its newline was cut by an interruption and is dropped; with
    ``whole_tasks`` the other rows of the task it follows are dropped too, since a task's
    rows are written together.
    """
    if not os.path.exists(path):
        return []
    with open(path) as fh:
        text = fh.read()
    stripped = text.lstrip()
    if not stripped:
        return []
    if stripped.startswith("["):
        try:
            return [_typed(r) for r in json.loads(text)]
        except (json.JSONDecodeError, TypeError, AttributeError):
            raise ResumeError(f"{path!r} is not a complete JSON array of rows") from None
    if stripped.startswith("{"):
        lines = text.split("\n")
        torn = lines[-1].strip() != ""  # the final newline never came
        rows = []
        for line in lines[:-1]:
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                torn = True
                break  # a damaged line: keep what precedes it
        if torn and whole_tasks and rows:
            last = task_of(rows[-1])
            while rows and task_of(rows[-1]) == last:
                rows.pop()
        return rows
    if stripped.startswith("model,"):
        reader = csv.DictReader(io.StringIO(text))
        rows = [_typed(r) for r in reader if None not in r.values()]
        return rows
    raise ResumeError(f"cannot read rows from {path!r} (a finished table cannot be resumed: "
                      "use --format csv or json)")


class Journal:
    """The result file of a running sweep (see the module docstring)."""

    def __init__(self, path: str, resume: bool, task_of: Callable[[dict], str],
                 whole_tasks: bool = True):
        self.path = path
        self.task_of = task_of
        rows = read_result_rows(path, whole_tasks, task_of) if resume else []
        self.rows = rows
        self._replace("".join(json.dumps(r) + "\n" for r in rows))

    def by_task(self) -> dict[str, list[dict]]:
        """Rows already in the file, grouped by task key (file order within a task)."""
        out: dict[str, list[dict]] = {}
        for r in self.rows:
            out.setdefault(self.task_of(r), []).append(r)
        return out

    def append(self, rows: list[dict]) -> None:
        """Append rows in one write (a task's rows are never split by an interruption)."""
        if not rows:
            return
        data = "".join(json.dumps(plain(r)) + "\n" for r in rows).encode()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            view = memoryview(data)
            while view:
                n = os.write(fd, view)
                view = view[n:]
        finally:
            os.close(fd)

    def finish(self, text: str) -> None:
        """Replace the journal by the final text, atomically."""
        self._replace(text)

    def _replace(self, text: str) -> None:
        tmp = f"{self.path}.tmp-{os.getpid()}"
        with open(tmp, "w") as fh:
            fh.write(text)
        os.replace(tmp, self.path)


def check_writable(path: str) -> str | None:
    """None if ``path`` can be written (created if missing, left as it was), else why not."""
    existed = os.path.exists(path)
    try:
        with open(path, "a"):
            pass
    except OSError as exc:
        return exc.strerror or str(exc)
    if not existed:
        os.remove(path)
    return None


# --------------------------------------------------------------- executor options


def add_executor_arguments(p) -> None:
    """``--workers``, ``--cluster`` and ``--scheduler-file`` on an argparse parser."""
    p.add_argument("--workers", default=None,
                   help="local worker processes (default: one per core when the sweep has "
                   "several tasks; 1 runs in this process)")
    p.add_argument("--cluster", default=None,
                   help="run the tasks on the Dask scheduler at tcp://HOST:PORT")
    p.add_argument("--scheduler-file", default=None,
                   help="run the tasks on the Dask cluster described by this scheduler file")


def executor_options(args, n_tasks: int) -> dict:
    """Validated executor options of ``args`` for a sweep of ``n_tasks`` tasks (keyword
    arguments of :func:`asymptotics.executors.make_executor`); ExecutorError if bad."""
    workers = None
    if getattr(args, "workers", None) is not None:
        try:
            workers = int(str(args.workers), 10)
        except ValueError:
            raise ExecutorError(f"--workers: expected an integer, got {args.workers!r}") \
                from None
    cluster, sched = getattr(args, "cluster", None), getattr(args, "scheduler_file", None)
    kind = check_options(workers, cluster, sched)
    if kind == "dask":
        return {"kind": "dask", "cluster": cluster, "scheduler_file": sched}
    workers = default_workers(n_tasks) if workers is None else min(workers, max(1, n_tasks))
    return {"kind": "process" if workers > 1 else "serial", "workers": workers}


# ----------------------------------------------------------------- threshold tasks


def threshold_task_key(row_or_job: dict) -> str:
    """The grid point a threshold row (or job) belongs to."""
    if row_or_job.get("model") != "attention":
        return str(row_or_job.get("model"))
    j = row_or_job
    return (f"attention|depth={int(j['depth'])}|seq_len={int(j['seq_len'])}|"
            f"skip={float(j['skip'])!r}|beta={float(j['beta'])!r}")


def threshold_task(params: dict) -> list[dict]:
    """All threshold rows of one channel setting (``params``: job, settings, staircase,
    alpha), as plain JSON-able rows."""
    from .cli import compute_threshold_rows
    from .staircase import StaircaseSettings
    from .thresholds import ThresholdSettings

    settings = ThresholdSettings(**params["settings"])
    stair = StaircaseSettings(**params["staircase"]) if params.get("staircase") else None
    rows = compute_threshold_rows([params["job"]], settings, None, stair, params.get("alpha"))
    return plain(rows)


__all__ = ["Journal", "ResumeError", "add_executor_arguments", "executor_options",
           "threshold_task", "threshold_task_key", "plain", "read_result_rows",
           "check_writable"]
