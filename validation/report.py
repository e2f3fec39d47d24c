"""``smi validate``: the validation battery, written to ``DIR/report.md`` with figures.

Sections: closed forms, identities, published data (Troiani et al., ICML 2025), SE against
AMP, SE against training.  Every check states its numbers, its tolerance and PASS or FAIL.
A check against a published number that we have evidence is wrong is still reported as
FAIL when the numbers disagree, with the size of the disagreement and the evidence; it is
marked ``documented`` and does not make the run fail (exit status 0 when every
undocumented check passes).

Budgets: ``quick`` (a minute or so on 2 cores), ``full`` (finer staircase on every
published skip, attention AMP, longer training: tens of minutes) and ``test`` (the
smallest settings, used by the test suite).
"""

from __future__ import annotations

import json
import math
import os
import platform
import sys
import time
from dataclasses import dataclass, field

import numpy as np

from asymptotics.channels.attention_map import Architecture
from asymptotics.channels.closed_form import (
    LinearChannel,
    PhaseRetrievalChannel,
    SignChannel,
    SignProductChannel,
)
from asymptotics.channels.registry import make_channel
from asymptotics.curves import locate_transitions, sweep
from asymptotics.executors import default_workers, make_executor
from asymptotics.priors import GaussianPrior, RademacherPrior
from asymptotics.results import provenance
from asymptotics.staircase import StaircaseSettings, staircase_thresholds
from asymptotics.state_evolution import (
    SESettings,
    StateEvolution,
    linear_channel_fixed_point,
    run_state_evolution,
)
from asymptotics.thresholds import ThresholdSettings, weak_recovery_thresholds
from simulators.amp import AMPConfig, run_amp, summarise
from simulators.attention_training import TrainConfig
from simulators.sweeps import default_lr, training_rows

from . import published
from .amp_vs_se import compare, se_prediction
from .plots import make_plot

JENSEN = "E‖E[z zᵀ|y] − I‖² ≤ E‖z zᵀ − I‖² = L(L+1)"


@dataclass
class Check:
    section: str
    name: str
    values: str
    tolerance: str
    passed: bool
    documented: bool = False  # a disagreement with a published number, explained
    note: str = ""

    @property
    def verdict(self) -> str:
        return "PASS" if self.passed else "FAIL"


@dataclass
class Budget:
    name: str
    skips: list[float]  # published skips at which Q = 0 thresholds are compared
    threshold_resolution: int
    staircase_skips: list[float]
    staircase_log2: int
    amp_dim: int
    amp_seeds: int
    attention_amp: bool
    train_dim: int
    train_seeds: int
    train_steps: int
    train_long: bool
    jensen_mc: bool
    extra: dict = field(default_factory=dict)


BUDGETS = {
    "test": Budget("test", [0.5, 1.0, 4.0], 0, [1.0], 8, 150, 2, False, 60, 2, 300, False,
                   False),
    "quick": Budget("quick", [0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 4.0], 1, [0.5, 1.0, 2.0, 4.0],
                    9, 500, 8, False, 100, 2, 1000, False, False),
    "full": Budget("full", [0.5, 0.5625, 0.625, 0.75, 0.875, 1.0, 1.25, 1.5, 2.0, 2.5, 3.0,
                            3.5, 4.0], 2,
                   [0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 4.0], 11, 1000, 16, True, 200, 4, 4000, True,
                   True),
}

SECTIONS = ["Closed forms", "Identities", "Published data", "SE against AMP",
            "SE against training"]


