"""What the commands print: tables with each number to the digits its error supports, the
CSV and JSON of :mod:`asymptotics.results`, and progress lines on stderr."""

from __future__ import annotations

import math
import shlex
import sys
from collections.abc import Callable

from asymptotics.results import (
    CURVE_KEYS,
    CURVE_TARGET_KEYS,
    threshold_columns,
    to_csv,
    to_json,
)


def format_thresholds(rows: list[dict], fmt: str, header: dict | None = None) -> str:
    """A threshold table as ``table``, ``csv`` or ``json`` (columns of
    :func:`asymptotics.results.threshold_columns`, then ``status``); the file header,
    when given, heads the csv."""
    keys = threshold_columns(rows) + ["status"]
    if fmt == "json":
        return to_json(rows, keys)
    if fmt == "csv":
        return to_csv(rows, keys, header)
    lines = []
    for r in rows:
        cells = []
        for k in keys:
            v = r.get(k)
            if k == "alpha_c":
                cells.append(value_with_digits(v, r.get("stderr")))
            elif k == "staircase_alpha":
                cells.append(value_with_digits(v, r.get("staircase_stderr")))
            elif k in ("stderr", "staircase_stderr"):
                cells.append(f"{v:.1e}" if isinstance(v, float) else str(v))
            elif v is None:
                cells.append("-")
            else:
                cells.append(str(v))
        lines.append(cells)
    widths = [max(len(h), *(len(c[i]) for c in lines)) for i, h in enumerate(keys)]
    out = ["  ".join(h.ljust(w) for h, w in zip(keys, widths, strict=True))]
    out += ["  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) for cells in lines]
    return "\n".join(out) + "\n"


def value_with_digits(v, err) -> str:
    """``v`` to one digit past the first significant digit of ``err`` (all 10 significant
    digits when there is no error)."""
    if v is None:
        return "-"
    if math.isinf(v):
        return "inf"
    if not err or err <= 0:
        return f"{v:.10g}"
    digits = max(1, min(12, int(-math.floor(math.log10(err))) + 1))
    return f"{v:.{digits}f}"


def format_curve(rows: list[dict], fmt: str, setting_keys: list[str] | None = None) -> str:
    """Curve rows as ``table``, ``csv`` (setting keys, then :data:`CURVE_KEYS`) or ``json``."""
    setting_keys = list(setting_keys or [])
    if fmt == "json":
        return to_json(rows)
    if fmt == "csv":
        target = CURVE_TARGET_KEYS if any("sobol_log2" in r for r in rows) else []
        return to_csv(rows, setting_keys + CURVE_KEYS + target)
    prefix = "".join(f"{k:<9}" for k in setting_keys)
    lines = [prefix + "alpha    branch    diag(Q) ± stderr                      free_entropy"
             "        gen_plugin         gen_bayes          conv  iters"]
    for r in rows:
        q = ", ".join(f"{r['Q'][i][i]:.5f}±{r['Q_stderr'][i][i]:.0e}" for i in range(len(r["Q"])))
        lines.append(
            "".join(f"{r[k]!s:<9}" for k in setting_keys) +
            f"{r['alpha']:<8.4g} {r['branch']:<9} {q:<37} "
            f"{r['free_entropy']:>9.6f}±{r['free_entropy_stderr']:.0e} "
            f"{r['gen_error_plugin']:.5f}±{r['gen_error_plugin_stderr']:.0e} "
            f"{r['gen_error_bayes']:.5f}±{r['gen_error_bayes_stderr']:.0e} "
            f"{str(r['converged']):<5} {r['iterations']}"
        )
    return "\n".join(lines) + "\n"


#: options that name or continue the output file, or choose who computes (the rows do not
#: depend on the executor), rather than make its rows
_NOT_RECORDED = {"command", "func", "given", "output", "resume", "overwrite", "workers", "quiet",
                 "no_cache",
                 "cluster", "scheduler_file"}


_SUBCOMMANDS = ("simulation", "figure")


def command_line(args) -> str:
    """The command that makes the rows of ``args`` (a parsed ``smi`` command): every option
    with its value, defaults included, in the parser's order, without ``--output``,
    ``--resume``, ``--overwrite`` and the executor options (``--workers``, ``--cluster``,
    ``--scheduler-file``), so that a run and its resume, on any executor, record the same
    command (and write the same bytes)."""
    words = ["smi", args.command]
    for key in _SUBCOMMANDS:  # smi simulate amp, smi figure theory-vs-simulation
        if getattr(args, key, None):
            words.append(getattr(args, key))
    for key, value in vars(args).items():
        if key in _NOT_RECORDED or key in _SUBCOMMANDS or value is None or value is False:
            continue
        words.append("--" + key.replace("_", "-"))
        if value is not True:
            words.extend(str(v) for v in (value if isinstance(value, list) else [value]))
    return shlex.join(words)


#: Seconds before progress shows: a run shorter than this prints no progress at all.
DELAY_S = 2.0


def _is_terminal(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


class Progress:
    """Progress of a sweep on ``stream`` (stderr by default), called after each finished
    task with ``(done, total, elapsed, label)``.

    On a terminal a tqdm bar with the rate and the remaining time; otherwise (a batch
    job's log, a pipe) one plain line per finished task, ``[done/total] label  Xs
    elapsed, ~Ys left``, with no carriage returns.  Nothing for the first
    :data:`DELAY_S` seconds (a short run prints no progress), nothing at all when
    ``quiet``."""

    def __init__(self, stream=None, quiet: bool = False, unit: str = "task"):
        self.stream = sys.stderr if stream is None else stream
        self.quiet = quiet
        self.unit = unit
        self.bar = None
        self.terminal = _is_terminal(self.stream)

    def __call__(self, done: int, total: int, elapsed: float, label: str = "") -> None:
        if self.quiet or total < 1:
            return
        if self.terminal:
            self._bar(done, total, label)
        elif elapsed >= DELAY_S:
            eta = elapsed / done * (total - done) if done else float("nan")
            label = f" {label} " if label else ""
            print(f"[{done}/{total}]{label} {elapsed:.1f}s elapsed, ~{eta:.0f}s left",
                  file=self.stream, flush=True)

    def _bar(self, done: int, total: int, label: str) -> None:
        from tqdm import tqdm

        if self.bar is None:  # tasks done before the first call: a resumed sweep's
            self.bar = tqdm(total=total, initial=max(done - 1, 0), file=self.stream,
                            delay=DELAY_S, unit=self.unit, dynamic_ncols=True, leave=True)
        if label:
            self.bar.set_postfix_str(label, refresh=False)
        self.bar.update(done - self.bar.n)
        if done >= total:
            self.bar.close()


def task_progress(stream=None, quiet: bool = False) -> Callable[[int, int, dict, float], None]:
    """Progress of a grid of tasks: ``show(done, total, job, elapsed)`` after each
    finished task, ``job`` its settings (see :class:`Progress`)."""
    progress = Progress(stream, quiet)

    def show(done: int, total: int, job: dict, elapsed: float) -> None:
        label = ", ".join(f"{k}={v}" for k, v in job.items() if k != "model")
        progress(done, total, elapsed, label)

    return show


def progress_bar(stream=None, quiet: bool = False) -> Callable[[int, int, float], None]:
    """Progress of a sweep that counts points: ``show(done, total, elapsed)`` (see
    :class:`Progress`; a tqdm bar on a terminal, one line per point otherwise)."""
    progress = Progress(stream, quiet, unit="point")

    def show(done: int, total: int, elapsed: float) -> None:
        progress(done, total, elapsed)

    return show
