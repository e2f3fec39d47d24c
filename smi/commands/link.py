"""``smi link``: the symbolic analysis of a link ``y = g(Z) (+ sqrt(Δ) ξ)`` (THEORY §10)."""

from __future__ import annotations

import math
import sys

from ..options import fail, integer, number

NAME = "link"
HELP = "symbolic analysis of a link: Hermite coefficients, exponents, Bayes facts, α_c"
DESCRIPTION = (
    "Hermite coefficients c_α = E[g(Z) He_α(Z)] (exact where sympy closes them, else "
    "numerical ± error), information exponents, the generative-exponent estimate, and apart "
    "from them the Bayes facts at Q = 0 (trivial / not learnable, from the posterior) with "
    "closed-form and numerical weak-recovery thresholds (THEORY.md §10).")

SHOWN_COEFFICIENTS = 40  # nonzero coefficients printed at most


def add_arguments(p) -> None:
    p.add_argument("expr", metavar="EXPR",
                   help="the link in z (L = p = 1), z1 … zp (L = 1) or z<l>_<k> (token l, "
                   "direction k), e.g. 'sign(z1*z2)'")
    p.add_argument("--seq-len", default=None, help="tokens L (default: from the symbols)")
    p.add_argument("--dim", default=None, help="directions p (default: from the symbols)")
    p.add_argument("--noise", default="0", help="output noise variance Δ (default 0)")
    p.add_argument("--order", default="4", help="largest Hermite order |α| (default 4)")


def parse(args):
    """Every option checked before any work (one line, exit 2, naming the option)."""
    seq_len = None if args.seq_len is None else integer(args.seq_len, "--seq-len", 1)
    dim = None if args.dim is None else integer(args.dim, "--dim", 1)
    noise = number(args.noise, "--noise", minimum=0)
    order = integer(args.order, "--order", 1)
    from asymptotics.channels.link import LinkError
    from asymptotics.symbolic import parse_for_analysis

    try:
        parse_for_analysis(args.expr, seq_len, dim, noise, order)
    except LinkError as exc:
        option = "EXPR" if exc.option == "--link" else exc.option
        raise fail(option, exc.message, "smi link") from None
    return seq_len, dim, noise, order


def run(args) -> int:
    seq_len, dim, noise, order = parse(args)
    from asymptotics.symbolic import analyse_link

    sys.stdout.write(format_analysis(analyse_link(args.expr, seq_len, dim, noise, order)))
    return 0


def _alpha_text(a) -> str:
    if a is None:
        return "—"
    f = float(a)
    if math.isinf(f):
        return "inf"
    exact = str(a)
    return exact if exact == f"{f:g}" else f"{exact} = {f:.10g}"


def format_analysis(an) -> str:
    """The report of :func:`asymptotics.symbolic.analyse_link`."""
    out = [f"link: {an.text}   (L = {an.seq_len}, p = {an.dim}, Δ = {an.noise:g}; "
           f"variables {', '.join(an.symbols)})", ""]
    ex = an.expansion
    out.append(f"Hermite coefficients c_α = E[g(Z) He_α(Z)], g = Σ_α c_α He_α(Z)/α!, "
               f"|α| <= {an.order} ({ex.method}):")
    nonzero = [c for c in ex.coefficients if not c.is_zero]
    for c in nonzero[:SHOWN_COEFFICIENTS]:
        out.append(f"  α = {c.index}:  {c.text()}")
    zeros = len(ex.coefficients) - len(nonzero)
    out.append(f"  ({zeros} other coefficients are zero"
               + (" within 4 errors" if ex.method == "numerical" else "") + ")"
               + (f"; {len(nonzero) - SHOWN_COEFFICIENTS} more not shown"
                  if len(nonzero) > SHOWN_COEFFICIENTS else ""))
    info, gen = an.information, an.generative
    out += ["", f"information exponent (lowest |α| >= 1 with c_α != 0): "
            f"{info.text(info.overall)}",
            f"generative exponent estimate (lowest |α| with E_y[E[He_α(Z)|y]²] > 0): "
            f"{gen.text(gen.overall)}", f"  method: {gen.method}"]
    shown = [m for m in gen.evidence.values() if sum(m.index) <= (gen.overall or 0)]
    for m in shown[:8]:
        val = str(m.exact) if m.exact is not None else f"{m.value:.4g} ± {m.error:.1e}"
        out.append(f"  E_y[E[He_{m.index}|y]²]/α! = {val}")
    out += ["", "Bayes facts at Q = 0 (from the posterior, not from the coefficients):"]
    if an.bayes is None:
        out.append(f"  not computed: {an.bayes_note}")
    else:
        out.append(f"  method: {an.bayes.method}")
    cf = an.closed_form
    if not cf.found:
        out.append(f"closed-form thresholds: none ({cf.reason})")
    else:
        out.append(f"closed-form thresholds: {cf.method}")
    out += ["", f"{'direction':>9}  {'info-exp':>8}  {'gen-exp':>7}  {'Bayes (posterior)':<26}"
            f"  {'α_c closed form':<22}  {'α_c numerical':<24}  agree"]
    checks = {c.direction: c for c in cf.checks}
    for k in range(an.dim):
        if an.bayes is None:
            fact = "—"
        elif an.bayes.trivial[k]:
            fact = "trivial (E[z|y] != 0)"
        elif an.bayes.not_learnable[k]:
            fact = "not learnable from Q = 0"
        else:
            fact = "learnable above α_c"
        closed = _alpha_text(cf.alpha_c[k]) if cf.found else "—"
        if an.numerical is not None:
            d = an.numerical.directions[k]
            num = (f"{d.alpha_c:.10g} ± {d.stderr:.1e}" if math.isfinite(d.alpha_c)
                   else "inf")
        else:
            num = "—"
        agree = ("yes" if checks[k + 1].agrees else "NO") if k + 1 in checks else "—"
        out.append(f"{k + 1:>9}  {info.text(info.directions[k]):>8}  "
                   f"{gen.text(gen.directions[k]):>7}  {fact:<26}  {closed:<22}  {num:<24}  "
                   f"{agree}")
    return "\n".join(out) + "\n"
