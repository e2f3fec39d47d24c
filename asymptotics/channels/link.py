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

from ..integrate import combine_error
from .base import (
    LOG_2PI,
    Capabilities,
    Channel,
    MomentSets,
    Posterior,
    check_device,
    check_variance,
)

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


# ------------------------------------------------------------------------------ channel

OUTPUT_KINDS = ("auto", "continuous", "discrete")
HALF_WIDTH = 9.0  # inner trapezoid range in standard deviations
#: default node spacing of the inner trapezoid (d <= 2), before the noise refines it
MAX_SPACING = {1: 0.25, 2: 0.3}
MAX_AXIS_NODES = {1: 4097, 2: 129}  # per-axis caps at resolution 0 (each doubles per unit)
GH_NODES = {3: 10, 4: 7}  # tensor Gauss–Hermite nodes per axis at resolution 0
QMC_LOG2 = 10  # RQMC: 8 scrambled Sobol' nets of 2^(QMC_LOG2 + 2r) points, L·p > 4
CHUNK = 2**21  # (outer samples) × (inner nodes) per evaluation block


def _odd(n: float) -> int:
    n = int(np.ceil(n))
    return n + 1 - n % 2


class LinkChannel(Channel):
    """``y = g(Z) + √Δ ξ`` (continuous, ``Δ > 0``, vector outputs allowed) or ``y = g(Z)``
    with finitely many values (discrete, exact likelihood), for a link ``g`` given as a
    formula or callable (:func:`parse_link`); standard Gaussian prior of ``Z``.

    Posterior moments ``E[h(Z) | y] = ∫ N(Z; ω, V) P(y|Z) h(Z) dZ / Z_out`` with nodes
    ``Z = ω + chol(V)·t`` on an inner rule over ``t`` (THEORY §9, :attr:`inner_description`):

    * L·p <= 2: tensor trapezoid on ``[-9, 9]^d`` (Gaussian weights) whose spacing
      resolves the likelihood, ``h <= √Δ / (3 G)`` with ``G`` the spread of ``g`` on the
      probe; embedded error from every other node;
    * L·p in {3, 4}: tensor Gauss–Hermite, embedded error from the half-size rule;
    * L·p > 4: randomised QMC, 8 scrambled Sobol' nets drawn from ``N(ω, V)`` (the prior
      as importance density), error = standard error across nets;
    * discrete links constant on every orthant of ``Z`` (``g(Z) = g(sign Z)``, e.g.
      ``sign(z1*z2)``): exact products of truncated-Gaussian moments when ``V`` is
      diagonal (plain rules converge slowly across the discontinuities).

    ``resolution`` doubles the nodes per axis (or quadruples the QMC points) per unit;
    ``inner_nodes`` (0: the defaults above) sets the nodes per axis at resolution 0 (QMC:
    points per net, rounded down to a power of 2, at least 16).
    """

    name = "link"
    capabilities = Capabilities(inner_rule=True)

    def __init__(self, link, seq_len: int | None = None, dim: int | None = None,
                 noise: float | None = None, outputs: str = "auto", resolution: int = 0,
                 seed: int = 0, inner_nodes: int = 0):
        spec = link if isinstance(link, LinkSpec) else parse_link(link, seq_len, dim)
        if outputs not in OUTPUT_KINDS:
            raise LinkError("--outputs", f"must be one of {OUTPUT_KINDS}, got {outputs!r}")
        if noise is not None:
            if isinstance(noise, bool) or not isinstance(noise, (int, float, np.number)) \
                    or not np.isfinite(noise) or noise < 0:
                raise LinkError("--noise", f"must be a finite number >= 0, got {noise!r}")
            noise = float(noise)
        if outputs == "auto":
            outputs = "discrete" if spec.discrete and not noise else "continuous"
        if outputs == "discrete":
            if not spec.discrete:
                raise LinkError("--link", f"{spec.text} takes more than "
                                          f"{MAX_DISCRETE_VALUES} values: not discrete")
            if spec.out_dim != 1:
                raise LinkError("--link", "a discrete link must have one output component")
            if noise:
                raise LinkError("--noise", "a discrete link takes no noise (use outputs "
                                           "'continuous' for a noisy one)")
            noise = 0.0
        elif not noise:
            raise LinkError("--noise", f"the continuous link {spec.text} needs Gaussian "
                                       "noise Δ > 0 (a noiseless fibre is known only for "
                                       "the built-in channels)")
        self.spec = spec
        self.seq_len, self.dim = spec.seq_len, spec.dim
        self.noise = float(noise)
        self.outputs = outputs
        self.discrete = outputs == "discrete"
        self.out_dim = spec.out_dim
        self.noise_dim = 0 if self.discrete else spec.out_dim
        self.discrete_outputs = spec.values[:, 0].copy() if self.discrete else None
        from ..checks import MAX_RESOLUTION, check_int

        check_int("resolution", resolution, 0, MAX_RESOLUTION)
        check_int("seed", seed, 0)
        check_int("inner_nodes", inner_nodes, 0)
        self.resolution, self.seed = int(resolution), int(seed)
        self.inner_nodes = int(inner_nodes)
        Z = np.random.default_rng(PROBE_SEED).standard_normal((PROBE_SIZE, self.seq_len,
                                                                 self.dim))
        with np.errstate(all="ignore"):
            y = spec.func(Z)
            flipped = [spec.func(Z * np.where(np.arange(self.dim) == k, -1.0, 1.0))
                       for k in range(self.dim)]
            even = np.array([np.array_equal(f, y) for f in flipped])
            odd = np.array([np.array_equal(f, -y) for f in flipped])
            global_flip = np.array_equal(spec.func(-Z), y)
            self.orthant = bool(self.discrete and np.array_equal(spec.func(np.sign(Z)), y))
        # E[z_k | y] = 0: g invariant under flipping direction k (or every direction)
        self.symmetric_directions = even | global_flip
        self.sign_symmetric = bool(self.symmetric_directions.all())
        # Q stays diagonal: flipping direction k maps y to ±y (a bijection that keeps the
        # noise and, for discrete links with a symmetric value set, the outputs)
        symmetric_values = not self.discrete or np.array_equal(
            np.sort(-self.discrete_outputs), self.discrete_outputs)
        diagonal = self.dim == 1 or bool(np.all(even | (odd & symmetric_values)))
        self.capabilities = Capabilities(diagonal_overlaps=diagonal, inner_rule=True)
        self.scale = float(np.sqrt(np.mean(np.var(y, axis=0)))) or 1.0
        self.rule = self._inner_rule()
        if self.orthant:
            d = self.seq_len * self.dim
            corners = np.array(np.meshgrid(*([[-1.0, 1.0]] * d), indexing="ij")).reshape(d, -1).T
            self._corners = corners  # (2^d, d)
            self._corner_values = spec.func(corners.reshape(-1, self.seq_len, self.dim))[:, 0]

    # rules ------------------------------------------------------------------------------
    def _inner_rule(self):
        from ..integrate import gauss_hermite, sobol_replicates, trapezoid

        d, r = self.seq_len * self.dim, self.resolution
        if d <= 2:
            h = MAX_SPACING[d]
            if not self.discrete:
                h = min(h, np.sqrt(self.noise) / (3.0 * self.scale))
            n = min(_odd(2 * HALF_WIDTH / h + 1), MAX_AXIS_NODES[d])
            if self.inner_nodes:
                n = max(3, _odd(self.inner_nodes))
            return trapezoid(d, (n - 1) * 2**r + 1, HALF_WIDTH)
        if d <= 4:
            return gauss_hermite(d, max(2, self.inner_nodes or GH_NODES[d]) * 2**r)
        log2 = int(np.log2(self.inner_nodes)) if self.inner_nodes >= 16 else QMC_LOG2
        return sobol_replicates(d, log2 + 2 * r, 8, self.seed)

    def refined(self, resolution: int, seed: int = 0) -> LinkChannel:
        if resolution == self.resolution and seed == self.seed:
            return self
        return LinkChannel(self.spec, noise=self.noise, outputs=self.outputs,
                           resolution=resolution, seed=seed, inner_nodes=self.inner_nodes)

    @property
    def inner_description(self) -> str:
        if self.orthant:
            return f"exact orthant sums (diagonal V), else {self.rule.description}"
        return self.rule.description

    # forward map ------------------------------------------------------------------------
    def forward(self, Z, noise=None):
        y = self.spec.func(np.asarray(Z, dtype=float))
        if noise is not None and not self.discrete:
            y = y + np.sqrt(self.noise) * np.asarray(noise).reshape(y.shape)
        return y[..., 0] if self.out_dim == 1 else y

    def params(self) -> dict:
        return {"link": self.spec.text, "seq_len": self.seq_len, "dim": self.dim,
                "noise": self.noise, "outputs": self.outputs}

    def perfect_recovery_psi_out(self):
        """Discrete: 0 (P(y | Z) = 1); continuous: ``E log N(y; g(Z), Δ) = -m(log 2πΔ + 1)/2``."""
        if self.discrete:
            return 0.0
        return -0.5 * self.out_dim * (LOG_2PI + np.log(self.noise) + 1.0)

    def output_grid(self, resolution: int = 0, nodes: int = 0, half_width: float = 0.0):
        """Continuous outputs with ``m <= 2`` components: tensor trapezoid over ``y`` on the
        range of ``g`` over 2^16 seeded Gaussian inputs widened by ``8√Δ`` (``half_width``
        overrides the widening), spacing ``√Δ/2`` (the density of ``y`` is smooth on the
        noise scale), at most 4097 (m = 1) or 161 (m = 2) nodes per axis (``nodes``
        overrides), doubled per ``resolution``; embedded rule: every other node.  Mass
        beyond the range shows in the thresholds' ``normalisation``.  Discrete outputs
        (summed exactly) and ``m > 2``: None."""
        m = self.out_dim
        if self.discrete or m > 2:
            return None
        sd = np.sqrt(self.noise)
        rng = np.random.default_rng(PROBE_SEED + 1)
        with np.errstate(all="ignore"):
            g = self.spec.func(rng.standard_normal((2**16, self.seq_len, self.dim)))
        margin = half_width or 8.0 * sd
        lo, hi = g.min(axis=0) - margin, g.max(axis=0) + margin
        axes, w_axes, wc_axes = [], [], []
        for j in range(m):
            n = nodes or min(_odd((hi[j] - lo[j]) / (0.5 * sd) + 1), 4097 if m == 1 else 161)
            n = (_odd(n) - 1) * 2**resolution + 1
            t = np.linspace(lo[j], hi[j], n)
            h = t[1] - t[0]
            w = np.full(n, h)
            w[[0, -1]] = 0.5 * h
            wc = np.zeros(n)
            wc[::2] = 2 * h
            wc[[0, -1]] = h
            axes.append(t)
            w_axes.append(w)
            wc_axes.append(wc)
        grids = np.meshgrid(*axes, indexing="ij")
        y = np.stack([gr.ravel() for gr in grids], axis=-1)
        w = np.prod(np.stack([gr.ravel() for gr in np.meshgrid(*w_axes, indexing="ij")]), 0)
        wc = np.prod(np.stack([gr.ravel() for gr in np.meshgrid(*wc_axes, indexing="ij")]), 0)
        shape = "x".join(str(len(a)) for a in axes)
        return (y[:, 0] if m == 1 else y), np.vstack([w, wc]), f"trapezoid {shape} on y"

    # posterior --------------------------------------------------------------------------
    def posterior_sets(self, obs, omega, V, *, device="cpu", cpu_kernel="numba",
                       second=True, inner_error=True, inner_path="auto") -> MomentSets:
        check_device(device, cpu_kernel)
        L, p, m = self.seq_len, self.dim, self.out_dim
        V = check_variance(V, p)
        obs = np.asarray(obs, dtype=float)
        batch = obs.shape if m == 1 else obs.shape[:-1]
        omega = np.broadcast_to(np.asarray(omega, dtype=float), batch + (L, p))
        y = obs.reshape(-1, m)
        om = omega.reshape(-1, L, p)
        if self.orthant and np.all(V == np.diag(np.diag(V))):
            res = self._orthant_moments(y[:, 0], om, np.diag(V))
        else:
            res = self._rule_moments(y, om, V, inner_error, second)
        S = res.log_norm.shape[0]
        return MomentSets(res.log_norm.reshape((S,) + batch),
                          res.mean.reshape((S,) + batch + (L, p)),
                          res.second.reshape((S,) + batch + (L, p, L, p)))

    def posterior(self, obs, omega, V) -> Posterior:
        s = self.posterior_sets(obs, omega, V)
        err = (combine_error(s.mean, self.rule.error_kind) if s.mean.shape[0] > 1
               else np.zeros_like(s.mean[0]))
        return Posterior(s.log_norm[0], s.mean[0], s.second[0], error=err)

    def _loglik(self, y, g):
        """``log P(y | Z)`` at the nodes: ``y (K, 1, m)``, ``g (K or 1, n, m)``."""
        if self.discrete:
            return np.where(g[..., 0] == y[..., 0], 0.0, -np.inf)
        r2 = ((y - g) ** 2).sum(-1)
        return -0.5 * r2 / self.noise - 0.5 * self.out_dim * (LOG_2PI + np.log(self.noise))

    def _rule_moments(self, y, om, V, inner_error=True, second=True) -> MomentSets:
        L, p = self.seq_len, self.dim
        d = L * p
        rule = self.rule
        W = rule.weight_sets if inner_error else rule.weights[None]
        T = rule.points.reshape(-1, L, p) @ np.linalg.cholesky(V).T  # (n, L, p)
        n, K, S = T.shape[0], om.shape[0], W.shape[0]
        ln = np.empty((S, K))
        mean = np.empty((S, K, d))
        sec = np.empty((S, K, d, d)) if second else np.full((S, K, d, d), np.nan)
        shared = K > 0 and np.all(om == om[0])
        if shared:
            Zs = om[0][None] + T  # (n, L, p)
            with np.errstate(all="ignore"):
                g_shared = self.spec.func(Zs)[None]
        step = max(1, CHUNK // n)
        for a in range(0, K, step):
            sl = slice(a, min(K, a + step))
            if shared:
                Z = np.broadcast_to(Zs[None], (sl.stop - a, n, L, p))
                g = g_shared
            else:
                Z = om[sl, None] + T[None]  # (k, n, L, p)
                with np.errstate(all="ignore"):
                    g = self.spec.func(Z)
            lw = self._loglik(y[sl, None, :], g)  # (k, n)
            lmax = lw.max(axis=1, keepdims=True)
            lmax = np.where(np.isfinite(lmax), lmax, 0.0)
            e = np.exp(lw - lmax)
            we = W[:, None, :] * e[None]  # (S, k, n)
            Zf = Z.reshape(Z.shape[0], n, d)
            tot = we.sum(-1)
            with np.errstate(all="ignore"):
                ln[:, sl] = np.log(tot) + lmax[None, :, 0]
                mean[:, sl] = np.einsum("skn,knd->skd", we, Zf) / tot[..., None]
                if second:
                    sec[:, sl] = (np.einsum("skn,knd,kne->skde", we, Zf, Zf, optimize=True)
                                  / tot[..., None, None])
        return MomentSets(ln, mean.reshape(S, K, L, p), sec.reshape(S, K, L, p, L, p))

    def _orthant_moments(self, y, om, v) -> MomentSets:
        """Exact moments of a link constant on orthants, diagonal ``V`` (``v (p,)``):
        ``Z_out = Σ_{σ: g(σ) = y} Π_j Φ(σ_j ω_j / s_j)`` and truncated-normal moments."""
        from scipy.special import log_ndtr

        L, p = self.seq_len, self.dim
        d = L * p
        K = om.shape[0]
        s = np.sqrt(np.broadcast_to(v, (L, p)).reshape(d))
        w = om.reshape(K, d)
        out = {}
        for sig in (1.0, -1.0):
            x = sig * w / s
            logP = log_ndtr(x)
            r = np.exp(-0.5 * x**2 - 0.5 * LOG_2PI - logP)
            m1 = w + sig * s * r
            var = s**2 * (1.0 - r * (x + r))
            out[sig] = (logP, m1, var + m1**2)
        C = self._corners  # (N, d)
        pos = C > 0
        logP = np.where(pos[None], out[1.0][0][:, None, :], out[-1.0][0][:, None, :]).sum(-1)
        M1 = np.where(pos[None], out[1.0][1][:, None, :], out[-1.0][1][:, None, :])  # (K,N,d)
        M2 = np.where(pos[None], out[1.0][2][:, None, :], out[-1.0][2][:, None, :])
        match = self._corner_values[None, :] == y[:, None]  # (K, N)
        lw = np.where(match, logP, -np.inf)
        lmax = lw.max(axis=1, keepdims=True)
        lmax = np.where(np.isfinite(lmax), lmax, 0.0)
        e = np.exp(lw - lmax)
        tot = e.sum(1)
        with np.errstate(all="ignore"):
            mean = np.einsum("kn,knd->kd", e, M1) / tot[:, None]
            sec = np.einsum("kn,knd,kne->kde", e, M1, M1) / tot[:, None, None]
            diag = np.einsum("kn,knd->kd", e, M2 - M1**2) / tot[:, None]
            ln = np.log(tot) + lmax[:, 0]
        idx = np.arange(d)
        sec[:, idx, idx] += diag
        ln, mean, sec = ln[None], mean.reshape(1, K, L, p), sec.reshape(1, K, L, p, L, p)
        # exact: the alternative set repeats the primary (zero error)
        return MomentSets(np.repeat(ln, 2, 0), np.repeat(mean, 2, 0), np.repeat(sec, 2, 0))

    def null_moment_sets(self, obs) -> tuple[MomentSets, str]:
        """Moments at Q = 0; the mean of a sign-symmetric direction is 0 (an identity)."""
        L, p = self.seq_len, self.dim
        obs = np.asarray(obs, dtype=float)
        K = obs.shape[0]
        sets = self.posterior_sets(obs, np.zeros((K, L, p)), np.eye(p))
        mean = sets.mean.copy()
        mean[..., self.symmetric_directions] = 0.0
        kind = "embedded" if self.orthant else self.rule.error_kind
        return MomentSets(sets.log_norm, mean, sets.second), kind

    # learnability -----------------------------------------------------------------------
    def trivial_directions(self) -> np.ndarray:
        """Per direction: ``E[z_k | y] != 0`` under the prior beyond its error, decided on
        the Q = 0 posterior over outer nodes (the discrete outputs, or 64 seeded Gaussian
        teachers); sign-symmetric directions are False by the identity."""
        L, p = self.seq_len, self.dim
        if self.sign_symmetric:
            return np.zeros(p, dtype=bool)
        if self.discrete:
            obs = self.discrete_outputs
        else:
            rng = np.random.default_rng(PROBE_SEED)
            obs = self.observe(rng.standard_normal((64, L, p)),
                               rng.standard_normal((64, self.noise_dim)))
        sets, kind = self.null_moment_sets(obs)
        m = sets.mean[0]
        err = combine_error(sets.mean, kind) if sets.mean.shape[0] > 1 else 0 * m
        big = np.abs(m) > 10.0 * err + 1e-8  # (K, L, p)
        return big.any(axis=tuple(range(big.ndim - 1)))

    def has_trivial_direction(self) -> bool:
        """Every direction has ``E[z_k | y] != 0`` under the prior (all learned at α > 0);
        a link with only some trivial directions reports them through the posterior mean
        the thresholds test per direction."""
        return bool(self.trivial_directions().all())
