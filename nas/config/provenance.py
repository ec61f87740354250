"""Where a run's outputs came from: the command (passwords masked), versions, git commit, host, time.

Every command's ``manifest.json`` starts from ``provenance()``.
"""
from __future__ import annotations

import importlib
import platform
import socket
import subprocess
import sys
import time
from pathlib import Path

from nas.config.secrets import mask_url

__all__ = ["git_commit", "provenance"]


def git_commit() -> str | None:
    """The commit of the checkout this code runs from; None outside a git checkout."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                             text=True, timeout=5)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def provenance(*packages: str) -> dict[str, object]:
    """The manifest fields every run shares; ``packages``: whose ``__version__`` to record beside Python's."""
    versions = {"python": platform.python_version()}
    versions.update({name: str(importlib.import_module(name).__version__) for name in packages})
    return {"command": [mask_url(a) for a in sys.argv], "versions": versions, "git_commit": git_commit(),
            "host": socket.gethostname(), "written": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
