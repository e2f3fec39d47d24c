"""``rotation-symmetry``: GD/SGD are equivariant under rotations of the input basis; Adam
and sign methods are not.

Claim
-----
Gradient methods act on the weights through linear combinations of gradients.  The deep
tied attention network sees its input only through ``S = X W / sqrt(D)``, so rotating the
input basis, ``X -> X R`` with ``R`` a D x D orthogonal matrix, and the weights,
``W -> R^T W``, leaves every output unchanged, and the gradient transforms as
``grad -> R^T grad``.  Hence GD and heavy-ball SGD (same mini-batches) started from
``R^T W_0`` follow ``R^T W_t`` exactly: the two loss curves agree to rounding (~1e-12).
Adam and sign descent act coordinate-wise (``sign(R^T g) != R^T sign(g)``), so on the
rotated problem they follow a different trajectory and the losses differ at order one
(relative to the loss).

Model and data (reused from :mod:`simulators.attention_training`)
-----------------------------------------------------------------
Teacher-student training of the depth-2, rank-1, L = 2, c = 1, beta = 1 tied attention
network, ``D = 64`` (quick) / ``128`` (full), ``alpha = N/D = 4``, iid N(0,1) inputs and
teacher, student init ``N(0, 0.1^2)``, squared loss on the last attention matrix, 2000
(quick 500) test sequences.  The rotated problem uses the *same* draws: ``X R``,
``X_test R``, teacher ``R^T W*``, init ``R^T W_0``, same labels and the same mini-batch
order; ``R`` is Haar-distributed (QR of a Gaussian matrix with the sign fix).

Optimizers and steps (``simulators.optimizers`` through ``train_run``): GD (lr 0.1 D),
SGD with momentum 0.9 on mini-batches of 32 (lr 0.005 D), Adam (lr 1e-2, betas 0.9/0.999),
SignGD (lr 1e-2), Signum (lr 1e-2, momentum 0.9); 150 (quick) / 1000 (full) steps.

(The GD/SGD steps are kept below the train CLI's defaults 0.5 D / 0.05 D: there the
dynamics are chaotic (edge of stability) and amplify the 1e-16 rounding differences of
the two bases -- to O(1) for SGD at 0.05 D, D = 64, within 150 steps, and to 1e-9 for GD
at 0.25 D, D = 128, within 1000 steps -- which would hide the exact symmetry behind a
numerical one; equivariance in exact arithmetic holds at any step size.)

Measured: the largest absolute difference of the full training loss between the two runs
over the logged steps, the same relative to the original loss, and the final weight
discrepancy ``||W_rot - R^T W|| / ||W||``.  Claim: equivariant methods (GD, SGD) agree to
``1e-10``; coordinate-wise methods (Adam, SignGD, Signum) differ by more than 1 % of the
loss (in practice much more).
"""

from __future__ import annotations

import numpy as np

from simulators.attention_training import (
    Architecture,
    Problem,
    TrainConfig,
    make_problem,
    train_run,
)

from ._common import Timer, check_budget, figure, write_summary

NAME = "rotation-symmetry"
EQUIVARIANT = ("gd", "sgd")
COORDINATEWISE = ("adam", "signgd", "signum")


def haar_orthogonal(rng: np.random.Generator, D: int) -> np.ndarray:
    """A Haar-distributed D x D orthogonal matrix (QR of a Gaussian, signs fixed)."""
    Z = rng.standard_normal((D, D))
    Q, R = np.linalg.qr(Z)
    return Q * np.sign(np.diag(R))


def rotate_problem(problem: Problem, R: np.ndarray) -> Problem:
    """The same problem in the rotated input basis: ``X R``, ``R^T W*``, ``R^T W_0``."""
    return Problem(
        W_star=R.T @ problem.W_star,
        X=problem.X @ R,
        y=problem.y,
        X_test=problem.X_test @ R,
        y_test=problem.y_test,
        W0=R.T @ problem.W0,
    )


