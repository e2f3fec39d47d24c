"""The fused CUDA fibre kernel on numba's CUDA simulator against the numba CPU kernels.

Run in its own process (``NUMBA_ENABLE_CUDASIM`` must be set before ``numba.cuda`` is
imported): ``python tests/cudasim_fibre.py`` prints one JSON line: per case the largest
absolute differences of ``log Z``, mean and second moment (``None``: not computed), the
kernel mode, and whether unsupported sizes were refused.  Tiny sizes: the simulator runs
every thread in Python.
"""

from __future__ import annotations

import json
import os
import sys

os.environ["NUMBA_ENABLE_CUDASIM"] = "1"
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir))

import numpy as np  # noqa: E402

from asymptotics.channels.attention import AttentionChannel  # noqa: E402
from asymptotics.integrate import sobol, trapezoid  # noqa: E402

CORRELATED = np.array([[0.8, 0.3], [0.3, 0.6]])
#: (name, depth, L, skip, V, second, inner_path, zero ω_U)
CASES = [
    ("d2-L2-correlated", 2, 2, 1.0, CORRELATED, True, "general", False),
    ("d2-L2-lopsided-c0.05", 2, 2, 0.05, np.diag([3.0, 0.02]), True, "general", False),
    ("d2-L2-importance", 2, 2, 0.05, np.diag([0.8, 0.6]), False, "shared", False),
    ("d2-L2-shared-mixers", 2, 2, 1.0, np.diag([0.8, 0.6]), True, "general", True),
    ("d1-L3", 1, 3, 0.05, np.array([[0.7]]), True, "auto", False),
    ("d3-L2-correlated", 3, 2, 0.05,
     np.array([[0.9, 0.2, 0.1], [0.2, 0.7, 0.3], [0.1, 0.3, 0.5]]), True, "general", False),
    ("d2-L3-c0.05", 2, 3, 0.05, np.diag([0.9, 0.5]), True, "general", False),
]


def inner_rule(depth, L):
    d = (depth - 1) * L
    if d == 0:
        return None
    if d == 1:
        return trapezoid(1, 16, 6.0)
    if d == 2:
        return trapezoid(2, 5, 6.0)
    return sobol(d, 5)


def main():
    rng = np.random.default_rng(7)
    out = {}
    for name, depth, L, skip, V, second, path, zero_u in CASES:
        ch = AttentionChannel(depth, L, skip=skip, beta=1.0, inner_rule=inner_rule(depth, L))
        a = ch.observe(rng.standard_normal((3, L, depth)))
        om = 0.4 * rng.standard_normal((3, L, depth))
        if zero_u:
            om[:, :, : depth - 1] = 0.0
        ref = ch.fibre_moments(a, om, V, second=second, inner_path=path)
        got = ch._fibre_fused(np, a, om, V, second, True, path)
        errs = {}
        for f in ("log_norm", "mean", "second"):
            x, y = getattr(ref, f), getattr(got, f)
            if f == "second" and not second:
                errs[f] = None if np.all(np.isnan(y)) else float("inf")
            else:
                same_nan = bool(np.array_equal(np.isnan(x), np.isnan(y)))
                ok = np.isfinite(x)
                errs[f] = float(np.max(np.abs(x - y)[ok])) if same_nan else float("inf")
        errs["shape"] = list(got.mean.shape)
        out[name] = errs
    from asymptotics.channels import _attention_cuda as cu

    refused = []
    for L, depth in ((5, 2), (2, 4)):
        try:
            cu.check_sizes(L, depth)
        except ValueError as exc:
            refused.append(str(exc))
    out["refused"] = refused
    print(json.dumps(out))


if __name__ == "__main__":
    main()
