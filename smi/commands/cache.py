"""``smi cache info|clear``: the cache of computed results (SE fixed points, thresholds)."""

from __future__ import annotations

from asymptotics.cache import ResultCache, cache_directory, cache_disabled

NAME = "cache"
HELP = "the cache of computed fixed points and thresholds: info, clear"
DESCRIPTION = ("smi curve and smi thresholds keep what they compute in a cache (key: the "
               "settings that make a result), so an identical run returns at once. info: "
               "its folder, entries per kind and size; clear: remove every entry. The folder "
               "is the user cache folder, or SMI_CACHE_DIR; SMI_NO_CACHE=1 or --no-cache "
               "turns it off.")


def add_arguments(p) -> None:
    p.add_argument("action", choices=["info", "clear"])


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"  # unreachable


def run(args) -> int:
    cache = ResultCache(cache_directory())
    if args.action == "clear":
        removed = cache.clear()
        print(f"removed {removed} entries from {cache.directory}")
        return 0
    info = cache.info()
    print(f"directory: {info['directory']}")
    if cache_disabled():
        print("status: off (SMI_NO_CACHE)")
    kinds = ", ".join(f"{k} {n}" for k, n in sorted(info["entries"].items())) or "none"
    print(f"entries: {info['total_entries']} ({kinds})")
    print(f"size: {_size(info['bytes'])}")
    return 0
