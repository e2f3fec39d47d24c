"""Memory estimates of the library's tasks, checked before any work.

Each ``*_bytes`` function estimates the peak memory of one task from its settings, without
building anything: the dominant arrays the code allocates, counted in float64 (8 bytes)
unless noted.  ``check_*`` compares an estimate with the limit (:func:`memory_limit`) and
raises :class:`ResourceError` (a ``ValueError``) with one line,
``<what> needs about X GiB, more than the Y GiB available (<source>)``.  The estimates
are upper-end counts of the arrays alive together, not of every temporary: a task
accepted here may still run short when the machine is shared, but one refused here would
certainly not fit.  (The simulators' estimates, AMP and training, are in
:mod:`simulators.resources`.)

Notation: ``L`` tokens, ``p`` directions (attention: ``p = depth``), ``S = 2`` inner
weight sets (primary and embedded coarse rule), ``R`` replicate nets, ``K`` outer points,
``n_in`` inner points of the attention fibre rule (``d_in = (depth-1)·L`` dimensions).

Threshold (:func:`threshold_bytes`), Q = 0 operator:
    ``8·[K·(rows + d_out + L + S·(2(Lp)² + depth·L² + Lp + L + 1) + 3(Lp)²) + inner]``
    (``second`` and ``G = second - I`` per inner set, the layer blocks, the outer weight
    ``rows``, the einsum's copies), ``K`` from the output grid ``(48·2^r + 1)²`` (L = 2,
    quadrature), ``n^(Lp) + ⌈n/2⌉^(Lp)`` (Gauss–Hermite, ``n = 40·2^r``) or
    ``mc_batches·2^round(log2(mc_samples/mc_batches))`` (MC, ``rows = R + 1``); closed
    forms replace the attention moments by their per-sample posterior work.
Attention inner rule (:func:`inner_rule_bytes`):
    ``8·n_in·(2·d_in + L² + 4)`` (nodes, their contiguous copy, the precomputed mixers
    ``B⁻¹`` and weights), ``n_in = (48·2^r + 1)^d_in`` (``d_in <= 2``) or ``2^(12 + 2r)``.
SE (:func:`se_bytes`), one solve:
    ``8·[K·(9/8)·(d + 2R + 2) + K·(5Lp + L + S(1 + 2Lp + (Lp)² + p²)) + inner + gen]``,
    ``K = 2^sobol_log2`` (``R = 8``, ``d = 2Lp + noise``) or ``gh_nodes^d + ⌈gh_nodes/2⌉^d``
    (``d <= gh_max_dim``), discrete outputs ``discrete_nodes^p``; ``9/8``: the coarse
    multi-fidelity rule alive beside it; ``gen``: the generalisation errors' Gauss–Hermite
    inner rules ``2·Lp·(6^(Lp) + 3^(Lp) + 4^(Lp) + 2^(Lp))`` over the ``L·p``
    pre-activations; ``inner``: the attention inner rule, plus the chunked array path
    (``device='gpu'`` or ``cpu_kernel='array'``) ``6·2·10^6·(L² + Lp)``.
Staircase (:func:`staircase_bytes`): ``groups`` nets of ``K = 2^log2_points`` points in
    ``L(2·depth)`` dimensions, per point ``S((L·depth)² + depth·L² + L·depth) + 6·L·depth``
    at a time, plus the inner rule and the Q = 0 thresholds before it.

Sanity bounds of the exponential options (``resolution``, ``inner_resolution``,
``sobol_log2``, ``log2_points``): :mod:`asymptotics.checks`.  Sobol' nets have at most
:data:`MAX_SOBOL_DIM` dimensions (scipy's direction numbers).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

from .channels.attention import GRID_NODES, inner_rule_size
from .checks import MAX_RESOLUTION, ResourceError, check_int

GiB = 2**30
FLOAT = 8
MAX_SOBOL_DIM = 21201  # scipy.stats.qmc.Sobol.MAXDIM
LIMIT_ENV = "SMI_MEMORY_LIMIT_GB"

GH_BASE_NODES = 40  # thresholds: Gauss–Hermite nodes per axis at resolution 0
PRODUCT_GRID = 360  # ProductChannel.output_grid: nodes per sign at resolution 0
XP_CHUNK = 2_000_000  # AttentionChannel._fibre_xp: elements per chunk
CLOSED_FORM_WORK = 32  # floats per sample of a scalar closed-form posterior


def _gib(nbytes: float) -> str:
    v = nbytes / GiB
    if v < 10:
        return f"{v:.2g}"
    return f"{v:,.0f}" if v < 1e7 else f"{v:.2e}"


def memory_limit() -> tuple[int, str]:
    """``(bytes, source)``: the memory a task may use.

    ``SMI_MEMORY_LIMIT_GB`` (GiB, for tests and for sharing a machine) when set; else
    ``MemAvailable`` of ``/proc/meminfo``, what the kernel estimates can be allocated
    without swapping (free memory plus reclaimable caches, less what other processes
    hold), lowered to the cgroup's ``memory.max`` less its ``memory.current`` in a
    container that sets one: a task beyond that is killed or swaps however much physical
    memory the machine has.  Where ``/proc/meminfo`` is missing (macOS), the physical
    memory ``SC_PHYS_PAGES · SC_PAGE_SIZE``.
    """
    env = os.environ.get(LIMIT_ENV)
    if env:
        try:
            gb = float(env)
        except ValueError:
            gb = math.nan
        if not (math.isfinite(gb) and gb > 0):
            raise ValueError(f"{LIMIT_ENV} must be a number of GiB > 0, got {env!r}")
        return int(gb * GiB), LIMIT_ENV
    limit, source = None, ""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    limit, source = int(line.split()[1]) * 1024, "MemAvailable"
                    break
    except OSError:
        pass
    if limit is None:
        limit = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        source = "physical memory"
    try:
        with open("/sys/fs/cgroup/memory.max") as f:
            cap = f.read().strip()
        with open("/sys/fs/cgroup/memory.current") as f:
            used = int(f.read().strip())
        if cap != "max" and int(cap) - used < limit:
            limit, source = max(int(cap) - used, 0), "cgroup memory.max"
    except (OSError, ValueError):
        pass
    return limit, source


def check_memory(estimate_bytes: float, what: str, limit_bytes: float | None = None) -> float:
    """``estimate_bytes`` if it fits in ``limit_bytes`` (default :func:`memory_limit`),
    else :class:`ResourceError`: ``<what> needs about X GiB, more than the Y GiB available
    (<source>)``."""
    source = "given limit"
    if limit_bytes is None:
        limit_bytes, source = memory_limit()
    if estimate_bytes > limit_bytes:
        raise ResourceError(f"{what} needs about {_gib(estimate_bytes)} GiB, more than the "
                            f"{_gib(limit_bytes)} GiB available ({source})")
    return estimate_bytes


def check_sobol_dimension(d: int, what: str) -> None:
    """:class:`ResourceError` when a Sobol' net of ``d`` dimensions is beyond scipy's."""
    if d > MAX_SOBOL_DIM:
        raise ResourceError(f"{what} needs a Sobol' net of {d} dimensions, more than the "
                            f"{MAX_SOBOL_DIM} scipy supports")


# ------------------------------------------------------------------------ the channel


@dataclass(frozen=True)
class ChannelShape:
    """What the estimates need of a channel: its sizes, without building it."""

    model: str
    seq_len: int  # L
    dim: int  # p
    noise_dim: int = 0
    discrete: bool = False
    inner_points: int = 0  # attention inner rule: points and dimension
    inner_dim: int = 0
    nodes: int = 0  # closed forms with a per-sample rule (product, sign-product)
    has_output_grid: bool = False

    @property
    def attention(self) -> bool:
        return self.model == "attention"

    def posterior_floats(self, sets: int = 2) -> int:
        """Floats per sample of one posterior call (moments on every weight set)."""
        lp = self.seq_len * self.dim
        if self.attention:  # log_norm, mean, second (allocated even when not computed)
            return sets * (1 + lp + lp * lp)
        return CLOSED_FORM_WORK + 20 * self.nodes


_CLOSED = {  # model: (L, p, noise_dim, discrete, nodes, output grid)
    "linear": (1, 1, 1, False, 0, False),
    "phase-retrieval": (1, 1, 0, False, 0, False),
    "sign": (1, 1, 0, True, 0, False),
    "sign-product": (1, 2, 0, True, 96, False),
    "product": (1, 2, 0, False, 401, True),
}


def inner_rule_bytes(depth: int, seq_len: int, resolution: int = 0) -> int:
    """Memory of the attention inner rule and what the kernels precompute on it:
    ``8·n_in·(2·d_in + L² + 4)``."""
    n, d = inner_rule_size(depth, seq_len, resolution)
    return FLOAT * n * (2 * d + seq_len**2 + 4)


def check_inner_rule(depth: int, seq_len: int, resolution: int = 0,
                     limit_bytes: float | None = None) -> int:
    """:class:`ResourceError` before an attention inner rule too large to build: a Sobol'
    net beyond scipy's dimensions, or beyond the memory limit.  Returns the estimate."""
    check_int("depth", depth, 1)
    check_int("seq_len", seq_len, 2)
    check_int("inner_resolution", resolution, 0, MAX_RESOLUTION)
    n, d = inner_rule_size(depth, seq_len, resolution)
    if d > 2:
        check_sobol_dimension(d, f"the attention inner rule (depth {depth}, seq_len {seq_len})")
    est = inner_rule_bytes(depth, seq_len, resolution)
    check_memory(est, f"the attention inner rule (depth {depth}, seq_len {seq_len}, "
                      f"resolution {resolution}: {n} points)", limit_bytes)
    return est


