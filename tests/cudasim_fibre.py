"""The fused CUDA fibre kernel on numba's CUDA simulator against the numba CPU kernels.

Run in its own process (``NUMBA_ENABLE_CUDASIM`` must be set before numba is imported):
``python tests/cudasim_fibre.py OUT.npz`` runs the fused kernel on every case of
:func:`cases` (tiny sizes: the simulator runs every thread in Python), saves its results to
``OUT.npz`` and prints one JSON line: whether unsupported sizes were refused and whether
one weight set without second moments gave the same bits.  The test computes the numba
references in its own process (:func:`errors` compares them).

``python tests/cudasim_fibre.py ptx`` instead compiles every kernel specialisation to PTX
for sm_90 with the real CUDA target (no GPU needed, but libNVVM): the simulator runs the
Python, not numba's CUDA typing and lowering (``max(a, b)``, for one, types in the
simulator and not on the device).  Prints ``{"ptx": {name: "ok" | error}}``, or
``{"skip": why}`` without libNVVM.

``python tests/cudasim_fibre.py amp`` runs AMP's device path (``device="gpu"``) on the
simulator, with a stand-in for cupy (numpy under another name, so every ``xp is np`` test
takes its device branch) against the CPU run: ``{"amp": max differences of M_raw, V,
g_rel_quad_error over 3 iterations}``.

``python tests/cudasim_fibre.py keys`` prints the index keys under which numba's on-disk
cache files each kernel specialisation (fibre and training kernels; no GPU needed):
``{"keys": {name: key}}``.  ``python tests/cudasim_fibre.py gpu-cache`` (a real GPU) runs
one fibre call and prints the kernel's cache hits and misses in this process and a digest
of the results.
"""

from __future__ import annotations

import json
import os
import sys

PTX = sys.argv[1:] == ["ptx"]
AMP = sys.argv[1:] == ["amp"]
KEYS = sys.argv[1:] == ["keys"]
GPU_CACHE = sys.argv[1:] == ["gpu-cache"]
if __name__ == "__main__" and not (PTX or KEYS or GPU_CACHE):
    os.environ["NUMBA_ENABLE_CUDASIM"] = "1"  # the test process imports CASES, no simulator
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
    ("d2-L2-importance-diagonal", 2, 2, 0.05, np.diag([0.8, 0.6]), "diagonal", "shared",
     False),
    ("d3-L2-diagonal", 3, 2, 0.05, np.diag([0.9, 0.7, 0.5]), "diagonal", "general", False),
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


def cases():
    """``(name, channel, a, omega, V, second, inner_path)`` of every case, the same inputs in
    every process (seeded)."""
    rng = np.random.default_rng(7)
    for name, depth, L, skip, V, second, path, zero_u in CASES:
        ch = AttentionChannel(depth, L, skip=skip, beta=1.0, inner_rule=inner_rule(depth, L))
        K = 9 if depth == 1 else 3  # one node at depth 1: cheap, so three blocks
        a = ch.observe(rng.standard_normal((K, L, depth)))
        om = 0.4 * rng.standard_normal((K, L, depth))
        if zero_u:
            om[:, :, : depth - 1] = 0.0
        yield name, ch, a, om, V, second, path


def errors(ref, got, second, L, depth):
    """Largest differences of ``log Z``, mean and second moment between the kernels' results
    (``None``: not computed, ``inf``: NaN patterns differ)."""
    errs = {}
    for f in ("log_norm", "mean", "second"):
        x, y = getattr(ref, f), getattr(got, f)
        if f == "second" and not second:
            errs[f] = None if np.all(np.isnan(y)) else float("inf")
        elif f == "second" and second == "diagonal":  # E[z_lj²]: the diagonal only
            idx = [(lay, j) for lay in range(L) for j in range(depth)]
            xd = np.stack([x[..., lay, j, lay, j] for lay, j in idx])
            yd = np.stack([y[..., lay, j, lay, j] for lay, j in idx])
            off = np.ones(y.shape[-4:], dtype=bool)
            for lay, j in idx:
                off[lay, j, lay, j] = False
            ok = np.all(np.isfinite(xd)) and np.all(np.isnan(y[..., off]))
            errs[f] = float(np.max(np.abs(xd - yd))) if ok else float("inf")
        else:
            same_nan = bool(np.array_equal(np.isnan(x), np.isnan(y)))
            ok = np.isfinite(x)
            errs[f] = float(np.max(np.abs(x - y)[ok])) if same_nan else float("inf")
    return errs


