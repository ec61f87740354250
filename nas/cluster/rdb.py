"""An RDB storage that rides out a database restart: Optuna's ``RDBStorage``, wrapped, every call retried.

``ResilientStorage`` wraps a storage as Optuna's own ``_CachedStorage`` wraps ``RDBStorage`` (and
it wraps exactly that pair: Optuna's read cache over the ``RDBStorage``). Each method calls the
wrapped one through ``retry_call``: a transient connection error (the database restarting, a
network blip) is retried with backoff for ``retry_seconds``, then ``StorageUnavailable`` says so,
with the password masked. Nothing of Optuna's is patched.
"""
from __future__ import annotations

import functools
import time
from typing import Callable, Concatenate, Hashable, ParamSpec, Sequence, TypeVar

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.storages import BaseStorage, RDBStorage
from optuna.trial import TrialState

from nas.cluster.lease import LeaseWatch, StaleCallback, confirm_seconds
from nas.cluster.optuna_private import BaseHeartbeat, cached, running_heartbeats, stale_trial_ids
from nas.cluster.retry import StorageUnavailable, retry_call
from nas.config import mask_url

__all__ = ["ResilientStorage"]

T = TypeVar("T")
P = ParamSpec("P")


def _retried(method: Callable[Concatenate[BaseStorage, P], T]) -> Callable[Concatenate[ResilientStorage, P], T]:
    """``method`` of Optuna's ``BaseStorage`` (its name, signature and docstring), as a method of
    ``ResilientStorage`` that calls the wrapped storage's own through ``retry_call``."""
    name = method.__name__

    @functools.wraps(method, updated=())  # not its __dict__: that marks it abstract
    def retried(self: ResilientStorage, /, *args: P.args, **kwargs: P.kwargs) -> T:
        return self._call(lambda: getattr(self._inner, name)(*args, **kwargs))

    retried.__qualname__ = f"ResilientStorage.{name}"
    return retried


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

    # -- Optuna's storage API: each method the wrapped one's, called through retry_call ------------
    # studies
    create_new_study = _retried(BaseStorage.create_new_study)
    delete_study = _retried(BaseStorage.delete_study)
    set_study_user_attr = _retried(BaseStorage.set_study_user_attr)
    set_study_system_attr = _retried(BaseStorage.set_study_system_attr)
    get_study_id_from_name = _retried(BaseStorage.get_study_id_from_name)
    get_study_name_from_id = _retried(BaseStorage.get_study_name_from_id)
    get_study_directions = _retried(BaseStorage.get_study_directions)
    get_study_user_attrs = _retried(BaseStorage.get_study_user_attrs)
    get_study_system_attrs = _retried(BaseStorage.get_study_system_attrs)
    get_all_studies = _retried(BaseStorage.get_all_studies)
    # trials
    create_new_trial = _retried(BaseStorage.create_new_trial)
    set_trial_param = _retried(BaseStorage.set_trial_param)
    get_trial_id_from_study_id_trial_number = _retried(BaseStorage.get_trial_id_from_study_id_trial_number)
    set_trial_intermediate_value = _retried(BaseStorage.set_trial_intermediate_value)
    set_trial_user_attr = _retried(BaseStorage.set_trial_user_attr)
    set_trial_system_attr = _retried(BaseStorage.set_trial_system_attr)
    get_trial = _retried(BaseStorage.get_trial)
    get_all_trials = _retried(BaseStorage.get_all_trials)
    get_best_trial = _retried(BaseStorage.get_best_trial)

    def set_trial_state_values(self, trial_id: int, state: TrialState, values: Sequence[float] | None = None) -> bool:
        """Retried too; a repeat that finds the trial finished in ``state`` is the lost answer of a commit."""
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
