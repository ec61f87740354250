"""Opening an Optuna storage from a ``--storage`` value.

Default (no ``--storage``): a journal file, ``<out>/study.journal``. Of Optuna's file-based
storages it has the lowest overhead per trial (an append-only log instead of SQLite's
transactions; see ``bench/bench_controller.py``), and several processes may share it through
its file lock, on one machine or a shared filesystem.

Accepted values: ``journal:PATH`` or a path ending in ``.journal``/``.log`` (journal file),
``sqlite:///PATH``, ``postgresql://...``, ``mysql://...`` (RDB), ``memory`` (in-process).

Every storage but ``memory`` has a heartbeat: a running trial whose worker stops renewing it
(killed, preempted, cut off) is failed after the grace period and queued again for the surviving
workers (``nas.cluster.lease``: Optuna's heartbeat on RDB storages, leases on the journal file).
RDB calls that fail because the database went away are retried with exponential backoff for up
to ``retry_seconds``; after that ``StorageUnavailable`` says so, with any password masked.
Environment overrides (for tests and impatient clusters): ``NAS_HEARTBEAT_SECONDS``,
``NAS_GRACE_SECONDS``, ``NAS_STORAGE_RETRY_SECONDS``.
"""
from __future__ import annotations

import functools
import logging
import os
import threading
import time
import warnings
from pathlib import Path
from typing import Any, Callable, TypeVar

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import TrialState

from nas.config import ConfigError, mask_url
from nas.cluster.lease import LeasedJournalStorage, LeaseWatch, RetryStaleTrial

__all__ = ["HEARTBEAT_SECONDS", "GRACE_SECONDS", "RETRY_SECONDS", "MAX_RETRY", "StorageUnavailable", "is_journal",
           "is_transient", "retry_call", "ResilientRDBStorage", "open_storage"]

log = logging.getLogger(__name__)

HEARTBEAT_SECONDS = 10
GRACE_SECONDS = 30
RETRY_SECONDS = 120
MAX_RETRY = 3
T = TypeVar("T")


class StorageUnavailable(ConfigError):
    """The study storage stayed unreachable for the whole retry window (the study itself is intact)."""


def _env_seconds(name: str, default: int) -> int:
    text = os.environ.get(name)
    if text is None:
        return default
    if not text.isdigit() or int(text) < 1:
        raise ConfigError(f"{name} must be a whole number of seconds >= 1, but got {text!r}")
    return int(text)


def is_journal(storage: str | None) -> bool:
    return storage is None or storage.startswith("journal:") or storage.endswith((".journal", ".log"))


def is_transient(exc: BaseException) -> bool:
    """Whether ``exc`` (or what caused it) is a lost or refused database connection."""
    import sqlalchemy.exc as sa

    seen = 0
    e: BaseException | None = exc
    while e is not None and seen < 10:
        if isinstance(e, StorageUnavailable):
            return False
        if isinstance(e, (sa.OperationalError, sa.InterfaceError)) or getattr(e, "connection_invalidated", False):
            return True
        e, seen = e.__cause__ or e.__context__, seen + 1
    return False


def _first_line(exc: BaseException) -> str:
    text = str(exc.__cause__ or exc).strip()
    return mask_url(text.splitlines()[0] if text else type(exc).__name__)[:200]


class _Outage:
    """One warning when the storage goes away and one when it is back, however many calls wait."""

    def __init__(self) -> None:
        self.lock, self.since, self.waiting = threading.Lock(), None, 0

    def failed(self, what: str, exc: BaseException, seconds: float) -> None:
        with self.lock:
            if self.since is None:
                self.since = time.monotonic()
                log.warning("study storage %s unreachable (%s); retrying for up to %.0f s", what, _first_line(exc),
                            seconds)

    def recovered(self, what: str) -> None:
        with self.lock:
            if self.since is not None:
                log.warning("study storage %s reachable again after %.1f s", what, time.monotonic() - self.since)
                self.since = None


_OUTAGE = _Outage()


