"""Parsing of value lists (moves to the command layer)."""

from __future__ import annotations

import math

from .channels.registry import MODELS, make_channel  # noqa: F401


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
