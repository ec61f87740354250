"""The proxy check's work: the architectures to rank, the scores the report needs, and computing the missing ones."""
from __future__ import annotations

import dataclasses
import logging
import math
import time
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence, TypeVar

import numpy as np
import torch

from nas.config import ConfigError
from nas.fidelity.analysis import MACS_RESOLUTION
from nas.fidelity.cache import Key, ScoreCache
from nas.fidelity.config import ZC_BATCHES, CheckConfig
from nas.proxy.data import ProxyData
from nas.proxy.train import TrainConfig, TrainingDiverged
from search_spaces import ArchSpec, count_cost, get_preset
from search_spaces.space import SearchSpace

__all__ = ["MAX_DRAWS_PER_ARCH", "sample_archs", "Item", "plan_items", "measure", "compute_missing"]

log = logging.getLogger("nas-proxy-check")
MAX_DRAWS_PER_ARCH = 1000  # sampling gives up after this many draws per wanted architecture
T = TypeVar("T")
Scorer = Callable[[ArchSpec, int], float]  # (arch, seed) -> score


class _SeededDraw:
    """What ``SearchSpace.sample`` asks of an Optuna trial: each choice drawn uniformly from a seeded stream."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng

    def suggest_categorical(self, name: str, choices: Sequence[T]) -> T:
        return choices[int(self.rng.integers(len(choices)))]


def sample_archs(space: SearchSpace, count: int, seed: int, target: float, band: float,
                 include_b0: bool) -> list[ArchSpec]:
    """``count`` distinct architectures of ``space`` with MACs in ``[target/band, target*band]``.

    EfficientNet-B0 (as a member of the space) comes first when ``include_b0``. The draws are
    seeded and sequential, so a larger ``count`` with the same seed extends the same list.

    Raises:
        ConfigError: the band holds fewer than ``count`` distinct architectures that sampling finds.
    """
    archs = [space.from_params(space.encode(get_preset("efficientnet-b0"))).replace(name="efficientnet-b0")] \
        if include_b0 else []
    seen = {a.to_str() for a in archs}
    draw = _SeededDraw(np.random.default_rng(seed))
    for _ in range(MAX_DRAWS_PER_ARCH * count):
        if len(archs) >= count:
            break
        arch = space.sample(draw)  # the one method of an Optuna trial that sampling uses
        if arch.to_str() not in seen and target / band <= count_cost(arch, MACS_RESOLUTION).macs <= target * band:
            seen.add(arch.to_str())
            archs.append(arch.replace(name=f"arch{len(archs):02d}"))
    if len(archs) < count:
        raise ConfigError(f"--archs {count}: only {len(archs)} distinct architectures of the space have MACs "
                          f"within [{target / band / 1e6:g}M, {target * band / 1e6:g}M] in "
                          f"{MAX_DRAWS_PER_ARCH * count} draws; widen --flops-band or move --target-flops")
    return archs


@dataclass(frozen=True)
class Item:
    """One score to compute: ``method`` (``train:E`` or ``zc:NAME``) of ``arch`` with ``seed``."""

    arch: ArchSpec
    method: str
    seed: int

    @property
    def key(self) -> Key:
        return self.arch.to_str(), self.method, self.seed


def plan_items(cfg: CheckConfig, archs: Sequence[ArchSpec], stored: Mapping[str, str] | None = None) -> list[Item]:
    """Every score the report needs, cheapest first: zero-cost, supernet, proxy training, then the reference.

    ``stored``: a proxy's name in the cache where it differs from the method (a supernet proxy's
    carries the supernet's digest and its BN batches, so another supernet's scores are never reused).
    """
    def cost(method: str) -> float:
        kind, _, arg = method.partition("@")[0].partition(":")
        if kind in ("train", "supernet+ft"):
            return float(arg)
        return 0.01 if kind in ("supernet", "supernet-loss") else 0.0

    stored = stored or {}
    runs = [(stored.get(m, m), cfg.seed) for m in cfg.proxies]
    runs += [(cfg.reference_method, s) for s in cfg.reference_seed_values]
    runs.sort(key=lambda run: cost(run[0]))  # stable: the reference after a proxy of the same length
    return [Item(arch, method, seed) for method, seed in runs for arch in archs]


def measure(item: Item, data: ProxyData, trainer: TrainConfig, device: str | torch.device,
            scorers: Mapping[str, Scorer] | None = None) -> float:
    """Held-out accuracy after training (``train:E``), the zero-cost score (``zc:NAME``) of ``item``, or
    the score of ``scorers[item.method]`` (``(arch, seed) -> score``: the supernet proxies)."""
    from nas.proxy.train import train_proxy
    from search_spaces import build_model

    if scorers and item.method in scorers:
        return scorers[item.method](item.arch, item.seed)
    kind, _, arg = item.method.partition(":")
    if kind == "zc":
        from nas.proxy.zero_cost import score_arch

        return score_arch(item.arch, data, arg, seed=item.seed, batch_size=min(trainer.batch_size, data.num_train),
                          batches=ZC_BATCHES, device=device)
    torch.manual_seed(item.seed)  # the same item builds the same initial weights on every rerun
    model = build_model(item.arch, num_classes=data.num_classes, in_chans=data.in_chans)
    return train_proxy(model, data, dataclasses.replace(trainer, epochs=float(arg), seed=item.seed)).accuracy


def compute_missing(items: Sequence[Item], cache: ScoreCache, data: ProxyData, trainer: TrainConfig,
                    device: str | torch.device, scorers: Mapping[str, Scorer] | None = None) -> int:
    """Compute and store each item not in ``cache``, logging one line each; returns how many were computed."""
    from nas.search.progress import fmt_seconds

    todo = [item for item in items if item.key not in cache]
    log.info("nas-proxy-check: %d scores needed, %d already in %s, %d to compute", len(items),
             len(items) - len(todo), cache.path, len(todo))
    start = time.perf_counter()
    for number, item in enumerate(todo, 1):
        t0 = time.perf_counter()
        record: dict[str, object] = {"arch": item.arch.to_str(), "method": item.method, "seed": item.seed}
        error = None
        try:
            score: float | None = float(measure(item, data, trainer, device, scorers))
        except TrainingDiverged as exc:
            score, error = None, str(exc)
        if score is not None and not math.isfinite(score):
            score, error = None, f"non-finite score {score}"
        if error is not None:
            record["error"] = error
        record.update(score=score, seconds=round(time.perf_counter() - t0, 3))
        cache.add(record)
        macs = count_cost(item.arch, MACS_RESOLUTION).macs
        shown = f"{score:.4f}" if score is not None else error
        log.info("[%d/%d] %s seed %d %s (%.0fM MACs): %s in %.1f s | elapsed %s", number, len(todo),
                 item.method.partition("@")[0],
                 item.seed, item.arch.name, macs / 1e6, shown, record["seconds"],
                 fmt_seconds(time.perf_counter() - start))
    return len(todo)
