"""Issue 15 (curve speed): the new fibre kernels equal the previous ones, the SE map at
fixed Q equals its recorded values from before the change, and (slow) the default curve
at α = 0.3, 0.5, 0.9 holds its fixed points.

The reference kernels are the pre-issue-15 ``fibre_moments`` and ``diagonal_fibre_means``
(one pass with a running maximum of ``log w`` and rescaling), kept verbatim in
``benchmarks/previous_kernels.py``, which the benchmarks time side by side.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from asymptotics.channels import _attention_kernels as kern
from asymptotics.channels.attention import AttentionChannel
from asymptotics.state_evolution import SESettings, StateEvolution
from benchmarks.previous_kernels import previous_diagonal_fibre_means, previous_fibre_moments


def _outer(ch, q, K, seed=0):
    """Observations and ω of ``K`` outer nodes at a diagonal ``Q = diag(q)``."""
    rng = np.random.default_rng(seed)
    L, p = ch.seq_len, ch.dim
    q = np.asarray(q, dtype=float)
    xi, u = rng.standard_normal((2, K, L, p))
    om = np.ascontiguousarray(np.sqrt(q) * xi)
    a = np.ascontiguousarray(ch.observe(om + np.sqrt(1.0 - q) * u))
    return a, om, np.diag(1.0 - q)


def _run(kernel, ch, a, om, V, second, shared):
    chol, coef, vc = ch._conditional(V)
    T, W = ch._inner_nodes()
    S, K, L, p = W.shape[0], a.shape[0], ch.seq_len, ch.dim
    if shared:
        om = om.copy()
        om[:, :, : p - 1] = 0.0
        Binv, logdet = ch._shared_mixers(chol)
    else:
        Binv, logdet = np.zeros((1, L, L)), np.zeros(1)
    out = (np.empty((S, K)), np.empty((S, K, L, p)), np.full((S, K, L, p, L, p), np.nan))
    kernel(a, om, T, W, chol, coef, vc, ch.skip, ch.beta, Binv, logdet, shared, *out, second)
    return out, om


def _two_token_means_equal(ch, a, om, V, ln, mean, second, atol):
    """``fibre_means_two_tokens`` = a general kernel's log-normaliser ``ln``, means and
    diagonal second moments (of ``second``) to 1e-12 relative; returns its means and
    squares."""
    T, W = ch._inner_nodes()
    ln2, mean2, sq = np.empty_like(ln), np.empty_like(mean), np.empty_like(mean)
    kern.fibre_means_two_tokens(a, om, T, W, math.sqrt(V[0, 0]), V[1, 1], ch.skip, ch.beta,
                                ln2, mean2, sq)
    np.testing.assert_allclose(ln2, ln, rtol=1e-12, atol=atol)
    np.testing.assert_allclose(mean2, mean, rtol=1e-12, atol=atol)
    diag = np.stack([np.stack([second[:, :, lay, j, lay, j] for j in range(2)], -1)
                     for lay in range(2)], 2)
    np.testing.assert_allclose(sq, diag, rtol=1e-12, atol=atol)
    return mean2, sq


@pytest.mark.slow  # compiles the verbatim previous kernels (~15 s cold)
@pytest.mark.parametrize("depth", [2, 3])
@pytest.mark.parametrize("q", [(0.3, 0.7, 0.5), (0.05, 0.95, 0.999)])
def test_fibre_moments_equal_the_previous_kernel(depth, q):
    """Two-pass ``fibre_moments`` (sign pair folded) = the one-pass kernel to 1e-12, on
    shifted and shared nodes, with and without second moments."""
    ch = AttentionChannel(depth=depth, seq_len=2)
    a, om, V = _outer(ch, q[-depth:], 24)
    for second in (False, True):
        for shared in (False, True):
            new, om_used = _run(kern.fibre_moments, ch, a, om, V, second, shared)
            ref, _ = _run(previous_fibre_moments, ch, a, om_used, V, second, shared)
            for x, y in zip(new, ref, strict=True):
                np.testing.assert_allclose(x, y, rtol=1e-12, atol=1e-12)


@pytest.mark.slow  # compiles the verbatim previous kernels (~15 s cold)
@pytest.mark.parametrize("q", [(0.3, 0.7), (0.05, 0.999), (0.9, 0.99)])
def test_two_token_kernel_equals_the_previous_general_kernel(q):
    """``fibre_means_two_tokens`` (depth 2, L = 2, diagonal V) = the previous general
    kernel's log-normaliser and means to 1e-12, on both inner weight sets; and the
    channel routes the SE map's general means there."""
    ch = AttentionChannel(depth=2, seq_len=2)
    a, om, V = _outer(ch, q, 32, seed=1)
    mean2, sq = _two_token_means_equal(
        ch, a, om, V, *_run(previous_fibre_moments, ch, a, om, V, True, False)[0], atol=1e-12)
    fm = ch.fibre_moments(a, om, V, second=False, inner_path="general")
    np.testing.assert_array_equal(fm.mean, mean2)
    fm = ch.fibre_moments(a, om, V, second="diagonal", inner_path="general")
    np.testing.assert_array_equal(fm.second[:, :, 1, 0, 1, 0], sq[:, :, 1, 0])


