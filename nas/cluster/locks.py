"""A lock per study, shared by every worker of the study, for short check-then-write steps.

Optuna's storages have no compare-and-set, so "is anyone training this architecture? if not,
I am" needs a lock around the read and the write. It is taken where the study lives:

- PostgreSQL: a session advisory lock (``pg_advisory_lock``) on a dedicated connection; a worker
  that dies releases it with its connection.
- MySQL: ``GET_LOCK`` (released with the connection, likewise).
- journal file: an exclusive symlink next to the journal (Optuna's ``JournalFileSymlinkLock``,
  which works on NFS); one left by a killed worker is broken after 30 s.
- SQLite: ``flock`` on a file next to the database.
- in-memory: a thread lock.
"""
from __future__ import annotations

import hashlib
import threading
from pathlib import Path
from types import TracebackType
from typing import Callable

import optuna
from optuna.storages import BaseStorage

from nas.cluster.optuna_private import journal_file_path, uncached

__all__ = ["StudyLock"]

_THREAD_LOCKS: dict[str, threading.Lock] = {}


def _key(study_name: str) -> int:
    """A signed 64-bit advisory-lock key for the study."""
    return int.from_bytes(hashlib.sha256(f"nas-study:{study_name}".encode()).digest()[:8], "big", signed=True)


class StudyLock:
    """A reusable, non-reentrant lock named after ``study_name`` in ``storage`` (see the module docstring)."""

    def __init__(self, storage: BaseStorage, study_name: str) -> None:
        from nas.cluster.rdb import ResilientStorage

        self.storage, self.study_name = storage, study_name
        self._release: Callable[[], None] | None = None
        self._retry_seconds, self._url = 0.0, ""
        backend = storage.rdb if isinstance(storage, ResilientStorage) else uncached(storage)
        if isinstance(storage, ResilientStorage):
            self._retry_seconds, self._url = storage.retry_seconds, storage.url
        if isinstance(backend, optuna.storages.RDBStorage):
            self._rdb = backend
            self._kind = backend.engine.dialect.name  # postgresql, mysql, sqlite
        elif isinstance(backend, optuna.storages.JournalStorage):
            self._kind = "journal"
            self._journal_path = journal_file_path(backend)
        else:
            self._kind = "thread"

    def __enter__(self) -> "StudyLock":
        acquire = {"postgresql": self._acquire_sql, "mysql": self._acquire_sql, "sqlite": self._acquire_sqlite,
                   "journal": self._acquire_journal}.get(self._kind, self._acquire_thread)
        self._release = acquire()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        release, self._release = self._release, None
        if release is not None:
            release()

    def _acquire_sql(self) -> Callable[[], None]:
        import sqlalchemy as sa

        from nas.cluster.retry import retry_call

        key, rdb = _key(self.study_name), self._rdb

        def connect() -> sa.Connection:
            conn = rdb.engine.connect()
            try:
                if self._kind == "postgresql":
                    conn.execute(sa.text("SELECT pg_advisory_lock(:k)"), {"k": key})
                else:
                    conn.execute(sa.text("SELECT GET_LOCK(:k, -1)"), {"k": str(key)})
            except BaseException:
                conn.close()
                raise
            return conn

        conn = retry_call(connect, self._retry_seconds, self._url)

        def release() -> None:
            try:  # a broken connection has released the lock already
                unlock = "SELECT pg_advisory_unlock(:k)" if self._kind == "postgresql" else "SELECT RELEASE_LOCK(:k)"
                conn.execute(sa.text(unlock), {"k": key if self._kind == "postgresql" else str(key)})
                conn.rollback()
            except Exception:
                conn.invalidate()
            finally:
                conn.close()
        return release

    def _acquire_sqlite(self) -> Callable[[], None]:
        import fcntl

        db = self._rdb.engine.url.database
        path = f"{db}.nas-lock" if db and db != ":memory:" else None
        if path is None:
            return self._acquire_thread()
        f = open(path, "a+")
        fcntl.flock(f, fcntl.LOCK_EX)

        def release() -> None:
            fcntl.flock(f, fcntl.LOCK_UN)
            f.close()
        return release

    def _acquire_journal(self) -> Callable[[], None]:
        if self._journal_path is None:  # a journal without a file (Redis): one process's threads only
            return self._acquire_thread()
        from optuna.storages.journal import JournalFileSymlinkLock

        from nas.cluster.journal import write_error

        target = Path(f"{self._journal_path}.nas-lock")
        lock = JournalFileSymlinkLock(str(target), grace_period=30)
        try:  # a full disk may refuse even these
            target.touch(exist_ok=True)  # the symlink's target must exist for the stale-lock check
            lock.acquire()
        except OSError as exc:
            raise write_error(self._journal_path, exc, "lock") from None
        return lock.release

    def _acquire_thread(self) -> Callable[[], None]:
        lock = _THREAD_LOCKS.setdefault(f"{id(self.storage)}:{self.study_name}", threading.Lock())
        lock.acquire()
        return lock.release
