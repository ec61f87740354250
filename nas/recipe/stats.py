"""The refinement's statistics: each architecture's mean and seed-to-seed spread, margins in spread units.

The spread of one architecture is the sample standard deviation of its accuracies over seeds
(``ddof=1``). The unit a margin is measured in is the *pooled* spread of every architecture trained
on the refined proxy: ``sqrt(Σ (n_i − 1)·s_i² / Σ (n_i − 1))``, the seed noise of the proxy itself.
A margin under one spread is ``cannot tell``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Sequence

__all__ = ["CANNOT_TELL", "Summary", "mean_spread", "pooled_spread", "margin", "verdict", "versus", "keep_count",
           "ranked", "learns"]

CANNOT_TELL = "cannot tell"


def mean_spread(values: Sequence[float]) -> tuple[float, float]:
    """``(mean, sample standard deviation)``; the spread is NaN for fewer than two values."""
    n = len(values)
    if n == 0:
        return math.nan, math.nan
    mean = math.fsum(values) / n
    if n < 2:
        return mean, math.nan
    return mean, math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1))


@dataclass(frozen=True)
class Summary:
    """One architecture's accuracies on the refined proxy, one per seed that finished."""

    key: str
    values: tuple[float, ...]

    @property
    def mean(self) -> float:
        return mean_spread(self.values)[0]

    @property
    def spread(self) -> float:
        return mean_spread(self.values)[1]


def pooled_spread(groups: Sequence[Sequence[float]]) -> float:
    """The pooled within-group standard deviation; NaN when no group has two values."""
    dof = sum(len(g) - 1 for g in groups if len(g) >= 2)
    if dof == 0:
        return math.nan
    ss = math.fsum(math.fsum((v - m) ** 2 for v in g) for g in groups if len(g) >= 2
                   for m in [math.fsum(g) / len(g)])
    return math.sqrt(ss / dof)


def margin(a: float, b: float, spread: float) -> float:
    """``(a − b) / spread``: ±inf for a difference with zero spread, NaN for no spread or NaN means."""
    diff = a - b
    if math.isnan(diff) or math.isnan(spread):
        return math.nan
    if spread == 0:
        return 0.0 if diff == 0 else math.copysign(math.inf, diff)
    return diff / spread


def verdict(m: float) -> str:
    """The chosen triple against the runner-up: ``tells apart`` from one spread up, else ``cannot tell``."""
    return "tells apart" if m >= 1 else CANNOT_TELL


def versus(m: float) -> str:
    """The chosen triple against another architecture: ``better`` or ``worse`` by a spread or more, else
    ``cannot tell``."""
    if m >= 1:
        return "better"
    if m <= -1:
        return "worse"
    return CANNOT_TELL


def keep_count(trained: int, keep: int | None) -> int:
    """How many of ``trained`` brief-run candidates go on: ``keep``, else the best third, at least 2 (never more
    than there are)."""
    want = keep if keep is not None else max(2, math.ceil(trained / 3))
    return min(trained, want)


def ranked(summaries: Sequence[Summary], macs: Mapping[str, int]) -> list[Summary]:
    """Best mean first; ties go to fewer MACs, then the key. Architectures without a finished seed go last."""
    def order(s: Summary) -> tuple[float, int, str]:
        mean = s.mean
        return (-mean if not math.isnan(mean) else math.inf, macs.get(s.key, 0), s.key)

    return sorted(summaries, key=order)


def learns(accuracy: float, best: float, chance: float, share: float = 0.9) -> bool:
    """Whether an architecture learned: its accuracy above chance is at least ``share`` of the best's."""
    return accuracy - chance >= share * (best - chance)
