"""Leases on running trials, so a killed worker's trial is failed and retried by the others.

Optuna's RDB storages record a heartbeat per running trial and fail the trials whose heartbeat
is older than a grace period (database time). A journal file has no heartbeat; this module gives
it one: ``LeasedJournalStorage`` renews a lease on each running trial (a trial system attribute,
``nas:lease``, rewritten every ``heartbeat`` seconds by the worker's heartbeat thread), and a
trial whose lease a worker has seen unchanged for ``grace`` seconds of its own clock is stale.
Watching for change rather than comparing timestamps keeps it right across machines whose
clocks disagree (a shared filesystem has no server clock to ask).

Both kinds plug into Optuna's own machinery (``BaseHeartbeat``): ``study.optimize`` renews the
lease while a trial runs and fails stale trials before each new one, and
``RetryStaleTrial`` queues a fresh copy of each failed trial for a surviving worker.
"""
from __future__ import annotations

import copy
import logging
import time
import warnings
from typing import Any, Callable

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.storages.journal import JournalStorage
from optuna.trial import FrozenTrial, TrialState

try:  # Optuna >= 4.9
    from optuna.storages import RetryHeartbeatStaleTrialCallback as _RetryBase
except ImportError:  # pragma: no cover - older Optuna
    from optuna.storages import RetryFailedTrialCallback as _RetryBase
from optuna.storages._heartbeat import BaseHeartbeat

__all__ = ["LEASE_ATTR", "CLAIM_ATTR", "LeaseWatch", "LeasedJournalStorage", "RetryStaleTrial"]

log = logging.getLogger(__name__)

LEASE_ATTR = "nas:lease"  # trial system attribute renewed by the heartbeat (journal storage)
CLAIM_ATTR = "nas:claim"  # trial system attribute: this trial trains its architecture (see controller)
_KEEP_USER_ATTRS = ("seed_arch",)  # what a retry inherits; results and claims are the failed trial's own


class LeaseWatch:
    """Which running trials have shown no sign of life for ``grace`` seconds of this process's clock."""

    def __init__(self, grace: float) -> None:
        self.grace = grace
        self._seen: dict[int, tuple[Any, float]] = {}  # trial id -> (token, when it last changed)

    def stale(self, tokens: dict[int, Any]) -> list[int]:
        """Update with the current ``{trial id: lease token}`` of the running trials; the stale ids.

        A token is anything that changes at every renewal (None: never renewed). A trial seen
        for the first time is fresh: a worker that just started waits ``grace`` before reaping.
        """
        now = time.monotonic()
        seen, stale = {}, []
        for trial_id, token in tokens.items():
            last = self._seen.get(trial_id)
            if last is None or last[0] != token:
                seen[trial_id] = (token, now)
            else:
                seen[trial_id] = last
                if now - last[1] > self.grace:
                    stale.append(trial_id)
        self._seen = seen
        return stale


class LeasedJournalStorage(JournalStorage, BaseHeartbeat):
    """``JournalStorage`` with a heartbeat: leases on running trials, stale ones failed and retried.

    Args:
        backend: the journal backend (``JournalFileBackend`` on a local or shared filesystem).
        heartbeat: seconds between lease renewals of a running trial.
        grace: seconds without a renewal after which a running trial is stale (> ``heartbeat``).
        on_stale: called with each trial this worker failed as stale (e.g. ``RetryStaleTrial``).
    """

    def __init__(self, backend: Any, heartbeat: int, grace: int,
                 on_stale: Callable[[optuna.Study, FrozenTrial], None] | None = None) -> None:
        if not 0 < heartbeat < grace:
            raise ValueError(f"need 0 < heartbeat < grace, but got ({heartbeat=}, {grace=})")
        super().__init__(backend)
        self.heartbeat_interval, self.grace_period = heartbeat, grace
        self._on_stale = on_stale
        self._watch = LeaseWatch(grace)

    def lease_tokens(self, study_id: int) -> dict[int, Any]:
        """``{trial id: lease}`` of the study's running trials (None: no lease yet)."""
        running = self.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,))
        return {t._trial_id: t.system_attrs.get(LEASE_ATTR) for t in running}

    def record_heartbeat(self, trial_id: int) -> None:
        try:
            self.set_trial_system_attr(trial_id, LEASE_ATTR, round(time.time(), 3))
        except UpdateFinishedTrialError:  # another worker failed it as stale; its owner finds out at tell
            log.debug("trial id %d finished before its lease was renewed", trial_id)

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        return self._watch.stale(self.lease_tokens(study_id))

    def get_heartbeat_interval(self) -> int | None:
        return self.heartbeat_interval

    def get_heartbeat_stale_trial_callback(self) -> Callable[[optuna.Study, FrozenTrial], None] | None:
        return self._on_stale

    def __getstate__(self) -> dict[Any, Any]:
        state = super().__getstate__()
        state.pop("_watch", None)
        return state

    def __setstate__(self, state: dict[Any, Any]) -> None:
        super().__setstate__(state)
        self._watch = LeaseWatch(self.grace_period)


class RetryStaleTrial(_RetryBase):
    """Queue a stale trial again (``RetryHeartbeatStaleTrialCallback``), without its results.

    The retry keeps the parameters (the same architecture) and ``seed_arch``; it drops the failed
    trial's results, ``trained`` flag, claim and lease, which would otherwise make the retry look
    trained, or running elsewhere, before it has started. ``retry_of`` names the failed trial.
    """

    def __init__(self, max_retry: int | None = 3, grace: float | None = None) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            super().__init__(max_retry=max_retry)
        self.grace = grace

    def queue(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        """Queue a clean copy of ``trial``; False when it was retried ``max_retry`` times already."""
        clean = copy.deepcopy(trial)
        clean.user_attrs = {k: v for k, v in trial.user_attrs.items() if k in _KEEP_USER_ATTRS}
        clean.user_attrs["retry_of"] = trial.system_attrs.get("failed_trial", trial.number)
        clean.system_attrs = {k: v for k, v in trial.system_attrs.items() if not k.startswith("nas:")}
        super().__call__(study, clean)
        retries = len(trial.system_attrs.get("retry_history", [])) + 1
        return self._max_retry is None or retries <= self._max_retry

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        queued = self.queue(study, trial)
        log.info("trial %d lost its worker (no heartbeat for %s s): failed, %s", trial.number,
                 f"{self.grace:g}" if self.grace else "the grace period",
                 "queued again" if queued else f"not retried (retried {self._max_retry} times already)")
