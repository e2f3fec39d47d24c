"""``functional-sam``: SAM's logit- and functional-path parts on a large-vocabulary model.

After Singh, Hofmann et al., "Avoiding spurious sharpness minimization broadens
applicability of SAM", ICML 2025 (arXiv:2502.02407).  With ``delta(w) = dL/dz`` the
derivative of the loss in the logits ``z`` and ``J(w) = dz/dw``,

    g = grad L(w) = J(w)^T delta(w),      eps = rho g/||g||  (preconditioned: see below),
    g_SAM  = J(w+eps)^T delta(w+eps),     g_FSAM = J(w+eps)^T delta(w),

so SAM's correction splits exactly into a *logit-path* part and a *functional-path* part,

    g_SAM - g = (g_SAM - g_FSAM) + (g_FSAM - g)
              = J(w+eps)^T [delta(w+eps) - delta(w)]  +  [J(w+eps) - J(w)]^T delta(w).

The paper argues that with a large vocabulary the logit part dominates and makes SAM
minimise "spurious" sharpness, and that Functional-SAM (only the functional part; also
preconditioned by Adam's second moment) trains language models better than SAM.

Data (synthetic; the paper uses real text, not reproducible here)
-----------------------------------------------------------------
A Markov corpus over ``V`` tokens: ``x_{t+1} = s(x_t)`` (a fixed random successor map)
with probability 1/2, else a fresh draw from Zipf(1.1) over the vocabulary (rank k has
probability proportional to ``k^-1.1``), so token frequencies are Zipf-like and half of
the transitions are learnable.  Training: ``N_train`` (previous, next) pairs of one
corpus, evaluation: a held-out corpus of ``N_eval`` pairs from the same chain.
``V = 512`` (quick) / ``2048`` (full); the decomposition is also measured at ``V = 64``
to see the dependence on vocabulary size.

Model
-----
A bigram next-token network: ``z = tanh(E[x] W) U + c`` with embedding ``E`` (V x d),
``W`` (d x d), unembedding ``U`` (d x V), bias ``c``; ``d = 32``; cross-entropy loss;
init ``E ~ N(0,1)``, ``W, U ~ N(0, 1/d)``, ``c = 0``.  All parameters are one flat vector,
so SAM's radius is one global Euclidean norm.  Forward and backward by hand
(:class:`BigramOracle`, the :class:`simulators.optimizers.GradientOracle` protocol).

Training (``simulators.optimizers``)
------------------------------------
AdamW (lr 3e-3, betas 0.9/0.999, decoupled weight decay 1e-2) and SAM, Functional-SAM,
preconditioned SAM and preconditioned Functional-SAM on that base (``sam-adamw``,
``fsam-adamw``, ``psam-adamw``, ``pfsam-adamw``), ``rho = 0.05`` for all (the paper
tunes ``rho`` per method and model; we did not), mini-batches of 128 pairs, the same
data order and initialisation for every method; 150 (quick) / 1000 (full) steps; 2
(quick) / 4 (full) seeds; ``N_train = 10^4`` / ``4 10^4``, ``N_eval = 4000`` / ``10^4``.
Final evaluation loss, mean +- standard error over seeds, and the paired per-seed
difference to AdamW (mean +- standard error).  Decomposition: along a
``sam-adamw`` run, on the current batch at ~20 logged steps, the norms of ``g``, of the
logit part and of the functional part (with the plain and the preconditioned ``eps``).

Claims checked (``claims`` in the summary)
------------------------------------------
- ``decomposition_exact``: ``g_SAM - g = logit + functional`` to rounding, where the
  three gradients come from independent calls (``grad`` at ``w+eps``, ``vjp`` at ``w+eps``
  with ``delta(w)``, ``grad`` at ``w``) and the logit part is recomputed independently as
  ``vjp(w+eps, delta(w+eps) - delta(w))`` (relative residuals < 1e-10);
- ``rho_zero_recovers_base``: SAM/FSAM (and preconditioned) with ``rho = 0`` give the
  AdamW trajectory exactly, and the SAM correction scales linearly in ``rho`` as
  ``rho -> 0``;
- reported, not asserted: the ratio logit/functional norm (paper: logit part dominates
  at large vocabulary) and the evaluation-loss ordering (paper: FSAM <= AdamW, SAM worse
  than FSAM).  ``published_effect_*`` flags say whether we see them at this scale.
"""

from __future__ import annotations

import numpy as np

