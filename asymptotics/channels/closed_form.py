"""Channels with closed-form (or one-dimensional) posteriors, used to validate the engine.

All have L = 1 token.  Scalar channels (p = 1): linear ``y = z + sqrt(Δ) ξ``, phase
retrieval ``y = z²`` and ``y = sign(z)``.  Two-direction channels (p = 2):
``y = sign(z1 z2)`` and ``y = z1 z2``.
"""

from __future__ import annotations

import numpy as np
from scipy.special import log_ndtr, ndtr

from ..checks import check_int, check_number
from .base import LOG_2PI, Channel, Posterior, check_variance, second_from_token_moments


def _mills(x: np.ndarray) -> np.ndarray:
    """φ(x)/Φ(x), computed in log space (stable for x -> -inf)."""
    return np.exp(-0.5 * x**2 - 0.5 * LOG_2PI - log_ndtr(x))


def _scalar(omega: np.ndarray, V: np.ndarray) -> tuple[np.ndarray, float]:
    V = check_variance(V, 1)
    return omega[..., 0, 0], float(V[0, 0])


def _pack_scalar(log_norm, mean, var) -> Posterior:
    mean = mean[..., None, None]
    cov = np.asarray(var, dtype=float)[..., None, None, None] * np.ones_like(mean)[..., None]
    return Posterior(log_norm, mean, second_from_token_moments(mean, cov))


class LinearChannel(Channel):
    """``y = z + sqrt(Δ) ξ``: Gaussian posterior, ``Q̂ = α/(Δ + 1 - Q)`` (THEORY §6)."""

    name = "linear"
    noise_dim = 1

    def __init__(self, noise: float = 0.1):
        check_number("noise", noise, minimum=0)
        self.noise = float(noise)

    def forward(self, Z, noise=None):
        y = Z[..., 0, 0]
        if noise is not None and self.noise > 0:
            y = y + np.sqrt(self.noise) * noise[..., 0]
        return y

    def posterior(self, obs, omega, V):
        w, v = _scalar(omega, V)
        tot = v + self.noise
        log_norm = -0.5 * (obs - w) ** 2 / tot - 0.5 * (LOG_2PI + np.log(tot))
        mean = w + v / tot * (obs - w)
        var = np.full_like(mean, v * self.noise / tot)
        return _pack_scalar(log_norm, mean, var)

    def has_trivial_direction(self):
        return True

    def params(self):
        return {"noise": self.noise}


class PhaseRetrievalChannel(Channel):
    """``y = z²``: fibre ``z = ±sqrt(y)``; weak recovery at α_c = 1/2 (THEORY §6)."""

    name = "phase-retrieval"
    sign_symmetric = True

    def forward(self, Z, noise=None):
        return Z[..., 0, 0] ** 2

    def posterior(self, obs, omega, V):
        w, v = _scalar(omega, V)
        s = np.sqrt(obs)
        # weights ∝ N(±s; ω, v); Jacobian 1/(2 sqrt y) of the density of y included
        a = s * w / v
        log_norm = (
            -0.5 * (s**2 + w**2) / v
            + np.logaddexp(a, -a)
            - 0.5 * (LOG_2PI + np.log(v))
            - np.log(2.0 * s)
        )
        mean = s * np.tanh(a)
        var = obs - mean**2
        return _pack_scalar(log_norm, mean, var)


class SignChannel(Channel):
    """``y = sign(z)``: truncated Gaussian posterior; E[z | y] != 0 (trivial direction)."""

    name = "sign"
    discrete_outputs = np.array([-1.0, 1.0])

    def perfect_recovery_psi_out(self):
        return 0.0  # P(y | ω = z, V = 0) = 1 for the observed y

    def forward(self, Z, noise=None):
        return np.where(Z[..., 0, 0] >= 0, 1.0, -1.0)

    def posterior(self, obs, omega, V):
        w, v = _scalar(omega, V)
        sd = np.sqrt(v)
        x = obs * w / sd
        r = _mills(x)
        log_norm = log_ndtr(x)
        mean = w + obs * sd * r
        var = v * (1.0 - r * (x + r))
        return _pack_scalar(log_norm, mean, var)

    def has_trivial_direction(self):
        return True


