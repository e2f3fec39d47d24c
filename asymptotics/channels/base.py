"""Channel interface: forward map, sampling and posterior moments of Z given (y, ω, V).

Shapes: a batch of samples has leading axes ``...``; pre-activations ``Z`` are
``(..., L, p)`` (token l, direction k); ``omega`` likewise; ``V`` is ``(p, p)`` shared by
all tokens (THEORY.md §3).  Posterior moments are returned as a :class:`Posterior`.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np

from ..backend import to_numpy


@dataclass
class Posterior:
    """Moments of ``Z`` under ``P(Z | y) ∝ P_out(y|Z) Π_l N(z^(l); ω^(l), V)``.

    ``log_norm``: log Z_out(y; ω, V) up to a y-only constant, ``(...)``.
    ``mean``: E[z^(l)_k], ``(..., L, p)``.
    ``second``: E[z^(l)_k z^(l')_k'], ``(..., L, p, L, p)``.
    ``error``: optional error estimate of ``mean`` from the channel's own quadrature.
    """

    log_norm: np.ndarray
    mean: np.ndarray
    second: np.ndarray
    error: np.ndarray | None = None

    @property
    def token_covariance(self) -> np.ndarray:
        """Per-token posterior covariance Cov[z^(l) | y, ω, V], ``(..., L, p, p)``."""
        L = self.mean.shape[-2]
        idx = np.arange(L)
        sec = self.second[..., idx, :, idx, :]  # (L, ..., p, p) after fancy indexing
        sec = np.moveaxis(sec, 0, -3)
        m = self.mean
        return sec - m[..., :, None] * m[..., None, :]


DEVICES = ("cpu", "gpu")
CPU_KERNELS = ("numba", "array")  # compiled kernels, or the array path (the GPU code on numpy)
INNER_PATHS = ("auto", "shared", "general")


def check_device(device: str, cpu_kernel: str = "numba") -> None:
    """ValueError unless ``device`` is in :data:`DEVICES` and ``cpu_kernel`` in
    :data:`CPU_KERNELS`."""
    if device not in DEVICES:
        raise ValueError(f"device must be one of {DEVICES}, got {device!r}")
    if cpu_kernel not in CPU_KERNELS:
        raise ValueError(f"cpu_kernel must be one of {CPU_KERNELS}, got {cpu_kernel!r}")


@dataclass(frozen=True)
class Capabilities:
    """What a channel offers the algorithms beyond ``forward`` and ``posterior``.

    ``diagonal_overlaps``: ``Q`` stays diagonal under the SE map (a per-direction sign
    symmetry), so only the diagonal of ``Q̂`` is integrated.
    ``inner_paths``: the fibre integral has several node placements (:data:`INNER_PATHS`);
    a solve locks one with :meth:`Channel.choose_inner_path`.
    ``staircase``: restricted moments for the sequential staircase (``staircase.py``):
    the ``dim`` directions are layers, the last one observed; besides ``posterior_sets``
    with second moments (via ``state_evolution.outer_moments``) the staircase calls
    ``unlearned_inner_moments(obs, omega_last, v_last)`` (first layers unlearned).
    ``inner_rule``: the posterior integrates over an inner rule whose alternative weight
    sets give its error; :meth:`Channel.refined` refines it.
    ``control_variate``: the SE map may estimate ``Q̂`` from both Nishimori forms
    (``SESettings.control_variate``; ``posterior_sets`` gives second moments, or their
    diagonal with ``second="diagonal"``).  Declared where it was tested: an overlap at 0
    must have ``g ≡ 0`` there (each direction's own sign symmetry), else the fitted weight
    puts noise on the slope at ``Q = 0`` (the product channel's replicate maps lost their
    fixed point at α = 0.5).
    """

    diagonal_overlaps: bool = False
    inner_paths: bool = False
    staircase: bool = False
    inner_rule: bool = False
    control_variate: bool = False


@dataclass
class MomentSets:
    """Posterior moments on every weight set of the channel's inner rule (axis 0: the
    primary set first, then the alternatives that give its error; S = 1 for closed forms).

    ``log_norm (S, ...)``, ``mean (S, ..., L, p)``, ``second (S, ..., L, p, L, p)`` (NaN
    where not computed).
    """

    log_norm: np.ndarray
    mean: np.ndarray
    second: np.ndarray


class Channel(ABC):
    """An output channel ``y ~ P_out(· | Z)`` of a sequence multi-index model."""

    capabilities: Capabilities = Capabilities()

    name: str = "channel"
    seq_len: int = 1  # L
    dim: int = 1  # p
    noise_dim: int = 0  # Gaussian noise variables per sample used by `forward`
    #: finite set of output values, when the output is discrete (sum instead of integrate)
    discrete_outputs: np.ndarray | None = None

    @abstractmethod
    def forward(self, Z: np.ndarray, noise: np.ndarray | None = None) -> np.ndarray:
        """The output ``y = g(Z)`` (``noise`` of shape ``(..., noise_dim)`` when noisy)."""

    def sample(self, Z: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Draw ``y ~ P_out(· | Z)`` with a seeded generator."""
        noise = None
        if self.noise_dim:
            noise = rng.standard_normal(Z.shape[:-2] + (self.noise_dim,))
        return self.forward(Z, noise)

    def observe(self, Z: np.ndarray, noise: np.ndarray | None = None) -> np.ndarray:
        """What the posterior conditions on, computed from the teacher's ``Z``.

        Defaults to ``y`` itself; a deterministic channel may return an equivalent
        statistic (a bijective function of ``y``) that is computed more accurately.
        """
        return self.forward(Z, noise)

    def observation_from_output(self, y: np.ndarray) -> np.ndarray:
        """Map an output ``y`` (as produced by :meth:`forward`) to what :meth:`posterior` takes."""
        return y

    @abstractmethod
    def posterior(self, obs: np.ndarray, omega: np.ndarray, V: np.ndarray) -> Posterior:
        """Posterior moments of ``Z`` given the observation, ``omega`` and ``V``."""

    def posterior_on(self, obs, omega, V, device: str = "cpu", cpu_kernel: str = "numba"
                     ) -> Posterior:
        """:meth:`posterior` on ``device`` (closed forms: numpy on the host whatever the
        device; a channel with kernels of its own overrides this)."""
        check_device(device, cpu_kernel)
        return self.posterior(obs, to_numpy(omega), V)

    def mean_forward(self, omega: np.ndarray, offsets: np.ndarray, weights: np.ndarray):
        """``Σ_i w_i g(ω + offset_i)`` for every ``ω`` (noiseless forward map ``g``): the
        Bayes prediction ``E_{N(ω, V)} g(Z)`` on an inner rule (THEORY §4).

        omega (K, L, p); offsets (M, L, p); weights (M,).  Returns (K, *output shape)."""
        return np.tensordot(weights, self.forward(omega[None] + offsets[:, None]), axes=(0, 0))

    def output_grid(self, resolution: int = 0, nodes: int = 0, half_width: float = 0.0):
        """Optional deterministic rule over the observation for outer expectations
        (``nodes`` per axis and ``half_width`` override the defaults where not 0).

        Returns ``(obs_nodes, flat_weight_sets, description)`` such that
        ``E_y f = Σ_i w_i Z_out(obs_i; 0, I) f(obs_i)`` (the channel's own normaliser is the
        density), or ``None`` when the channel has none (then ``Z*`` is integrated).
        """
        return None

    #: E[Z | y] = 0 under the prior by a sign symmetry (so it is not tested numerically)
    sign_symmetric: bool = False

    def perfect_recovery_psi_out(self) -> float | None:
        """``lim_{Q -> I} E log Z_out`` when finite (noiseless discrete outputs: 0), else None."""
        return None

    def has_trivial_direction(self) -> bool:
        """Whether E[Z | y] != 0 under the prior (a direction learned at any α > 0)."""
        return False

    def params(self) -> dict:
        """Parameters that identify the channel (for result rows)."""
        return {}

    # ----------------------------------------------------------- what algorithms ask for
    def posterior_sets(
        self, obs, omega, V, *, device: str = "cpu", cpu_kernel: str = "numba",
        second: bool = True, inner_error: bool = True, inner_path: str = "auto",
    ) -> MomentSets:
        """:meth:`posterior` on every inner weight set (closed forms: one set, S = 1).

        ``second=False`` may skip the second moments, ``inner_error=False`` the alternative
        weight sets; ``inner_path`` is one of :data:`INNER_PATHS` where the channel
        declares ``capabilities.inner_paths``.
        """
        post = self.posterior(obs, omega, V)
        return MomentSets(post.log_norm[None], post.mean[None], post.second[None])

    def null_moment_sets(self, obs) -> tuple[MomentSets, str]:
        """Posterior moments at ``Q = 0`` (``ω = 0``, ``V = I``) for the weak-recovery
        operator (THEORY §5), and the error kind of the weight sets."""
        L, p = self.seq_len, self.dim
        post = self.posterior(obs, np.zeros(np.shape(obs) + (L, p)), np.eye(p))
        return MomentSets(post.log_norm[None], post.mean[None], post.second[None]), "embedded"

    def refined(self, resolution: int, seed: int = 0) -> Channel:
        """The channel with its inner rule refined ``resolution`` times (each doubling the
        nodes per axis) and seeded by ``seed``; a channel without an inner rule: itself."""
        return self

    @property
    def inner_description(self) -> str | None:
        """The inner rule, in words (None without one)."""
        return None

    def quadrature_dimension(self) -> int:
        """Dimension of the deterministic rule of the Q = 0 thresholds (0: always cheap)."""
        return 0

    def choose_inner_path(self, V) -> str:
        """The inner path a solve starting at ``V`` locks (``capabilities.inner_paths``)."""
        return "auto"

    def keep_inner_path(self, path: str, V) -> str:
        """The inner path a locked solve continues with at ``V`` (it may switch once)."""
        return path

    def describe(self) -> str:
        items = ", ".join(f"{k}={v}" for k, v in self.params().items())
        return f"{self.name}({items})"


def check_variance(V: np.ndarray, p: int) -> np.ndarray:
    """Validate a ``(p, p)`` covariance: finite, symmetric, positive definite."""
    V = np.asarray(V, dtype=float)
    if V.shape != (p, p):
        raise ValueError(f"V must have shape ({p}, {p}), got {V.shape}")
    if not np.all(np.isfinite(V)):
        raise ValueError("V has non-finite entries")
    if not np.allclose(V, V.T, rtol=1e-12, atol=1e-14):
        raise ValueError("V must be symmetric")
    if np.linalg.eigvalsh(V).min() <= 0:
        raise ValueError("V must be positive definite (Q must stay strictly below I)")
    return V


LOG_2PI = math.log(2.0 * math.pi)


def second_from_token_moments(mean: np.ndarray, cov: np.ndarray) -> np.ndarray:
    """Assemble ``(..., L, p, L, p)`` second moments of token-independent posteriors."""
    L = mean.shape[-2]
    second = mean[..., :, :, None, None] * mean[..., None, None, :, :]
    for l in range(L):
        second[..., l, :, l, :] += cov[..., l, :, :]
    return second
