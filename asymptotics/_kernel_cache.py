"""Keep numba's on-disk kernel cache honest about the files a kernel inlines.

numba keys a cached kernel on the source file that defines it; a change in a function or a
type defined in another file is not seen ("Cache invalidation fails to recognize changes in
symbols defined in another file", numba's notes on caching). A checkout updated by ``git
pull`` that changes only such a helper would go on loading kernels compiled from the old
helper, silently. :func:`drop_stale_cached_kernels` records a digest of the helpers beside a
module's cached kernels and removes those kernels when the digest changes, so that they are
compiled again on their next call (numba tolerates missing cache files).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from pathlib import Path


def helper_digest(helpers: Iterable[str | os.PathLike]) -> str:
    """SHA-256 over each helper's file name and bytes, in sorted order of the names."""
    hasher = hashlib.sha256()
    for path in sorted(Path(p) for p in helpers):
        hasher.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return hasher.hexdigest()


def drop_stale_cached_kernels(kernel, helpers: Iterable[str | os.PathLike]) -> bool:
    """Remove the cached kernels of ``kernel``'s module if ``helpers`` changed since they
    were cached; return whether anything was removed.

    ``kernel`` is any ``cache=True`` dispatcher of the module (they share one cache folder;
    its cache files are named ``<module>.<function>-<line>...nbi|nbc``). The digest of the
    helpers is kept in ``<module>.helpers.sha256`` in that folder. Call it where the
    module is imported, before any of its kernels runs.
    """
    cache = getattr(kernel, "_cache", None)
    folder = getattr(cache, "cache_path", None)
    if folder is None:  # not a caching dispatcher: nothing on disk to be stale
        return False
    folder = Path(folder)
    module = Path(kernel.py_func.__code__.co_filename).stem
    stamp = folder / f"{module}.helpers.sha256"
    digest = helper_digest(helpers)
    try:
        if stamp.read_text() == digest:
            return False
    except OSError:
        pass
    removed = False
    for cached in folder.glob(f"{module}.*.nb[ic]"):
        cached.unlink(missing_ok=True)
        removed = True
    try:
        folder.mkdir(parents=True, exist_ok=True)
        partial = stamp.with_name(f"{stamp.name}.{os.getpid()}")
        partial.write_text(digest)
        os.replace(partial, stamp)
    except OSError:  # a read-only cache: checked (and dropped) again next time
        pass
    return removed
