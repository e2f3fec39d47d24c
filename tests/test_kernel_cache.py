"""numba's on-disk cache and the files a cached kernel inlines (asymptotics._kernel_cache):
numba alone keeps serving a kernel compiled from an old helper; with the digest check the
kernel is compiled again after the helper changes, and loaded from the cache otherwise."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from asymptotics._kernel_cache import drop_stale_cached_kernels, helper_digest

ROOT = Path(__file__).resolve().parents[1]

KERNEL = """
import json, os
from numba import njit
import helper

@njit(cache=True)
def kernel(x):
    return helper.scale(x)

if os.environ.get("CHECK_HELPERS") == "1":
    from asymptotics._kernel_cache import drop_stale_cached_kernels
    dropped = drop_stale_cached_kernels(kernel, [helper.__file__])
else:
    dropped = None
value = kernel(1.0)
print(json.dumps({"value": value, "dropped": dropped,
                  "hits": sum(kernel.stats.cache_hits.values())}))
"""

HELPER = """
from numba import njit

@njit
def scale(x):
    return {factor} * x
"""


def _run(folder: Path, check: bool) -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(folder), str(ROOT)]),
           "NUMBA_CACHE_DIR": str(folder / "cache"), "CHECK_HELPERS": "1" if check else "0"}
    env.pop("NUMBA_DISABLE_JIT", None)
    out = subprocess.run([sys.executable, str(folder / "kernel.py")], env=env, cwd=folder,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def _write_helper(folder: Path, factor: float) -> None:
    (folder / "helper.py").write_text(HELPER.format(factor=factor))


def test_a_changed_helper_recompiles_the_cached_kernel(tmp_path):
    (tmp_path / "kernel.py").write_text(KERNEL)
    _write_helper(tmp_path, 1.0)
    first = _run(tmp_path, check=True)
    assert first == {"value": 1.0, "dropped": False, "hits": 0}
    assert _run(tmp_path, check=True) == {"value": 1.0, "dropped": False, "hits": 1}

    _write_helper(tmp_path, 2.0)  # kernel.py itself is untouched
    # numba's own check misses the change: the kernel of the old helper comes back
    assert _run(tmp_path, check=False)["value"] == 1.0, (
        "numba now sees changes in other files: asymptotics._kernel_cache may be redundant")
    fresh = _run(tmp_path, check=True)
    assert fresh == {"value": 2.0, "dropped": True, "hits": 0}


def test_the_digest_covers_names_and_bytes_in_a_fixed_order(tmp_path):
    a, b = tmp_path / "a.py", tmp_path / "b.py"
    a.write_text("x = 1\n")
    b.write_text("y = 2\n")
    assert helper_digest([a, b]) == helper_digest([b, a])
    before = helper_digest([a, b])
    b.write_text("y = 3\n")
    assert helper_digest([a, b]) != before
    # the same bytes under another name are another helper
    c = tmp_path / "c.py"
    c.write_text("y = 3\n")
    assert helper_digest([a, c]) != helper_digest([a, b])


def test_a_dispatcher_without_a_cache_has_nothing_to_drop(tmp_path):
    from numba import njit

    @njit
    def plain(x):
        return x

    assert drop_stale_cached_kernels(plain, [__file__]) is False


def test_the_attention_kernels_record_their_helpers_digest():
    from asymptotics.channels import _attention_kernels, _lane_vectors, _vector_exp

    folder = Path(_attention_kernels.mixer_into._cache.cache_path)
    stamp = folder / "_attention_kernels.helpers.sha256"
    assert stamp.read_text() == helper_digest([_lane_vectors.__file__, _vector_exp.__file__])
