"""Elementwise first-order optimizers on arrays of any shape and any array namespace.

Every optimizer is one class with the common interface::

    opt = make_optimizer("adam", lr=1e-2)
    params = opt.step(params, grad)            # returns the new parameter array
    params = opt.step(params, grad, oracle)    # SAM / Functional-SAM need an oracle

``params`` and ``grad`` are arrays of the same shape in one namespace (numpy or cupy);
state (moments) is created lazily with ``zeros_like`` on the first step, so the same
object works on CPU and GPU.  ``step`` never modifies ``params`` in place: it returns a
new array (the oracles below rely on that).  ``reset()`` forgets the state.

Weight decay (``weight_decay = lam``) is *coupled* (an L2 penalty ``lam/2 ||w||^2`` added
to the objective, i.e. ``g <- g + lam w`` before the rule) for every optimizer except
:class:`AdamW`, where it is decoupled as in Loshchilov & Hutter.

Sharpness-aware methods need the model, through an *oracle* object with

    oracle.grad(params)                     -> gradient of the current-batch loss
    oracle.output_cotangent(params)         -> dloss/d(network output) at params
    oracle.vjp(params, cotangent)           -> J(params)^T cotangent  (J = d output/d params)

(:class:`GradientOracle` documents the protocol; SAM only uses ``grad``.)

Sources
-------
- GD / SGD with heavy-ball momentum: Polyak (1964); the convention ``b <- mu b + g``,
  ``w <- w - lr b`` is PyTorch's ``torch.optim.SGD``.
- Adam: Kingma & Ba, ICLR 2015 (arXiv:1412.6980), Algorithm 1.
- AdamW: Loshchilov & Hutter, ICLR 2019 (arXiv:1711.05101), Algorithm 2 (schedule
  multiplier fixed to 1).
- SignGD / Signum: Bernstein, Wang, Azizzadenesheli & Anandkumar, "signSGD", ICML 2018
  (arXiv:1802.04434), Algorithms 1 and 3.
- SVAG / M-SVAG: Balles & Hennig, "Dissecting Adam", ICML 2018 (arXiv:1705.07774),
  Algorithms 1-2 and the reference implementation github.com/lballes/msvag.
- Normalised GD ``w <- w - lr g/||g||``: e.g. Nacson et al., AISTATS 2019
  (arXiv:1803.01905); used for next-token prediction by Huang, Liang & Yang, NeurIPS 2024.
- SAM: Foret, Kleiner, Mobahi & Neyshabur, ICLR 2021 (arXiv:2010.01412).
- Functional-SAM and preconditioned SAM: Singh, Hofmann et al., "Avoiding spurious
  sharpness minimization broadens applicability of SAM", 2025 (arXiv:2502.02407).
"""

from __future__ import annotations

import math
from typing import Protocol

from asymptotics.backend import namespace_of

__all__ = [
    "GD",
    "NormalizedGD",
    "SGD",
    "Adam",
    "AdamW",
    "SignGD",
    "Signum",
    "SVAG",
    "MSVAG",
    "SAM",
    "FunctionalSAM",
    "GradientOracle",
    "OPTIMIZERS",
    "make_optimizer",
    "parse_optimizer_name",
    "svag_rho",
]


class GradientOracle(Protocol):
    """What sharpness-aware optimizers need from the model (on the current batch)."""

    def grad(self, params):  # pragma: no cover - protocol
        """Gradient of the current-batch loss at ``params``."""

    def output_cotangent(self, params):  # pragma: no cover - protocol
        """Derivative of the current-batch loss with respect to the network output."""

    def vjp(self, params, cotangent):  # pragma: no cover - protocol
        """``J(params)^T cotangent`` with ``J`` the Jacobian of the output in ``params``."""


