"""The console scripts' entry points: set up the process, then run the command.

The set-up happens here, not on ``import nas``, so a notebook that imports the packages gets no
change to its process. It must come before torch loads, so this module imports nothing heavy.
"""
from __future__ import annotations

import functools
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


# One callable per console script (setup.cfg's [options.entry_points] names them).
nas_search = functools.partial(_run, "nas-search")
nas_grid_scale = functools.partial(_run, "nas-grid-scale")
nas_cost = functools.partial(_run, "nas-cost")
nas_export = functools.partial(_run, "nas-export")
nas_proxy_check = functools.partial(_run, "nas-proxy-check")
nas_train = functools.partial(_run, "nas-train")
nas_derive = functools.partial(_run, "nas-derive")
