"""Every private Optuna API the toolkit uses, one function each, with the reason it is needed.

Optuna 5 has no public way to reach a study's storage, to write system attributes, or to ask for
the heartbeats of running trials, and its heartbeat protocol (``BaseHeartbeat``) lives in a private
module. Everything of that kind goes through this module, nowhere else; ``tests/test_optuna_private.py``
checks each use on a real study and fails loudly when an Optuna release changes one. Tested on
the Optuna versions of ``TESTED_OPTUNA`` (the pin in ``setup.cfg``).
"""
from __future__ import annotations

import json
from datetime import datetime
from typing import Any, Callable, Container, NamedTuple

import numpy as np
import optuna
from optuna._typing import JSONSerializable as _JSONSerializable
from optuna.distributions import BaseDistribution
from optuna.samplers import TPESampler
from optuna.samplers._tpe import sampler as _tpe
from optuna.samplers._tpe.parzen_estimator import _ParzenEstimator
from optuna.storages import BaseStorage, JournalStorage, RDBStorage
from optuna.storages._heartbeat import BaseHeartbeat as _BaseHeartbeat
from optuna.storages.journal import BaseJournalBackend
from optuna.storages.journal._storage import JournalOperation as _JournalOperation
from optuna.trial import FrozenTrial, Trial, TrialState

__all__ = ["TESTED_OPTUNA", "JSONValue", "BaseHeartbeat", "storage_of", "study_id", "trial_id", "study_system_attrs",
           "set_study_system_attr", "set_trial_system_attr", "all_trials", "heartbeat_enabled", "stale_trial_ids",
           "cached", "uncached", "running_heartbeats", "journal_file_path", "GroupedJournalStorage", "TPESettings",
           "tpe_settings",
           "tpe_trials", "cached_trials", "tpe_gamma", "tpe_rng", "tpe_params", "tpe_below_estimator",
           "pruned_trial_score", "parzen_weights", "ParzenEstimator"]

TESTED_OPTUNA = ">=5.0,<5.1"  # nas.search.tpe reads 5.0's TPE internals: 4.3.0 fails tests/test_tpe.py
# What an attribute may hold: Optuna's own type for it (``optuna._typing``), as its storage methods declare it.
JSONValue = _JSONSerializable

# The heartbeat protocol a storage implements to have its stale trials failed by ``study.optimize``
# (``record_heartbeat``, ``_get_stale_trial_ids``, ...): Optuna exports no public base class for it.
BaseHeartbeat = _BaseHeartbeat


def storage_of(study: optuna.Study) -> BaseStorage:
    """The study's storage: worker slots, claims and leases are storage-level (``Study`` has no accessor)."""
    return study._storage


def study_id(study: optuna.Study) -> int:
    """The study's storage id: storage calls take it, ``Study`` exposes only its name."""
    return study._study_id


def trial_id(trial: Trial | FrozenTrial) -> int:
    """The trial's storage id: storage calls take it, trials expose only their number."""
    return trial._trial_id


def study_system_attrs(study: optuna.Study) -> dict[str, JSONValue]:
    """The study's system attributes: ``Study.system_attrs`` was removed in Optuna 4; worker slots live there."""
    return storage_of(study).get_study_system_attrs(study_id(study))


def set_study_system_attr(study: optuna.Study, key: str, value: JSONValue) -> None:
    """``Study.set_system_attr`` was removed in Optuna 4; worker slots stay out of the user's attributes."""
    storage_of(study).set_study_system_attr(study_id(study), key, value)


def set_trial_system_attr(trial: Trial, key: str, value: JSONValue) -> None:
    """``Trial.set_system_attr`` was removed in Optuna 4; claims and leases stay out of the user's attributes."""
    storage_of(trial.study).set_trial_system_attr(trial_id(trial), key, value)


def all_trials(study: optuna.Study, states: Container[TrialState] | None = None) -> list[FrozenTrial]:
    """Every trial of the study, not copied: under Hyperband a sampler's ``study`` is one bracket's view,
    whose ``get_trials`` filters."""
    return storage_of(study).get_all_trials(study_id(study), deepcopy=False, states=states)