@pytest.mark.slow  # compiles the verbatim previous kernels (~15 s cold)
@pytest.mark.parametrize("depth", [2, 3])
def test_diagonal_fibre_means_equal_the_previous_kernel(depth):
    ch = AttentionChannel(depth=depth, seq_len=2)
    q = np.array((0.2, 0.4, 0.9))[-depth:]
    a, om, V = _outer(ch, q, 32, seed=2)
    m = depth - 1
    T, W = ch._inner_nodes()
    Binv, logdet = ch._shared_mixers(np.eye(m))
    vU = np.diag(V)[:m]
    base = np.ascontiguousarray(0.5 * np.einsum("nlj,j->n", T**2, 1.0 - 1.0 / vU) - logdet)
    outs = []
    sq = np.empty((W.shape[0], len(a), 2, depth))
    for kernel, extra in ((kern.diagonal_fibre_means, (sq,)),
                          (previous_diagonal_fibre_means, ())):
        ln, mean = np.empty((W.shape[0], len(a))), np.empty((W.shape[0], len(a), 2, depth))
        kernel(a, om, T, Binv, logdet, base, 1.0 / vU, float(V[m, m]), W, ln, mean, *extra)
        outs.append((ln, mean))
    for x, y in zip(outs[0], outs[1], strict=True):
        np.testing.assert_allclose(x, y, rtol=1e-12, atol=1e-12)
    if not ch.shared_nodes_apply(V):
        return  # depth 3: Sobol' inner nodes, on which the shared nodes are not used
    # the squares on the shared nodes = the full second moments on shifted nodes, within
    # the shared nodes' accuracy at these variances
    full = ch.fibre_moments(a, om, V, second=True, inner_path="general").second
    for lay in range(2):
        for j in range(depth):
            np.testing.assert_allclose(sq[0, :, lay, j], full[0, :, lay, j, lay, j],
                                       rtol=2e-4, atol=2e-5)


# Q̂ (diagonal), its error and ψ_out of the default channel at α = 0.5, sobol_log2 = 6,
# computed with the kernels before issue 15 (commit 9d75abb):
# StateEvolution(make_channel(), 0.5, SESettings(sobol_log2=6), inner_path=path).qhat(diag q)
SE_MAP_BEFORE = [
    ((0.3, 0.7), "general", [0.039311353570900584, 2.367379222078166],
     [0.008963575038215694, 0.198442052334992], -2.424560415498334),
    ((0.3, 0.7), "shared", [0.03931135532419106, 2.3673792239652327],
     [0.00896357642651429, 0.19844205437756485], -2.424560414859709),
    ((0.05, 0.999), "general", [0.10536705115779704, 278.2293293551708],
     [0.10737831261560532, 348.7453501434332], 1.0681887943359545),
    ((0.9, 0.99), "general", [1.7591923575255308, 68.99217897644215],
     [0.2493715240430773, 6.991731097309992], 0.5788702948731216),
]


@pytest.mark.parametrize("q, path, qhat, err, psi", SE_MAP_BEFORE)
def test_se_map_at_fixed_q_equals_the_previous_kernels(q, path, qhat, err, psi):
    """The plain estimator α E[g gᵀ] (``control_variate=False``) as recorded."""
    se = StateEvolution(AttentionChannel(), 0.5,
                        SESettings(sobol_log2=6, control_variate=False), inner_path=path)
    est = se.qhat(np.diag(q))
    np.testing.assert_allclose(np.diag(est.Qhat), qhat, rtol=1e-12)
    np.testing.assert_allclose(np.diag(est.error), err, rtol=1e-12)
    assert est.psi_out == pytest.approx(psi, rel=1e-12)


