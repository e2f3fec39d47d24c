"""``stochastic-quadratic``: sign vs. gradient descent on noisy quadratics.

Reproduces the toy study of Balles & Hennig, "Dissecting Adam: the sign, magnitude and
variance of stochastic gradients", ICML 2018 (arXiv:1705.07774), Sec. 3.

Problem
-------
``f(theta) = E_x 1/2 (theta - x)^T Q (theta - x)`` with ``x ~ N(x*, nu^2 I)``, dimension
``d = 100``.  Each step draws one ``x`` and uses the stochastic gradient
``g = Q (theta - x)``.  We report the *excess* loss ``1/2 (theta - x*)^T Q (theta - x*)``
(the expected loss minus its irreducible part ``nu^2 tr Q / 2``) after 100 steps.

- ``Q = diag(lambda)`` (axis-aligned) or ``Q = R diag(lambda) R^T`` with ``R`` a
  Haar-random rotation (QR of a Gaussian matrix, signs fixed);
- well-conditioned: ``lambda_i ~ U[0.1, 1.1]``; ill-conditioned: 90 % of the
  ``lambda_i ~ U[0, 1]`` and 10 % ``~ U[30, 60]`` (10 of the 100 eigenvalues);
- noise ``nu in {0, 0.1, 4}``.

Unknown in the paper and chosen here: ``x* ~ N(0, I)``, ``theta_0 = 0`` (so the initial
excess loss is ``tr Q / 2`` in expectation); one problem (spectrum, rotation, ``x*``) is
drawn per seed, shared by all optimizers and steps, and the gradient noise of seed ``s``
is the same stream for every optimizer and step size (common random numbers).

Optimizers (``simulators.optimizers``): SGD without momentum (``sgd``, momentum 0), SSD =
stochastic sign descent (``signgd``), M-SVAG (``msvag``, beta 0.9) and Adam (``adam``,
betas 0.9/0.999, eps 1e-8), all with a constant step.  Step-size grid: ``10^(k/3)``,
``k = -12..3`` (1e-4 .. 10, 16 values; ``full``: ``10^(k/4)``, ``k = -16..4``, 21 values).
The best step of each (optimizer, problem) minimises the final excess loss averaged over
the seeds (diverged runs count as +inf); the summary flags a best step on the grid edge.
Seeds: 8 (quick) / 40 (full).

Claims (Balles & Hennig, Sec. 3 / Fig. 2):

1. well-conditioned, no noise: SGD reaches a lower loss than SSD (diagonal and rotated);
2. ill-conditioned, axis-aligned, noisy (``nu = 0.1`` and ``nu = 4``): SSD beats SGD;
3. a random rotation removes SSD's advantage: on the rotated ill-conditioned problems
   with ``nu = 0.1`` (and ``nu = 0``) SSD is no better than SGD.  Reported separately
   for ``nu = 4`` (``rotation_removes_ssd_advantage_at_nu=4``), where we find that it does
   *not* hold: with that much noise (gradient noise ~ nu lambda ~ 200 on the large
   eigen-directions) every method ends near the noise floor of its best constant step,
   and SSD's bounded steps beat SGD's tiny admissible step in either basis.
"""

from __future__ import annotations

import itertools

import numpy as np

from simulators.optimizers import make_optimizer

from ._common import Timer, check_budget, figure, mean_se, write_summary

NAME = "stochastic-quadratic"
OPTIMIZERS = {  # label -> (registry name, momentum)
    "SGD": ("sgd", 0.0),
    "SSD": ("signgd", None),
    "M-SVAG": ("msvag", 0.9),
    "Adam": ("adam", None),
}
SPECTRA = ("well", "ill")
NOISES = (0.0, 0.1, 4.0)


def settings(budget):
    if budget == "full":
        return {"d": 100, "steps": 100, "seeds": 40, "lrs": [10 ** (k / 4) for k in range(-16, 5)]}
    return {"d": 100, "steps": 100, "seeds": 8, "lrs": [10 ** (k / 3) for k in range(-12, 4)]}


def spectrum(rng, d, kind):
    if kind == "well":
        return rng.uniform(0.1, 1.1, d)
    n_big = d // 10
    lam = np.concatenate([rng.uniform(0.0, 1.0, d - n_big), rng.uniform(30.0, 60.0, n_big)])
    return rng.permutation(lam)


def make_problems(seed, n_seeds, d, kind, rotated):
    """Per-seed ``Q`` (n_seeds, d, d; axis-aligned: eigenvalues (n_seeds, d)) and ``x*``."""
    rng = np.random.default_rng([seed, 1, SPECTRA.index(kind), int(rotated)])
    Qs, xs = [], []
    for _ in range(n_seeds):
        lam = spectrum(rng, d, kind)
        if rotated:
            Z = rng.standard_normal((d, d))
            R, T = np.linalg.qr(Z)
            R = R * np.sign(np.diag(T))
            Q = (R * lam) @ R.T
            Q = (Q + Q.T) / 2
        else:
            Q = lam  # eigenvalues only; see excess_loss / run_one
        Qs.append(Q)
        xs.append(rng.standard_normal(d))
    return np.array(Qs), np.array(xs)


def excess_loss(Q, xstar, theta):
    r = theta - xstar
    if Q.ndim == 2:  # diagonal: Q holds the eigenvalues (n_seeds, d)
        return 0.5 * np.sum(Q * r * r, axis=1)
    return 0.5 * np.einsum("si,sij,sj->s", r, Q, r)