def heartbeat_enabled(storage: BaseStorage) -> bool:
    """Whether ``study.optimize`` runs a heartbeat for ``storage`` (``optuna.storages._heartbeat``)."""
    from optuna.storages._heartbeat import is_heartbeat_enabled

    return is_heartbeat_enabled(storage)


def stale_trial_ids(storage: BaseHeartbeat, study_id: int) -> list[int]:
    """The running trials whose heartbeat is older than the grace period: the hook ``fail_stale_trials`` calls."""
    return storage._get_stale_trial_ids(study_id)


def cached(rdb: RDBStorage) -> BaseStorage:
    """Optuna's read cache of an RDB storage (finished trials read once), as ``optuna.load_study(url)`` has it:
    ``get_storage`` adds it only to a bare ``RDBStorage``, and ours is wrapped."""
    return optuna.storages._CachedStorage(rdb)


def uncached(storage: BaseStorage) -> BaseStorage:
    """The storage under Optuna's read cache (``_CachedStorage._backend``), else ``storage`` itself."""
    return storage._backend if isinstance(storage, optuna.storages._CachedStorage) else storage


def running_heartbeats(rdb: RDBStorage, study_id: int) -> dict[int, datetime | None]:
    """``{trial id: last heartbeat}`` of the study's running trials (None: none recorded). Optuna has no
    public query for it; the tables are ``optuna.storages._rdb.models``."""
    import sqlalchemy as sa
    from optuna.storages._rdb import models

    t, h = models.TrialModel.__table__, models.TrialHeartbeatModel.__table__
    select = (sa.select(t.c.trial_id, h.c.heartbeat).select_from(t.outerjoin(h, t.c.trial_id == h.c.trial_id))
              .where(t.c.study_id == study_id, t.c.state == TrialState.RUNNING))
    with rdb.engine.connect() as conn:
        return {trial_id: beat for trial_id, beat in conn.execute(select)}


def journal_file_path(storage: JournalStorage) -> str | None:
    """The file of a journal storage (``JournalStorage._backend._file_path``; None for Redis and others):
    the study lock is a file next to it."""
    return getattr(storage._backend, "_file_path", None)


class GroupedJournalStorage(JournalStorage):
    """``JournalStorage`` that appends a trial's parameters and user attributes together with this process's
    next other write or read: one fsynced append for the 42 parameters of a MnasNet trial instead of 42.

    What another process reads is unchanged at every step it can see: the held lines are in the file
    before this process's next write, read or end of trial (``tell`` writes the state), so a worker
    killed mid-trial loses only what a trial that had not yet reached that step holds. A trial that is
    not there or finished is refused at once, as Optuna refuses it; a parameter whose distribution
    conflicts with the study's earlier trials is refused by the next append's read-back (Optuna: at
    the write itself), so its error comes from that next call. Overrides ``_write_log`` and
    ``_sync_with_backend`` and reads ``_replay_result``: Optuna's journal has no write of several logs.
    """

    def __init__(self, backend: BaseJournalBackend) -> None:
        self._held: list[dict[str, object]] = []
        super().__init__(backend)

    def set_trial_param(self, trial_id: int, param_name: str, param_value_internal: float,
                        distribution: BaseDistribution) -> None:
        self._hold(_JournalOperation.SET_TRIAL_PARAM, trial_id, param_name=param_name,
                   param_value_internal=param_value_internal,
                   distribution=optuna.distributions.distribution_to_json(distribution))

    def set_trial_user_attr(self, trial_id: int, key: str, value: JSONValue) -> None:
        self._hold(_JournalOperation.SET_TRIAL_USER_ATTR, trial_id, user_attr={key: value})

    def _hold(self, op_code: int, trial_id: int, **fields: object) -> None:
        with self._thread_lock:
            trial = self._replay_result.get_trial(trial_id)  # KeyError for a trial not there, as Optuna's
            if trial.state.is_finished():
                raise optuna.exceptions.UpdateFinishedTrialError(
                    f"Trial#{trial.number} has already finished and can not be updated.")
            line = {"op_code": op_code, "worker_id": self._replay_result.worker_id, "trial_id": trial_id, **fields}
            json.dumps(line)  # a value JSON cannot hold is refused now, not at the next write
            self._held.append(line)

    def _write_log(self, op_code: int, extra_fields: dict[str, object]) -> None:
        line = {"op_code": op_code, "worker_id": self._replay_result.worker_id, **extra_fields}
        self._append([line])

    def _sync_with_backend(self) -> None:
        if self._held:
            self._append([])
        super()._sync_with_backend()

    def _append(self, lines: list[dict[str, object]]) -> None:
        held, self._held = self._held, []
        try:
            self._backend.append_logs(held + lines)
        except BaseException:
            self._held = held + self._held  # nothing was written: keep them for the next append
            raise

    def __getstate__(self) -> dict[str, object]:
        state = super().__getstate__()
        state["_held"] = []  # a copy in another process writes under another worker id
        return state


