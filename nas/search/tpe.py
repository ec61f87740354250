"""Optuna's TPE with the study's finished trials indexed once, not looked at again at every sample.

``optuna.samplers.TPESampler`` re-reads the whole study at every sample: it splits every trial
into the best ones (*below*) and the rest (*above*) in Python, converts every parameter of every
trial to its internal representation, and builds a Parzen estimator of the *above* group whose
log-density at the 24 candidates costs a log per component, parameter and candidate (at 10,000
trials of the MnasNet space's 42 parameters: ~10 million logs, most of a trial's controller time;
``bench/bench_controller.py --curve``). A finished trial never changes, so ``CachedTPESampler``:

- converts each finished trial once per study and search space into a row of growing arrays: its
  internal values, its number, state, value, pruned-trial score and constraint score (running
  trials, whose constant-liar parameters may still change, are converted afresh, as Optuna does);
  a call finds the rows of the study's trial list by identity of the list's finished prefix;
- splits the trials on those arrays, in Optuna's order (``_split_trials``: the best complete
  trials by value, then pruned ones by their score, then infeasible ones; ties in list order);
- on a search space of categorical parameters only (the MnasNet space), evaluates the *above*
  estimator in closed form. Each of its components puts ``(a + 1) / r_i`` on the choice it was
  made from and ``a / r_i`` on the others (``a`` = prior weight / components, ``r_i = a n_i + 1``),
  so its log-density at ``x`` is ``B + m L``, where ``m`` is the number of ``x``'s parameters equal
  to the component's, ``B = sum_i log(a / r_i)`` and ``L = log((a + 1) / a)``; ``m`` for every
  component at once is the popcount of the AND of choice bitsets (a bit per choice; before numpy 2,
  a matrix product of the unpacked bits). The prior component is uniform.

The *below* estimator is Optuna's own ``_ParzenEstimator`` and draws the candidates with the
sampler's RNG, so the random stream is Optuna's. The *above* log-densities equal Optuna's up to
floating-point rounding (~1e-13), so the sample is Optuna's unless two candidates' acquisition
values fall within that rounding of each other. ``tests/test_tpe.py`` compares the two samplers
trial by trial, and the closed form with Optuna's ``_ParzenEstimator.log_pdf`` at many points to 1e-9.
Other search spaces, multi-objective studies and a prior weight of 0 take Optuna's own path
(with the cached conversions). Optuna's private hooks go through ``nas.cluster.optuna_private``.
"""
from __future__ import annotations

import itertools
from collections.abc import Hashable, Mapping
from typing import Any

import numpy as np
import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from nas.cluster import optuna_private as op

__all__ = ["CachedTPESampler", "categorical_log_pdf", "shared_bits"]

_LACKS, _NEW, _FRESH = -1, -2, -3  # row markers below the row numbers (>= 0); _FRESH - k: the k-th fresh row
_FIELDS = {"values": np.float64, "has": bool, "number": np.int64, "complete": bool, "value": np.float64,
           "pruned": np.float64, "infeasible": np.float64, "bits": np.uint64}
_POPCOUNT = getattr(np, "bitwise_count", None)  # numpy >= 2; a matrix product of the unpacked bits before


