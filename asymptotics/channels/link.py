"""Any sequence multi-index model from a formula: the link channel (issue 14).

A *link* is the noiseless output map ``g(Z)`` of ``Z ∈ R^{L×p}`` (token l, direction k),
given as a vectorised Python callable on ``(..., L, p)`` arrays, or as a sympy expression
(or a string sympy parses) in the symbols

* ``z`` (L = 1, p = 1),
* ``z1 … zp`` (L = 1, direction k),
* ``z{l}_{k}`` (token l, direction k, both 1-based; e.g. ``z2_1``),

with a scalar or a vector value (a tuple, list or sympy Matrix of components).  The shape
is inferred from the largest indices used; a given ``seq_len``/``dim`` may be larger
(unused tokens or directions) but not smaller.  :func:`parse_link` checks and compiles the
link once (``sympy.lambdify``, numpy module; sympy is imported only here, lazily).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

#: at most this many distinct output values on the Gaussian probe: a discrete link
MAX_DISCRETE_VALUES = 16
PROBE_SIZE = 4096  # seeded Gaussian inputs of the finiteness / discreteness probe
PROBE_SEED = 20140  # fixed: the probe (and so the parse) is deterministic


class LinkError(ValueError):
    """A link refused before any work.  ``option`` names the command-line option at fault
    ("--link", "--seq-len", "--dim" or "--noise"); ``message`` says why (``str(exc)`` is
    ``"OPTION: MESSAGE"``)."""

    def __init__(self, option: str, message: str):
        super().__init__(f"{option}: {message}")
        self.option = option
        self.message = message


@dataclass(frozen=True)
class LinkSpec:
    """A parsed, compiled link ``y = g(Z)``.

    ``func``: numpy callable ``(..., L, p) -> (..., out_dim)``.  ``expression``: the sympy
    expression (a tuple of components for vector outputs) or None for a callable.
    ``text``: canonical string (result rows, provenance).  ``discrete``: the link takes
    finitely many values, ``values (n_values, out_dim)`` (sorted rows), decided on a seeded
    Gaussian probe of :data:`PROBE_SIZE` inputs (at most :data:`MAX_DISCRETE_VALUES`
    distinct rows).
    """

    seq_len: int
    dim: int
    out_dim: int
    func: Callable[[np.ndarray], np.ndarray] = field(repr=False, compare=False)
    expression: object = field(default=None, repr=False, compare=False)
    text: str = ""
    discrete: bool = False
    values: np.ndarray | None = field(default=None, repr=False, compare=False)


_SCALAR = re.compile(r"^z$")
_DIRECTION = re.compile(r"^z([1-9][0-9]*)$")
_TOKEN = re.compile(r"^z([1-9][0-9]*)_([1-9][0-9]*)$")


def _symbol_positions(names: list[str]) -> tuple[dict[str, tuple[int, int]], int, int, str]:
    """``{name: (l, k)}`` (0-based), the inferred ``L, p`` and the naming form."""
    forms, pos = set(), {}
    for name in names:
        if _SCALAR.match(name):
            forms.add("z")
            pos[name] = (0, 0)
        elif m := _DIRECTION.match(name):
            forms.add("zk")
            pos[name] = (0, int(m.group(1)) - 1)
        elif m := _TOKEN.match(name):
            forms.add("zl_k")
            pos[name] = (int(m.group(1)) - 1, int(m.group(2)) - 1)
        else:
            raise LinkError("--link", f"unknown symbol {name!r}: use z (L = p = 1), z1 … zp "
                                      "(L = 1) or z<l>_<k> (token l, direction k)")
    if len(forms) > 1:
        raise LinkError("--link", "mixes the symbol forms z, z<k> and z<l>_<k>; use one")
    form = forms.pop() if forms else "none"
    L = 1 + max((lk[0] for lk in pos.values()), default=0)
    p = 1 + max((lk[1] for lk in pos.values()), default=0)
    return pos, L, p, form


def _check_shape(L: int, p: int, form: str, seq_len, dim) -> tuple[int, int]:
    from ..checks import is_integer

    for option, given, used in (("--seq-len", seq_len, L), ("--dim", dim, p)):
        if given is None:
            continue
        if not is_integer(given) or given < 1:
            raise LinkError(option, f"must be an integer >= 1, got {given!r}")
        if given < used:
            raise LinkError(option, f"is {given} but the link uses index {used}")
    if form == "z" and (seq_len or 1) != 1:
        raise LinkError("--seq-len", f"is {seq_len} but the link in 'z' has one token")
    if form == "z" and (dim or 1) != 1:
        raise LinkError("--dim", f"is {dim} but the link in 'z' has one direction (use z1 … zp)")
    if form == "zk" and (seq_len or 1) != 1:
        raise LinkError("--seq-len", f"is {seq_len} but a link in z1 … zp has one token "
                                     "(use z<l>_<k>)")
    return int(seq_len or L), int(dim or p)


def _relu(x):
    import sympy

    return sympy.Max(x, 0)


def _sympify(link):
    import sympy

    if isinstance(link, str):
        # names of the z-forms become symbols; relu is Max(x, 0); the rest is sympy's
        local = {"relu": _relu}
        for name in set(re.findall(r"\bz[0-9_]*\b", link)):
            local[name] = sympy.Symbol(name, real=True)
        try:
            expr = sympy.parse_expr(link, local_dict=local)
        except Exception as exc:  # sympy raises many kinds (SyntaxError, TokenError, ...)
            raise LinkError("--link", f"cannot parse {link!r}: {exc}".splitlines()[0]) from None
    else:
        expr = sympy.sympify(link)
    if isinstance(expr, (tuple, list, sympy.Tuple)) or isinstance(expr, sympy.MatrixBase):
        comps = tuple(sympy.sympify(c) for c in (expr if not isinstance(expr, sympy.MatrixBase)
                                                  else list(expr)))
    else:
        comps = (expr,)
    if not comps:
        raise LinkError("--link", "has no components")
    for c in comps:
        if not isinstance(c, sympy.Expr):
            raise LinkError("--link", f"component {c} is not an expression")
    return comps


def _compile_symbolic(comps, pos, L, p):
    import sympy

    symbols = sorted({s for c in comps for s in c.free_symbols}, key=lambda s: s.name)
    index = [pos[s.name] for s in symbols]
    f = sympy.lambdify(symbols, list(comps), modules="numpy")

    def func(Z: np.ndarray) -> np.ndarray:
        Z = np.asarray(Z, dtype=float)
        shape = Z.shape[:-2]
        out = f(*[Z[..., l, k] for l, k in index])
        return np.stack([np.broadcast_to(np.asarray(c, dtype=float), shape) for c in out],
                        axis=-1)

    return func


def _probe(func, L: int, p: int) -> np.ndarray:
    rng = np.random.default_rng(PROBE_SEED)
    Z = rng.standard_normal((PROBE_SIZE, L, p))
    try:
        with np.errstate(all="ignore"):
            y = np.asarray(func(Z))
    except Exception as exc:  # a user's callable may raise anything
        raise LinkError("--link", f"fails on Gaussian inputs: {exc}".splitlines()[0]) from None
    if np.iscomplexobj(y):
        raise LinkError("--link", "is complex on Gaussian inputs")
    return y


def parse_link(link, seq_len: int | None = None, dim: int | None = None) -> LinkSpec:
    """Check and compile ``link`` (callable, sympy expression or string; module doc).

    Shape: inferred from the symbols, or ``seq_len``/``dim`` (at least the indices used;
    a callable needs both).  Refused with :class:`LinkError` naming the option: unknown
    symbols, mixed symbol forms, a shape mismatch, values not finite (or complex) on
    :data:`PROBE_SIZE` seeded standard Gaussian inputs.
    """
    if callable(link) and not isinstance(link, str) and not hasattr(link, "free_symbols"):
        if seq_len is None or dim is None:
            raise LinkError("--seq-len" if seq_len is None else "--dim",
                            "a Python callable link needs seq_len and dim")
        L, p = _check_shape(1, 1, "callable", seq_len, dim)

        def func(Z, _g=link):
            y = np.asarray(_g(np.asarray(Z, dtype=float)), dtype=float)
            return y[..., None] if y.ndim == np.ndim(Z) - 2 else y

        name = getattr(link, "__qualname__", None) or type(link).__name__
        text = f"python:{getattr(link, '__module__', '') or ''}.{name}"
        expression = None
    else:
        comps = _sympify(link)
        names = sorted({s.name for c in comps for s in c.free_symbols})
        pos, L0, p0, form = _symbol_positions(names)
        L, p = _check_shape(L0, p0, form, seq_len, dim)
        func = _compile_symbolic(comps, pos, L, p)
        expression = comps if len(comps) > 1 else comps[0]
        text = str(comps[0]) if len(comps) == 1 else "(" + ", ".join(map(str, comps)) + ")"
    y = _probe(func, L, p)
    if y.ndim != 2 or y.shape[0] != PROBE_SIZE:
        raise LinkError("--link", f"must map (..., L, p) to (...) or (..., m), got shape "
                                  f"{y.shape} from {(PROBE_SIZE, L, p)}")
    if not np.all(np.isfinite(y)):
        raise LinkError("--link", "is not finite on standard Gaussian inputs")
    values = np.unique(y, axis=0)
    discrete = values.shape[0] <= MAX_DISCRETE_VALUES
    return LinkSpec(L, p, int(y.shape[1]), func, expression, text, bool(discrete),
                    values if discrete else None)