def main():
    """The fused kernel on the simulator for every case, its results saved to ``argv[1]``
    (npz: ``{name}/{field}``); the numba references are computed by the test, in its own
    process, where the CPU kernels are compiled (or cached) anyway."""
    saved = {}
    out = {}
    for name, ch, a, om, V, second, path in cases():
        got = ch._fibre_fused(np, a, om, V, second, True, path)
        for f in ("log_norm", "mean", "second"):
            saved[f"{name}/{f}"] = getattr(got, f)
        if name == "d2-L2-correlated":  # one weight set, no second moments: served by
            # the kernel of two sets with them (compiled_variant), so the same bits
            one = ch._fibre_fused(np, a, om, V, False, False, path)
            out["variant"] = bool(
                one.log_norm.shape == (1, len(a)) and np.all(np.isnan(one.second))
                and np.array_equal(one.log_norm[0], got.log_norm[0])
                and np.array_equal(one.mean[0], got.mean[0]))
    np.savez(sys.argv[1], **saved)
    from asymptotics.channels import _attention_cuda as cu

    refused = []
    for L, depth in ((5, 2), (2, 4)):
        try:
            cu.check_sizes(L, depth)
        except ValueError as exc:
            refused.append(str(exc))
    out["refused"] = refused
    print(json.dumps(out))


def compile_all():
    """Every specialisation the channel can ask for, compiled to PTX (cc 9.0)."""
    from numba import cuda, float64
    from numba.cuda import dispatcher

    class Hopper:  # device functions ask the current device for its compute capability
        compute_capability = (9, 0)

    dispatcher.get_current_device = lambda: Hopper()
    from asymptotics.channels import _attention_cuda as cu

    A1, A2, A3, A4 = float64[::1], float64[:, ::1], float64[:, :, ::1], float64[:, :, :, ::1]
    sig = (A2, A3, A3, A2, A2, A3, A1, A1, A1, float64, float64, float64, float64, A2, A3, A4)
    out = {}
    specs = [(2, 2, 2, True, "general"), (2, 2, 2, False, "importance"),
             (2, 2, 2, "diagonal", "importance"), (2, 2, 2, "diagonal", "general"),
             (2, 2, 2, True, "shared"), (3, 3, 2, True, "general"), (4, 1, 1, False, "general")]
    for spec in specs:
        name = "-".join(map(str, spec))
        try:
            cuda.compile_ptx(cu.fibre_kernel(*spec).py_func, sig, cc=(9, 0))
            out[name] = "ok"
        except Exception as exc:  # noqa: BLE001 - reported to the test
            text = f"{type(exc).__name__}: {exc}"
            if "NVVM" in text or "libnvvm" in text.lower():
                print(json.dumps({"skip": text[:300]}))
                return
            out[name] = text[:500]
    print(json.dumps({"ptx": out}))


