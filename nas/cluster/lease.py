"""Leases on running trials, so a killed worker's trial is failed and retried by the others.

Optuna's RDB storages record a heartbeat per running trial and fail the trials whose heartbeat
is older than a grace period (database time). A journal file has no heartbeat; this module gives
it one: ``LeasedJournalStorage`` renews a lease on each running trial (a trial system attribute,
``nas:lease``, rewritten every ``heartbeat`` seconds by the worker's heartbeat thread), and a
trial whose lease a worker has seen unchanged for ``grace`` seconds of its own clock is stale.
Watching for change rather than comparing timestamps keeps it right across machines whose
clocks disagree (a shared filesystem has no server clock to ask). A lease found overdue is looked
at again ``confirm_seconds`` later (two heartbeats) before its trial is failed: on a busy machine
every process may stall at once, and a live worker's lease moves on as soon as it runs again.

Both kinds plug into Optuna's own machinery (``BaseHeartbeat``): ``study.optimize`` renews the
lease while a trial runs and fails stale trials before each new one, and
``RetryStaleTrial`` queues a fresh copy of each failed trial for a surviving worker.
"""
from __future__ import annotations

import copy
import logging
import threading
import time
import warnings
from typing import Callable, Container, Hashable, Iterable, Protocol, runtime_checkable

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.storages.journal import BaseJournalBackend
from optuna.trial import FrozenTrial, TrialState

try:  # Optuna >= 4.9
    from optuna.storages import RetryHeartbeatStaleTrialCallback as _RetryBase
except ImportError:  # pragma: no cover - older Optuna
    from optuna.storages import RetryFailedTrialCallback as _RetryBase

from nas.cluster.optuna_private import BaseHeartbeat, GroupedJournalStorage, trial_id
from nas.cluster.retry import StorageUnavailable

__all__ = ["LEASE_ATTR", "CLAIM_ATTR", "LeaseWatch", "Leased", "LeasedJournalStorage", "RetryStaleTrial",
           "confirm_seconds"]

log = logging.getLogger(__name__)

LEASE_ATTR = "nas:lease"  # trial system attribute renewed by the heartbeat (journal storage)
CLAIM_ATTR = "nas:claim"  # trial system attribute: this trial trains its architecture (see controller)
_KEEP_USER_ATTRS = ("seed_arch",)  # what a retry inherits; results and claims are the failed trial's own


StaleCallback = Callable[[optuna.Study, FrozenTrial], None]


def confirm_seconds(heartbeat: float, grace: float) -> float:
    """How long an overdue lease is watched again before its trial is failed (see ``LeaseWatch.still``)."""
    return max(0.0, min(2.0 * heartbeat, grace - heartbeat))


class LeaseWatch:
    """Which running trials have shown no sign of life for ``grace`` seconds of this process's clock."""

    def __init__(self, grace: float) -> None:
        self.grace = grace
        self._seen: dict[int, tuple[Hashable, float]] = {}  # trial id -> (token, when it last changed)

    def stale(self, tokens: dict[int, Hashable], late: Iterable[int] = ()) -> list[int]:
        """Update with the current ``{trial id: lease token}`` of the running trials; the stale ids.

        A token is anything that changes at every renewal (None: never renewed). A trial seen
        for the first time is fresh: a worker that just started waits ``grace`` before reaping.
        ``late``: trials an authority (the database's clock) finds overdue: stale even at first sight.
        """
        now, late = time.monotonic(), set(late)
        seen, stale = {}, []
        for tid, token in tokens.items():
            last = self._seen.get(tid)
            seen[tid] = (token, now) if last is None or last[0] != token else last
            if tid in late or (last is not None and seen[tid] is last and now - last[1] > self.grace):
                stale.append(tid)
        self._seen = seen
        return stale

    def still(self, overdue: list[int], tokens: dict[int, Hashable]) -> list[int]:
        """Those of ``overdue`` that are still running with the token they had when found overdue.

        A verdict takes two looks: on a busy machine every process may stall at once (swapping, a
        starved CPU), and the first worker to wake finds every lease overdue. Looked at again a few
        heartbeats later, a live worker's lease has moved on; only a dead one's has not.
        """
        return [tid for tid in overdue if tid in tokens and tid in self._seen and tokens[tid] == self._seen[tid][0]]


