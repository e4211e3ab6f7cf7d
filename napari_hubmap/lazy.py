"""Lazy package exports: a package names what it offers, and each name loads its module on first use.

``__all__, __getattr__ = lazy_exports(__name__, {"engine": ("predict_slide",), ...})`` in a package's
``__init__`` makes ``package.predict_slide`` import ``package.engine`` only when asked for, so a light
module of the package (a config the command line reads) is imported without the heavy ones (torch, scipy).
"""

from __future__ import annotations

import importlib
from typing import Callable


def lazy_exports(package: str, names: dict[str, tuple[str, ...]]) -> tuple[list[str], Callable[[str], object]]:
    """``(__all__, __getattr__)`` for ``package``, whose ``names`` map each submodule to the names it offers:
    ``__all__`` is the names sorted, ``__getattr__`` (PEP 562) imports a name's submodule when it is asked for."""
    where = {name: module for module, offered in names.items() for name in offered}

    def __getattr__(name: str):
        if name in where:
            return getattr(importlib.import_module(f".{where[name]}", package), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return sorted(where), __getattr__