def run_one(opt_label, lr, Q, xstar, nu, steps, noise_seed):
    """Final excess loss per seed (vectorised over seeds; +inf where diverged).

    ``Q`` is (n_seeds, d) eigenvalues for an axis-aligned problem, else (n_seeds, d, d).
    """
    name, momentum = OPTIMIZERS[opt_label]
    opt = make_optimizer(name, lr, momentum=momentum)
    rng = np.random.default_rng(noise_seed)
    S, d = xstar.shape
    theta = np.zeros((S, d))
    with np.errstate(over="ignore", invalid="ignore"):
        for _ in range(steps):
            r = theta - xstar
            if nu:
                r = r - nu * rng.standard_normal((S, d))
            g = Q * r if Q.ndim == 2 else np.matmul(Q, r[:, :, None])[:, :, 0]
            theta = opt.step(theta, g)
        final = excess_loss(Q, xstar, theta)
    final[~np.isfinite(final)] = np.inf
    return final


def run(budget="quick", output_dir=".", seed=0) -> dict:
    check_budget(budget)
    timer = Timer()
    st = settings(budget)
    d, steps, S, lrs = st["d"], st["steps"], st["seeds"], st["lrs"]
    table = {}
    for rotated, kind, nu in itertools.product((False, True), SPECTRA, NOISES):
        Q, xstar = make_problems(seed, S, d, kind, rotated)
        key = f"{'rotated' if rotated else 'diagonal'}/{kind}/nu={nu:g}"
        noise_seed = [seed, 2, int(rotated), SPECTRA.index(kind), NOISES.index(nu)]
        row = {}
        for label in OPTIMIZERS:
            means, finals = [], []
            for lr in lrs:
                final = run_one(label, lr, Q, xstar, nu, steps, noise_seed)
                means.append(float(np.mean(final)) if np.all(np.isfinite(final)) else np.inf)
                finals.append(final)
            i = int(np.argmin(means))
            m, se = mean_se(finals[i])
            row[label] = {
                "best_lr": lrs[i],
                "best_lr_on_grid_edge": i in (0, len(lrs) - 1),
                "final_loss_mean": float(m),
                "final_loss_stderr": float(se),
                "loss_vs_lr": means,
            }
        row["initial_loss_mean"] = float(np.mean(excess_loss(Q, xstar, np.zeros_like(xstar))))
        table[key] = row

    def L(rot, kind, nu, opt):
        return table[f"{rot}/{kind}/nu={nu:g}"][opt]["final_loss_mean"]

    c1 = {rot: {"SGD": L(rot, "well", 0.0, "SGD"), "SSD": L(rot, "well", 0.0, "SSD")}
          for rot in ("diagonal", "rotated")}
    c2 = {f"nu={nu:g}": {"SGD": L("diagonal", "ill", nu, "SGD"),
                         "SSD": L("diagonal", "ill", nu, "SSD")} for nu in (0.1, 4.0)}
    c3 = {f"nu={nu:g}": {"SGD": L("rotated", "ill", nu, "SGD"),
                         "SSD": L("rotated", "ill", nu, "SSD"),
                         "SSD/SGD axis-aligned": L("diagonal", "ill", nu, "SSD")
                         / L("diagonal", "ill", nu, "SGD"),
                         "SSD/SGD rotated": L("rotated", "ill", nu, "SSD")
                         / L("rotated", "ill", nu, "SGD")} for nu in NOISES}
    claims = {
        "well_conditioned_noiseless_sgd_beats_ssd": {
            "holds": all(v["SGD"] < v["SSD"] for v in c1.values()), "final_loss": c1},
        "ill_conditioned_axis_aligned_noisy_ssd_beats_sgd": {
            "holds": all(v["SSD"] < v["SGD"] for v in c2.values()), "final_loss": c2},
        "rotation_removes_ssd_advantage": {
            "holds": all(c3[k]["SSD"] >= c3[k]["SGD"] for k in ("nu=0", "nu=0.1")),
            "final_loss": {k: c3[k] for k in ("nu=0", "nu=0.1")}},
        "rotation_removes_ssd_advantage_at_nu=4": {
            "holds": c3["nu=4"]["SSD"] >= c3["nu=4"]["SGD"], "final_loss": c3["nu=4"]},
    }

    groups = [f"{k}\n$\\nu$={nu:g}" for k in SPECTRA for nu in NOISES]
    width = 0.8 / len(OPTIMIZERS)
    with figure(output_dir, NAME, ncols=2) as axes:
        for ax, rot in zip(axes, ("diagonal", "rotated"), strict=True):
            for j, label in enumerate(OPTIMIZERS):
                vals = [table[f"{rot}/{k}/nu={nu:g}"][label]["final_loss_mean"]
                        for k in SPECTRA for nu in NOISES]
                ax.bar(np.arange(len(groups)) + (j - 1.5) * width, vals, width, label=label)
            ax.set(yscale="log", title=f"{rot} $Q$: final excess loss (best step)",
                   ylabel=r"$\frac{1}{2}(\theta-x^*)^\top Q\,(\theta-x^*)$")
            ax.set_xticks(np.arange(len(groups)), groups)
            ax.legend()
    summary = {
        "experiment": NAME,
        "budget": budget,
        "seed": seed,
        "settings": {**st, "noises": NOISES, "spectra": {"well": "U[0.1,1.1]",
                     "ill": "90% U[0,1], 10% U[30,60]"}, "x_star": "N(0, I)",
                     "theta_0": 0.0, "optimizers": {k: {"name": v[0], "momentum": v[1]}
                                                    for k, v in OPTIMIZERS.items()}},
        "results": table,
        "claims": claims,
        "wall_s": timer(),
    }
    return write_summary(output_dir, summary)