@runtime_checkable
class Leased(Protocol):
    """A storage whose running trials carry leases (``LeasedJournalStorage``, ``nas.cluster.rdb.ResilientStorage``)."""

    grace_period: int | None

    def lease_tokens(self, study_id: int) -> dict[int, Hashable]: ...

    def get_heartbeat_interval(self) -> int | None: ...


class LeasedJournalStorage(GroupedJournalStorage, BaseHeartbeat):
    """``JournalStorage`` with a heartbeat: leases on running trials, stale ones failed and retried.

    Its ``get_all_trials`` reads only the trials from the first one not finished on (``_Head``):
    Optuna and nas-search list the study's trials ~7 times a trial, each a Python loop over all of
    them in ``JournalStorage`` (at 10,000 trials, most of the storage's time). Its writes are grouped
    (``GroupedJournalStorage``): a trial's parameters and user attributes go to the file with its next
    other write or read, one fsynced append instead of one each.

    Args:
        backend: the journal backend (``JournalFileBackend`` on a local or shared filesystem).
        heartbeat: seconds between lease renewals of a running trial.
        grace: seconds without a renewal after which a running trial is stale (> ``heartbeat``).
        on_stale: called with each trial this worker failed as stale (e.g. ``RetryStaleTrial``).
    """

    def __init__(self, backend: BaseJournalBackend, heartbeat: int, grace: int,
                 on_stale: StaleCallback | None = None) -> None:
        if not 0 < heartbeat < grace:
            raise ValueError(f"need 0 < heartbeat < grace, but got ({heartbeat=}, {grace=})")
        super().__init__(backend)
        self.heartbeat_interval, self.grace_period = heartbeat, grace
        self._on_stale = on_stale
        self._watch = LeaseWatch(grace)
        self._heads: dict[int, _Head] = {}
        self._heads_lock = threading.Lock()

    def get_all_trials(self, study_id: int, deepcopy: bool = True,
                       states: Container[TrialState] | None = None) -> list[FrozenTrial]:
        """``JournalStorage.get_all_trials``, the same trial objects, reading only the trials from the first
        one not finished on (``_Head``): ``JournalStorage`` looks at every trial of the study at each call."""
        try:
            key = None if states is None else frozenset(states)  # type: ignore[call-overload]
        except TypeError:  # a container that cannot be listed
            return super().get_all_trials(study_id, deepcopy, states)
        with self._heads_lock:
            head = self._heads.setdefault(study_id, _Head())
            tail = self._trials_from(study_id, len(head.trials))
            if tail is None:  # a long tail, or no trial yet: one full read (it raises for a study not there)
                tail = super().get_all_trials(study_id, deepcopy=False)[len(head.trials):]
            trials = head.take(tail, key)
        return copy.deepcopy(trials) if deepcopy else trials

    def _trials_from(self, study_id: int, number: int, most: int = 32) -> list[FrozenTrial] | None:
        """The study's trials numbered ``number`` and up (numbers have no gaps); None past ``most`` or at none."""
        found: list[FrozenTrial] = []
        while len(found) < most:
            try:
                trial_id = self.get_trial_id_from_study_id_trial_number(study_id, number + len(found))
            except KeyError:
                if number + len(found) == 0:
                    return None
                self.get_study_name_from_id(study_id)  # KeyError for a study deleted since
                return found
            found.append(self.get_trial(trial_id))
        return None

    def lease_tokens(self, study_id: int) -> dict[int, Hashable]:
        """``{trial id: lease}`` of the study's running trials (None: no lease yet)."""
        running = self.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,))
        return {trial_id(t): t.system_attrs.get(LEASE_ATTR) for t in running}

    def record_heartbeat(self, trial_id: int) -> None:
        # runs in the heartbeat thread: a journal that cannot be written is reported by the main thread
        try:
            self.set_trial_system_attr(trial_id, LEASE_ATTR, round(time.time(), 3))
        except UpdateFinishedTrialError:  # another worker failed it as stale; its owner finds out at tell
            log.debug("trial id %d finished before its lease was renewed", trial_id)
        except StorageUnavailable as exc:
            log.debug("no lease renewal for trial id %d: %s", trial_id, exc)

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        overdue = self._watch.stale(self.lease_tokens(study_id))
        if overdue:
            time.sleep(confirm_seconds(self.heartbeat_interval, self.grace_period))
            overdue = self._watch.still(overdue, self.lease_tokens(study_id))
        return overdue

    def get_heartbeat_interval(self) -> int | None:
        return self.heartbeat_interval

    def get_heartbeat_stale_trial_callback(self) -> StaleCallback | None:
        return self._on_stale

    get_failed_trial_callback = get_heartbeat_stale_trial_callback  # its name before Optuna 4.9

    def __getstate__(self) -> dict[str, object]:
        state = super().__getstate__()
        for name in ("_watch", "_heads", "_heads_lock"):
            state.pop(name, None)
        return state

    def __setstate__(self, state: dict[str, object]) -> None:
        super().__setstate__(state)
        self._watch = LeaseWatch(self.grace_period)
        self._heads, self._heads_lock = {}, threading.Lock()


