"""Faults during a multi-worker search: a worker killed mid-trial, the database going away.

Nothing is simulated: workers are real ``nas-search`` processes, the kill is SIGKILL, and the
outage is the PostgreSQL server shut down and started again. Heartbeats are 1 s and the grace
period 6 s (``conftest.CLUSTER_ENV``), so a lost trial is retried within seconds.
"""
from __future__ import annotations

import socket
import time
from pathlib import Path
from typing import Callable

import optuna
import pytest
from conftest import FAST, audit, wait_for
from optuna.storages.journal import JournalFileBackend, JournalStorage
from optuna.trial import TrialState
from pg import PASSWORD

from nas.cluster.trials import counted


def _loader(load: Callable[[], optuna.Study]) -> Callable[[], optuna.Study | None]:
    box: list[optuna.Study] = []

    def get() -> optuna.Study | None:
        if not box:
            try:
                box.append(load())
            except KeyError:  # not created yet
                return None
        return box[0]
    return get


def kill_one_mid_training(workers, storage: str, load: Callable[[], optuna.Study], out: Path) -> None:
    """Three workers; SIGKILL the first one seen training; the others must finish the study, nothing lost."""
    trials = 5
    procs = [workers.start([*FAST, "--trials", str(trials), "--storage", storage, "--study-name", "faults",
                            "--out", str(out), "--quiet"]) for _ in range(3)]
    by_label = {f"{socket.gethostname()}:{p.pid}": p for p in procs}
    study = _loader(load)

    def training() -> list[optuna.trial.FrozenTrial]:
        s = study()
        return [] if s is None else [t for t in s.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
                                     if t.user_attrs.get("trained") and t.user_attrs.get("worker") in by_label]
    wait_for(lambda: bool(training()), 180, "a worker to train a trial")
    trial = training()[0]
    killed, victim = trial.number, by_label[trial.user_attrs["worker"]]
    workers.kill(victim)
    survivors = [p for p in procs if p is not victim]
    codes = [p.wait(timeout=300) for p in survivors]
    assert codes == [0, 0], "\n\n".join(workers.output(p)[-3000:] for p in survivors)
    s = study()
    assert audit(s, trials, 3)["lost"] == 0
    assert s.trials[killed].state == TrialState.FAIL
    [retry] = [t for t in s.trials if t.user_attrs.get("retry_of") == killed]
    assert counted(retry) and retry.user_attrs["worker"] != trial.user_attrs["worker"]
    assert retry.params == s.trials[killed].params  # the same architecture, trained again by a survivor


def test_sigkill_mid_trial_on_postgresql(pg_url, workers, tmp_path):
    kill_one_mid_training(workers, pg_url, lambda: optuna.load_study(study_name="faults", storage=pg_url),
                          tmp_path / "run")


def test_sigkill_mid_trial_on_a_journal_file(workers, tmp_path):
    path = tmp_path / "shared" / "study.journal"
    path.parent.mkdir()
    # a plain reader: the test's own process takes no part in leases
    kill_one_mid_training(workers, f"journal:{path}", lambda: optuna.load_study(
        study_name="faults", storage=JournalStorage(JournalFileBackend(str(path)))), tmp_path / "run")


@pytest.mark.postgres
def test_database_restart_mid_search(own_pg_server, workers, tmp_path):
    url = own_pg_server.create_database("outage")
    trials = 4
    args = [*FAST, "--trials", str(trials), "--storage", url, "--study-name", "outage", "--out", str(tmp_path / "run")]
    procs = [workers.start(args) for _ in range(2)]
    study = _loader(lambda: optuna.load_study(study_name="outage", storage=url))
    wait_for(lambda: study() is not None and any(counted(t) for t in study().get_trials(deepcopy=False)), 180,
             "a trained trial")
    own_pg_server.stop("fast")  # every connection is cut
    time.sleep(4)
    own_pg_server.start()
    codes = [p.wait(timeout=300) for p in procs]
    logs = [workers.output(p) for p in procs]
    assert codes == [0, 0], "\n\n".join(log[-3000:] for log in logs)
    assert audit(optuna.load_study(study_name="outage", storage=url), trials, 2)["lost"] == 0
    assert any("unreachable" in log for log in logs) and any("reachable again" in log for log in logs)
    for log in logs:
        assert PASSWORD not in log and "Traceback" not in log


