"""Optimizers: first steps against hand computation, SAM(rho=0) == base, sign invariance."""

import math

import numpy as np
import pytest

from simulators.optimizers import (
    GD,
    MSVAG,
    OPTIMIZERS,
    SAM,
    SGD,
    SVAG,
    Adam,
    AdamW,
    FunctionalSAM,
    SignGD,
    Signum,
    make_optimizer,
    parse_optimizer_name,
    svag_rho,
)

W0 = np.array([1.0, -2.0, 0.5])
G1 = np.array([0.5, 0.25, -1.0])
G2 = np.array([-1.5, 0.75, 0.0])


class TanhOracle:
    """Tiny nonlinear model u = tanh(A w), loss = (scale/2) ||u - t||^2."""

    def __init__(self, scale=1.0):
        rng = np.random.default_rng(3)
        self.A = rng.standard_normal((5, 3))
        self.t = rng.standard_normal(5) * 0.5
        self.scale = scale

    def out(self, w):
        return np.tanh(self.A @ w)

    def jac(self, w):
        return (1 - np.tanh(self.A @ w) ** 2)[:, None] * self.A

    def output_cotangent(self, w):
        return self.scale * (self.out(w) - self.t)

    def vjp(self, w, cot):
        return self.jac(w).T @ cot

    def grad(self, w):
        return self.vjp(w, self.output_cotangent(w))


def run(opt, oracle, w, steps):
    traj = [w]
    for _ in range(steps):
        w = opt.step(w, oracle.grad(w), oracle)
        traj.append(w)
    return np.array(traj)


def test_gd_first_step_and_weight_decay():
    w1 = GD(0.1).step(W0, G1)
    np.testing.assert_allclose(w1, [0.95, -2.025, 0.6], rtol=0, atol=1e-15)
    w1 = GD(0.1, weight_decay=0.2).step(W0, G1)  # g + 0.2 w = [0.7, -0.15, -0.9]
    np.testing.assert_allclose(w1, [0.93, -1.985, 0.59], rtol=0, atol=1e-15)


def test_sgd_momentum_two_steps():
    opt = SGD(0.1, momentum=0.5)
    w1 = opt.step(W0, G1)
    np.testing.assert_allclose(w1, [0.95, -2.025, 0.6], atol=1e-15)
    w2 = opt.step(w1, G2)  # b = 0.5*G1 + G2 = [-1.25, 0.875, -0.5]
    np.testing.assert_allclose(w2, [1.075, -2.1125, 0.65], atol=1e-15)


def test_adam_first_two_steps():
    opt = Adam(0.1, betas=(0.9, 0.999), eps=1e-8)
    w1 = opt.step(W0, G1)
    # m_hat = g, v_hat = g^2 -> step lr * g/(|g| + eps)
    np.testing.assert_allclose(w1, W0 - 0.1 * G1 / (np.abs(G1) + 1e-8), rtol=1e-15)
    w2 = opt.step(w1, G2)
    m = 0.9 * 0.1 * G1 + 0.1 * G2
    v = 0.999 * 0.001 * G1**2 + 0.001 * G2**2
    m_hat, v_hat = m / (1 - 0.81), v / (1 - 0.999**2)
    np.testing.assert_allclose(w2, w1 - 0.1 * m_hat / (np.sqrt(v_hat) + 1e-8), rtol=1e-13)
    # first component by hand: m_hat=(0.045-0.15)/0.19, v_hat=(0.00024975+0.00225)/0.001999
    mh = (0.045 - 0.15) / 0.19
    vh = (0.999 * 0.001 * 0.25 + 0.001 * 2.25) / (1 - 0.998001)
    assert w2[0] == pytest.approx(w1[0] - 0.1 * mh / (math.sqrt(vh) + 1e-8), rel=1e-13)


def test_adamw_decoupled_vs_adam_coupled():
    lam = 0.5
    w1 = AdamW(0.1, weight_decay=lam).step(W0, G1)
    np.testing.assert_allclose(w1, W0 - 0.1 * (G1 / (np.abs(G1) + 1e-8) + lam * W0), rtol=1e-14)
    # coupled: the first Adam step only sees sign(g + lam w)
    w1c = Adam(0.1, weight_decay=lam).step(W0, G1)
    gc = G1 + lam * W0  # [1.0, -0.75, -0.75]
    np.testing.assert_allclose(w1c, W0 - 0.1 * gc / (np.abs(gc) + 1e-8), rtol=1e-14)
    assert not np.allclose(w1, w1c)


