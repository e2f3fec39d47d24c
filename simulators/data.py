"""The one data generator of the simulators: teacher, sequences, labels, test set, start.

For a seed, ``numpy.random.SeedSequence(seed).spawn`` gives one independent generator per
stream of :data:`STREAMS`:

    teacher   W* ∈ R^{D×p}, iid N(0, 1)
    train     X ∈ R^{N×L×D}, iid N(0, 1)
    test      X_test ∈ R^{n_test×L×D}, iid N(0, 1)
    init      W_0 = init_std · G, G ∈ R^{D×p} iid N(0, 1)
    batch     mini-batch order (used by the optimizer loop, not here)
    noise     label noise: y = channel.sample(X W*/√D, noise stream)

and ``y_test = channel.forward(X_test W*/√D)`` (noiseless).  Each stream depends on the seed
only, so the same seed gives the same teacher and data to AMP and to training, the data do
not depend on the algorithm run on them, and the first ``N`` training pairs are the same
for every ``N`` (sweeps over α are nested).

Numbers are drawn on the host and copied into the array namespace ``xp`` (numpy or cupy),
so both back-ends see the same data for a seed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from asymptotics.backend import to_numpy

__all__ = [
    "STREAMS",
    "LabelMap",
    "TeacherData",
    "project",
    "project_transpose",
    "sample_sequences",
    "seed_streams",
    "teacher_data",
]

#: the independent streams of one seed, in ``SeedSequence.spawn`` order
STREAMS = ("teacher", "train", "test", "init", "batch", "noise")


def seed_streams(seed: int) -> dict[str, np.random.Generator]:
    """One generator per name of :data:`STREAMS`, from ``SeedSequence(seed).spawn``."""
    children = np.random.SeedSequence(seed).spawn(len(STREAMS))
    return {name: np.random.default_rng(s) for name, s in zip(STREAMS, children, strict=True)}


def sample_sequences(rng: np.random.Generator, n: int, L: int, D: int, xp=np,
                     dtype=np.float64, chunk: int = 4096):
    """``n`` iid N(0,1) sequences ``(n, L, D)``, drawn on the host by ``rng``.

    Drawn in chunks of ``chunk`` sequences, in order, so the numbers are the same for numpy
    and cupy (and the same as one big draw) for a given seed.  numpy: each chunk is drawn
    straight into the output (``standard_normal(out=...)``); another ``xp``: into one host
    buffer, reused, then copied to the device.  A fresh array per chunk cost as much again
    as the drawing (its pages are zeroed by the kernel on first touch, then copied).
    """
    dtype = np.dtype(dtype)
    out = xp.empty((n, L, D), dtype=dtype)
    block = None if xp is np else np.empty((min(chunk, n), L, D), dtype=dtype)
    for start in range(0, n, chunk):
        m = min(chunk, n - start)
        if block is None:
            rng.standard_normal(dtype=dtype, out=out[start : start + m])
        else:
            rng.standard_normal(dtype=dtype, out=block[:m])
            out[start : start + m] = xp.asarray(block[:m])
    return out


def project(X, W):
    """``S = X W / sqrt(D)`` for ``X`` of shape ``(n, L, D)``: one large product."""
    n, L, D = X.shape
    return (X.reshape(n * L, D) @ W).reshape(n, L, W.shape[1]) * (1.0 / math.sqrt(D))


def project_transpose(X, dS):
    """``X^T dS / sqrt(D)`` (``D x p``): the second large product."""
    n, L, D = X.shape
    return (X.reshape(n * L, D).T @ dS.reshape(n * L, dS.shape[-1])) * (1.0 / math.sqrt(D))


class LabelMap(Protocol):
    """What labels the data: a :class:`asymptotics.channels.base.Channel` or a network.

    ``seq_len`` = L, ``dim`` = p (columns of ``W*``); ``sample(Z, rng)`` draws
    ``y ~ P_out(·|Z)`` and ``forward(Z)`` is the noiseless map, for ``Z`` of shape
    ``(n, L, p)``.
    """

    seq_len: int
    dim: int

    def sample(self, Z, rng: np.random.Generator): ...

    def forward(self, Z, noise=None): ...


@dataclass
class TeacherData:
    """Teacher, training pairs, test pairs and student start of one seed.

    Arrays are in the namespace ``xp`` of :func:`teacher_data`, except the labels ``y`` and
    ``y_test``, which are on the host when it was called with ``host_labels=True``.
    """

    W_star: object  # (D, p)
    X: object  # (N, L, D)
    y: object  # (N, ...) labels of X
    X_test: object  # (n_test, L, D)
    y_test: object  # (n_test, ...) noiseless labels of X_test
    W0: object  # (D, p) start of the student

    def head(self, n: int) -> TeacherData:
        """The same data with the first ``n`` training pairs only."""
        return TeacherData(self.W_star, self.X[:n], self.y[:n], self.X_test, self.y_test,
                           self.W0)


def teacher_data(labels: LabelMap, seed: int, dim: int, n_train: int, n_test: int, *,
                 init_std: float = 0.0, xp=np, dtype="float64",
                 host_labels: bool = False) -> TeacherData:
    """Draw the data of ``seed`` (module docstring): ``W*``, ``X``, ``y``, test set, ``W_0``.

    ``L = labels.seq_len`` and ``p = labels.dim``.  With ``host_labels`` the
    pre-activations ``Z = X W*/√D`` are copied to the host and labelled there (numpy-only
    channels); otherwise ``labels`` is applied in ``xp``.
    """
    dtype = np.dtype(dtype)
    L, p, D = labels.seq_len, labels.dim, dim
    rng = seed_streams(seed)
    W_star = xp.asarray(rng["teacher"].standard_normal((D, p), dtype=dtype))
    X = sample_sequences(rng["train"], n_train, L, D, xp, dtype)
    X_test = sample_sequences(rng["test"], n_test, L, D, xp, dtype)
    W0 = xp.asarray(init_std * rng["init"].standard_normal((D, p), dtype=dtype))
    Z, Z_test = project(X, W_star), project(X_test, W_star)
    if host_labels:
        Z, Z_test = to_numpy(Z), to_numpy(Z_test)
    y = labels.sample(Z, rng["noise"])
    y_test = labels.forward(Z_test)
    return TeacherData(W_star, X, y, X_test, y_test, W0)
