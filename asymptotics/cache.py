"""A content-addressed cache of computed results: SE fixed points (curve rows) and
threshold rows, so that a second identical run, or a plot or report after a sweep, reuses
what was computed.

An entry is found by the sha256 of the canonical JSON of its key (the settings that make
the result, with :data:`~asymptotics.results.NUMERICS_VERSION`), one file per entry,
``DIRECTORY/kind/ab/cdef....json``, holding ``{"key": ..., "value": ..., "sha256": ...}``
(the checksum of the value's canonical JSON).  Writes are atomic (a temporary file in the
same folder, then :func:`os.replace`), so concurrent writers of the same entry (a process
pool, a Dask cluster, two runs) leave one complete entry; a read that cannot be parsed, or
whose key or checksum does not match, is a miss and the entry is removed: never an error.
Values go through :func:`~asymptotics.results.encode` / ``decode``, so numbers, ``inf``
and ``nan`` come back exactly as they were stored.

The library computes without a cache unless one is passed (``cache=``); the commands use
:func:`default_cache`: the user cache folder of ``platformdirs``, or ``SMI_CACHE_DIR``;
``SMI_NO_CACHE=1`` turns it off.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

from .results import NUMERICS_VERSION, decode, encode

APP_NAME = "smi-asymptotics"
_SUFFIX = ".json"
_TEMP_SUFFIX = ".tmp"


def _canonical(value) -> str:
    return json.dumps(encode(value), sort_keys=True, allow_nan=False)


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _check_kind(kind: str) -> None:
    if not kind or not kind.replace("_", "").replace("-", "").isalnum():
        raise ValueError(f"cache kind must be a plain name, got {kind!r}")


class ResultCache:
    """Entries of several kinds under ``directory`` (created when first written)."""

    def __init__(self, directory: str | os.PathLike):
        self.directory = Path(directory)

    def __repr__(self) -> str:
        return f"ResultCache({str(self.directory)!r})"

    # ------------------------------------------------------------------------- entries
    def full_key(self, key: dict) -> dict:
        """The key as stored: ``key`` with the numerics version."""
        return {**key, "numerics_version": NUMERICS_VERSION}

    def path(self, kind: str, key: dict) -> Path:
        """The file of the entry of ``kind`` with ``key``."""
        _check_kind(kind)
        h = _digest(_canonical(self.full_key(key)))
        return self.directory / kind / h[:2] / (h[2:] + _SUFFIX)

    def get(self, kind: str, key: dict) -> dict | None:
        """The value stored under (``kind``, ``key``), or None: missing, unreadable,
        corrupted (then removed) or of another key."""
        path = self.path(kind, key)
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            return None
        try:
            entry = json.loads(text)
            ok = (isinstance(entry, dict)
                  and _canonical(entry["key"]) == _canonical(self.full_key(key))
                  and isinstance(entry["value"], dict)
                  and entry["sha256"] == _digest(_canonical(entry["value"])))
        except (ValueError, KeyError, TypeError):
            ok = False
        if not ok:
            _remove(path)
            return None
        return decode(entry["value"])

    def put(self, kind: str, key: dict, value: dict) -> bool:
        """Store ``value`` under (``kind``, ``key``), atomically; False if it could not be
        written (a cache is an aid: a read-only or full disk does not stop the work)."""
        path = self.path(kind, key)
        value = encode(value)
        entry = {"key": encode(self.full_key(key)), "value": value,
                 "sha256": _digest(_canonical(value))}
        text = json.dumps(entry, allow_nan=False)
        tmp = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix="." + path.stem[:16] + ".", suffix=_TEMP_SUFFIX,
                                       dir=path.parent)
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
            os.replace(tmp, path)
        except OSError:
            if tmp is not None:
                _remove(Path(tmp))
            return False
        return True

    # ---------------------------------------------------------------------- the whole
    def _files(self):
        """Every file of the cache's layout: ``kind/ab/*.json`` and leftover temporaries."""
        if not self.directory.is_dir():
            return
        for kind_dir in sorted(self.directory.iterdir()):
            if not kind_dir.is_dir():
                continue
            for sub in sorted(kind_dir.iterdir()):
                if not (sub.is_dir() and len(sub.name) == 2):
                    continue
                for f in sorted(sub.iterdir()):
                    if f.is_file() and f.name.endswith((_SUFFIX, _TEMP_SUFFIX)):
                        yield kind_dir.name, f

    def info(self) -> dict:
        """``directory``, ``entries`` (per kind), ``total_entries`` and ``bytes``."""
        entries: dict[str, int] = {}
        size = 0
        for kind, f in self._files():
            try:
                size += f.stat().st_size
            except OSError:
                continue
            if f.name.endswith(_SUFFIX) and not f.name.startswith("."):
                entries[kind] = entries.get(kind, 0) + 1
        return {"directory": str(self.directory), "entries": entries,
                "total_entries": sum(entries.values()), "bytes": size}

    def clear(self) -> int:
        """Remove every entry (and only the files of the cache's layout); returns how many
        entries were removed."""
        removed = 0
        dirs = set()
        for _, f in list(self._files()):
            if _remove(f) and f.name.endswith(_SUFFIX) and not f.name.startswith("."):
                removed += 1
            dirs.add(f.parent)
        for d in sorted(dirs, key=lambda p: len(p.parts), reverse=True):
            for folder in (d, d.parent):
                try:
                    folder.rmdir()  # only when empty
                except OSError:
                    pass
        return removed


def _remove(path: Path) -> bool:
    try:
        path.unlink()
    except OSError:
        return False
    return True


def cache_directory() -> Path:
    """The cache folder: ``SMI_CACHE_DIR`` if set, else the user cache folder."""
    env = os.environ.get("SMI_CACHE_DIR")
    if env:
        return Path(env)
    import platformdirs

    return Path(platformdirs.user_cache_dir(APP_NAME))


def cache_disabled() -> bool:
    """Whether ``SMI_NO_CACHE`` turns the cache off (any value but "", "0", "false", "no")."""
    return os.environ.get("SMI_NO_CACHE", "").strip().lower() not in ("", "0", "false", "no")


def default_cache() -> ResultCache | None:
    """The cache of the commands, or None when ``SMI_NO_CACHE`` turns it off."""
    if cache_disabled():
        return None
    return ResultCache(cache_directory())


def as_cache(cache: ResultCache | str | os.PathLike | None) -> ResultCache | None:
    """A cache from a cache, a folder (as tasks carry it) or None."""
    if cache is None or isinstance(cache, ResultCache):
        return cache
    return ResultCache(cache)


def cache_location(cache: ResultCache | str | os.PathLike | None) -> str | None:
    """What a task's parameters carry: the folder as a string (picklable), or None."""
    cache = as_cache(cache)
    return None if cache is None else str(cache.directory)


__all__ = ["ResultCache", "as_cache", "cache_directory", "cache_disabled", "cache_location",
           "default_cache"]
