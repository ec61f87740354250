"""``nas-derive``'s configuration: one YAML file with a section per step, checked whole before anything runs.

The ``search`` section holds ``nas-search`` options and the ``grid`` section ``nas-grid-scale``
options (the keys of their own ``--config`` files), checked by their own config classes
(``nas.search.SearchConfig``, ``scaling.config.GridConfig``); the options the pipeline sets itself
(``out``, ``storage``, the grid's ``base`` and family) are refused there. ``refine``, ``families``
and ``final`` are this package's. Unknown keys are errors everywhere.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, TypeVar, cast

from nas.config import ConfigError, config_fields, is_number, is_whole, make_config, read_config_file
from nas.final import RECIPES
from nas.proxy.data import DATASETS
from nas.search.config import SearchConfig
from scaling.config import GridConfig

__all__ = ["STEPS", "Step", "RefineConfig", "FamiliesConfig", "FinalConfig", "DeriveConfig", "load_config",
           "EXECUTION_KEYS", "FINAL_FLAGS"]

C = TypeVar("C")
SECTIONS = ("search", "grid", "refine", "families", "final")
TOP_KEYS = {"out", "storage", *SECTIONS}
# Options the pipeline sets itself: a section that names one is refused, with the reason.
OWNED = {
    "search": {"out": "the top-level out", "storage": "--storage or the top-level storage",
               "dry_run": "nas-derive --dry-run", "quiet": "nas-derive --quiet"},
    "grid": {"out": "the top-level out", "storage": "--storage or the top-level storage",
             "base": "the search step (its best.yaml)", "resolution": "the search step (its resolution)",
             "phi": "families.k", "mode": "the families step (both modes)", "alpha": "the grid search",
             "beta": "the grid search", "gamma": "the grid search", "dry_run": "nas-derive --dry-run",
             "quiet": "nas-derive --quiet"},
}
# Where and how a step runs, not what it computes: left out of the fingerprints, so a run may resume elsewhere.
EXECUTION_KEYS = frozenset({"out", "storage", "quiet", "dry_run", "device", "threads"})
# nas-train's flags (the interface of nas.cli.train) that the final section may set.
FINAL_FLAGS = ("dataset", "data_dir", "epochs", "batch_size", "recipe", "lr", "warmup_epochs", "resolution",
               "val_size", "device", "threads", "seed", "train_size")


@dataclass(frozen=True)
class Step:
    """One step of the pipeline and its folder under ``--out`` (``1-search`` ... ``5-report``)."""

    number: int
    name: str

    @property
    def folder(self) -> str:
        return f"{self.number}-{self.name}"


STEPS = tuple(Step(i, n) for i, n in enumerate(("search", "grid", "families", "final", "report"), start=1))


def _check(section: str, checks: tuple[tuple[str, bool, str], ...], values: object) -> None:
    for name, ok, expected in checks:
        if not ok:
            raise ConfigError(f"{section}.{name} must be {expected}, but got {getattr(values, name)!r}")


def _option(expected: str, ok: Callable[[Any], bool]) -> Any:
    """A nas-train option of the final section: None leaves nas-train's default; a value must pass ``ok``."""
    return field(default=None, metadata={"ok": ok, "expected": expected})


def _positive(whole: bool = False) -> Any:
    """A nas-train option > 0 (``whole``: a whole number >= 1), or None."""
    if whole:
        return _option("a whole number >= 1", lambda v: is_whole(v) and v >= 1)
    return _option("> 0", lambda v: is_number(v) and v > 0)


@dataclass(frozen=True)
class RefineConfig:
    """The second round of the grid's successive halving: the best of the brief grid run, longer and seeded.

    ``keep`` None: the best third of the trained candidates, at least 2. ``train_size`` and ``lr``
    None: the grid's. ``warmup_epochs``: the linear warm-up that lets deep candidates start learning.
    ``baselines``: also train depth-only (α=2), width-only (β=√2) and resolution-only (γ=√2).
    ``train``: any other ``nas.proxy.TrainConfig`` field, on top of the grid's.
    """

    keep: int | None = None
    seeds: int = 2
    epochs: float = 3.0
    warmup_epochs: float = 1.0
    train_size: int | None = None
    lr: float | None = None
    baselines: bool = True
    train: dict[str, object] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check("refine", (
            ("keep", self.keep is None or (is_whole(self.keep) and self.keep >= 2), "a whole number >= 2 or null"),
            ("seeds", is_whole(self.seeds) and self.seeds >= 2, "a whole number >= 2 (a spread needs two seeds)"),
            ("epochs", is_number(self.epochs) and self.epochs > 0, "> 0"),
            ("warmup_epochs", is_number(self.warmup_epochs) and 0 <= self.warmup_epochs < self.epochs,
             "in [0, refine.epochs)"),
            ("train_size", self.train_size is None or (is_whole(self.train_size) and self.train_size >= 1),
             "a whole number >= 1 or null (the grid's)"),
            ("lr", self.lr is None or (is_number(self.lr) and self.lr > 0), "> 0 or null (the grid's)"),
            ("baselines", isinstance(self.baselines, bool), "true or false"),
            ("train", isinstance(self.train, dict), "a mapping of trainer settings"),
        ), self)


