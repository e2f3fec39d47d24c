"""The two-token fibre integral in numpy, from its definition (a reference for the kernels).

Per inner node ``t`` (``n x 2 x m``, m = depth - 1 upstream layers): ``u_j = ω_{·,j} +
sd_j t_j``, the mixer ``B = Π_j (softmax(β s_j s_jᵀ) + cI)`` with ``s_j = B_{<j} u_j``,
``x = B⁻¹ a``; both signs ``±x`` weighed by ``|det B|⁻¹ N(±x; μ, v I)``, ``μ_l = ω_{l,m} +
Σ_j c_reg_j sd_j t_{l,j}`` (the last layer conditioned on the upstream ones).  Returns
``log Z`` and the moments of ``z = (u_{l,0}, ..., u_{l,m-1}, ±x_l)`` per token on every
weight set, laid out as the kernels' ``lognorm (S, K)``, ``mean (S, K, 2, depth)``,
``second (S, K, 2, depth, 2, depth)``.
"""

from __future__ import annotations

import numpy as np


def fibre_reference(a, om, T, W, sd, c_reg, v_cond, skip, beta):
    K, S = a.shape[0], W.shape[0]
    m = T.shape[2]
    depth = m + 1
    ct = np.asarray(sd)[None, None, None, :] * T[None]  # (1, n, 2, m)
    u = om[:, None, :, :m] + ct  # (K, n, 2, m)
    mu = om[:, None, :, m] + (ct * np.asarray(c_reg)).sum(-1)  # (K, n, 2)
    B = np.broadcast_to(np.eye(2), u.shape[:2] + (2, 2)).copy()
    for j in range(m):
        s = np.einsum("knab,knb->kna", B, u[..., j])
        g = beta * s[..., :, None] * s[..., None, :]
        P = np.exp(g - g.max(-1, keepdims=True))
        B = (P / P.sum(-1, keepdims=True) + skip * np.eye(2)) @ B
    x = np.linalg.solve(B, np.broadcast_to(a[:, None, :, None], B.shape[:-1] + (1,)))[..., 0]
    logdet = np.log(np.abs(np.linalg.det(B)))
    lognorm = np.empty((S, K))
    mean = np.empty((S, K, 2, depth))
    second = np.empty((S, K, 2, depth, 2, depth))
    for q in range(S):
        for k in range(K):
            logw, zs = [], []
            for sign in (1.0, -1.0):
                r = sign * x[k] - mu[k]
                with np.errstate(divide="ignore"):  # zero weights: log 0 = -inf
                    logw.append(np.log(W[q]) - logdet[k] - (r * r).sum(-1) / (2 * v_cond))
                z = np.concatenate([u[k], sign * x[k][..., None]], -1)  # (n, 2, depth)
                zs.append(z.reshape(len(z), -1))
            logw, z = np.concatenate(logw), np.concatenate(zs)
            top = logw.max()
            w = np.exp(logw - top)
            lognorm[q, k] = np.log(w.sum()) + top - np.log(2 * np.pi * v_cond)
            mean[q, k] = (w @ z / w.sum()).reshape(2, depth)
            second[q, k] = (np.einsum("i,ir,ic->rc", w, z, z) / w.sum()).reshape(
                2, depth, 2, depth)
    return lognorm, mean, second
