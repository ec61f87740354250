"""Riding out a storage outage: transient database errors retried with backoff, then one clear error."""
from __future__ import annotations

import logging
import threading
import time
from typing import Callable, TypeVar

from nas.config import ConfigError, mask_url

__all__ = ["StorageUnavailable", "is_transient", "retry_call", "first_line"]

log = logging.getLogger(__name__)
T = TypeVar("T")


class StorageUnavailable(ConfigError):
    """The study storage stayed unreachable for the whole retry window, or cannot be written (the study is intact)."""


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


def first_line(exc: BaseException) -> str:
    """The first line of ``exc`` (or of its cause), any password masked, at most 200 characters."""
    text = str(exc.__cause__ or exc).strip()
    return mask_url(text.splitlines()[0] if text else type(exc).__name__)[:200]


class _Outage:
    """One warning when the storage goes away and one when it is back, however many calls wait."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.since: float | None = None

    def failed(self, what: str, exc: BaseException, seconds: float) -> None:
        with self.lock:
            if self.since is None:
                self.since = time.monotonic()
                log.warning("study storage %s unreachable (%s); retrying for up to %.0f s", what, first_line(exc),
                            seconds)

    def recovered(self, what: str) -> None:
        with self.lock:
            if self.since is not None:
                log.warning("study storage %s reachable again after %.1f s", what, time.monotonic() - self.since)
                self.since = None


_OUTAGE = _Outage()


def retry_call(fn: Callable[[], T], seconds: float, what: str) -> T:
    """``fn()``, retried with exponential backoff (0.25 s .. 4 s) while it fails transiently.

    Args:
        fn: the call.
        seconds: how long to keep trying; 0 calls ``fn`` once.
        what: the storage, as it may be printed (password masked).

    Raises:
        StorageUnavailable: still failing after ``seconds``.
    """
    start, delay, failed = time.monotonic(), 0.25, False
    while True:
        try:
            result = fn()
        except Exception as exc:
            if not seconds or not is_transient(exc):
                raise
            waited = time.monotonic() - start
            if waited >= seconds:
                raise StorageUnavailable(f"the study storage {what} was unreachable for {waited:.0f} s "
                                         f"({first_line(exc)}); the study is kept: run the same command "
                                         "again to resume") from None
            _OUTAGE.failed(what, exc, seconds)
            failed = True
            time.sleep(min(delay, max(0.0, seconds - waited)))
            delay = min(2 * delay, 4.0)
            continue
        if failed:
            _OUTAGE.recovered(what)
        return result
