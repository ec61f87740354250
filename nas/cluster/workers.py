"""Many workers on one study: slots, the optimize loop that survives faults, and DDP trials.

A worker is one ``nas-search`` process (or one ``torchrun`` group of them: rank 0 talks to the
study, every rank trains). Workers started independently on the same storage and study name
cooperate through the study alone:

- ``register_worker`` gives each live worker a distinct slot (its sampler seed is
  ``seed + 7919 * slot``), preferring the launcher's index (SLURM array task, Kubernetes
  completion index) when it is free;
- ``optimize`` runs trials until the study holds its trials, carries on when another worker
  failed this worker's trial as stale, and before leaving waits until every other running
  trial either shows a heartbeat (its worker will finish it) or is failed and queued again;
"""
from __future__ import annotations

import logging
import os
import socket
import time
import warnings
from contextlib import AbstractContextManager
from typing import Callable, Hashable, Iterator, Sequence

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import FrozenTrial, TrialState

from nas.cluster.lease import Leased, RetryStaleTrial, confirm_seconds
from nas.cluster.optuna_private import (
    heartbeat_enabled,
    set_study_system_attr,
    storage_of,
    study_id,
    study_system_attrs,
)
from nas.cluster.retry import StorageUnavailable

__all__ = ["launcher_index", "register_worker", "release_worker", "settle", "queued_retries", "optimize",
           "study_health", "lost_trials", "requeue_interrupted"]

log = logging.getLogger(__name__)

_SLOT_ATTR = "nas:worker:{}"
_LAUNCHER_VARS = ("NAS_WORKER_INDEX", "SLURM_ARRAY_TASK_ID", "SLURM_PROCID", "JOB_COMPLETION_INDEX")


def launcher_index() -> int | None:
    """This worker's index from its launcher (SLURM array task or process id, Kubernetes indexed job), if any."""
    for var in _LAUNCHER_VARS:
        if os.environ.get(var, "").isdigit():
            return int(os.environ[var])
    return None


def _pid_alive(pid: object) -> bool:
    try:
        os.kill(int(pid), 0)  # type: ignore[call-overload]
    except (OSError, TypeError, ValueError):
        return False
    return True


def register_worker(study: optuna.Study, lock: AbstractContextManager[object]) -> int:
    """Take the lowest free worker slot of ``study`` (the launcher's index first, if free).

    A slot is free when never taken, released, or held by a dead process on this host. Slots
    of workers killed on other hosts stay taken: later workers get higher ones, still distinct.
    """
    host, pid = socket.gethostname(), os.getpid()
    with lock:
        attrs = study_system_attrs(study)

        def free(k: int) -> bool:
            held = attrs.get(_SLOT_ATTR.format(k))
            if not isinstance(held, dict):
                return not held
            return bool(held.get("ended")) or (held.get("host") == host and not _pid_alive(held.get("pid")))

        preferred = launcher_index()
        if preferred is not None and free(preferred):
            slot = preferred
        else:  # at most len(attrs) slots are taken
            slot = next(k for k in range(len(attrs) + 1) if free(k))
        set_study_system_attr(study, _SLOT_ATTR.format(slot), {"host": host, "pid": pid, "started": time.time()})
    return slot


def release_worker(study: optuna.Study, slot: int) -> None:
    """Mark ``slot`` free again (best effort: a storage that is gone keeps it taken)."""
    key = _SLOT_ATTR.format(slot)
    try:
        held = study_system_attrs(study).get(key) or {}
        if isinstance(held, dict) and held.get("pid") == os.getpid() and held.get("host") == socket.gethostname():
            set_study_system_attr(study, key, {**held, "ended": time.time()})
    except Exception as exc:  # leaving anyway
        log.debug("could not release worker slot %d: %s", slot, exc)


def settle(study: optuna.Study) -> None:
    """Wait until each running trial shows a heartbeat or is failed as stale (and queued again).

    Called by a worker before it leaves: a trial left running by a killed worker is then never
    left behind, even by the last worker standing. Takes at most one grace period plus four
    heartbeats (two of them to confirm a verdict), and no time when nothing else runs.
    """
    storage = storage_of(study)
    if not heartbeat_enabled(storage) or not isinstance(storage, Leased):
        return
    interval = storage.get_heartbeat_interval() or 1
    grace = storage.grace_period or 2 * interval
    deadline = time.monotonic() + grace + 2 * interval + 1 + confirm_seconds(interval, grace)
    first: dict[int, Hashable] | None = None
    while True:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)
        tokens = storage.lease_tokens(study_id(study))
        if first is None:
            first = dict(tokens)
            if tokens:
                log.info("waiting for a heartbeat from %d running trial(s) of other workers", len(tokens))
        missing = object()
        pending = [i for i, token in tokens.items() if first.get(i, missing) == token]
        if not pending or time.monotonic() > deadline:
            return
        time.sleep(min(1.0, interval / 2))


def queued_retries(study: optuna.Study) -> int:
    """Retries of lost trials waiting for a worker (``nas.cluster.lease.RetryStaleTrial``)."""
    return sum("retry_of" in t.user_attrs for t in study.get_trials(deepcopy=False, states=(TrialState.WAITING,)))