@dataclass(frozen=True)
class FamiliesConfig:
    """Ours B0..BK (compound, the chosen α, β, γ) and EfficientNet B0..BK (official table).

    ``proxy_scores``: score every member on the grid's brief proxy, for the proxy-vs-test ranking.
    """

    k: int = 2
    proxy_scores: bool = True

    def __post_init__(self) -> None:
        _check("families", (
            ("k", is_whole(self.k) and 1 <= self.k <= 7, "a whole number in 1..7 (the official table's B1..B7)"),
            ("proxy_scores", isinstance(self.proxy_scores, bool), "true or false"),
        ), self)

    @property
    def phis(self) -> tuple[int, ...]:
        return tuple(range(1, self.k + 1))


@dataclass(frozen=True)
class FinalConfig:
    """One ``nas-train`` recipe for every family member; None leaves nas-train's default."""

    dataset: str = "digits"
    data_dir: str | None = _option("a folder", lambda v: isinstance(v, str))
    epochs: float | None = _positive()
    batch_size: int | None = _positive(whole=True)
    recipe: str | None = _option(f"one of {', '.join(RECIPES)}", lambda v: v in RECIPES)
    lr: float | None = _positive()
    warmup_epochs: float | None = _option(">= 0", lambda v: is_number(v) and v >= 0)
    resolution: int | None = _positive(whole=True)
    val_size: float | None = _option(">= 0 (a fraction < 1 or a count)", lambda v: is_number(v) and v >= 0)
    device: str | None = _option("auto, cpu, cuda or cuda:N", lambda v: isinstance(v, str))
    threads: int | None = _positive(whole=True)
    seed: int | None = _option("a whole number >= 0", lambda v: is_whole(v) and v >= 0)
    train_size: int | None = _positive(whole=True)

    def __post_init__(self) -> None:
        options = [(f, getattr(self, f.name)) for f in dataclasses.fields(self) if "ok" in f.metadata]
        _check("final", (
            ("dataset", self.dataset in DATASETS, f"one of {', '.join(DATASETS)}"),
            *((f.name, v is None or f.metadata["ok"](v), f.metadata["expected"]) for f, v in options),
        ), self)

    def flags(self) -> list[str]:
        """The nas-train flags of the values set here."""
        out: list[str] = []
        for name in FINAL_FLAGS:
            value = getattr(self, name)
            if value is not None:
                out += [f"--{name.replace('_', '-')}", f"{value:g}" if isinstance(value, float) else str(value)]
        return out


@dataclass(frozen=True)
class DeriveConfig:
    """The whole derivation: where it writes, the storage the search and grid share, and each step's options."""

    out: Path
    storage: str | None
    search: SearchConfig
    grid: GridConfig
    refine: RefineConfig
    families: FamiliesConfig
    final: FinalConfig
    sections: dict[str, dict[str, object]]  # as written in the file (keys normalized), for the tools' configs

    def step_dir(self, step: Step) -> Path:
        return self.out / step.folder

    def section_fingerprint_input(self, name: str) -> dict[str, object]:
        """The resolved options of a section that decide its results (``EXECUTION_KEYS`` left out)."""
        value = getattr(self, name)
        d = dataclasses.asdict(value)
        if isinstance(d.get("seed_arch"), tuple):
            d["seed_arch"] = list(d["seed_arch"])
        return {k: v for k, v in d.items() if k not in EXECUTION_KEYS}


def _normalize(path: str | Path, name: str, value: object) -> dict[str, object]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"--config {path}: {name} must be a mapping of options, but got {type(value).__name__}")
    return {str(k).replace("-", "_"): v for k, v in value.items()}