from simulators.optimizers import make_optimizer

from ._common import Timer, check_budget, figure, mean_se, write_summary

NAME = "functional-sam"
METHODS = ("adamw", "sam-adamw", "fsam-adamw", "psam-adamw", "pfsam-adamw")


def settings(budget):
    full = budget == "full"
    return {"V": 2048 if full else 512, "V_small": 64, "d": 32,
            "n_train": 40000 if full else 10000, "n_eval": 10000 if full else 4000,
            "batch": 128, "steps": 1000 if full else 150, "seeds": 4 if full else 2,
            "lr": 3e-3, "weight_decay": 1e-2, "rho": 0.05, "zipf": 1.1, "p_successor": 0.5,
            "log_points": 20 if full else 12}


# ----------------------------------------------------------------------------- data


def make_chain(rng, V, zipf):
    p = np.arange(1, V + 1, dtype=float) ** (-zipf)
    return rng.permutation(V), p / p.sum()


def sample_corpus(rng, succ, p, n, p_successor):
    """``n + 1`` tokens of the Markov chain; returns (previous, next) pairs."""
    V = len(p)
    fresh = rng.choice(V, size=n + 1, p=p)
    follow = rng.random(n + 1) < p_successor
    x = np.empty(n + 1, dtype=np.int64)
    x[0] = fresh[0]
    for t in range(1, n + 1):
        x[t] = succ[x[t - 1]] if follow[t] else fresh[t]
    return x[:-1], x[1:]


# ---------------------------------------------------------------------------- model


class BigramOracle:
    """``z = tanh(E[x] W) U + c`` with cross-entropy; the GradientOracle protocol.

    Parameters are one flat vector ``[E, W, U, c]``; :meth:`set_batch` picks the pairs.
    """

    def __init__(self, prev, nxt, V, d):
        self.prev_all, self.next_all, self.V, self.d = prev, nxt, V, d
        self.shapes = [(V, d), (d, d), (d, V), (V,)]
        self.sizes = [int(np.prod(s)) for s in self.shapes]
        self.set_batch(None)

    @property
    def size(self):
        return sum(self.sizes)

    def init(self, rng):
        V, d = self.V, self.d
        return np.concatenate([rng.standard_normal(V * d),
                               rng.standard_normal(d * d) / np.sqrt(d),
                               rng.standard_normal(d * V) / np.sqrt(d), np.zeros(V)])

    def set_batch(self, idx):
        if idx is None:
            self.x, self.y = self.prev_all, self.next_all
        else:
            self.x, self.y = self.prev_all[idx], self.next_all[idx]

    def unpack(self, w):
        out, pos = [], 0
        for shape, size in zip(self.shapes, self.sizes, strict=True):
            out.append(w[pos:pos + size].reshape(shape))
            pos += size
        return out

    def _forward(self, w):
        E, W, U, c = self.unpack(w)
        e = E[self.x]
        h = np.tanh(e @ W)
        z = h @ U + c
        z = z - z.max(axis=1, keepdims=True)
        logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
        return e, h, logp

    def loss(self, w) -> float:
        _, _, logp = self._forward(w)
        return float(-logp[np.arange(len(self.y)), self.y].mean())

    def output_cotangent(self, w):
        """``dL/dz = (softmax(z) - onehot(y)) / batch`` (shape (batch, V))."""
        _, _, logp = self._forward(w)
        G = np.exp(logp)
        G[np.arange(len(self.y)), self.y] -= 1.0
        return G / len(self.y)

    def vjp(self, w, G):
        """``J(w)^T G`` for a logit cotangent ``G`` (batch, V)."""
        E, W, U, _ = self.unpack(w)
        e = E[self.x]
        h = np.tanh(e @ W)
        dU = h.T @ G
        dc = G.sum(axis=0)
        da = (G @ U.T) * (1.0 - h * h)
        dW = e.T @ da
        dE = np.zeros_like(E)
        np.add.at(dE, self.x, da @ W.T)
        return np.concatenate([dE.ravel(), dW.ravel(), dU.ravel(), dc])

    def grad(self, w):
        return self.vjp(w, self.output_cotangent(w))


# ----------------------------------------------------------------------- experiment


