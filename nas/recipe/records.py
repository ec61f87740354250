"""The JSON records the steps write and the report reads: their keys and value types, in one place."""
from __future__ import annotations

import json
from pathlib import Path
from typing import TypedDict, TypeVar, cast

__all__ = ["ProxyRun", "MemberRow", "FinalRow", "EntryRow", "BaselineRow", "DepthRow", "Chosen", "Families", "Final",
           "RefineFile", "load_record"]

T = TypeVar("T")


class ProxyRun(TypedDict, total=False):
    """One training run on a proxy task (``nas.recipe.refine.ProxyRunner.train``)."""

    key: str
    seed: int
    state: str  # COMPLETE or DIVERGED
    accuracy: float | None
    top5: float | None
    seconds: float
    epochs: float
    images: int
    num_classes: int
    reason: str


class MemberRow(TypedDict, total=False):
    """A family member in ``3-families/families.json``."""

    name: str
    family: str  # "ours" or "efficientnet"
    phi: int
    file: str
    digest: str
    params: int
    macs: int  # at the member's own resolution, fvcore convention
    resolution: int
    proxy_resolution: int
    proxy: ProxyRun


class FinalRow(TypedDict, total=False):
    """A member after ``nas-train``, in ``4-final/final.json`` (the metrics are nas-train's)."""

    name: str
    family: str
    phi: int
    macs: int
    params: int
    test_top1: float
    test_top5: float | None
    heldout_top1: float | None
    seconds: float
    epochs: float
    images: int
    resolution: int
    recipe: dict[str, object]
    macs_224: int


class EntryRow(TypedDict, total=False):
    """An architecture of the refinement in ``2-grid/chosen.json``."""

    key: str
    roles: list[str]
    alpha: float
    beta: float
    gamma: float
    params: int
    macs: int
    macs_ratio: float
    resolution: int
    proxy_resolution: int
    grid_index: int | None
    grid_accuracy: float | None
    accuracies: list[float]
    mean: float | None
    spread: float | None
    seeds: list[int]
    diverged: int


class BaselineRow(TypedDict):
    role: str
    key: str
    macs: int
    mean: float | None
    spread: float | None
    margin: float | None
    chosen_is: str


class DepthRow(TypedDict):
    key: str
    alpha: float
    roles: list[str]
    grid_accuracy: float | None
    refined_mean: float | None
    best_mean: float | None
    chance: float
    learns: bool


class Chosen(TypedDict, total=False):
    """``2-grid/chosen.json``: the refined choice of α, β, γ and the figures behind it."""

    alpha: float
    beta: float
    gamma: float
    key: str
    mean: float
    spread: float | None
    pooled_spread: float | None
    runner_up: dict[str, float | str | None] | None
    margin: float | None
    verdict: str
    grid_choice: dict[str, object] | None
    changed_by_refinement: bool
    baselines: list[BaselineRow]
    depth: DepthRow
    chance: float
    entries: list[EntryRow]
    grid: dict[str, float | int | None]
    refine: dict[str, object]


def load_record(path: Path, kind: type[T]) -> T:
    """The JSON object in ``path`` read as ``kind`` (an empty one when the file is missing)."""
    try:
        value = json.loads(path.read_text())
    except FileNotFoundError:
        value = {}
    return cast(T, value if isinstance(value, dict) else {})


class Families(TypedDict, total=False):
    """``3-families/families.json``."""

    members: list[MemberRow]
    phis: list[int]


class Final(TypedDict, total=False):
    """``4-final/final.json``."""

    members: list[FinalRow]


class RefineFile(TypedDict, total=False):
    """``2-grid/refine.json``: every (architecture, seed) run of the refinement, by ``KEY/seedN``."""

    runs: dict[str, ProxyRun]