def _section_keys(path: str | Path, name: str, values: Mapping[str, object], known: set[str]) -> None:
    owned = OWNED.get(name, {})
    for key in values:
        if key in owned:
            raise ConfigError(f"--config {path}: {name}.{key} is set by nas-derive ({owned[key]}); remove it")
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"--config {path}: {name}: unknown key {unknown[0]!r}, expected one of "
                          f"{sorted(known - set(owned))}")


def _make(cls: type[C], values: Mapping[str, object], fixed: Mapping[str, object], what: str) -> C:
    try:
        return cast(C, make_config(cls, dict(values), dict(fixed)))
    except ConfigError as exc:
        text = str(exc)
        raise ConfigError(text if text.startswith(f"{what}.") else f"{what}: {text}") from None


def load_config(path: str | Path, out: str | None = None, storage: str | None = None) -> DeriveConfig:
    """Read and check the whole config (flags ``out`` and ``storage`` override the file's).

    Raises:
        ConfigError: one line naming the bad key or value and what was expected.
    """
    data = read_config_file(path, TOP_KEYS)
    root = Path(out or str(data.get("out") or "runs/nas-derive"))
    store = storage or data.get("storage")
    if store is not None and not isinstance(store, str):
        raise ConfigError(f"--config {path}: storage must be a storage URL or journal:PATH, but got {store!r}")
    sections = {name: _normalize(path, name, data.get(name)) for name in SECTIONS}
    classes: dict[str, type] = {"search": SearchConfig, "grid": GridConfig, "refine": RefineConfig,
                                "families": FamiliesConfig, "final": FinalConfig}
    for name, cls in classes.items():
        _section_keys(path, name, sections[name], config_fields(cls))

    def owned(step: Step) -> dict[str, object]:
        return {"out": str(root / step.folder), "storage": store}

    cfg = DeriveConfig(root, store, _make(SearchConfig, sections["search"], owned(STEPS[0]), "search"),
                       _make(GridConfig, sections["grid"], owned(STEPS[1]), "grid"),
                       _make(RefineConfig, sections["refine"], {}, "refine"),
                       _make(FamiliesConfig, sections["families"], {}, "families"),
                       _make(FinalConfig, sections["final"], {}, "final"), sections)
    _check_resources(cfg)
    return cfg


def _check_resources(cfg: DeriveConfig) -> None:
    """What can be checked without training: architectures, space, grid, trainer keys, data folders."""
    from search_spaces import resolve_arch
    from search_spaces.space import SearchSpace

    try:
        for ref in cfg.search.seed_arch:
            resolve_arch(ref)
        SearchSpace.load(cfg.search.space)
    except ValueError as exc:
        raise ConfigError(f"search: {exc}") from None
    try:
        cfg.grid.grid.feasible()
    except ValueError as exc:
        raise ConfigError(f"grid: {exc}") from None
    for name, task in (("search", cfg.search), ("grid", cfg.grid)):
        try:
            task.train_config(task.seed)
            task.data_config(task.seed)
        except ConfigError as exc:
            raise ConfigError(f"{name}: {exc}") from None
    refine_proxy(cfg, cfg.grid.seed)  # the refine section's trainer keys, on top of the grid's
    for name, dataset, folder in (("search", cfg.search.dataset, cfg.search.data_dir),
                                  ("grid", cfg.grid.dataset, cfg.grid.data_dir),
                                  ("final", cfg.final.dataset, cfg.final.data_dir)):
        default = "/usr/share/datasets/fashion-mnist" if dataset == "fashion-mnist" else None
        where = folder or default
        if where is not None and not os.path.isdir(where):
            raise ConfigError(f"{name}.data_dir {where!r} is not a folder (the {dataset} files)")


def refine_proxy(cfg: DeriveConfig, seed: int) -> GridConfig:
    """The grid's proxy task with the refine section's budget: longer, warmed up, the same held-out split.

    Raises:
        ConfigError: a trainer key or value the proxy trainer refuses.
    """
    r, g = cfg.refine, cfg.grid
    try:
        task = dataclasses.replace(g, epochs=r.epochs, train={**g.train, "warmup_epochs": r.warmup_epochs, **r.train},
                                   train_size=g.train_size if r.train_size is None else r.train_size,
                                   lr=g.lr if r.lr is None else r.lr)
        task.train_config(seed)
    except ConfigError as exc:
        raise ConfigError(f"refine: {exc}") from None
    return task