class Battery:
    def __init__(self, budget: Budget, outdir: str, stream=None):
        self.b = budget
        self.dir = outdir
        self.stream = stream
        self.checks: list[Check] = []
        self.tables: dict[str, list[str]] = {s: [] for s in SECTIONS}
        self.figures: dict[str, list[str]] = {s: [] for s in SECTIONS}
        self.timings: dict[str, float] = {}
        self.cache: dict = {}

    def log(self, msg):
        if self.stream is not None:
            print(msg, file=self.stream, flush=True)

    def add(self, section, name, values, tolerance, passed, documented=False, note=""):
        c = Check(section, name, values, tolerance, bool(passed), documented, note)
        self.checks.append(c)
        self.log(f"  {c.verdict}  {name}: {values}")

    def path(self, name):
        return os.path.join(self.dir, name)

    # ------------------------------------------------------------------ closed forms

    def closed_forms(self):

        S = "Closed forms"
        d = weak_recovery_thresholds(PhaseRetrievalChannel()).directions[0]
        tol = max(3 * d.stderr, 1e-10)
        self.add(S, "phase retrieval y = z²: α_c = 1/2",
                 f"α_c = {d.alpha_c:.12f} ± {d.stderr:.1e}, exact 0.5, "
                 f"diff {d.alpha_c - 0.5:.1e}", f"|diff| ≤ max(3·stderr, 1e-10) = {tol:.1e}",
                 abs(d.alpha_c - 0.5) <= tol)
        target = math.pi**2 / 4
        ds = weak_recovery_thresholds(SignProductChannel()).directions
        worst = max(abs(x.alpha_c - target) for x in ds if math.isfinite(x.alpha_c))
        tol = max(max(3 * x.stderr for x in ds), 1e-10)
        self.add(S, "sign-product y = sign(z1 z2): α_c = π²/4",
                 f"α_c = {', '.join(f'{x.alpha_c:.12f}' for x in ds)}, exact {target:.12f}, "
                 f"max diff {worst:.1e}", f"|diff| ≤ {tol:.1e}", worst <= tol)
        d = weak_recovery_thresholds(SignChannel()).directions[0]
        self.add(S, "sign y = sign(z): trivial direction (E[z|y] ≠ 0), α_c = 0",
                 f"status {d.status}, α_c = {d.alpha_c}", "status trivial and α_c = 0",
                 d.status == "trivial" and d.alpha_c == 0)
        worst, shown = 0.0, []
        for noise in (0.1, 0.5):
            for a in (0.5, 1.0, 2.0, 4.0):
                fp = run_state_evolution(LinearChannel(noise), a, tol=1e-12, max_iter=5000)
                exact = linear_channel_fixed_point(a, noise)
                worst = max(worst, abs(fp.Q[0, 0] - exact))
                shown.append(f"Δ={noise}, α={a}: {fp.Q[0, 0]:.10f} vs {exact:.10f}")
        self.tables[S].append("Linear channel, SE fixed point vs "
                              "m = ½[1 + Δ + α − sqrt((α−1)² + 2(α+1)Δ + Δ²)]:\n\n"
                              + "\n".join(f"- {s}" for s in shown))
        self.add(S, "linear channel SE = closed-form fixed point", f"max |diff| {worst:.1e} "
                 "over Δ ∈ {0.1, 0.5}, α ∈ {0.5, 1, 2, 4}", "≤ 1e-8", worst <= 1e-8)
        prior = RademacherPrior()
        rows = sweep(SignChannel(), [1.1, 1.2, 1.3, 1.4, 1.5, 1.6], "both", prior=prior,
                     tol=1e-10, max_iter=5000)
        found = {t.kind: t for t in locate_transitions(SignChannel(), rows, prior)}
        for kind, ref, src in (("it-threshold", 1.245, "Györgyi 1990"),
                               ("amp-spinodal", 1.493, "Barbier et al. 2019")):
            t = found.get(kind)
            if t is None:
                self.add(S, f"Rademacher sign perceptron {kind} ≈ {ref}", "not found",
                         "|diff| ≤ 0.01", False)
                continue
            self.add(S, f"Rademacher sign perceptron {kind} ≈ {ref} ({src})",
                     f"α = {t.alpha:.5f} ± {t.error:.1e}, literature {ref}, "
                     f"diff {t.alpha - ref:+.4f}",
                     "|diff| ≤ 0.01 (bisection error + rounding of the literature value)",
                     abs(t.alpha - ref) <= 0.01 and t.reliable)

    # -------------------------------------------------------------------- identities

    def identities(self):

        S = "Identities"
        for ch, alpha, label in ((SignChannel(), 1.2, "sign, α = 1.2"),
                                 (LinearChannel(0.3), 0.9, "linear Δ = 0.3, α = 0.9")):
            fp = run_state_evolution(ch, alpha, tol=1e-12, max_iter=5000)
            q = fp.Q[0, 0]
            se = StateEvolution(ch, alpha)
            h = 1e-5
            dpsi = (se.qhat(np.array([[q + h]])).psi_out
                    - se.qhat(np.array([[q - h]])).psi_out) / (2 * h)
            qh = fp.Qhat
            lhs, rhs = 2 * alpha * dpsi, qh[0, 0]
            tol = 1e-6 * max(1, rhs)
            self.add(S, f"Q̂ = 2α ∂ψ_out/∂Q at the fixed point ({label})",
                     f"2α ∂ψ_out/∂Q = {lhs:.9f}, Q̂ = {rhs:.9f}, diff {lhs - rhs:.1e}",
                     f"≤ {tol:.0e} (central differences, h = 1e-5)",
                     fp.converged and abs(lhs - rhs) <= tol)
            prior = GaussianPrior()
            dpin = (prior.free_entropy(qh + h) - prior.free_entropy(qh - h)) / (2 * h)
            self.add(S, f"Q = 2 ∂ψ_in/∂Q̂ at the fixed point ({label})",
                     f"2 ∂ψ_in/∂Q̂ = {2 * dpin:.9f}, Q = {q:.9f}, diff {2 * dpin - q:.1e}",
                     "≤ 1e-8", abs(2 * dpin - q) <= 1e-8)
        rows = self.q0_thresholds()
        L = 2
        bound = 1 / (L * (L + 1))
        worst = min(r["alpha_c"] - r["stderr"] for r in rows if r["direction"] == 2)
        c_min = min((r for r in rows if r["direction"] == 2), key=lambda r: r["alpha_c"])["skip"]
        self.add(S, f"Jensen bound α_c ≥ 1/(L(L+1)) = {bound:.6f} (depth 2, L = 2, layer 2, "
                 f"{len(self.b.skips)} skips)",
                 f"smallest α_c − stderr = {worst:.9f} (c = {c_min})",
                 f"≥ {bound:.9f}; bound: {JENSEN}", worst >= bound)
        lay1 = min(r["alpha_c"] for r in rows if r["direction"] == 1)
        self.add(S, "Jensen bound, layer 1 (depth 2, L = 2)",
                 f"smallest α_c = {lay1:.6f}", f"≥ {bound:.6f}", lay1 >= bound)
        if self.b.jensen_mc:

            for depth, seq_len in ((2, 3), (3, 2)):
                res = weak_recovery_thresholds(
                    make_channel("attention", depth=depth, seq_len=seq_len, skip=1.0),
                    ThresholdSettings(method="mc"))
                b = 1 / (seq_len * (seq_len + 1))
                low = min(x.alpha_c - 3 * x.stderr for x in res.directions)
                self.add(S, f"Jensen bound (depth {depth}, L = {seq_len}, c = 1, Monte Carlo)",
                         f"smallest α_c − 3·stderr = {low:.5f}", f"≥ 1/(L(L+1)) = {b:.5f}",
                         low >= b)

    def q0_thresholds(self) -> list[dict]:
        if "q0" not in self.cache:

            st = ThresholdSettings(resolution=self.b.threshold_resolution)
            rows = []
            for c in self.b.skips:
                rows += weak_recovery_thresholds(make_channel("attention", skip=c), st).rows(
                    "attention")
            for r in rows:
                r["alpha_c"], r["stderr"] = float(r["alpha_c"]), float(r["stderr"])
            self.cache["q0"] = rows
        return self.cache["q0"]

    # ---------------------------------------------------------------- published data

    def published_data(self):

        S = "Published data"
        pub = {round(r["skip"], 6): r for r in published.alpha_critical()}
        rows = self.q0_thresholds()
        ours2 = {round(r["skip"], 6): r for r in rows if r["direction"] == 2}
        bound = 1 / 6
        lines = ["| c | published alpha2 | ours, layer 2 at Q = 0 | difference | "
                 "published < 1/6? |", "|---|---|---|---|---|"]
        for c in self.b.skips:
            o, p = ours2[round(c, 6)], pub[round(c, 6)]
            diff = p["alpha2"] - o["alpha_c"]
            rel = diff / o["alpha_c"]
            tol = 0.01 * o["alpha_c"] + 3 * o["stderr"]
            lines.append(f"| {c:g} | {p['alpha2']:.4f} | {o['alpha_c']:.9f} ± {o['stderr']:.0e} "
                         f"| {diff:+.4f} ({rel:+.1%}) | {'yes' if p['alpha2'] < bound else 'no'} |")
            why = ("published value below the Jensen bound 1/6" if p["alpha2"] < bound
                   else "published column has no code and lies below BO_2w's onset")
            self.add(S, f"layer-2 threshold at Q = 0 vs published alpha2, c = {c:g}",
                     f"published {p['alpha2']:.4f}, ours {o['alpha_c']:.9f}, "
                     f"published − ours = {diff:+.4f} ({rel:+.1%})",
                     f"|diff| ≤ 1% + 3·stderr = {tol:.1e}", abs(diff) <= tol,
                     documented=abs(diff) > tol, note=why)
        self.tables[S].append("Layer 2 (last layer) at Q = 0 against `alpha_critical.csv`:\n\n"
                              + "\n".join(lines))
        viol = [r for r in published.alpha_critical() if r["alpha2"] < bound]
        viol_c = ", ".join(f"{r['skip']:g}" for r in viol)
        self.add(S, "published alpha2 violates the Jensen bound 1/6 (evidence for our column)",
                 f"{len(viol)} of {len(pub)} published rows below 1/6, at c ∈ "
                 f"{{{viol_c}}}; ours never "
                 f"(min {min(r['alpha_c'] for r in ours2.values()):.6f})",
                 "a published value < 1/6 is impossible; ours all ≥ 1/6",
                 len(viol) > 0 and all(r["alpha_c"] >= bound for r in ours2.values()))
        bo = published.load("BO_2w")
        c1 = ours2.get(1.0)
        if c1 is not None:
            a_pub = pub[1.0]["alpha2"]
            below = [(a, q) for a, q in zip(bo["alpha"], bo["Q22"], strict=True)
                     if a_pub + 0.01 < a < c1["alpha_c"] - 0.01]
            above = [(a, q) for a, q in zip(bo["alpha"], bo["Q22"], strict=True)
                     if a > c1["alpha_c"] + 0.01]
            qmax_below = max(q for _, q in below) if below else float("nan")
            a_up, q_up = above[0] if above else (float("nan"), float("nan"))
            self.add(S, "BO_2w.csv onset of Q22 (c = 1) lies at our layer-2 threshold, not at "
                     "the published alpha2",
                     f"max Q22 for α in ({a_pub:.4f}, {c1['alpha_c']:.4f}): {qmax_below:.4f} "
                     f"(at {len(below)} α); Q22 = {q_up:.4f} at α = {a_up:.4f}",
                     "Q22 ≤ 0.01 between the two values (a fixed-iteration SE lags, so the "
                     "onset is an upper bound on the threshold); Q22 > 0.01 past ours",
                     bool(below) and qmax_below <= 0.01 and q_up > 0.01)
        # staircase layer 1 vs published alpha1 and the last-layer overlap vs BO_2w Q22
        st_lines = ["| c | published alpha1 | ours, staircase layer 1 | difference | "
                    "q_last there |", "|---|---|---|---|---|"]
        st_rows = []
        for c in self.b.staircase_skips:
            t0 = time.perf_counter()
            s = staircase_thresholds(make_channel("attention", skip=c),
                                     StaircaseSettings(log2_points=self.b.staircase_log2))[0]
            self.log(f"  staircase c = {c}: {time.perf_counter() - t0:.1f} s")
            p = pub[round(c, 6)]
            diff = p["alpha1"] - s.alpha
            tol = 3 * s.stderr + 0.01 * s.alpha
            st_rows.append((c, s))
            st_lines.append(f"| {c:g} | {p['alpha1']:.4f} | {s.alpha:.4f} ± {s.stderr:.4f} | "
                            f"{diff:+.4f} ({diff / s.alpha:+.1%}) | {s.q_last:.3f} |")
            self.add(S, f"staircase layer-1 threshold vs published alpha1, c = {c:g}",
                     f"published {p['alpha1']:.4f}, ours {s.alpha:.4f} ± {s.stderr:.4f}, "
                     f"published − ours = {diff:+.4f} ({diff / s.alpha:+.1%})",
                     f"|diff| ≤ 3·stderr + 1% = {tol:.4f}", abs(diff) <= tol,
                     documented=abs(diff) > tol,
                     note="BO_2w's Q11 onset lags (fixed iterations); the generic SE map "
                          "confirms our value (README, staircase evidence)")
        self.cache["staircase"] = st_rows
        self.tables[S].append("Layer 1 once layer 2 is learned (staircase) against "
                              "`alpha_critical.csv`:\n\n" + "\n".join(st_lines))
        for c, s in st_rows:
            if abs(c - 1.0) > 1e-12:
                continue  # BO_2w.csv is at c = 1
            a = np.array(bo["alpha"])
            q22 = np.array(bo["Q22"])
            j = int(np.argmin(np.abs(a - s.alpha)))
            lo, hi = max(j - 1, 0), min(j + 1, len(a) - 1)
            slope = abs((q22[hi] - q22[lo]) / (a[hi] - a[lo])) if hi > lo else 0.0
            tol = 0.01 + slope * abs(a[j] - s.alpha)
            self.add(S, "last-layer overlap at our staircase threshold vs BO_2w.csv Q22 "
                     "(c = 1)",
                     f"ours q_last = {s.q_last:.4f} at α = {s.alpha:.4f}; published Q22 = "
                     f"{q22[j]:.4f} at α = {a[j]:.4f}; diff {s.q_last - q22[j]:+.4f}",
                     f"|diff| ≤ 0.01 + |dQ22/dα|·|Δα| = {tol:.4f}", abs(s.q_last - q22[j]) <= tol)
        self.phase_figure()

    def phase_figure(self):

        rows = [dict(r) for r in self.q0_thresholds()]
        stairs = dict(self.cache.get("staircase", []))
        for r in rows:
            s = stairs.get(r["skip"])
            if r["direction"] == 1 and s is not None:
                r.update(staircase_alpha=s.alpha, staircase_stderr=s.stderr,
                         staircase_status=s.status)
        path = self.path("thresholds.json")
        with open(path, "w") as fh:
            json.dump(rows, fh, indent=1)
        ref = []
        for p in published.alpha_critical():
            if self.b.skips[0] - 1e-9 <= p["skip"] <= self.b.skips[-1] + 1e-9:
                ref.append({"x": p["skip"], "direction": 2, "alpha": p["alpha2"],
                            "label": "published alpha2"})
                ref.append({"x": p["skip"], "direction": 1, "alpha": p["alpha1"],
                            "label": "published alpha1"})
        make_plot("phase-diagram", [path], self.path("phase_diagram.png"), reference=ref)
        self.figures["Published data"].append("phase_diagram.png")

    # ------------------------------------------------------------------ SE vs AMP

    def se_vs_amp(self):


        S = "SE against AMP"
        lin = dict(noise=0.1)
        if self.b.name == "test":
            cases = [("linear", lin, 1.2, 200, 6), ("phase-retrieval", {}, 1.5, 300, 4)]
        else:
            D, n = self.b.amp_dim, self.b.amp_seeds
            cases = [("linear", lin, 0.6, D, n), ("linear", lin, 1.2, D, n),
                     ("linear", lin, 2.0, D, n), ("phase-retrieval", {}, 0.8, D, n),
                     ("phase-retrieval", {}, 1.5, D, n)]
        if self.b.attention_amp:
            cases.append(("attention", dict(depth=2, seq_len=2, skip=1.0, beta=1.0), 0.5,
                          self.b.amp_dim, self.b.amp_seeds))
        summaries = []
        for model, kw, alpha, dim, seeds in cases:
            t0 = time.perf_counter()
            ch = make_channel(model, **kw)
            if model == "attention":  # seconds per SE step: a looser fixed point
                se = se_prediction(ch, alpha, SESettings(sobol_log2=10), tol=1e-4, max_iter=100)
            else:
                se = se_prediction(ch, alpha, SESettings(sobol_log2=10))
            cfg = AMPConfig(dim=dim, alpha=alpha, max_iter=300)
            res = [run_amp(ch, cfg, seed) for seed in range(seeds)]
            summ = summarise(res)
            summ.update(alpha=alpha, dim=dim, model=model)
            cmp = compare(summ, se, dim)
            q = [e for e in cmp["entries"] if e["quantity"].startswith(("q_", "m_rel"))]
            txt = "; ".join(f"{e['quantity']}: AMP {e['amp']:.4f} ± {e['amp_stderr']:.4f}, "
                            f"SE {e['se']:.4f}, diff {e['discrepancy']:+.4f} "
                            f"(tol {e['tolerance']:.4f})" for e in q)
            label = f"{model}{' Δ=' + str(kw['noise']) if 'noise' in kw else ''}, α = {alpha}"
            self.add(S, f"AMP overlaps vs SE ({label}, D = {dim}, {seeds} seeds)",
                     txt + f"; {summ['n_converged']}/{summ['n_seeds']} converged",
                     "|mean − SE| ≤ 3·sqrt(stderr² + err_SE²) + 2/D for m, q, m_rel",
                     cmp["agree"])
            g = cmp["gen_error"]
            self.add(S, f"AMP plug-in error vs SE ({label})",
                     f"AMP {g['amp']:.4f}, SE {g['se']:.4f}, diff {g['discrepancy']:+.4f}",
                     f"≤ {g['tolerance']:.4f} (3σ + 2/D)", g["agree"])
            self.log(f"  {label}: {time.perf_counter() - t0:.1f} s")
            if model == "phase-retrieval":
                summaries.append(summ)
        self.overlap_figures(summaries)

    def overlap_figures(self, amp_summaries):


        curve = self.path("curve_phase_retrieval.jsonl")
        rows = sweep(PhaseRetrievalChannel(), [round(0.1 * k, 2) for k in range(2, 17)],
                     "both", tol=1e-9, max_iter=3000, output=curve)
        # the sweep streams only amp/informed rows: add the Bayes rows for the figure
        with open(curve, "a") as fh:
            for r in rows:
                if r["branch"] == "bayes":
                    fh.write(json.dumps(r) + "\n")
        thr = self.path("thresholds_phase_retrieval.json")
        with open(thr, "w") as fh:
            json.dump(weak_recovery_thresholds(PhaseRetrievalChannel()).rows("phase-retrieval"),
                      fh, default=float)
        amp = self.path("amp_phase_retrieval.jsonl")
        with open(amp, "w") as fh:
            for s in amp_summaries:
                fh.write(json.dumps(s, default=float) + "\n")
        make_plot("overlaps", [curve, thr, amp], self.path("overlaps_phase_retrieval.png"))
        make_plot("errors", [curve, amp], self.path("errors_phase_retrieval.png"))
        self.figures["SE against AMP"] += ["overlaps_phase_retrieval.png",
                                           "errors_phase_retrieval.png"]

    # ------------------------------------------------------------- SE vs training

    def se_vs_training(self):


        S = "SE against training"
        rows = {r["direction"]: r for r in self.q0_thresholds() if r["skip"] == 1.0}
        a2 = rows[2]["alpha_c"]
        stairs = dict(self.cache.get("staircase", []))
        a1 = stairs[1.0].alpha if 1.0 in stairs else None
        low, high = 0.1, 8.0
        alphas = [low, high] + ([15.0] if self.b.train_long else [])
        out = self.path("train.jsonl")
        t0 = time.perf_counter()
        cfg = TrainConfig(arch=Architecture(depth=2), dim=self.b.train_dim,
                          steps=self.b.train_steps, log_points=25)
        seeds = range(self.b.train_seeds)
        with make_executor(workers=default_workers(len(alphas) * len(seeds))) as ex:
            rows = training_rows(cfg, seeds, alphas,
                                 [("adam", default_lr("adam", self.b.train_dim))], executor=ex)
        with open(out, "w") as fh:  # the dynamics figure reads the rows from this file
            fh.writelines(json.dumps(r) + "\n" for r in rows)
        self.log(f"  training: {time.perf_counter() - t0:.1f} s")
        summ = {r["alpha"]: r for r in rows if r.get("summary")}
        if not summ:
            self.add(S, "training run", "no summary rows", "runs", False)
            return
        tau_lo = 3 / math.sqrt(self.b.train_dim)
        c = summ[low]["cosine_mean"]
        self.add(S, f"below the layer-2 threshold (α = {low} < α_c = {a2:.4f}) no layer is "
                 "learned", f"cosine per layer {', '.join(f'{x:.3f}' for x in c)} "
                 f"(D = {self.b.train_dim}, Adam, {self.b.train_steps} steps)",
                 f"every cosine < 3/sqrt(D) = {tau_lo:.3f}", max(c) < tau_lo)
        c = summ[high]["cosine_mean"]
        self.add(S, f"above the layer-2 threshold (α = {high} ≫ {a2:.4f}) layer 2 is learned",
                 f"cosine layer 2 = {c[1]:.4f}, layer 1 = {c[0]:.3f}", "layer-2 cosine > 0.9",
                 c[1] > 0.9,
                 note="layer 1 needs α > the staircase threshold"
                      f"{f' {a1:.3f}' if a1 else ''} and, for gradient training, far more "
                      "samples or steps: SE thresholds bound Bayes-AMP, not Adam")
        self.tables[S].append(
            "Final per-layer cosine (mean ± stderr over seeds), Adam:\n\n"
            "| α | layer 1 | layer 2 | test error |\n|---|---|---|---|\n" + "\n".join(
                f"| {a} | {r['cosine_mean'][0]:.3f} ± {r['cosine_stderr'][0]:.3f} | "
                f"{r['cosine_mean'][1]:.3f} ± {r['cosine_stderr'][1]:.3f} | "
                f"{r['test_loss_mean']:.4f} |" for a, r in sorted(summ.items())))
        if self.b.train_long:
            c = summ[15.0]["cosine_mean"]
            self.add(S, "far above both thresholds (α = 15) both layers are learned",
                     f"cosine layer 1 = {c[0]:.3f}, layer 2 = {c[1]:.4f}", "both > 0.9",
                     min(c) > 0.9)
        make_plot("dynamics", [out], self.path("training_dynamics.png"), width="double")
        self.figures[S].append("training_dynamics.png")

    # --------------------------------------------------------------------- report

    def run(self):
        for section, fn in zip(SECTIONS, (self.closed_forms, self.identities,
                                          self.published_data, self.se_vs_amp,
                                          self.se_vs_training), strict=True):
            self.log(f"[{section}]")
            t0 = time.perf_counter()
            try:
                fn()
            except Exception as exc:  # a crash is a failed check, and the report is written
                self.add(section, f"{section}: ran to completion",
                         f"{type(exc).__name__}: {exc}", "no exception", False)
            self.timings[section] = time.perf_counter() - t0

    def write(self) -> str:
        n_pass = sum(c.passed for c in self.checks)
        fails = [c for c in self.checks if not c.passed]
        documented = [c for c in fails if c.documented]
        total_time = sum(self.timings.values())
        out = [
            f"# Validation report (budget: {self.b.name})", "",
            f"Generated by `smi validate --budget {self.b.name}` on "
            f"{time.strftime('%Y-%m-%d %H:%M:%S')} "
            f"(Python {platform.python_version()}, {platform.machine()}); "
            f"total {total_time:.0f} s.", "",
            "Provenance: " + _provenance_line(), "",
            f"**{n_pass} PASS, {len(fails)} FAIL** of {len(self.checks)} checks; "
            f"{len(documented)} of the FAILs are documented disagreements with published "
            f"numbers (explained in their section); "
            f"{len(fails) - len(documented)} undocumented FAIL(s).", "",
            "Published data: " + published.CITATION + ", copied into `validation/data/`.", "",
        ]
        for s in SECTIONS:
            out += [f"## {s}", "", f"_{self.timings.get(s, 0):.1f} s_", ""]
            if s == "Published data":
                out += [PUBLISHED_NOTE, ""]
            for c in (c for c in self.checks if c.section == s):
                tag = " (documented disagreement)" if (not c.passed and c.documented) else ""
                out.append(f"- **{c.verdict}**{tag} {c.name}: {c.values}. "
                           f"Tolerance: {c.tolerance}." + (f" Note: {c.note}." if c.note else ""))
            out.append("")
            for t in self.tables[s]:
                out += [t, ""]
            for f in self.figures[s]:
                out += [f"![{f}]({f})", ""]
        path = self.path("report.md")
        with open(path, "w") as fh:
            fh.write("\n".join(out))
        return path