def channel_shape(channel) -> ChannelShape:
    """The :class:`ChannelShape` of a Channel, or of the keyword arguments of
    :func:`asymptotics.channels.registry.make_channel` (a dict: nothing is built)."""
    if isinstance(channel, ChannelShape):
        return channel
    if isinstance(channel, dict):
        model = channel.get("model", "attention")
        if model == "attention":
            depth, L = channel.get("depth", 2), channel.get("seq_len", 2)
            check_int("depth", depth, 1)
            check_int("seq_len", L, 2)
            r = channel.get("inner_resolution", 0)
            check_int("inner_resolution", r, 0, MAX_RESOLUTION)
            n, d = inner_rule_size(depth, L, r)
            return ChannelShape("attention", L, depth, inner_points=n, inner_dim=d)
        if model == "link":  # parsing a link is cheap: take the shape of the channel
            from .channels.registry import make_channel

            return channel_shape(make_channel(**channel))
        if model not in _CLOSED:
            raise ValueError(f"model must be one of attention, {', '.join(_CLOSED)}, "
                             f"got {model!r} ({type(model).__name__})")
        L, p, noise, discrete, nodes, grid = _CLOSED[model]
        return ChannelShape(model, L, p, noise, discrete, nodes=nodes, has_output_grid=grid)
    rule = getattr(channel, "inner_rule", None)
    return ChannelShape(
        channel.name, channel.seq_len, channel.dim, channel.noise_dim,
        channel.discrete_outputs is not None,
        inner_points=rule.size if rule is not None else 0,
        inner_dim=rule.dim if rule is not None else 0,
        nodes=int(getattr(channel, "nodes", 0) or 0),
        has_output_grid=channel.name == "product"
        or (channel.name == "link" and channel.output_grid() is not None),
    )


