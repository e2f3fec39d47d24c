"""Overlap curves over α: AMP and informed branches, free entropy and errors (THEORY §3–4).

Both branches are followed by warm-started continuation: the AMP branch upwards in α from
the uninformed start ``Q = ε I``, the informed branch downwards from ``Q = (1 - ε) I``, so
that hysteresis shows.  At each α the Bayes-optimal branch is the one of larger free
entropy (ties within the error go to the AMP branch).

Rows are appended to a JSON-lines file as they are computed; ``resume=True`` reads the
rows already there, skips their α and continues from the last fixed point of each branch,
so an interrupted sweep resumed gives the same rows as an uninterrupted one.

Each branch of each setting is one chain task (:func:`chain_task`), so the two branches, and
the settings of :func:`sweep_settings`, can run in parallel on any executor of
:mod:`asymptotics.executors` with the same rows.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, replace

import numpy as np

from .cache import ResultCache, as_cache, cache_location
from .channels.base import Channel
from .channels.registry import make_channel
from .checks import MAX_RESOLUTION, MAX_SOBOL_LOG2, check_int, check_number
from .executors import Executor, SerialExecutor, Task, report_partial
from .priors import GaussianPrior, Prior, make_prior
from .results import make_header, plain
from .state_evolution import (
    SESettings,
    StateEvolution,
    initial_overlap,
    replicate_rules,
    run_state_evolution,
)
from .sweeps import Journal
from .transitions import Transition, amp_spinodal, it_threshold

BRANCHES = ("amp", "bayes", "both")


def _point(channel, alpha, start, settings, damping, tol, max_iter, label, prior,
           cache: ResultCache | None = None, target: tuple[float, int] | None = None,
           recovered_at: float | None = None):
    """One curve row, and the warm start it leaves for the next α (None: from its Q).

    With ``cache`` the row is looked up, and stored once computed, under everything it
    depends on: the channel, prior, α, branch, the warm start ``start`` (rows of a chain
    are continued from each other), the SE settings, damping, tol, max_iter and the error
    target ``target = (target_error, max_sobol_log2, max_inner_resolution)`` (see
    :func:`sweep_settings`).
    ``recovered_at``: see :func:`~asymptotics.state_evolution.run_state_evolution` (the
    row is the same either way, so it is not part of the key)."""
    if cache is None:
        return _compute_point(channel, alpha, start, settings, damping, tol, max_iter, label,
                              prior, target, recovered_at)
    key = {"channel": {"model": channel.name, **channel.params(),
                       "inner_rule": channel.inner_description},
           "prior": prior.name, "alpha": float(alpha), "label": label,
           "start": np.asarray(start).tolist(), "settings": asdict(settings),
           "damping": damping, "tol": tol, "max_iter": max_iter}
    if target is not None:
        key["target"] = list(target)
    hit = cache.get("curve_point", key)
    if hit is not None and isinstance(hit.get("row"), dict):
        approach = hit.get("approach")
        return hit["row"], (None if approach is None else np.array(approach, dtype=float))
    row, approach = _compute_point(channel, alpha, start, settings, damping, tol, max_iter,
                                   label, prior, target, recovered_at)
    row = plain(row)
    cache.put("curve_point", key, {"row": row, "approach": approach})
    return row, approach


def _refined(res, channel, alpha, settings, damping, tol, max_iter, prior, target):
    """The fixed point refined until its largest overlap error is at most ``target_error``.

    Each step refines the part of the error that dominates on the entry with the largest
    error (``Q_stderr² = spread² + inner²``, :attr:`SEResult.Q_stderr_inner`): the inner
    rule (``channel.refined(r + 1)``, 4x the nodes of a 2-D grid) where its amplified bias
    bound is the larger part, or where the outer rule is at its cap and the spread alone
    meets the target; else the outer rule (``sobol_log2 + 2``, 4x the points).  Each solve
    starts from the last fixed point with its secant pairs.  Up to ``max_sobol_log2`` and
    ``max_inner_resolution``; only on a channel whose inner rule is its default one.
    Returns the last result, its ``sobol_log2`` and its inner resolution."""
    target_error, max_log2, max_inner = target
    log2, level = settings.sobol_log2, 0
    refinable = channel.refined(0).inner_description == channel.inner_description
    while (res.converged and res.status != "perfect-recovery"
           and np.nanmax(res.Q_stderr) > target_error):
        worst = np.unravel_index(np.nanargmax(res.Q_stderr), res.Q_stderr.shape)
        inner = 0.0 if res.Q_stderr_inner is None else float(res.Q_stderr_inner[worst])
        spread = math.sqrt(max(float(res.Q_stderr[worst]) ** 2 - inner**2, 0.0))
        can_inner = refinable and level < max_inner and inner > 0.0
        if can_inner and (inner > spread or (log2 >= max_log2 and spread <= target_error)):
            level += 1
        elif log2 < max_log2:
            log2 = min(log2 + 2, max_log2)
        else:
            break
        res = run_state_evolution(channel.refined(level) if level else channel, alpha,
                                  res.Q, damping=damping, tol=tol, max_iter=max_iter,
                                  settings=replace(settings, sobol_log2=log2), prior=prior,
                                  multi_fidelity=False, secant=res.secant)
    return res, log2, level


def _compute_point(channel, alpha, start, settings, damping, tol, max_iter, label, prior,
                   target=None, recovered_at=None):
    res = run_state_evolution(channel, alpha, start, damping=damping, tol=tol,
                              max_iter=max_iter, settings=settings, prior=prior,
                              recovered_at=recovered_at)
    extra = {}
    if target is not None and res.Q_stderr is not None:
        res, log2, level = _refined(res, channel, alpha, settings, damping, tol, max_iter,
                                    prior, target)
        met = bool(res.converged and np.nanmax(res.Q_stderr) <= target[0])
        extra = {"sobol_log2": log2, "inner_resolution": level, "error_target_met": met,
                 "amplification": plain(res.amplification)}
    Q = res.Q
    if res.status == "perfect-recovery":
        phi, _ = res.free_entropy()
        zero = {k: 0.0 for k in ("gen_error_plugin", "gen_error_plugin_stderr",
                                 "gen_error_bayes", "gen_error_bayes_stderr")}
        return {"alpha": float(alpha), "branch": label, "Q": Q.tolist(),
                "Q_stderr": np.zeros_like(Q).tolist(), "free_entropy": phi,
                "free_entropy_stderr": 0.0, **zero, "converged": True,
                "status": res.status, "iterations": int(res.iterations), **extra}, res.approach
    phi, phi_err = res.free_entropy()
    errors = res.generalisation_errors()
    if res.replicate_Q is not None:
        phi_err, errors = _fixed_point_spreads(res.solved_map, res.replicate_Q, phi_err,
                                               errors)
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
        **extra,
    }, None


def _fixed_point_spreads(se: StateEvolution, replicate_Q, phi_err: float, errors: dict):
    """Standard errors of Φ and the generalisation errors *at the fixed point*: each
    replicate net evaluates them at its own fixed point, so the spread includes the
    uncertainty of Q as well as the net's sampling error.  The reported error is the larger
    of that spread and the single-rule error (which holds the inner-rule part)."""
    phis, gens = [], []
    for sub, Qr in zip(replicate_rules(se.rule), replicate_Q, strict=True):
        rep = StateEvolution(se.channel, se.alpha, se.settings, se.prior, rule=sub,
                             inner_path=se.inner_path)
        phis.append(rep.free_entropy(Qr)[0])
        gens.append(rep.generalisation_errors(Qr))
    R = len(phis)
    phi_sd = float(np.std(phis, ddof=1) / np.sqrt(R))
    out = dict(errors)
    for key in ("gen_error_plugin", "gen_error_bayes"):
        sd = float(np.std([g[key] for g in gens], ddof=1) / np.sqrt(R))
        out[key + "_stderr"] = max(sd, errors[key + "_stderr"])
    return max(phi_sd, phi_err), out


def sweep(channel: Channel, alphas: Iterable[float], branch: str = "both",
          **options) -> list[dict]:
    """SE curve of one channel over ``alphas``: rows for the AMP and informed runs and the
    Bayes choice.  ``options`` are those of :func:`sweep_settings` (settings, damping, tol,
    max_iter, output, resume, progress, prior, executor).

    The two branches are independent chains (tasks of ``executor``, in this process by
    default); their rows do not depend on who runs them.
    """
    return sweep_settings([({}, channel)], alphas, branch, **options)


def chain_task(params: dict) -> list[dict]:
    """One branch of one setting, continued over ``params["alphas"]`` in their order.

    ``params``: ``channel`` (a Channel or keyword arguments of ``make_channel``), ``prior``
    (a prior or its name), ``label`` ("amp" or "informed"), ``alphas``, ``have`` (pairs
    ``(alpha, Q)`` already computed: skipped, but their Q is the warm start), ``settings``
    (SESettings), ``damping``, ``tol``, ``max_iter``, ``tag`` (keys added to each row),
    ``cache`` (the folder of a :class:`~asymptotics.cache.ResultCache`, or None) and
    ``target`` (``(target_error, max_sobol_log2, max_inner_resolution)`` or None).
    Each new row is reported with :func:`report_partial` as it is computed; returns them.
    """
    channel = params["channel"]
    if isinstance(channel, dict):
        channel = make_channel(**channel)
    prior = params["prior"]
    if isinstance(prior, str):
        prior = make_prior(prior)
    label, p = params["label"], channel.dim
    cache = as_cache(params.get("cache"))
    have = {float(a): q for a, q in params.get("have", [])}
    Q = initial_overlap(p, "uninformed" if label == "amp" else "informed")
    new = []
    recovered_at = None  # the α of this AMP chain's last row, if it was perfect recovery
    for a in params["alphas"]:
        if a in have:
            Q, recovered_at = _restart(np.array(have[a]), label, p), None
            continue
        row, approach = _point(channel, a, Q, params["settings"], params["damping"],
                               params["tol"], params["max_iter"], label, prior, cache,
                               params.get("target"), recovered_at)
        recovered = label == "amp" and row["status"] == "perfect-recovery"
        recovered_at = a if recovered else None
        row = {**params.get("tag", {}), **plain(row)}
        Q = (_approach_restart(approach) if approach is not None
             else _restart(np.array(row["Q"]), label, p))
        new.append(row)
        report_partial(row)
    return new


def _tag_key(tag: dict) -> str:
    return json.dumps(tag, sort_keys=True)


def _chain_of(row: dict, tag_keys: list[str]) -> str:
    return _tag_key({k: row.get(k) for k in tag_keys}) + "|" + str(row.get("branch"))


def sweep_settings(
    settings_list: list[tuple[dict, Channel | dict]],
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
    prior: Prior | None = None,
    executor: Executor | None = None,
    overwrite: bool = False,
    command: str | None = None,
    cache: ResultCache | None = None,
    target_error: float | None = None,
    max_sobol_log2: int = 18,
    max_inner_resolution: int = 1,
) -> list[dict]:
    """SE curves of several settings: ``(tag, channel)`` pairs, where ``tag`` holds the
    keys that tell the settings' rows apart (``{}`` for a single setting) and ``channel``
    is a Channel or the keyword arguments of ``make_channel``.

    Each (setting, branch) chain is one task of ``executor``.  Rows are appended to
    ``output`` (JSON lines) as they arrive: one by one from the serial executor and the
    process pool, a whole chain at a time from a Dask cluster.  With ``resume`` a chain
    continues from its rows in the file.  When done the file holds the returned rows, then
    the chains' rows that ``branch`` leaves out.  Returns the rows of every setting,
    with the Bayes choice, sorted by setting, α and branch.  Every row begins with the
    parameters that identify its model (``model`` and the channel's :meth:`params`, then
    ``tag``), a single setting's too; ``command`` is recorded in the file's header.
    With ``cache`` (a :class:`~asymptotics.cache.ResultCache`) each fixed point is
    looked up there first and stored once computed; the rows are the same either way.

    ``target_error``: each fixed point whose largest overlap standard error exceeds it is
    solved again, from where it stands, on 4x the outer points or, where the inner rule's
    amplified bias bound is the larger part of the error, on the inner rule refined once
    more, until the error is met or ``max_sobol_log2`` and ``max_inner_resolution`` are
    reached (randomised-QMC rules only).  Such rows carry ``sobol_log2`` and
    ``inner_resolution`` (the rules used), ``error_target_met`` and ``amplification`` (the
    ratio of the fixed point's error to one map step's: ``‖(I - J)⁻¹‖``, large in a
    threshold's window, where no affordable sample size meets the target; the error is
    then what the largest rules give, reported as it is).
    """
    check_number("damping", damping, above=0, maximum=1)
    target = None
    if target_error is not None:
        check_number("target_error", target_error, above=0)
        check_int("max_sobol_log2", max_sobol_log2, 3, MAX_SOBOL_LOG2)
        check_int("max_inner_resolution", max_inner_resolution, 0, MAX_RESOLUTION)
        target = (float(target_error), int(max_sobol_log2), int(max_inner_resolution))
    check_number("tol", tol, above=0)
    check_int("max_iter", max_iter, 1)
    if settings is not None and not isinstance(settings, SESettings):
        raise ValueError(f"settings must be an SESettings, got {settings!r} "
                         f"({type(settings).__name__})")
    prior = prior or GaussianPrior()
    settings = settings or SESettings()
    if branch not in BRANCHES:
        raise ValueError(f"branch must be one of {BRANCHES}, got {branch!r}")
    alphas = sorted(float(a) for a in alphas)
    if not alphas or any(not math.isfinite(a) or a <= 0 for a in alphas):
        raise ValueError("alphas must be finite and > 0")
    tag_keys = sorted({k for tag, _ in settings_list for k in tag})
    journal = None
    if output:
        recorded = curve_settings(settings_list, alphas, branch, settings, damping, tol,
                                  max_iter, prior)
        if target is not None:
            recorded.update(target_error=target[0], max_sobol_log2=target[1],
                            max_inner_resolution=target[2])
        header = make_header("curve", recorded, command)
        journal = Journal(output, resume, lambda r: _chain_of(r, tag_keys), whole_tasks=False,
                          header=header, overwrite=overwrite)
    done = journal.by_task() if journal is not None else {}
    labels = ["amp"] + (["informed"] if branch in ("bayes", "both") else [])
    tasks, chains = [], []
    for tag, channel in settings_list:
        ch = make_channel(**channel) if isinstance(channel, dict) else channel
        ident = {"model": ch.name, **ch.params(), **tag}  # the keys each row begins with
        for label in labels:
            seq = alphas if label == "amp" else alphas[::-1]
            key = _tag_key(tag) + "|" + label
            prev = [{**ident, **r} for r in done.get(key, []) if r["branch"] == label]
            have_alphas = {r["alpha"] for r in prev}
            chains.append((key, seq, prev))
            if all(a in have_alphas for a in seq):
                continue
            tasks.append(Task(key, {
                "channel": channel, "prior": prior, "label": label, "alphas": seq,
                "have": [(r["alpha"], r["Q"]) for r in prev], "settings": settings,
                "damping": damping, "tol": tol, "max_iter": max_iter, "tag": ident,
                "cache": cache_location(cache), "target": target}))
    total = sum(len(seq) for _, seq, _ in chains)
    count = sum(len({r["alpha"] for r in prev} & set(seq)) for _, seq, prev in chains)
    new: dict[str, list[dict]] = {t.key: [] for t in tasks}
    t0 = time.perf_counter()

    def arrived(key: str, rows: list[dict]) -> None:
        nonlocal count
        if journal is not None:
            journal.append(rows)
        new[key].extend(rows)
        count += len(rows)
        if progress and rows:
            progress(count, total, time.perf_counter() - t0)

    def on_partial(key: str, index: int, row: dict) -> None:
        if index == len(new[key]):  # in order, not seen: late or repeated reports skipped
            arrived(key, [row])

    if tasks:
        ex = executor or SerialExecutor()
        for key, rows in ex.map_unordered(chain_task, tasks, on_partial):
            arrived(key, rows[len(new[key]):])
    ordered, out = [], []
    for key, seq, prev in chains:
        position = {a: i for i, a in enumerate(seq)}
        rows = prev + new.get(key, [])
        ordered.extend(sorted(rows, key=lambda r: position.get(r["alpha"], len(seq))))
    for tag, _ in settings_list:
        rows = [r for r in ordered if all(r.get(k) == v for k, v in tag.items())]
        out.extend(_select(rows, branch))
    if journal is not None:
        # the file holds what is returned (the Bayes rows too), then the chains' rows that
        # ``branch`` filters out: all a resume needs (a resumed file has these very chains:
        # its settings record matched)
        shown = {id(r) for r in out}
        journal.finish_rows(out + [r for r in ordered if id(r) not in shown])
    return out


def curve_settings(settings_list, alphas, branch, settings: SESettings, damping: float,
                   tol: float, max_iter: int, prior: Prior) -> dict:
    """Everything that makes the rows of a sweep: the channels (parameters and inner
    rule), α, branch, prior and the numerical settings (header of its result file)."""
    channels = []
    for tag, channel in settings_list:
        ch = make_channel(**channel) if isinstance(channel, dict) else channel
        channels.append({"tag": tag, "model": ch.name, **ch.params(),
                         "inner_rule": ch.inner_description})
    return {"channels": channels, "alphas": list(alphas), "branch": branch,
            "prior": prior.name, "damping": damping, "tol": tol, "max_iter": max_iter,
            **asdict(settings)}


def _select(rows: list[dict], branch: str) -> list[dict]:
    """Rows of one setting sorted by α, with the Bayes rows, filtered by ``branch``."""
    rows = sorted(rows, key=lambda r: (r["alpha"], r["branch"]))
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
    """Warm start for the next α, kept inside ``ε <= Q <= (1 - ε) I`` on the uninformed
    branch (a vanishing overlap can still grow) and ``0 <= Q <= (1 - ε) I`` on the informed
    one: a start within 1e-9 of ``Q = I`` moves by less than the tolerance per step even
    where ``Q = I`` is unstable, and would pass for a fixed point."""
    eps = 1e-3
    w, U = np.linalg.eigh(0.5 * (Q + Q.T))
    lo = eps if label == "amp" else 0.0
    w = np.clip(w, lo, 1.0 - eps)
    return (U * w) @ U.T


def _approach_restart(approach: np.ndarray, gap: float = 1e-3) -> np.ndarray:
    """Warm start after a perfect-recovery row: ``I - V`` with ``V`` the gap ``I - Q`` of
    the point where the approach to ``I`` was recognised, rescaled to largest eigenvalue
    ``gap``.  Its direction is the one the gaps close along, so the next α past the
    transition is recognised at once; its size keeps a start from passing for a fixed
    point (a start within 1e-6 of ``I`` moves by less than the tolerance even where ``I``
    is unstable)."""
    w, U = np.linalg.eigh(np.eye(len(approach)) - 0.5 * (approach + approach.T))
    w = np.clip(w, 0.0, None)
    return np.eye(len(w)) - (U * (gap * w / w.max())) @ U.T


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
