"""``smi simulate train``: train deep tied attention networks on teacher data.

The lead CLI registers this sub-command with :func:`add_train_parser` and dispatches to
:func:`run_train`; for stand-alone use, ``python -m simulators.train_cli ...``.  The sweep
itself is :func:`simulators.sweeps.iter_training_rows`; this module parses, calls it and
writes.

Output: JSON lines.  One line per (seed, optimizer, alpha, logged step) with
``seed, optimizer, alpha, lr, step, train_loss, test_loss, M, Q, cosine, diverged``
(unless ``--summary-only``), a line ``{"diverged": true, ...}`` for a run that diverged
(no final numbers for it), and one ``"summary": true`` line per (optimizer, alpha) with
means, standard deviations (ddof=1) and standard errors across the seeds that did not
diverge of the final train/test loss and per-layer cosine, |m_k| and q_k, plus the
``diverged`` count.  Numbers in summary rows are ``null`` when every seed diverged.

Input errors are reported before any work, as one line on stderr naming the option, with
exit status 2.
"""

from __future__ import annotations

import argparse
import json
import math
import sys

from asymptotics.backend import BackendError, get_namespace
from asymptotics.channels.attention_map import Architecture
from asymptotics.executors import ExecutorError, make_executor
from asymptotics.sweeps import add_executor_arguments, executor_options

from ._cli_common import InputError
from ._cli_common import int_at_least as _int_at_least
from ._cli_common import parse_number as _num
from .attention_training import TrainConfig
from .optimizers import parse_optimizer_name
from .sweeps import DEFAULT_LR, default_lr, iter_training_rows
from .sweeps import summarise_training as summarise

__all__ = ["DEFAULT_LR", "add_train_parser", "default_lr", "main", "parse_alphas",
           "run_train", "summarise", "validate"]


def add_train_parser(subparsers):
    """Register the ``train`` sub-command on an argparse ``subparsers`` object."""
    p = subparsers.add_parser(
        "train",
        help="train deep tied attention networks (teacher-student, optimizer menu)",
        description=(
            "Train the deep tied low-rank attention network (THEORY §2) on data labelled by "
            "a planted teacher; log losses and overlaps on a log-spaced schedule (JSON lines)."
        ),
    )
    add_train_arguments(p)
    p.set_defaults(func=run_train)
    return p


def add_train_arguments(p):
    # numbers are parsed and validated by run_train, for one-line error messages
    a = p.add_argument
    a("--depth", default="2", help="number of layers l (>= 1) [2]")
    a("--rank", default="1", help="rank r of each layer's weight (>= 1) [1]")
    a("--seq-len", default="2", help="tokens per sequence L (>= 2) [2]")
    a("--skip", default="1", help="skip strength c [1]")
    a("--beta", default="1", help="softmax inverse temperature [1]")
    a("--alpha", default="15", help="sample ratio N/D (> 0) [15]")
    a("--alphas", default=None,
      help="sample-complexity sweep: start:stop:step (stop included) or a comma list")
    a("--dim", default="500", help="input dimension D (>= 2) [500]")
    a("--optimizer", default="adam",
      help="optimizer or comma list: gd, sgd, adam, adamw, signgd, signum, msvag, svag, "
           "sam, fsam, psam, pfsam (SAM variants take -BASE, e.g. fsam-adam) [adam]")
    a("--lr", default=None,
      help="learning rate, or a comma list matching --optimizer; default per optimizer: "
           "0.5*D for gd/msvag/svag/sam/fsam on gd, 0.05*D for sgd, 1e-2 for "
           "adam/adamw/signgd/signum and for SAM variants on those")
    a("--steps", default="2000", help="optimizer steps [2000]")
    a("--batch", default="full", help="'full' or a mini-batch size <= N [full]")
    a("--momentum", default=None,
      help="momentum / moving-average constant of sgd, signum, msvag, svag [0.9]")
    a("--weight-decay", default="0", help="weight decay (AdamW: decoupled) [0]")
    a("--rho", default="0.05", help="SAM/FSAM perturbation radius (global norm) [0.05]")
    a("--init-scale", default="0.1", help="student init: iid N(0, s^2) entries [0.1]")
    a("--n-test", default="2000", help="fresh test sequences [2000]")
    a("--seeds", default="8", help="number of seeds [8]")
    a("--seed", default="0", help="first seed; seeds are seed, seed+1, ... [0]")
    a("--device", default="cpu", help="cpu or gpu (needs cupy) [cpu]")
    a("--dtype", default="float64", help="float64 or float32 [float64]")
    a("--log-points", default="50", help="log-spaced logged steps (>= 2) [50]")
    a("--diverge-q", default="1e8",
      help="declare divergence when some q_k = |w_k|^2/D exceeds this [1e8]")
    a("--output", default="-", help="output file for JSON lines ('-': stdout) [-]")
    a("--summary-only", action="store_true", help="write only the summary rows")
    add_executor_arguments(p)
    return p


