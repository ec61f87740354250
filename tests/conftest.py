"""Fixtures for the cluster tests: a real PostgreSQL server, worker processes, and a study audit."""
from __future__ import annotations

import csv
import itertools
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Callable

import pg
import pytest
import torch

# Quick trials: digits at 16 px, a few hundred training images, one epoch (a couple of seconds).
FAST = ["--dataset", "digits", "--proxy-resolution", "16", "--epochs", "1", "--batch-size", "64", "--train-size",
        "256", "--lr", "0.05", "--threads", "1", "--pruner", "none"]
# Heartbeats every second, a worker lost after 6 s without one (production: 10 s / 30 s).
CLUSTER_ENV = {"NAS_HEARTBEAT_SECONDS": "1", "NAS_GRACE_SECONDS": "6", "OMP_NUM_THREADS": "1"}
_names = itertools.count()


def _server():
    reason = pg.why_unavailable()
    if reason:
        pytest.skip(reason)
    server = pg.PgServer()
    try:
        server.start()
        yield server
    finally:
        server.destroy()


@pytest.fixture(scope="session")
def pg_server():
    """One PostgreSQL server on 127.0.0.1 for the session (skipped where the binaries are absent)."""
    yield from _server()


@pytest.fixture
def pg_url(pg_server) -> str:
    """A fresh database on the session's server; its URL holds a password."""
    return pg_server.create_database(f"study_{os.getpid()}_{next(_names)}")


@pytest.fixture
def own_pg_server():
    """A server of this test's own, for tests that stop and restart it."""
    yield from _server()


class Workers:
    """``nas-search`` processes started by a test; all killed at teardown, even when it fails."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir, self.procs = log_dir, []

    def start(self, args: list[str], env: dict[str, str] | None = None,
              module: str = "nas.cli.search") -> subprocess.Popen:
        index = len(self.procs)
        log = open(self.log_dir / f"worker{index}.log", "w")
        proc = subprocess.Popen([sys.executable, "-m", module, *args], stdout=log, stderr=subprocess.STDOUT,
                                env={**os.environ, **CLUSTER_ENV, **(env or {})}, start_new_session=True)
        proc.log_path = log.name  # type: ignore[attr-defined]
        log.close()
        self.procs.append(proc)
        return proc

    def wait(self, timeout: float = 300) -> list[int]:
        return [p.wait(timeout=timeout) for p in self.procs]

    def output(self, proc: subprocess.Popen) -> str:
        return Path(proc.log_path).read_text()  # type: ignore[attr-defined]

    def kill(self, proc: subprocess.Popen, sig: int = signal.SIGKILL) -> None:
        try:
            os.killpg(proc.pid, sig)  # the process and anything it started (torchrun ranks)
        except ProcessLookupError:
            pass

    def cleanup(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                self.kill(p)
            p.wait(timeout=60)


@pytest.fixture
def workers(tmp_path):
    w = Workers(tmp_path)
    try:
        yield w
    finally:
        w.cleanup()


def audit(study, trials: int, n_workers: int) -> dict[str, int]:
    """Check what every cluster run must guarantee (``nas.cluster.workers.study_health``); returns the figures.

    Nothing left RUNNING, no architecture trained twice, no trial lost with its worker, and
    between ``trials`` and ``trials + n_workers - 1`` trained trials.
    """
    from nas.cluster.workers import study_health

    h = study_health(study)
    assert h["running"] == 0, f"trials left RUNNING: {h}"
    assert h["duplicated"] == 0 and h["lost"] == 0, h
    assert trials <= h["trained"] <= trials + n_workers - 1, f"{h['trained']} trained trials for a budget of {trials}"
    return h


def assert_leaderboard_matches(path: Path, study) -> None:
    """``leaderboard.csv`` lists exactly the study's finished trials, with their rewards."""
    from nas.search.report import trial_rows

    rows = list(csv.DictReader(path.open()))
    expected = trial_rows(study.get_trials(deepcopy=False))
    assert [int(r["number"]) for r in rows] == [r["number"] for r in expected]
    for got, want in zip(rows, expected):
        assert got["state"] == want["state"] and got["arch"] == (want["arch"] or "")
        if want["reward"] is not None:
            assert float(got["reward"]) == pytest.approx(want["reward"], rel=1e-12)


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    assert pg.wait_until(predicate, timeout), f"timed out after {timeout:.0f} s waiting for {what}"


@pytest.fixture
def one_thread():
    """Small batches: one intra-op thread beats two spinning ones on a shared 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def small_tmpfs(tmp_path):
    """A 1 MiB tmpfs, mounted for this test (root only) and unmounted after it."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mount = tmp_path / "tmpfs"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True,
                          text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        if subprocess.run(["umount", str(mount)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(mount)], capture_output=True)
