"""Public names of a package, imported from their modules on first use (PEP 562), so that
importing a package stays cheap while ``from package import name`` works for every name."""

from __future__ import annotations

import importlib


def lazy_exports(package: str, exports: dict[str, str]):
    """``(__getattr__, __dir__)`` for ``package`` exporting ``name -> .module``."""

    def __getattr__(name: str):
        if name in exports:
            module = importlib.import_module(f".{exports[name]}", package)
            value = getattr(module, name)
            setattr(importlib.import_module(package), name, value)
            return value
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__():
        return sorted(set(vars(importlib.import_module(package))) | set(exports))

    return __getattr__, __dir__
