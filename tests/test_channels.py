import numpy as np
import pytest

from asymptotics.channels.attention import AttentionChannel
from asymptotics.channels.attention_map import (
    attention_forward,
    fibre_from_output,
    last_preactivation,
)
from asymptotics.channels.closed_form import (
    LinearChannel,
    PhaseRetrievalChannel,
    ProductChannel,
    SignChannel,
    SignProductChannel,
)
from asymptotics.integrate import gauss_hermite, trapezoid


# ---------------------------------------------------------------- forward map
@pytest.mark.parametrize("depth,L", [(1, 2), (2, 2), (3, 2), (2, 3), (3, 4)])
def test_attention_rows_sum_to_one_and_layer_sign_invariance(depth, L):
    rng = np.random.default_rng(depth * 10 + L)
    Z = rng.standard_normal((50, L, depth))
    y = attention_forward(Z, depth, skip=0.7, beta=1.3)
    assert y.shape == (50, L, L)
    np.testing.assert_allclose(y.sum(-1), 1.0, atol=1e-14)
    assert np.all(y > 0)
    for k in range(depth):
        flipped = Z.copy()
        flipped[..., k] *= -1
        np.testing.assert_allclose(attention_forward(flipped, depth, 0.7, 1.3), y, atol=1e-14)


def test_attention_forward_matches_explicit_network():
    rng = np.random.default_rng(1)
    D, L, c, beta = 40, 3, 0.5, 1.0
    x = rng.standard_normal((L, D))
    W = rng.standard_normal((D, 2))
    h = x
    s1 = h @ W[:, 0] / np.sqrt(D)
    A = np.exp(beta * np.outer(s1, s1))
    A = A / A.sum(1, keepdims=True) + c * np.eye(L)
    h = A @ h
    s2 = h @ W[:, 1] / np.sqrt(D)
    y = np.exp(beta * np.outer(s2, s2))
    y = y / y.sum(1, keepdims=True)
    Z = (x @ W / np.sqrt(D))[None]
    np.testing.assert_allclose(attention_forward(Z, 2, c, beta)[0], y, atol=1e-13)


@pytest.mark.parametrize("depth,L", [(1, 2), (2, 2), (2, 3), (3, 4)])
def test_fibre_recovers_last_preactivation_up_to_sign(depth, L):
    rng = np.random.default_rng(3)
    Z = rng.standard_normal((200, L, depth))
    a = last_preactivation(Z, depth, 1.0, 0.8)[..., 0]
    ah = fibre_from_output(attention_forward(Z, depth, 1.0, 0.8), 0.8)
    sign = np.sign(np.sum(a * ah, axis=-1, keepdims=True))
    np.testing.assert_allclose(sign * ah, a, atol=1e-9)


def test_attention_rejects_bad_parameters():
    for kwargs in [
        dict(depth=0),
        dict(seq_len=1),
        dict(skip=-0.1),
        dict(beta=0.0),
        dict(beta=float("nan")),
    ]:
        with pytest.raises(ValueError):
            AttentionChannel(**kwargs)


# ---------------------------------------------------------------- posteriors
def _brute_force_attention_posterior(ch, a, omega, V, n=400_000, seed=0):
    """Independent check: sample Z_U from its prior, solve z_last on the fibre, weight."""
    rng = np.random.default_rng(seed)
    L, depth = ch.seq_len, ch.depth
    m = depth - 1
    Vuu = V[:m, :m]
    ZU = omega[:, :m] + rng.standard_normal((n, L, m)) @ np.linalg.cholesky(Vuu).T
    from asymptotics.channels.attention_map import attention_mixer_inverse

    _, Binv, logdet = attention_mixer_inverse(ZU, ch.skip, ch.beta)
    x = Binv @ a
    coef = np.linalg.solve(Vuu, V[:m, m])
    vc = V[m, m] - coef @ V[:m, m]
    mu = omega[:, m] + (ZU - omega[:, :m]) @ coef
    total_w, mean = 0.0, 0.0
    for sgn in (1.0, -1.0):
        w = np.exp(-((sgn * x - mu) ** 2).sum(-1) / (2 * vc) - logdet)
        Zfull = np.concatenate([ZU, sgn * x[..., None]], axis=-1)
        total_w = total_w + w.sum()
        mean = mean + (w[:, None, None] * Zfull).sum(0)
    return mean / total_w


def test_attention_posterior_matches_independent_monte_carlo():
    ch = AttentionChannel(depth=2, seq_len=2, skip=0.8, beta=1.0)
    rng = np.random.default_rng(5)
    a = ch.observe(rng.standard_normal((1, 2, 2)))[0]
    omega = np.array([[0.4, -0.3], [0.1, 0.5]])
    V = np.array([[0.7, 0.1], [0.1, 0.6]])
    post = ch.posterior(a, omega, V)
    ref = _brute_force_attention_posterior(ch, a, omega, V)
    np.testing.assert_allclose(post.mean, ref, atol=1e-2)