def test_signgd_and_signum_steps():
    w1 = SignGD(0.1).step(W0, G2)  # sign(0) = 0: the last coordinate does not move
    np.testing.assert_allclose(w1, [1.1, -2.1, 0.5], atol=1e-15)
    opt = Signum(0.1, momentum=0.5)
    w1 = opt.step(W0, G1)  # m = 0.5 G1
    np.testing.assert_allclose(w1, [0.9, -2.1, 0.6], atol=1e-15)
    w2 = opt.step(w1, G2)  # m = 0.25 G1 + 0.5 G2 = [-0.625, 0.4375, -0.25]
    np.testing.assert_allclose(w2, [1.0, -2.2, 0.7], atol=1e-15)


def test_svag_rho_formula_and_variance_meaning():
    assert svag_rho(0.9, 1) == pytest.approx(1.0)
    assert svag_rho(0.5, 2) == pytest.approx(5 / 9)
    assert svag_rho(0.9, 10**6) == pytest.approx(0.1 / 1.9)
    # rho(beta, t) = sum_i w_i^2 for the bias-corrected weights w_i of m_hat
    for beta, t in [(0.9, 3), (0.5, 7), (0.99, 50)]:
        w = (1 - beta) * beta ** np.arange(t)[::-1] / (1 - beta**t)
        assert w.sum() == pytest.approx(1.0)
        assert svag_rho(beta, t) == pytest.approx((w**2).sum(), rel=1e-12)


def test_msvag_and_svag_two_steps_by_hand():
    # one coordinate, beta = 0.5, g1 = 1, g2 = 3:
    # m_hat = 7/3, v_hat = 19/3, rho = 5/9, s = (19/3 - 49/9)/(4/9) = 2
    w = np.array([0.0])
    opt = MSVAG(0.1, momentum=0.5)
    w1 = opt.step(w, np.array([1.0]))
    np.testing.assert_allclose(w1, [-0.1], atol=1e-15)  # first step: gamma = 1, m_hat = g
    w2 = opt.step(w1, np.array([3.0]))
    gamma = (49 / 9) / (49 / 9 + (5 / 9) * 2)  # = 49/59
    np.testing.assert_allclose(w2, [-0.1 - 0.1 * gamma * 7 / 3], rtol=1e-13)
    m_hat, s, rho = np.array([7 / 3]), np.array([2.0]), 5 / 9
    assert MSVAG.factor(m_hat, s, rho)[0] == pytest.approx(49 / 59)

    opt = SVAG(0.1, momentum=0.5)
    w1 = opt.step(w, np.array([1.0]))
    np.testing.assert_allclose(w1, [-0.1], atol=1e-15)
    w2 = opt.step(w1, np.array([3.0]))
    gamma = (49 / 9) / (49 / 9 + 2)  # = 49/67, along g = 3
    np.testing.assert_allclose(w2, [-0.1 - 0.1 * gamma * 3], rtol=1e-13)


def test_variance_factor_clipped_and_zero_safe():
    m = np.array([0.0, 1.0, 2.0])
    s = np.array([0.0, -5.0, 0.0])  # negative variance from rounding -> clipped to 1
    gam = MSVAG.factor(m, s, 0.3)
    np.testing.assert_array_equal(gam, [0.0, 1.0, 1.0])


@pytest.mark.parametrize("base", ["gd", "adam", "signgd", "msvag"])
@pytest.mark.parametrize("kind", ["sam", "fsam", "psam", "pfsam"])
def test_sam_rho_zero_equals_base(kind, base):
    oracle = TanhOracle()
    w0 = np.array([0.3, -0.2, 0.1])
    sam = make_optimizer(f"{kind}-{base}", 0.05, rho=0.0)
    ref = make_optimizer(base, 0.05)
    np.testing.assert_array_equal(run(sam, oracle, w0, 5), run(ref, oracle, w0, 5))