@pytest.mark.postgres
@pytest.mark.slow  # ~50 s: two runs, one after the other
def test_database_gone_for_good_stops_cleanly_and_resumes(own_pg_server, workers, tmp_path):
    url = own_pg_server.create_database("gone")
    args = [*FAST, "--trials", "2", "--storage", url, "--study-name", "gone", "--out", str(tmp_path / "run")]
    proc = workers.start(args, env={"NAS_STORAGE_RETRY_SECONDS": "3"})
    study = _loader(lambda: optuna.load_study(study_name="gone", storage=url))
    wait_for(lambda: study() is not None and any(counted(t) for t in study().get_trials(deepcopy=False)), 180,
             "a trained trial")
    own_pg_server.stop("fast")
    assert proc.wait(timeout=120) == 3
    err = workers.output(proc).strip().splitlines()[-1]
    assert err.startswith("nas-search: error: the study storage postgresql://nas:***@127.0.0.1:")
    assert "unreachable for" in err and "run the same command again to resume" in err
    assert PASSWORD not in workers.output(proc) and "Traceback" not in workers.output(proc)
    own_pg_server.start()  # the same command again: the study is intact and completes
    again = workers.start(args)
    assert again.wait(timeout=300) == 0, workers.output(again)[-3000:]
    # two workers in the study's life: the one that stopped left its trial running, now retried
    assert audit(optuna.load_study(study_name="gone", storage=url), 2, 2)["lost"] == 0