def decompose(opt, oracle, w, g):
    """SAM's correction at ``w`` (current batch) split into logit and functional parts.

    Uses the optimizer's own perturbation (plain or preconditioned ``eps``).  Returns
    norms and the two identity residuals (relative to ``||g_SAM - g||``).
    """
    eps = opt.perturbation(g)
    wp = w + eps
    delta = oracle.output_cotangent(w)
    delta_p = oracle.output_cotangent(wp)
    g_sam = oracle.grad(wp)
    g_fsam = oracle.vjp(wp, delta)
    logit = g_sam - g_fsam
    functional = g_fsam - g
    total = g_sam - g
    scale = max(np.linalg.norm(total), 1e-300)
    logit_direct = oracle.vjp(wp, delta_p - delta)
    return {
        "grad_norm": float(np.linalg.norm(g)),
        "eps_norm": float(np.linalg.norm(eps)),
        "sam_correction_norm": float(np.linalg.norm(total)),
        "logit_norm": float(np.linalg.norm(logit)),
        "functional_norm": float(np.linalg.norm(functional)),
        "residual_sum": float(np.linalg.norm(total - (logit + functional)) / scale),
        "residual_logit_direct": float(np.linalg.norm(logit - logit_direct) / scale),
    }


def train(method, oracle, w0, st, order, rho=None, log_steps=(), decomp=None):
    """Train with ``method``; return (final weights, decomposition records)."""
    rho = st["rho"] if rho is None else rho
    opt = make_optimizer(method, st["lr"], weight_decay=st["weight_decay"], rho=rho,
                         oracle=oracle)
    w, records = w0, []
    B = st["batch"]
    for t in range(st["steps"]):
        oracle.set_batch(order[t * B:(t + 1) * B])
        g = oracle.grad(w)
        if decomp is not None and t in log_steps:
            rec = {"step": t}
            for label, pre in (("plain", False), ("preconditioned", True)):
                probe = make_optimizer("psam-adamw" if pre else "sam-adamw", st["lr"],
                                       rho=rho)
                probe.base = opt.base  # read the run's second moment (not modified)
                rec[label] = decompose(probe, oracle, w, g)
            records.append(rec)
        w = opt.step(w, g, oracle)
    return w, records