class _Head:
    """A study's trials below the first one not finished, in number order, and the lists of those in given states.

    A finished trial never changes (the journal refuses to update it), so the head only grows, and
    ``JournalStorage`` keeps giving the same objects for it.
    """

    def __init__(self) -> None:
        self.trials: list[FrozenTrial] = []
        self.in_states: dict[frozenset[TrialState], list[FrozenTrial]] = {}

    def take(self, tail: list[FrozenTrial], states: frozenset[TrialState] | None) -> list[FrozenTrial]:
        """The study's trials (in ``states``) given the ones past the head; the head takes the finished ones first."""
        done = next((i for i, t in enumerate(tail) if not t.state.is_finished()), len(tail))
        if done:
            self.trials.extend(tail[:done])
            for key, kept in self.in_states.items():
                kept.extend(t for t in tail[:done] if t.state in key)
            tail = tail[done:]
        if states is None:
            return self.trials + tail
        if states not in self.in_states:
            self.in_states[states] = [t for t in self.trials if t.state in states]
        return self.in_states[states] + [t for t in tail if t.state in states]


class RetryStaleTrial(_RetryBase):
    """Queue a stale trial again (``RetryHeartbeatStaleTrialCallback``), without its results.

    The retry keeps the parameters (the same architecture) and ``seed_arch``; it drops the failed
    trial's results, ``trained`` flag, claim and lease, which would otherwise make the retry look
    trained, or running elsewhere, before it has started. ``retry_of`` names the first failed trial
    of the series and the system attribute ``retry_history`` every one (Optuna's).
    """

    def __init__(self, max_retry: int | None = 3, grace: float | None = None) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            super().__init__(max_retry=max_retry)
        self.max_retry, self.grace = max_retry, grace

    def queue(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        """Queue a clean copy of ``trial``; False when it was retried ``max_retry`` times already."""
        retries = len(trial.system_attrs.get("retry_history", [])) + 1
        if self.max_retry is not None and retries > self.max_retry:
            return False
        clean = copy.deepcopy(trial)
        clean.user_attrs = {k: v for k, v in trial.user_attrs.items() if k in _KEEP_USER_ATTRS}
        clean.user_attrs["retry_of"] = trial.system_attrs.get("failed_trial", trial.number)
        clean.system_attrs = {k: v for k, v in trial.system_attrs.items() if not k.startswith("nas:")}
        super().__call__(study, clean)
        return True

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        queued = self.queue(study, trial)
        log.log(logging.INFO if queued else logging.WARNING,
                "trial %d lost its worker (no heartbeat for %s s): failed, %s", trial.number,
                f"{self.grace:g}" if self.grace else "the grace period",
                "queued again" if queued else f"not retried (retried {self.max_retry} times already)")