def _legendre_half_line(n: int):
    x, w = np.polynomial.legendre.leggauss(n)
    return 0.5 * (x + 1.0), 0.5 * w  # on [0, 1]


class SignProductChannel(Channel):
    """``y = sign(z1 z2)`` (p = 2).  At Q = 0, ``G = y (2/π) [[0,1],[1,0]]``: α_c = π²/4.

    Posterior moments for any 2×2 ``V``: ``z2 | z1`` is Gaussian and truncated to
    ``sign(z2) = y sign(z1)`` exactly; the integral over each half-line of ``z1`` uses
    Gauss–Legendre (``nodes`` points on ``[0, |ω1| + 12 sqrt(V11)]``), with an embedded
    half-size rule as error estimate.
    """

    name = "sign-product"
    dim = 2
    sign_symmetric = True
    discrete_outputs = np.array([-1.0, 1.0])

    def __init__(self, nodes: int = 96):
        check_int("nodes", nodes, 2)
        self.nodes = int(nodes)

    def perfect_recovery_psi_out(self):
        return 0.0  # P(y | ω = z, V = 0) = 1 for the observed y

    def forward(self, Z, noise=None):
        return np.where(Z[..., 0, 0] * Z[..., 0, 1] >= 0, 1.0, -1.0)

    def _moments(self, obs, w1, w2, V, n):
        v11, v12, v22 = V[0, 0], V[0, 1], V[1, 1]
        c = v12 / v11
        s2 = v22 - c * v12
        s = np.sqrt(s2)
        u, wu = _legendre_half_line(n)
        acc = None
        for sigma1 in (1.0, -1.0):
            upper = np.abs(w1) + 12.0 * np.sqrt(v11)
            z1 = sigma1 * upper[..., None] * u  # (..., n)
            jac = upper[..., None] * wu
            dens1 = np.exp(-0.5 * (z1 - w1[..., None]) ** 2 / v11) / np.sqrt(2 * np.pi * v11)
            m = w2[..., None] + c * (z1 - w1[..., None])
            sig2 = obs[..., None] * sigma1  # required sign of z2
            x = sig2 * m / s
            P = ndtr(x)
            r = _mills(x)
            e2 = m + sig2 * s * r
            var2 = s2 * (1.0 - r * (x + r))
            wgt = jac * dens1 * P
            parts = np.stack(
                [wgt, wgt * z1, wgt * e2, wgt * z1**2, wgt * z1 * e2, wgt * (var2 + e2**2)]
            ).sum(axis=-1)
            acc = parts if acc is None else acc + parts
        return acc

    def posterior(self, obs, omega, V):
        V = check_variance(V, 2)
        w1, w2 = omega[..., 0, 0], omega[..., 0, 1]
        obs = np.broadcast_to(obs, w1.shape)
        acc = self._moments(obs, w1, w2, V, self.nodes)
        coarse = self._moments(obs, w1, w2, V, self.nodes // 2)
        Z = acc[0]
        mean = np.stack([acc[1] / Z, acc[2] / Z], axis=-1)[..., None, :]
        sec = (
            np.stack([np.stack([acc[3], acc[4]], -1), np.stack([acc[4], acc[5]], -1)], -2)
            / Z[..., None, None]
        )
        mean_c = np.stack([coarse[1] / coarse[0], coarse[2] / coarse[0]], axis=-1)[..., None, :]
        second = sec[..., None, :, None, :]
        return Posterior(np.log(Z), mean, second, error=np.abs(mean - mean_c))


class ProductChannel(Channel):
    """``y = z1 z2`` (p = 2): fibre ``z2 = y / z1``.

    With ``z1 = σ e^t`` the posterior density in ``t`` is ``N((σe^t, σ y e^{-t}); ω, V)``,
    smooth and doubly-exponentially decaying; a trapezoid rule on a per-sample interval
    (``nodes`` points, embedded half rule for the error) integrates it.
    """

    name = "product"
    dim = 2
    sign_symmetric = True

    def __init__(self, nodes: int = 401):
        check_int("nodes", nodes, 3)
        if nodes % 2 == 0:
            nodes += 1
        self.nodes = int(nodes)

    def forward(self, Z, noise=None):
        return Z[..., 0, 0] * Z[..., 0, 1]

    def output_grid(self, resolution: int = 0, nodes: int = 0, half_width: float = 0.0):
        """``y = ±e^s``, trapezoid in ``s`` on [-40, 5] (``nodes`` per sign, odd; default
        ``360·2^resolution + 1``): the log singularity of the density of ``y`` at 0 becomes
        an exponentially decaying tail.  The range is fixed: ``half_width`` must be 0."""
        if half_width:
            raise ValueError("the product channel's output grid has a fixed range "
                             "(half_width must be 0)")
        n = nodes + (1 - nodes % 2) if nodes else 360 * 2**resolution + 1
        s = np.linspace(-40.0, 5.0, n)
        h = s[1] - s[0]
        w = np.full(n, h) * np.exp(s)
        w_c = np.zeros(n)
        w_c[::2] = 2 * h * np.exp(s[::2])
        y = np.concatenate([np.exp(s), -np.exp(s)])
        W = np.vstack([np.concatenate([w, w]), np.concatenate([w_c, w_c])])
        return y, W, f"trapezoid in log|y|, {n} nodes per sign"

    def posterior(self, obs, omega, V):
        V = check_variance(V, 2)
        Vi = np.linalg.inv(V)
        w1, w2 = omega[..., 0, 0], omega[..., 0, 1]
        obs = np.broadcast_to(obs, w1.shape)
        b1 = np.abs(w1) + 12.0 * np.sqrt(V[0, 0])
        b2 = np.abs(w2) + 12.0 * np.sqrt(V[1, 1])
        ay = np.maximum(np.abs(obs), 1e-300)
        t_hi = np.log(b1)
        t_lo = np.log(ay / b2)
        t_lo = np.minimum(t_lo, t_hi - 1.0)
        grid = np.linspace(0.0, 1.0, self.nodes)
        t = t_lo[..., None] + (t_hi - t_lo)[..., None] * grid
        h = (t_hi - t_lo)[..., None] / (self.nodes - 1)
        tw = np.full(self.nodes, 1.0)
        tw[0] = tw[-1] = 0.5
        tw_c = np.zeros(self.nodes)
        tw_c[::2] = 2.0
        tw_c[0] = tw_c[-1] = 1.0
        logdet = np.log(np.linalg.det(V))
        out = []
        for weights in (tw, tw_c):
            acc = 0.0
            for sigma in (1.0, -1.0):
                z1 = sigma * np.exp(t)
                z2 = obs[..., None] / z1
                d1, d2 = z1 - w1[..., None], z2 - w2[..., None]
                q = Vi[0, 0] * d1**2 + 2 * Vi[0, 1] * d1 * d2 + Vi[1, 1] * d2**2
                dens = np.exp(-0.5 * q - LOG_2PI - 0.5 * logdet) * h * weights
                acc = acc + np.stack([dens, dens * z1, dens * z2, dens * z1**2, dens * z2**2])
            out.append(acc.sum(axis=-1))
        acc, coarse = out
        Z = acc[0]
        mean = np.stack([acc[1] / Z, acc[2] / Z], axis=-1)[..., None, :]
        e12 = obs
        sec = np.stack([np.stack([acc[3] / Z, e12], -1), np.stack([e12, acc[4] / Z], -1)], -2)
        mean_c = np.stack([coarse[1] / coarse[0], coarse[2] / coarse[0]], axis=-1)[..., None, :]
        return Posterior(np.log(Z), mean, sec[..., None, :, None, :], error=np.abs(mean - mean_c))
