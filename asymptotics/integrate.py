"""Gaussian-expectation rules that always carry an error estimate.

A :class:`Rule` approximates ``E[f(t)]`` for ``t ~ N(0, I_d)`` (or ``∫ f`` over a box for a
flat trapezoid) by ``Σ_i w_i f(t_i)``.  Besides its primary weights it holds *alternative*
weight sets over the same nodes, from which the error of any functional is estimated:

* ``embedded``: one coarser rule on a subset of the nodes (trapezoid with step 2h, or a
  Sobol' net of half the size).  The error estimate is ``|F(w) - F(w_coarse)|``, which is an
  upper bound for exponentially convergent rules.
* ``replicates``: ``R`` disjoint batches of i.i.d. samples.  The error is the standard error
  ``std_r F(w_r) / sqrt(R)`` of the functional.

Estimating errors by recomputing the whole (possibly nonlinear) functional with the other
weight sets is what lets ratios such as posterior means carry honest error bars.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.special import ndtri

RULE_KINDS = ("trapezoid", "gauss-hermite", "sobol", "mc")


@dataclass(frozen=True)
class Estimate:
    """A number with its numerical error estimate."""

    value: float
    error: float
    method: str = ""

    def __iter__(self):
        yield self.value
        yield self.error

    def __format__(self, spec: str) -> str:
        spec = spec or ".6g"
        return f"{self.value:{spec}} ± {self.error:.1e}"


@dataclass(frozen=True)
class Rule:
    """Nodes ``points (n, d)``, primary ``weights (n,)`` and alternative weight sets."""

    points: np.ndarray
    weights: np.ndarray
    alt_weights: np.ndarray  # (R, n)
    error_kind: str  # "embedded" | "replicates"
    kind: str
    description: str = field(default="")

    @property
    def size(self) -> int:
        return self.points.shape[0]

    @property
    def dim(self) -> int:
        return self.points.shape[1]

    @property
    def weight_sets(self) -> np.ndarray:
        """``(1 + R, n)``: primary weights first, then the alternatives."""
        return np.vstack([self.weights[None, :], self.alt_weights])

    def error_from(self, values: np.ndarray) -> np.ndarray:
        """Error estimate of a functional evaluated on every weight set (axis 0)."""
        return combine_error(values, self.error_kind)

    def expect(self, f_values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``E[f]`` and its error from function values ``(n, ...)``."""
        vals = np.tensordot(self.weight_sets, f_values, axes=(1, 0))
        return vals[0], self.error_from(vals)


def combine_error(values: np.ndarray, error_kind: str) -> np.ndarray:
    """Error of ``values[0]`` given the functional on the alternative weight sets."""
    values = np.asarray(values)
    if error_kind == "embedded":
        return np.abs(values[0] - values[1])
    if error_kind == "replicates":
        reps = values[1:]
        return reps.std(axis=0, ddof=1) / np.sqrt(reps.shape[0])
    raise ValueError(f"unknown error kind {error_kind!r}")


def _tensor(points_1d: np.ndarray, w_1d: np.ndarray, d: int) -> tuple[np.ndarray, np.ndarray]:
    grids = np.meshgrid(*([points_1d] * d), indexing="ij")
    pts = np.stack([g.ravel() for g in grids], axis=-1)
    wgrids = np.meshgrid(*([w_1d] * d), indexing="ij")
    w = np.prod(np.stack([g.ravel() for g in wgrids], axis=-1), axis=-1)
    return pts, w


def trapezoid(d: int, n: int, half_width: float = 9.0, gaussian: bool = True) -> Rule:
    """Tensor trapezoid rule with ``n`` (odd) nodes per axis on ``[-half_width, half_width]``.

    With ``gaussian=True`` the weights include the standard normal density, so the rule
    approximates ``E[f(t)]``; otherwise it approximates ``∫ f(t) dt`` over the box.  The
    embedded rule takes every other node (step ``2h``).  For smooth integrands decaying
    like a Gaussian the error falls exponentially in ``1/h``.
    """
    if n < 3 or n % 2 == 0:
        raise ValueError(f"trapezoid needs an odd number of nodes >= 3, got {n}")
    t = np.linspace(-half_width, half_width, n)
    h = t[1] - t[0]
    w = np.full(n, h)
    w_c = np.zeros(n)
    w_c[::2] = 2.0 * h
    if gaussian:
        dens = np.exp(-0.5 * t**2) / np.sqrt(2.0 * np.pi)
        w = w * dens
        w_c = w_c * dens
    pts, wt = _tensor(t, w, d)
    _, wc = _tensor(t, w_c, d)
    return Rule(pts, wt, wc[None, :], "embedded", "trapezoid", f"trapezoid {n}^{d}, h={h:.3g}")