PUBLISHED_NOTE = """\
Where we disagree with `alpha_critical.csv` the check is reported as FAIL with the size of the
disagreement, and marked *documented*. The evidence that our numbers are right (README.md,
"Against the published table"):
1. By Jensen, E‖E[z zᵀ|y] − I‖² ≤ E‖z zᵀ − I‖² = L(L+1) = 6, so the layer-2 threshold is at least
   1/6 for every c. The published alpha2 column lies below 1/6 at every c ≥ 0.75; ours never does.
2. The paper's own SE data `BO_2w.csv` keeps Q22 ≈ 0 up to α ≈ 0.167 and grows only past it,
   matching our 0.1855 at c = 1, not the published 0.1436.
3. Our Q = 0 value is stable to 2e-12 under grid refinement and the independent Monte Carlo
   path agrees (0.1859 ± 0.0003).
4. Staircase (layer 1): the generic SE map's one-step growth factor confirms our threshold
   (0.884 ± 0.020 at α = 0.68, 1.03 ± 0.03 at 0.7193, 1.19 ± 0.06 at 0.76, already below the
   published 0.7936); the last-layer overlap at our threshold matches BO_2w's Q22; BO_2w's Q11
   onset (α ≈ 0.83) lags because its SE runs a fixed number of iterations.
No code accompanies `alpha_critical.csv`, so we cannot say what produced its numbers."""


