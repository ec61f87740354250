"""Opening an Optuna storage from a ``--storage`` value.

Default (no ``--storage``): a journal file, ``<out>/study.journal``. Of Optuna's file-based
storages it has the lowest overhead per trial (an append-only log instead of SQLite's
transactions; see ``bench/bench_controller.py``), and several processes may share it through
its file lock, on one machine or a shared filesystem.

Accepted values: ``journal:PATH`` or a path ending in ``.journal``/``.log`` (journal file),
``sqlite:///PATH``, ``postgresql://...``, ``mysql://...`` (RDB with heartbeats: a killed
worker's trial is failed after the grace period and re-queued), ``memory`` (in-process).
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import optuna

from .config import ConfigError, mask_url

HEARTBEAT_SECONDS = 10
GRACE_SECONDS = 30
MAX_RETRY = 3


def is_journal(storage: str | None) -> bool:
    return storage is None or storage.startswith("journal:") or storage.endswith((".journal", ".log"))


def _retry_callback() -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        cls = getattr(optuna.storages, "RetryHeartbeatStaleTrialCallback", None) \
            or optuna.storages.RetryFailedTrialCallback  # Optuna < 4.9
        return cls(max_retry=MAX_RETRY)


def open_storage(storage: str | None, out_dir: Path, heartbeat: int = HEARTBEAT_SECONDS,
                 grace: int = GRACE_SECONDS) -> Any:
    """An Optuna storage object for ``storage`` (see the module docstring).

    Raises:
        ConfigError: an unknown scheme or an unreachable database (password masked).
    """
    if storage == "memory":
        return optuna.storages.InMemoryStorage()
    if is_journal(storage):
        path = out_dir / "study.journal" if storage is None else Path(storage.removeprefix("journal:"))
        if not path.parent.is_dir():
            raise ConfigError(f"--storage {storage!r}: directory {str(path.parent)!r} does not exist")
        from optuna.storages.journal import JournalFileBackend, JournalStorage
        return JournalStorage(JournalFileBackend(str(path)))
    scheme = storage.split(":", 1)[0].split("+", 1)[0]
    if scheme not in ("sqlite", "postgresql", "postgres", "mysql"):
        raise ConfigError(
            f"--storage {mask_url(storage)!r}: unknown scheme {scheme!r}, expected journal:PATH, "
            "sqlite:///PATH, postgresql://..., mysql://... or memory")
    if scheme == "postgres":
        storage = "postgresql" + storage[len("postgres"):]
    engine_kwargs = {"pool_pre_ping": True}
    if scheme != "sqlite":
        engine_kwargs["connect_args"] = {"connect_timeout": 10}
    key = "heartbeat_stale_trial_callback" if hasattr(optuna.storages, "RetryHeartbeatStaleTrialCallback") \
        else "failed_trial_callback"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.storages.RDBStorage(
                storage, engine_kwargs=engine_kwargs, heartbeat_interval=heartbeat, grace_period=grace,
                **{key: _retry_callback()})
    except Exception as exc:  # sqlalchemy / driver errors: unreachable, bad credentials, no driver
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"--storage {mask_url(storage)!r} cannot be opened: {mask_url(first)[:300]}") from None