# ----------------------------------------------------------------------- validation




def parse_alphas(text: str):
    """``'a:b:h'`` (b included when hit, up to rounding) or ``'a1,a2,...'``."""
    if ":" in text:
        parts = text.split(":")
        if len(parts) != 3:
            raise InputError("--alphas", f"expected start:stop:step, got {text!r}")
        a, b, h = (_num(s, "--alphas") for s in parts)
        if h <= 0 or b < a:
            raise InputError("--alphas", f"need step > 0 and stop >= start, got {text!r}")
        n = int(math.floor((b - a) / h + 1e-9)) + 1
        vals = [round(a + i * h, 12) for i in range(n)]
    else:
        vals = [_num(s, "--alphas") for s in text.split(",") if s.strip()]
    if not vals:
        raise InputError("--alphas", "empty list")
    for v in vals:
        if v <= 0:
            raise InputError("--alphas", f"every alpha must be > 0, got {v}")
    return vals


def validate(args):
    """Turn parsed argparse strings into checked values; raise :class:`InputError`."""
    v = {}
    v["depth"] = _int_at_least(args.depth, "--depth", 1)
    v["rank"] = _int_at_least(args.rank, "--rank", 1)
    v["seq_len"] = _int_at_least(args.seq_len, "--seq-len", 2)
    v["dim"] = _int_at_least(args.dim, "--dim", 2)
    v["skip"] = _num(args.skip, "--skip")
    v["beta"] = _num(args.beta, "--beta")
    if v["skip"] < 0:  # the ranges of Architecture, shared with the channel
        raise InputError("--skip", f"must be >= 0, got {v['skip']}")
    if v["beta"] <= 0:
        raise InputError("--beta", f"must be > 0, got {v['beta']}")
    v["arch"] = Architecture(v["depth"], v["seq_len"], v["skip"], v["beta"], v["rank"])
    if args.alphas is not None:
        v["alphas"] = parse_alphas(args.alphas)
    else:
        a = _num(args.alpha, "--alpha")
        if a <= 0:
            raise InputError("--alpha", f"must be > 0, got {a}")
        v["alphas"] = [a]
    names = [s.strip().lower() for s in str(args.optimizer).split(",") if s.strip()]
    if not names:
        raise InputError("--optimizer", "empty")
    for nm in names:
        try:
            parse_optimizer_name(nm)
        except ValueError as exc:
            raise InputError("--optimizer", str(exc)) from None
    v["optimizers"] = names
    if args.lr is None:
        lrs = [default_lr(nm, v["dim"]) for nm in names]
    else:
        lrs = [_num(s, "--lr") for s in str(args.lr).split(",")]
        if len(lrs) == 1:
            lrs = lrs * len(names)
        if len(lrs) != len(names):
            raise InputError("--lr", f"{len(lrs)} values for {len(names)} optimizers")
    for lr in lrs:
        if lr <= 0:
            raise InputError("--lr", f"must be > 0, got {lr}")
    v["lrs"] = lrs
    v["steps"] = _int_at_least(args.steps, "--steps", 0)
    n_min = min(max(1, int(round(a * v["dim"]))) for a in v["alphas"])
    if str(args.batch).strip().lower() == "full":
        v["batch"] = None
    else:
        b = _int_at_least(args.batch, "--batch", 1)
        if b > n_min:
            raise InputError("--batch", f"{b} is larger than the number of training "
                                        f"sequences N = alpha*D = {n_min}")
        v["batch"] = b
    if args.momentum is None:
        v["momentum"] = None
    else:
        m = _num(args.momentum, "--momentum")
        if not 0 <= m < 1:
            raise InputError("--momentum", f"must be in [0, 1), got {m}")
        v["momentum"] = m
    v["weight_decay"] = _num(args.weight_decay, "--weight-decay")
    if v["weight_decay"] < 0:
        raise InputError("--weight-decay", f"must be >= 0, got {v['weight_decay']}")
    v["rho"] = _num(args.rho, "--rho")
    if v["rho"] < 0:
        raise InputError("--rho", f"must be >= 0, got {v['rho']}")
    v["init_scale"] = _num(args.init_scale, "--init-scale")
    if v["init_scale"] < 0:
        raise InputError("--init-scale", f"must be >= 0, got {v['init_scale']}")
    v["n_test"] = _int_at_least(args.n_test, "--n-test", 1)
    v["seeds"] = _int_at_least(args.seeds, "--seeds", 1)
    v["seed"] = _int_at_least(args.seed, "--seed", 0)
    v["log_points"] = _int_at_least(args.log_points, "--log-points", 2)
    v["diverge_q"] = _num(args.diverge_q, "--diverge-q")
    if v["diverge_q"] <= 0:
        raise InputError("--diverge-q", f"must be > 0, got {v['diverge_q']}")
    if args.dtype not in ("float64", "float32"):
        raise InputError("--dtype", f"expected float64 or float32, got {args.dtype!r}")
    v["dtype"] = args.dtype
    try:
        v["xp"] = get_namespace(args.device)
    except (ValueError, BackendError) as exc:
        raise InputError("--device", str(exc)) from None
    v["device"] = args.device
    return v