# diag Q, diag Q_stderr and Φ ± stderr of the default curve's rows (both branches) at
# α = 0.3, 0.5, 0.9 before issue 15 (commit 9d75abb), from
#   sweep(make_channel(), [0.3, 0.5, 0.9], "both")      (19 min on 2 loaded cores)
CURVE_BEFORE = [
    (0.3, "amp", [1.8080518826494913e-22, 0.21192871691210427],
     [2.5442626488642084e-24, 0.00571460341027666], -0.9364641851258909, 0.0009645532225754817),
    (0.3, "informed", [8.228495046557255e-33, 0.21192872731327006],
     [3.127489249439948e-33, 0.0057146034102522605], -0.9364641851479091,
     0.0009645532225757887),
    (0.5, "amp", [5.903861185774362e-18, 0.7536806882344562],
     [1.7970423863723726e-19, 0.011311134698944634], -1.4949958339715481, 0.002638216910587401),
    (0.5, "informed", [-1.6318525484305416e-19, 0.7536806862262648],
     [6.797591656352269e-20, 0.011311124146675367], -1.4949958340177445,
     0.0026382169183531237),
    (0.9, "amp", [0.5370990053648376, 0.9937063977040144],
     [0.05382941988089613, 0.0024793060213739487], -1.8150233135408596, 0.014182371623541627),
    (0.9, "informed", [0.5369888058384451, 0.9936978219700779],
     [0.04835984055699916, 0.0008701969805639609], -1.8151447580370748, 0.014180303799592143),
]


@pytest.mark.slow
def test_curve_points_hold_their_fixed_points():
    """The default curve at α = 0.3, 0.5, 0.9 (both branches) agrees with its fixed points
    and free entropies from before issue 15 within three combined standard errors (the
    map's estimator changed since: both Nishimori forms of Q̂, combined, whose errors are
    up to 5x smaller; measured differences 0.4–1.1 σ_before), an invariant overlap stays
    at 0 to 1e-12."""
    from asymptotics.channels.registry import make_channel
    from asymptotics.curves import sweep

    rows = {(r["alpha"], r["branch"]): r for r in sweep(make_channel(), [0.3, 0.5, 0.9], "both")}
    for alpha, branch, q, q_err, phi, phi_err in CURVE_BEFORE:
        r = rows[(alpha, branch)]
        assert r["status"] == "converged"
        err = np.hypot(np.array(q_err), np.diag(np.array(r["Q_stderr"])))
        np.testing.assert_array_less(np.abs(np.diag(np.array(r["Q"])) - q), 3 * err + 1e-12)
        assert abs(r["free_entropy"] - phi) <= 3 * math.hypot(phi_err, r["free_entropy_stderr"])


@pytest.mark.slow  # compiles the verbatim previous kernels (~15 s cold)
@pytest.mark.parametrize("depth", [2, 3])
@pytest.mark.parametrize("q", [(0.3, 0.7, 0.5), (0.05, 0.95, 0.999)])
def test_two_token_moments_equal_the_previous_kernel(depth, q):
    """``fibre_moments_two_tokens`` (L = 2, diagonal V, any depth) = the previous general
    kernel to 1e-12, with and without second moments; the channel's full second moments
    (at depth 2 and 3 on the vectorised kernels) equal it to 1e-12."""
    ch = AttentionChannel(depth=depth, seq_len=2)
    a, om, V = _outer(ch, q[-depth:], 24, seed=3)
    T, W = ch._inner_nodes()
    for second in (False, True):
        ref, _ = _run(previous_fibre_moments, ch, a, om, V, second, False)
        new = (np.empty_like(ref[0]), np.empty_like(ref[1]), np.full_like(ref[2], np.nan))
        kern.fibre_moments_two_tokens(a, om, T, W, np.sqrt(np.diag(V)[:-1]), V[-1, -1],
                                      ch.skip, ch.beta, *new, second)
        for x, y in zip(new, ref, strict=True):
            np.testing.assert_allclose(x, y, rtol=1e-12, atol=1e-12)
        if second:
            fm = ch.fibre_moments(a, om, V, inner_path="general")
            np.testing.assert_allclose(fm.second, new[2], rtol=1e-12, atol=1e-13)