class _Rows:
    """One study's finished trials in one search space, a row each in growing arrays (``a[name][:size]``)."""

    def __init__(self, search_space: dict[str, BaseDistribution], single_objective: bool) -> None:
        self.space = search_space
        self.index: dict[int, int] = {}  # trial id -> row
        self.single_objective = single_objective
        # the columns whose internal values are ints (a categorical's index), as np.asarray would keep them
        self.integer = [isinstance(d, CategoricalDistribution) for d in search_space.values()]
        self.categorical = all(self.integer)
        sizes = [len(d.choices) for d in search_space.values()] if self.categorical else []  # type: ignore[attr-defined]
        self.choices = np.array(sizes, dtype=np.int64)  # choices per parameter
        self.offsets = np.cumsum([0] + sizes[:-1], dtype=np.int64)  # the bit of each one's first choice
        self.words = -(-sum(sizes) // 64) or 1  # a bit per choice, in 64-bit words
        widths = {"values": (len(search_space),), "pruned": (2,), "bits": (self.words,)}
        self.a = {name: np.zeros((64, *widths.get(name, ())), dtype) for name, dtype in _FIELDS.items()}
        self.size = 0
        self.prefix: list[FrozenTrial] = []  # the finished head of the last trial list ``locate`` was given
        self.prefix_rows = np.empty(0, np.int64)

    def add(self, trial: FrozenTrial, row: list[float] | None, study: optuna.Study) -> int:
        """Index a finished trial (``row``: its internal values, None when it lacks a parameter); its row."""
        if self.size == len(self.a["has"]):
            self.a = {name: np.concatenate([a, np.zeros_like(a)]) for name, a in self.a.items()}
        r, a = self.size, self.a
        a["has"][r] = row is not None
        if row is not None:
            a["values"][r] = row
            if self.categorical:
                a["bits"][r] = self.bits(np.asarray([row], dtype=np.int64))[0]
        a["number"][r], a["complete"][r] = trial.number, trial.state == TrialState.COMPLETE
        single = self.single_objective and trial.values is not None and len(trial.values) == 1
        a["value"][r] = trial.values[0] if single and trial.state == TrialState.COMPLETE else np.nan
        if single and trial.state == TrialState.PRUNED:
            a["pruned"][r] = op.pruned_trial_score(trial, study)
        a["infeasible"][r] = sum(v for v in trial.constraints.values() if v > 0)  # _get_infeasible_trial_score
        self.index[op.trial_id(trial)] = r
        self.size += 1
        return r

    def bits(self, codes: np.ndarray) -> np.ndarray:
        """(n, words) bit sets of n points given as choice indices (n, parameters): the bit of each one's choice."""
        onehot = np.zeros((len(codes), self.words * 64), dtype=bool)
        onehot[np.arange(len(codes))[:, None], self.offsets + codes] = True
        return np.packbits(onehot, axis=1, bitorder="little").view(np.uint64)

    def locate(self, trials: list[FrozenTrial], study: optuna.Study) -> tuple[np.ndarray, list[int]]:
        """The row of each trial of ``trials`` (-1: unfinished), indexing the finished ones not seen yet.

        Below the first unfinished trial of the last list, a list that holds the same trial objects
        there (a finished trial never changes) is not looked at. Also returns the unfinished trials' positions.
        """
        k = len(self.prefix)
        same = k and len(trials) >= k and trials[0] is self.prefix[0] and trials[k - 1] is self.prefix[-1]
        if not (same and trials[:k] == self.prefix):  # C-speed where the objects are the same (``is``)
            k = 0
        rows, unfinished = self.prefix_rows[:k].tolist(), []
        for position in range(k, len(trials)):
            trial = trials[position]
            if not trial.state.is_finished():
                rows.append(-1)
                unfinished.append(position)
                continue
            row = self.index.get(op.trial_id(trial))
            rows.append(self.add(trial, _row(trial.params, self.space), study) if row is None else row)
        head = unfinished[0] if unfinished else len(trials)
        self.prefix, located = trials[:head], np.array(rows, dtype=np.int64)
        self.prefix_rows = located[:head]
        return located, unfinished


class CachedTPESampler(optuna.samplers.TPESampler):
    """``TPESampler`` (same arguments, same samples) over the study's finished trials indexed once."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._rows: dict[Hashable, _Rows] = {}

    def _rows_of(self, study: optuna.Study, search_space: dict[str, BaseDistribution]) -> _Rows:
        # distributions compare by their fields (plain values): their own ``==`` costs ~0.1 ms for 42 of them
        key = (op.storage_of(study), op.study_id(study),
               tuple((name, type(d), tuple(sorted(vars(d).items()))) for name, d in search_space.items()))
        if key not in self._rows:
            self._rows[key] = _Rows(search_space, len(study.directions) == 1)
        return self._rows[key]

    def _get_internal_repr(self, trials: list[FrozenTrial], search_space: dict[str, BaseDistribution],
                           study: optuna.Study) -> dict[str, np.ndarray]:
        """Optuna's: the trials' internal values by parameter (those lacking one left out), from the rows."""
        if not search_space:
            return super()._get_internal_repr(trials, search_space, study)
        rows = self._rows_of(study, search_space)
        # per trial, in order: a row number; _LACKS; _NEW (not converted yet); or _FRESH - k, running trial k's row
        cached = [rows.index.get(op.trial_id(t), _NEW) for t in trials]
        fresh: list[list[float]] = []  # rows of running trials, converted afresh at every call
        for position in [p for p, i in enumerate(cached) if i == _NEW]:
            trial = trials[position]
            if trial.state.is_finished():
                cached[position] = rows.add(trial, _row(trial.params, search_space), study)
            else:  # constant liar: a running trial's parameters may still change
                row = _row(op.tpe_params(self, trial, study), search_space)
                cached[position] = _LACKS if row is None else _FRESH - len(fresh)
                if row is not None:
                    fresh.append(row)
        index = np.array(cached, dtype=np.int64)
        finished = index >= 0
        keep = np.where(finished, rows.a["has"][np.where(finished, index, 0)], index != _LACKS)
        picked = np.where(finished, index, rows.size + _FRESH - index)[keep]
        values = rows.a["values"][:rows.size]
        if fresh:
            values = np.vstack([values, np.array(fresh, dtype=float)])
        matrix = values[picked]
        return {name: matrix[:, j].astype(np.int64) if rows.integer[j] and len(picked) else matrix[:, j]
                for j, name in enumerate(search_space)}

    def _sample_relative(self, study: optuna.Study, trial: FrozenTrial,
                         search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        """Optuna's: random until ``n_startup_trials`` trials are complete or pruned; counted up to that number
        (Optuna lists them all)."""
        if search_space == {}:
            return {}
        finished = (TrialState.COMPLETE, TrialState.PRUNED)
        wanted = op.tpe_settings(self).n_startup_trials
        counted = itertools.islice((t for t in op.cached_trials(study) if t.state in finished), wanted)
        if sum(1 for _ in counted) < wanted:
            return {}
        return self._sample(study, trial, search_space)

    def _sample(self, study: optuna.Study, trial: FrozenTrial,
                search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        """Optuna's ``_sample`` on the indexed rows (see the module docstring); Optuna's own where it does not apply."""
        settings = op.tpe_settings(self)
        rows = self._rows_of(study, search_space) if search_space else None
        if rows is None or not (rows.categorical and rows.single_objective and settings.prior_weight > 0
                                and settings.default_estimator):
            return super()._sample(study, trial, search_space)
        trials = op.tpe_trials(self, study)  # Optuna's list, the trial being sampled still in it
        located, unfinished = rows.locate(trials, study)
        listed = np.ones(len(trials), dtype=bool)  # Optuna leaves the trial being sampled out
        listed[[p for p in unfinished if trials[p].number == trial.number]] = False
        unfinished = [p for p in unfinished if listed[p]]
        n = int(np.count_nonzero(located >= 0))  # running trials do not count
        below = _below(rows, located, op.tpe_gamma(self, study)(n), study.direction == StudyDirection.MAXIMIZE)
        below_trials = sorted((trials[p] for p in np.flatnonzero(below)), key=lambda t: t.number)
        mpe_below = op.tpe_below_estimator(self, study, search_space, below_trials)
        samples = mpe_below.sample(op.tpe_rng(self), settings.n_ei_candidates)
        fresh = {p: _row(op.tpe_params(self, trials[p], study), search_space) for p in unfinished}
        above = _above_log_pdf(rows, trials, located, listed & ~below, fresh, samples, settings)
        acquisition = mpe_below.log_pdf(samples) - above
        best = int(np.argmax(acquisition))
        return {name: d.to_external_repr(samples[name][best].item()) for name, d in search_space.items()}


def _below(rows: _Rows, located: np.ndarray, n_below: int, maximize: bool) -> np.ndarray:
    """Which trials of the list are *below* (``_split_trials`` on the rows' arrays), as a mask.

    The best complete trials by value, then pruned ones by their score, then infeasible ones by
    theirs, ``n_below`` in all; a stable sort keeps ties in list order, as Python's ``sorted`` does.
    """
    a, below = rows.a, np.zeros(len(located), dtype=bool)
    finished = np.flatnonzero(located >= 0)
    at = located[finished]
    infeasible = a["infeasible"][at] > 0
    complete = finished[~infeasible & a["complete"][at]]
    pruned = finished[~infeasible & ~a["complete"][at]]
    bad = finished[infeasible]
    value = a["value"][located[complete]]
    for order in (complete[np.argsort(-value if maximize else value, kind="stable")],
                  pruned[np.lexsort(a["pruned"][located[pruned]].T[::-1])],
                  bad[np.argsort(a["infeasible"][located[bad]], kind="stable")]):
        taken = order[:min(n_below, len(order))]
        below[taken] = True
        n_below = max(0, n_below - len(taken))
    return below


def _above_log_pdf(rows: _Rows, trials: list[FrozenTrial], located: np.ndarray, above: np.ndarray,
                   fresh: dict[int, list[float] | None], samples: dict[str, np.ndarray],
                   settings: op.TPESettings) -> np.ndarray:
    """The *above* estimator's log-density at ``samples``: its observations are the trials of ``above``
    (a mask over the list) that hold every parameter, in number order; ``fresh`` the running ones' rows."""
    a, positions = rows.a, np.flatnonzero(above)
    at = located[positions]
    finished = at >= 0
    numbers, has = a["number"][np.maximum(at, 0)], finished & a["has"][np.maximum(at, 0)]
    for i in np.flatnonzero(~finished):
        numbers[i], has[i] = trials[positions[i]].number, fresh[positions[i]] is not None
    order = np.argsort(numbers, kind="stable")
    order = order[has[order]]
    codes = np.stack([samples[name] for name in rows.space], axis=1).astype(np.int64)  # (points, parameters)
    kept = at[order]
    known = kept >= 0
    matches = shared_bits(rows.bits(codes), a["bits"][kept[known]])
    if not known.all():  # running trials among the observations
        full = np.empty((len(codes), len(order)), dtype=matches.dtype)
        full[:, known] = matches
        for i in np.flatnonzero(~known):
            full[:, i] = (np.asarray(fresh[positions[order[i]]]) == codes).sum(axis=1)
        matches = full
    weights = op.parzen_weights(settings.weights, len(order))
    return categorical_log_pdf(matches, weights, settings.prior_weight, rows.choices)


def shared_bits(points: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """(P, K) ints: how many bits each of P bit sets shares with each of K (``(n, words)`` arrays of uint64).

    Popcounts, not a BLAS product: on a busy 2-core machine a multithreaded BLAS call ran 5x slower.
    """
    if _POPCOUNT is None:  # numpy < 2
        def unpack(b: np.ndarray) -> np.ndarray:
            return np.unpackbits(b.view(np.uint8), axis=1).astype(np.float32)
        return (unpack(points) @ unpack(rows).T).astype(np.int64)  # exact: sums of 0s and 1s
    shared = _POPCOUNT(points[:, 0, None] & rows[None, :, 0])  # uint8: adding in a wider type is 6x slower
    if rows.shape[1] > 3:  # up to 255 bits in common
        shared = shared.astype(np.int64)
    for w in range(1, rows.shape[1]):
        shared += _POPCOUNT(points[:, w, None] & rows[None, :, w])
    return shared


def categorical_log_pdf(matches: np.ndarray, weights: np.ndarray, prior_weight: float,
                        choices: np.ndarray) -> np.ndarray:
    """Log-density at P points of Optuna's Parzen estimator of K observations of categorical parameters.

    ``matches``: (P, K) ints, how many parameters point p shares with observation k; ``weights``: the
    K observations' weights (Optuna's ``weights(K)``), to which the prior's ``prior_weight`` (> 0) is
    appended; ``choices``: the number of choices of each parameter. See the module docstring: a point's
    components are summed by their number of matches m (``mass``), then over m.
    """
    points, k = matches.shape
    mixture = np.append(weights, [prior_weight])
    mixture /= mixture.sum()
    a, most = prior_weight / (k + 1), len(choices)
    base = float(np.sum(np.log(a) - np.log(a * choices + 1)))
    mass = np.array([np.bincount(m, weights=mixture[:k], minlength=most + 1) for m in matches]).reshape(
        points, most + 1)  # a point at a time: no (P, K) temporaries
    terms = np.empty((points, most + 2))
    with np.errstate(divide="ignore"):  # no component with m matches
        terms[:, :-1] = np.log(mass) + (base + np.arange(most + 1) * float(np.log(a + 1) - np.log(a)))
        terms[:, -1] = np.log(mixture[k]) - float(np.sum(np.log(choices)))  # the prior: uniform
    top = terms.max(axis=1)
    return np.log(np.exp(terms - top[:, None]).sum(axis=1)) + top


def _row(params: Mapping[str, object], search_space: dict[str, BaseDistribution]) -> list[float] | None:
    """A trial's internal values in the search space's order; None when it lacks one of its parameters."""
    if not search_space.keys() <= params.keys():
        return None
    return [d.to_internal_repr(params[n]) for n, d in search_space.items()]
