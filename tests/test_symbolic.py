"""The symbolic analysis of a link (asymptotics/symbolic.py, ``smi link``; THEORY §10).

Hand values of c_α = E[g(z) He_α(z)] (He_2 = z² − 1, He_3 = z³ − 3z, He_4 = z⁴ − 6z² + 3;
E|z| = √(2/π), E|z|³ = 2√(2/π), E|z|⁵ = 8√(2/π)):

* ``z²``: c_0 = 1, c_2 = E z⁴ − E z² = 2, the rest 0;
* ``|z|``: c_0 = √(2/π), c_2 = E|z|³ − E|z| = √(2/π), c_4 = 8 − 12 + 3 = −√(2/π);
* ``sign(z)``: c_1 = E|z| = √(2/π), c_3 = E|z|³ − 3E|z| = −√(2/π);
* ``z1 z2``: c_(1,1) = 1, the rest 0;
* ``exp(z)``: c_n = E[e^z He_n(z)] = e^{1/2} (Gaussian shift: E[e^z f(z)] = e^{1/2} E f(z + 1),
  and E He_n(z + 1) = 1); ``cosh(z1) z2``: c_(n,1) = e^{1/2} for even n.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import sympy as sp
from scipy import integrate

from asymptotics.channels.closed_form import (
    PhaseRetrievalChannel,
    SignChannel,
    SignProductChannel,
)
from asymptotics.symbolic import (
    analyse_link,
    check_identity,
    closed_form_threshold,
    generative_exponent_estimate,
    hermite_coefficients,
    identity_checks,
    information_exponent,
    link_symbols,
)
from asymptotics.thresholds import weak_recovery_thresholds
from smi.cli import main

R = sp.sqrt(2 / sp.pi)
Z = link_symbols(1, 1)
Z2 = link_symbols(1, 2)
Z3 = link_symbols(1, 3)

def _coefs(expansion):
    return {c.index: c for c in expansion.coefficients}


@pytest.mark.parametrize("expr, symbols, expected", [
    ("z**2", Z, {(0,): 1, (2,): 2}),
    ("Abs(z)", Z, {(0,): R, (2,): R, (4,): -R}),
    ("sign(z)", Z, {(1,): R, (3,): -R}),
    ("z1*z2", Z2, {(1, 1): 1}),
    ("exp(z)", Z, {(n,): sp.exp(sp.Rational(1, 2)) for n in range(5)}),  # E e^z He_n = e^½
    ("cosh(z1)*z2", Z2, {(n, 1): sp.exp(sp.Rational(1, 2)) for n in (0, 2, 4)}),
])
def test_hermite_coefficients_hand_values(expr, symbols, expected):
    ex = hermite_coefficients(expr, symbols, 4)
    assert ex.method == "exact"
    for index, c in _coefs(ex).items():
        want = sp.sympify(expected.get(index, 0))
        assert c.method == "exact" and c.error == 0
        assert sp.simplify(c.exact - want) == 0, (index, c.exact, want)
        assert c.value == pytest.approx(float(want), abs=1e-15)


def test_numerical_coefficients_carry_honest_errors():
    """tanh has no closed form here (sympy is not tried: timeout 0): Gauss–Hermite, checked
    against adaptive quadrature of E[tanh(z) He_k(z)]."""
    ex = hermite_coefficients("tanh(z)", Z, 3, timeout=0)
    assert ex.method == "numerical"
    for k, c in enumerate(ex.coefficients):
        He = np.polynomial.hermite_e.HermiteE.basis(k)
        ref = integrate.quad(lambda x, He=He: math.tanh(x) * He(x) * math.exp(-x * x / 2)
                             / math.sqrt(2 * math.pi), -12, 12, epsabs=1e-13)[0]
        assert abs(c.value - ref) <= 4 * c.error + 1e-12
        assert c.error < 1e-8
    assert [c.is_zero for c in ex.coefficients] == [True, False, True, False]
    assert information_exponent(ex).overall == 1


def test_information_exponent_of_a_triple_sign_product():
    ex = hermite_coefficients("sign(z1*z2*z3)", Z3, 4)
    assert _coefs(ex)[(1, 1, 1)].exact == (2 / sp.pi) ** sp.Rational(3, 2)
    info = information_exponent(ex)
    assert info.overall == 3 and info.directions == [3, 3, 3]
    gen = generative_exponent_estimate("sign(z1*z2*z3)", Z3, 4)
    assert gen.overall == 3  # discrete noiseless: exact sums over y = ±1
    assert gen.evidence[(1, 1, 1)].exact == (2 / sp.pi) ** 3
    closed = closed_form_threshold("sign(z1*z2*z3)", Z3)
    assert closed.found and closed.status == ["not-learnable"] * 3
    assert closed.alpha_c == [sp.oo] * 3


def test_generative_exponent_below_the_information_exponent():
    """He_3 with noise Δ = 0.1: information exponent 3, but E[z | y] != 0 (exponent 1)."""
    ex = hermite_coefficients("z**3 - 3*z", Z, 4)
    assert information_exponent(ex).overall == 3
    gen = generative_exponent_estimate("z**3 - 3*z", Z, 2, noise=0.1, log2_samples=8)
    assert gen.overall == 1
    r1 = gen.evidence[(1,)]
    assert r1.value > 100 * r1.error and 0.5 < r1.value < 0.7
    again = generative_exponent_estimate("z**3 - 3*z", Z, 2, noise=0.1, log2_samples=8)
    assert again.evidence[(1,)].value == r1.value  # deterministic (seeded QMC)
    # a sign-symmetric link: E[He_odd | y] = 0 exactly, exponent 2
    even = generative_exponent_estimate("z**2", Z, 2, noise=0.1, log2_samples=8)
    assert even.overall == 2 and even.evidence[(1,)].value < 1e-20
    # noiseless z²: exact on the fibre ±|z|, E[He_2 | y] = y - 1 so r_2 = E(z² - 1)²/2 = 1
    fibre = generative_exponent_estimate("z**2", Z, 3)
    assert fibre.overall == 2 and [m.exact for m in fibre.evidence.values()] == [0, 1, 0]


def test_closed_form_thresholds_match_the_numerical_ones():
    sign2 = closed_form_threshold("sign(z1*z2)", Z2,
                                  reference=weak_recovery_thresholds(SignProductChannel()))
    assert sign2.alpha_c == [sp.pi**2 / 4] * 2 and sign2.agrees
    square = closed_form_threshold("z**2", Z,
                                   reference=weak_recovery_thresholds(PhaseRetrievalChannel()))
    assert square.alpha_c == [sp.Rational(1, 2)] and square.agrees
    assert closed_form_threshold("Abs(z)", Z).alpha_c == [sp.Rational(1, 2)]
    assert closed_form_threshold("sign(z)", Z).status == ["trivial"]
    # a wrong reference is caught: z² against y = sign(z) (trivial, α_c = 0)
    wrong = closed_form_threshold("z**2", Z, reference=weak_recovery_thresholds(SignChannel()))
    assert not wrong.agrees and wrong.checks[0].difference == 0.5
    none = closed_form_threshold("sign(z1 + z2)", Z2)
    assert not none.found and "orthants" in none.reason


def test_identity_checks_pass_and_a_planted_wrong_one_fails():
    checks = identity_checks(samples=4)
    assert len(checks) >= 8
    for c in checks:
        assert c.passed and c.exact is True and c.residual < 1e-12, c
    a, D = sp.symbols("alpha Delta", positive=True)
    right = (1 + D + a - sp.sqrt((a - 1) ** 2 + 2 * (a + 1) * D + D**2)) / 2
    wrong = (1 + D + a - sp.sqrt((a - 1) ** 2 + 2 * a * D + D**2)) / 2  # 2αΔ for 2(α+1)Δ
    bad = check_identity("planted", wrong, right, [a, D], [[0.5, 0.3], [2.0, 0.1]])
    assert bad.exact is False and not bad.passed and bad.residual > 1e-3


def test_bayes_facts_come_from_the_posterior():
    trivial = analyse_link("z**3 - 3*z", noise=0.1, order=3)
    assert trivial.information.overall == 3 and trivial.bayes.trivial == [True]
    triple = analyse_link("sign(z1*z2*z3)", order=3)
    assert triple.bayes.not_learnable == [True] * 3
    sign2 = analyse_link("sign(z1*z2)", order=2)
    assert sign2.closed_form.agrees  # π²/4 against LinkChannel's numerical threshold
    # two tokens, one direction: F = Σ_{l,l'} E G_{ll'}² = 2 (2/π)², α_c = π²/8
    tokens = analyse_link("sign(z1_1*z2_1)", order=2)
    assert tokens.closed_form.alpha_c == [sp.pi**2 / 8] and tokens.closed_form.agrees


def test_smi_link_shows_hermite_and_bayes_facts_side_by_side(capsys):
    assert main(["link", "z**3 - 3*z", "--noise", "0.1", "--order", "3"]) == 0
    out = capsys.readouterr().out
    row = out.strip().splitlines()[-1].split()
    assert row[:4] == ["1", "3", "1", "trivial"]  # direction, info-exp, gen-exp, Bayes


def test_smi_link_prints_the_closed_form(capsys):
    assert main(["link", "sign(z1*z2)", "--order", "2"]) == 0
    out = capsys.readouterr().out
    assert "α = (1, 1):  2/pi" in out and "pi**2/4 = 2.4674011" in out


@pytest.mark.parametrize("args, option", [
    (["x*z"], "EXPR"),
    (["1/z"], "EXPR"),
    (["exp(z**2)"], "EXPR"),
    (["z1*z2", "--dim", "1"], "--dim"),
    (["z1*z2", "--seq-len", "2"], "--seq-len"),
    (["z", "--noise", "-0.1"], "--noise"),
    (["z", "--noise", "nan"], "--noise"),
    (["sign(z)", "--noise", "0.1"], "--noise"),
    (["z", "--order", "0"], "--order"),
])
def test_smi_link_bad_input_exits_2(args, option, capsys):
    assert main(["link", *args]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert captured.out == "" and len(lines) == 1
    assert lines[0].startswith(f"smi link: error: {option}:"), lines
