"""What an output folder holds and whether a run may continue in it; checkpoints written atomically.

A run's *settings* are everything that changes what it computes: the architecture, the dataset and
its folder, the recipe and budget, the resolution, the split and the seed (not the device or thread
count). A folder is ``new`` (missing or empty), ``partial`` (a ``checkpoint.pt`` with the same
settings: the run resumes after its last finished epoch) or ``finished`` (``metrics.json`` with
``finished: true`` and the same settings in ``manifest.json``: the result is read, nothing trains).
Anything else is refused with one line: a file, other settings, a folder that holds no nas-train run.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from nas.final.config import FinalConfig, FinalError
from search_spaces import ArchSpec
from search_spaces.files import atomic_write

__all__ = ["CHECKPOINT", "CHECKPOINT_FORMAT", "run_settings", "run_state", "save_checkpoint", "load_checkpoint",
           "first_difference", "read_json"]

CHECKPOINT = "checkpoint.pt"
CHECKPOINT_FORMAT = 1
_OWN_FILES = ("checkpoint.pt", "metrics.json", "manifest.json", "model.safetensors", "arch.yaml", "curves.png",
              "model-card.md")


def run_settings(arch: ArchSpec, cfg: FinalConfig, resolution: int) -> dict[str, object]:
    """The settings that must match for a run to resume or to count as done (JSON-able)."""
    return {"arch": arch.to_dict(), "dataset": cfg.dataset, "data_dir": cfg.resolved_data_dir(),
            "epochs": float(cfg.epochs), "batch_size": cfg.batch_size, "recipe": cfg.recipe, "lr": cfg.resolved_lr(),
            "warmup_epochs": cfg.resolved_warmup(), "resolution": resolution, "val_size": float(cfg.val_size),
            "seed": cfg.seed, "train_size": cfg.train_size}


def first_difference(stored: dict[str, object], wanted: dict[str, object]) -> str | None:
    """``"epochs 5.0, now 10.0"`` for the first setting that differs; None when they are the same."""
    for key in sorted(set(stored) | set(wanted)):
        if stored.get(key) != wanted.get(key):
            if key == "arch":
                return "another architecture"
            return f"{key.replace('_', '-')} {stored.get(key)!r}, now {wanted.get(key)!r}"
    return None


def read_json(path: Path) -> dict[str, object] | None:
    """The JSON object in ``path``; None when it is missing or not one."""
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def _stray_partials(out: Path) -> list[Path]:
    """Temporary files a killed write left (``atomic_write``'s ``.NAME.PID.partial.SUFFIX``)."""
    return [p for p in out.iterdir() if p.name.startswith(".") and ".partial" in p.name]


def _refuse(out: Path, why: str) -> FinalError:
    return FinalError(f"--out {str(out)!r} {why}; remove it or choose another --out")


def run_state(out: Path, settings: dict[str, object]) -> str:
    """``"new"``, ``"partial"`` or ``"finished"`` (see the module docstring).

    Raises:
        FinalError: ``out`` is a file, holds a run with other settings, or holds files of no nas-train run.
    """
    if out.exists() and not out.is_dir():
        raise FinalError(f"--out {str(out)!r} is a file, expected a folder (new, or one nas-train wrote)")
    if not out.exists():
        return "new"
    metrics = read_json(out / "metrics.json")
    if metrics is not None and metrics.get("finished") is True:
        manifest = read_json(out / "manifest.json") or {}
        stored = manifest.get("settings")
        if not isinstance(stored, dict):
            raise _refuse(out, "holds a finished run whose manifest.json has no settings")
        why = first_difference(stored, settings)
        if why:
            raise _refuse(out, f"holds a finished run with other settings ({why})")
        return "finished"
    if (out / CHECKPOINT).is_file():
        why = first_difference(load_checkpoint(out / CHECKPOINT)["settings"], settings)  # type: ignore[arg-type]
        if why:
            raise _refuse(out, f"holds an unfinished run with other settings ({why})")
        return "partial"
    stray = _stray_partials(out)
    others = [p.name for p in out.iterdir() if p not in stray]
    if others:
        own = [n for n in others if n in _OWN_FILES]
        what = (f"holds {own[0]} but no {CHECKPOINT}" if own
                else f"is not empty ({others[0]}) and holds no nas-train run")
        raise _refuse(out, what)
    return "new"


def save_checkpoint(path: Path, state: dict[str, object]) -> None:
    """Write ``state`` to ``path`` atomically: a reader sees the previous checkpoint or this one, whole."""
    with atomic_write(path) as tmp:
        torch.save({"format": CHECKPOINT_FORMAT, **state}, tmp)
    for stray in _stray_partials(path.parent):  # left by an earlier process that was killed mid-write
        stray.unlink(missing_ok=True)


def load_checkpoint(path: Path) -> dict[str, object]:
    """The checkpoint in ``path`` (tensors on the CPU; nothing but tensors and plain data is unpickled).

    Raises:
        FinalError: the file is unreadable, not a checkpoint, or of another format.
    """
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 -- torch raises many kinds for a bad file; all mean the same here
        raise FinalError(f"{path}: not a readable nas-train checkpoint ({type(exc).__name__}); remove it to "
                         f"start over") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT or "settings" not in state:
        raise FinalError(f"{path}: not a nas-train checkpoint of format {CHECKPOINT_FORMAT}; remove it to start over")
    return state
