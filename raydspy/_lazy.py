"""Package facades that import their names on first use (PEP 562 module ``__getattr__``).

A facade lists ``{name: module}``; ``from package import name`` then loads only that module, so
``raydspy --help`` and ``import raydspy`` do not pull in DSPy, Ray Data or TRL.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["lazy_exports"]


def lazy_exports(
    package: str, namespace: dict[str, Any], exports: Mapping[str, str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The ``__getattr__`` and ``__dir__`` of package ``package`` (whose globals are ``namespace``)
    exporting ``exports``: ``{name: module that defines it}``.

    Raises (from ``__getattr__``):
        AttributeError: a name the package does not export.
    """

    def __getattr__(name: str) -> Any:
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(exports[name]), name)
        namespace[name] = value  # once imported, a plain attribute
        return value

    def __dir__() -> list[str]:
        return sorted({*namespace, *exports})

    return __getattr__, __dir__
