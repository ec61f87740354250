"""An RDB storage that rides out a database restart: Optuna's ``RDBStorage``, wrapped, every call retried.

``ResilientStorage`` wraps a storage as Optuna's own ``_CachedStorage`` wraps ``RDBStorage`` (and
it wraps exactly that pair: Optuna's read cache over the ``RDBStorage``). Each method calls the
wrapped one through ``retry_call``: a transient connection error (the database restarting, a
network blip) is retried with backoff for ``retry_seconds``, then ``StorageUnavailable`` says so,
with the password masked. Nothing of Optuna's is patched.
"""
from __future__ import annotations

import time
from typing import Callable, Container, Hashable, Sequence, TypeVar

import optuna
from optuna.distributions import BaseDistribution
from optuna.exceptions import UpdateFinishedTrialError
from optuna.storages import BaseStorage, RDBStorage
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from nas.cluster.lease import LeaseWatch, StaleCallback, confirm_seconds
from nas.cluster.optuna_private import (
    BaseHeartbeat,
    FrozenStudy,
    JSONValue,
    cached,
    running_heartbeats,
    stale_trial_ids,
)
from nas.cluster.retry import StorageUnavailable, retry_call
from nas.config import mask_url

__all__ = ["ResilientStorage"]

T = TypeVar("T")


