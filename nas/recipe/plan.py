"""``nas-derive --dry-run``: the plan of a derivation and a rough estimate of its work.

Work is counted in *B0-images*: one training image through EfficientNet-B0 at the proxy's 32 px.
A run of ``n`` images of a network with ``m`` MACs (at its own resolution) costs ``n·m / m_B0``
B0-images (the proxy resolution scales like the deployment one, so the ratio holds at the proxy's);
an evaluation image costs a third of a training one (a forward pass), with the held-out split scored
after each report (4 per epoch in a 1-epoch search trial, as ``nas.proxy.train``), and BatchNorm
recalibrated on 20 batches each time. Networks not known before the run (ours) are assumed at the
search target × 2^φ. Time = work / throughput, with the throughput measured for the proxy trainer.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from nas.recipe.config import STEPS, DeriveConfig
from nas.recipe.refine import BASELINES
from nas.recipe.stats import keep_count
from search_spaces import count_cost, get_preset

__all__ = ["B0_IMAGES_PER_SECOND", "TRAIN_IMAGES", "StepWork", "estimate", "plan_text"]

# EfficientNet-B0 at 32 px, batch 128, 2 CPU threads, nas.proxy.train_proxy (docs/proxy-task.md, measured
# on the 2-core development machine).
B0_IMAGES_PER_SECOND = 640.0
TRAIN_IMAGES = {"digits": 1797, "fashion-mnist": 60000, "mnist": 60000, "cifar10": 50000, "cifar100": 50000,
                "synthetic": 2000}
TEST_IMAGES = {"digits": 0, "fashion-mnist": 10000, "mnist": 10000, "cifar10": 10000, "cifar100": 10000,
               "synthetic": 0}
B0_MACS = 401_659_392


@dataclass(frozen=True)
class StepWork:
    """One step's runs and its work in B0-images (None: the dataset's size is not known)."""

    step: str
    runs: int
    b0_images: float | None
    what: str

    @property
    def seconds(self) -> float | None:
        return None if self.b0_images is None else self.b0_images / B0_IMAGES_PER_SECOND


def _split(dataset: str, val_size: float, train_size: int | None) -> tuple[int, int] | None:
    """``(training, held-out)`` images of a proxy split, or None for a dataset of unknown size."""
    total = TRAIN_IMAGES.get(dataset)
    if total is None:
        return None
    val = round(val_size * total) if val_size < 1 else int(val_size)
    train = total - val
    return (min(train, train_size) if train_size else train), val


def _run(split: tuple[int, int] | None, epochs: float, reports: int, ratio: float, batch: int) -> float | None:
    if split is None:
        return None
    train, val = split
    return ratio * (train * epochs + reports * (val + 20 * batch) / 3)


def _reports(epochs: float) -> int:
    per = 4 if epochs <= 1 else 2 if epochs <= 4 else 1
    return max(1, math.ceil(epochs * per - 1e-9))


def estimate(cfg: DeriveConfig) -> list[StepWork]:
    """The work of each step (rough: see the module's docstring)."""
    s, g, r, f = cfg.search, cfg.grid, cfg.refine, cfg.final
    t = s.target_flops / B0_MACS
    search = _run(_split(s.dataset, s.val_size, s.train_size), s.epochs, _reports(s.epochs), t, s.batch_size)
    n_grid = min(g.max_candidates or len(g.grid.feasible()), len(g.grid.feasible()))
    grid = _run(_split(g.dataset, g.val_size, g.train_size), g.epochs, _reports(g.epochs), 2 * t, g.batch_size)
    refine_runs = (keep_count(n_grid, r.keep) + (len(BASELINES) if r.baselines else 0)) * r.seeds
    refined = _run(_split(g.dataset, g.val_size, r.train_size or g.train_size), r.epochs, 1, 2 * t, g.batch_size)
    phis = (0, *cfg.families.phis)
    ratios = [t * 2 ** p for p in phis] + [count_cost(get_preset(f"efficientnet-b{p}")).macs / B0_MACS for p in phis]
    brief = [_run(_split(g.dataset, g.val_size, g.train_size), g.epochs, 1, x, g.batch_size) for x in ratios]
    full = TRAIN_IMAGES.get(f.dataset)
    epochs = f.epochs or 1.0
    final = None if full is None else sum(x * (full * epochs + TEST_IMAGES.get(f.dataset, 0) / 3) for x in ratios)

    def times(n: int, one: float | None) -> float | None:
        return None if one is None else n * one

    return [
        StepWork(STEPS[0].folder, s.trials, times(s.trials, search),
                 f"{s.trials} trials at ~T = {s.target_flops / 1e6:g}M"),
        StepWork(STEPS[1].folder, n_grid + refine_runs, None if grid is None or refined is None else
                 n_grid * grid + refine_runs * refined,
                 f"{n_grid} candidates × {g.epochs:g} epoch(s), then {refine_runs} refined runs × {r.epochs:g} epochs"),
        StepWork(STEPS[2].folder, len(ratios) if cfg.families.proxy_scores else 0,
                 (sum(b for b in brief if b is not None) if all(b is not None for b in brief) else None)
                 if cfg.families.proxy_scores else 0.0, f"{len(ratios)} members scored on the brief proxy"),
        StepWork(STEPS[3].folder, len(ratios), final, f"{len(ratios)} nas-train runs × {epochs:g} epoch(s) on "
                 f"{full if full else '?'} images (nas-train assumed as fast as the proxy trainer)"),
    ]


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    return f"{seconds / 60:.0f} min"


def plan_text(cfg: DeriveConfig) -> str:
    """The steps, each with its folder, its work and a time at ``B0_IMAGES_PER_SECOND``."""
    lines = [f"out        {cfg.out}/ (storage for search and grid: "
             f"{'a journal file per step' if not cfg.storage else 'shared, given'})",
             f"objective  search target T = {cfg.search.target_flops / 1e6:g}M MACs at {cfg.search.resolution}px "
             f"(defines our B0's cost); families B0..B{cfg.families.k}; final recipe "
             f"{cfg.final.recipe or 'nas-train default'}, {cfg.final.epochs or 'default'} epoch(s) on "
             f"{cfg.final.dataset}"]
    work = estimate(cfg)
    total = 0.0
    for w in work:
        sec = w.seconds
        total += sec or 0.0
        lines.append(f"{w.step:<11}{w.what}: {w.runs} runs, "
                     f"{'?' if w.b0_images is None else f'{w.b0_images / 1e6:.2f}M'} B0-images ≈ {_duration(sec)}")
    lines.append(f"{STEPS[4].folder:<11}report.md, report.png")
    lines.append(f"budget     ≈ {_duration(total)} at {B0_IMAGES_PER_SECOND:g} B0-images/s (EfficientNet-B0, 32 px, "
                 "2 CPU threads); a rough guide: small networks run below their MACs' share")
    return "\n".join(lines)