@pytest.mark.postgres
def test_password_masked_when_the_database_refuses(pg_server, tmp_path, capsys):
    from nas.cli.search import main

    url = pg_server.url("postgres").replace(PASSWORD, "wrong-" + PASSWORD)
    assert main([*FAST, "--trials", "1", "--storage", url, "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "cannot be opened" in err and "nas:***@" in err and PASSWORD not in err


# --- the pieces, in one process -------------------------------------------------------------

def test_a_lease_unchanged_for_the_grace_period_is_stale(monkeypatch):
    import nas.cluster.lease as lease

    now = [100.0]
    monkeypatch.setattr(lease.time, "monotonic", lambda: now[0])
    watch = lease.LeaseWatch(grace=6)
    assert watch.stale({1: None, 2: 5.0}) == []  # first sight: fresh
    now[0] += 5
    assert watch.stale({1: None, 2: 6.0}) == []  # trial 2 renewed its lease
    now[0] += 2
    assert watch.stale({1: None, 2: 6.0}) == [1]  # trial 1: 7 s without a lease
    now[0] += 5
    assert watch.stale({2: 6.0}) == [2]  # trial 1 finished; trial 2 now silent for 7 s


@pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed to be used with Study.optimize")
def test_a_dead_trial_on_a_journal_file_is_failed_and_queued_again(tmp_path, monkeypatch):
    import nas.cluster.lease as lease
    from nas.cluster.optuna_private import trial_id
    from nas.cluster.storage import open_storage

    now = [0.0]
    monkeypatch.setattr(lease.time, "monotonic", lambda: now[0])
    monkeypatch.setenv("NAS_HEARTBEAT_SECONDS", "1")
    monkeypatch.setenv("NAS_GRACE_SECONDS", "6")
    storage = open_storage(None, tmp_path)
    study = optuna.create_study(study_name="lease", storage=storage)
    dead = study.ask({"x": optuna.distributions.CategoricalDistribution([1, 2, 3])})
    dead.set_user_attr("trained", True)
    dead.set_user_attr("accuracy", 0.5)
    storage.record_heartbeat(trial_id(dead))  # its worker's last heartbeat
    optuna.storages.fail_stale_trials(study)
    now[0] += 7
    optuna.storages.fail_stale_trials(study)
    failed, retry = study.get_trials(deepcopy=False)
    assert failed.state == TrialState.FAIL
    assert retry.state == TrialState.WAITING and retry.params == failed.params
    assert retry.user_attrs == {"retry_of": failed.number}  # no results, not trained
    assert not any(k.startswith("nas:") for k in retry.system_attrs)


def test_storage_retries_give_up_with_one_masked_line():
    import sqlalchemy.exc

    from nas.cluster.storage import StorageUnavailable, retry_call

    def refuse():
        raise sqlalchemy.exc.OperationalError("connect", {}, ConnectionRefusedError("connection refused"))
    with pytest.raises(StorageUnavailable) as info:
        retry_call(refuse, 0.3, "postgresql://nas:***@db:5432/s")
    text = str(info.value)
    assert "\n" not in text and "unreachable for" in text and "nas:***@db" in text
    calls = []

    def refuse_twice():
        calls.append(1)
        if len(calls) <= 2:
            refuse()
        return "ok"
    assert retry_call(refuse_twice, 5, "x") == "ok" and len(calls) == 3


@pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed to be used with Study.optimize")
def test_a_trial_failed_elsewhere_before_its_tell_does_not_stop_the_worker(tmp_path):
    """Another worker fails this worker's trial as stale (its heartbeat was late) while the objective runs.

    Optuna's tell then fails: "Cannot tell a FAIL trial" when the objective goes on writing, and its
    own ``AssertionError: Should not reach`` when the objective had finished. The retry is the other
    worker's business; this worker carries on.
    """
    from nas.cluster.optuna_private import storage_of, trial_id
    from nas.cluster.storage import open_storage
    from nas.cluster.workers import optimize

    study = optuna.create_study(study_name="late", storage=open_storage(None, tmp_path))

    def objective(trial: optuna.Trial) -> float:
        x = trial.suggest_float("x", 0, 1)
        if trial.number in (1, 3):  # failed as stale elsewhere, mid-trial
            storage_of(study).set_trial_state_values(trial_id(trial), TrialState.FAIL)
        if trial.number == 3:
            trial.set_user_attr("after", True)  # the objective goes on writing: UpdateFinishedTrialError
        return x

    def complete(s: optuna.Study) -> int:
        return sum(t.state == TrialState.COMPLETE for t in s.get_trials(deepcopy=False))

    def stop(s: optuna.Study, t: optuna.trial.FrozenTrial) -> None:
        if complete(s) >= 4:
            s.stop()
    optimize(study, objective, lambda s: complete(s) >= 4, None, [stop], catch=())
    states = [t.state for t in study.trials]
    assert states.count(TrialState.COMPLETE) == 4 and states[1] == states[3] == TrialState.FAIL, states


def test_an_overdue_lease_is_confirmed_by_a_second_look(monkeypatch):
    """After a stall of the whole machine every lease looks overdue; the live worker's renews before the verdict."""
    import nas.cluster.lease as lease

    now = [0.0]
    monkeypatch.setattr(lease.time, "monotonic", lambda: now[0])
    watch = lease.LeaseWatch(grace=6)
    watch.stale({1: 1.0, 2: 1.0})
    now[0] += 40  # everything stalled for 40 s
    overdue = watch.stale({1: 1.0, 2: 1.0})
    assert overdue == [1, 2]
    assert watch.still(overdue, {1: 1.0, 2: 41.5}) == [1]  # trial 2's worker woke and renewed: not stale
    assert watch.stale({7: None}, late=[7]) == [7]  # the database's clock says overdue: stale at first sight
    assert lease.confirm_seconds(10, 30) == 20 and lease.confirm_seconds(1, 6) == 2


def test_a_series_of_retries_is_lost_once_and_only_when_its_last_retry_failed():
    from types import SimpleNamespace

    from nas.cluster.workers import lost_trials

    def trial(number, state, retry_of=None, history=(), trained=True):
        user = {"trained": trained, **({} if retry_of is None else {"retry_of": retry_of})}
        return SimpleNamespace(number=number, state=TrialState[state], user_attrs=user,
                               system_attrs={"retry_history": list(history)} if history else {})
    # 0 failed, its retry 1 failed too, retry 2 completed (retry_of names the first of the series)
    done = [trial(0, "FAIL"), trial(1, "FAIL", 0, [0]), trial(2, "COMPLETE", 0, [0, 1])]
    assert lost_trials(done) == []
    # 3 failed, its retry 4 failed and was not retried again: the work is lost, once
    lost = [trial(3, "FAIL"), trial(4, "FAIL", 3, [3])]
    assert [t.number for t in lost_trials(lost)] == [4]
    assert [t.number for t in lost_trials([trial(5, "FAIL"), trial(6, "WAITING", 5, [5])])] == [5]  # not run yet