@pytest.mark.slow  # compiles the reference kernel; the default suite checks the depth-3
# kernel against the fibre integral in numpy (test_depth3_fibre_kernel_equals_the_fibre_integral)
def test_depth3_fibre_kernel_equals_the_kernel_it_replaced():
    """``fibre_moments_depth3`` (written out, scalar accumulators) = the two-token kernel
    it replaced (``fibre_moments_two_tokens``, any depth; its verbatim copy is in
    benchmarks/previous_kernels.py) to 1e-12 on both weight sets, in each mode: means,
    per-layer blocks (the rest left NaN), full second moments; and the channel routes
    ``second="layers"`` there."""
    ch = AttentionChannel(depth=3, seq_len=2)
    T, W = ch._inner_nodes()
    blocks = np.zeros((2, 3, 2, 3), dtype=bool)
    for j in range(3):
        blocks[:, j, :, j] = True
    for q, seed in (((0.3, 0.0, 0.9), 4), ((0.05, 0.95, 0.999), 5)):
        a, om, V = _outer(ch, q, 12, seed=seed)
        args = (a, om, T, W, np.sqrt(np.diag(V)[:2]), V[2, 2], ch.skip, ch.beta)
        ref = (np.empty((2, 12)), np.empty((2, 12, 2, 3)), np.full((2, 12, 2, 3, 2, 3), np.nan))
        kern.fibre_moments_two_tokens(*args, *ref, True)
        for mode in (kern.FIBRE_MEANS, kern.FIBRE_LAYER_BLOCKS, kern.FIBRE_FULL):
            new = (np.empty_like(ref[0]), np.empty_like(ref[1]), np.full_like(ref[2], np.nan))
            kern.fibre_moments_depth3(*args, *new, mode)
            np.testing.assert_allclose(new[0], ref[0], rtol=1e-12, atol=0)
            np.testing.assert_allclose(new[1], ref[1], rtol=1e-12, atol=1e-15)
            done = {kern.FIBRE_MEANS: np.zeros_like(blocks), kern.FIBRE_LAYER_BLOCKS: blocks,
                    kern.FIBRE_FULL: np.ones_like(blocks)}[mode]
            assert np.all(np.isnan(new[2][:, :, ~done]))
            np.testing.assert_allclose(new[2][:, :, done], ref[2][:, :, done], rtol=1e-12,
                                       atol=1e-15)
    fm = ch.fibre_moments(a, om, V, second="layers", inner_path="general")
    full = ch.fibre_moments(a, om, V, inner_path="general")
    np.testing.assert_array_equal(fm.second[:, :, blocks], full.second[:, :, blocks])
    assert np.all(np.isnan(fm.second[:, :, ~blocks]))