class Optimizer:
    """Base class: learning rate, coupled weight decay and a step counter ``t``."""

    name = "base"
    needs_oracle = False

    def __init__(self, lr: float, weight_decay: float = 0.0):
        if not (lr > 0 and math.isfinite(lr)):
            raise ValueError(f"learning rate must be positive and finite, got {lr!r}")
        if not (weight_decay >= 0 and math.isfinite(weight_decay)):
            raise ValueError(f"weight_decay must be >= 0 and finite, got {weight_decay!r}")
        self.lr = float(lr)
        self.weight_decay = float(weight_decay)
        self.reset()

    def reset(self):
        self.t = 0

    def _decayed(self, params, grad):
        if self.weight_decay:
            return grad + self.weight_decay * params
        return grad

    def second_moment(self):
        """Bias-corrected second-moment estimate, or ``None`` (used by preconditioned SAM)."""
        return None

    def step(self, params, grad, oracle=None):
        raise NotImplementedError

    def __repr__(self):
        return f"{type(self).__name__}(lr={self.lr}, weight_decay={self.weight_decay})"


class GD(Optimizer):
    """Plain gradient descent ``w <- w - lr g`` (full batch when fed full-batch gradients)."""

    name = "gd"

    def step(self, params, grad, oracle=None):
        self.t += 1
        return params - self.lr * self._decayed(params, grad)


class NormalizedGD(Optimizer):
    """Normalised gradient descent ``w <- w - lr g/||g||`` (one global Euclidean norm).

    ``g`` includes the coupled weight decay; a zero gradient gives no move (a non-finite
    one propagates).  Each step has length ``lr`` exactly, so ``||w_t|| <= ||w_0|| + lr t``.  Not in
    :data:`OPTIMIZERS` (so the attention ``train`` CLI, which has no default step for it,
    does not offer it); build it directly or with ``make_optimizer("ngd", lr)``.
    """

    name = "ngd"

    def step(self, params, grad, oracle=None):
        xp = namespace_of(params, grad)
        self.t += 1
        g = self._decayed(params, grad)
        norm = float(xp.sqrt(xp.sum(g * g)))
        if norm == 0.0:
            return params * 1.0  # a new array, as for every optimizer here
        return params - (self.lr / norm) * g


class SGD(Optimizer):
    """SGD with heavy-ball momentum: ``b <- mu b + g``, ``w <- w - lr b`` (PyTorch form)."""

    name = "sgd"

    def __init__(self, lr, momentum: float = 0.9, weight_decay: float = 0.0):
        if not 0 <= momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {momentum!r}")
        self.momentum = float(momentum)
        super().__init__(lr, weight_decay)

    def reset(self):
        super().reset()
        self.buf = None

    def step(self, params, grad, oracle=None):
        self.t += 1
        g = self._decayed(params, grad)
        self.buf = g if self.buf is None else self.momentum * self.buf + g
        return params - self.lr * self.buf