def test_sam_first_step_by_hand():
    oracle = TanhOracle()
    w0 = np.array([0.3, -0.2, 0.1])
    g = oracle.grad(w0)
    eps = 0.2 * g / np.linalg.norm(g)
    expected = w0 - 0.1 * oracle.grad(w0 + eps)
    w1 = SAM(GD(0.1), rho=0.2, oracle=oracle).step(w0, g)
    np.testing.assert_allclose(w1, expected, rtol=1e-15)
    assert not np.allclose(w1, w0 - 0.1 * g)


def test_fsam_first_step_by_hand_and_differs_from_sam():
    oracle = TanhOracle()
    w0 = np.array([0.3, -0.2, 0.1])
    g = oracle.grad(w0)
    eps = 0.2 * g / np.linalg.norm(g)
    cot = oracle.out(w0) - oracle.t
    expected = w0 - 0.1 * oracle.jac(w0 + eps).T @ cot
    w1 = FunctionalSAM(GD(0.1), rho=0.2).step(w0, g, oracle)
    np.testing.assert_allclose(w1, expected, rtol=1e-14)
    w1_sam = SAM(GD(0.1), rho=0.2).step(w0, g, oracle)
    assert np.abs(w1 - w1_sam).max() > 1e-4


def test_preconditioned_perturbation_uses_base_second_moment():
    oracle = TanhOracle()
    w0 = np.array([0.3, -0.2, 0.1])
    opt = make_optimizer("psam-adam", 0.05, rho=0.1)
    g0 = oracle.grad(w0)
    # no second moment yet: same perturbation as plain SAM
    np.testing.assert_allclose(opt.perturbation(g0), 0.1 * g0 / np.linalg.norm(g0))
    w1 = opt.step(w0, g0, oracle)
    g1 = oracle.grad(w1)
    v_hat = opt.base.v / (1 - 0.999)
    d = g1 / (np.sqrt(v_hat) + 1e-8)
    eps = opt.perturbation(g1)
    np.testing.assert_allclose(eps, 0.1 * d / np.linalg.norm(d), rtol=1e-13)
    assert np.linalg.norm(eps) == pytest.approx(0.1)


@pytest.mark.parametrize("name", ["signgd", "signum", "sam-signgd", "fsam-signum"])
def test_sign_methods_invariant_to_loss_rescaling(name):
    w0 = np.array([0.3, -0.2, 0.1])
    a = run(make_optimizer(name, 0.01, rho=0.05), TanhOracle(1.0), w0, 8)
    b = run(make_optimizer(name, 0.01, rho=0.05), TanhOracle(37.5), w0, 8)
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-15)
    # ... whereas GD is not
    c = run(make_optimizer("gd", 0.01), TanhOracle(1.0), w0, 3)
    d = run(make_optimizer("gd", 0.01), TanhOracle(37.5), w0, 3)
    assert np.abs(c - d).max() > 1e-3


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_any_shape_and_no_in_place_update(name):
    rng = np.random.default_rng(0)
    w = rng.standard_normal((3, 4, 2))
    w_copy = w.copy()
    opt = make_optimizer(name, 1e-2)
    for _ in range(3):
        w_new = opt.step(w, rng.standard_normal(w.shape))
        assert w_new.shape == w.shape and np.all(np.isfinite(w_new))
    np.testing.assert_array_equal(w, w_copy)


def test_registry_and_errors():
    assert parse_optimizer_name("sam") == ("sam", "gd")
    assert parse_optimizer_name("psam") == ("psam", "adam")
    assert parse_optimizer_name("fsam-adamw") == ("fsam", "adamw")
    assert isinstance(make_optimizer("fsam-adam", 1e-3), FunctionalSAM)
    assert isinstance(make_optimizer("sgd", 1e-3, momentum=0.3), SGD)
    with pytest.raises(ValueError, match="unknown optimizer"):
        make_optimizer("lbfgs", 1e-3)
    with pytest.raises(ValueError, match="unknown optimizer"):
        make_optimizer("sam-foo", 1e-3)
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError):
            make_optimizer("adam", bad)
    with pytest.raises(ValueError):
        SGD(0.1, momentum=1.0)
    with pytest.raises(ValueError, match="oracle"):
        SAM(GD(0.1), rho=0.1).step(W0, G1)