def _provenance_line() -> str:
    """Package version, git commit and library versions of this report's run."""
    p = provenance(None)
    libs = ", ".join(f"{k} {v}" for k, v in p["libraries"].items())
    return (f"smi-asymptotics {p['package_version']} (git {p['git_commit'] or 'unknown'}), "
            f"{libs}, {p['platform']}.")


def run_validation(budget: str, outdir: str, stream=None) -> dict:
    """Run the battery at ``budget`` (quick, full or test) and write ``outdir/report.md``."""
    if budget not in BUDGETS:
        raise ValueError(f"budget must be one of {', '.join(BUDGETS)}")
    os.makedirs(outdir, exist_ok=True)
    bat = Battery(BUDGETS[budget], outdir, stream)
    t0 = time.perf_counter()
    bat.run()
    path = bat.write()
    fails = [c for c in bat.checks if not c.passed]
    return {"report": path, "total": len(bat.checks),
            "passed": sum(c.passed for c in bat.checks), "failed": len(fails),
            "undocumented_failures": sum(not c.documented for c in fails),
            "wall_s": time.perf_counter() - t0, "checks": bat.checks}


if __name__ == "__main__":  # pragma: no cover
    print(run_validation(sys.argv[1] if len(sys.argv) > 1 else "quick", "validation-report",
                         sys.stderr)["report"])
