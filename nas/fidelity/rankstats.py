"""Rank correlations and their bootstrap confidence intervals, in numpy alone.

``kendall_tau`` is Kendall's tau-b and ``spearman_rho`` is Spearman's rho with average ranks for
ties: the values ``scipy.stats.kendalltau`` and ``scipy.stats.spearmanr`` return. Both are NaN
when either input is constant (no ranking to agree with). ``bootstrap_ci`` resamples the
(x, y) pairs with replacement and returns the percentile interval of any such statistic.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
from numpy.typing import ArrayLike

__all__ = ["kendall_tau", "spearman_rho", "average_ranks", "bootstrap_ci"]


def _pairs(x: ArrayLike, y: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """``x`` and ``y`` as float arrays of the same length >= 2, all finite."""
    a, b = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if a.ndim != 1 or a.shape != b.shape:
        raise ValueError(f"x and y must be 1-D and of the same length, but got shapes {a.shape} and {b.shape}")
    if len(a) < 2:
        raise ValueError(f"a rank correlation needs at least 2 pairs, but got {len(a)}")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError("x and y must be finite (drop the pairs with NaN or inf first)")
    return a, b


def kendall_tau(x: ArrayLike, y: ArrayLike) -> float:
    """Kendall's tau-b: (concordant - discordant) / sqrt(pairs untied in x * pairs untied in y).

    A pair tied in x or y is neither concordant nor discordant; tau-b is 1 for the same order,
    -1 for the reversed one, and NaN when x or y is constant. O(n^2) memory: fine to a few thousand.
    """
    a, b = _pairs(x, y)
    upper = np.triu_indices(len(a), k=1)
    sx = np.sign(a[:, None] - a[None, :])[upper]
    sy = np.sign(b[:, None] - b[None, :])[upper]
    untied = np.count_nonzero(sx) * np.count_nonzero(sy)
    return float(np.sum(sx * sy) / np.sqrt(untied)) if untied else float("nan")


def average_ranks(values: ArrayLike) -> np.ndarray:
    """Ranks 1..n, tied values sharing the mean of their ranks (``scipy.stats.rankdata``'s default)."""
    a = np.asarray(values, dtype=float)
    order = np.argsort(a, kind="stable")
    starts_group = np.r_[True, a[order][1:] != a[order][:-1]]
    group = np.cumsum(starts_group) - 1
    starts = np.flatnonzero(starts_group)
    ends = np.r_[starts[1:], len(a)]
    ranks = np.empty(len(a))
    ranks[order] = ((starts + 1 + ends) / 2)[group]
    return ranks


def spearman_rho(x: ArrayLike, y: ArrayLike) -> float:
    """Spearman's rho: the Pearson correlation of the average ranks; NaN when x or y is constant."""
    a, b = _pairs(x, y)
    rx, ry = average_ranks(a), average_ranks(b)
    rx, ry = rx - rx.mean(), ry - ry.mean()
    norm = np.sqrt(np.sum(rx * rx) * np.sum(ry * ry))
    return float(np.sum(rx * ry) / norm) if norm > 0 else float("nan")


def bootstrap_ci(x: ArrayLike, y: ArrayLike, stat: Callable[[np.ndarray, np.ndarray], float], *, n: int = 1000,
                 level: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of ``stat(x, y)``, resampling the pairs ``(x[i], y[i])``.

    ``x`` and ``y`` are indexed along their first axis together, so ``stat`` may also take 2-D
    arrays (one row per item). Resamples where ``stat`` is NaN (e.g. every value drawn tied) are
    left out; NaN bounds when all are.

    Args:
        n: number of resamples.
        level: coverage of the interval, in (0, 1).
        seed: seed of the resampling (the same inputs and seed give the same interval).
    """
    a, b = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if len(a) != len(b) or len(a) < 2:
        raise ValueError(f"x and y must have the same length >= 2, but got {len(a)} and {len(b)}")
    if n < 1 or not 0 < level < 1:
        raise ValueError(f"n must be >= 1 and level in (0, 1), but got n={n!r}, level={level!r}")
    draws = np.random.default_rng(seed).integers(0, len(a), size=(n, len(a)))
    values = np.array([stat(a[i], b[i]) for i in draws], dtype=float)
    values = values[np.isfinite(values)]
    if not len(values):
        return float("nan"), float("nan")
    tail = 100 * (1 - level) / 2
    lo, hi = np.percentile(values, [tail, 100 - tail])
    return float(lo), float(hi)
