"""Benchmark: the vectorised exponential and the depth-2 SE mean kernels (issue 15).

Prints (1) ns per element of a loop over ``vexp`` against a loop over ``math.exp``, and
(2) the time of one call of each depth-2, L = 2 SE mean kernel on the inputs of an SE map
at 2^sobol-log2 outer points, the current kernels against those of an earlier commit
(``--against``, default 4e1a151: the libm kernels before the vectorised ones), loaded from
git into a temporary module and run side by side in this process, with the ratio and the
largest relative difference of the outputs.  Minimum of ``--repeat`` runs each, after a
compiling call.

    python benchmarks/bench_kernels.py [--against 4e1a151] [--sobol-log2 12] [--repeat 7]
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import os
import platform
import subprocess
import sys
import tempfile
import time

import numpy as np
from numba import njit

from asymptotics.channels import _attention_kernels as kern
from asymptotics.channels._vector_exp import vexp
from asymptotics.channels.registry import make_channel
from asymptotics.state_evolution import SESettings, StateEvolution

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
#: floating-point operations per (outer, inner) pair, counted in the kernels' source (vexp:
#: 35 = reduction 7, Horner 26, scaling 2); the bound they are compared with is two 8-wide
#: vector operations per cycle and core at the clock /proc/cpuinfo reports
FLOPS_PER_PAIR = {"diagonal_fibre_means_two_tokens": 123, "fibre_means_two_tokens": 214}
VECTOR_FLOPS_PER_CYCLE = 16


def clock_ghz() -> float | None:
    try:
        with open("/proc/cpuinfo") as fh:
            mhz = [float(line.split(":")[1]) for line in fh if line.startswith("cpu MHz")]
        return mhz[0] / 1e3 if mhz else None
    except OSError:
        return None


@njit
def _sum_vexp(x, out):
    for i in range(x.size):
        out[i] = vexp(x[i])


@njit
def _sum_libm(x, out):
    for i in range(x.size):
        out[i] = math.exp(x[i])


def best(fn, repeat):
    fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def kernels_at(commit: str):
    """The module ``_attention_kernels`` as it was at ``commit``."""
    src = subprocess.run(["git", "-C", ROOT, "show", f"{commit}:asymptotics/channels/"
                          "_attention_kernels.py"], check=True, capture_output=True,
                         text=True).stdout
    path = os.path.join(tempfile.mkdtemp(), f"kernels_{commit}.py")
    with open(path, "w") as fh:
        fh.write(src.replace("from ._vector_exp", "from asymptotics.channels._vector_exp"))
    spec = importlib.util.spec_from_file_location(f"kernels_{commit}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def capture(q, path, sobol_log2):
    """The arguments of the mean kernel one SE map at ``diag(q)`` calls on ``path``."""
    name = {"general": "fibre_means_two_tokens", "shared": "diagonal_fibre_means_two_tokens"}
    seen = {}
    original = getattr(kern, name[path])

    def spy(*args):
        seen.setdefault("args", [a.copy() if isinstance(a, np.ndarray) else a for a in args])
        return original(*args)

    setattr(kern, name[path], spy)
    try:
        se = StateEvolution(make_channel(), 0.8, SESettings(sobol_log2=sobol_log2),
                            inner_path=path)
        se.update(np.diag(q))
    finally:
        setattr(kern, name[path], original)
    return name[path], seen["args"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--against", default="4e1a151")
    ap.add_argument("--sobol-log2", type=int, default=12)
    ap.add_argument("--repeat", type=int, default=7)
    args = ap.parse_args()
    print(f"{platform.processor() or 'cpu'}, {os.cpu_count()} cores, load "
          f"{os.getloadavg()[0]:.2f}")
    x = np.random.default_rng(0).uniform(-30.0, 0.0, 4096)
    out = np.empty_like(x)
    t_v = best(lambda: [_sum_vexp(x, out) for _ in range(100)], args.repeat) / 409600
    t_l = best(lambda: [_sum_libm(x, out) for _ in range(100)], args.repeat) / 409600
    print(f"exp over 4096 doubles, one core: vexp {t_v * 1e9:.2f} ns, math.exp "
          f"{t_l * 1e9:.2f} ns per element: ratio {t_l / t_v:.2f}")
    old = kernels_at(args.against)
    old_name = {"diagonal_fibre_means_two_tokens": "diagonal_fibre_means"}
    for q, path in (((0.3, 0.7), "shared"), ((0.9, 0.99), "general")):
        name, kargs = capture(q, path, args.sobol_log2)
        inputs, n_out = kargs[:-3], 3
        results, times = {}, {}
        for label, fn in (("current", getattr(kern, name)),
                          (args.against, getattr(old, old_name.get(name, name)))):
            outs = [np.empty_like(a) for a in kargs[-n_out:]]
            times[label] = best(lambda fn=fn, ins=inputs, outs=outs: fn(*ins, *outs),
                                args.repeat)
            results[label] = outs
        diff = max(float(np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-300)))
                   for a, b in zip(results["current"], results[args.against], strict=True))
        pairs = kargs[0].shape[0] * kargs[2].shape[0]
        t_new, t_old = times["current"], times[args.against]
        print(f"{name} at Q = diag{q} ({pairs / 1e6:.1f}M pairs): {args.against} "
              f"{t_old * 1e3:.1f} ms, current {t_new * 1e3:.1f} ms ({t_new / pairs * 1e9:.2f} "
              f"ns per pair): ratio {t_old / t_new:.2f}; largest relative difference "
              f"{diff:.1e}")
        gflops = FLOPS_PER_PAIR[name] * pairs / t_new / os.cpu_count() / 1e9
        ghz = clock_ghz()
        bound = f" = {gflops / (VECTOR_FLOPS_PER_CYCLE * ghz):.0%} of {VECTOR_FLOPS_PER_CYCLE} " \
            f"flops per cycle at {ghz:.2f} GHz" if ghz else ""
        print(f"    {FLOPS_PER_PAIR[name]} flops per pair: {gflops:.1f} GFLOP/s per core{bound}")


if __name__ == "__main__":
    sys.exit(main())
