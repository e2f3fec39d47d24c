"""Symbolic analysis of a link ``y = g(Z) (+ sqrt(Δ) ξ)`` with sympy (THEORY.md §10).

Variables: ``Z ∈ R^{L×p}`` with i.i.d. standard Gaussian entries, listed token-major
(``z{l}_{k}`` at position ``(l-1)·p + (k-1)``); direction ``k`` owns the ``L`` variables
``z{l}_{k}``, ``l = 1..L``.

* **Hermite coefficients** ``c_α = E[g(Z) He_α(Z)]`` with ``He_α = Π_i He_{α_i}(z_i)`` the
  probabilists' Hermite polynomials, so ``g = Σ_α c_α He_α / α!`` (``α! = Π α_i!``).
  Exact (sympy) when ``g`` is a polynomial on every orthant of the variables inside
  ``Abs``/``sign``/``Heaviside``/``Max``/``Min``/``Piecewise`` (Gaussian half-line moments),
  or when ``sympy.integrate`` finishes within a time limit; otherwise a tensor
  Gauss–Hermite rule whose error is its difference to the rule with half the nodes.
* **Information exponent**: the lowest ``|α| ≥ 1`` with ``c_α ≠ 0``; of direction ``k``, the
  lowest ``|α|`` over the ``α`` that involve one of ``k``'s variables (total order, so
  ``sign(z1 z2 z3)`` has exponent 3 in every direction).
* **Generative exponent** (estimate): the lowest ``|α|`` with
  ``E_y[E[He_α(Z) | y]²] / α! > 0``.
* **Bayes facts** (trivial direction, not learnable from ``Q = 0``) come from the posterior
  through :func:`asymptotics.thresholds.weak_recovery_thresholds`, never from the above.

sympy is imported at module level: import this module lazily.
"""

from __future__ import annotations

import itertools
import math
import multiprocessing
import re
from dataclasses import dataclass, field

import numpy as np
import sympy as sp

from .integrate import sobol_replicates

NONSMOOTH = (sp.Abs, sp.sign, sp.Heaviside, sp.Max, sp.Min, sp.Piecewise)
ZERO_SIGMAS = 4.0  # a numerical value is zero when |value| <= ZERO_SIGMAS · error
ZERO_FLOOR = 1e-12  # ... or below this absolute floor
MAX_VARIABLES = 6  # exact orthant method: at most 2^6 orthants
GH_NODES = {1: 160, 2: 64, 3: 24, 4: 12}  # primary Gauss–Hermite nodes per axis


# ----------------------------------------------------------------------------- variables


def link_symbols(seq_len: int = 1, dim: int = 1) -> list[sp.Symbol]:
    """The link's variables (real symbols, as :func:`~asymptotics.channels.link.parse_link`
    makes them), token-major: ``z`` (L = p = 1), ``z1 … zp`` (L = 1) or ``z{l}_{k}``."""
    if seq_len == 1 and dim == 1:
        names = ["z"]
    elif seq_len == 1:
        names = [f"z{k}" for k in range(1, dim + 1)]
    else:
        names = [f"z{l}_{k}" for l in range(1, seq_len + 1) for k in range(1, dim + 1)]
    return [sp.Symbol(n, real=True) for n in names]


def _direction_of(n: int, dim: int) -> int:
    return n % dim  # 0-based direction of variable n (token-major)


def _as_expr(expr, symbols=None) -> sp.Expr:
    """``expr`` (a string or sympy expression) with its free symbols replaced, by name, by
    those of ``symbols`` (so assumptions such as ``real=True`` do not split a variable)."""
    by_name = {s.name: s for s in symbols or ()}
    expr = sp.sympify(expr, locals=by_name) if isinstance(expr, str) else sp.sympify(expr)
    return expr.xreplace({f: by_name[f.name] for f in expr.free_symbols if f.name in by_name})


def _natural_key(symbol) -> tuple:
    """``z2 < z10`` and ``z1_2 < z2_1`` (token-major), by the integers in the name."""
    return tuple(int(n) for n in re.findall(r"\d+", symbol.name)), symbol.name


def _prepare(expr, symbols):
    """``(expr, symbols)``: default symbols are the free ones in natural (token-major)
    order of their names."""
    if symbols is None:
        expr = _as_expr(expr)
        return expr, sorted(expr.free_symbols, key=_natural_key)
    symbols = list(symbols)
    return _as_expr(expr, symbols), symbols


# --------------------------------------------------------------------- exact integration


def _half_moment(n: int) -> sp.Expr:
    """``∫_0^∞ u^n φ(u) du = 2^{(n-1)/2} Γ((n+1)/2) / sqrt(2π)``."""
    return sp.Integer(2) ** sp.Rational(n - 1, 2) * sp.gamma(sp.Rational(n + 1, 2)) / sp.sqrt(
        2 * sp.pi)


def _full_moment(n: int) -> sp.Expr:
    """``E z^n = (n-1)!!`` for even ``n``, 0 for odd."""
    return sp.Integer(0) if n % 2 else sp.factorial2(n - 1)


def _orthant_pieces(expr: sp.Expr, symbols: list[sp.Symbol]):
    """``[(signs, poly)]``: ``g`` on each orthant of the variables inside non-smooth
    functions, as a polynomial in ``u`` (``z_i = s_i u_i``, ``u_i > 0``) and in the other
    variables; None if some piece is not a polynomial (or too many variables split)."""
    split = sorted({s for atom in expr.atoms(*NONSMOOTH) for s in atom.free_symbols
                    if s in symbols}, key=symbols.index)
    if len(split) > MAX_VARIABLES:
        return None
    u = {s: sp.Dummy(f"u_{s.name}", positive=True) for s in split}
    gens = [u.get(s, s) for s in symbols]
    pieces = []
    for signs in itertools.product((1, -1), repeat=len(split)):
        sub = {s: sg * u[s] for s, sg in zip(split, signs, strict=True)}
        g = sp.piecewise_fold(expr.subs(sub))
        if g.atoms(*NONSMOOTH) or not g.is_polynomial(*gens):
            return None
        pieces.append((dict(zip(split, signs, strict=True)), sp.Poly(sp.expand(g), *gens)))
    return pieces, split, gens


def _poly_expectation(poly: sp.Poly, split_mask: list[bool]) -> sp.Expr:
    """``∫_{orthant} poly φ``: half-line moments on split variables, full-line on others."""
    total = sp.Integer(0)
    for monom, coeff in poly.terms():
        term = coeff
        for n, is_split in zip(monom, split_mask, strict=True):
            term *= _half_moment(n) if is_split else _full_moment(n)
            if term == 0:
                break
        total += term
    return total


def _hermite_product(alpha, variables) -> sp.Expr:
    out = sp.Integer(1)
    for a, v in zip(alpha, variables, strict=True):
        out *= sp.hermite_prob(a, v)
    return out


