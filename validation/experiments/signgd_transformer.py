"""``signgd-transformer``: SignGD and Adam memorise noise in a two-layer transformer.

After Li, Huang, Han, Zhou, Suzuki, Zhu & Chen, "On the optimization and generalization
of two-layer transformers with sign gradient descent", ICLR 2025 (arXiv:2410.04870).

Data (binary classification, few samples in high dimension)
-----------------------------------------------------------
Each example is a two-token sequence ``X = [x_1; x_2]`` (2 x d) with label
``y in {-1, +1}`` (uniform): the signal token ``x_1 = y mu`` with ``mu = ||mu|| e_1`` and
the noise token ``x_2 = xi``, an ``s``-sparse Gaussian vector (``s`` coordinates drawn
uniformly without replacement from ``{2, ..., d}``, iid ``N(0, sigma_p^2)`` values).
``d = 2000``, ``n = 20`` training examples, ``s = 100``, ``sigma_p = 1``, ``||mu|| = 2``,
2000 (quick: 1000) test examples.  (The paper's exact constants are not reproduced;
these are chosen so that one noise token carries more energy than the signal, ``s sigma_p^2 = 100 >
||mu||^2 = 4``, while the signal summed over the training set does not,
``n ||mu||^2 = 80``: the regime where a gradient method's choice between signal and noise
matters.)

Model
-----
One softmax attention layer with separate query, key and value weights
``W_Q, W_K in R^{d x m_k}``, ``W_V in R^{d x m_v}`` (``m_k = m_v = 8``) and a fixed linear
read-out ``v in R^{m_v}`` (``+1/m_v`` on the first half, ``-1/m_v`` on the second, i.e.
the difference of two output heads as in the paper; not trained):

    S = (X W_Q)(X W_K)^T,  A = softmax_rows(S),  f(X) = 1/2 sum_l (A X W_V v)_l,

logistic loss ``log(1 + exp(-y f))`` averaged over the training set.  Forward and backward
by hand (:func:`loss_and_grad`, checked against finite differences in the tests); all
weights are one flat parameter vector, initialised iid ``N(0, 0.01^2)``.

Training (full batch, ``simulators.optimizers``): SignGD (lr 1e-3), Adam (lr 1e-3, betas
0.9/0.999, eps 1e-8) and GD (lr 0.2, the same data, hence the same signal-to-noise ratio;
its step is chosen so that its training loss also falls within the budget) for 400
(quick) / 2000 (full) steps, 2 (quick) / 5 (full) seeds.  Step sizes are not tuned
further.

Measured along training (logged steps): training and test loss, test accuracy, and the
mean attention score ``A_21`` from the noise token to the signal token on the training
set (starts near 1/2).  Also: the fraction of entries of the weight change ``W_T - W_0``
on which Adam and SignGD agree in sign.

Claims
------
1. SignGD: the training loss falls below 0.05 while the test loss stays of order one
   (>= 0.3) -- the noise is memorised;
2. Adam behaves like SignGD: training loss < 0.05, test loss >= 0.3;
3. GD on the same data generalises at least as well: its final test loss is at most
   SignGD's, and its test accuracy at least SignGD's;
reported: ``A_21`` over time (the paper finds it decays to ~0 under SignGD: the noise
token ends up attending to itself).
"""

from __future__ import annotations

import numpy as np

from simulators.optimizers import make_optimizer

from ._common import Timer, check_budget, figure, mean_se, write_summary

NAME = "signgd-transformer"
METHODS = {"signgd": 1e-3, "adam": 1e-3, "gd": 0.2}


def settings(budget):
    full = budget == "full"
    return {"d": 2000, "n": 20, "n_test": 2000 if full else 1000, "s": 100, "sigma_p": 1.0,
            "mu_norm": 2.0,
            "m_k": 8, "m_v": 8, "init_std": 0.01, "steps": 2000 if full else 400,
            "seeds": 5 if full else 2, "lrs": METHODS,
            "log_points": 30 if full else 24}


# ----------------------------------------------------------------------------- data


def sample_data(rng, n, d, s, sigma_p, mu_norm):
    """``X`` (n, 2, d) and labels ``y`` (n,) of the signal + sparse-noise model."""
    y = rng.choice([-1.0, 1.0], size=n)
    X = np.zeros((n, 2, d))
    X[:, 0, 0] = y * mu_norm
    for i in range(n):
        idx = 1 + rng.choice(d - 1, size=s, replace=False)
        X[i, 1, idx] = sigma_p * rng.standard_normal(s)
    return X, y


# ---------------------------------------------------------------------------- model


