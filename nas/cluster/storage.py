"""Opening an Optuna storage from a ``--storage`` value: a registry of schemes, each with its opener.

Default (no ``--storage``): a journal file, ``<out>/study.journal``. Of Optuna's file-based
storages it has the lowest overhead per trial (an append-only log instead of SQLite's
transactions; see ``bench/bench_controller.py``), and several processes may share it through
its file lock, on one machine or a shared filesystem.

Accepted values (``STORAGES``; the ``--storage`` help and the errors are made from it):
``journal:PATH`` or a path ending in ``.journal``/``.log`` (journal file), ``sqlite:///PATH``,
``postgresql://...``, ``mysql://...`` (RDB), ``memory`` (in-process).

Every storage but ``memory`` has a heartbeat: a running trial whose worker stops renewing it
(killed, preempted, cut off) is failed after the grace period and queued again for the surviving
workers (``nas.cluster.lease``: Optuna's heartbeat on RDB storages, leases on the journal file).
RDB calls that fail because the database went away are retried with exponential backoff for up
to ``retry_seconds`` (``nas.cluster.rdb``); after that ``StorageUnavailable`` says so, with any
password masked. A journal's torn tail is cut off when it is opened, and a write that fails (a
full disk) leaves it readable (``nas.cluster.journal``).
Environment overrides (for tests and impatient clusters): ``NAS_HEARTBEAT_SECONDS``,
``NAS_GRACE_SECONDS``, ``NAS_STORAGE_RETRY_SECONDS``.
"""
from __future__ import annotations

import os
import shlex
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import optuna
from optuna.storages import BaseStorage

from nas.cluster.lease import LeasedJournalStorage, RetryStaleTrial
from nas.cluster.retry import StorageUnavailable, first_line, is_transient, retry_call
from nas.config import ConfigError, check_url, mask_url

__all__ = ["HEARTBEAT_SECONDS", "GRACE_SECONDS", "RETRY_SECONDS", "MAX_RETRY", "StorageUnavailable", "is_journal",
           "is_transient", "retry_call", "StorageScheme", "STORAGES", "scheme_of", "storage_help", "journal_path",
           "storage_files", "open_storage", "dashboard_command", "dashboard_line"]

HEARTBEAT_SECONDS = 10
GRACE_SECONDS = 30
RETRY_SECONDS = 120
MAX_RETRY = 3
JOURNAL_SUFFIXES = (".journal", ".log")


@dataclass(frozen=True)
class Timing:
    """What every opener gets besides the value: the heartbeat, the grace period and the retry callback."""

    heartbeat: int
    grace: int
    retry: RetryStaleTrial


@dataclass(frozen=True)
class StorageScheme:
    """One kind of ``--storage`` value: how it is written (for the help and the errors) and its opener."""

    form: str
    open: Callable[[str | None, Path, Timing], BaseStorage]


def _env_seconds(name: str, default: int) -> int:
    text = os.environ.get(name)
    if text is None:
        return default
    if not text.isdigit() or int(text) < 1:
        raise ConfigError(f"{name} must be a whole number of seconds >= 1, but got {text!r}")
    return int(text)


def scheme_of(storage: str | None) -> str:
    """The ``STORAGES`` key of a ``--storage`` value, or its unknown scheme as written."""
    if storage is None or storage.startswith("journal:") or storage.endswith(JOURNAL_SUFFIXES):
        return "journal"
    if storage == "memory":
        return "memory"
    scheme = storage.split(":", 1)[0].split("+", 1)[0]
    return {"postgres": "postgresql"}.get(scheme, scheme)


def is_journal(storage: str | None) -> bool:
    return scheme_of(storage) == "journal"


def journal_path(storage: str | None, out_dir: Path) -> Path:
    """The journal file of a journal ``--storage`` value (None: ``<out_dir>/study.journal``)."""
    return out_dir / "study.journal" if storage is None else Path(storage.removeprefix("journal:"))


def storage_files(storage: str | None) -> tuple[str, ...]:
    """The names of the files a file-based ``--storage`` keeps (its journal, or an SQLite file and its companions).

    A command's ``--out`` may hold them: they are the study's, not someone else's files.
    """
    if storage is None or is_journal(storage):
        return (journal_path(storage, Path(".")).name,)
    if storage.startswith("sqlite:///"):
        name = Path(storage.removeprefix("sqlite:///")).name
        return (name, f"{name}-journal", f"{name}-wal", f"{name}-shm")
    return ()


def _open_journal(storage: str | None, out_dir: Path, timing: Timing) -> BaseStorage:
    from nas.cluster.journal import SafeJournalFileBackend, repair_journal

    path = journal_path(storage, out_dir)
    if path.is_dir():
        raise ConfigError(f"--storage {storage!r}: {str(path)!r} is a directory, expected a journal file in it "
                          f"(e.g. journal:{path / 'study.journal'})")
    if not path.parent.is_dir():
        raise ConfigError(f"--storage {storage!r}: directory {str(path.parent)!r} does not exist")
    repair_journal(path)  # before anything is appended
    return LeasedJournalStorage(SafeJournalFileBackend(str(path)), timing.heartbeat, timing.grace, timing.retry)