def _orthant_expectations(expr, symbols, functions) -> list[sp.Expr] | None:
    """Exact ``E[g(Z) f(Z)]`` for every polynomial ``f`` of ``functions`` (None: no exact
    orthant form)."""
    found = _orthant_pieces(expr, symbols)
    if found is None:
        return None
    pieces, split, gens = found
    mask = [s in split for s in symbols]
    out = []
    for f in functions:
        total = sp.Integer(0)
        for signs, g in pieces:
            sub = {s: signs[s] * gens[symbols.index(s)] for s in split}
            fp = sp.Poly(sp.expand(sp.sympify(f).subs(sub)), *gens)
            total += _poly_expectation(g * fp, mask)
        out.append(sp.simplify(total))
    return out


def _integrate_all(expr, symbols, functions):
    density = sp.Integer(1)
    for s in symbols:
        density *= sp.exp(-s**2 / 2) / sp.sqrt(2 * sp.pi)
    out = []
    for f in functions:
        val = sp.integrate(expr * f * density, *[(s, -sp.oo, sp.oo) for s in symbols])
        if val.has(sp.Integral) or not val.is_finite:
            return None
        out.append(sp.simplify(val))
    return out


def _integrate_worker(queue, expr, symbols, functions):  # pragma: no cover (child process)
    import signal

    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # the parent stops it with SIGTERM
    try:
        queue.put(_integrate_all(expr, symbols, functions))
    except Exception:  # sympy failed: the caller falls back to quadrature
        queue.put(None)


def _integrate_with_timeout(expr, symbols, functions, timeout: float):
    """``sympy.integrate`` of every ``g f φ`` in a forked process stopped after ``timeout``
    seconds (None: timed out, not closed, or no fork available)."""
    if timeout <= 0:
        return None
    try:
        ctx = multiprocessing.get_context("fork")
    except ValueError:
        return None
    queue = ctx.Queue()
    proc = ctx.Process(target=_integrate_worker, args=(queue, expr, symbols, functions))
    proc.start()
    try:
        result = queue.get(timeout=timeout)
    except Exception:  # queue.Empty: timed out
        result = None
    proc.join(0.1)
    if proc.is_alive():
        proc.terminate()
        proc.join()
    return result


def _exp_linear_terms(expr, symbols):
    """``g = Σ_j P_j(z) exp(a_j·z + b_j)`` as ``[(P_j, a_j, b_j)]`` (hyperbolic functions
    rewritten as exponentials), or None."""
    g = sp.expand(sp.powsimp(sp.expand(expr.rewrite(sp.exp))))
    terms = []
    for term in sp.Add.make_args(g):
        factors = sp.Mul.make_args(term)
        exps = [f for f in factors if isinstance(f, sp.exp)]
        rest = sp.Mul(*[f for f in factors if not isinstance(f, sp.exp)])
        arg = sp.expand(sum((f.args[0] for f in exps), sp.Integer(0)))
        if not rest.is_polynomial(*symbols) or not arg.is_polynomial(*symbols):
            return None
        if sp.Poly(arg, *symbols).total_degree() > 1:
            return None
        a = [arg.coeff(s) for s in symbols]
        b = arg.subs({s: 0 for s in symbols})
        terms.append((rest, a, b))
    return terms


def _exp_linear_expectations(expr, symbols, functions):
    """``E[P(z) e^{a·z + b} f(z)] = e^{b + |a|²/2} E[(P f)(z + a)]`` (Gaussian shift), exact
    for polynomial ``P`` and ``f``; None if ``g`` is not of that form."""
    terms = _exp_linear_terms(expr, symbols)
    if terms is None:
        return None
    mask = [False] * len(symbols)
    out = []
    for f in functions:
        total = sp.Integer(0)
        for rest, a, b in terms:
            shifted = (rest * f).subs({s: s + ai for s, ai in zip(symbols, a, strict=True)},
                                      simultaneous=True)
            scale = sp.exp(b + sum(ai**2 for ai in a) / 2)
            total += scale * _poly_expectation(sp.Poly(sp.expand(shifted), *symbols), mask)
        out.append(sp.simplify(total))
    return out


def exact_expectations(expr, symbols, functions, timeout: float = 5.0):
    """Exact ``E[g(Z) f(Z)]`` (``Z`` standard Gaussian) for each polynomial ``f``: orthant
    moments where ``g`` is piecewise polynomial, the Gaussian shift where ``g`` is a sum of
    polynomials times exponentials of linear forms (``exp``, ``cosh``, ``sinh``), else
    ``sympy.integrate`` within ``timeout`` seconds; None when none gives a closed form."""
    expr = _as_expr(expr, symbols)
    out = _orthant_expectations(expr, symbols, functions)
    if out is None and not expr.atoms(*NONSMOOTH):
        out = _exp_linear_expectations(expr, symbols, functions)
    if out is None and not expr.atoms(*NONSMOOTH):
        out = _integrate_with_timeout(expr, symbols, functions, timeout)
    return out


# ------------------------------------------------------------------ numerical integration


def numeric_function(expr, symbols):
    """``g`` as a numpy function of an array ``(..., d)`` of variables."""
    f = sp.lambdify(symbols, _as_expr(expr, symbols), modules="numpy")

    def g(Z):
        Z = np.asarray(Z, dtype=float)
        return np.broadcast_to(np.asarray(f(*np.moveaxis(Z, -1, 0)), dtype=float),
                               Z.shape[:-1])
    return g


def _gh_tensor(d: int, n: int):
    x, w = np.polynomial.hermite_e.hermegauss(n)
    w = w / math.sqrt(2 * math.pi)
    pts = np.stack(np.meshgrid(*([x] * d), indexing="ij"), -1).reshape(-1, d)
    wts = np.prod(np.stack(np.meshgrid(*([w] * d), indexing="ij"), -1).reshape(-1, d), -1)
    return pts, wts


def _hermite_values(alphas, Z) -> np.ndarray:
    """``He_α(Z)`` for every α, ``(len(alphas), n)``."""
    kmax = max((max(a) for a in alphas), default=0)
    He = [np.ones_like(Z), Z.copy()]
    for k in range(1, kmax):
        He.append(Z * He[k] - k * He[k - 1])
    out = np.ones((len(alphas), Z.shape[0]))
    for j, a in enumerate(alphas):
        for i, ai in enumerate(a):
            if ai:
                out[j] *= He[ai][:, i]
    return out