# --- TPE: what nas.search.tpe.CachedTPESampler reads of the TPESampler it extends (no public accessors) ---

# Optuna's Parzen estimator: CachedTPESampler builds the 'below' one with it (and the tests compare against it).
ParzenEstimator = _ParzenEstimator


class TPESettings(NamedTuple):
    """The settings of a ``TPESampler`` that ``CachedTPESampler`` reads (private attributes of its ``__init__``)."""

    constant_liar: bool
    n_startup_trials: int
    n_ei_candidates: int
    prior_weight: float
    weights: Callable[[int], np.ndarray]
    default_estimator: bool  # Optuna's own _ParzenEstimator, not a subclass set by the user


def tpe_settings(sampler: TPESampler) -> TPESettings:
    """A ``TPESampler``'s settings: it keeps them in private attributes, with no accessor."""
    parameters = sampler._parzen_estimator_parameters
    return TPESettings(sampler._constant_liar, sampler._n_startup_trials, sampler._n_ei_candidates,
                       parameters.prior_weight, parameters.weights, sampler._parzen_estimator_cls is _ParzenEstimator)


def tpe_trials(sampler: TPESampler, study: optuna.Study) -> list[FrozenTrial]:
    """The trials ``TPESampler._sample`` splits, read as it reads them (``Study._get_trials``), the trial
    being sampled not yet left out."""
    liar = sampler._constant_liar
    states = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING) if liar else (TrialState.COMPLETE,
                                                                                        TrialState.PRUNED)
    return study._get_trials(deepcopy=False, states=states, use_cache=not liar)


def cached_trials(study: optuna.Study) -> list[FrozenTrial]:
    """Every trial of the study as read once for the trial being sampled (``Study._get_trials(use_cache=True)``),
    as ``TPESampler._sample_relative`` counts the finished ones."""
    return study._get_trials(deepcopy=False, use_cache=True)


def tpe_gamma(sampler: TPESampler, study: optuna.Study) -> Callable[[int], int]:
    """The size of the 'below' group of n trials, set on first use as ``TPESampler._sample`` sets it (``_gamma``)."""
    if sampler._gamma is None:
        sampler._gamma = _tpe.default_gamma if len(study.directions) <= 1 else _tpe.default_gamma_multiobjective
    return sampler._gamma


def tpe_rng(sampler: TPESampler) -> np.random.RandomState:
    """The random state TPE draws its candidates from (``_rng.rng``): the same stream gives Optuna's samples."""
    return sampler._rng.rng


def tpe_params(sampler: TPESampler, trial: FrozenTrial, study: optuna.Study) -> dict[str, Any]:
    """A trial's parameters as TPE sees them (``_get_params``): a running trial's constant-liar ones included."""
    return sampler._get_params(trial, study)


def tpe_below_estimator(sampler: TPESampler, study: optuna.Study, search_space: dict[str, BaseDistribution],
                        trials: list[FrozenTrial]) -> _ParzenEstimator:
    """The 'below' trials' estimator, built by Optuna (``_build_parzen_estimator``): it draws the candidates."""
    return sampler._build_parzen_estimator(study, search_space, trials, handle_below=True)


def pruned_trial_score(trial: FrozenTrial, study: optuna.Study) -> tuple[float, float]:
    """How TPE ranks a pruned trial for the 'below' group (``_get_pruned_trial_score``, lower first)."""
    return _tpe._get_pruned_trial_score(trial, study)


def parzen_weights(weights: Callable[[int], np.ndarray], n: int) -> np.ndarray:
    """The weights of n observations, checked as Optuna checks them (``_ParzenEstimator._call_weights_func``)."""
    return _ParzenEstimator._call_weights_func(weights, n)
