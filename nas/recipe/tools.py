"""Running the toolkit's own commands as child processes: ``nas-search``, ``nas-grid-scale``, ``nas-train``.

Each runs as ``python -m MODULE ...`` with its output appended to the step's ``log.txt``; each resumes by
itself when run again. A failure becomes ``ToolFailed`` with the child's exit code and its last line; an
interrupt (Ctrl-C, SIGTERM) waits for the child to keep its state, then goes on up.
"""
from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Sequence

from nas.config import mask_url

__all__ = ["ToolFailed", "run_tool", "note", "last_line"]


class ToolFailed(RuntimeError):
    """A child command exited non-zero: ``code`` is its exit code (2 bad input, 3 storage, 130 interrupted)."""

    def __init__(self, what: str, code: int, line: str) -> None:
        super().__init__(f"{what} exited with code {code}" + (f": {line}" if line else ""))
        self.code = code


def note(log: Path, text: str) -> None:
    """Append a time-stamped line to a step's log (library code never prints)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("a") as f:
        f.write(f"[{time.strftime('%H:%M:%S')}] {text}\n")


def last_line(log: Path, after: int = 0) -> str:
    """The last non-empty line written to ``log`` after byte ``after`` (the child's error, if any)."""
    try:
        with log.open("rb") as f:
            f.seek(after)
            lines = [s.strip() for s in f.read().decode(errors="replace").splitlines() if s.strip()]
    except FileNotFoundError:
        return ""
    return lines[-1] if lines else ""


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """After an interrupt: let the child finish its own Ctrl-C handling, ask it to stop, kill it at last."""
    for sig, wait in ((None, 2.0), (signal.SIGTERM, 120.0), (signal.SIGKILL, 10.0)):
        if sig is not None and proc.poll() is None:
            proc.send_signal(sig)
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def run_tool(module: str, args: Sequence[str], log: Path, what: str) -> None:
    """Run ``python -m module args`` with stdout and stderr appended to ``log``.

    Raises:
        ToolFailed: the command exited non-zero.
        KeyboardInterrupt: interrupted (the child was given time to keep its state).
    """
    cmd = [sys.executable, "-m", module, *args]
    note(log, "$ " + " ".join(shlex.quote(mask_url(a)) for a in cmd))
    start = log.stat().st_size
    with log.open("ab") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=dict(os.environ))
        try:
            code = proc.wait()
        except KeyboardInterrupt:
            _stop(proc)
            raise
    if code != 0:
        raise ToolFailed(what, 130 if code in (-signal.SIGINT, -signal.SIGTERM) else code, last_line(log, start))
