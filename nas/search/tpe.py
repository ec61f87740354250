"""Optuna's TPE with the finished trials' parameters converted once, not at every sample.

``optuna.samplers.TPESampler`` converts every parameter of every trial of the study to its internal
representation each time it samples (``_get_internal_repr``, twice per trial: the below and the
above group). At 10,000 trials of the MnasNet space's 42 parameters that is ~840,000 conversions,
about 390 ms of each trial on 2 CPU cores (``bench/bench_controller.py --curve``). A finished
trial's parameters never change, so ``CachedTPESampler`` converts each finished trial once per
search space and keeps the rows in a growing array; running trials (whose constant-liar parameters
may still change) are converted afresh, as Optuna does. The samples are Optuna's exactly: the same
arrays, with the same dtypes, reach the same estimator (``tests/test_search_units.py`` compares the
two samplers trial by trial).

The one private hook is ``TPESampler._get_internal_repr(trials, search_space, study)``; the test
above fails loudly if an Optuna release renames or changes it.
"""
from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

import numpy as np
import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution
from optuna.trial import FrozenTrial

from nas.cluster.optuna_private import trial_id

__all__ = ["CachedTPESampler"]

_LACKS, _NEW, _FRESH = -1, -2, -3  # row markers below the row numbers (>= 0); _FRESH - k: the k-th fresh row


class _Rows:
    """Finished trials' internal values for one search space: a growing ``(rows, params)`` array."""

    def __init__(self, search_space: dict[str, BaseDistribution]) -> None:
        self.index: dict[int, int] = {}  # trial id -> row; _LACKS: the trial lacks a parameter of the space
        self.values = np.empty((64, len(search_space)))
        # the columns whose internal values are ints (a categorical's index), as np.asarray would keep them
        self.integer = [isinstance(d, CategoricalDistribution) for d in search_space.values()]
        self.size = 0

    def add(self, key: int, row: list[float] | None) -> None:
        if row is None:
            self.index[key] = _LACKS
            return
        if self.size == len(self.values):
            self.values = np.concatenate([self.values, np.empty_like(self.values)])
        self.values[self.size] = row
        self.index[key] = self.size
        self.size += 1


class CachedTPESampler(optuna.samplers.TPESampler):
    """``TPESampler`` (same arguments, same samples) that converts each finished trial's parameters once."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._rows: dict[Hashable, _Rows] = {}

    def _get_internal_repr(self, trials: list[FrozenTrial], search_space: dict[str, BaseDistribution],
                           study: optuna.Study) -> dict[str, np.ndarray]:
        if not search_space:
            return super()._get_internal_repr(trials, search_space, study)
        rows = self._rows.setdefault(tuple(search_space.items()), _Rows(search_space))
        # per trial, in order: a row number; _LACKS; _NEW (not converted yet); or _FRESH - k, running trial k's row
        cached = [rows.index.get(trial_id(t), _NEW) for t in trials]
        fresh: list[list[float]] = []  # rows of running trials, converted afresh at every call
        for position in [p for p, i in enumerate(cached) if i == _NEW]:
            trial = trials[position]
            if trial.state.is_finished():
                rows.add(trial_id(trial), _row(trial.params, search_space))
                cached[position] = rows.index[trial_id(trial)]
            else:  # constant liar: a running trial's parameters may still change
                row = _row(self._get_params(trial, study), search_space)
                cached[position] = _LACKS if row is None else _FRESH - len(fresh)
                if row is not None:
                    fresh.append(row)
        values = rows.values[:rows.size]
        if fresh:
            values = np.vstack([values, np.array(fresh, dtype=float)])
        picked = [i if i >= 0 else rows.size + _FRESH - i for i in cached if i != _LACKS]
        matrix = values[picked]
        return {name: matrix[:, j].astype(np.int64) if rows.integer[j] and picked else matrix[:, j]
                for j, name in enumerate(search_space)}


def _row(params: Mapping[str, object], search_space: dict[str, BaseDistribution]) -> list[float] | None:
    """A trial's internal values in the search space's order; None when it lacks one of its parameters."""
    if not search_space.keys() <= params.keys():
        return None
    return [d.to_internal_repr(params[n]) for n, d in search_space.items()]