def retry_call(fn: Callable[[], T], seconds: float, what: str) -> T:
    """``fn()``, retried with exponential backoff (0.25 s .. 4 s) while it fails transiently.

    Raises:
        StorageUnavailable: still failing after ``seconds``.
    """
    start, delay, failed = time.monotonic(), 0.25, False
    while True:
        try:
            result = fn()
        except Exception as exc:
            if not is_transient(exc):
                raise
            waited = time.monotonic() - start
            if waited >= seconds:
                raise StorageUnavailable(f"the study storage {what} was unreachable for {waited:.0f} s "
                                         f"({_first_line(exc)}); the study is kept: run the same command "
                                         "again to resume") from None
            _OUTAGE.failed(what, exc, seconds)
            failed = True
            time.sleep(min(delay, max(0.0, seconds - waited)))
            delay = min(2 * delay, 4.0)
            continue
        if failed:
            _OUTAGE.recovered(what)
        return result


_RETRIED = (
    "create_new_study", "delete_study", "set_study_user_attr", "set_study_system_attr", "get_study_id_from_name",
    "get_study_name_from_id", "get_study_directions", "get_study_user_attrs", "get_study_system_attrs",
    "get_all_studies", "create_new_trial", "_create_new_trial", "set_trial_param", "_set_trial_param",
    "get_trial_param", "set_trial_intermediate_value", "set_trial_user_attr", "set_trial_system_attr",
    "get_trial_user_attrs", "get_trial_system_attrs", "get_trial_id_from_study_id_trial_number", "get_trial",
    "get_all_trials", "_get_trials", "get_best_trial", "_get_best_trial_id", "_get_stale_trial_ids",
)


def _retrying(method: Callable[..., T]) -> Callable[..., T]:
    @functools.wraps(method)
    def call(self: "ResilientRDBStorage", *args: Any, **kwargs: Any) -> T:
        if not self.retry_seconds:
            return method(self, *args, **kwargs)
        return retry_call(lambda: method(self, *args, **kwargs), self.retry_seconds, mask_url(self.url))
    return call


class ResilientRDBStorage(optuna.storages.RDBStorage):
    """``RDBStorage`` that rides out a database restart or a network blip, with leases as fallback.

    Each call retries transient connection errors for ``retry_seconds`` (``retry_call``); 0 turns
    retrying off. A write whose commit reached the database before the connection broke is
    harmless to repeat: attribute writes are upserts; finishing a trial twice is recognized.
    Running trials that never recorded a heartbeat (their worker died right after creating them)
    are stale once this worker has seen them without one for the grace period.
    """

    def __init__(self, url: str, retry_seconds: float = RETRY_SECONDS, **kwargs: Any) -> None:
        self.retry_seconds = 0.0  # creating the tables and checking the schema: fail fast
        super().__init__(url, **kwargs)
        self.retry_seconds = retry_seconds
        self._never_beat = LeaseWatch(self.grace_period or 2 * (self.heartbeat_interval or 60))

    def set_trial_state_values(self, trial_id: int, state: TrialState, values: Any = None) -> bool:
        attempts = [0]

        def attempt() -> bool:
            attempts[0] += 1
            try:
                return super(ResilientRDBStorage, self).set_trial_state_values(trial_id, state, values)
            except UpdateFinishedTrialError:
                if attempts[0] > 1 and state.is_finished() and self.get_trial(trial_id).state == state:
                    return True  # the first attempt committed; only its answer was lost
                raise
        if not self.retry_seconds:
            return attempt()
        return retry_call(attempt, self.retry_seconds, mask_url(self.url))

    def record_heartbeat(self, trial_id: int) -> None:
        # runs in the heartbeat thread: a storage that is gone for good is reported by the main thread
        try:
            retry_call(lambda: super(ResilientRDBStorage, self).record_heartbeat(trial_id), self.retry_seconds,
                       mask_url(self.url))
        except StorageUnavailable:
            log.debug("no heartbeat for trial id %d: the storage is unreachable", trial_id)

    def lease_tokens(self, study_id: int) -> dict[int, Any]:
        """``{trial id: last heartbeat}`` of the study's running trials (None: none recorded)."""
        import sqlalchemy as sa
        from optuna.storages._rdb import models

        t, h = models.TrialModel.__table__, models.TrialHeartbeatModel.__table__
        select = (sa.select(t.c.trial_id, h.c.heartbeat).select_from(t.outerjoin(h, t.c.trial_id == h.c.trial_id))
                  .where(t.c.study_id == study_id, t.c.state == TrialState.RUNNING))

        def query() -> dict[int, Any]:
            with self.engine.connect() as conn:
                return {trial_id: beat for trial_id, beat in conn.execute(select)}
        return retry_call(query, self.retry_seconds, mask_url(self.url)) if self.retry_seconds else query()

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        stale = super()._get_stale_trial_ids(study_id)
        never = {i: None for i, beat in self.lease_tokens(study_id).items() if beat is None}
        return sorted(set(stale) | set(self._never_beat.stale(never)))


