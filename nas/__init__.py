"""effnas above the genome: options (``nas.config``), the proxy task (``nas.proxy``), the search
(``nas.search``), many workers on one study (``nas.cluster``) and the proxy-fidelity check
(``nas.fidelity``). The command-line programs live in ``nas.cli``.

Importing ``nas`` loads none of them (nor torch): each subpackage is imported when first used.
"""
from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["config", "proxy", "search", "cluster", "fidelity"]


def __getattr__(name: str) -> ModuleType:
    if name in __all__:
        return importlib.import_module(f"nas.{name}")
    raise AttributeError(f"module 'nas' has no attribute {name!r}")