def test_attention_posterior_mean_vanishes_at_the_prior():
    ch = AttentionChannel(depth=2, seq_len=2)
    a = ch.observe(np.random.default_rng(0).standard_normal((20, 2, 2)))
    post = ch.posterior(a, np.zeros((20, 2, 2)), np.eye(2))
    assert np.abs(post.mean).max() < 1e-13
    # cross-layer second moments vanish by the per-layer sign symmetry
    assert np.abs(post.second[:, :, 0, :, 1]).max() < 1e-13


def test_attention_numba_and_array_namespace_paths_agree():
    ch = AttentionChannel(depth=3, seq_len=2, skip=0.5, inner_rule=gauss_hermite(4, 6))
    rng = np.random.default_rng(2)
    a = ch.observe(rng.standard_normal((7, 2, 3)))
    omega = 0.3 * rng.standard_normal((7, 2, 3))
    V = np.diag([0.8, 0.6, 0.5])
    p1 = ch.posterior(a, omega, V, cpu_kernel="numba")
    p2 = ch.posterior(a, omega, V, cpu_kernel="array")
    np.testing.assert_allclose(p1.mean, p2.mean, atol=1e-12)
    np.testing.assert_allclose(p1.second, p2.second, atol=1e-12)
    np.testing.assert_allclose(p1.log_norm, p2.log_norm, atol=1e-12)


@pytest.mark.parametrize("v_first", [0.9, 0.5, 0.2])
def test_shared_node_importance_path_matches_shifted_nodes(v_first):
    """Diagonal V: the importance-weighted shared nodes give the shifted-node moments."""
    depth, L = 2, 2
    ch = AttentionChannel(depth=depth, seq_len=L, skip=0.7)
    rng = np.random.default_rng(3)
    K = 64
    v = np.array([v_first] * (depth - 1) + [0.4])
    omega = rng.standard_normal((K, L, depth)) * np.sqrt(1 - v)
    a = ch.observe(omega + rng.standard_normal((K, L, depth)) * np.sqrt(v))
    V = np.diag(v)
    assert ch.shared_nodes_apply(V)
    fast = ch.fibre_moments(a, omega, V, second=False)
    chol, coef, vc = ch._conditional(V)
    ref = ch._fibre_numba(np.ascontiguousarray(a), np.ascontiguousarray(omega), chol, coef, vc,
                          False)
    np.testing.assert_allclose(fast.mean[0], ref.mean[0], atol=2e-5)
    np.testing.assert_allclose(fast.log_norm[0], ref.log_norm[0], atol=2e-5)
    assert np.all(np.isnan(fast.second))  # not computed on this path: never a silent zero


def test_shared_node_path_is_not_used_where_it_cannot_resolve_the_posterior():
    ch = AttentionChannel(depth=2, seq_len=2)
    assert not ch.shared_nodes_apply(np.diag([0.1, 0.5]))
    assert ch.shared_nodes_apply(np.diag([0.1, 0.5]), margin=2.0)
    assert not ch.shared_nodes_apply(np.diag([0.08, 0.5]), margin=2.0)
    assert not ch.shared_nodes_apply(np.array([[0.8, 0.1], [0.1, 0.5]]))
    assert ch.shared_nodes_apply(np.diag([0.8, 0.01]))
    # a narrow last layer makes the fibre factor too sharp for the fixed spacing
    assert not ch.shared_nodes_apply(np.diag([0.8, 0.004]))
    assert ch.shared_nodes_apply(np.diag([0.8, 0.004]), margin=2.0)
    assert not AttentionChannel(depth=3, seq_len=2).shared_nodes_apply(np.diag([0.8, 0.8, 0.5]))
    gh = AttentionChannel(depth=2, seq_len=3, inner_rule=gauss_hermite(3, 4))
    assert not gh.shared_nodes_apply(np.diag([0.8, 0.5]))


def test_inner_path_option_is_checked():
    ch = AttentionChannel(depth=2, seq_len=2)
    a, omega = np.ones((3, 2)), np.zeros((3, 2, 2))
    with pytest.raises(ValueError, match="inner_path must be one of"):
        ch.fibre_moments(a, omega, np.eye(2), second=False, inner_path="fast")
    with pytest.raises(ValueError, match="needs a depth >= 2"):
        ch.fibre_moments(a, omega, np.array([[0.8, 0.1], [0.1, 0.5]]), second=False,
                         inner_path="shared")
    V = np.diag([0.05, 0.5])  # auto takes the general kernel here, "shared" forces the other
    auto = ch.fibre_moments(a, omega, V, second=False).mean
    general = ch.fibre_moments(a, omega, V, second=False, inner_path="general").mean
    shared = ch.fibre_moments(a, omega, V, second=False, inner_path="shared").mean
    np.testing.assert_array_equal(auto, general)
    assert np.max(np.abs(shared - general)) > 0