def _inner_bytes(shape: ChannelShape, n: int | None = None, d: int | None = None) -> int:
    n = shape.inner_points if n is None else n
    d = shape.inner_dim if d is None else d
    return FLOAT * n * (2 * d + shape.seq_len**2 + 4) if shape.attention else 0


def channel_inner_bytes(channel) -> int:
    """Memory of a channel's inner rule and its precomputed mixers (0 for closed forms)."""
    return _inner_bytes(channel_shape(channel))


def _gh_points(d: int, n: int) -> int:
    return n**d + ((n + 1) // 2) ** d


# ------------------------------------------------------------------------- thresholds


def _setting(settings, name, default):
    return getattr(settings, name, default) if settings is not None else default


def threshold_bytes(channel, settings=None) -> int:
    """Peak memory of :func:`asymptotics.thresholds.weak_recovery_thresholds` of
    ``channel`` (a Channel or make_channel keyword arguments) with ``settings``
    (:class:`~asymptotics.thresholds.ThresholdSettings`, default when None)."""
    sh = channel_shape(channel)
    r = _setting(settings, "resolution", 0)
    method = _setting(settings, "method", "auto")
    outer_nodes = _setting(settings, "outer_nodes", 0)
    L, p = sh.seq_len, sh.dim
    lp = L * p
    S, rows, d_out = 2, 2, 0
    inner = 0
    if sh.attention:
        n_in, d_in = inner_rule_size(p, L, r)
        inner = _inner_bytes(sh, n_in, d_in) + _inner_bytes(sh)  # refined rule, and own
        dim_total = d_in + L
        if method == "auto":
            method = "quadrature" if dim_total <= 4 else "mc"
    elif method == "auto":
        method = "quadrature"
    if sh.discrete:
        K = 2
    elif method == "quadrature" and sh.attention and L == 2:
        n = outer_nodes or (GRID_NODES * 2**r + 1)
        K = n * n
    elif method == "quadrature" and sh.has_output_grid:
        n = outer_nodes + (1 - outer_nodes % 2) if outer_nodes else PRODUCT_GRID * 2**r + 1
        K = 2 * n
    else:
        d_out = lp + sh.noise_dim
        if method == "quadrature":
            K = _gh_points(d_out, outer_nodes or GH_BASE_NODES * 2**r)
        else:
            batches = _setting(settings, "mc_batches", 8)
            samples = _setting(settings, "mc_samples", 2**15)
            log2 = max(4, int(round(math.log2(samples / batches))))
            K, rows = batches * 2**log2, batches + 1
            check_sobol_dimension(d_out, "the threshold Monte Carlo rule")
    if sh.attention:
        per = S * (2 * lp * lp + p * L * L + lp + L + 1)
    else:
        per = sh.posterior_floats(1) + 2 * lp * lp
    per += rows + d_out + L + 3 * lp * lp
    return FLOAT * K * per + inner


def staircase_bytes(channel, staircase=None, settings=None) -> int:
    """Peak memory of :func:`asymptotics.staircase.staircase_table` (the Q = 0 thresholds,
    then the staircase on ``groups`` nets of ``2^log2_points`` points)."""
    sh = channel_shape(channel)
    groups = _setting(staircase, "groups", 4)
    K = 2 ** _setting(staircase, "log2_points", 11)
    r = _setting(staircase, "resolution", 0)
    L, depth = sh.seq_len, sh.dim
    ld = L * depth
    n_in, d_in = inner_rule_size(depth, L, r) if sh.attention else (0, 0)
    nets = groups * K * (L * (1 + depth) + L * max(depth - 1, 0))
    per = 2 * (ld * ld + depth * L * L + ld) + 6 * ld
    stair = FLOAT * (nets + K * per) + _inner_bytes(sh, n_in, d_in)
    return max(stair, threshold_bytes(channel, settings))


def check_threshold_job(job: dict, settings=None, staircase=None,
                        limit_bytes: float | None = None) -> int:
    """Refuse a threshold job (make_channel keyword arguments, see
    :func:`asymptotics.tables.threshold_jobs`) before any work: :class:`ResourceError`
    when its inner rule cannot be built or its estimate (thresholds, and the staircase
    when ``staircase`` is given) exceeds the limit.  Returns the estimate in bytes."""
    sh = channel_shape(job)
    if sh.attention:
        check_inner_rule(sh.dim, sh.seq_len, job.get("inner_resolution", 0), limit_bytes)
    est = threshold_bytes(sh, settings)
    if staircase is not None:
        est = max(est, staircase_bytes(sh, staircase, settings))
    check_memory(est, f"the threshold job {_describe(job)}", limit_bytes)
    return est


def _describe(channel) -> str:
    if isinstance(channel, dict):
        items = ", ".join(f"{k}={v}" for k, v in channel.items() if k != "model")
        return f"{channel.get('model', 'attention')}({items})"
    return channel.describe() if hasattr(channel, "describe") else str(channel)


# ---------------------------------------------------------------------- state evolution


def se_outer_rule(channel, settings=None) -> tuple[int, int, int]:
    """``(points K, dimension d, replicates R)`` of the SE outer rule (R = 1: embedded)."""
    sh = channel_shape(channel)
    L, p = sh.seq_len, sh.dim
    gh_nodes = _setting(settings, "gh_nodes", 40)
    gh_max_dim = _setting(settings, "gh_max_dim", 3)
    if sh.discrete:
        if L * p <= 2:
            return _setting(settings, "discrete_nodes", 201) ** p, p, 1
        d = L * p
    else:
        d = 2 * L * p + sh.noise_dim
    if d <= gh_max_dim:
        return _gh_points(d, gh_nodes), d, 1
    return 2 ** _setting(settings, "sobol_log2", 12), d, 8


def se_bytes(channel, settings=None) -> int:
    """Peak memory of one :func:`asymptotics.state_evolution.run_state_evolution` (and its
    curve row) of ``channel`` (a Channel or make_channel keyword arguments) with
    ``settings`` (:class:`~asymptotics.state_evolution.SESettings`)."""
    sh = channel_shape(channel)
    L, p = sh.seq_len, sh.dim
    lp = L * p
    K, d, R = se_outer_rule(sh, settings)
    S = 2
    rule = K * (d + 2 * R + 2) * 9 // 8
    if sh.attention:
        per = 5 * lp + L + S * (1 + 2 * lp + lp * lp + p * p)
    else:
        per = 5 * lp + L + sh.posterior_floats(1) + S * p * p
    gen = 0 if sh.discrete else 2 * lp * (6**lp + 3**lp + 4**lp + 2**lp) + 256 * 45 * lp
    inner = _inner_bytes(sh)
    if sh.attention and (_setting(settings, "device", "cpu") == "gpu"
                         or _setting(settings, "cpu_kernel", "numba") == "array"):
        inner += FLOAT * 6 * XP_CHUNK * (L * L + lp)
    return FLOAT * (rule + K * per + gen) + inner


def check_se(channel, settings=None, limit_bytes: float | None = None) -> int:
    """Refuse an SE solve or curve (``channel``: a Channel or make_channel keyword
    arguments; ``settings``: SESettings) before any work: :class:`ResourceError` when its
    Sobol' net is beyond scipy's dimensions or the estimate exceeds the limit.  Returns
    the estimate in bytes.  A curve runs its settings and branches one chain at a time per
    worker: with ``w`` parallel workers the need is ``w`` times this."""
    sh = channel_shape(channel)
    if isinstance(channel, dict) and sh.attention:
        check_inner_rule(sh.dim, sh.seq_len, channel.get("inner_resolution", 0), limit_bytes)
    K, d, R = se_outer_rule(sh, settings)
    if R > 1:
        check_sobol_dimension(d, "the SE outer rule")
    est = se_bytes(sh, settings)
    check_memory(est, f"the state evolution of {_describe(channel)} ({K} outer points)",
                 limit_bytes)
    return est


__all__ = [
    "GiB", "LIMIT_ENV", "MAX_SOBOL_DIM", "ChannelShape", "ResourceError",
    "channel_inner_bytes", "channel_shape",
    "check_inner_rule", "check_memory", "check_se", "check_sobol_dimension",
    "check_threshold_job", "inner_rule_bytes", "inner_rule_size", "memory_limit",
    "se_bytes", "se_outer_rule", "staircase_bytes", "threshold_bytes",
]