def batch_order(rng, n, steps, B):
    reps = -(-steps * B // n)
    return np.concatenate([rng.permutation(n) for _ in range(reps)])[: steps * B]


def run(budget="quick", output_dir=".", seed=0) -> dict:
    check_budget(budget)
    timer = Timer()
    st = settings(budget)
    log_steps = sorted({int(s) for s in np.unique(np.round(np.geomspace(
        1, st["steps"] - 1, st["log_points"])))} | {0})

    # decomposition along a SAM-AdamW run, at a small and a large vocabulary
    decomposition = {}
    for V in (st["V_small"], st["V"]):
        rng = np.random.default_rng([seed, 4, V])
        succ, p = make_chain(rng, V, st["zipf"])
        prev, nxt = sample_corpus(rng, succ, p, st["n_train"], st["p_successor"])
        oracle = BigramOracle(prev, nxt, V, st["d"])
        order = batch_order(rng, st["n_train"], st["steps"], st["batch"])
        _, recs = train("sam-adamw", oracle, oracle.init(rng), st, order,
                        log_steps=set(log_steps), decomp=True)
        decomposition[f"V={V}"] = recs

    # final evaluation loss of the five methods at the large vocabulary
    V = st["V"]
    finals = {m: [] for m in METHODS}
    curves_seed0 = {}
    for s in range(st["seeds"]):
        rng = np.random.default_rng([seed, 5, s])
        succ, p = make_chain(rng, V, st["zipf"])
        prev, nxt = sample_corpus(rng, succ, p, st["n_train"], st["p_successor"])
        eprev, enxt = sample_corpus(rng, succ, p, st["n_eval"], st["p_successor"])
        oracle = BigramOracle(prev, nxt, V, st["d"])
        evaluator = BigramOracle(eprev, enxt, V, st["d"])
        w0 = oracle.init(rng)
        order = batch_order(rng, st["n_train"], st["steps"], st["batch"])
        for m in METHODS:
            w, _ = train(m, oracle, w0, st, order)
            finals[m].append(evaluator.loss(w))
        curves_seed0.setdefault("eval_loss_at_init", evaluator.loss(w0))
    comparison = {}
    for m in METHODS:
        mean, se = mean_se(finals[m])
        dm, dse = mean_se(np.array(finals[m]) - np.array(finals["adamw"]))
        comparison[m] = {"eval_loss_mean": float(mean), "eval_loss_stderr": float(se),
                         "minus_adamw_mean": float(dm), "minus_adamw_stderr": float(dse),
                         "per_seed": finals[m]}

    # identities
    resid = max(max(r[k]["residual_sum"], r[k]["residual_logit_direct"])
                for recs in decomposition.values() for r in recs
                for k in ("plain", "preconditioned"))
    rho0 = rho_zero_check(st, seed)
    ratios = {}
    for key, recs in decomposition.items():
        late = recs[len(recs) // 2:]
        ratios[key] = {k: float(np.median([r[k]["logit_norm"] / r[k]["functional_norm"]
                                           for r in late]))
                       for k in ("plain", "preconditioned")}
    big = f"V={V}"
    c = {m: comparison[m]["eval_loss_mean"] for m in METHODS}
    claims = {
        "decomposition_exact": {"holds": resid < 1e-10, "max_relative_residual": resid},
        "rho_zero_recovers_base": {"holds": rho0["max_diff_rho0"] == 0.0
                                   and abs(rho0["linear_scaling_ratio"] - 2.0) < 0.05,
                                   **rho0},
        "published_effect_logit_part_dominates_at_large_vocab": {
            "holds": ratios[big]["plain"] > 1.0,
            "median_logit_over_functional_ratio_second_half": ratios},
        "published_effect_fsam_beats_sam_and_adamw": {
            "holds": c["fsam-adamw"] <= min(c["sam-adamw"], c["adamw"])
            or c["pfsam-adamw"] <= min(c["psam-adamw"], c["adamw"]),
            "eval_loss_mean": c},
    }

    with figure(output_dir, NAME, ncols=2) as axes:
        ax = axes[0]
        for key, recs in decomposition.items():
            steps = np.maximum([r["step"] for r in recs], 1)
            (ln,) = ax.loglog(steps, [r["plain"]["logit_norm"] for r in recs],
                              label=f"logit part, {key}")
            ax.loglog(steps, [r["plain"]["functional_norm"] for r in recs], "--",
                      color=ln.get_color(), label=f"functional part, {key}")
        ax.set(xlabel="step (SAM-AdamW run)", ylabel="norm",
               title=r"$g_\mathrm{SAM} - \nabla L$ split")
        ax.legend()
        ax = axes[1]
        x = np.arange(len(METHODS))
        ax.bar(x, [comparison[m]["minus_adamw_mean"] for m in METHODS],
               yerr=[comparison[m]["minus_adamw_stderr"] for m in METHODS])
        ax.axhline(0.0, color="k", lw=0.6)
        ax.set_xticks(x, METHODS, rotation=30)
        ax.set(ylabel=r"eval loss $-$ AdamW's (paired, $\pm$ se)",
               title=f"$V$={V}, {st['steps']} steps, {st['seeds']} seeds; "
                     f"AdamW {comparison['adamw']['eval_loss_mean']:.3f}")

    summary = {
        "experiment": NAME, "budget": budget, "seed": seed,
        "settings": {**st, "methods": METHODS, "model": "z = tanh(E[x] W) U + c"},
        "eval_loss_at_init_seed0": curves_seed0["eval_loss_at_init"],
        "comparison": comparison,
        "decomposition": decomposition,
        "claims": claims,
        "wall_s": timer(),
    }
    return write_summary(output_dir, summary)


def rho_zero_check(st, seed, V=64, steps=15):
    """``rho = 0`` reproduces AdamW exactly; the SAM correction is linear as rho -> 0."""
    rng = np.random.default_rng([seed, 6])
    succ, p = make_chain(rng, V, st["zipf"])
    prev, nxt = sample_corpus(rng, succ, p, 2000, st["p_successor"])
    oracle = BigramOracle(prev, nxt, V, st["d"])
    w0 = oracle.init(rng)
    small = {**st, "steps": steps, "batch": 64}
    order = batch_order(rng, 2000, steps, 64)
    base, _ = train("adamw", oracle, w0, small, order)
    diff = max(float(np.max(np.abs(train(m, oracle, w0, small, order, rho=0.0)[0] - base)))
               for m in METHODS[1:])
    oracle.set_batch(order[:64])
    g = oracle.grad(w0)
    norms = []
    for rho in (1e-4, 5e-5):
        opt = make_optimizer("sam-adamw", st["lr"], rho=rho)
        norms.append(decompose(opt, oracle, w0, g)["sam_correction_norm"])
    return {"max_diff_rho0": diff, "linear_scaling_ratio": norms[0] / norms[1]}
