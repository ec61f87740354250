"""The RL controller's tokens: every Optuna distribution as one categorical choice.

MnasNet's controller emits categorical tokens only, and so does ``RLSampler``'s: a categorical
parameter's tokens are its choices; an integer or float parameter is cut into at most ``bins``
bins, and the policy learns which bin. A discrete grid (an ``IntDistribution``, a stepped
``FloatDistribution``) of at most ``bins`` values has one bin per value; a longer grid, or a
continuous range, is cut into ``bins`` equal widths on its scale (logarithmic for ``log=True``).
A value is drawn uniformly within the chosen bin, on that scale; a value given (an enqueued or
fixed parameter, another worker's trial) is learned as the bin that holds it.
"""
from __future__ import annotations

import bisect
import functools
import math
import random
from collections.abc import Hashable, Iterator
from dataclasses import dataclass

from optuna.distributions import (
    BaseDistribution,
    CategoricalChoiceType,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.trial import FrozenTrial

BINS = 16  # the most tokens of an integer or float parameter

Key = tuple[str, tuple[Hashable, ...]]  # (parameter name, its token labels): one head and one embedding each
Value = CategoricalChoiceType | int | float


@dataclass(frozen=True)
class Tokens:
    """The tokens of one distribution.

    ``labels`` has one entry per token: the choices of a categorical distribution, else each bin's
    ``(lowest, highest)`` value. A numeric distribution's bins are ``starts`` (grid indices, each
    bin from its start to the next one's, the last entry the grid's size) for a discrete grid, or
    ``edges`` (on the distribution's scale) for a continuous range.
    """

    dist: BaseDistribution
    labels: tuple[Hashable, ...]
    starts: tuple[int, ...] = ()
    edges: tuple[float, ...] = ()

    def index(self, value: Value) -> int:
        """The token of ``value``: a choice's index, or the bin that holds the value."""
        dist = self.dist
        if isinstance(dist, CategoricalDistribution):
            return int(dist.to_internal_repr(value))
        assert isinstance(dist, (IntDistribution, FloatDistribution)) and isinstance(value, (int, float))
        if self.starts:
            grid = min(max(round((float(value) - dist.low) / _step(dist)), 0), self.starts[-1] - 1)
            return bisect.bisect_right(self.starts, grid) - 1
        u = _scale(dist, float(value))
        return min(max(bisect.bisect_right(self.edges, u) - 1, 0), len(self.labels) - 1)

    def value(self, token: int, rng: random.Random) -> Value:
        """A value of token ``token``: the choice, or one drawn uniformly within the bin."""
        dist = self.dist
        if isinstance(dist, CategoricalDistribution):
            return dist.choices[token]
        assert isinstance(dist, (IntDistribution, FloatDistribution))
        if self.starts:
            first, end = self.starts[token], self.starts[token + 1]
            if dist.log and end - first > 1:  # uniform on the log scale, then the grid point below
                low, high = math.log(_grid(dist, first)), math.log(_grid(dist, end - 1) + 1)
                grid = min(int((math.exp(low + rng.random() * (high - low)) - dist.low) // _step(dist)), end - 1)
            else:
                grid = first + min(int(rng.random() * (end - first)), end - first - 1)
            return _grid(dist, grid)
        lo, hi = self.edges[token], self.edges[token + 1]
        u = lo + rng.random() * (hi - lo)
        return float(min(max(math.exp(u) if dist.log else u, dist.low), dist.high))


@functools.lru_cache(maxsize=4096)
def tokens(dist: BaseDistribution, bins: int = BINS) -> Tokens:
    """The tokens of ``dist`` (at most ``bins`` for a numeric one)."""
    if isinstance(dist, CategoricalDistribution):
        return Tokens(dist, tuple(dist.choices))
    if not isinstance(dist, (IntDistribution, FloatDistribution)):
        raise TypeError(f"RLSampler cannot sample a {type(dist).__name__}")
    lo, hi = _scale(dist, dist.low), _scale(dist, dist.high)
    edges = [lo + (hi - lo) * k / bins for k in range(bins + 1)]
    if isinstance(dist, IntDistribution) or dist.step is not None:
        size = int(round((dist.high - dist.low) / _step(dist))) + 1
        if size <= bins:
            starts = list(range(size + 1))
        else:
            firsts = (math.ceil((_unscale(dist, e) - dist.low) / _step(dist) - 1e-9) for e in edges[1:-1])
            starts = sorted({0, size, *(min(max(f, 0), size) for f in firsts)})
        labels = tuple((_grid(dist, a), _grid(dist, b - 1)) for a, b in zip(starts, starts[1:]))
        return Tokens(dist, labels, starts=tuple(starts))
    if hi == lo:
        edges = [lo, hi]
    labels = tuple((_unscale(dist, a), _unscale(dist, b)) for a, b in zip(edges, edges[1:]))
    return Tokens(dist, labels, edges=tuple(edges))


def key(name: str, dist: BaseDistribution, bins: int = BINS) -> Key:
    """The controller's key of parameter ``name`` of distribution ``dist``."""
    return name, tokens(dist, bins).labels


def steps(trial: FrozenTrial, names: list[str], bins: int = BINS) -> Iterator[tuple[Key, int]]:
    """(key, token) of ``trial``'s parameters ``names``, in that order."""
    for name in names:
        tok = tokens(trial.distributions[name], bins)
        yield (name, tok.labels), tok.index(trial.params[name])


def _step(dist: IntDistribution | FloatDistribution) -> float:
    return 1 if dist.step is None else dist.step


def _grid(dist: IntDistribution | FloatDistribution, index: int) -> int | float:
    """Grid point ``index`` of a discrete distribution, as Python's int or float."""
    if isinstance(dist, IntDistribution):
        return int(dist.low + index * dist.step)
    return float(min(dist.low + index * _step(dist), dist.high))


def _scale(dist: IntDistribution | FloatDistribution, value: float) -> float:
    return math.log(value) if dist.log else float(value)


def _unscale(dist: IntDistribution | FloatDistribution, u: float) -> float:
    return math.exp(u) if dist.log else u