class Shapes:
    def __init__(self, d, m_k, m_v):
        self.d, self.m_k, self.m_v = d, m_k, m_v
        self.size = d * (2 * m_k + m_v)
        self.readout = np.concatenate([np.full(m_v // 2, 1.0), np.full(m_v - m_v // 2, -1.0)])
        self.readout /= m_v

    def unpack(self, w):
        d, mk, mv = self.d, self.m_k, self.m_v
        return (w[: d * mk].reshape(d, mk), w[d * mk: 2 * d * mk].reshape(d, mk),
                w[2 * d * mk:].reshape(d, mv))


def forward(w, X, shp: Shapes):
    """Outputs ``f`` (n,) and attention ``A`` (n, 2, 2) plus intermediates."""
    WQ, WK, WV = shp.unpack(w)
    Q, K = X @ WQ, X @ WK  # (n, 2, m)
    S = Q @ np.swapaxes(K, 1, 2)
    S = S - S.max(axis=2, keepdims=True)
    A = np.exp(S)
    A /= A.sum(axis=2, keepdims=True)
    u = X @ (WV @ shp.readout)  # (n, 2): value of each token along the read-out
    f = 0.5 * np.einsum("nlj,nj->n", A, u)
    return f, A, (Q, K, u)


def logistic(z):
    """``log(1 + exp(-z))``, stable."""
    return np.logaddexp(0.0, -z)


def loss_and_grad(w, X, y, shp: Shapes):
    """Mean logistic loss and its gradient (flat, same layout as ``w``)."""
    n = X.shape[0]
    f, A, (Q, K, u) = forward(w, X, shp)
    loss = float(logistic(y * f).mean())
    c = -y * 0.5 * (1.0 - np.tanh(0.5 * y * f)) / n  # dloss/df = -y sigmoid(-y f) / n
    dA = 0.5 * c[:, None, None] * u[:, None, :]  # d f/dA_lj = u_j / 2
    du = 0.5 * c[:, None] * A.sum(axis=1)  # d f/du_j = sum_l A_lj / 2
    dS = A * (dA - (dA * A).sum(axis=2, keepdims=True))
    dQ = dS @ K
    dK = np.swapaxes(dS, 1, 2) @ Q
    Xf = X.reshape(-1, X.shape[2])
    gQ = Xf.T @ dQ.reshape(-1, dQ.shape[2])
    gK = Xf.T @ dK.reshape(-1, dK.shape[2])
    gV = np.outer(Xf.T @ du.reshape(-1), shp.readout)
    return loss, np.concatenate([gQ.ravel(), gK.ravel(), gV.ravel()])


def evaluate(w, X, y, shp):
    f, A, _ = forward(w, X, shp)
    return {"loss": float(logistic(y * f).mean()), "accuracy": float(np.mean(y * f > 0)),
            "attn_noise_to_signal": float(A[:, 1, 0].mean()),
            "attn_signal_to_signal": float(A[:, 0, 0].mean())}


def log_schedule(steps, points):
    pts = np.unique(np.round(np.geomspace(1, steps, points)).astype(int))
    return sorted({0, steps} | set(pts.tolist()))


def train(method, lr, w0, X, y, Xt, yt, shp, steps, log_steps):
    opt = make_optimizer(method, lr)
    w = w0
    hist = []
    for t in range(steps + 1):
        loss, g = loss_and_grad(w, X, y, shp)
        if t in log_steps:
            tr = evaluate(w, X, y, shp)
            te = evaluate(w, Xt, yt, shp)
            hist.append({"step": t, "train_loss": loss, "train_accuracy": tr["accuracy"],
                         "test_loss": te["loss"], "test_accuracy": te["accuracy"],
                         "attn_noise_to_signal": tr["attn_noise_to_signal"],
                         "attn_signal_to_signal": tr["attn_signal_to_signal"]})
        if t == steps:
            break
        w = opt.step(w, g)
    return w, hist


def run(budget="quick", output_dir=".", seed=0) -> dict:
    check_budget(budget)
    timer = Timer()
    st = settings(budget)
    shp = Shapes(st["d"], st["m_k"], st["m_v"])
    log_steps = set(log_schedule(st["steps"], st["log_points"]))
    hists = {m: [] for m in METHODS}
    sign_agree = []
    for s in range(st["seeds"]):
        rng = np.random.default_rng([seed, 8, s])
        X, y = sample_data(rng, st["n"], st["d"], st["s"], st["sigma_p"], st["mu_norm"])
        Xt, yt = sample_data(rng, st["n_test"], st["d"], st["s"], st["sigma_p"],
                             st["mu_norm"])
        w0 = st["init_std"] * rng.standard_normal(shp.size)
        finals = {}
        for m, lr in METHODS.items():
            w, h = train(m, lr, w0, X, y, Xt, yt, shp, st["steps"], log_steps)
            hists[m].append(h)
            finals[m] = w - w0
        moved = (finals["signgd"] != 0) | (finals["adam"] != 0)
        sign_agree.append(float(np.mean(np.sign(finals["signgd"][moved])
                                        == np.sign(finals["adam"][moved]))))
    steps = [r["step"] for r in hists["signgd"][0]]
    keys = ("train_loss", "test_loss", "test_accuracy", "train_accuracy",
            "attn_noise_to_signal", "attn_signal_to_signal")
    results = {}
    for m in METHODS:
        res = {"lr": METHODS[m]}
        for k in keys:
            arr = np.array([[r[k] for r in h] for h in hists[m]])
            mean, se = mean_se(arr)
            res[k] = {"mean": mean.tolist(), "stderr": se.tolist()}
            res[f"final_{k}"] = float(mean[-1])
        tl = np.array(res["train_loss"]["mean"])
        below = np.nonzero(tl < 0.05)[0]
        res["first_logged_step_train_loss_below_0.05"] = int(steps[below[0]]) if len(below) \
            else None
        results[m] = res
    results["sign_agreement_adam_vs_signgd"] = {"mean": float(np.mean(sign_agree)),
                                                "per_seed": sign_agree}
    r = results
    claims = {
        "signgd_fast_train_but_test_loss_order_one": {
            "holds": r["signgd"]["final_train_loss"] < 0.05
            and r["signgd"]["final_test_loss"] >= 0.3,
            "final_train_loss": r["signgd"]["final_train_loss"],
            "final_test_loss": r["signgd"]["final_test_loss"],
            "final_test_accuracy": r["signgd"]["final_test_accuracy"],
            "first_logged_step_train_loss_below_0.05":
                r["signgd"]["first_logged_step_train_loss_below_0.05"]},
        "adam_like_signgd": {
            "holds": r["adam"]["final_train_loss"] < 0.05 and r["adam"]["final_test_loss"] >= 0.3,
            "final_train_loss": r["adam"]["final_train_loss"],
            "final_test_loss": r["adam"]["final_test_loss"],
            "final_test_accuracy": r["adam"]["final_test_accuracy"],
            "sign_agreement_of_weight_change": r["sign_agreement_adam_vs_signgd"]["mean"]},
        "gd_generalises_at_least_as_well": {
            "holds": r["gd"]["final_test_loss"] <= r["signgd"]["final_test_loss"]
            and r["gd"]["final_test_accuracy"] >= r["signgd"]["final_test_accuracy"],
            "final_test_loss": {m: r[m]["final_test_loss"] for m in METHODS},
            "final_test_accuracy": {m: r[m]["final_test_accuracy"] for m in METHODS},
            "final_train_loss": {m: r[m]["final_train_loss"] for m in METHODS}},
        "reported_attention_noise_to_signal": {
            "holds": r["signgd"]["final_attn_noise_to_signal"] < 0.1,
            "initial": {m: r[m]["attn_noise_to_signal"]["mean"][0] for m in METHODS},
            "final": {m: r[m]["final_attn_noise_to_signal"] for m in METHODS}},
    }

    x = np.maximum(steps, 1)
    with figure(output_dir, NAME, ncols=3) as axes:
        for m in METHODS:
            (ln,) = axes[0].loglog(x, r[m]["train_loss"]["mean"], label=f"{m} train")
            axes[0].loglog(x, r[m]["test_loss"]["mean"], "--", color=ln.get_color(),
                           label=f"{m} test")
            axes[1].semilogx(x, r[m]["test_accuracy"]["mean"], label=m)
            axes[2].semilogx(x, r[m]["attn_noise_to_signal"]["mean"], label=m)
        axes[0].set(xlabel="step", ylabel="logistic loss", title="train (solid), test (dashed)")
        axes[1].set(xlabel="step", ylabel="test accuracy", title="generalisation")
        axes[2].set(xlabel="step", ylabel=r"mean $A_{21}$",
                    title=r"attention noise $\to$ signal")
        for ax in axes:
            ax.legend()
    summary = {"experiment": NAME, "budget": budget, "seed": seed,
               "settings": {**st, "readout": "+-1/m_v halves (fixed)"},
               "logged_steps": steps, "results": results, "claims": claims,
               "wall_s": timer()}
    return write_summary(output_dir, summary)