@pytest.mark.gpu
def test_attention_cupy_path_matches_numpy():
    ch = AttentionChannel(depth=2, seq_len=2)
    rng = np.random.default_rng(2)
    a = ch.observe(rng.standard_normal((9, 2, 2)))
    omega = 0.3 * rng.standard_normal((9, 2, 2))
    V = np.diag([0.8, 0.6])
    p1 = ch.posterior(a, omega, V, device="cpu")
    p2 = ch.posterior(a, omega, V, device="gpu")
    np.testing.assert_allclose(p1.mean, p2.mean, atol=1e-10)


def test_depth_one_attention_posterior_is_two_point():
    ch = AttentionChannel(depth=1, seq_len=3)
    a = np.array([0.5, -1.0, 2.0])
    omega = np.array([[0.2], [0.1], [0.4]])
    post = ch.posterior(a, omega, np.array([[0.5]]))
    lp = -((a - omega[:, 0]) ** 2).sum() / 1.0
    lm = -((-a - omega[:, 0]) ** 2).sum() / 1.0
    wp = 1 / (1 + np.exp(lm - lp))
    np.testing.assert_allclose(post.mean[:, 0], (2 * wp - 1) * a, atol=1e-12)


def _scalar_quadrature_posterior(loglik, y, w, v, n=4001):
    z = np.linspace(w - 12 * np.sqrt(v), w + 12 * np.sqrt(v), n)
    dens = np.exp(-0.5 * (z - w) ** 2 / v + loglik(y, z))
    Z = np.trapezoid(dens, z)
    m = np.trapezoid(z * dens, z) / Z
    s = np.trapezoid(z**2 * dens, z) / Z
    return m, s


def test_sign_and_linear_posteriors_match_direct_quadrature():
    w, v = 0.3, 0.6
    sign = SignChannel()
    for y in (-1.0, 1.0):
        post = sign.posterior(np.array(y), np.array([[w]]), np.array([[v]]))
        m, s = _scalar_quadrature_posterior(
            lambda yy, z: np.where(z * yy > 0, 0.0, -np.inf), y, w, v, n=200001
        )
        assert abs(post.mean.item() - m) < 1e-6 and abs(post.second.item() - s) < 1e-6
    lin = LinearChannel(0.4)
    post = lin.posterior(np.array(0.9), np.array([[w]]), np.array([[v]]))
    m, s = _scalar_quadrature_posterior(lambda yy, z: -0.5 * (yy - z) ** 2 / 0.4, 0.9, w, v)
    assert abs(post.mean.item() - m) < 1e-10 and abs(post.second.item() - s) < 1e-10


def test_phase_retrieval_posterior_two_point():
    post = PhaseRetrievalChannel().posterior(np.array(2.0), np.array([[0.5]]), np.array([[0.3]]))
    s = np.sqrt(2.0)
    assert abs(post.mean.item() - s * np.tanh(s * 0.5 / 0.3)) < 1e-14
    assert abs(post.second.item() - 2.0) < 1e-14


def test_two_direction_posteriors_against_2d_quadrature():
    V = np.array([[0.7, 0.2], [0.2, 0.5]])
    omega = np.array([[[0.3, -0.4]]])
    rule = trapezoid(2, 801, 10.0)
    Z = omega[0, 0] + rule.points @ np.linalg.cholesky(V).T
    sp = SignProductChannel()
    for y in (-1.0, 1.0):
        post = sp.posterior(np.array([y]), omega, V)
        ind = (np.sign(Z[:, 0] * Z[:, 1]) == y).astype(float)
        P = rule.weights @ ind
        mean = (rule.weights * ind) @ Z / P
        assert abs(np.exp(post.log_norm[0]) - P) < 2e-3  # the indicator limits the grid
        np.testing.assert_allclose(post.mean[0, 0], mean, atol=5e-3)
    # product channel: density of y by a change of variables vs Monte Carlo histogram
    pc = ProductChannel()
    post = pc.posterior(np.array([0.4]), omega, V)
    assert post.error.max() < 1e-8
    rng = np.random.default_rng(0)
    S = omega[0, 0] + rng.standard_normal((4_000_000, 2)) @ np.linalg.cholesky(V).T
    prod = S[:, 0] * S[:, 1]
    dens = np.mean(np.abs(prod - 0.4) < 0.01) / 0.02
    assert abs(np.exp(post.log_norm[0]) - dens) < 0.01


@pytest.mark.parametrize("depth,L", [(1, 2), (2, 2), (3, 2)])
def test_attention_mean_forward_kernel_matches_the_generic_sum(depth, L):
    from asymptotics.channels.base import Channel

    ch = AttentionChannel(depth=depth, seq_len=L, skip=0.7, beta=1.3)
    rng = np.random.default_rng(0)
    omega = rng.standard_normal((30, L, depth))
    inner = gauss_hermite(L * depth, 3)
    offsets = 0.5 * inner.points.reshape(-1, L, depth)
    fast = ch.mean_forward(omega, offsets, inner.weights)
    np.testing.assert_allclose(fast, Channel.mean_forward(ch, omega, offsets, inner.weights),
                               atol=1e-14)
    np.testing.assert_allclose(fast.sum(-1), 1.0, atol=1e-14)  # rows of a softmax