def gauss_hermite(d: int, n: int) -> Rule:
    """Tensor Gauss–Hermite rule for ``E[f(t)]``, ``t ~ N(0, I_d)``, with ``n`` nodes per axis.

    The error is estimated against the ``ceil(n/2)``-node rule, whose nodes are appended
    with zero primary weight.
    """
    if n < 2:
        raise ValueError("gauss_hermite needs n >= 2")
    x, w = np.polynomial.hermite_e.hermegauss(n)
    w = w / np.sqrt(2.0 * np.pi)
    xc, wc = np.polynomial.hermite_e.hermegauss((n + 1) // 2)
    wc = wc / np.sqrt(2.0 * np.pi)
    pts, wt = _tensor(x, w, d)
    pts_c, wt_c = _tensor(xc, wc, d)
    points = np.vstack([pts, pts_c])
    primary = np.concatenate([wt, np.zeros_like(wt_c)])
    alt = np.concatenate([np.zeros_like(wt), wt_c])
    return Rule(
        points, primary, alt[None, :], "embedded", "gauss-hermite", f"Gauss-Hermite {n}^{d}"
    )


def sobol(d: int, log2_n: int, seed: int = 0) -> Rule:
    """Scrambled Sobol' points mapped to ``N(0, I_d)`` by the inverse normal CDF.

    ``2**log2_n`` points, equal weights; the embedded rule is the first half of the
    sequence (itself a Sobol' net), so the error estimate is ``|F(n) - F(n/2)|``.
    """
    n = 2**log2_n
    (pts,) = sobol_nets(d, log2_n, 1, np.random.default_rng(seed))
    w = np.full(n, 1.0 / n)
    w_c = np.zeros(n)
    w_c[: n // 2] = 2.0 / n
    return Rule(
        pts, w, w_c[None, :], "embedded", "sobol", f"scrambled Sobol' 2^{log2_n} (seed {seed})"
    )


def sobol_nets(d: int, log2_n: int, count: int, rng: np.random.Generator) -> list[np.ndarray]:
    """``count`` independently scrambled Sobol' nets of ``2^log2_n`` points in ``d``
    dimensions, mapped to ``N(0, I_d)`` by the inverse normal CDF: ``(2^log2_n, d)`` each.

    The scrambles are drawn in order from ``rng``, which advances: successive calls on one
    generator give further independent nets (common random numbers for a fixed seed)."""
    from scipy.stats import qmc  # here: importing scipy.stats is half the package's import

    return [ndtri(qmc.Sobol(d, scramble=True, seed=rng).random_base2(log2_n))
            for _ in range(count)]


def monte_carlo(d: int, n: int, seed: int = 0, batches: int = 16) -> Rule:
    """Plain Monte Carlo, ``n`` i.i.d. ``N(0, I_d)`` samples from a seeded generator.

    The error is the batch-means standard error over ``batches`` disjoint batches.
    """
    if n < 2 * batches:
        raise ValueError(f"monte_carlo needs n >= 2*batches, got n={n}, batches={batches}")
    n = (n // batches) * batches
    pts = np.random.default_rng(seed).standard_normal((n, d))
    w = np.full(n, 1.0 / n)
    alt = np.zeros((batches, n))
    per = n // batches
    for b in range(batches):
        alt[b, b * per : (b + 1) * per] = 1.0 / per
    return Rule(
        pts, w, alt, "replicates", "mc", f"Monte Carlo {n} (seed {seed}, {batches} batches)"
    )


def point_rule(d: int) -> Rule:
    """The trivial rule with one node at the origin (dimension-0 integrals, ``d = 0``)."""
    return Rule(np.zeros((1, d)), np.ones(1), np.ones((1, 1)), "embedded", "point", "exact")


def rotated_product(u, wu, wu_c, w, wv, wv_c, gaussian: bool):
    """Nodes ``((u + w)/√2, (u - w)/√2)`` of the tensor product of two 1-D rules (sum axis
    ``u``, difference axis ``w``), with the primary and embedded weights multiplied out
    (times the standard normal density when ``gaussian``)."""
    U, Wd = np.meshgrid(u, w, indexing="ij")
    pts = np.stack([(U + Wd) / np.sqrt(2.0), (U - Wd) / np.sqrt(2.0)], axis=-1).reshape(-1, 2)
    wt = np.outer(wu, wv).ravel()
    wt_c = np.outer(wu_c, wv_c).ravel()
    if gaussian:
        dens = np.exp(-0.5 * (pts**2).sum(-1)) / (2.0 * np.pi)
        wt = wt * dens
        wt_c = wt_c * dens
    return pts, wt, wt_c


def sinh_trapezoid_2d(
    n_sum: int,
    n_diff: int,
    half_width_sum: float,
    half_width_diff: float,
    scale_diff: float,
    gaussian: bool,
) -> Rule:
    """2-D trapezoid in rotated coordinates with a sinh map across the diagonal.

    ``x = (u + w)/√2, (u - w)/√2`` with ``u`` uniform on ``[-R_u, R_u]`` and
    ``w = s sinh(v)``, ``v`` uniform on ``[-asinh(R_w/s), asinh(R_w/s)]``: nodes cluster
    within ``s`` of the diagonal ``x_0 = x_1``, where the attention integrands vary on the
    scale of the skip strength.  The map is analytic, so the trapezoid rule keeps its
    exponential convergence; the embedded rule takes every other node.
    """
    for n in (n_sum, n_diff):
        if n < 3 or n % 2 == 0:
            raise ValueError(f"sinh_trapezoid_2d needs odd node counts >= 3, got {n}")
    u = np.linspace(-half_width_sum, half_width_sum, n_sum)
    hu = u[1] - u[0]
    vmax = np.arcsinh(half_width_diff / scale_diff)
    v = np.linspace(-vmax, vmax, n_diff)
    hv = v[1] - v[0]
    w = scale_diff * np.sinh(v)
    jac = scale_diff * np.cosh(v)
    wu = np.full(n_sum, hu)
    wu_c = np.zeros(n_sum)
    wu_c[::2] = 2 * hu
    wv = hv * jac
    wv_c = np.zeros(n_diff)
    wv_c[::2] = 2 * hv * jac[::2]
    pts, wt, wt_c = rotated_product(u, wu, wu_c, w, wv, wv_c, gaussian)
    desc = f"sinh-trapezoid {n_sum}x{n_diff} (scale {scale_diff:.3g})"
    return Rule(pts, wt, wt_c[None, :], "embedded", "sinh-trapezoid", desc)


def sobol_replicates(d: int, log2_n: int, replicates: int = 8, seed: int = 0) -> Rule:
    """Randomised QMC: ``replicates`` independently scrambled Sobol' nets of ``2^log2_n``.

    The estimate averages all of them; the error is the standard error across replicates
    (each replicate is an unbiased estimate of the integral).
    """
    if replicates < 2:
        raise ValueError("sobol_replicates needs at least 2 replicates")
    n = 2**log2_n
    pts = np.vstack(sobol_nets(d, log2_n, replicates, np.random.default_rng(seed)))
    total = n * replicates
    w = np.full(total, 1.0 / total)
    alt = np.zeros((replicates, total))
    for r in range(replicates):
        alt[r, r * n : (r + 1) * n] = 1.0 / n
    desc = f"randomised QMC {replicates}x2^{log2_n} Sobol' (seed {seed})"
    return Rule(pts, w, alt, "replicates", "rqmc", desc)


def sinh_trapezoid(d: int, n: int, scales, half_width: float = 10.0) -> Rule:
    """Tensor Gaussian trapezoid with a sinh map per axis: ``t = s sinh(v)``.

    ``v`` uniform on ``[-asinh(R/s), asinh(R/s)]`` (``n`` odd nodes), weights include the
    standard normal density and the Jacobian ``s cosh(v)``.  Nodes cluster within ``s`` of
    0 on each axis, for integrands with structure of width ``s`` there (SE near perfect
    recovery: ``s = sqrt((1-q)/q)``).  Embedded rule: every other node.
    """
    if n < 3 or n % 2 == 0:
        raise ValueError(f"sinh_trapezoid needs an odd number of nodes >= 3, got {n}")
    scales = np.broadcast_to(np.asarray(scales, dtype=float), (d,))
    if np.any(scales <= 0):
        raise ValueError("sinh_trapezoid scales must be > 0")
    axes, w_axes, wc_axes = [], [], []
    for s in scales:
        vmax = np.arcsinh(half_width / s)
        v = np.linspace(-vmax, vmax, n)
        hv = v[1] - v[0]
        t = s * np.sinh(v)
        w = hv * s * np.cosh(v) * np.exp(-0.5 * t**2) / np.sqrt(2 * np.pi)
        wc = np.zeros(n)
        wc[::2] = 2 * w[::2]
        axes.append(t)
        w_axes.append(w)
        wc_axes.append(wc)
    grids = np.meshgrid(*axes, indexing="ij")
    pts = np.stack([g.ravel() for g in grids], axis=-1)
    w = np.prod(np.stack([g.ravel() for g in np.meshgrid(*w_axes, indexing="ij")], -1), -1)
    wc = np.prod(np.stack([g.ravel() for g in np.meshgrid(*wc_axes, indexing="ij")], -1), -1)
    desc = f"sinh-trapezoid {n}^{d} (scales {', '.join(f'{s:.2g}' for s in scales)})"
    return Rule(pts, w, wc[None, :], "embedded", "sinh-trapezoid", desc)
