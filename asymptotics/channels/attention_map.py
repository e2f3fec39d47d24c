"""Forward map of the deep tied low-rank attention network (THEORY.md §2).

This module is the single source of truth for the network's forward map.  It is used by
the attention channel (state evolution, data generation, AMP) and by the training
simulator, on any array namespace (numpy or cupy).

Pre-activations are passed as ``Z`` with shape ``(..., L, depth * rank)``: columns
``[k*rank:(k+1)*rank]`` hold ``z_k = x w_k / sqrt(D)`` of layer ``k`` (0-based).

    s_1 = z_1,  A_k = softmax_rows(beta s_k s_k^T) + c I,  B_k = A_k ... A_1,
    s_k = B_{k-1} z_k,  y = softmax_rows(beta s_depth s_depth^T).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..backend import namespace_of
from ..checks import check_int, check_number


@dataclass(frozen=True)
class Architecture:
    """One deep tied low-rank attention network: ``depth`` layers of rank ``rank`` on
    sequences of ``seq_len`` tokens, skip strength ``skip`` (the ``c I`` of ``A_k``) and
    softmax inverse temperature ``beta``.  The channel and the trained network share it."""

    depth: int = 2
    seq_len: int = 2
    skip: float = 1.0
    beta: float = 1.0
    rank: int = 1

    def __post_init__(self):
        check_int("depth", self.depth, 1)
        check_int("seq_len", self.seq_len, 2)
        check_int("rank", self.rank, 1)
        check_number("skip", self.skip, minimum=0)
        check_number("beta", self.beta, above=0)


def softmax_rows(scores, xp=None):
    """Row-wise softmax of ``(..., L, L)`` scores, stabilised by the row maximum."""
    xp = xp or namespace_of(scores)
    shifted = scores - scores.max(axis=-1, keepdims=True)
    e = xp.exp(shifted)
    return e / e.sum(axis=-1, keepdims=True)


@dataclass
class AttentionForward:
    """Output and intermediates of one forward pass (kept for backward passes)."""

    y: object  # (..., L, L) last attention matrix
    s: list  # s_k, (..., L, rank), k = 1..depth
    softmaxes: list  # softmax_rows(beta s_k s_k^T), (..., L, L), k = 1..depth
    mixers: list  # B_{k-1}, (..., L, L), k = 1..depth (B_0 = I)


def attention_forward(
    Z, depth: int, skip: float = 1.0, beta: float = 1.0, rank: int = 1, keep: bool = False
):
    """Apply the depth-``depth`` tied attention map to pre-activations ``Z``.

    Returns the last layer's attention matrix ``y`` of shape ``(..., L, L)``; with
    ``keep=True`` an :class:`AttentionForward` holding every intermediate.
    """
    xp = namespace_of(Z)
    if Z.shape[-1] != depth * rank:
        raise ValueError(f"Z has {Z.shape[-1]} columns, expected depth*rank = {depth}*{rank}")
    L = Z.shape[-2]
    eye = xp.eye(L, dtype=Z.dtype)
    mixer = xp.broadcast_to(eye, Z.shape[:-2] + (L, L))
    s_list, sm_list, mix_list = [], [], []
    y = None
    for k in range(depth):
        z_k = Z[..., k * rank : (k + 1) * rank]
        s_k = z_k if k == 0 else mixer @ z_k
        sm = softmax_rows(beta * (s_k @ xp.swapaxes(s_k, -1, -2)), xp)
        if keep:
            s_list.append(s_k)
            sm_list.append(sm)
            mix_list.append(mixer)
        if k == depth - 1:
            y = sm
        else:
            mixer = (sm + skip * eye) @ mixer
    if keep:
        return AttentionForward(y=y, s=s_list, softmaxes=sm_list, mixers=mix_list)
    return y


def last_preactivation(Z, depth: int, skip: float = 1.0, beta: float = 1.0, rank: int = 1):
    """``s_depth = B_{depth-1} z_depth``: the statistic the output determines up to sign."""
    fwd = attention_forward(Z, depth, skip, beta, rank, keep=True)
    return fwd.s[-1]


def fibre_from_output(y, beta: float = 1.0):
    """Recover ``a = s_depth`` (rank 1) from ``y = softmax(beta a a^T)`` up to a global sign.

    With ``M_ij = log(y_ij / y_ii) = beta a_i (a_j - a_i)``:
    ``(a_j - a_i)^2 = -(M_ij + M_ji)/beta`` and ``a_j^2 - a_i^2 = (M_ij - M_ji)/beta``, so
    ``a_i^2 = (t - d)^2 / (4 d)`` with ``d = (a_j-a_i)^2``, ``t = a_j^2-a_i^2`` (any j != i),
    and the Gram matrix ``a_i a_j = M_ij/beta + a_i^2`` gives ``a`` up to sign.  The sign is
    fixed so that the largest-magnitude entry is positive.
    """
    xp = namespace_of(y)
    logy = xp.log(y)
    diag = xp.diagonal(logy, axis1=-2, axis2=-1)[..., :, None]
    M = (logy - diag) / beta
    Mt = xp.swapaxes(M, -1, -2)
    d = -(M + Mt)  # (a_j - a_i)^2, zero on the diagonal
    t = M - Mt  # a_j^2 - a_i^2
    L = y.shape[-1]
    # pair each i with the j != i of largest separation, for conditioning
    d_off = d + xp.eye(L, dtype=d.dtype) * (-1.0)
    j = xp.argmax(d_off, axis=-1)[..., None]
    dj = xp.take_along_axis(d, j, axis=-1)[..., 0]
    tj = xp.take_along_axis(t, j, axis=-1)[..., 0]
    a_sq = (tj - dj) ** 2 / (4.0 * dj)
    gram = M + a_sq[..., :, None]
    k = xp.argmax(a_sq, axis=-1)[..., None]
    col = xp.take_along_axis(gram, k[..., None], axis=-1)[..., 0]  # a_i a_k
    ak = xp.sqrt(xp.take_along_axis(a_sq, k, axis=-1))
    return col / ak


def attention_mixer_inverse(ZU, skip: float, beta: float):
    """``B = B_{depth-1}(z_1..z_{depth-1})`` with its inverse and log|det| (rank 1).

    ``ZU`` has shape ``(..., L, depth-1)``.  Used by the fibre integral.
    """
    xp = namespace_of(ZU)
    L = ZU.shape[-2]
    eye = xp.eye(L, dtype=ZU.dtype)
    mixer = xp.broadcast_to(eye, ZU.shape[:-2] + (L, L))
    for k in range(ZU.shape[-1]):
        z_k = ZU[..., k : k + 1]
        s_k = z_k if k == 0 else mixer @ z_k
        sm = softmax_rows(beta * (s_k @ xp.swapaxes(s_k, -1, -2)), xp)
        mixer = (sm + skip * eye) @ mixer
    _, logdet = xp.linalg.slogdet(mixer)
    return mixer, xp.linalg.inv(mixer), logdet
