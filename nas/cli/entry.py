"""The console scripts' entry points: set up the process, then run the command.

The set-up happens here, not on ``import nas``, so a notebook that imports the packages gets no
change to its process. It must come before torch loads, so this module imports nothing heavy.
"""
from __future__ import annotations

import importlib
import os
from typing import Callable

# Busy-waiting OpenMP threads cost up to 10x when the CPU is shared (docs/proxy-task.md); libgomp
# reads this once, when torch loads it.
_ENVIRONMENT = {"OMP_WAIT_POLICY": "PASSIVE"}

COMMANDS = {
    "nas-search": "nas.cli.search",
    "nas-grid-scale": "scaling.cli",
    "nas-cost": "search_spaces.cli",
    "nas-export": "search_spaces.interop.cli",
    "nas-proxy-check": "nas.cli.proxy_check",
    "nas-train": "nas.cli.train",
    "nas-derive": "nas.cli.derive",
}


def prepare_process() -> None:
    """What every command sets before torch loads (a value the user set wins)."""
    for name, value in _ENVIRONMENT.items():
        os.environ.setdefault(name, value)


def _run(command: str) -> int:
    prepare_process()
    main: Callable[[], int] = importlib.import_module(COMMANDS[command]).main
    return main()


def nas_search() -> int:
    return _run("nas-search")


def nas_grid_scale() -> int:
    return _run("nas-grid-scale")


def nas_cost() -> int:
    return _run("nas-cost")


def nas_export() -> int:
    return _run("nas-export")


def nas_proxy_check() -> int:
    return _run("nas-proxy-check")


def nas_train() -> int:
    return _run("nas-train")


def nas_derive() -> int:
    return _run("nas-derive")
