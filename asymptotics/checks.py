"""Argument checks shared by every settings object and entry point of the package.

Each check raises a ``ValueError`` that names the field and shows the value with its type,
e.g. ``resolution must be an integer >= 0, got -1 (int)`` or ``alpha must be a finite
number > 0, got '0.5' (str)``, at construction, before any work.  Booleans are refused
where numbers are meant; numpy integer and floating scalars are accepted.  The checks
return the value unchanged (a caller that wants a plain ``int``/``float`` converts it).

Sanity bounds of the integer options whose cost is exponential in them (each unit doubles
a grid, or the point count of a Sobol' net): they keep ``2**option`` and the memory
estimates of :mod:`asymptotics.resources` small, exact and fast.  Far below them a task is
already refused by its memory estimate; a value beyond them is refused with
:class:`ResourceError` (a ``ValueError``) whatever the machine:

``MAX_RESOLUTION = 30``
    threshold ``resolution``, staircase ``resolution`` and the attention
    ``inner_resolution``: grids of ``48·2^r + 1`` nodes per axis (``r = 30``: 5·10^10
    nodes per axis, ~10^21 points in two dimensions).
``MAX_SOBOL_LOG2 = 62``
    SE ``sobol_log2``, staircase ``log2_points``: ``2^62`` points (2^62 · 8 bytes = 32 EiB
    for one coordinate).
"""

from __future__ import annotations

import math
import numbers

import numpy as np

MAX_RESOLUTION = 30
MAX_SOBOL_LOG2 = 62


class ResourceError(ValueError):
    """A task refused before any work: its memory estimate exceeds the limit, or an
    exponential size option is beyond its documented sanity bound."""


def _shown(value) -> str:
    return f"{value!r} ({type(value).__name__})"


def _bounds(minimum=None, above=None, maximum=None, below=None) -> str:
    parts = []
    if minimum is not None:
        parts.append(f">= {minimum:g}" if isinstance(minimum, float) else f">= {minimum}")
    if above is not None:
        parts.append(f"> {above:g}" if isinstance(above, float) else f"> {above}")
    if maximum is not None:
        parts.append(f"<= {maximum:g}" if isinstance(maximum, float) else f"<= {maximum}")
    if below is not None:
        parts.append(f"< {below:g}" if isinstance(below, float) else f"< {below}")
    return " and ".join(parts)


def is_integer(value) -> bool:
    """A Python or numpy integer, not a bool."""
    return isinstance(value, (numbers.Integral, np.integer)) and not isinstance(
        value, (bool, np.bool_))


def is_number(value) -> bool:
    """A real Python or numpy number (integer or floating), not a bool."""
    return isinstance(value, (numbers.Real, np.integer, np.floating)) and not isinstance(
        value, (bool, np.bool_))


def check_int(name: str, value, minimum: int | None = None, maximum: int | None = None,
              *, bound_error: type[ValueError] = ResourceError):
    """``value`` if it is an integer (Python or numpy, not bool) within the bounds.

    Below ``minimum`` or not an integer: ``ValueError``.  Above ``maximum`` (a sanity
    bound): ``bound_error`` (:class:`ResourceError` by default, a ``ValueError``)."""
    text = " ".join(["an integer"] + ([_bounds(minimum)] if minimum is not None else []))
    if not is_integer(value) or (minimum is not None and value < minimum):
        raise ValueError(f"{name} must be {text}, got {_shown(value)}")
    if maximum is not None and value > maximum:
        raise bound_error(f"{name} must be {text} and <= {maximum} (sanity bound), "
                          f"got {_shown(value)}")
    return value


def check_number(name: str, value, *, minimum=None, above=None, maximum=None, below=None,
                 finite: bool = True):
    """``value`` if it is a real number (Python or numpy, not bool), finite unless
    ``finite=False`` (then ±inf pass the bounds test, NaN never), within the bounds
    (``minimum <= value``, ``above < value``, ``value <= maximum``, ``value < below``);
    else ``ValueError`` naming ``name``, e.g. ``tol must be a finite number > 0, got
    '1e-8' (str)``."""
    ok = is_number(value)
    if ok:
        v = float(value)
        ok = (math.isfinite(v) if finite else not math.isnan(v)) \
            and (minimum is None or v >= minimum) and (above is None or v > above) \
            and (maximum is None or v <= maximum) and (below is None or v < below)
    if not ok:
        what = "a finite number" if finite else "a number"
        bounds = _bounds(minimum, above, maximum, below)
        raise ValueError(f"{name} must be {what}{' ' + bounds if bounds else ''}, "
                         f"got {_shown(value)}")
    return value


def check_optional_int(name: str, value, minimum: int | None = None,
                       maximum: int | None = None):
    """``None`` or :func:`check_int`."""
    return None if value is None else check_int(name, value, minimum, maximum)


def check_choice(name: str, value, choices) -> str:
    """``value`` if it is one of ``choices`` (strings)."""
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(str, choices))}, "
                         f"got {_shown(value)}")
    return value


__all__ = ["MAX_RESOLUTION", "MAX_SOBOL_LOG2", "ResourceError", "check_choice", "check_int",
           "check_number", "check_optional_int", "is_integer", "is_number"]