for _name in _RETRIED:  # the class's own override where it has one, else RDBStorage's method
    setattr(ResilientRDBStorage, _name, _retrying(getattr(ResilientRDBStorage, _name)))


def open_storage(storage: str | None, out_dir: Path, heartbeat: int | None = None,
                 grace: int | None = None) -> Any:
    """An Optuna storage object for ``storage`` (see the module docstring).

    Args:
        storage: the ``--storage`` value; None for ``<out_dir>/study.journal``.
        out_dir: the run's output directory.
        heartbeat: seconds between heartbeats of a running trial [``NAS_HEARTBEAT_SECONDS`` or 10].
        grace: seconds without a heartbeat before a trial is failed and retried [``NAS_GRACE_SECONDS`` or 30].

    Raises:
        ConfigError: an unknown scheme or an unreachable database (password masked).
    """
    heartbeat = heartbeat or _env_seconds("NAS_HEARTBEAT_SECONDS", HEARTBEAT_SECONDS)
    grace = grace or _env_seconds("NAS_GRACE_SECONDS", GRACE_SECONDS)
    if grace <= heartbeat:
        raise ConfigError(f"the grace period must exceed the heartbeat interval, but got ({heartbeat=}, {grace=})")
    if storage == "memory":
        return optuna.storages.InMemoryStorage()
    retry = RetryStaleTrial(MAX_RETRY, grace)
    if is_journal(storage):
        path = out_dir / "study.journal" if storage is None else Path(storage.removeprefix("journal:"))
        if not path.parent.is_dir():
            raise ConfigError(f"--storage {storage!r}: directory {str(path.parent)!r} does not exist")
        from optuna.storages.journal import JournalFileBackend
        return LeasedJournalStorage(JournalFileBackend(str(path)), heartbeat, grace, retry)
    scheme = storage.split(":", 1)[0].split("+", 1)[0]
    if scheme not in ("sqlite", "postgresql", "postgres", "mysql"):
        raise ConfigError(
            f"--storage {mask_url(storage)!r}: unknown scheme {scheme!r}, expected journal:PATH, "
            "sqlite:///PATH, postgresql://..., mysql://... or memory")
    if scheme == "postgres":
        storage = "postgresql" + storage[len("postgres"):]
    return _open_rdb(storage, scheme, heartbeat, grace, retry)


def _open_rdb(url: str, scheme: str, heartbeat: int, grace: int, retry: RetryStaleTrial) -> ResilientRDBStorage:
    engine_kwargs: dict[str, Any] = {"pool_pre_ping": True}
    if scheme != "sqlite":
        engine_kwargs["connect_args"] = {"connect_timeout": 10}
    key = "heartbeat_stale_trial_callback" if hasattr(optuna.storages, "RetryHeartbeatStaleTrialCallback") \
        else "failed_trial_callback"
    retry_seconds = _env_seconds("NAS_STORAGE_RETRY_SECONDS", RETRY_SECONDS)
    for attempt in range(3):  # workers starting together race to create the tables: the losers retry
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return ResilientRDBStorage(url, retry_seconds, engine_kwargs=engine_kwargs,
                                           heartbeat_interval=heartbeat, grace_period=grace, **{key: retry})
        except Exception as exc:  # sqlalchemy / driver errors: unreachable, bad credentials, no driver
            racing = not is_transient(exc) and ("already exists" in str(exc) or "IntegrityError" in type(exc).__name__
                                                or "UniqueViolation" in repr(exc.__cause__))
            if racing and attempt < 2:
                time.sleep(0.5 + attempt)
                continue
            raise ConfigError(f"--storage {mask_url(url)!r} cannot be opened: {_first_line(exc)[:300]}") from None
    raise AssertionError("unreachable")
