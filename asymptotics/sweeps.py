"""Result files that grow as a sweep's tasks finish, and resume.

A result file (``--output``) is a journal while a sweep runs: a header line with the
settings that make its rows (:func:`asymptotics.results.make_header`), then JSON lines, one
per row, the rows of a task appended in one write as the task finishes (a curve chain
appends each row as it is computed).  A resume reads it back, refuses a file made with
other settings (or with none recorded), drops a line cut by an interruption (and, for
whole-task writes, the rest of the task it belongs to) and computes only the tasks that
are missing.  An existing file is never replaced unless asked to (``overwrite``).  When the
sweep is done the file is replaced, atomically, by the final rows in a deterministic order
(the grid order), in the requested format.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from .results import (
    ResultFileError,
    read_result_file,
    settings_differences,
    to_json_lines,
)


class ResumeError(ValueError):
    """The result file cannot be read back for a resume, or holds other settings."""


class OutputExistsError(ValueError):
    """The result file exists and neither a resume nor an overwrite was asked for."""


def read_result_rows(path: str, whole_tasks: bool, task_of: Callable[[dict], str],
                     header: dict | None = None) -> list[dict]:
    """Complete rows of a result file: JSON lines (a journal), a JSON array or CSV.

    With ``header`` the file's own header must hold the same kind and settings
    (:class:`ResumeError` naming what differs).  A last line without its newline was cut
    by an interruption and is dropped; with ``whole_tasks`` the other rows of the task it
    follows are dropped too, since a task's rows are written together.
    """
    try:
        found = read_result_file(path)
    except ResultFileError as exc:
        raise ResumeError(f"{exc} (a finished table cannot be resumed: use --format "
                          "csv)") from None
    if header is not None and found.header is None and found.rows:
        raise ResumeError(f"{path!r} holds rows but no settings record (a JSON array has "
                          "none), so it cannot be resumed: use --format csv")
    if header is not None and os.path.exists(path) and os.path.getsize(path):
        diffs = settings_differences(found.header, header["kind"], header["settings"])
        if diffs:
            raise ResumeError(f"{path!r} was made with other settings: " + "; ".join(diffs))
    rows, torn = found.rows, found.torn
    if torn and whole_tasks and rows:
        last = task_of(rows[-1])
        while rows and task_of(rows[-1]) == last:
            rows.pop()
    return rows


class Journal:
    """The result file of a running sweep (see the module docstring)."""

    def __init__(self, path: str, resume: bool, task_of: Callable[[dict], str],
                 whole_tasks: bool = True, header: dict | None = None,
                 overwrite: bool = False):
        self.path = path
        self.task_of = task_of
        self.header = header
        if not resume and not overwrite and os.path.exists(path) and os.path.getsize(path):
            raise OutputExistsError(f"{path!r} exists: resume it, or overwrite it")
        rows = read_result_rows(path, whole_tasks, task_of, header) if resume else []
        self.rows = rows
        self._replace(to_json_lines(rows, header))

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
        data = to_json_lines(rows).encode()
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

    def finish_rows(self, rows: list[dict]) -> None:
        """Replace the journal by its header and ``rows`` (JSON lines), atomically."""
        self._replace(to_json_lines(rows, self.header))

    def _replace(self, text: str) -> None:
        tmp = f"{self.path}.tmp-{os.getpid()}"
        try:
            with open(tmp, "w") as fh:
                fh.write(text)
        except OSError:
            if os.path.exists(tmp):
                os.remove(tmp)  # the file itself is untouched
            raise
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


__all__ = ["Journal", "OutputExistsError", "ResumeError", "check_writable",
           "read_result_rows"]
