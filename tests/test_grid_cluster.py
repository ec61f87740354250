"""``nas-grid-scale`` on many workers and many processes per candidate.

Workers on one storage split the grid: under the study lock each claims the first candidate no
other trial has evaluated or is running, so every candidate trains exactly once. With
``--nproc-per-node 2`` rank 0 talks to the study and both ranks train each candidate with DDP.
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.storages.journal import JournalFileBackend, JournalStorage
from optuna.trial import TrialState
from test_grid_cli import TINY_BASE, TINY_GRID, TINY_PROXY

from nas.cluster.trials import counted

pytestmark = pytest.mark.slow


def grid_args(tmp_path: Path, out: Path, storage: str | None = None) -> list[str]:
    base = tmp_path / "base.yaml"
    base.write_text(TINY_BASE)
    extra = ["--storage", storage] if storage else []
    return ["--base", str(base), *TINY_GRID, *TINY_PROXY, "--phi", "1", "--out", str(out), "--quiet", *extra]


def trained_candidates(study: optuna.Study) -> Counter:
    return Counter(t.params["candidate"] for t in study.get_trials(deepcopy=False) if counted(t))


def check_grid_study(study: optuna.Study, out: Path) -> None:
    per_candidate = trained_candidates(study)
    assert sorted(per_candidate) == [0, 1, 2], per_candidate  # the tiny grid's three candidates
    assert set(per_candidate.values()) == {1}, per_candidate  # none trained twice
    assert not study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    record = yaml.safe_load((out / "coefficients.yaml").read_text())
    assert record["grid"]["evaluated"] == 3


@pytest.mark.parametrize("storage", ["journal", "postgresql"])
def test_two_grid_workers_split_the_grid(storage, workers, tmp_path, request):
    out = tmp_path / "grid"
    url = request.getfixturevalue("pg_url") if storage == "postgresql" else f"journal:{tmp_path / 'grid.journal'}"
    procs = [workers.start(grid_args(tmp_path, out, url), module="scaling.cli") for _ in range(2)]
    codes = [p.wait(timeout=400) for p in procs]
    assert codes == [0, 0], [workers.output(p)[-3000:] for p in procs]
    if storage == "postgresql":
        study = optuna.load_study(study_name="nas-grid-scale", storage=url)
    else:
        study = optuna.load_study(study_name="nas-grid-scale",
                                  storage=JournalStorage(JournalFileBackend(str(tmp_path / "grid.journal"))))
    check_grid_study(study, out)
    workers_seen = {t.user_attrs["worker"] for t in study.get_trials(deepcopy=False) if counted(t)}
    assert len(workers_seen) == 2  # both took part


def test_two_processes_per_candidate(workers, tmp_path):
    out = tmp_path / "grid"
    args = [a for a in grid_args(tmp_path, out) if a != "--quiet"]
    proc = workers.start([*args, "--nproc-per-node", "2"], module="scaling.cli")
    assert proc.wait(timeout=400) == 0, workers.output(proc)[-4000:]
    log = workers.output(proc)
    assert "2 process(es) per candidate" in log and "Traceback" not in log
    study = optuna.load_study(study_name="nas-grid-scale",
                              storage=JournalStorage(JournalFileBackend(str(out / "study.journal"))))
    check_grid_study(study, out)
    done = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    assert done and all(t.user_attrs["world_size"] == 2 for t in done)
    # 128 training images, 64 per rank, batches of 32 per rank: 2 steps x 32 images x 2 ranks
    assert all(t.user_attrs["images"] == 128 for t in done)


def _poll(load, predicate, timeout: float, what: str):
    """``load()`` (None until it can) until ``predicate`` holds of its result; that result."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = load()
        if value is not None and predicate(value):
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def test_a_killed_candidate_is_trained_again_on_resume(workers, tmp_path):
    """SIGKILL the grid worker while it trains a candidate, run the same command again: every
    candidate ends with a result, the killed one trained again (not dropped as "done")."""
    out = tmp_path / "grid"
    args = [*grid_args(tmp_path, out), "--epochs", "3"]  # a few seconds per candidate: time to kill one
    first = workers.start(args, module="scaling.cli")
    journal = out / "study.journal"

    def load() -> list[optuna.trial.FrozenTrial] | None:
        if not journal.exists():
            return None
        try:
            study = optuna.load_study(study_name="nas-grid-scale",
                                      storage=JournalStorage(JournalFileBackend(str(journal))))
        except KeyError:  # not created yet
            return None
        return study.get_trials(deepcopy=False)

    def training(trials) -> bool:
        return any(t.state == TrialState.RUNNING and t.user_attrs.get("trained") for t in trials)
    trials = _poll(load, training, 180, "the worker to train a candidate")
    [killed] = [t for t in trials if t.state == TrialState.RUNNING and t.user_attrs.get("trained")]
    workers.kill(first)
    assert first.wait(timeout=60) != 0
    again = workers.start(args, module="scaling.cli")
    assert again.wait(timeout=400) == 0, workers.output(again)[-4000:]
    study = optuna.load_study(study_name="nas-grid-scale", storage=JournalStorage(JournalFileBackend(str(journal))))
    check_grid_study(study, out)  # every candidate evaluated exactly once, nothing left running
    assert study.trials[killed.number].state == TrialState.FAIL
    [redo] = [t for t in study.trials if counted(t) and t.params["candidate"] == killed.params["candidate"]]
    assert redo.number > killed.number and redo.state == TrialState.COMPLETE
    record = yaml.safe_load((out / "coefficients.yaml").read_text())
    assert all(c["accuracy"] is not None for c in record["candidates"]), record["candidates"]
    assert record["candidates"][killed.params["candidate"]]["trial"] == redo.number
    assert "Traceback" not in workers.output(again)
