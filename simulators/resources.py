"""Memory estimates of the simulators (AMP, training), checked before any work.

The limit and the error are those of :mod:`asymptotics.resources` (:func:`check_memory`,
:class:`ResourceError`, ``SMI_MEMORY_LIMIT_GB``).  Notation: ``D`` input dimension,
``N = round(αD)`` training sequences, ``T = n_test``, ``L`` tokens, ``p`` columns of the
weights, ``B = min(4096, N)`` sequences per drawn block (:func:`simulators.data.sample_sequences`).

AMP (:func:`amp_bytes`), float64:
    ``8·[(N + T + B)·L·D + 6·D·p + N·(6Lp + post + 3Lp² + 4L²) + T·(Lp + 6L²)] + inner``
    the sequences ``X`` and ``X_test`` dominate; ``post`` is the channel's per-sample
    posterior (attention: log-norm, mean and second moments on both inner weight sets,
    ``2(1 + Lp + (Lp)²)``); ``6Lp``: ω, g, the damped g, the mean and its error, the
    Onsager term; ``3Lp²``: the token covariances; ``4L²``: labels and their fibre
    statistic; ``inner``: the attention inner rule.
Training (:func:`training_bytes`), in the config's dtype (4 or 8 bytes):
    ``s·[(N + T + B + b)·L·D + 10·D·p + n·(depth(3L² + rL) + 8L² + 2Lp) + T·(4L² + Lp)
    + (N + T)·L²]``, ``b`` the mini-batch (0 for full batch; its rows of ``X`` are
    copied), ``n`` the batch size (``N`` for full batch): the forward pass keeps per layer
    the softmax, the mixer and the scores, the backward pass ~8 ``L×L`` arrays per sample;
    ``10·D·p``: teacher, start, weights, gradient and optimizer state.
"""

from __future__ import annotations

from asymptotics.checks import check_int, check_number
from asymptotics.resources import FLOAT, channel_inner_bytes, channel_shape, check_memory

from .amp import AMPConfig
from .attention_training import TrainConfig

BLOCK = 4096  # simulators.data.sample_sequences: sequences per drawn chunk


def amp_bytes(channel, config: AMPConfig) -> int:
    """Peak memory of one :func:`simulators.amp.run_amp` of ``channel`` (a Channel or
    make_channel keyword arguments) with ``config``."""
    sh = channel_shape(channel)
    L, p, D = sh.seq_len, sh.dim, config.dim
    lp = L * p
    N, T = config.n_samples, config.n_test
    post = sh.posterior_floats(2)
    floats = ((N + T + min(BLOCK, N)) * L * D + 6 * D * p
              + N * (6 * lp + post + 3 * L * p * p + 4 * L * L) + T * (lp + 6 * L * L))
    return FLOAT * floats + channel_inner_bytes(sh)


def training_bytes(config: TrainConfig, n_train: int | None = None) -> int:
    """Peak memory of one :func:`simulators.attention_training.train_run` with ``config``
    (``n_train`` training sequences, default ``config.n_train``; a sweep over α needs its
    largest)."""
    a = config.arch
    L, r, depth = a.seq_len, a.rank, a.depth
    p = depth * r
    D = config.dim
    N = config.n_train if n_train is None else check_int("n_train", n_train, 1)
    T = config.n_test
    s = 4 if config.dtype == "float32" else 8
    mini = config.batch is not None and config.batch < N
    n = config.batch if mini else N
    b = config.batch if mini else 0
    floats = ((N + T + min(BLOCK, max(N, T)) + b) * L * D + 10 * D * p
              + n * (depth * (3 * L * L + r * L) + 8 * L * L + 2 * L * p)
              + T * (4 * L * L + L * p) + (N + T) * L * L)
    return s * floats


def check_amp(channel, config: AMPConfig, limit_bytes: float | None = None) -> int:
    """Refuse an AMP run (``channel``: a Channel or make_channel keyword arguments) whose
    estimate exceeds the limit: :class:`~asymptotics.checks.ResourceError`, before any
    work.  Returns the estimate in bytes (per run; ``w`` parallel workers need ``w``
    times it)."""
    config.check_fields()
    est = amp_bytes(channel, config)
    check_memory(est, f"AMP at D = {config.dim} (N = {config.n_samples} sequences)",
                 limit_bytes)
    return est


def check_training(config: TrainConfig, alphas=None, limit_bytes: float | None = None) -> int:
    """Refuse a training run whose estimate exceeds the limit (with ``alphas``: the
    largest α of a sweep): :class:`~asymptotics.checks.ResourceError`, before any work.
    Returns the estimate in bytes (per run)."""
    config.validate()
    n = config.n_train
    if alphas is not None:
        alphas = list(alphas)
        for x in alphas:
            check_number("alpha", x, above=0)
        n = max([1] + [max(1, int(round(x * config.dim))) for x in alphas])
    est = training_bytes(config, n)
    check_memory(est, f"training at D = {config.dim} (N = {n} sequences, {config.dtype})",
                 limit_bytes)
    return est


__all__ = ["amp_bytes", "check_amp", "check_training", "training_bytes"]
