"""Overlap curves over α: AMP and informed branches, free entropy and errors (THEORY §3–4).

Both branches are followed by warm-started continuation: the AMP branch upwards in α from
the uninformed start ``Q = ε I``, the informed branch downwards from ``Q = (1 - ε) I``, so
that hysteresis shows.  At each α the Bayes-optimal branch is the one of larger free
entropy (ties within the error go to the AMP branch).

Rows are appended to a JSON-lines file as they are computed; ``resume=True`` reads the
rows already there, skips their α and continues from the last fixed point of each branch,
so an interrupted sweep resumed gives the same rows as an uninterrupted one.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from collections.abc import Callable, Iterable

import numpy as np

from .channels.base import Channel
from .priors import GaussianPrior
from .state_evolution import SESettings, StateEvolution, initial_overlap, run_state_evolution
from .transitions import Transition, amp_spinodal, it_threshold

BRANCHES = ("amp", "bayes", "both")


def _point(channel, alpha, start, settings, damping, tol, max_iter, label, prior) -> dict:
    res = run_state_evolution(channel, alpha, start, damping=damping, tol=tol,
                              max_iter=max_iter, settings=settings, prior=prior)
    Q = res.Q
    if res.status == "perfect-recovery":
        psi = channel.perfect_recovery_psi_out()
        phi = math.nan if psi is None else prior.perfect_recovery_free_entropy(channel.dim) \
            + alpha * psi
        zero = {k: 0.0 for k in ("gen_error_plugin", "gen_error_plugin_stderr",
                                 "gen_error_bayes", "gen_error_bayes_stderr")}
        return {"alpha": float(alpha), "branch": label, "Q": Q.tolist(),
                "Q_stderr": np.zeros_like(Q).tolist(), "free_entropy": phi,
                "free_entropy_stderr": 0.0, **zero, "converged": True,
                "status": res.status, "iterations": int(res.iterations)}
    se = StateEvolution(channel, alpha, settings, prior)
    phi, phi_err = se.free_entropy(Q, res.estimate)
    errors = se.generalisation_errors(Q)
    return {
        "alpha": float(alpha),
        "branch": label,
        "Q": Q.tolist(),
        "Q_stderr": res.Q_stderr.tolist(),
        "free_entropy": phi,
        "free_entropy_stderr": phi_err,
        **errors,
        "converged": bool(res.converged),
        "status": res.status,
        "iterations": int(res.iterations),
        "coarse_iterations": int(res.coarse_iterations),
        "replicate_iterations": int(res.replicate_iterations),
    }


def _read_rows(path: str) -> list[dict]:
    rows = []
    if path and os.path.exists(path):
        with open(path) as fh:
            for line in fh:
                line = line.strip()
                if not line:
                    continue
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:
                    break  # a line cut by an interruption: recompute from there
    return rows


def sweep(
    channel: Channel,
    alphas: Iterable[float],
    branch: str = "both",
    *,
    settings: SESettings | None = None,
    damping: float = 0.5,
    tol: float = 1e-8,
    max_iter: int = 500,
    output: str | None = None,
    resume: bool = False,
    progress: Callable[[int, int, float], None] | None = None,
    prior=None,
) -> list[dict]:
    """SE curve over ``alphas``; rows for the AMP and informed runs and the Bayes choice."""
    prior = prior or GaussianPrior()
    if branch not in BRANCHES:
        raise ValueError(f"branch must be one of {BRANCHES}, got {branch!r}")
    alphas = sorted(float(a) for a in alphas)
    if not alphas or any(not math.isfinite(a) or a <= 0 for a in alphas):
        raise ValueError("alphas must be finite and > 0")
    p = channel.dim
    done = _read_rows(output) if resume else []
    if output and not resume:
        open(output, "w").close()
    if output and resume:
        with open(output, "w") as fh:  # drop a trailing partial line, keep complete rows
            for row in done:
                fh.write(json.dumps(row) + "\n")
    runs = [("amp", alphas, initial_overlap(p, "uninformed"))]
    if branch in ("bayes", "both"):
        runs.append(("informed", alphas[::-1], initial_overlap(p, "informed")))
    total = sum(len(a) for _, a, _ in runs)
    count, t0 = 0, time.perf_counter()
    rows = [r for r in done if r["branch"] in ("amp", "informed")]
    for label, seq, start in runs:
        have = {r["alpha"]: r for r in rows if r["branch"] == label}
        Q = start
        for a in seq:
            count += 1
            if a in have:
                Q = _restart(np.array(have[a]["Q"]), label, p)
                continue
            row = _point(channel, a, Q,
                         settings, damping, tol, max_iter, label, prior)
            Q = _restart(np.array(row["Q"]), label, p)
            rows.append(row)
            if output:
                with open(output, "a") as fh:
                    fh.write(json.dumps(row) + "\n")
            if progress:
                progress(count, total, time.perf_counter() - t0)
    rows.sort(key=lambda r: (r["alpha"], r["branch"]))
    if branch in ("bayes", "both"):
        rows = rows + _bayes_rows(rows)
    order = {"amp": 0, "informed": 1, "bayes": 2}
    rows.sort(key=lambda r: (r["alpha"], order[r["branch"]]))
    if branch == "amp":
        rows = [r for r in rows if r["branch"] == "amp"]
    elif branch == "bayes":
        rows = [r for r in rows if r["branch"] == "bayes"]
    return rows


def _restart(Q: np.ndarray, label: str, p: int) -> np.ndarray:
    """Warm start for the next α, kept strictly inside ``0 <= Q < I`` (the uninformed
    branch never restarts below ε, so a vanishing overlap can still grow)."""
    eps = 1e-3
    w, U = np.linalg.eigh(0.5 * (Q + Q.T))
    lo = eps if label == "amp" else 0.0
    hi = 1.0 - eps if label == "amp" else 1.0 - 1e-9  # a perfect-recovery Q = I restarts inside
    w = np.clip(w, lo, hi)
    return (U * w) @ U.T


def _bayes_rows(rows: list[dict]) -> list[dict]:
    out = []
    by_alpha: dict[float, dict] = {}
    for r in rows:
        by_alpha.setdefault(r["alpha"], {})[r["branch"]] = r
    for _, pair in sorted(by_alpha.items()):
        if "amp" not in pair or "informed" not in pair:
            continue
        amp, inf = pair["amp"], pair["informed"]
        if not (amp["converged"] and inf["converged"]):
            # a free entropy of an unconverged run is no basis for a choice: say so
            row = dict(amp)
            row.update(branch="bayes", source_branch="undetermined", converged=False,
                       status="undetermined: a branch did not converge")
            out.append(row)
            continue
        margin = inf["free_entropy"] - amp["free_entropy"]
        tol = math.hypot(inf["free_entropy_stderr"], amp["free_entropy_stderr"])
        best = inf if margin > tol else amp
        row = dict(best)
        row["branch"] = "bayes"
        row["source_branch"] = best["branch"]
        out.append(row)
    return out


def progress_bar(stream=sys.stderr) -> Callable[[int, int, float], None]:
    """A one-line progress display with the estimated remaining time."""

    def show(done: int, total: int, elapsed: float) -> None:
        frac = done / total
        eta = elapsed / frac - elapsed if frac > 0 else float("nan")
        bar = "#" * int(30 * frac)
        print(f"\r[{bar:<30}] {done}/{total}  {elapsed:.0f}s, ~{eta:.0f}s left",
              end="" if done < total else "\n", file=stream, flush=True)

    return show


def locate_transitions(channel: Channel, rows: list[dict], prior=None, *,
                       settings: SESettings | None = None, tol: float = 2e-3,
                       branch_gap: float = 1e-3) -> list[Transition]:
    """First-order transitions bracketed by a sweep's rows, located by bisection.

    The AMP spinodal lies between consecutive α where the AMP and informed overlaps differ
    (by more than ``branch_gap``) and then agree; the IT threshold between consecutive α
    where the Bayes row switches from the AMP to the informed branch.
    """
    prior = prior or GaussianPrior()
    by: dict[float, dict] = {}
    for r in rows:
        by.setdefault(r["alpha"], {})[r["branch"]] = r
    alphas = sorted(a for a, pair in by.items() if {"amp", "informed"} <= set(pair))
    out = []

    def differ(a):
        qa = np.diag(np.array(by[a]["amp"]["Q"]))
        qi = np.diag(np.array(by[a]["informed"]["Q"]))
        return bool(np.max(np.abs(qa - qi)) > branch_gap)

    for a, b in zip(alphas[:-1], alphas[1:], strict=True):
        if differ(a) and not differ(b):
            out.append(amp_spinodal(channel, prior, a, b, tol=tol, settings=settings))
        src_a = by[a].get("bayes", {}).get("source_branch")
        src_b = by[b].get("bayes", {}).get("source_branch")
        if src_a == "amp" and src_b == "informed":
            out.append(it_threshold(channel, prior, a, b, tol=tol, settings=settings))
    return out
