"""Step 2's second round: the best of the brief grid run trained longer with several seeds, and the
single-dimension baselines of the paper's Figure 8 on the same refined proxy.

Candidates come back from ``candidates.csv`` and are rebuilt with ``scaling.cost_candidates`` (their MACs
must match the file's). Each (architecture, seed) run is recorded in ``refine.json`` as it finishes, so
an interrupted refinement resumes at the next run.
"""
from __future__ import annotations

import csv
import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from nas.config import ConfigError
from nas.proxy.data import ProxyData
from nas.proxy.train import TrainingDiverged
from nas.recipe.markers import write_json
from nas.recipe.records import ProxyRun, RefineFile, load_record
from nas.recipe.stats import keep_count
from scaling.compound import Coefficients, Scaled, cost_candidates, proxy_resolution
from scaling.config import GridConfig
from search_spaces import ArchSpec

__all__ = ["BASELINES", "Entry", "ProxyRunner", "coefficient_key", "read_candidates", "plan_entries", "refine"]

SQRT2 = math.sqrt(2.0)
# The paper's Figure 8 at the cost of φ = 1: all of the doubling spent on one dimension.
BASELINES = (("depth-only", Coefficients(2.0, 1.0, 1.0)), ("width-only", Coefficients(1.0, SQRT2, 1.0)),
             ("resolution-only", Coefficients(1.0, 1.0, SQRT2)))


def coefficient_key(c: Coefficients) -> str:
    return f"a{c.alpha:.6g}-b{c.beta:.6g}-g{c.gamma:.6g}"


@dataclass(frozen=True)
class Entry(Scaled):
    """An architecture of the refinement: a grid candidate, a baseline, or both (``roles``)."""

    key: str = ""
    roles: tuple[str, ...] = ()
    grid_index: int | None = None
    grid_accuracy: float | None = None


def _float(text: str | None) -> float | None:
    return float(text) if text not in (None, "") else None


def read_candidates(path: Path, base: ArchSpec, grid: GridConfig) -> list[Entry]:
    """The grid's candidates with their brief-run accuracy (None: not trained, or diverged).

    Raises:
        ConfigError: the file is missing or does not match the base and grid (another run's file).
    """
    try:
        rows = list(csv.DictReader(path.open()))
    except FileNotFoundError:
        raise ConfigError(f"{path} is missing: the grid search did not write it") from None
    points = [Coefficients(float(r["alpha"]), float(r["beta"]), float(r["gamma"])) for r in rows]
    built = cost_candidates(base, points, grid.resolution_multiple, grid.proxy_resolution, ordered=False)
    out = []
    for r, c in zip(rows, built):
        if int(r["macs"]) != c.macs:
            raise ConfigError(f"{path}: candidate {r['index']} has {r['macs']} MACs but the base scaled by its "
                              f"coefficients has {c.macs}: the file is from another base")
        out.append(_entry(c, coefficient_key(c.coefficients), ("candidate",), int(r["index"]),
                          _float(r.get("accuracy"))))
    return out


def _entry(scaled: Scaled, key: str, roles: tuple[str, ...], grid_index: int | None = None,
           grid_accuracy: float | None = None) -> Entry:
    base = {f.name: getattr(scaled, f.name) for f in dataclasses.fields(Scaled)}
    return Entry(**base, key=key, roles=roles, grid_index=grid_index, grid_accuracy=grid_accuracy)


def plan_entries(candidates: Sequence[Entry], base: ArchSpec, grid: GridConfig, keep: int | None,
                 baselines: bool) -> list[Entry]:
    """The best ``keep`` trained candidates by brief-run accuracy (ties: fewer MACs), then the baselines.

    A baseline that is also a candidate is one entry with both roles (trained once).
    """
    trained = [c for c in candidates if c.grid_accuracy is not None]
    best = sorted(trained, key=lambda c: (-(c.grid_accuracy or 0.0), c.macs, c.grid_index or 0))
    entries = {c.key: c for c in best[:keep_count(len(trained), keep)]}
    if baselines:
        known = {c.key: c for c in candidates}
        points = [k for _, k in BASELINES]
        built = cost_candidates(base, points, grid.resolution_multiple, grid.proxy_resolution, ordered=False)
        for (role, _), b in zip(BASELINES, built):
            key = coefficient_key(b.coefficients)
            if key in entries:
                entries[key] = dataclasses.replace(entries[key], roles=(*entries[key].roles, role))
            elif key in known:  # on the grid but not among the best: a baseline that keeps its brief-run figure
                entries[key] = dataclasses.replace(known[key], roles=(role,))
            else:
                entries[key] = _entry(b, key, (role,))
    return list(entries.values())


@dataclass
class ProxyRunner:
    """Trains architectures on one proxy task at their own proxy resolution (one data load per resolution)."""

    task: GridConfig
    _data: dict[int, ProxyData] = field(default_factory=dict)

    def data(self, resolution: int) -> ProxyData:
        from nas.proxy.data import load_data

        if resolution not in self._data:
            self._data[resolution] = load_data(dataclasses.replace(self.task.data_config(self.task.seed),
                                                                   resolution=resolution))
        return self._data[resolution]

    def train(self, arch: ArchSpec, resolution: int, seed: int) -> ProxyRun:
        """Held-out metrics of ``arch`` trained from the initialisation of ``seed``; ``state`` DIVERGED when it did."""
        import torch

        from nas.proxy.train import train_proxy
        from search_spaces import build_model

        data = self.data(resolution)
        with torch.random.fork_rng(devices=[]):  # as the grid's CandidateTrainer: one initialisation per seed
            torch.manual_seed(seed)
            model = build_model(arch, num_classes=data.num_classes, in_chans=data.in_chans)
        try:
            r = train_proxy(model, data, self.task.train_config(seed))
        except TrainingDiverged as exc:
            return {"state": "DIVERGED", "accuracy": None, "reason": str(exc), "num_classes": data.num_classes}
        return {"state": "COMPLETE", "accuracy": r.accuracy, "top5": r.top5, "seconds": round(r.seconds, 3),
                "epochs": r.epochs, "images": r.images, "num_classes": data.num_classes}

    def resolution_of(self, arch: ArchSpec, base_resolution: int) -> int:
        """The proxy resolution of a scaled network: the grid's rule, ``round(proxy × resolution / base's)``."""
        return proxy_resolution(self.task.proxy_resolution, arch.resolution / base_resolution)


def refine(entries: Sequence[Entry], runner: ProxyRunner, seeds: Sequence[int], record: Path,
           note: Callable[[str], None]) -> dict[str, list[ProxyRun]]:
    """Train every entry with every seed (runs already in ``record`` are kept); ``{key: [run per seed]}``."""
    runs: dict[str, ProxyRun] = load_record(record, RefineFile).get("runs", {})
    for e in entries:
        for seed in seeds:
            name = f"{e.key}/seed{seed}"
            if name in runs:
                continue
            result: ProxyRun = {"key": e.key, "seed": seed, **runner.train(e.arch, e.proxy_resolution, seed)}
            runs[name] = result
            write_json(record, {"runs": runs})
            note(f"refine {name} ({'/'.join(e.roles)}, {e.proxy_resolution}px): {result['state']} "
                 f"accuracy {result['accuracy']}")
    return {e.key: [runs[f"{e.key}/seed{s}"] for s in seeds] for e in entries}
