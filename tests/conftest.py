import os

# Two test workers share the machine's cores (addopts: -n 2): each runs BLAS on one thread.
# OpenBLAS's threads busy-wait between calls, and two workers' pools fighting over two
# cores made BLAS-heavy tests up to 5x slower (test_signgd_transformer_quick 4 s alone,
# 20 s in the suite). Set before numpy is imported here, and inherited by the workers,
# which are started after this file is read. An explicit setting is kept.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import pytest  # noqa: E402

from asymptotics.backend import gpu_available  # noqa: E402


def pytest_collection_modifyitems(config, items):
    if gpu_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs cupy and a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


@pytest.fixture(autouse=True, scope="session")
def _private_result_cache(tmp_path_factory):
    """The suite never touches the user's cache: ``SMI_CACHE_DIR`` is a temporary folder,
    and the cache is off (``SMI_NO_CACHE``) so that every command computes (the fault
    battery times its interruptions on computed rows); tests/test_cache.py turns it on."""
    saved = {k: os.environ.get(k) for k in ("SMI_CACHE_DIR", "SMI_NO_CACHE")}
    os.environ["SMI_CACHE_DIR"] = str(tmp_path_factory.mktemp("smi-cache"))
    os.environ["SMI_NO_CACHE"] = "1"
    yield
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