# ----------------------------------------------------------------------------- run


def run_train(args) -> int:
    """Run the ``train`` sub-command; returns the exit status (2 on bad input)."""
    try:
        v = validate(args)
    except InputError as exc:
        print(f"smi simulate train: error: {exc}", file=sys.stderr)
        return 2
    try:
        opts = executor_options(args, v["seeds"] * len(v["alphas"]))
        executor = make_executor(**opts)
    except ExecutorError as exc:
        print(f"smi simulate train: error: {exc}", file=sys.stderr)
        return 2
    with executor:
        try:
            out = sys.stdout if args.output == "-" else open(args.output, "w")  # noqa: SIM115
        except OSError as exc:
            print(f"smi simulate train: error: --output: cannot write {args.output!r}: "
                  f"{exc.strerror}", file=sys.stderr)
            return 2
        try:
            return _run(v, executor, out, args.summary_only)
        finally:
            if out is not sys.stdout:
                out.close()


def _emit(out, row):
    out.write(json.dumps(row) + "\n")
    out.flush()


def _run(v, executor, out, summary_only) -> int:
    config = TrainConfig(
        arch=v["arch"], dim=v["dim"], steps=v["steps"], batch=v["batch"],
        momentum=v["momentum"], weight_decay=v["weight_decay"], rho=v["rho"],
        init_scale=v["init_scale"], n_test=v["n_test"], log_points=v["log_points"],
        diverge_q=v["diverge_q"], dtype=v["dtype"],
    )
    seeds = [v["seed"] + i for i in range(v["seeds"])]
    runs = list(zip(v["optimizers"], v["lrs"], strict=True))
    for row in iter_training_rows(config, seeds, v["alphas"], runs, device=v["device"],
                                  summary_only=summary_only, executor=executor):
        _emit(out, row)
    return 0


def main(argv=None) -> int:
    """Stand-alone entry point: ``python -m simulators.train_cli [options]``."""
    parser = argparse.ArgumentParser(
        prog="python -m simulators.train_cli",
        description="Train deep tied attention networks (same options as `smi simulate train`).",
    )
    add_train_arguments(parser)
    return run_train(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
