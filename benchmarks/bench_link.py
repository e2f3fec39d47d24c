"""Link channels (issue 14): a model from a formula against the built-in channel.

    python benchmarks/bench_link.py                # thresholds, and a 16-point curve
    python benchmarks/bench_link.py --points 4     # a shorter curve

Printed, each the min over ``--repeats`` runs in this process (cache off), side by side:

* ``smi thresholds --link "z1*z2" --dim 2 --noise 0.1`` against ``smi thresholds --model
  product`` (its noiseless built-in counterpart: a 1-D fibre integral instead of the
  link's 2-D inner trapezoid);
* ``smi thresholds --link "sign(z1*z2)"`` (exact orthant sums) against ``--model
  sign-product`` (Legendre rules): the same model, the same number;
* a ``--points``-point AMP-branch curve of both links (``smi curve --branch amp``), and of
  the built-in sign-product channel.

The hardware bound printed is the inner-node rate of the link's posterior: nodes × outer
samples per second of one ``posterior_sets`` call, against a plain numpy ``exp`` over the
same number of elements (the bound of an integrand that needs one exponential per node).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), os.pardir))

from asymptotics.channels.link import LinkChannel  # noqa: E402
from smi.cli import main  # noqa: E402


def timed(argv: list[str], repeats: int) -> tuple[float, str]:
    best, out = float("inf"), ""
    for _ in range(repeats):
        buf = io.StringIO()
        t0 = time.perf_counter()
        with contextlib.redirect_stdout(buf):
            rc = main(argv + ["--no-cache"])
        best = min(best, time.perf_counter() - t0)
        if rc != 0:
            raise SystemExit(f"{argv}: exit {rc}")
        out = buf.getvalue()
    return best, out


def node_rate(repeats: int) -> None:
    ch = LinkChannel("z1*z2", noise=0.1)
    rng = np.random.default_rng(0)
    K = 256
    y, om = rng.standard_normal(K), 0.3 * rng.standard_normal((K, 1, 2))
    V = np.diag([0.8, 0.8])
    n = ch.rule.size
    t = min(_time(lambda: ch.posterior_sets(y, om, V, second=False)) for _ in range(repeats))
    x = rng.standard_normal(K * n)
    t_exp = min(_time(lambda: np.exp(x)) for _ in range(repeats))
    print(f"posterior of z1*z2 (Δ = 0.1): {K} samples x {n} nodes in {t:.3f} s = "
          f"{K * n / t:.3g} nodes/s; numpy exp alone {K * n / t_exp:.3g}/s "
          f"(fraction of that bound {t_exp / t:.2f})")


def _time(f) -> float:
    t0 = time.perf_counter()
    f()
    return time.perf_counter() - t0


def main_bench() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--points", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    r = args.repeats
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    pairs = [
        (["thresholds", "--link", "z1*z2", "--dim", "2", "--noise", "0.1"],
         ["thresholds", "--model", "product"]),
        (["thresholds", "--link", "sign(z1*z2)"], ["thresholds", "--model", "sign-product"]),
    ]
    for link_argv, builtin_argv in pairs:
        t_link, out_link = timed(link_argv, r)
        t_builtin, out_builtin = timed(builtin_argv, r)
        alpha_link = out_link.splitlines()[1].split()[-4]
        alpha_builtin = out_builtin.splitlines()[1].split()[-4]
        print(f"{' '.join(link_argv)}: {t_link:.2f} s (alpha_c {alpha_link}); "
              f"{' '.join(builtin_argv)}: {t_builtin:.2f} s (alpha_c {alpha_builtin}); "
              f"ratio {t_link / t_builtin:.2f}")
    alphas = f"0.25:{0.25 * args.points}:0.25"
    curves = [["curve", "--link", "sign(z1*z2)"], ["curve", "--model", "sign-product"],
              ["curve", "--link", "z1*z2", "--dim", "2", "--noise", "0.1"]]
    times = {}
    for argv in curves:
        t, _ = timed(argv + ["--alphas", alphas, "--branch", "amp", "--quiet"], 1)
        times[" ".join(argv)] = t
        print(f"{' '.join(argv)} --alphas {alphas} --branch amp: {t:.1f} s")
    a, b = times["curve --link sign(z1*z2)"], times["curve --model sign-product"]
    print(f"sign(z1*z2) curve: link / built-in = {a / b:.2f}")
    node_rate(r)


if __name__ == "__main__":
    main_bench()
