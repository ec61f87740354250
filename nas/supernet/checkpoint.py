"""Supernet checkpoints: written atomically, read back with their space, checked before a resume.

A checkpoint holds the space file's text (so ``load_supernet`` rebuilds the supernet from the file
alone), the classifier and input sizes, the step counter, the training recipe, the supernet's
weights and BN statistics and the optimizer's state. It appears complete or not at all
(``search_spaces.files.atomic_write``), so a run killed while writing resumes from the last one.
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch

from nas.supernet.net import Supernet, SupernetError, TrainedOn
from search_spaces.files import atomic_write
from search_spaces.space import SearchSpace, SpaceError

__all__ = ["FORMAT", "Recipe", "save_checkpoint", "read_checkpoint", "restore_checkpoint", "load_supernet"]

FORMAT = "effnas-supernet/1"
Recipe = Mapping[str, int | float | bool | str | None]  # the settings a resumed run must share
Checkpoint = dict[str, object]


def save_checkpoint(path: str | Path, supernet: Supernet, optimizer: torch.optim.Optimizer | None, step: int,
                    recipe: Recipe) -> None:
    """Write ``supernet`` (and ``optimizer``'s state, when given) at ``step`` to ``path``, atomically."""
    state: Checkpoint = {
        "format": FORMAT, "space": supernet.space.source, "space_digest": supernet.space.digest(),
        "num_classes": supernet.num_classes, "in_chans": supernet.in_chans, "step": step, "recipe": dict(recipe),
        "trained_on": supernet.trained_on,
        "model": supernet.state_dict(), "optimizer": optimizer.state_dict() if optimizer is not None else None,
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as tmp:
        torch.save(state, tmp)


def read_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> Checkpoint:
    """The contents of a supernet checkpoint.

    Raises:
        SupernetError: the file is missing, unreadable, or not a supernet checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise SupernetError(f"supernet checkpoint {str(path)!r} does not exist")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises many kinds for a corrupt or foreign file
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SupernetError(f"supernet checkpoint {str(path)!r} is not readable: {first}") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise SupernetError(f"{str(path)!r} is not a supernet checkpoint (expected format {FORMAT!r})")
    return state


def _int(state: Checkpoint, key: str) -> int:
    value = state.get(key)
    if not isinstance(value, int):
        raise SupernetError(f"supernet checkpoint: {key} must be an integer, but got {value!r}")
    return value


def load_supernet(path: str | Path, device: str | torch.device = "cpu") -> Supernet:
    """The supernet of a checkpoint, rebuilt from the space file stored in it, on ``device``.

    Raises:
        SupernetError: as ``read_checkpoint``, or a stored space or weights that do not fit.
    """
    state = read_checkpoint(path, device)
    source = state.get("space")
    if not isinstance(source, str):
        raise SupernetError(f"supernet checkpoint {str(path)!r} holds no space file")
    try:
        space = SearchSpace.from_yaml(source)
    except SpaceError as exc:
        raise SupernetError(f"supernet checkpoint {str(path)!r}: {exc}") from None
    supernet = Supernet(space, _int(state, "num_classes"), _int(state, "in_chans")).to(device)
    _load_weights(supernet, state, path)
    supernet.trained_on = _trained_on(state)
    return supernet


def _trained_on(state: Checkpoint) -> TrainedOn | None:
    record = state.get("trained_on")
    return record if isinstance(record, dict) else None


def _load_weights(supernet: Supernet, state: Checkpoint, path: str | Path) -> None:
    weights = state.get("model")
    if not isinstance(weights, dict):
        raise SupernetError(f"supernet checkpoint {str(path)!r} holds no weights")
    try:
        supernet.load_state_dict(weights, strict=True)
    except RuntimeError as exc:
        raise SupernetError(f"supernet checkpoint {str(path)!r} does not fit this supernet: "
                            f"{str(exc).splitlines()[0]}") from None


def restore_checkpoint(path: str | Path, supernet: Supernet, optimizer: torch.optim.Optimizer,
                       recipe: Recipe) -> int:
    """Load a checkpoint into ``supernet`` and ``optimizer`` to resume training; returns its step.

    Raises:
        SupernetError: as ``read_checkpoint``, or a checkpoint of another space, classifier,
            input size or recipe (the message names the first difference).
    """
    device = next(supernet.parameters()).device
    state = read_checkpoint(path, device)
    where = f"supernet checkpoint {str(path)!r}"
    if state.get("space_digest") != supernet.space.digest():
        raise SupernetError(f"{where} was trained on another search space (digest {state.get('space_digest')!r}, "
                            f"this one {supernet.space.digest()!r})")
    for key, ours in (("num_classes", supernet.num_classes), ("in_chans", supernet.in_chans)):
        if _int(state, key) != ours:
            raise SupernetError(f"{where} has {key}={state[key]!r}, but this supernet has {key}={ours!r}")
    stored = state.get("recipe")
    stored = stored if isinstance(stored, dict) else {}
    for key in sorted(set(stored) | set(recipe)):
        if stored.get(key) != recipe.get(key):
            raise SupernetError(f"{where} was trained with {key}={stored.get(key)!r}, but this run has "
                                f"{key}={recipe.get(key)!r} (use another checkpoint path to start afresh)")
    _load_weights(supernet, state, path)
    supernet.trained_on = _trained_on(state)
    saved = state.get("optimizer")
    if not isinstance(saved, dict):
        raise SupernetError(f"{where} holds no optimizer state to resume from")
    optimizer.load_state_dict(saved)
    return _int(state, "step")
