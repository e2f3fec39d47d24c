"""Input validation shared by the simulator sub-commands (one-line errors, exit 2)."""

from __future__ import annotations

import math


class InputError(ValueError):
    """Bad command-line input: ``option`` names the offending option."""

    def __init__(self, option, message):
        super().__init__(f"{option}: {message}")
        self.option = option


def parse_number(value, option, kind=float):
    """A finite float (``kind=float``) or a base-10 integer, or an error naming ``option``."""
    try:
        x = float(value) if kind is float else int(str(value), 10)
    except (TypeError, ValueError):
        raise InputError(
            option, f"expected {'a number' if kind is float else 'an integer'}, got {value!r}"
        ) from None
    if kind is float and not math.isfinite(x):
        raise InputError(option, f"must be finite, got {value!r}")
    return x


def int_at_least(value, option, lo):
    """An integer >= ``lo``, or an error naming ``option``."""
    x = parse_number(value, option, int)
    if x < lo:
        raise InputError(option, f"must be >= {lo}, got {x}")
    return x
