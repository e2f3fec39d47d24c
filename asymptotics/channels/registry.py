"""Model registry: a channel from its name and parameters, validated first."""

from __future__ import annotations

from ..checks import MAX_RESOLUTION, check_choice, check_int
from .attention import AttentionChannel, check_attention_parameters, default_inner_rule
from .attention_map import Architecture
from .base import Channel
from .closed_form import (
    LinearChannel,
    PhaseRetrievalChannel,
    ProductChannel,
    SignChannel,
    SignProductChannel,
)
from .names import MODELS


def make_channel(
    model: str = "attention",
    depth: int = 2,
    seq_len: int = 2,
    skip: float = 1.0,
    beta: float = 1.0,
    noise: float | None = None,
    inner_resolution: int = 0,
    link=None,
    dim: int | None = None,
    outputs: str = "auto",
) -> Channel:
    """The channel of ``model``; attention uses depth, seq_len, skip and beta, and
    ``inner_resolution`` refines its default inner rule (each step doubles the nodes; at
    most :data:`~asymptotics.checks.MAX_RESOLUTION`).

    Every parameter the model uses is checked first (``ValueError`` naming it); for
    attention the inner rule's memory as well (:func:`asymptotics.resources.check_memory`,
    ``ResourceError``), before it is built.  Callers that want to refuse a whole task
    first use :mod:`asymptotics.resources` with these keyword arguments.  The linear
    channel's ``noise`` defaults to 0.1.

    ``model="link"``: a :class:`~asymptotics.channels.link.LinkChannel` of ``link`` (a
    formula or callable) with ``seq_len``/``dim`` (None or 0: inferred from the formula's
    symbols), ``noise`` (``Δ``; None or 0 for a discrete link), ``outputs`` and
    ``inner_resolution``; bad input raises
    :class:`~asymptotics.channels.link.LinkError` naming the option."""
    check_choice("model", model, MODELS)
    if model == "link":
        from .link import LinkChannel, LinkError

        if link is None:
            raise LinkError("--link", "model 'link' needs a link")
        return LinkChannel(link, seq_len or None, dim or None, noise or None, outputs,
                           inner_resolution)
    if model == "attention":
        check_attention_parameters(depth, seq_len, skip, beta)
        check_int("inner_resolution", inner_resolution, 0, MAX_RESOLUTION)
        from ..resources import check_inner_rule

        check_inner_rule(depth, seq_len, inner_resolution)
        rule = None
        if inner_resolution:
            rule = default_inner_rule(depth, seq_len, resolution=inner_resolution, skip=skip,
                                      beta=beta)
        return AttentionChannel(depth, seq_len, skip, beta, inner_rule=rule)
    if model == "linear":
        return LinearChannel(0.1 if noise is None else noise)
    if model == "phase-retrieval":
        return PhaseRetrievalChannel()
    if model == "sign":
        return SignChannel()
    if model == "sign-product":
        return SignProductChannel()
    if model == "product":
        return ProductChannel()
    raise ValueError(f"unknown model {model!r}; choose from {', '.join(MODELS)}")


def channel_for(arch: Architecture) -> Channel:
    """The channel of a rank-1 attention network: the network and its channel share
    ``arch`` (rank > 1 has no channel here: ValueError)."""
    return AttentionChannel.from_architecture(arch)