def numeric_expectations(g, d: int, alphas, nodes: int | None = None):
    """``E[g(Z) He_α(Z)]`` on a tensor Gauss–Hermite rule and the rule with half the nodes:
    values and errors ``|difference|``."""
    n = nodes or GH_NODES.get(d, 8)
    vals = []
    for m in (n, max(n // 2, 2)):
        Z, w = _gh_tensor(d, m)
        vals.append(_hermite_values(alphas, Z) @ (w * g(Z)))
    return vals[0], np.abs(vals[0] - vals[1])


def real_poles(expr, symbols) -> list[str]:
    """Denominators of ``expr`` that vanish at real points (``1/z``, ``z**-2``, ...): such a
    link is not square integrable on Gaussian inputs, so it has no Hermite expansion."""
    bad = []
    for atom in _as_expr(expr, symbols).atoms(sp.Pow):
        base, ex = atom.as_base_exp()
        if not (ex.is_number and ex.is_negative):
            continue
        for s in base.free_symbols & set(symbols):
            try:
                zeros = sp.solveset(base, s, sp.S.Reals)
            except (NotImplementedError, ValueError, TypeError):
                zeros = sp.S.Reals  # undecided: refuse
            if zeros != sp.S.EmptySet:
                bad.append(str(atom))
                break
    return bad


def check_finite_on_gaussian(expr, symbols, samples: int = 4096, seed: int = 0) -> None:
    """ValueError unless ``g`` is finite at Gaussian samples and on the Gauss–Hermite nodes
    of :func:`numeric_expectations`, and ``E g²`` on those rules converges (the two rules
    agree to 50 %: a link growing like ``exp(z²)`` has ``E g² = ∞`` and no expansion)."""
    g = numeric_function(expr, symbols)
    d = len(symbols)
    n = GH_NODES.get(d, 8)
    with np.errstate(all="ignore"):
        vals = g(np.random.default_rng(seed).standard_normal((samples, d)))
        if not np.all(np.isfinite(vals)):
            raise ValueError(f"{expr} is not finite on Gaussian inputs")
        second = []
        for m in (n, n // 2):
            Z, w = _gh_tensor(d, m)
            gz = g(Z)
            if not np.all(np.isfinite(gz)):
                raise ValueError(f"{expr} is not finite on the Gauss–Hermite nodes")
            second.append(float(w @ gz**2))
    if not (np.isfinite(second[0]) and abs(second[0] - second[1]) <= 0.5 * second[0] + 1e-12):
        raise ValueError(f"E[g²] of {expr} does not converge ({second[0]:.3g} on {n}^{d} "
                         f"nodes, {second[1]:.3g} on {n // 2}^{d}): not square integrable")


# ------------------------------------------------------------------- Hermite coefficients


@dataclass(frozen=True)
class Coefficient:
    """``c_α = E[g(Z) He_α(Z)]``: ``exact`` (a sympy number) or numerical ± ``error``."""

    index: tuple[int, ...]
    value: float
    error: float
    method: str  # "exact" | "numerical"
    exact: sp.Expr | None = None

    @property
    def order(self) -> int:
        return sum(self.index)

    @property
    def is_zero(self) -> bool:
        """Exactly zero, or numerically zero within ``ZERO_SIGMAS`` errors."""
        if self.exact is not None:
            return bool(self.exact == 0)
        return abs(self.value) <= max(ZERO_SIGMAS * self.error, ZERO_FLOOR)

    def text(self) -> str:
        if self.exact is not None:
            return f"{self.exact}" + ("" if self.exact.is_Rational else f" = {self.value:.10g}")
        return f"{self.value:.8g} ± {self.error:.1e}"


@dataclass
class HermiteExpansion:
    """Coefficients ``c_α`` of ``g = Σ_α c_α He_α / α!`` for ``|α| ≤ order``."""

    expression: str
    symbols: tuple[str, ...]
    seq_len: int
    dim: int
    order: int
    coefficients: list[Coefficient]
    method: str  # "exact" | "numerical"

    def coefficient(self, index) -> Coefficient:
        index = tuple(index)
        return next(c for c in self.coefficients if c.index == index)

    def involves(self, coef: Coefficient, direction: int) -> bool:
        """Whether ``α`` touches a variable of ``direction`` (0-based)."""
        return any(a and _direction_of(n, self.dim) == direction
                   for n, a in enumerate(coef.index))


def multi_indices(d: int, order: int) -> list[tuple[int, ...]]:
    """All ``α ∈ N^d`` with ``|α| ≤ order``, by total order then lexicographically
    descending."""
    out = []
    for total in range(order + 1):
        out += sorted((a for a in itertools.product(range(total + 1), repeat=d)
                       if sum(a) == total), reverse=True)
    return out


def hermite_coefficients(expr, symbols=None, order: int = 4, *, seq_len: int = 1,
                         timeout: float = 5.0) -> HermiteExpansion:
    """``c_α = E[g(Z) He_α(Z)]`` for ``|α| ≤ order`` (``g = Σ c_α He_α/α!``).

    ``symbols`` token-major (default: the free symbols, sorted by name); ``seq_len`` L, so
    that ``dim = len(symbols) / L``.  Exact where :func:`exact_expectations` closes, else
    Gauss–Hermite with an error estimate.
    """
    if order < 1:
        raise ValueError(f"order must be >= 1, got {order}")
    expr, symbols = _prepare(expr, symbols)
    d = len(symbols)
    if d == 0 or d % seq_len:
        raise ValueError(f"{d} variables do not make {seq_len} tokens")
    alphas = multi_indices(d, order)
    functions = [_hermite_product(a, symbols) for a in alphas]
    exact = exact_expectations(expr, symbols, functions, timeout)
    if exact is not None:
        coefs = [Coefficient(a, float(sp.N(v, 17)), 0.0, "exact", sp.nsimplify(v)
                             if v.is_Rational else v) for a, v in zip(alphas, exact, strict=True)]
        method = "exact"
    else:
        check_finite_on_gaussian(expr, symbols)
        vals, errs = numeric_expectations(numeric_function(expr, symbols), d, alphas)
        coefs = [Coefficient(a, float(v), float(e), "numerical")
                 for a, v, e in zip(alphas, vals, errs, strict=True)]
        method = "numerical"
    return HermiteExpansion(str(expr), tuple(map(str, symbols)), seq_len, d // seq_len,
                            order, coefs, method)


# ------------------------------------------------------------------------------ exponents


@dataclass
class Exponents:
    """Lowest orders (``None``: none up to ``order``), overall and per direction (0-based
    list over ``k``), with the method and the evidence (order -> text)."""

    kind: str  # "information" | "generative"
    overall: int | None
    directions: list[int | None]
    order: int
    method: str
    evidence: dict = field(default_factory=dict)

    @property
    def estimated(self) -> bool:
        return not self.method.startswith("not estimated")

    def text(self, value: int | None) -> str:
        """``value``, ``> order`` (none found up to the order) or ``n/a`` (not estimated)."""
        if not self.estimated:
            return "n/a"
        return str(value) if value is not None else f"> {self.order}"


def _lowest(entries, dim: int, order: int):
    """Lowest ``|α|`` among nonzero entries ``[(α, nonzero)]``, overall and per direction."""
    overall = None
    per = [None] * dim
    for alpha, nonzero in entries:
        if not nonzero or sum(alpha) == 0:
            continue
        o = sum(alpha)
        overall = o if overall is None else min(overall, o)
        for n, a in enumerate(alpha):
            k = _direction_of(n, dim)
            if a and (per[k] is None or o < per[k]):
                per[k] = o
    return overall, per


def information_exponent(expansion: HermiteExpansion) -> Exponents:
    """Lowest Hermite order with a nonzero coefficient, overall and per direction (exact
    zeros when symbolic; numerically nonzero beyond ``ZERO_SIGMAS`` errors)."""
    entries = [(c.index, not c.is_zero) for c in expansion.coefficients]
    overall, per = _lowest(entries, expansion.dim, expansion.order)
    return Exponents("information", overall, per, expansion.order, expansion.method)


@dataclass(frozen=True)
class ConditionalMoment:
    """``r_α = E_y[E[He_α(Z) | y]²] / α!`` (in ``[0, 1]``) with its error."""

    index: tuple[int, ...]
    value: float
    error: float
    exact: sp.Expr | None = None

    @property
    def is_zero(self) -> bool:
        if self.exact is not None:
            return bool(self.exact == 0)
        return self.value <= max(ZERO_SIGMAS * self.error, ZERO_FLOOR)


def _alpha_factorial(alpha) -> int:
    return math.prod(math.factorial(a) for a in alpha)


def _discrete_values(g, d: int, values=None, discrete: bool | None = None):
    """The finite set of outputs (None if continuous: ``discrete=False``, or more than 32
    values on a Gauss–Hermite grid)."""
    if discrete is False:
        return None
    if values is not None:
        return np.asarray(values, dtype=float)
    Z, _ = _gh_tensor(d, GH_NODES.get(d, 8))
    found = np.unique(g(Z))
    return found if found.size <= 32 else None


def _exact_class_moments(expr, symbols, values, functions):
    """Exact ``P(y = v)`` and ``E[f(Z) 1{y = v}]`` when ``g`` is constant on every orthant:
    ``(probs, table[v][f])``, else None."""
    found = _orthant_pieces(expr, symbols)
    if found is None:
        return None
    pieces, split, gens = found
    if any(not p.is_ground for _, p in pieces):
        return None
    mask = [s in split for s in symbols]
    consts = [sp.nsimplify(p.as_expr()) for _, p in pieces]
    vals = sorted(set(consts), key=float)
    if values is not None and not set(float(v) for v in vals) <= set(map(float, values)):
        return None
    probs, table = [], []
    for v in vals:
        row = []
        for f in [sp.Integer(1)] + list(functions):
            tot = sp.Integer(0)
            for (signs, _), c in zip(pieces, consts, strict=True):
                if c != v:
                    continue
                sub = {s: signs[s] * gens[symbols.index(s)] for s in split}
                fp = sp.Poly(sp.expand(sp.sympify(f).subs(sub)), *gens)
                tot += _poly_expectation(fp, mask)
            row.append(sp.simplify(tot))
        probs.append(row[0])
        table.append(row[1:])
    return vals, probs, table


def generative_exponent_estimate(expr, symbols=None, order: int = 4, *, seq_len: int = 1,
                                 noise: float = 0.0, values=None, discrete: bool | None = None,
                                 log2_samples: int = 0, replicates: int = 8, seed: int = 0
                                 ) -> Exponents:
    """Lowest ``|α|`` with ``r_α = E_y[E[He_α(Z) | y]²]/α! > 0``, per direction as for the
    information exponent.

    Noiseless discrete outputs: exact sums over the values when ``g`` is constant on
    orthants, else a tensor Gauss–Hermite rule (error: half-node rule).  Noiseless
    continuous outputs with ``L = p = 1``: exact on the fibre when sympy solves it.  Noisy outputs
    (``Δ > 0``): ``E[He_α | y]`` on a tensor trapezoid over ``Z`` (error: step 2h), outer
    expectation by randomised QMC over ``(Z*, ξ)`` (error: standard error over
    ``replicates`` nets of ``2^log2_samples`` points; 0: 2^10, 2^8, 2^7 for L·p = 1, 2, 3),
    ``L·p ≤ 3``.  Noiseless continuous outputs: not estimated.
    """
    expr, symbols = _prepare(expr, symbols)
    d = len(symbols)
    dim = d // seq_len
    alphas = [a for a in multi_indices(d, order) if sum(a) > 0]
    g = numeric_function(expr, symbols)
    moments: list[ConditionalMoment] = []
    method = ""
    if noise == 0:
        vals = _discrete_values(g, d, values, discrete)
        if vals is None:
            moments = _fibre_conditional_moments(expr, symbols[0], alphas) if d == 1 else None
            if moments is None:
                return Exponents("generative", None, [None] * dim, order,
                                 "not estimated (noiseless continuous output without an exact "
                                 "fibre: give a noise)")
            method = "exact, on the fibre by sympy.solve"
        else:
            moments, method = _discrete_conditional_moments(expr, symbols, g, alphas, vals)
    else:
        if d > 3:
            return Exponents("generative", None, [None] * dim, order,
                             "not estimated (noisy output with L·p > 3)")
        log2 = log2_samples or {1: 10, 2: 8, 3: 7}[d]
        moments, method = _noisy_conditional_moments(g, d, alphas, noise, log2,
                                                     replicates, seed)
    entries = [(m.index, not m.is_zero) for m in moments]
    overall, per = _lowest(entries, dim, order)
    return Exponents("generative", overall, per, order, method,
                     {m.index: m for m in moments})


def _discrete_conditional_moments(expr, symbols, g, alphas, vals):
    """``r_α = Σ_v E[He_α 1{y = v}]² / P(v) / α!``: exact when ``g`` is constant on orthants,
    else Gauss–Hermite (error: the rule with half the nodes)."""
    d = len(symbols)
    functions = [_hermite_product(a, symbols) for a in alphas]
    exact = _exact_class_moments(expr, symbols, vals, functions)
    if exact is not None:
        _, probs, table = exact
        moments = []
        for j, a in enumerate(alphas):
            r = sum(t[j] ** 2 / p for p, t in zip(probs, table, strict=True) if p != 0)
            r = sp.simplify(r / _alpha_factorial(a))
            moments.append(ConditionalMoment(a, float(r), 0.0, r))
        return moments, "exact sums over the output values (orthant moments)"
    n = GH_NODES.get(d, 8)
    fact = np.array([_alpha_factorial(a) for a in alphas], dtype=float)
    rs = []
    for m in (n, n // 2):
        Z, w = _gh_tensor(d, m)
        y = g(Z)
        He = _hermite_values(alphas, Z)
        r = np.zeros(len(alphas))
        for v in vals:
            ind = w * (y == v)
            if ind.sum() > 0:
                r += (He @ ind) ** 2 / ind.sum()
        rs.append(r / fact)
    err = np.abs(rs[0] - rs[1])
    moments = [ConditionalMoment(a, float(v), float(e))
               for a, v, e in zip(alphas, rs[0], err, strict=True)]
    return moments, f"sums over the output values, Gauss–Hermite {n}^{d} (error: {n // 2}^{d})"


def _noisy_conditional_moments(g, d, alphas, noise, log2_samples, replicates, seed):
    """``r_α`` for ``y = g(Z) + sqrt(Δ) ξ``: inner trapezoid, outer randomised QMC."""
    n_axis = {1: 1601, 2: 161, 3: 49}[d]
    half = 8.0
    x = np.linspace(-half, half, n_axis)
    h = x[1] - x[0]
    fact = np.array([_alpha_factorial(a) for a in alphas], dtype=float)
    rule = sobol_replicates(d + 1, log2_samples, replicates, seed)
    Zs = rule.points[:, :d]
    y_out = g(Zs) + math.sqrt(noise) * rule.points[:, d]
    results = []
    for step in (1, 2):
        xs = x[::step]
        Z = np.stack(np.meshgrid(*([xs] * d), indexing="ij"), -1).reshape(-1, d)
        w = np.exp(-0.5 * (Z**2).sum(-1)) * (h * step / math.sqrt(2 * math.pi)) ** d
        gz = g(Z)
        He = _hermite_values(alphas, Z)  # (A, N)
        cond = np.empty((len(y_out), len(alphas)))
        for lo in range(0, len(y_out), 256):
            yy = y_out[lo:lo + 256]
            logk = -0.5 * (yy[:, None] - gz[None, :]) ** 2 / noise
            K = np.exp(logk - logk.max(axis=1, keepdims=True)) * w[None, :]
            cond[lo:lo + 256] = (K @ He.T) / K.sum(axis=1, keepdims=True)
        sq = cond**2 / fact
        results.append(np.tensordot(rule.weight_sets, sq, axes=(1, 0)))  # (1+R, A)
    primary = results[0]
    err_outer = rule.error_from(primary)
    err_inner = np.abs(primary[0] - results[1][0])
    err = np.sqrt(err_outer**2 + err_inner**2)
    moments = [ConditionalMoment(a, float(v), float(e))
               for a, v, e in zip(alphas, primary[0], err, strict=True)]
    method = (f"inner trapezoid {n_axis}^{d} on [-{half:g}, {half:g}]^{d} (error: step 2h), "
              f"outer {rule.description} over (Z*, ξ)")
    return moments, method


# ------------------------------------------------------------------------- Bayes facts


@dataclass
class BayesFacts:
    """Facts about the Bayes-optimal learner at ``Q = 0`` read off the posterior (through
    :func:`~asymptotics.thresholds.weak_recovery_thresholds`), per direction (0-based)."""

    trivial: list[bool]  # E[z_k | y] != 0: learned at any α > 0
    not_learnable: list[bool]  # F vanishes on k: not learnable from Q = 0
    alpha_c: list[float]
    stderr: list[float]
    status: list[str]
    mean_square_posterior_mean: list[float] | None
    method: str


def bayes_facts(channel, settings=None) -> BayesFacts:
    """Trivial / not-learnable directions of ``channel`` from its posterior at ``Q = 0``."""
    from .thresholds import weak_recovery_thresholds

    return facts_from_thresholds(weak_recovery_thresholds(channel, settings))


def facts_from_thresholds(res) -> BayesFacts:
    """:class:`BayesFacts` of a :class:`~asymptotics.thresholds.ThresholdResult`."""
    dirs = res.directions
    return BayesFacts(
        [d.status == "trivial" for d in dirs], [d.status == "not-learnable" for d in dirs],
        [d.alpha_c for d in dirs], [d.stderr for d in dirs], [d.status for d in dirs],
        res.diagnostics.get("mean_square_posterior_mean"),
        f"weak_recovery_thresholds ({res.method}; {res.diagnostics.get('outer', '')})")


# ---------------------------------------------------------------- closed-form thresholds


@dataclass
class ThresholdCheck:
    """A closed-form α_c beside the numerical one: ``agrees`` when they differ by at most
    ``ZERO_SIGMAS`` numerical errors or a relative ``rtol``."""

    direction: int  # 1-based
    closed_form: float
    numerical: float
    stderr: float
    difference: float
    agrees: bool


@dataclass
class ClosedFormThreshold:
    """Weak-recovery thresholds from the exact operator ``F`` (THEORY §5), per direction
    (0-based lists), or ``found = False`` with the reason."""

    found: bool
    reason: str
    alpha_c: list  # sympy expressions (0 trivial, oo not learnable)
    status: list[str]
    operator: sp.Matrix | None = None
    method: str = ""
    checks: list[ThresholdCheck] = field(default_factory=list)

    @property
    def agrees(self) -> bool:
        """Every cross-check agrees (False without checks)."""
        return bool(self.checks) and all(c.agrees for c in self.checks)


def _sym_basis(p: int) -> list[sp.Matrix]:
    basis = []
    for i in range(p):
        for j in range(i, p):
            M = sp.zeros(p, p)
            if i == j:
                M[i, i] = 1
            else:
                M[i, j] = M[j, i] = 1 / sp.sqrt(2)
            basis.append(M)
    return basis


def exact_operator(G_list, weights, seq_len: int, dim: int) -> sp.Matrix:
    """``F`` on Sym(p) in the basis of :func:`asymptotics.thresholds.sym_basis`:
    ``F(M) = Σ_v w_v Σ_{l,l'} G_{ll'}(v) M G_{l'l}(v)`` with ``G (Lp × Lp)`` token-major."""
    basis = _sym_basis(dim)

    def block(G, l, m):
        return G[l * dim:(l + 1) * dim, m * dim:(m + 1) * dim]

    images = []
    for M in basis:
        FM = sp.zeros(dim, dim)
        for G, w in zip(G_list, weights, strict=True):
            for l in range(seq_len):
                for m in range(seq_len):
                    FM += w * block(G, l, m) * M * block(G, m, l)
        images.append(FM)
    n = len(basis)
    return sp.Matrix(n, n, lambda a, b: sp.simplify(
        sum(images[b][i, j] * basis[a][i, j] for i in range(dim) for j in range(dim))))


def _direction_alphas(F: sp.Matrix, dim: int, trivial: list[bool]):
    """``α_c(k) = 1/λ_k`` with ``λ_k`` the largest positive eigenvalue whose eigenvector
    reaches ``k`` (the rule of :func:`asymptotics.thresholds.direction_eigenvalues`)."""
    from .thresholds import SUPPORT_FRACTION

    basis = _sym_basis(dim)
    lam: list = [None] * dim
    for value, _, vectors in F.eigenvects(simplify=True):
        if not float(sp.N(value)) > 0:
            continue
        for vec in vectors:
            M = sum((vec[i] * basis[i] for i in range(len(basis))), sp.zeros(dim, dim))
            diag = np.abs([float(sp.N(M[k, k])) for k in range(dim)])
            if diag.max() <= 0:
                continue
            for k in range(dim):
                if diag[k] >= SUPPORT_FRACTION * diag.max() and (
                        lam[k] is None or float(sp.N(value)) > float(sp.N(lam[k]))):
                    lam[k] = value
    alphas, status = [], []
    for k in range(dim):
        if trivial[k]:
            alphas.append(sp.Integer(0))
            status.append("trivial")
        elif lam[k] is None:
            alphas.append(sp.oo)
            status.append("not-learnable")
        else:
            alphas.append(sp.nsimplify(sp.simplify(1 / lam[k])))
            status.append("finite")
    return alphas, status


def _discrete_closed_form(expr, symbols, seq_len, dim, values):
    d = len(symbols)
    pairs = [(i, j) for i in range(d) for j in range(i, d)]
    functions = list(symbols) + [symbols[i] * symbols[j] for i, j in pairs]
    found = _exact_class_moments(expr, symbols, values, functions)
    if found is None:
        return None
    vals, probs, table = found
    trivial = [False] * dim
    G_list, weights = [], []
    for p_v, row in zip(probs, table, strict=True):
        if p_v == 0:
            continue
        for i in range(d):
            if sp.simplify(row[i]) != 0:
                trivial[_direction_of(i, dim)] = True
        G = sp.zeros(d, d)
        for (i, j), m in zip(pairs, row[d:], strict=True):
            G[i, j] = G[j, i] = sp.simplify(m / p_v) - (1 if i == j else 0)
        G_list.append(G)
        weights.append(p_v)
    F = exact_operator(G_list, weights, seq_len, dim)
    alphas, status = _direction_alphas(F, dim, trivial)
    return alphas, status, F, f"exact sum over the values {[str(v) for v in vals]}"


def _fibre(expr, z):
    """``L = p = 1``, noiseless continuous ``y = g(z)``: on each half-line ``z = s0 u``
    (``u > 0``), the fibre ``{r : g(r) = g(s0 u)}`` from ``sympy.solve`` per half-line, with
    posterior weights ``φ(r)/|g'(r)|``: ``[(u, roots, weights)] * 2``, or None."""
    y = sp.Dummy("y", real=True)
    v = sp.Dummy("v", positive=True)
    branches = []  # (s, v(y), |dg/dv|(v)): the fibre on the half-line z = s v, v > 0
    for s in (1, -1):
        g_s = expr.subs(z, s * v)
        if sp.diff(g_s, v) == 0:
            return None  # constant on a half-line: an atom in the law of y
        try:
            branches += [(s, r, sp.Abs(sp.diff(g_s, v))) for r in sp.solve(sp.Eq(g_s, y), v)]
        except (NotImplementedError, ValueError, TypeError):
            return None
    if not branches:
        return None
    u = sp.Dummy("u", positive=True)
    out = []
    for s0 in (1, -1):
        at = {y: expr.subs(z, s0 * u)}
        rs, w = [], []
        for s, r, dg in branches:
            r = sp.simplify(r.subs(at))
            if r.is_positive is None:
                return None  # cannot tell whether this root lies on its half-line
            if r.is_positive and s * r not in rs:
                rs.append(s * r)
                w.append(sp.exp(-r**2 / 2) / dg.subs(v, r))
        if s0 * u not in rs:
            return None  # the fibre was not found
        out.append((u, rs, w))
    return out


def _fibre_mean(rs, w, f) -> sp.Expr:
    """``E[f(z) | y]`` on one fibre."""
    return sp.simplify(sum(wi * f(r) for wi, r in zip(w, rs, strict=True)) / sum(w))


def _fibre_closed_form(expr, z):
    """``F = E_z[(E[z² | g(z)] - 1)²]`` on the fibre of :func:`_fibre` (or trivial if
    ``E[z | y] ≠ 0``)."""
    fibre = _fibre(expr, z)
    if fibre is None:
        return None
    F = sp.Integer(0)
    for u, rs, w in fibre:
        if _fibre_mean(rs, w, lambda r: r) != 0:
            return [sp.Integer(0)], ["trivial"], None, "fibre by sympy.solve: E[z | y] != 0"
        G = _fibre_mean(rs, w, lambda r: r**2) - 1
        if not G.is_polynomial(u):
            return None
        F += _poly_expectation(sp.Poly(sp.expand(G**2), u), [True])
    F = sp.simplify(F)
    if F == 0:
        return [sp.oo], ["not-learnable"], sp.Matrix([[F]]), "fibre by sympy.solve"
    return [sp.nsimplify(1 / F)], ["finite"], sp.Matrix([[F]]), "fibre by sympy.solve"


def _fibre_conditional_moments(expr, z, alphas):
    """Exact ``r_α = E_z[E[He_α | g(z)]²]/α!`` from the fibre (None if it does not close)."""
    fibre = _fibre(expr, z)
    if fibre is None:
        return None
    out = []
    for a in alphas:
        total = sp.Integer(0)
        for u, rs, w in fibre:
            m = _fibre_mean(rs, w, lambda r, a=a: sp.hermite_prob(a[0], r))
            if not m.is_polynomial(u):
                return None
            total += _poly_expectation(sp.Poly(sp.expand(m**2), u), [True])
        r = sp.simplify(total / _alpha_factorial(a))
        out.append(ConditionalMoment(a, float(r), 0.0, r))
    return out


def closed_form_threshold(expr, symbols=None, *, seq_len: int = 1, noise: float = 0.0,
                          values=None, discrete: bool | None = None, reference=None,
                          rtol: float = 1e-6) -> ClosedFormThreshold:
    """Closed-form ``α_c = 1/λ_k`` at ``Q = 0`` where the operator ``F`` closes exactly.

    Noiseless outputs taking finitely many values, constant on orthants:
    ``F = Σ_v P(v) G(v) ⊗ G(v)`` with ``G(v) = E[zzᵀ | y = v] - I`` from exact Gaussian
    orthant moments.  ``L = p = 1`` noiseless continuous outputs whose fibre sympy solves:
    ``F = E(E[z² | y] - 1)²``.  Otherwise (noise, no exact form): ``found = False``.
    ``reference``: a numerical :class:`~asymptotics.thresholds.ThresholdResult` of the same
    link to cross-check against.
    """
    expr, symbols = _prepare(expr, symbols)
    d = len(symbols)
    dim = d // seq_len
    none = ClosedFormThreshold(False, "", [None] * dim, ["no closed form"] * dim)
    if noise != 0:
        none.reason = "noisy output: no closed form attempted"
        return none
    g = numeric_function(expr, symbols)
    vals = _discrete_values(g, d, values, discrete)
    if vals is not None:
        out = _discrete_closed_form(expr, symbols, seq_len, dim, vals)
        reason = "the output is not constant on the orthants of its variables"
    elif d == 1:
        out = _fibre_closed_form(expr, symbols[0])
        reason = "sympy found no fibre with polynomial E[z² | y]"
    else:
        out, reason = None, "continuous output with L·p > 1"
    if out is None:
        none.reason = reason
        return none
    alphas, status, F, method = out
    res = ClosedFormThreshold(True, "", alphas, status, F, method)
    if reference is not None:
        res.checks = cross_check(alphas, reference, rtol)
    return res


def cross_check(alphas, reference, rtol: float = 1e-6) -> list[ThresholdCheck]:
    """Compare closed-form ``alphas`` with a numerical ``ThresholdResult`` (ValueError if
    their numbers of directions differ)."""
    if len(alphas) != len(reference.directions):
        raise ValueError(f"the reference has {len(reference.directions)} directions, the "
                         f"closed form {len(alphas)}")
    checks = []
    for k, (a, num) in enumerate(zip(alphas, reference.directions, strict=True)):
        a_f = float(sp.N(a)) if a != sp.oo else math.inf
        if math.isinf(a_f) or math.isinf(num.alpha_c):
            diff = 0.0 if a_f == num.alpha_c else math.inf
            agrees = a_f == num.alpha_c
        else:
            diff = abs(a_f - num.alpha_c)
            agrees = bool(diff <= max(ZERO_SIGMAS * num.stderr, rtol * abs(a_f)))
        checks.append(ThresholdCheck(k + 1, a_f, num.alpha_c, num.stderr, diff, agrees))
    return checks


# ------------------------------------------------------------------------ identity checks


@dataclass
class IdentityCheck:
    """``lhs = rhs``: ``exact`` when sympy simplifies the difference to 0, ``residual`` the
    largest ``|lhs - rhs|`` (relative to ``1 + |rhs|``) at the numerical sample points
    (including the package's own code where it is compared); ``passed`` when exact (or not
    decided symbolically) and ``residual <= tol``."""

    name: str
    statement: str
    exact: bool | None  # None: sympy could not decide
    residual: float
    tol: float

    @property
    def passed(self) -> bool:
        return self.exact is not False and self.residual <= self.tol


def check_identity(name: str, lhs, rhs, variables, samples, tol: float = 1e-10,
                   code=None) -> IdentityCheck:
    """Check ``lhs = rhs`` symbolically and at ``samples`` (rows of values of
    ``variables``); ``code(*row)``, if given, must equal ``rhs`` there as well."""
    diff = sp.cancel(sp.powsimp(sp.expand(sp.together(lhs - rhs))))  # cheap first
    if diff != 0:
        diff = sp.simplify(diff)
    if diff == 0:
        exact: bool | None = True
    else:
        exact = None if diff.free_symbols else False
    f_l = sp.lambdify(variables, lhs, "math")
    f_r = sp.lambdify(variables, rhs, "math")
    residual = 0.0
    for row in samples:
        r = float(f_r(*row))
        vals = [float(f_l(*row))] + ([float(np.ravel(code(*row))[0])] if code else [])
        residual = max(residual, *(abs(x - r) / (1 + abs(r)) for x in vals))
    if exact is None and residual > tol:
        exact = False
    return IdentityCheck(name, f"{lhs} = {rhs}", exact, residual, tol)


def gaussian_expectation(expr, variables) -> sp.Expr:
    """Exact ``E[f]`` for ``f`` polynomial in standard Gaussian ``variables`` (moments
    ``(n-1)!!``)."""
    poly = sp.Poly(sp.expand(expr), *variables)
    return sp.simplify(_poly_expectation(poly, [False] * len(variables)))


def _sample_rows(n: int, d: int, seed: int, low: float = -2.0, high: float = 2.0):
    return np.random.default_rng(seed).uniform(low, high, (n, d)).tolist()


def check_linear_fixed_point(samples: int = 8, seed: int = 0) -> list[IdentityCheck]:
    """The linear channel ``y = z + sqrt(Δ) ξ`` with the Gaussian prior (THEORY §6):
    ``Q̂ = α E[g_out²]`` with ``g_out = (y - ω)/(Δ + V)`` is ``α/(Δ + 1 - Q)`` and the SE
    fixed point ``Q = Q̂/(1 + Q̂)`` in ``[0, 1)`` is
    ``½[1 + Δ + α - sqrt((α-1)² + 2(α+1)Δ + Δ²)]`` (checked against
    :func:`~asymptotics.state_evolution.linear_channel_fixed_point` and the channel's
    posterior mean)."""
    from .channels.closed_form import LinearChannel
    from .state_evolution import linear_channel_fixed_point

    a, D, Q = sp.symbols("alpha Delta Q", positive=True)
    z, w, xi = sp.symbols("z omega xi", real=True)
    rng = np.random.default_rng(seed)
    rows = [[float(x), float(y)] for x, y in zip(rng.uniform(0.05, 4, samples),
                                                  rng.uniform(0, 2, samples), strict=True)]
    # y - ω = sqrt(V) t + sqrt(Δ) ξ with t, ξ standard Gaussian (z = ω + sqrt(V) t)
    V = 1 - Q
    t = sp.Symbol("t", real=True)
    Ey2 = gaussian_expectation((sp.sqrt(V) * t + sp.sqrt(D) * xi) ** 2, [t, xi])
    qhat = a * Ey2 / (D + V) ** 2
    checks = [check_identity("linear: Q̂ = α E g_out²", qhat, a / (D + 1 - Q), [a, D, Q],
                             [r + [0.3] for r in rows])]
    roots = sp.solve(sp.Eq(Q, (a / (D + 1 - Q)) / (1 + a / (D + 1 - Q))), Q)
    closed = (1 + D + a - sp.sqrt((a - 1) ** 2 + 2 * (a + 1) * D + D**2)) / 2
    root = min(roots, key=lambda r: abs(float(sp.N((r - closed).subs({a: 0.7, D: 0.3})))))
    checks.append(check_identity(
        "linear: SE fixed point", root, closed, [a, D], rows,
        code=lambda al, de: linear_channel_fixed_point(al, de)))
    # the channel's posterior mean: ω + V/(V + Δ) (y - ω), so g_out = (y - ω)/(Δ + V)
    y_s, v_s = sp.symbols("y V", positive=True)
    mean = w + v_s / (v_s + D) * (y_s - w)
    gout = (mean - w) / v_s

    def code_gout(y_v, w_v, v_v, d_v):
        post = LinearChannel(d_v).posterior(np.array([y_v]), np.array([[[w_v]]]),
                                            np.array([[v_v]]))
        return (post.mean[..., 0, 0] - w_v) / v_v

    prow = [[float(r[0]), float(r[1]), float(r[2]), float(r[3])] for r in zip(
        rng.normal(size=samples), rng.normal(size=samples), rng.uniform(0.1, 1, samples),
        rng.uniform(0.01, 2, samples), strict=True)]
    checks.append(check_identity("linear: g_out = (y - ω)/(Δ + V)", gout,
                                 (y_s - w) / (D + v_s), [y_s, w, v_s, D], prow,
                                 code=code_gout))
    return checks


def check_attention_two_tokens(samples: int = 8, seed: int = 0) -> list[IdentityCheck]:
    """``L = 2`` identities of the attention fibre (THEORY §2), against the compiled kernels
    :func:`~asymptotics.channels._attention_kernels.mixer_into` and
    ``inverse_logdet_into``:

    * softmax rows are sigmoids: ``softmax(β s sᵀ)_{00} = σ(-β s_0 (s_1 - s_0))``;
    * ``det(A) = c² + c(σ_0 + σ_1) + σ_0 + σ_1 - 1`` for ``A = softmax + cI``, with
      ``σ_0 + σ_1 ≥ 1`` so ``det A ≥ c(1 + c) > 0`` (log|det| = log det);
    * the fibre: with ``u = log(y_01/y_00)``, ``v = log(y_10/y_11)``,
      ``(a_1 - a_0)² = -(u + v)/β`` and ``a_0 = u / (β (a_1 - a_0))``.
    """
    from .channels._attention_kernels import inverse_logdet_into, mixer_into

    s0, s1, b, c = sp.symbols("s0 s1 beta c", real=True)
    rows = [[r[0], r[1], abs(r[2]) + 0.1, abs(r[3])] for r in _sample_rows(samples, 4, seed)]
    e00, e01 = sp.exp(b * s0 * s0), sp.exp(b * s0 * s1)
    e10, e11 = sp.exp(b * s1 * s0), sp.exp(b * s1 * s1)
    soft00, soft11 = e00 / (e00 + e01), e11 / (e10 + e11)

    def sig(x):
        return 1 / (1 + sp.exp(-x))

    def kernel_A(i, j):
        def code(v0, v1, beta, skip):
            zU = np.array([[v0], [v1]])
            B, A = np.zeros((2, 2)), np.zeros((2, 2))
            mixer_into(zU, skip, beta, B, A, np.zeros(2), np.zeros((2, 2)))
            return A[i, j] - (skip if i == j else 0.0)
        return code

    checks = [
        check_identity("attention L=2: softmax row 0 = sigmoid", soft00,
                       sig(-b * s0 * (s1 - s0)), [s0, s1, b, c], rows, code=kernel_A(0, 0)),
        check_identity("attention L=2: softmax row 1 = sigmoid", soft11,
                       sig(-b * s1 * (s0 - s1)), [s0, s1, b, c], rows, code=kernel_A(1, 1)),
    ]
    sg0, sg1 = sig(-b * s0 * (s1 - s0)), sig(-b * s1 * (s0 - s1))
    A = sp.Matrix([[sg0 + c, 1 - sg0], [1 - sg1, sg1 + c]])

    def kernel_logdet(v0, v1, beta, skip):
        zU = np.array([[v0], [v1]])
        B, Ah = np.zeros((2, 2)), np.zeros((2, 2))
        mixer_into(zU, skip, beta, B, Ah, np.zeros(2), np.zeros((2, 2)))
        return inverse_logdet_into(B, np.zeros((2, 2)), np.zeros((2, 2)))

    det_closed = c**2 + c * (sg0 + sg1) + sg0 + sg1 - 1
    checks.append(check_identity("attention L=2: det(softmax + cI), kernel's log|det|",
                                 A.det(), det_closed, [s0, s1, b, c], rows,
                                 code=lambda *r: math.exp(kernel_logdet(*r))))
    # σ(x0) + σ(x1) - 1 has the sign of x0 + x1 = β(s1 - s0)² >= 0, so det A >= c(1 + c)
    x0, x1 = -b * s0 * (s1 - s0), -b * s1 * (s0 - s1)
    checks.append(check_identity("attention L=2: sigmoid arguments sum to β(s1-s0)²",
                                 x0 + x1, b * (s1 - s0) ** 2, [s0, s1, b, c], rows))
    u = sp.log(e01 / e00)
    v = sp.log(e10 / e11)
    checks.append(check_identity("attention L=2 fibre: (a1-a0)² = -(u+v)/β",
                                 sp.expand_log(-(u + v) / b, force=True), (s1 - s0) ** 2,
                                 [s0, s1, b, c], rows))
    checks.append(check_identity("attention L=2 fibre: a0 = u/(β(a1-a0))",
                                 sp.expand_log(u, force=True) / (b * (s1 - s0)), s0,
                                 [s0, s1, b, c], [r for r in rows if abs(r[1] - r[0]) > 1e-3]))
    return checks


def identity_checks(samples: int = 8, seed: int = 0) -> list[IdentityCheck]:
    """Every identity check of this module (linear channel, two-token attention)."""
    return check_linear_fixed_point(samples, seed) + check_attention_two_tokens(samples, seed)


# ------------------------------------------------------------------------ whole analysis


@dataclass
class LinkAnalysis:
    """Everything :func:`analyse_link` finds; Hermite facts and Bayes facts apart.

    ``bayes``/``numerical`` are None when the posterior was not computed (``bayes_note``
    says why, e.g. a noiseless continuous link)."""

    text: str
    seq_len: int
    dim: int
    noise: float
    order: int
    symbols: tuple[str, ...]
    expansion: HermiteExpansion
    information: Exponents
    generative: Exponents
    closed_form: ClosedFormThreshold
    bayes: BayesFacts | None
    numerical: object | None  # ThresholdResult
    bayes_note: str = ""


def check_analysis_options(noise, order) -> tuple[float, int]:
    """``(Δ, K)`` or :class:`~asymptotics.channels.link.LinkError` naming ``--noise`` or
    ``--order``."""
    from .channels.link import LinkError

    if isinstance(noise, bool) or not isinstance(noise, (int, float, np.number)) \
            or not math.isfinite(noise) or noise < 0:
        raise LinkError("--noise", f"must be a finite number >= 0, got {noise!r}")
    if isinstance(order, bool) or not isinstance(order, (int, np.integer)) or order < 1:
        raise LinkError("--order", f"must be an integer >= 1, got {order!r}")
    return float(noise), int(order)


def parse_for_analysis(link, seq_len=None, dim=None, noise=0.0, order=4):
    """Check every input before any work: ``(spec, expr, symbols, Δ, K)``; refusals are
    :class:`~asymptotics.channels.link.LinkError` naming the option."""
    from .channels.link import LinkError, parse_link

    noise, order = check_analysis_options(noise, order)
    spec = parse_link(link, seq_len, dim)
    if spec.expression is None or spec.out_dim != 1:
        raise LinkError("--link", "the symbolic analysis needs one scalar formula")
    symbols = link_symbols(spec.seq_len, spec.dim)
    if poles := real_poles(spec.expression, symbols):
        raise LinkError("--link", f"{poles[0]} has a pole on the real line: the link is not "
                                  "square integrable on Gaussian inputs")
    try:
        check_finite_on_gaussian(spec.expression, symbols)
    except ValueError as exc:
        raise LinkError("--link", str(exc)) from None
    if spec.discrete and noise:
        raise LinkError("--noise", "a discrete link takes no noise")
    return spec, _as_expr(spec.expression, symbols), symbols, noise, order


def analyse_link(link, seq_len: int | None = None, dim: int | None = None,
                 noise: float = 0.0, order: int = 4, *, numerical: bool = True,
                 settings=None, timeout: float = 5.0) -> LinkAnalysis:
    """Hermite coefficients and exponents (symbolic), the generative-exponent estimate,
    closed-form thresholds, and — apart — the Bayes facts and numerical thresholds of
    :class:`~asymptotics.channels.link.LinkChannel` at ``Q = 0`` (``numerical=True``)."""
    from .channels.link import LinkError

    spec, expr, symbols, noise, order = parse_for_analysis(link, seq_len, dim, noise, order)
    L = spec.seq_len
    values = spec.values[:, 0] if spec.discrete else None
    expansion = hermite_coefficients(expr, symbols, order, seq_len=L, timeout=timeout)
    info = information_exponent(expansion)
    gen = generative_exponent_estimate(expr, symbols, order, seq_len=L, noise=noise,
                                       values=values, discrete=spec.discrete)
    result, facts, note = None, None, ""
    if numerical:
        try:
            from .channels.link import LinkChannel

            channel = LinkChannel(spec, noise=noise if noise else None)
        except (ImportError, LinkError) as exc:
            note = str(exc).splitlines()[0]
        else:
            from .thresholds import weak_recovery_thresholds

            result = weak_recovery_thresholds(channel, settings)
            facts = facts_from_thresholds(result)
    else:
        note = "not computed"
    closed = closed_form_threshold(expr, symbols, seq_len=L, noise=noise, values=values,
                                   discrete=spec.discrete, reference=result)
    return LinkAnalysis(spec.text, L, spec.dim, noise, order, tuple(map(str, symbols)),
                        expansion, info, gen, closed, facts, result, note)


__all__ = [
    "Coefficient",
    "HermiteExpansion",
    "Exponents",
    "ConditionalMoment",
    "BayesFacts",
    "ClosedFormThreshold",
    "ThresholdCheck",
    "IdentityCheck",
    "LinkAnalysis",
    "link_symbols",
    "hermite_coefficients",
    "information_exponent",
    "generative_exponent_estimate",
    "bayes_facts",
    "closed_form_threshold",
    "cross_check",
    "exact_operator",
    "check_identity",
    "identity_checks",
    "check_linear_fixed_point",
    "check_attention_two_tokens",
    "analyse_link",
    "parse_for_analysis",
]
