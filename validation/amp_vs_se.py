"""Finite-size Bayes-AMP against state evolution (THEORY.md §3, "Finite-size check").

The AMP fixed point (mean over seeds of the final ``|M_kk|`` and ``Q_kk``) is put next to
the SE fixed point from the uninformed start (the AMP branch) at the same α.  They agree
when, for every diagonal entry ``k``

    |mean_AMP − Q_SE,kk| ≤ z · sqrt(stderr_AMP² + err_SE²) + c_fs / D

for ``m = |M_kk|``, ``q = Q_kk`` and ``m_rel = |M_kk|/(|w*_k|²/D)``,
with ``z = 3`` (seed spread; ``stderr`` = std(ddof=1)/sqrt(seeds)), ``err_SE`` the SE error
estimate of ``Q`` (propagated from its ``Q̂`` error through ``Q = Q̂/(1+Q̂)``), and the stated
finite-size allowance ``c_fs / D`` with ``c_fs = 2`` (finite-size corrections of AMP
overlaps are O(1/D) on average; the O(1/√D) per-seed fluctuations, dominated by the
teacher norm ``|w*_k|²/D`` whose std is ``sqrt(2/D)``, are in the stderr).

Over several D the discrepancy ``Δ(D) = mean_AMP − Q_SE`` is fitted as ``a + b/D`` by
weighted least squares (weights ``1/stderr²``): ``a`` should be 0 within its error.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
from scipy.stats import norm as normal
from scipy.stats import t as student_t

from asymptotics.channels.base import Channel
from asymptotics.executors import Executor
from asymptotics.state_evolution import SESettings, run_state_evolution, sqrt_psd
from simulators.amp import AMPConfig
from simulators.sweeps import iter_amp_rows

Z_SCORE = 3.0
FINITE_SIZE_C = 2.0


def se_plugin_error(channel: Channel, Q: np.ndarray, n: int = 2**14, seed: int = 0):
    """Plug-in error ``E‖g(Z*) − g(ω)‖²`` at the SE overlap ``Q`` (Monte Carlo, seeded).

    ``ω = Q^{1/2} ξ``, ``Z* = ω + (I − Q)^{1/2} u`` per token.  Returns (mean, stderr).
    """
    rng = np.random.default_rng(seed)
    L, p = channel.seq_len, channel.dim
    xi = rng.standard_normal((n, L, p))
    u = rng.standard_normal((n, L, p))
    omega = xi @ sqrt_psd(Q).T
    Zs = omega + u @ sqrt_psd(np.eye(p) - Q).T
    d = np.asarray(channel.forward(Zs, None)) - np.asarray(channel.forward(omega, None))
    per = (d**2).reshape(n, -1).sum(axis=1)
    return float(per.mean()), float(per.std(ddof=1) / math.sqrt(n))


def se_prediction(channel: Channel, alpha: float, settings: SESettings | None = None,
                  tol: float = 1e-7, max_iter: int = 500) -> dict:
    """SE from the uninformed start at ``alpha``: ``Q``, its error and the plug-in error.

    The error of ``Q`` is the solver's error of the fixed point (``SEResult.Q_stderr``: the
    replicate maps' fixed points, the map's error amplified near thresholds; 0 at perfect
    recovery, a decided status)."""
    res = run_state_evolution(channel, alpha, "uninformed", settings=settings, tol=tol,
                              max_iter=max_iter)
    Q = np.asarray(res.Q)
    if channel.capabilities.diagonal_overlaps:
        Q = np.diag(np.diag(Q))
    Q_err = np.asarray(res.Q_stderr, dtype=float)
    gen, gen_se = se_plugin_error(channel, Q)
    return {
        "se": True,
        "alpha": float(alpha),
        "start": "uninformed",
        "Q": Q.tolist(),
        "Q_error": Q_err.tolist(),
        "q": np.diag(Q).tolist(),
        "q_error": np.diag(Q_err).tolist(),
        "gen_error": gen,
        "gen_error_stderr": gen_se,
        "converged": bool(res.converged),
        "status": res.status,
        "iterations": int(res.iterations),
        "rule": res.rule,
    }


def compare(summary: dict, se: dict, dim: int, z: float = Z_SCORE,
            c_fs: float = FINITE_SIZE_C) -> dict:
    """AMP summary (from :func:`simulators.amp.summarise`) against an SE prediction.

    An entry agrees when ``|mean - Q_SE| <= t sqrt(stderr² + err_SE²) + c_fs/D``, with
    ``t`` the Student-t quantile of ``n - 1`` degrees of freedom (``n`` runs that did not
    fail) at the two-sided confidence of ``z`` standard normal deviations: the standard
    error of a few seeds is itself uncertain (4 seeds: ``t = 9.22`` for ``z = 3``)."""
    q_se = np.asarray(se["q"])
    q_se_err = np.asarray(se["q_error"])
    allowance = c_fs / dim
    n_runs = summary.get("n_seeds", 0) - summary.get("n_failed", 0)
    z_eff = float(student_t.ppf(normal.cdf(z), n_runs - 1)) if n_runs >= 2 else z
    out = {"z": z, "t": z_eff, "runs": n_runs, "finite_size_allowance": allowance,
           "c_fs": c_fs, "entries": []}
    agree = True
    for key in ("m", "q", "m_rel"):
        if summary.get(f"{key}_mean") is None:
            continue
        mean = np.asarray(summary[f"{key}_mean"])
        se_ = np.asarray(summary[f"{key}_stderr"])
        for k in range(len(q_se)):
            sigma = math.sqrt(se_[k] ** 2 + q_se_err[k] ** 2)
            disc = float(mean[k] - q_se[k])
            tol = z_eff * sigma + allowance
            ok = abs(disc) <= tol
            agree &= ok
            out["entries"].append({
                "quantity": f"{key}_{k}", "amp": float(mean[k]), "amp_stderr": float(se_[k]),
                "se": float(q_se[k]), "se_error": float(q_se_err[k]),
                "discrepancy": disc, "tolerance": tol, "agree": bool(ok),
            })
    g_disc = summary["gen_error_mean"] - se["gen_error"]
    g_sigma = math.hypot(summary["gen_error_stderr"], se["gen_error_stderr"])
    out["gen_error"] = {"amp": summary["gen_error_mean"], "se": se["gen_error"],
                        "discrepancy": g_disc, "tolerance": z_eff * g_sigma + allowance,
                        "agree": bool(abs(g_disc) <= z_eff * g_sigma + allowance)}
    out["agree"] = bool(agree)
    return out


def fit_inverse_dim(dims, discrepancies, stderrs) -> dict:
    """Weighted least squares ``Δ(D) = a + b/D``; returns a, b with standard errors.

    With two dimensions the fit is exact and its errors come from the stderrs alone
    (chi² has no degrees of freedom).
    """
    D = np.asarray(dims, dtype=float)
    y = np.asarray(discrepancies, dtype=float)
    s = np.maximum(np.asarray(stderrs, dtype=float), 1e-12)
    if len(D) < 2 or len(set(D.tolist())) < 2:
        raise ValueError("the 1/D fit needs at least two different dimensions")
    X = np.stack([np.ones_like(D), 1.0 / D], axis=1)
    w = 1.0 / s
    coef, *_ = np.linalg.lstsq(X * w[:, None], y * w, rcond=None)
    cov = np.linalg.inv((X * w[:, None] ** 2).T @ X)
    resid = (y - X @ coef) / s
    dof = len(D) - 2
    return {
        "a": float(coef[0]), "a_stderr": float(math.sqrt(cov[0, 0])),
        "b": float(coef[1]), "b_stderr": float(math.sqrt(cov[1, 1])),
        "chi2": float(resid @ resid), "dof": dof,
        "a_consistent_with_zero": bool(abs(coef[0]) <= Z_SCORE * math.sqrt(cov[0, 0])),
    }


def finite_size_fits(per_dim: list[tuple[int, dict]], se: dict) -> dict:
    """Fit ``mean_AMP − Q_SE`` against 1/D for every ``m_k`` and ``q_k``."""
    dims = [d for d, _ in per_dim]
    out = {"dims": dims}
    for key in ("m", "q", "m_rel"):
        if any(s.get(f"{key}_mean") is None for _, s in per_dim):
            continue
        for k, q_se in enumerate(se["q"]):
            disc = [s[f"{key}_mean"][k] - q_se for _, s in per_dim]
            errs = [s[f"{key}_stderr"][k] for _, s in per_dim]
            fit = fit_inverse_dim(dims, disc, errs)
            fit["discrepancy"] = disc
            fit["stderr"] = errs
            out[f"{key}_{k}"] = fit
    return out


def iter_amp_rows_against_se(channel: Channel, config: AMPConfig, seeds, dims=None, *,
                             se_settings: SESettings | None = None, summary_only: bool = False,
                             executor: Executor | None = None, **resume) -> Iterator[dict]:
    """The rows of :func:`simulators.sweeps.iter_amp_rows`, preceded by one ``"se": true``
    row (:func:`se_prediction`, the SE fixed point from the uninformed start) and with
    ``se_comparison`` (:func:`compare`) in each summary row; the last summary row holds
    ``finite_size_fit`` (:func:`finite_size_fits`) when there are several dimensions.
    ``resume``: ``done`` and ``record`` of :func:`simulators.sweeps.task_outputs`."""
    se = se_prediction(channel, config.alpha, se_settings)
    yield {"model": channel.name, "channel": channel.describe(), "alpha": config.alpha,
           "device": config.device, **se}
    per_dim, pending = [], None
    for row in iter_amp_rows(channel, config, seeds, dims, summary_only=summary_only,
                             executor=executor, **resume):
        if row.get("summary") is True and row["m_mean"] is not None:
            row["se_comparison"] = compare(row, se, row["dim"])
            per_dim.append((row["dim"], row))
        if pending is not None:
            yield pending
        pending = row
    if len(per_dim) >= 2 and pending.get("summary") is True:
        pending["finite_size_fit"] = finite_size_fits(per_dim, se)
    yield pending
