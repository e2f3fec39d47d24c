"""Option parsing shared by every subcommand: one usage-error type, one parser for numbers,
value lists and ranges, the executor options.  Bad input is one line and exit status 2."""

from __future__ import annotations

import argparse
import contextlib
import math
import sys
from collections.abc import Iterable, Iterator
from typing import TextIO

import asymptotics as asy
import simulators as sim
from asymptotics.backend import BackendError, get_namespace
from asymptotics.executors import ExecutorError, check_options, default_workers
from asymptotics.results import json_line

from .output import command_line


class UsageError(Exception):
    """Bad command-line input: reported on one line with exit status 2.

    ``option`` names the offending option where known; ``str(exc)`` is the whole line."""

    def __init__(self, message: str, option: str | None = None):
        super().__init__(message)
        self.option = option


def fail(option: str, message: str, prog: str = "smi") -> UsageError:
    """The usage error ``PROG: error: OPTION: MESSAGE``."""
    return UsageError(f"{prog}: error: {option}: {message}", option)


class Parser(argparse.ArgumentParser):
    """argparse with errors raised as :class:`UsageError` (one line, exit 2) and no
    abbreviated options (an option a user typed is the option a check names)."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message):
        raise UsageError(f"{self.prog}: error: {message}")


def given_options(argv: list[str]) -> set[str]:
    """The long options present on a command line (``--name`` or ``--name=value``)."""
    return {tok.split("=", 1)[0] for tok in argv if tok.startswith("--")}


def refuse_inapplicable(args, options, applies: bool, where: str, prog: str = "smi") -> None:
    """A usage error for the first of ``options`` the user gave where it does not apply
    (``where`` says where it does), e.g. ``--depth applies to --model attention only``."""
    if applies:
        return
    for option in options:
        if option in getattr(args, "given", ()):
            raise fail(option, f"applies to {where} only", prog)


@contextlib.contextmanager
def refused_as(option: str, prog: str = "smi") -> Iterator[None]:
    """Turn a library's ValueError (a setting out of range, a size beyond memory) raised
    inside into a usage error naming ``option``."""
    try:
        yield
    except ValueError as exc:
        raise fail(option, str(exc).splitlines()[0], prog) from None


# --------------------------------------------------------------------------- numbers


def number(text, option: str, prog: str = "smi", *, minimum: float | None = None,
           above: float | None = None, below: float | None = None) -> float:
    """A finite float (``>= minimum``, ``> above``, ``< below`` where given), or a usage
    error naming ``option``."""
    try:
        x = float(text)
    except (TypeError, ValueError):
        raise fail(option, f"expected a number, got {text!r}", prog) from None
    if not math.isfinite(x):
        raise fail(option, f"must be finite, got {text!r}", prog)
    for bound, bad, words in ((minimum, lambda b: x < b, ">="), (above, lambda b: x <= b, ">"),
                              (below, lambda b: x >= b, "<")):
        if bound is not None and bad(bound):
            raise fail(option, f"must be {words} {bound:g}, got {x:g}", prog)
    return x


def integer(text, option: str, minimum: int | None = None, prog: str = "smi") -> int:
    """A base-10 integer (at least ``minimum``), or a usage error naming ``option``."""
    try:
        x = int(str(text), 10)
    except (TypeError, ValueError):
        raise fail(option, f"expected an integer, got {text!r}", prog) from None
    if minimum is not None and x < minimum:
        raise fail(option, f"must be >= {minimum}, got {x}", prog)
    return x


def parse_values(text: str, name: str) -> list[float]:
    """``"0.5"``, ``"0.25,0.5"`` or ``"start:stop:step"`` (stop included) as floats;
    ValueError naming ``name`` otherwise."""
    values: list[float] = []
    for part in str(text).split(","):
        part = part.strip()
        if not part:
            raise ValueError(f"{name}: empty value in {text!r}")
        if ":" in part:
            bits = part.split(":")
            if len(bits) != 3:
                raise ValueError(f"{name}: range must be start:stop:step, got {part!r}")
            start, stop, step = (_finite(b, name) for b in bits)
            if step <= 0 or stop < start:
                raise ValueError(f"{name}: range {part!r} needs step > 0 and stop >= start")
            n = int(math.floor((stop - start) / step + 1e-9)) + 1
            values.extend(round(start + i * step, 12) for i in range(n))
        else:
            values.append(_finite(part, name))
    return values


def _finite(text: str, name: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise ValueError(f"{name}: cannot parse {text!r} as a number") from None
    if not math.isfinite(v):
        raise ValueError(f"{name}: value must be finite, got {text!r}")
    return v


def values(texts, option: str, prog: str = "smi") -> list[float]:
    """Every value of one or several list texts (see :func:`parse_values`)."""
    if isinstance(texts, str):
        texts = [texts]
    try:
        return [v for t in texts for v in parse_values(t, option)]
    except ValueError as exc:
        raise UsageError(f"{prog}: error: {exc}", option) from None


def integers(texts, option: str, minimum: int, prog: str = "smi") -> list[int]:
    """Integer values of list texts, each at least ``minimum``."""
    out = []
    for v in values(texts, option, prog):
        if v != int(v):
            raise fail(option, f"expected integers, got {v}", prog)
        if v < minimum:
            raise fail(option, f"must be >= {minimum}, got {int(v)}", prog)
        out.append(int(v))
    return out


def optimizer_names(texts, option: str, prog: str = "smi") -> list[str]:
    """Optimizer names of list texts (``gd adam`` or ``gd,adam``), each one the training
    simulator knows, lower-cased; a usage error naming ``option`` otherwise."""
    names = [s.strip().lower() for s in ",".join(texts).split(",") if s.strip()]
    if not names:
        raise fail(option, "empty list", prog)
    for name in names:
        try:
            sim.parse_optimizer_name(name)
        except ValueError as exc:
            raise fail(option, str(exc).splitlines()[0], prog) from None
    return names


def one_value(text, option: str, ok, what: str, prog: str = "smi") -> float:
    """Exactly one value satisfying ``ok``, else a usage error ``OPTION: must be WHAT``."""
    vals = values([text], option, prog)
    if len(vals) != 1 or not ok(vals[0]):
        raise fail(option, f"must be one value {what}, got {text!r}", prog)
    return vals[0]


# ----------------------------------------------------------------------- model options


def add_model_arguments(p: argparse.ArgumentParser, models, *, several: bool = True,
                        skip: str = "1", link_dim: bool = True, link: bool = True) -> None:
    """The options that choose a model: ``--model``, the attention architecture
    (``--depth``, ``--seq-len``, ``--skip``, ``--beta``), the linear and link channels'
    ``--noise``, and ``--link`` (a formula; implies ``--model link``) with ``--dim`` (its
    directions p; only with ``link_dim``: a command whose ``--dim`` is something else
    infers p from the formula; neither without ``link``).  With ``several`` each takes
    values, comma lists or ``start:stop:step`` ranges (several values make a grid);
    without, one value each."""
    many = {"nargs": "+"} if several else {}

    def default(text):
        return [text] if several else text

    grid = "; several values make a grid" if several else ""
    p.add_argument("--model", default="attention", choices=list(models))
    p.add_argument("--depth", default=default("2"), **many,
                   help=f"attention: number of layers (>= 1){grid} [2]")
    p.add_argument("--seq-len", default=default("2"), **many,
                   help=f"attention: tokens per sequence L (>= 2){grid} [2]")
    p.add_argument("--skip", default=default(skip), **many,
                   help=f"attention: skip strength c (>= 0): values, comma lists or "
                   f"start:stop:step{grid} [{skip}]")
    p.add_argument("--beta", default=default("1"), **many,
                   help=f"attention: softmax inverse temperature (> 0){grid} [1]")
    p.add_argument("--noise", default=default("0.1"), **many,
                   help=f"linear, link: noise variance Δ (>= 0){grid} [linear: 0.1, link: "
                   "none (a discrete link)]")
    if not link:
        return
    p.add_argument("--link", default=None,
                   help="any model y = g(Z) (+ noise): a formula in z (L = p = 1), z1 … zp "
                   "(L = 1) or z<l>_<k> (token l, direction k), e.g. 'sign(z1*z2)' or "
                   "'(z1, z2**2)'; implies --model link; --seq-len and --dim default to "
                   "the largest indices used")
    if link_dim:
        p.add_argument("--dim", default=None,
                       help="link: directions p (>= the largest direction index used)")


def link_job(args, prog: str = "smi", link_dim: bool = True) -> dict | None:
    """The ``make_channel`` keyword arguments of ``--link`` (``args.model`` becomes
    "link"), or None without it; usage errors name the option (``--link`` with another
    ``--model``, unknown symbols, a shape mismatch, values not finite on Gaussian inputs,
    a bad ``--noise``), before any work.  The job holds the canonical text of the link.
    ``link_dim``: the command's ``--dim`` is the link's p (see :func:`add_model_arguments`)."""
    given = getattr(args, "given", set())
    if args.link is None:
        if args.model == "link":
            raise fail("--model", "link needs --link FORMULA", prog)
        if link_dim:
            refuse_inapplicable(args, ("--dim",), False, "--link", prog)
        return None
    if "--model" in given and args.model != "link":
        raise fail("--link", f"applies to --model link only, got --model {args.model}", prog)
    args.model = "link"

    def one(option: str, texts):
        vals = values(texts, option, prog)
        if len(vals) != 1:
            raise fail(option, f"must be one value with --link, got {vals}", prog)
        return vals[0]

    seq_len = dim = noise = None
    if "--seq-len" in given:
        seq_len = one("--seq-len", args.seq_len)
        if seq_len != int(seq_len) or seq_len < 1:
            raise fail("--seq-len", f"must be an integer >= 1, got {seq_len:g}", prog)
        seq_len = int(seq_len)
    if link_dim and "--dim" in given:
        dim = integer(args.dim, "--dim", 1, prog)
    if "--noise" in given:
        noise = one("--noise", args.noise)
        if noise < 0:
            raise fail("--noise", f"must be >= 0, got {noise:g}", prog)
    from asymptotics.channels.link import LinkChannel, LinkError

    try:
        ch = LinkChannel(args.link, seq_len, dim, noise)
    except LinkError as exc:
        raise fail(exc.option, exc.message, prog) from None
    return {"model": "link", "link": ch.spec.text, "seq_len": ch.seq_len, "dim": ch.dim,
            "noise": ch.noise or None}


# ------------------------------------------------------------------ simulation options


def add_simulation_arguments(p: argparse.ArgumentParser, summary_help: str) -> None:
    """What every simulation takes: ``--seeds``, ``--seed``, ``--n-test``, ``--device``,
    ``--output`` (JSON lines) and ``--summary-only``, then the executor options."""
    a = p.add_argument
    a("--seeds", default="8", help="number of seeds (>= 1) [8]")
    a("--seed", default="0", help="first seed; seeds are seed, seed+1, ... [0]")
    a("--n-test", default="2000", help="fresh test sequences for the generalisation error "
                                       "[2000]")
    a("--device", default="cpu", help="cpu or gpu (needs cupy) [cpu]")
    a("--output", default="-", help="output file for JSON lines ('-': stdout) [-]")
    a("--summary-only", action="store_true", help=summary_help)
    a("--resume", action="store_true",
      help="continue an interrupted run from --output: seeds already done are read back, "
      "the rest computed (refused if the file was made with other settings)")
    add_overwrite_argument(p)
    add_executor_arguments(p)


def simulation_values(args, prog: str) -> dict:
    """Checked ``seeds`` (the list), ``n_test`` and ``device`` of
    :func:`add_simulation_arguments`."""
    first = integer(args.seed, "--seed", 0, prog)
    return {"seeds": [first + i for i in range(integer(args.seeds, "--seeds", 1, prog))],
            "n_test": integer(args.n_test, "--n-test", 1, prog),
            "device": check_device(args.device, prog)}


# --------------------------------------------------------------------------- executors


def add_executor_arguments(p: argparse.ArgumentParser) -> None:
    """``--workers``, ``--cluster`` and ``--scheduler-file``."""
    p.add_argument("--workers", default=None,
                   help="local worker processes (default: one per core when the sweep has "
                   "several tasks; 1 runs in this process)")
    p.add_argument("--cluster", default=None,
                   help="run the tasks on the Dask scheduler at tcp://HOST:PORT")
    p.add_argument("--scheduler-file", default=None,
                   help="run the tasks on the Dask cluster described by this scheduler file")


def executor_options(args, n_tasks: int, prog: str = "smi") -> dict:
    """Validated keyword arguments of :func:`asymptotics.executors.make_executor` for a
    sweep of ``n_tasks`` tasks; a usage error when bad."""
    workers = None
    if getattr(args, "workers", None) is not None:
        workers = integer(args.workers, "--workers", prog=prog)
    cluster, sched = getattr(args, "cluster", None), getattr(args, "scheduler_file", None)
    try:
        kind = check_options(workers, cluster, sched)
    except ExecutorError as exc:
        raise UsageError(f"{prog}: error: {exc}") from None
    if kind == "dask":
        return {"kind": "dask", "cluster": cluster, "scheduler_file": sched}
    workers = default_workers(n_tasks) if workers is None else min(workers, max(1, n_tasks))
    return {"kind": "process" if workers > 1 else "serial", "workers": workers}


# ----------------------------------------------------------------------- result files

_SETTING_OPTIONS = {
    "grid": "the grid (--model, --link, --dim, --depth, --seq-len, --skip, --beta, --noise)",
    "channels": "the models (--model, --link, --dim, --depth, --seq-len, --skip, --beta, "
                "--noise)",
    "staircase_log2_points": "--staircase-points",
    "log2_points": "--staircase-points",
}


def add_overwrite_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing --output file (without it an existing file is "
                   "refused unless --resume continues it)")


def add_table_output_arguments(p: argparse.ArgumentParser, output_help: str) -> None:
    """``--format``, ``--output``, ``--resume``, ``--overwrite`` and the executor options
    of a sweep that prints a table."""
    p.add_argument("--format", default="table", choices=["table", "csv", "json"])
    p.add_argument("--output", default=None, help=output_help)
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted sweep from --output, computing only what is "
                   "missing (refused if the file was made with other settings)")
    add_overwrite_argument(p)
    add_executor_arguments(p)


def option_of_setting(key: str) -> str:
    """The option (or options) that set a recorded setting ``key``."""
    return _SETTING_OPTIONS.get(key, "--" + key.replace("_", "-"))


def resume_refusal(exc: Exception, prog: str = "smi") -> UsageError:
    """The usage error of a refused resume, naming the options whose values differ."""
    text = str(exc)
    head, sep, diffs = text.partition(" was made with other settings: ")
    if sep:
        parts = []
        for d in diffs.split("; "):
            key, colon, rest = d.partition(": ")
            parts.append(f"{option_of_setting(key)}: {rest}" if colon else d)
        text = f"{head} was made with other settings: " + "; ".join(parts)
    return UsageError(f"{prog}: error: --resume: {text}", "--resume")


def exists_refusal(path: str, prog: str = "smi") -> UsageError:
    return fail("--output", f"{path!r} exists: use --resume to continue it, or --overwrite "
                "to replace it", prog)


# ------------------------------------------------------------------- devices and files


def check_device(device: str, prog: str = "smi") -> str:
    """``cpu`` or ``gpu`` (with cupy and a CUDA device), or a usage error for --device."""
    try:
        get_namespace(device)
    except (ValueError, BackendError) as exc:
        raise fail("--device", str(exc).splitlines()[0], prog) from None
    return device


def run_simulation(args, prog: str, kind: str, settings: dict, rows_of) -> None:
    """Write the rows of a simulation to ``--output``.

    ``rows_of(done, record)`` iterates the rows (:func:`simulators.sweeps.task_outputs`).
    To stdout the rows stream as they come.  To a file, the file is a journal while the
    run goes on: the settings record, then one record per finished task (seed), so that
    ``--resume`` continues an interrupted run; when done it is replaced by the record and
    the rows, in order.
    """
    if args.resume and args.output == "-":
        raise fail("--resume", "needs --output FILE", prog)
    if args.resume and args.overwrite:
        raise fail("--overwrite", "contradicts --resume", prog)
    if args.output == "-":
        write_rows(sys.stdout, rows_of(None, None))
        return
    why = asy.check_writable(args.output)
    if why is not None:
        raise fail("--output", f"cannot write {args.output!r}: {why}", prog)
    try:
        journal = asy.Journal(args.output, args.resume, lambda r: str(r.get("task")), True,
                              asy.make_header(kind, settings, command_line(args)),
                              args.overwrite)
    except asy.OutputExistsError:
        raise exists_refusal(args.output, prog) from None
    except asy.ResumeError as exc:
        raise resume_refusal(exc, prog) from None
    if journal.rows and not any("task" in r for r in journal.rows):
        return  # a finished file of the same settings: nothing to compute
    done = {r["task"]: r["output"] for r in journal.rows if "task" in r}
    rows = list(rows_of(done, lambda key, out: journal.append([{"task": key, "output": out}])))
    journal.finish_rows(rows)


def write_rows(out: TextIO, rows: Iterable[dict]) -> None:
    """Rows as JSON lines (:func:`asymptotics.results.json_line`), flushed one by one."""
    for row in rows:
        out.write(json_line(row))
        out.flush()
