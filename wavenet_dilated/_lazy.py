"""Lazy public names for a package's ``__init__`` (PEP 562): a name is imported from its module on first use.

This keeps ``import wavenet_dilated`` (and its subpackages) free of torch and of work, while
``from wavenet_dilated import WaveNet`` still works. Standard library only.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_attributes(package: str, namespace: dict[str, Any], exports: Mapping[str, str],
                    modules: Mapping[str, str] | None = None) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for the package ``package`` whose globals are ``namespace``.

    ``exports`` maps a public name to the module (relative to the package) that defines it; ``modules`` maps a public
    name to a submodule exposed under it (``{"dilation": "nn.dilation"}``). A loaded value is stored in
    ``namespace``, so later lookups skip ``__getattr__``.
    """
    modules = dict(modules or {})

    def __getattr__(name: str) -> Any:
        if name in exports:
            value = getattr(importlib.import_module(f".{exports[name]}", package), name)
        elif name in modules:
            value = importlib.import_module(f".{modules[name]}", package)
        else:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(exports) | set(modules))

    return __getattr__, __dir__