def test_depth3_unlearned_and_forward_kernels_equal_the_kernels_they_replaced():
    """``unlearned_moments_depth3`` (at ω_last = 0 and ≠ 0) and ``mean_forward_two_tokens``
    (depth 1-3) = the general kernels they replaced for L = 2 (``unlearned_inner_moments``,
    ``mean_forward``: still those of L > 2) to 1e-12; the channel routes L = 2 there."""
    from asymptotics.integrate import gauss_hermite

    ch = AttentionChannel(depth=3, seq_len=2)
    T, W, Binv, logdet = ch._folded_unlearned_nodes()
    a, om, _ = _outer(ch, (0.2, 0.0, 0.7), 12, seed=6)
    for omega_last in (np.zeros((12, 2)), np.ascontiguousarray(om[:, :, 2])):
        ref = (np.empty((2, 12)), np.empty((2, 12, 2)), np.empty((2, 12, 3, 2, 2)))
        kern.unlearned_inner_moments(a, omega_last, 0.3, Binv, logdet, T, W, *ref)
        new = ch.unlearned_inner_moments(a, omega_last, 0.3)
        for x, y in zip(new, ref, strict=True):
            np.testing.assert_allclose(x, y, rtol=1e-12, atol=1e-15)
    rng = np.random.default_rng(7)
    for depth in (1, 2, 3):
        inner = gauss_hermite(2 * depth, 3)
        omega = rng.standard_normal((6, 2, depth))
        offsets = np.ascontiguousarray(0.8 * inner.points.reshape(-1, 2, depth))
        ref = np.empty((6, 2, 2))
        kern.mean_forward(omega, offsets, inner.weights, 0.5, 1.5, ref)
        c = AttentionChannel(depth=depth, seq_len=2, skip=0.5, beta=1.5)
        out = c.mean_forward(omega, offsets, inner.weights)
        np.testing.assert_allclose(out, ref, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("q", [(0.3, 0.7), (0.05, 0.999)])
def test_mean_kernels_squares_equal_the_full_second_moments(q):
    """``second="diagonal"`` (the control variate's ``E[z_lj²]``, added to the mean kernels)
    equals the diagonal of the full second moments: to 1e-12 on the shifted nodes (the
    two-token kernel against ``fibre_moments_two_tokens``), and within the shared nodes'
    accuracy on the importance-weighted ones."""
    ch = AttentionChannel(depth=2, seq_len=2)
    a, om, V = _outer(ch, q, 32, seed=4)
    full = ch.fibre_moments(a, om, V, second=True, inner_path="general")
    diag = ch.fibre_moments(a, om, V, second="diagonal", inner_path="general")
    np.testing.assert_array_equal(diag.mean, ch.fibre_moments(
        a, om, V, second=False, inner_path="general").mean)
    for lay in range(2):
        for j in range(2):
            np.testing.assert_allclose(diag.second[:, :, lay, j, lay, j],
                                       full.second[:, :, lay, j, lay, j], rtol=1e-12)
    if ch.shared_nodes_apply(V):
        shared = ch.fibre_moments(a, om, V, second="diagonal", inner_path="shared")
        for lay in range(2):
            for j in range(2):
                np.testing.assert_allclose(shared.second[0, :, lay, j, lay, j],
                                           full.second[0, :, lay, j, lay, j],
                                           rtol=2e-4, atol=2e-5)


@pytest.mark.parametrize("q", [(0.3, 0.7), (0.05, 0.999), (0.9, 0.99)])
def test_vectorised_two_token_kernels_equal_the_generic_kernels(q):
    """The depth-2, L = 2 mean kernels on ``vexp`` (vectorised loops, lane sums) = the
    package's other paths (libm or numpy exp, sequential sums) to 1e-12: the shared-node
    kernel against the generic ``diagonal_fibre_means``, the shifted-node one against the
    array path (numpy; its diagonal second moments included)."""
    ch = AttentionChannel(depth=2, seq_len=2)
    a, om, V = _outer(ch, q, 40, seed=3)
    T, W = ch._inner_nodes()
    Binv, logdet = ch._shared_mixers(np.eye(1))
    base = np.ascontiguousarray(0.5 * (1.0 - 1.0 / V[0, 0]) * np.sum(T**2, axis=(1, 2))
                                - logdet)
    outs = []
    for kernel in (kern.diagonal_fibre_means_two_tokens, kern.diagonal_fibre_means):
        ln, mean, sq = np.empty((2, 40)), np.empty((2, 40, 2, 2)), np.empty((2, 40, 2, 2))
        kernel(a, om, T, Binv, logdet, base, np.array([1.0 / V[0, 0]]), V[1, 1], W,
               ln, mean, sq)
        outs.append((ln, mean, sq))
    for x, y in zip(*outs, strict=True):
        np.testing.assert_allclose(x, y, rtol=1e-12, atol=1e-14)
    ref = ch.fibre_moments(a, om, V, second=True, cpu_kernel="array", inner_path="general")
    _two_token_means_equal(ch, a, om, V, ref.log_norm, ref.mean, ref.second, atol=1e-14)


@pytest.mark.parametrize("q, skip", [((0.3, 0.0, 0.9), 1.0), ((0.05, 0.95, 0.999), 0.05)])
def test_depth3_fibre_kernel_equals_the_fibre_integral(q, skip):
    """``fibre_moments_depth3`` = the fibre integral written in numpy from its definition
    (tests/fibre_reference.py) to 1e-11 in each mode: means, per-layer blocks (the rest
    left NaN) and full second moments; near-singular mixers at c = 0.05."""
    from tests.fibre_reference import fibre_reference

    ch = AttentionChannel(depth=3, seq_len=2, skip=skip)
    T, W = ch._inner_nodes()
    a, om, V = _outer(ch, q, 6, seed=8)
    sd = np.sqrt(np.diag(V)[:2])
    ref = fibre_reference(a, om, T, W, sd, [0.0, 0.0], V[2, 2], skip, ch.beta)
    blocks = np.zeros((2, 3, 2, 3), dtype=bool)
    for j in range(3):
        blocks[:, j, :, j] = True
    for mode, done in ((kern.FIBRE_MEANS, np.zeros_like(blocks)),
                       (kern.FIBRE_LAYER_BLOCKS, blocks),
                       (kern.FIBRE_FULL, np.ones_like(blocks))):
        new = (np.empty_like(ref[0]), np.empty_like(ref[1]), np.full_like(ref[2], np.nan))
        kern.fibre_moments_depth3(a, om, T, W, sd, V[2, 2], skip, ch.beta, *new, mode)
        np.testing.assert_allclose(new[0], ref[0], rtol=1e-11)
        np.testing.assert_allclose(new[1], ref[1], rtol=1e-11, atol=1e-13)
        np.testing.assert_allclose(new[2][:, :, done], ref[2][:, :, done], rtol=1e-11,
                                   atol=1e-13)
        assert np.all(np.isnan(new[2][:, :, ~done]))