class ResilientStorage(BaseStorage, BaseHeartbeat):
    """``rdb`` behind Optuna's read cache, each call retried through an outage; leases as a fallback.

    A write whose commit reached the database before the connection broke is harmless to repeat:
    attribute writes are upserts, and finishing a trial twice is recognized. Running trials that
    never recorded a heartbeat (their worker died right after creating them) are stale once this
    worker has seen them without one for the grace period; a heartbeat found overdue is looked at
    again a few seconds later before its trial is failed (``LeaseWatch.still``).

    Args:
        rdb: the storage, with ``heartbeat_interval`` and ``grace_period`` set.
        retry_seconds: how long a call is retried; 0 turns retrying off.
        on_stale: called with each trial this worker failed as stale (e.g. ``RetryStaleTrial``).
    """

    def __init__(self, rdb: RDBStorage, retry_seconds: float, on_stale: StaleCallback | None = None) -> None:
        self.rdb, self.retry_seconds, self._on_stale = rdb, retry_seconds, on_stale
        self.url = mask_url(rdb.url)  # printable
        self._inner = cached(rdb)
        self.grace_period: int = rdb.grace_period or 2 * (rdb.heartbeat_interval or 30)
        self._watch = LeaseWatch(self.grace_period)

    def _call(self, fn: Callable[[], T]) -> T:
        return retry_call(fn, self.retry_seconds, self.url)

    # -- studies ------------------------------------------------------------------------------------
    def create_new_study(self, directions: Sequence[StudyDirection], study_name: str | None = None) -> int:
        return self._call(lambda: self._inner.create_new_study(directions, study_name))

    def delete_study(self, study_id: int) -> None:
        self._call(lambda: self._inner.delete_study(study_id))

    def set_study_user_attr(self, study_id: int, key: str, value: JSONValue) -> None:
        self._call(lambda: self._inner.set_study_user_attr(study_id, key, value))

    def set_study_system_attr(self, study_id: int, key: str, value: JSONValue) -> None:
        self._call(lambda: self._inner.set_study_system_attr(study_id, key, value))

    def get_study_id_from_name(self, study_name: str) -> int:
        return self._call(lambda: self._inner.get_study_id_from_name(study_name))

    def get_study_name_from_id(self, study_id: int) -> str:
        return self._call(lambda: self._inner.get_study_name_from_id(study_id))

    def get_study_directions(self, study_id: int) -> list[StudyDirection]:
        return self._call(lambda: self._inner.get_study_directions(study_id))

    def get_study_user_attrs(self, study_id: int) -> dict[str, JSONValue]:
        return self._call(lambda: self._inner.get_study_user_attrs(study_id))

    def get_study_system_attrs(self, study_id: int) -> dict[str, JSONValue]:
        return self._call(lambda: self._inner.get_study_system_attrs(study_id))

    def get_all_studies(self) -> list[FrozenStudy]:
        return self._call(self._inner.get_all_studies)

    # -- trials -------------------------------------------------------------------------------------
    def create_new_trial(self, study_id: int, template_trial: FrozenTrial | None = None) -> int:
        return self._call(lambda: self._inner.create_new_trial(study_id, template_trial))

    def set_trial_param(self, trial_id: int, param_name: str, param_value_internal: float,
                        distribution: BaseDistribution) -> None:
        self._call(lambda: self._inner.set_trial_param(trial_id, param_name, param_value_internal, distribution))

    def get_trial_id_from_study_id_trial_number(self, study_id: int, trial_number: int) -> int:
        return self._call(lambda: self._inner.get_trial_id_from_study_id_trial_number(study_id, trial_number))

    def set_trial_state_values(self, trial_id: int, state: TrialState, values: Sequence[float] | None = None) -> bool:
        attempts = [0]

        def attempt() -> bool:
            attempts[0] += 1
            try:
                return self._inner.set_trial_state_values(trial_id, state, values)
            except UpdateFinishedTrialError:
                if attempts[0] > 1 and state.is_finished() and self.get_trial(trial_id).state == state:
                    return True  # the first attempt committed; only its answer was lost
                raise
        return self._call(attempt)

    def set_trial_intermediate_value(self, trial_id: int, step: int, intermediate_value: float) -> None:
        self._call(lambda: self._inner.set_trial_intermediate_value(trial_id, step, intermediate_value))

    def set_trial_user_attr(self, trial_id: int, key: str, value: JSONValue) -> None:
        self._call(lambda: self._inner.set_trial_user_attr(trial_id, key, value))

    def set_trial_system_attr(self, trial_id: int, key: str, value: JSONValue) -> None:
        self._call(lambda: self._inner.set_trial_system_attr(trial_id, key, value))

    def get_trial(self, trial_id: int) -> FrozenTrial:
        return self._call(lambda: self._inner.get_trial(trial_id))

    def get_all_trials(self, study_id: int, deepcopy: bool = True,
                       states: Container[TrialState] | None = None) -> list[FrozenTrial]:
        return self._call(lambda: self._inner.get_all_trials(study_id, deepcopy, states))

    def get_best_trial(self, study_id: int) -> FrozenTrial:
        return self._call(lambda: self._inner.get_best_trial(study_id))

    def remove_session(self) -> None:
        self._inner.remove_session()

    # -- heartbeats (BaseHeartbeat) -----------------------------------------------------------------
    def record_heartbeat(self, trial_id: int) -> None:
        # runs in the heartbeat thread: a storage that is gone for good is reported by the main thread
        try:
            self._call(lambda: self.rdb.record_heartbeat(trial_id))
        except StorageUnavailable:
            optuna.logging.get_logger(__name__).debug("no heartbeat for trial id %d: storage unreachable", trial_id)

    def lease_tokens(self, study_id: int) -> dict[int, Hashable]:
        """``{trial id: last heartbeat}`` of the study's running trials (None: none recorded)."""
        return dict(self._call(lambda: running_heartbeats(self.rdb, study_id)))

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        late = self._call(lambda: stale_trial_ids(self.rdb, study_id))  # by the database's clock
        overdue = self._watch.stale(self.lease_tokens(study_id), late)
        if overdue:
            time.sleep(confirm_seconds(self.rdb.heartbeat_interval or 0, self.grace_period or 0))
            overdue = self._watch.still(overdue, self.lease_tokens(study_id))
        return sorted(overdue)

    def get_heartbeat_interval(self) -> int | None:
        return self.rdb.heartbeat_interval

    def get_heartbeat_stale_trial_callback(self) -> StaleCallback | None:
        return self._on_stale

    get_failed_trial_callback = get_heartbeat_stale_trial_callback  # its name before Optuna 4.9
