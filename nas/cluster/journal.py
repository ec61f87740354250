"""The study journal file: a torn tail cut off before anything is appended, and writes that fail cleanly.

Optuna's journal is one JSON record per line. A worker killed during a write, or a full disk,
can leave a last line without its newline (or garbage after the last record). Optuna skips such
a last line when it reads, but the next append lands after it: the fragment becomes a middle line
and every later read fails, plain Optuna's included, so every finished trial is lost.
``repair_journal`` (run by ``open_storage`` before the storage is built) keeps such a tail aside
as ``<journal>.torn-<UTC time>`` and cuts the journal back to its last complete record, under the
journal's own write lock. ``SafeJournalFileBackend`` appends the way Optuna's backend does, but a
write that fails (ENOSPC, EIO) is undone before ``JournalWriteError`` says so: the journal stays
readable.
"""
from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

from optuna.storages.journal import JournalFileBackend, JournalFileSymlinkLock

from nas.cluster.retry import StorageUnavailable
from nas.config import ConfigError

__all__ = ["JournalDamaged", "JournalWriteError", "SafeJournalFileBackend", "repair_journal", "scan_journal",
           "write_error"]

log = logging.getLogger(__name__)


class JournalDamaged(ConfigError):
    """The journal has a broken record followed by complete ones: Optuna cannot read it, and it is left alone."""


class JournalWriteError(StorageUnavailable):
    """A write to the journal failed (a full disk, an I/O error); the journal was left as it was before."""


def _is_record(line: bytes) -> bool:
    if not line.endswith(b"\n"):
        return False
    try:
        record = json.loads(line)
    except ValueError:  # not JSON, or not UTF-8
        return False
    return isinstance(record, dict) and "op_code" in record


def scan_journal(data: bytes) -> tuple[int, int, int]:
    """``(end, bad, after)``: the byte offset just past the last complete record before the first line
    that is not one, that line's number (1-based; 0: every line is a record) and the complete
    records that follow it."""
    end, bad, after, line_no = 0, 0, 0, 0
    start = 0
    while start < len(data):
        stop = data.find(b"\n", start)
        stop = len(data) if stop < 0 else stop + 1
        line_no += 1
        ok = _is_record(data[start:stop])
        if not bad and ok:
            end = stop
        elif not bad:
            bad = line_no
        elif ok:
            after += 1
        start = stop
    return end, bad, after


def _aside(path: Path) -> Path:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    candidate, n = path.with_name(f"{path.name}.torn-{stamp}"), 1
    while candidate.exists():
        candidate, n = path.with_name(f"{path.name}.torn-{stamp}-{n}"), n + 1
    return candidate


@contextlib.contextmanager
def _locked(lock: JournalFileSymlinkLock) -> Iterator[None]:
    lock.acquire()
    try:
        yield
    finally:
        lock.release()


def write_error(path: Path | str, exc: OSError, doing: str = "write") -> JournalWriteError:
    """The one-line error of a journal operation that failed with ``exc``."""
    code = errno.errorcode.get(exc.errno or 0, str(exc.errno))
    return JournalWriteError(f"cannot {doing} the study journal {path}: {exc.strerror or exc} ({code}); the journal "
                             "is left as it was and still reads: free space (or fix the disk) and run the same "
                             "command again to resume")


def repair_journal(path: Path) -> Path | None:
    """Cut a torn tail off the journal at ``path``; the file it was kept in, or None when there was none.

    Raises:
        JournalDamaged: a broken record is followed by complete ones (damage this cannot undo).
        JournalWriteError: the tail cannot be kept aside (a full disk); the journal is left untouched.
    """
    if not path.is_file() or not scan_journal(path.read_bytes())[1]:
        return None
    with _locked(JournalFileSymlinkLock(str(path))):  # the lock Optuna's writers take: no write is half done
        data = path.read_bytes()
        end, bad, after = scan_journal(data)
        if not bad:
            return None
        if after:
            raise JournalDamaged(f"the study journal {path} is damaged: line {bad} is not a complete record and "
                                 f"{after} complete record(s) follow it, so Optuna cannot read it; it is left as "
                                 "it is (restore it from a copy, or start a new study with another --out)")
        aside = _aside(path)
        try:
            with open(aside, "xb") as f:
                f.write(data[end:])
                f.flush()
                os.fsync(f.fileno())
        except OSError as exc:
            aside.unlink(missing_ok=True)
            raise write_error(path, exc, "keep aside the torn tail of") from None
        os.truncate(path, end)
    log.warning("the study journal %s ended in a torn record (line %d, %d bytes, a write cut short): kept aside as "
                "%s and cut back to the last complete record", path, bad, len(data) - end, aside.name)
    return aside


class SafeJournalFileBackend(JournalFileBackend):
    """``JournalFileBackend`` whose failed append (ENOSPC, EIO) leaves the file as it was, then raises
    ``JournalWriteError``: the study stays readable, by this toolkit and by plain Optuna."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.lock = JournalFileSymlinkLock(path)
        try:
            super().__init__(path, lock_obj=self.lock)
        except OSError as exc:
            raise write_error(path, exc, "create") from None

    def append_logs(self, logs: list[dict[str, object]]) -> None:
        data = ("\n".join(json.dumps(r, separators=(",", ":")) for r in logs) + "\n").encode("utf-8")
        try:
            with _locked(self.lock):
                _append(self.path, data)
        except OSError as exc:
            raise write_error(self.path, exc) from None


def _append(path: str, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND)
    try:
        size = os.fstat(fd).st_size
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        except OSError:
            with contextlib.suppress(OSError):  # shrinking needs no space; if even this fails, the next open cuts it
                os.ftruncate(fd, size)
                os.fsync(fd)
            raise
    finally:
        os.close(fd)
