"""Writing files safely: a file appears complete or not at all (the lowest layer, so every package may use it)."""
from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterable, Iterator

__all__ = ["atomic_write", "check_out_dir", "is_ours"]


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


def is_ours(folder: Path) -> bool:
    """Whether ``folder`` holds a run of this toolkit: our ``manifest.json`` (command, versions), a study
    journal, or the markers of a ``nas-derive`` step (whose tools write into the step's folder)."""
    if (folder / "study.journal").is_file() or (folder / "step.json").is_file():
        return True
    try:
        import json

        manifest = json.loads((folder / "manifest.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(manifest, dict) and {"command", "versions"} <= manifest.keys()


def check_out_dir(out: str | Path, writes: Iterable[str], error: type[Exception] = ValueError,
                  flag: str = "--out") -> Path:
    """``out`` as an output folder of a command that writes the names ``writes``, checked before anything is written.

    Accepted: a folder that does not exist yet (its parent may not either), an empty one, one that
    holds an earlier run of the toolkit (``is_ours``), or one that holds only names the command
    writes. Refused with one line (``error``): an empty path, a file, a folder that cannot be
    written, a folder of someone else's files (they would be overwritten or mixed in).
    """
    text = str(out)
    if not text.strip():
        raise error(f"{flag} must be a folder path, but got {text!r}")
    path = Path(text).expanduser()
    if path.exists() and not path.is_dir():
        raise error(f"{flag} {text!r} is a file, expected a folder")
    if not path.exists():
        return path
    if not os.access(path, os.W_OK | os.X_OK):
        raise error(f"{flag} {text!r} is a folder that cannot be written; choose another --out")
    known = set(writes)
    def written(name: str) -> bool:  # ours, or a companion of ours (study.journal.lock, a .partial of a write)
        return name.startswith(".") or any(name == k or name.startswith(k + ".") for k in known)

    foreign = sorted(p.name for p in path.iterdir() if not written(p.name))
    if foreign and not is_ours(path):
        shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
        raise error(f"{flag} {text!r} holds files this command did not write ({shown}); choose an empty or new folder")
    return path
