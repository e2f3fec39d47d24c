"""Model registry: build a channel from CLI-style parameters, validating them first."""

from __future__ import annotations

import math

from .channels.attention import AttentionChannel, default_inner_rule
from .channels.base import Channel
from .channels.closed_form import (
    LinearChannel,
    PhaseRetrievalChannel,
    ProductChannel,
    SignChannel,
    SignProductChannel,
)

MODELS = ("attention", "linear", "phase-retrieval", "sign", "sign-product", "product")


def make_channel(
    model: str = "attention",
    depth: int = 2,
    seq_len: int = 2,
    skip: float = 1.0,
    beta: float = 1.0,
    noise: float = 0.1,
    inner_resolution: int = 0,
) -> Channel:
    """The channel of ``model``; attention uses depth, seq_len, skip and beta, and
    ``inner_resolution`` refines its default inner rule (each step doubles the nodes)."""
    if model == "attention":
        rule = None
        if inner_resolution:
            rule = default_inner_rule(depth, seq_len, resolution=inner_resolution, skip=skip,
                                      beta=beta)
        return AttentionChannel(depth, seq_len, skip, beta, inner_rule=rule)
    if model == "linear":
        return LinearChannel(noise)
    if model == "phase-retrieval":
        return PhaseRetrievalChannel()
    if model == "sign":
        return SignChannel()
    if model == "sign-product":
        return SignProductChannel()
    if model == "product":
        return ProductChannel()
    raise ValueError(f"unknown model {model!r}; choose from {', '.join(MODELS)}")


def parse_values(text: str, name: str) -> list[float]:
    """Parse ``"0.5"``, ``"0.25,0.5"`` or ``"start:stop:step"`` (stop included)."""
    values: list[float] = []
    for part in str(text).split(","):
        part = part.strip()
        if not part:
            raise ValueError(f"{name}: empty value in {text!r}")
        if ":" in part:
            bits = part.split(":")
            if len(bits) != 3:
                raise ValueError(f"{name}: range must be start:stop:step, got {part!r}")
            start, stop, step = (_float(b, name) for b in bits)
            if step <= 0 or stop < start:
                raise ValueError(f"{name}: range {part!r} needs step > 0 and stop >= start")
            n = int(math.floor((stop - start) / step + 1e-9)) + 1
            values.extend(round(start + i * step, 12) for i in range(n))
        else:
            values.append(_float(part, name))
    return values


def _float(text: str, name: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise ValueError(f"{name}: cannot parse {text!r} as a number") from None
    if not math.isfinite(v):
        raise ValueError(f"{name}: value must be finite, got {text!r}")
    return v