def _open_memory(storage: str | None, out_dir: Path, timing: Timing) -> BaseStorage:
    return optuna.storages.InMemoryStorage()


def _open_rdb(storage: str | None, out_dir: Path, timing: Timing) -> BaseStorage:
    from nas.cluster.rdb import ResilientStorage

    assert storage is not None
    url = "postgresql" + storage[len("postgres"):] if storage.startswith(("postgres:", "postgres+")) else storage
    check_url(url)  # a raw "@" in the password: the driver's error would print part of it
    engine_kwargs: dict[str, object] = {"pool_pre_ping": True}
    if not url.startswith("sqlite"):
        engine_kwargs["connect_args"] = {"connect_timeout": 10}
    retry_seconds = _env_seconds("NAS_STORAGE_RETRY_SECONDS", RETRY_SECONDS)
    for attempt in range(3):  # workers starting together race to create the tables: the losers retry
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                rdb = optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs, heartbeat_interval=timing.heartbeat,
                                                 grace_period=timing.grace)
            return ResilientStorage(rdb, retry_seconds, on_stale=timing.retry)
        except Exception as exc:  # sqlalchemy / driver errors: unreachable, bad credentials, no driver
            racing = not is_transient(exc) and ("already exists" in str(exc) or "IntegrityError" in type(exc).__name__
                                                or "UniqueViolation" in repr(exc.__cause__))
            if racing and attempt < 2:
                time.sleep(0.5 + attempt)
                continue
            raise ConfigError(f"--storage {mask_url(url)!r} cannot be opened: {first_line(exc)[:300]}") from None
    raise AssertionError("unreachable")


STORAGES: dict[str, StorageScheme] = {
    "journal": StorageScheme("journal:PATH (or a PATH ending in .journal or .log)", _open_journal),
    "sqlite": StorageScheme("sqlite:///PATH", _open_rdb),
    "postgresql": StorageScheme("postgresql://USER@HOST/DB", _open_rdb),
    "mysql": StorageScheme("mysql://USER@HOST/DB", _open_rdb),
    "memory": StorageScheme("memory", _open_memory),
}


def _forms() -> str:
    forms = [s.form for s in STORAGES.values()]
    return ", ".join(forms[:-1]) + " or " + forms[-1]


def storage_help() -> str:
    """The ``--storage`` help text."""
    return f"Optuna storage: {_forms()} [a journal file in --out]"


def open_storage(storage: str | None, out_dir: Path, heartbeat: int | None = None,
                 grace: int | None = None) -> BaseStorage:
    """An Optuna storage object for ``storage`` (see the module docstring).

    Args:
        storage: the ``--storage`` value; None for ``<out_dir>/study.journal``.
        out_dir: the run's output directory.
        heartbeat: seconds between heartbeats of a running trial [``NAS_HEARTBEAT_SECONDS`` or 10].
        grace: seconds without a heartbeat before a trial is failed and retried [``NAS_GRACE_SECONDS`` or 30].

    Raises:
        ConfigError: an unknown scheme or an unreachable database (password masked), a damaged journal.
        StorageUnavailable: a journal that cannot be written (a full disk).
    """
    heartbeat = heartbeat or _env_seconds("NAS_HEARTBEAT_SECONDS", HEARTBEAT_SECONDS)
    grace = grace or _env_seconds("NAS_GRACE_SECONDS", GRACE_SECONDS)
    if grace <= heartbeat:
        raise ConfigError(f"the grace period must exceed the heartbeat interval, but got ({heartbeat=}, {grace=})")
    scheme = scheme_of(storage)
    if scheme not in STORAGES:
        raise ConfigError(f"--storage {mask_url(str(storage))!r}: unknown scheme {scheme!r}, expected {_forms()}")
    return STORAGES[scheme].open(storage, out_dir, Timing(heartbeat, grace, RetryStaleTrial(MAX_RETRY, grace)))


def _holds_password(url: str) -> bool:
    try:
        from sqlalchemy.engine import make_url

        parsed = make_url(url)
    except Exception:  # unparsable: assume the worst
        return True
    return bool(parsed.password) or "password" in {k.lower() for k in parsed.query}


def dashboard_command(storage: str | None, out_dir: Path) -> str | None:
    """The ``optuna-dashboard`` command for the study's storage, safe to print; None for ``memory``.

    A journal is given as its plain path (``optuna-dashboard`` opens a file as a journal and does
    not know ``journal:``). A database URL that holds a password is read from ``$NAS_STORAGE``,
    which the user sets: the password is never printed.
    """
    scheme = scheme_of(storage)
    if scheme == "memory" or scheme not in STORAGES:
        return None
    if scheme == "journal":
        return f"optuna-dashboard {shlex.quote(str(journal_path(storage, out_dir).resolve()))}"
    assert storage is not None
    if _holds_password(storage):
        return f'optuna-dashboard "$NAS_STORAGE"  # NAS_STORAGE={shlex.quote(mask_url(storage))}, with its password'
    return f"optuna-dashboard {shlex.quote(storage)}"


def dashboard_line(storage: str | None, out_dir: Path) -> str:
    """The summary line that tells how to watch the study in ``optuna-dashboard``."""
    command = dashboard_command(storage, out_dir)
    return f"dashboard: {command}" if command else "dashboard: none (the study was in this process's memory)"
