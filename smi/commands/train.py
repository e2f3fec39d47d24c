"""``smi simulate train``: train deep tied attention networks on teacher data.

The sweep is :func:`simulators.sweeps.iter_training_rows`; this command parses, calls it
and writes its rows as JSON lines: one row per (seed, optimizer, alpha, logged step) with
``seed, optimizer, alpha, lr, step, train_loss, test_loss, M, Q, cosine, diverged``
(unless ``--summary-only``), a row ``{"diverged": true, ...}`` for a run that diverged
(no final numbers for it), and one ``"summary": true`` row per (optimizer, alpha) with
means, standard deviations (ddof=1) and standard errors across the seeds that did not
diverge of the final train/test loss and per-layer cosine, |m_k| and q_k, plus the
``diverged`` count.  Numbers in summary rows are ``null`` when every seed diverged.
"""

from __future__ import annotations

import dataclasses

import asymptotics as asy
import simulators as sim

from ..options import (
    add_simulation_arguments,
    executor_options,
    fail,
    integer,
    number,
    optimizer_names,
    refused_as,
    run_simulation,
    simulation_values,
    values,
)

NAME = "train"
HELP = "train deep tied attention networks (teacher-student, optimizer menu)"
DESCRIPTION = ("Train the deep tied low-rank attention network (THEORY §2) on data labelled "
               "by a planted teacher; log losses and overlaps on a log-spaced schedule "
               "(JSON lines).")
PROG = "smi simulate train"


def add_arguments(p) -> None:
    # numbers are parsed and validated by parse, for one-line error messages
    a = p.add_argument
    a("--depth", default="2", help="number of layers l (>= 1) [2]")
    a("--rank", default="1", help="rank r of each layer's weight (>= 1) [1]")
    a("--seq-len", default="2", help="tokens per sequence L (>= 2) [2]")
    a("--skip", default="1", help="skip strength c (>= 0) [1]")
    a("--beta", default="1", help="softmax inverse temperature (> 0) [1]")
    a("--alpha", default="15", help="sample ratio N/D (> 0) [15]")
    a("--alphas", nargs="+", default=None,
      help="sample-complexity sweep: start:stop:step (stop included) or a comma list")
    a("--dim", default="500", help="input dimension D (>= 2) [500]")
    a("--optimizer", nargs="+", default=["adam"],
      help="optimizer or comma list: gd, sgd, adam, adamw, signgd, signum, msvag, svag, "
           "sam, fsam, psam, pfsam (SAM variants take -BASE, e.g. fsam-adam) [adam]")
    a("--lr", nargs="+", default=None,
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
    a("--dtype", default="float64", help="float64 or float32 [float64]")
    a("--log-points", default="50", help="log-spaced logged steps (>= 2) [50]")
    a("--diverge-q", default="1e8",
      help="declare divergence when some q_k = |w_k|^2/D exceeds this [1e8]")
    add_simulation_arguments(p, "write only the summary rows")


def parse(args) -> dict:
    """Checked values of every option, before any work (usage errors name the option)."""
    v = simulation_values(args, PROG)
    v["dim"] = integer(args.dim, "--dim", 2, PROG)
    skip = number(args.skip, "--skip", PROG, minimum=0)
    beta = number(args.beta, "--beta", PROG, above=0)
    v["arch"] = asy.Architecture(integer(args.depth, "--depth", 1, PROG),
                             integer(args.seq_len, "--seq-len", 2, PROG), skip, beta,
                             integer(args.rank, "--rank", 1, PROG))
    if args.alphas is not None:
        v["alphas"] = values(args.alphas, "--alphas", PROG)
        if min(v["alphas"]) <= 0:
            raise fail("--alphas", f"every alpha must be > 0, got {args.alphas!r}", PROG)
    else:
        v["alphas"] = [number(args.alpha, "--alpha", PROG, above=0)]
    for a in v["alphas"]:
        if round(a * v["dim"]) < 1:
            option = "--alphas" if args.alphas is not None else "--alpha"
            raise fail(option, f"alpha*D = {a * v['dim']:g} gives no training samples", PROG)
    v["optimizers"] = names = optimizer_names(args.optimizer, "--optimizer", PROG)
    if args.lr is None:
        lrs = [sim.default_lr(nm, v["dim"]) for nm in names]
    else:
        lrs = [number(s, "--lr", PROG, above=0) for s in ",".join(args.lr).split(",")]
        if len(lrs) == 1:
            lrs = lrs * len(names)
        if len(lrs) != len(names):
            raise fail("--lr", f"{len(lrs)} values for {len(names)} optimizers", PROG)
    v["lrs"] = lrs
    v["steps"] = integer(args.steps, "--steps", 0, PROG)
    n_min = min(max(1, int(round(a * v["dim"]))) for a in v["alphas"])
    if str(args.batch).strip().lower() == "full":
        v["batch"] = None
    else:
        b = integer(args.batch, "--batch", 1, PROG)
        if b > n_min:
            raise fail("--batch", f"{b} is larger than the number of training sequences "
                       f"N = alpha*D = {n_min}", PROG)
        v["batch"] = b
    v["momentum"] = None
    if args.momentum is not None:
        v["momentum"] = number(args.momentum, "--momentum", PROG, minimum=0, below=1)
    v["weight_decay"] = number(args.weight_decay, "--weight-decay", PROG, minimum=0)
    v["rho"] = number(args.rho, "--rho", PROG, minimum=0)
    v["init_scale"] = number(args.init_scale, "--init-scale", PROG, minimum=0)
    v["log_points"] = integer(args.log_points, "--log-points", 2, PROG)
    v["diverge_q"] = number(args.diverge_q, "--diverge-q", PROG, above=0)
    if args.dtype not in ("float64", "float32"):
        raise fail("--dtype", f"expected float64 or float32, got {args.dtype!r}", PROG)
    v["dtype"] = args.dtype
    return v


def run(args) -> int:
    v = parse(args)
    opts = executor_options(args, len(v["seeds"]) * len(v["alphas"]), PROG)
    config = sim.TrainConfig(
        arch=v["arch"], dim=v["dim"], steps=v["steps"], batch=v["batch"],
        momentum=v["momentum"], weight_decay=v["weight_decay"], rho=v["rho"],
        init_scale=v["init_scale"], n_test=v["n_test"], log_points=v["log_points"],
        diverge_q=v["diverge_q"], dtype=v["dtype"],
    )
    with refused_as("--dim", PROG):
        sim.check_training(config, v["alphas"])
    runs = list(zip(v["optimizers"], v["lrs"], strict=True))
    settings = {**{k: x for k, x in v.items() if k != "arch"}, **dataclasses.asdict(v["arch"]),
                "summary_only": args.summary_only}
    with asy.make_executor(**opts) as executor:
        def rows_of(done, record):
            return sim.iter_training_rows(config, v["seeds"], v["alphas"], runs,
                                          device=v["device"], summary_only=args.summary_only,
                                          executor=executor, done=done, record=record)

        run_simulation(args, PROG, "train", settings, rows_of)
    return 0