def settings(budget):
    full = budget == "full"
    D = 128 if full else 64
    return {
        "dim": D,
        "alpha": 4.0,
        "steps": 1000 if full else 150,
        "n_test": 2000 if full else 500,
        "optimizers": {
            "gd": {"lr": 0.1 * D},
            "sgd": {"lr": 0.005 * D, "batch": 32, "momentum": 0.9},
            "adam": {"lr": 1e-2},
            "signgd": {"lr": 1e-2},
            "signum": {"lr": 1e-2, "momentum": 0.9},
        },
    }


def run(budget="quick", output_dir=".", seed=0) -> dict:
    check_budget(budget)
    timer = Timer()
    st = settings(budget)
    arch = Architecture(depth=2, seq_len=2, skip=1.0, beta=1.0, rank=1)
    base = TrainConfig(arch=arch, dim=st["dim"], alpha=st["alpha"],
                       steps=st["steps"], n_test=st["n_test"], log_points=40)
    problem = make_problem(base, seed)
    R = haar_orthogonal(np.random.default_rng([seed, 7]), st["dim"])
    rotated = rotate_problem(problem, R)
    results, curves = {}, {}
    for name, kw in st["optimizers"].items():
        cfg = TrainConfig(**{**base.__dict__, "optimizer": name, **kw})
        rec_a, res_a = train_run(cfg, seed, problem=problem)
        rec_b, res_b = train_run(cfg, seed, problem=rotated)
        if res_a["diverged"] or res_b["diverged"]:
            results[name] = {"diverged": True}
            continue
        steps = [r["step"] for r in rec_a]
        la = np.array([r["train_loss"] for r in rec_a])
        lb = np.array([r["train_loss"] for r in rec_b])
        ta = np.array([r["test_loss"] for r in rec_a])
        tb = np.array([r["test_loss"] for r in rec_b])
        W, Wr = res_a["W"], res_b["W"]
        results[name] = {
            "lr": cfg.lr,
            "batch": cfg.batch or "full",
            "final_train_loss": float(la[-1]),
            "final_train_loss_rotated": float(lb[-1]),
            "max_abs_train_loss_diff": float(np.max(np.abs(la - lb))),
            "max_rel_train_loss_diff": float(np.max(np.abs(la - lb) / np.abs(la))),
            "max_abs_test_loss_diff": float(np.max(np.abs(ta - tb))),
            "weight_discrepancy": float(np.linalg.norm(Wr - R.T @ W) / np.linalg.norm(W)),
        }
        curves[name] = (steps, la, lb)
    eq = {k: results[k].get("max_abs_train_loss_diff", np.inf) for k in EQUIVARIANT}
    cw = {k: results[k].get("max_rel_train_loss_diff", 0.0) for k in COORDINATEWISE}
    claims = {
        "gd_sgd_equivariant": {
            "holds": all(v <= 1e-10 for v in eq.values()),
            "max_abs_loss_diff": eq,
            "threshold": 1e-10,
        },
        "adam_sign_not_equivariant": {
            "holds": all(v >= 1e-2 for v in cw.values()),
            "max_rel_loss_diff": cw,
            "threshold": 1e-2,
        },
    }
    with figure(output_dir, NAME, ncols=2) as axes:
        ax = axes[0]
        for k, (steps, la, lb) in curves.items():
            (line,) = ax.plot(np.maximum(steps, 1), la, label=k)
            ax.plot(np.maximum(steps, 1), lb, "--", color=line.get_color())
        ax.set(xscale="log", xlabel="step", ylabel="training loss",
               title="solid: $X$, dashed: $XR$")
        ax.legend()
        ax = axes[1]
        for k, (steps, la, lb) in curves.items():
            ax.plot(np.maximum(steps, 1), np.abs(la - lb) + 1e-18, label=k)
        ax.set(xscale="log", yscale="log", xlabel="step",
               ylabel=r"$|\mathrm{loss}(X) - \mathrm{loss}(XR)|$",
               title="rotation (in)equivariance")
        ax.legend()
    summary = {
        "experiment": NAME,
        "budget": budget,
        "seed": seed,
        "settings": {**st, "depth": 2, "rank": 1, "seq_len": 2, "skip": 1.0, "beta": 1.0,
                     "init_scale": base.init_scale},
        "results": results,
        "claims": claims,
        "wall_s": timer(),
    }
    return write_summary(output_dir, summary)
