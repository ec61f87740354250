"""Writing files safely: a file appears complete or not at all (the lowest layer, so every package may use it)."""
from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterator

__all__ = ["atomic_write"]


@contextlib.contextmanager
def atomic_write(path: str | Path, missing_ok: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; move it over ``path`` only if the block succeeds.

    The temporary file keeps the suffix of ``path`` (writers such as matplotlib choose the format by
    it) and names this process, so processes writing the same file never see a half-written one:
    the last rename wins. With ``missing_ok`` a block that wrote nothing leaves ``path`` as it was;
    without it that is a ``FileNotFoundError``.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.partial{path.suffix}")
    try:
        yield tmp
        if tmp.exists() or not missing_ok:
            os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