def amp_on_the_simulator():
    """AMP with ``device="gpu"`` where the device namespace is numpy under another name."""
    import types

    import asymptotics.backend as backend
    import asymptotics.channels.attention as attention
    import simulators.amp as amp

    fake = types.ModuleType("fakecupy")
    for name in dir(np):
        if not name.startswith("__"):
            setattr(fake, name, getattr(np, name))
    # device arrays are fresh and writable, as cupy's uploads are
    fake.asarray = lambda x, dtype=None: np.array(x, dtype=dtype)
    fake.ascontiguousarray = lambda x, dtype=None: np.array(x, dtype=dtype, order="C")
    real = backend.get_namespace

    def namespace(device="cpu"):
        return fake if device == "gpu" else real(device)

    attention.get_namespace = amp.get_namespace = namespace
    ch = AttentionChannel(inner_rule=trapezoid(2, 9, 6.0))
    runs = [amp.run_amp(ch, amp.AMPConfig(dim=30, alpha=1.2, max_iter=3, n_test=50,
                                          device=d), seed=1) for d in ("cpu", "gpu")]
    out = {"iterations": [len(r.records) for r in runs], "M_raw": 0.0, "V": 0.0, "quad": 0.0}
    for ra, rb in zip(runs[0].records[1:], runs[1].records[1:], strict=True):
        out["M_raw"] = max(out["M_raw"], float(np.max(np.abs(np.subtract(ra["M_raw"],
                                                                           rb["M_raw"])))))
        out["V"] = max(out["V"], float(np.max(np.abs(np.subtract(ra["V"], rb["V"])))))
        out["quad"] = max(out["quad"], abs(ra["g_rel_quad_error"] - rb["g_rel_quad_error"]))
    print(json.dumps({"amp": out}))


def cache_keys():
    """numba's own index key of each kernel specialisation (``CUDACache._index_key``, a
    stand-in codegen for the device's compute capability): the kernels are closures of a
    factory, so their cached binaries are told apart by these keys alone."""
    import hashlib

    from numba import float64
    from numba.cuda.dispatcher import CUDACache

    from asymptotics.channels import _attention_cuda as cu
    from simulators import _training_cuda as tc

    class Hopper:
        def magic_tuple(self):
            return ("runtime", (9, 0))

    sig = (float64[:, ::1],)
    kernels = {"-".join(map(str, spec)): cu.fibre_kernel(*spec) for spec in
               [(2, 2, 2, True, "general"), (2, 2, 2, True, "shared"),
                (2, 2, 2, False, "importance"), (2, 2, 2, "diagonal", "importance"),
                (2, 2, 2, False, "general"), (2, 2, 3, True, "general"),
                (2, 3, 2, True, "general"), (3, 2, 2, True, "general")]}
    kernels.update({f"xw-{w}-{st}": k for (w, st), k in tc._XW_KERNELS.items()})
    kernels.update({f"xtg-{w}": k for w, k in tc._XTG_KERNELS.items()})
    keys = {}
    for name, k in kernels.items():
        key = CUDACache(k.py_func)._index_key(sig, Hopper())
        keys[name] = hashlib.sha256(repr(key).encode()).hexdigest()
    print(json.dumps({"keys": keys}))


def gpu_cache():
    """One fibre call on the GPU; the kernel's on-disk cache hits and misses."""
    import hashlib

    from asymptotics.channels import _attention_cuda as cu

    ch = AttentionChannel()
    rng = np.random.default_rng(11)
    a = ch.observe(rng.standard_normal((256, 2, 2)))
    om = 0.4 * rng.standard_normal((256, 2, 2))
    res = ch.fibre_moments(a, om, CORRELATED, device="gpu")
    stats = cu.fibre_kernel(2, 2, 2, True, "general").stats
    digest = hashlib.sha256(np.concatenate([res.log_norm.ravel(), res.mean.ravel(),
                                            res.second.ravel()]).tobytes()).hexdigest()
    print(json.dumps({"hits": sum(stats.cache_hits.values()),
                      "misses": sum(stats.cache_misses.values()), "digest": digest}))


if __name__ == "__main__":
    if GPU_CACHE:
        gpu_cache()
        sys.exit()
    (compile_all() if PTX else amp_on_the_simulator() if AMP else cache_keys() if KEYS
     else main())
