"""``next-token``: two-stage normalised GD for next-token prediction and its max-margin bias.

Reproduces the synthetic setting of Huang, Liang & Yang, "Non-asymptotic convergence of
training transformers for next-token prediction", NeurIPS 2024 (arXiv:2409.17335).

Data
----
Vocabulary of ``V = 20`` tokens with one-hot embeddings (``d = V``).

- *Collocation map* ``n: [V] -> [V]``, a uniformly random permutation: the next token
  after a sentence whose "optimal" token is ``x`` is ``n(x)``; the collocation set is all
  ``V`` pairs ``(x, n(x))``.
- *Query-dependent order*: for each query token ``q`` an independent uniformly random
  total order (priorities) on ``[V]``.  (The paper allows a general partial order; a total
  order is the simplest admissible one and is our choice.)
- A sentence has ``L = 6`` distinct tokens: 5 drawn uniformly without replacement from
  ``[V] \\ {q}`` followed by the query ``q`` (uniform).  Its optimal token ``x_opt`` is the
  highest-priority token of the sentence (query included) under the order of ``q`` and its
  label is ``n(x_opt)``.  ``N = 300`` (quick) / ``600`` (full) training sentences.

Model
-----
One-layer transformer ``logits(X) = W_ov X softmax(X^T W_kq x_L)`` with ``X`` the
``V x L`` one-hot matrix of the sentence and ``x_L`` the query, cross-entropy loss
(mean over sentences).  With one-hot tokens the attention score of position ``j`` is
``W_kq[t_j, q]`` and the output is ``sum_j a_j W_ov[:, t_j]``.

Two-stage normalised GD (``simulators.optimizers.NormalizedGD``, ``w <- w - eta g/||g||``)
------------------------------------------------------------------------------------------
1. ``W_ov`` on the collocation loss ``(1/V) sum_x CE(W_ov e_x, n(x))``, ``eta_1 = 0.3``;
2. ``W_kq`` on the sentence loss with ``W_ov`` frozen at its stage-1 value, ``eta_2 = 1``;

``T_1 = 300`` and ``T_2 = 500`` (quick) / ``2000`` (full) steps.  (A longer stage 1 makes
``||W_ov||`` and hence the stage-2 landscape so sharp that normalised GD with
``eta_2 = 1`` zig-zags: with ``T_1 = 2000`` the stage-2 norm grew by only 0.04 per step.)
Losses and gradients use ``log1p`` of the non-maximal probability mass, so cross-entropies far
below 1e-16 keep full relative precision (otherwise the gradient becomes rounding noise
once the loss underflows, and normalised GD turns that noise into full-length steps).

Unknown in the paper and chosen here: both matrices start from iid ``N(0, 1/V)``
entries (from zero, stage 1 would be *exactly* on the max-margin direction after one
step, by symmetry, and the direction claim would be empty), and the step sizes above.

Max-margin solutions (solved independently, ``scipy.optimize`` on the dual QP)
-----------------------------------------------------------------------------
``W_ov^mm = argmin ||W||_F`` s.t. ``(e_{n(x)} - e_v)^T W e_x >= 1`` for all ``x`` and
``v != n(x)``; ``W_kq^mm = argmin ||W||_F`` s.t. ``(e_{x_opt} - e_{t_j})^T W e_q >= 1``
for every training sentence and every non-optimal token ``t_j`` in it (attention selects
the optimal token, as in Tarzanagh et al.'s attention SVM; the paper's exact constraint
set for a general partial order is not reproduced here).  Both are hard-margin SVMs
``min 1/2 ||W||^2, <A_k, W> >= 1``; we solve the dual ``min_{alpha >= 0} 1/2 alpha^T G
alpha - 1^T alpha`` (``G_kl = <A_k, A_l>``) with L-BFGS-B and set
``W = sum_k alpha_k A_k``; the summary reports the primal feasibility of the result.

Claims and measurements
-----------------------
1. the loss decreases geometrically: stage 1 loss, and stage 2 *excess* loss over its
   infimum with ``W_ov`` frozen (attention entirely on ``x_opt``), are fitted by
   ``log loss = a - b t`` on the second half of each stage: ``b > 0`` and ``R^2 >= 0.99``
   (the stage-2 fit stops where the excess falls below ``1e-11`` times the infimum,
   the resolution of a difference of two losses);
2. the directions converge to the max-margin solutions: the cosines
   ``<W_t, W^mm>/(||W_t|| ||W^mm||)`` end above 0.99 and increase over the second half;
3. the norms grow about linearly: a linear fit of ``||W_t||`` over the second half of
   each stage has ``R^2 >= 0.999`` and slope at least ``eta/2`` (it is at most ``eta``:
   every step has length ``eta``; slope ``eta`` means consecutive steps are aligned).
   We also report ``||W_T|| / (eta T)``, which includes the early transient.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize

from simulators.optimizers import NormalizedGD

from ._common import Timer, check_budget, figure, write_summary

NAME = "next-token"


def settings(budget):
    full = budget == "full"
    return {"V": 20, "L": 6, "N": 600 if full else 300, "steps1": 300,
            "steps2": 2000 if full else 500, "eta1": 0.3, "eta2": 1.0, "init_std": 20 ** -0.5}


# --------------------------------------------------------------------------- data


def make_data(rng, V, L, N):
    """``(tokens (N, L), labels (N,), opt (N,), nextmap (V,), priority (V, V))``.

    ``priority[q, x]`` is the rank of token ``x`` in the order of query ``q``.
    """
    nextmap = rng.permutation(V)
    priority = np.array([rng.permutation(V) for _ in range(V)])
    tokens = np.empty((N, L), dtype=np.int64)
    for i in range(N):
        q = rng.integers(V)
        others = rng.choice(np.delete(np.arange(V), q), size=L - 1, replace=False)
        tokens[i, :-1], tokens[i, -1] = others, q
    q = tokens[:, -1]
    opt = tokens[np.arange(N), np.argmax(priority[q[:, None], tokens], axis=1)]
    return tokens, nextmap[opt], opt, nextmap, priority


def _log_softmax(z, axis):
    """Log-softmax accurate for probabilities near 1: ``log1p`` of the non-maximal mass.

    (With the plain ``log(sum exp)`` a cross-entropy below ~1e-16 rounds to 0 and its
    gradient to noise, which normalised GD would then amplify to full-length steps.)
    """
    m = z.max(axis=axis, keepdims=True)
    e = np.exp(z - m)
    np.put_along_axis(e, np.argmax(z, axis=axis, keepdims=True), 0.0, axis=axis)
    return z - m - np.log1p(e.sum(axis=axis, keepdims=True))


def _ce_grad(logp, labels, axis):
    """``softmax - onehot`` with the label entry as minus the *other* probabilities."""
    p = np.exp(logp)
    idx = np.expand_dims(labels, axis)
    np.put_along_axis(p, idx, 0.0, axis=axis)
    np.put_along_axis(p, idx, -p.sum(axis=axis, keepdims=True), axis=axis)
    return p


# ------------------------------------------------------------------------- losses


def collocation_loss_grad(W_ov, nextmap):
    """Mean CE of ``W_ov e_x`` against ``n(x)`` over all tokens ``x``, and its gradient."""
    V = W_ov.shape[1]
    logp = _log_softmax(W_ov, axis=0)  # column x: log-probabilities of W_ov e_x
    cols = np.arange(V)
    loss = -logp[nextmap, cols].mean()
    return float(loss), _ce_grad(logp, nextmap, axis=0) / V


def attention_forward(W_kq, W_ov, tokens):
    """Attention weights ``a`` (N, L) and log-probabilities (N, V) of the next token."""
    q = tokens[:, -1]
    scores = W_kq[tokens, q[:, None]]  # (N, L)
    a = np.exp(_log_softmax(scores, axis=1))
    logits = np.einsum("vnl,nl->nv", W_ov[:, tokens], a)
    return a, _log_softmax(logits, axis=1)


def sentence_loss_grad(W_kq, W_ov, tokens, labels):
    """Mean CE of the one-layer transformer and its gradient in ``W_kq`` (W_ov frozen)."""
    N = tokens.shape[0]
    a, logp = attention_forward(W_kq, W_ov, tokens)
    loss = -logp[np.arange(N), labels].mean()
    dz = _ce_grad(logp, labels, axis=1) / N
    da = np.einsum("vnl,nv->nl", W_ov[:, tokens], dz)
    ds = a * (da - (a * da).sum(axis=1, keepdims=True))
    # the largest weight's entry is minus the sum of the others (sum_j ds_j = 0 exactly)
    top = np.argmax(a, axis=1)[:, None]
    np.put_along_axis(ds, top, 0.0, axis=1)
    np.put_along_axis(ds, top, -ds.sum(axis=1, keepdims=True), axis=1)
    G = np.zeros_like(W_kq)
    np.add.at(G, (tokens, np.broadcast_to(tokens[:, -1:], tokens.shape)), ds)
    return float(loss), G


def hard_attention_loss(W_ov, opt, labels):
    """Infimum of the stage-2 loss: attention entirely on the optimal token."""
    logp = _log_softmax(W_ov[:, opt], axis=0)
    return float(-logp[labels, np.arange(len(labels))].mean())


# ---------------------------------------------------------------------- max margin


def _svm_dual(A):
    """``min ||w||`` s.t. ``A w >= 1`` (rows of ``A`` distinct) via the dual, L-BFGS-B."""
    G = A @ A.T

    def f(alpha):
        Ga = G @ alpha
        return 0.5 * alpha @ Ga - alpha.sum(), Ga - 1.0

    res = minimize(f, np.zeros(A.shape[0]), jac=True, method="L-BFGS-B",
                   bounds=[(0, None)] * A.shape[0],
                   options={"maxiter": 20000, "ftol": 1e-16, "gtol": 1e-13})
    return res.x @ A


def max_margin(constraints, shape):
    """Hard-margin SVM ``min ||W||_F`` s.t. ``<A_k, W> >= 1`` via its dual (L-BFGS-B).

    ``constraints`` is a list of sparse matrices given as ``[(i, j, value), ...]``.  Every
    constraint here involves a single column ``j`` of ``W`` and the objective separates
    over columns, so each column is an independent SVM (solved separately; columns
    without constraints are 0).  Returns ``(W, min_k <A_k, W>)``.
    """
    rows, cols = shape
    by_col = {}
    for entries in constraints:
        js = {j for _, j, _ in entries}
        if len(js) != 1:
            raise ValueError("each constraint must involve a single column")
        a = np.zeros(rows)
        for i, _, v in entries:
            a[i] += v
        by_col.setdefault(js.pop(), []).append(a)
    W = np.zeros(shape)
    worst = np.inf
    for j, rows_j in by_col.items():
        A = np.unique(np.array(rows_j), axis=0)
        W[:, j] = _svm_dual(A)
        worst = min(worst, float((A @ W[:, j]).min()))
    return W, worst


def collocation_constraints(nextmap):
    V = len(nextmap)
    return [[(nextmap[x], x, 1.0), (v, x, -1.0)] for x in range(V)
            for v in range(V) if v != nextmap[x]]


def attention_constraints(tokens, opt):
    cons = set()
    for row, o in zip(tokens, opt, strict=True):
        q = row[-1]
        for t in row:
            if t != o:
                cons.add((int(o), int(t), int(q)))
    return [[(o, q, 1.0), (t, q, -1.0)] for o, t, q in sorted(cons)]


# -------------------------------------------------------------------------- helpers


def cosine(A, B):
    return float(np.sum(A * B) / (np.linalg.norm(A) * np.linalg.norm(B)))


def loglinear_fit(t, y):
    """Fit ``log y = a - b t``; return ``(b, R^2)``."""
    t = np.asarray(t, float)
    ly = np.log(np.asarray(y, float))
    coef = np.polyfit(t, ly, 1)
    resid = ly - np.polyval(coef, t)
    r2 = 1.0 - resid.var() / ly.var() if ly.var() > 0 else 1.0
    return float(-coef[0]), float(r2)


def linear_r2(t, y):
    coef = np.polyfit(t, y, 1)
    resid = y - np.polyval(coef, t)
    return float(coef[0]), float(1.0 - resid.var() / np.var(y))


def train_stage(loss_grad, W0, eta, steps, W_mm):
    opt = NormalizedGD(eta)
    W = W0
    hist = {"loss": [], "norm": [], "cosine": []}
    for _ in range(steps + 1):
        loss, g = loss_grad(W)
        hist["loss"].append(loss)
        hist["norm"].append(float(np.linalg.norm(W)))
        hist["cosine"].append(cosine(W, W_mm))
        if len(hist["loss"]) > steps:
            break
        W = opt.step(W, g)
    return W, {k: np.array(v) for k, v in hist.items()}


def run(budget="quick", output_dir=".", seed=0) -> dict:
    check_budget(budget)
    timer = Timer()
    st = settings(budget)
    V, L, N = st["V"], st["L"], st["N"]
    rng = np.random.default_rng([seed, 3])
    tokens, labels, opt, nextmap, priority = make_data(rng, V, L, N)
    Wov_mm, margin_ov = max_margin(collocation_constraints(nextmap), (V, V))
    Wkq_mm, margin_kq = max_margin(attention_constraints(tokens, opt), (V, V))
    W_ov0 = st["init_std"] * rng.standard_normal((V, V))
    W_kq0 = st["init_std"] * rng.standard_normal((V, V))

    W_ov, h1 = train_stage(lambda W: collocation_loss_grad(W, nextmap), W_ov0, st["eta1"],
                           st["steps1"], Wov_mm)
    loss_inf = hard_attention_loss(W_ov, opt, labels)
    W_kq, h2 = train_stage(lambda W: sentence_loss_grad(W, W_ov, tokens, labels), W_kq0,
                           st["eta2"], st["steps2"], Wkq_mm)
    excess = h2["loss"] - loss_inf

    stages = {}
    for key, h, y, eta, W0 in (("stage1_W_ov", h1, h1["loss"], st["eta1"], W_ov0),
                               ("stage2_W_kq", h2, excess, st["eta2"], W_kq0)):
        T = len(y) - 1
        half = np.arange(T // 2, T + 1)
        floor = 1e-11 * loss_inf if key.startswith("stage2") else 0.0
        fit = half[y[half] > floor]
        rate, r2 = loglinear_fit(fit, y[fit]) if len(fit) >= 3 else (float("nan"), 0.0)
        slope, r2_norm = linear_r2(half, h["norm"][half])
        stages[key] = {
            "loss_initial": float(h["loss"][0]), "loss_final": float(h["loss"][-1]),
            "fit": {"rate_per_step": rate, "r2": r2, "steps": [int(fit[0]), int(fit[-1])]
                    if len(fit) else []},
            "cosine_initial": float(h["cosine"][0]),
            "cosine_half": float(h["cosine"][T // 2]),
            "cosine_final": float(h["cosine"][-1]),
            "norm_final": float(h["norm"][-1]),
            "norm_over_eta_T": float(h["norm"][-1] / (eta * T)),
            "norm_bound_over_eta_T": float(1.0 + np.linalg.norm(W0) / (eta * T)),
            "norm_slope_over_eta": slope / eta,
            "norm_linear_r2": r2_norm,
        }
    stages["stage2_W_kq"]["loss_infimum"] = loss_inf
    stages["stage2_W_kq"]["excess_loss_final"] = float(excess[-1])

    fits = [s["fit"] for s in stages.values()]
    claims = {
        "loss_decreases_geometrically": {
            "holds": all(f["rate_per_step"] > 0 and f["r2"] >= 0.99 for f in fits),
            "stage1": fits[0], "stage2_excess": fits[1]},
        "direction_converges_to_max_margin": {
            "holds": all(s["cosine_final"] >= 0.99 and s["cosine_final"] >= s["cosine_half"]
                         for s in stages.values()),
            "cosine_final": {k: s["cosine_final"] for k, s in stages.items()},
            "cosine_half": {k: s["cosine_half"] for k, s in stages.items()}},
        "norm_grows_linearly": {
            "holds": all(s["norm_slope_over_eta"] >= 0.5 and s["norm_linear_r2"] >= 0.999
                         for s in stages.values()),
            "norm_slope_over_eta": {k: s["norm_slope_over_eta"] for k, s in stages.items()},
            "norm_over_eta_T": {k: s["norm_over_eta_T"] for k, s in stages.items()},
            "norm_linear_r2": {k: s["norm_linear_r2"] for k, s in stages.items()}},
    }

    t1 = np.arange(len(h1["loss"]))
    t2 = np.arange(len(h2["loss"]))
    with figure(output_dir, NAME, ncols=3) as axes:
        ax = axes[0]
        ax.semilogy(t1, h1["loss"], label="stage 1: collocation loss")
        ax.semilogy(t2, np.where(excess > 0, excess, np.nan), label="stage 2: loss $-$ inf")
        ax.set(xlabel="step of the stage", ylabel="loss", title="geometric decrease")
        ax.legend()
        ax = axes[1]
        ax.plot(t1, h1["cosine"], label=r"$W_{ov}$ vs max-margin")
        ax.plot(t2, h2["cosine"], label=r"$W_{kq}$ vs max-margin")
        ax.set(xlabel="step of the stage", ylabel="cosine", title="direction",
               ylim=(None, 1.01))
        ax.legend()
        ax = axes[2]
        ax.plot(t1, h1["norm"], label=r"$\|W_{ov}\|_F$")
        ax.plot(t2, h2["norm"], label=r"$\|W_{kq}\|_F$")
        ax.set(xlabel="step of the stage", ylabel="Frobenius norm", title="norm growth")
        ax.legend()

    summary = {
        "experiment": NAME, "budget": budget, "seed": seed,
        "settings": {**st, "order": "random total order per query",
                     "collocation": "random permutation", "init": "N(0, 1/V)"},
        "max_margin": {"W_ov_min_constraint": margin_ov, "W_kq_min_constraint": margin_kq,
                       "W_ov_norm": float(np.linalg.norm(Wov_mm)),
                       "W_kq_norm": float(np.linalg.norm(Wkq_mm)),
                       "n_attention_constraints": len(attention_constraints(tokens, opt))},
        "results": stages,
        "claims": claims,
        "wall_s": timer(),
    }
    return write_summary(output_dir, summary)