class Adam(Optimizer):
    """Adam with bias correction: ``w <- w - lr m_hat / (sqrt(v_hat) + eps)``."""

    name = "adam"
    decoupled = False

    def __init__(self, lr, betas=(0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0.0):
        b1, b2 = betas
        if not (0 <= b1 < 1 and 0 <= b2 < 1):
            raise ValueError(f"Adam betas must lie in [0, 1), got {betas!r}")
        if not eps > 0:
            raise ValueError(f"eps must be positive, got {eps!r}")
        self.beta1, self.beta2, self.eps = float(b1), float(b2), float(eps)
        super().__init__(lr, weight_decay)

    def reset(self):
        super().reset()
        self.m = None
        self.v = None

    def second_moment(self):
        if self.v is None or self.t == 0:
            return None
        return self.v / (1.0 - self.beta2**self.t)

    def step(self, params, grad, oracle=None):
        xp = namespace_of(params, grad)
        self.t += 1
        g = grad if self.decoupled else self._decayed(params, grad)
        if self.m is None:
            self.m = xp.zeros_like(g)
            self.v = xp.zeros_like(g)
        self.m = self.beta1 * self.m + (1.0 - self.beta1) * g
        self.v = self.beta2 * self.v + (1.0 - self.beta2) * (g * g)
        m_hat = self.m / (1.0 - self.beta1**self.t)
        v_hat = self.v / (1.0 - self.beta2**self.t)
        update = m_hat / (xp.sqrt(v_hat) + self.eps)
        if self.decoupled and self.weight_decay:
            update = update + self.weight_decay * params
        return params - self.lr * update


class AdamW(Adam):
    """Adam with decoupled weight decay: ``w <- w - lr (m_hat/(sqrt(v_hat)+eps) + lam w)``."""

    name = "adamw"
    decoupled = True

    def __init__(self, lr, betas=(0.9, 0.999), eps: float = 1e-8, weight_decay: float = 1e-2):
        super().__init__(lr, betas=betas, eps=eps, weight_decay=weight_decay)


class SignGD(Optimizer):
    """Sign descent ``w <- w - lr sign(g)`` (signSGD with full or mini batches)."""

    name = "signgd"

    def step(self, params, grad, oracle=None):
        xp = namespace_of(params, grad)
        self.t += 1
        return params - self.lr * xp.sign(self._decayed(params, grad))


class Signum(Optimizer):
    """Sign of the momentum: ``m <- mu m + (1-mu) g``, ``w <- w - lr sign(m)``."""

    name = "signum"

    def __init__(self, lr, momentum: float = 0.9, weight_decay: float = 0.0):
        if not 0 <= momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {momentum!r}")
        self.momentum = float(momentum)
        super().__init__(lr, weight_decay)

    def reset(self):
        super().reset()
        self.m = None

    def step(self, params, grad, oracle=None):
        xp = namespace_of(params, grad)
        self.t += 1
        g = self._decayed(params, grad)
        if self.m is None:
            self.m = xp.zeros_like(g)
        self.m = self.momentum * self.m + (1.0 - self.momentum) * g
        return params - self.lr * xp.sign(self.m)


def svag_rho(beta: float, t: int) -> float:
    """``rho(beta, t) = (1-beta)(1+beta^t) / ((1+beta)(1-beta^t))`` (Balles & Hennig 2018).

    The variance of the bias-corrected moving average ``m_hat`` of ``t`` iid gradients of
    variance ``s`` is ``rho s``; ``rho(beta, 1) = 1`` and ``rho -> (1-beta)/(1+beta)``.
    """
    bt = beta**t
    return (1.0 - beta) * (1.0 + bt) / ((1.0 + beta) * (1.0 - bt))


class _VarianceAdapted(Optimizer):
    """Shared moments and variance estimate of SVAG and M-SVAG (one ``beta`` for both)."""

    def __init__(self, lr, momentum: float = 0.9, weight_decay: float = 0.0):
        if not 0 <= momentum < 1:
            raise ValueError(f"beta (momentum) must be in [0, 1), got {momentum!r}")
        self.beta = float(momentum)
        super().__init__(lr, weight_decay)

    def reset(self):
        super().reset()
        self.m = None
        self.v = None

    def second_moment(self):
        if self.v is None or self.t == 0:
            return None
        return self.v / (1.0 - self.beta**self.t)

    def _moments(self, params, grad):
        """Update the moments; return ``(g, m_hat, s, rho)``.

        ``s = (v_hat - m_hat^2)/(1 - rho)`` is the variance estimate; at ``t = 1``
        (``rho = 1``, ``v_hat = m_hat^2``) there is no variance information and ``s = 0``.
        """
        xp = namespace_of(params, grad)
        self.t += 1
        g = self._decayed(params, grad)
        if self.m is None:
            self.m = xp.zeros_like(g)
            self.v = xp.zeros_like(g)
        b = self.beta
        self.m = b * self.m + (1.0 - b) * g
        self.v = b * self.v + (1.0 - b) * (g * g)
        corr = 1.0 - b**self.t
        m_hat = self.m / corr
        v_hat = self.v / corr
        rho = svag_rho(b, self.t)
        if self.t == 1 or rho >= 1.0:
            s = xp.zeros_like(m_hat)
        else:
            s = (v_hat - m_hat * m_hat) / (1.0 - rho)
        return g, m_hat, s, rho

    @staticmethod
    def factor(m_hat, s, scale):
        """``gamma = m^2 / (m^2 + scale*s)`` clipped to [0, 1]; 0 where m = s = 0.

        A variance estimate made negative by rounding is treated as 0 (gamma = 1).
        """
        xp = namespace_of(m_hat)
        m2 = m_hat * m_hat
        den = m2 + scale * xp.maximum(s, 0.0)
        safe = xp.where(den > 0, den, 1.0)
        gamma = xp.where(den > 0, m2 / safe, 0.0)
        return xp.clip(gamma, 0.0, 1.0)


class MSVAG(_VarianceAdapted):
    """M-SVAG: ``w <- w - lr gamma m_hat`` with ``gamma = m^2/(m^2 + rho s)``."""

    name = "msvag"

    def step(self, params, grad, oracle=None):
        _, m_hat, s, rho = self._moments(params, grad)
        return params - self.lr * self.factor(m_hat, s, rho) * m_hat


class SVAG(_VarianceAdapted):
    """SVAG: ``w <- w - lr gamma g`` with ``gamma = m^2/(m^2 + s)``.

    The variance-adaptation factor of an estimator of variance ``sigma^2`` is
    ``mu^2/(mu^2 + sigma^2)``.  The step direction of SVAG is the stochastic gradient ``g``
    itself, of variance ``s``, so its factor is ``m^2/(m^2 + s)`` (Balles & Hennig 2018,
    Sec. 4 and their reference code); M-SVAG steps along ``m_hat``, of variance
    ``rho s``, hence ``m^2/(m^2 + rho s)``.  (The issue text wrote ``rho s`` for both; we
    follow the paper.)  With full-batch gradients ``s`` only measures drift.
    """

    name = "svag"

    def step(self, params, grad, oracle=None):
        g, m_hat, s, _ = self._moments(params, grad)
        return params - self.lr * self.factor(m_hat, s, 1.0) * g


class _SharpnessAware(Optimizer):
    """Common part of SAM and Functional-SAM: the perturbation ``eps`` and the base step.

    ``eps = rho d/||d||`` with one global Euclidean norm over the whole array, where
    ``d = g`` (plain) or ``d = g / (sqrt(v_hat) + precond_eps)`` (preconditioned, with
    ``v_hat`` the base optimizer's bias-corrected second moment from the previous steps;
    ``d = g`` while the base has none yet, e.g. at the first step or for GD).
    ``eps = 0`` when ``g = 0`` or ``rho = 0``.
    """

    needs_oracle = True

    def __init__(
        self,
        base: Optimizer,
        rho: float = 0.05,
        oracle=None,
        preconditioned: bool = False,
        precond_eps: float = 1e-8,
    ):
        if not (rho >= 0 and math.isfinite(rho)):
            raise ValueError(f"SAM radius rho must be >= 0 and finite, got {rho!r}")
        if base.needs_oracle:
            raise ValueError("the base optimizer of SAM must be a plain optimizer")
        self.base = base
        self.rho = float(rho)
        self.oracle = oracle
        self.preconditioned = bool(preconditioned)
        self.precond_eps = float(precond_eps)
        self.lr = base.lr
        self.weight_decay = base.weight_decay
        self.t = 0

    def reset(self):
        self.t = 0
        self.base.reset()

    def second_moment(self):
        return self.base.second_moment()

    def perturbation(self, grad):
        xp = namespace_of(grad)
        d = grad
        if self.preconditioned:
            v = self.base.second_moment()
            if v is not None:
                d = grad / (xp.sqrt(v) + self.precond_eps)
        norm = float(xp.sqrt(xp.sum(d * d)))
        if self.rho == 0.0 or norm == 0.0 or not math.isfinite(norm):
            return xp.zeros_like(grad)
        return (self.rho / norm) * d

    def _oracle(self, oracle):
        oracle = oracle if oracle is not None else self.oracle
        if oracle is None:
            raise ValueError(f"{type(self).__name__} needs a gradient oracle (see GradientOracle)")
        return oracle

    def __repr__(self):
        return (
            f"{type(self).__name__}(base={self.base!r}, rho={self.rho}, "
            f"preconditioned={self.preconditioned})"
        )


class SAM(_SharpnessAware):
    """Sharpness-aware minimisation: base step with ``grad L(w + eps)`` on the same batch."""

    name = "sam"

    def step(self, params, grad, oracle=None):
        oracle = self._oracle(oracle)
        self.t += 1
        eps = self.perturbation(grad)
        g_sam = oracle.grad(params + eps)
        return self.base.step(params, g_sam)


class FunctionalSAM(_SharpnessAware):
    """Functional-SAM: base step with ``J(w + eps)^T dloss/dyhat|_w`` (same batch).

    Only the Jacobian of the network is taken at the perturbed point; the loss derivative
    with respect to the outputs stays the one at ``w`` (Singh et al. 2025, eq. for FSAM).
    """

    name = "fsam"

    def step(self, params, grad, oracle=None):
        oracle = self._oracle(oracle)
        self.t += 1
        eps = self.perturbation(grad)
        cot = oracle.output_cotangent(params)
        g_fsam = oracle.vjp(params + eps, cot)
        return self.base.step(params, g_fsam)


OPTIMIZERS = {
    cls.name: cls for cls in (GD, SGD, Adam, AdamW, SignGD, Signum, MSVAG, SVAG)
}
SHARPNESS = {"sam": (SAM, False), "fsam": (FunctionalSAM, False),
             "psam": (SAM, True), "pfsam": (FunctionalSAM, True)}
_MOMENTUM_OPTS = ("sgd", "signum", "msvag", "svag")


def parse_optimizer_name(name: str):
    """Split ``'sam'``, ``'fsam-adam'``, ``'psam'`` ... into ``(wrapper, base)``.

    Returns ``(None, base)`` for a plain optimizer.  Sharpness-aware names are
    ``sam``/``fsam`` (base ``gd`` by default) and the preconditioned ``psam``/``pfsam``
    (base ``adam`` by default), optionally followed by ``-<base>``.
    """
    name = name.strip().lower()
    if name in OPTIMIZERS:
        return None, name
    head, _, base = name.partition("-")
    if head in SHARPNESS:
        base = base or ("adam" if SHARPNESS[head][1] else "gd")
        if base in OPTIMIZERS:
            return head, base
    known = sorted(OPTIMIZERS) + [f"{h}[-BASE]" for h in SHARPNESS]
    raise ValueError(f"unknown optimizer {name!r}; known: {', '.join(known)}")


def make_optimizer(
    name: str,
    lr: float,
    *,
    momentum: float | None = None,
    weight_decay: float = 0.0,
    rho: float = 0.05,
    betas=(0.9, 0.999),
    eps: float = 1e-8,
    oracle=None,
) -> Optimizer:
    """Build an optimizer from the registry by name (see :func:`parse_optimizer_name`).

    ``momentum`` is the heavy-ball / moving-average constant of sgd, signum, msvag and
    svag (default 0.9) and is ignored by the others; ``betas``/``eps`` are Adam's.
    """
    if name.strip().lower() == NormalizedGD.name:
        return NormalizedGD(lr, weight_decay=weight_decay)
    wrapper, base_name = parse_optimizer_name(name)
    cls = OPTIMIZERS[base_name]
    kw = {"weight_decay": weight_decay}
    if base_name in _MOMENTUM_OPTS:
        kw["momentum"] = 0.9 if momentum is None else momentum
    if base_name in ("adam", "adamw"):
        kw.update(betas=betas, eps=eps)
    base = cls(lr, **kw)
    if wrapper is None:
        return base
    wcls, pre = SHARPNESS[wrapper]
    return wcls(base, rho=rho, oracle=oracle, preconditioned=pre)