def optimize(study: optuna.Study, objective: Callable[[optuna.Trial], float | Sequence[float]],
             done: Callable[[optuna.Study], bool], timeout: float | None,
             callbacks: Sequence[Callable[[optuna.Study, FrozenTrial], None]],
             catch: tuple[type[Exception], ...]) -> None:
    """``study.optimize`` until ``done(study)`` or ``timeout``, surviving other workers' faults.

    A trial lost with its worker was in flight when it died: its queued retry runs even after
    the study is done. A trial of this worker that another worker failed as stale (missed
    heartbeats: a stall, a long storage outage) cannot be finished (``UpdateFinishedTrialError``,
    Optuna's "Cannot tell a FAIL trial", or its "Should not reach" when the trial was failed between
    the end of its objective and its tell); its retry is queued already, so this worker carries
    on. Before returning (except on timeout), ``settle``.

    Raises:
        nas.cluster.storage.StorageUnavailable: the storage stayed unreachable for its retry window.
        KeyboardInterrupt: Ctrl-C or SIGTERM (the running trial is failed first).
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    settled = False
    while True:
        remaining = None if deadline is None else deadline - time.monotonic()
        if remaining is not None and remaining <= 0:
            return
        if done(study) and not queued_retries(study):
            if settled:
                return
            settle(study)  # may fail stale trials and queue their retries: look again
            settled = True
            continue
        settled = False
        try:
            study.optimize(objective, timeout=remaining, catch=catch, callbacks=list(callbacks))
        except Exception as exc:  # Optuna may mask a lost storage while failing the trial (UnboundLocalError)
            lost = next((e for e in _chain(exc) if isinstance(e, StorageUnavailable)), None)
            if lost is not None:
                raise lost from None
            if not any(_failed_elsewhere(e) for e in _chain(exc)):
                raise
            log.warning("a trial of this worker was failed as stale by another worker (missed heartbeats: %s); "
                        "its retry is queued, carrying on", next(e for e in _chain(exc) if _failed_elsewhere(e)))


def _chain(exc: BaseException | None) -> Iterator[BaseException]:
    """``exc`` and what caused it (at most 10 deep)."""
    for _ in range(10):
        if exc is None:
            return
        yield exc
        exc = exc.__cause__ or exc.__context__


def _failed_elsewhere(exc: BaseException) -> bool:
    """Whether ``exc`` says the trial was finished by someone else (another worker failed it as stale)."""
    return isinstance(exc, UpdateFinishedTrialError) or (isinstance(exc, ValueError)
                                                         and str(exc).startswith("Cannot tell a"))


def study_health(study: optuna.Study) -> dict[str, int]:
    """What a cluster run must leave behind, as counts (all but ``trained`` and ``trials`` should be 0 at the end).

    ``trained``: finished trials that count toward the budget; ``running``: trials still RUNNING;
    ``queued_retries``: retries of lost trials not run yet; ``duplicated``: architectures trained by
    more than one finished trial; ``lost``: trials that failed with their worker mid-training
    and have no finished retry (a trial that diverged has a ``reason`` and is not lost).
    """
    from nas.cluster.trials import counted

    trials = study.get_trials(deepcopy=False)
    archs: dict[str, int] = {}
    for t in trials:
        if counted(t):
            archs[t.user_attrs.get("arch", "")] = archs.get(t.user_attrs.get("arch", ""), 0) + 1
    return {"trials": len(trials), "trained": sum(archs.values()),
            "running": sum(t.state == TrialState.RUNNING for t in trials),
            "queued_retries": sum(t.state == TrialState.WAITING and "retry_of" in t.user_attrs for t in trials),
            "duplicated": sum(n > 1 for n in archs.values()), "lost": len(lost_trials(trials))}


def lost_trials(trials: Sequence[FrozenTrial]) -> list[FrozenTrial]:
    """Trials that failed with their worker mid-training and have no finished retry.

    A retry names the first failed trial of its series (``retry_of``) and lists every one in
    Optuna's ``retry_history``: a retry that failed in turn is retried by the next one in the
    series, not lost, so a series whose last retry failed too counts once. A trial that diverged
    has a ``reason`` and is not lost either.
    """
    retried: set[int] = set()
    for t in trials:
        if t.state.is_finished():
            retried.update(t.system_attrs.get("retry_history", []))
            if isinstance(t.user_attrs.get("retry_of"), int):
                retried.add(t.user_attrs["retry_of"])
    return [t for t in trials if t.state == TrialState.FAIL and t.user_attrs.get("trained")
            and "reason" not in t.user_attrs and t.number not in retried]


def requeue_interrupted(study: optuna.Study, worker: str, retry: RetryStaleTrial) -> None:
    """Queue again the trial this worker was training when interrupted (preemption loses no work).

    ``retry`` is a ``nas.cluster.lease.RetryStaleTrial``; ``worker`` the ``Objective``'s worker label.
    """
    try:
        trials = study.get_trials(deepcopy=False)
        mine = [t for t in trials if t.user_attrs.get("worker") == worker]
        last = max(mine, key=lambda t: t.number) if mine else None
        if last is not None and last.state == TrialState.FAIL and last.user_attrs.get("trained") \
                and "reward" not in last.user_attrs and retry.queue(study, last):
            log.info("trial %d was interrupted while training: queued again", last.number)
    except Exception as exc:  # interrupted while the storage is gone: heartbeats cover it
        log.debug("could not queue the interrupted trial again: %s", exc)
