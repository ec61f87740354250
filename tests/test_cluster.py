"""Many independent nas-search workers on one study: PostgreSQL, and a journal file on a shared disk.

Each test starts three workers at once with the same storage and study name (as a SLURM array
or a shell loop would) and checks that they stop at the study's budget together, each with its
own sampler seed, that no architecture is trained twice, and that the leaderboard written by
the last worker is the database's.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import optuna
import pytest
from conftest import FAST, assert_leaderboard_matches, audit
from pg import PASSWORD

from nas.cluster.optuna_private import study_system_attrs
from nas.cluster.storage import open_storage

TRIALS, N_WORKERS = 5, 3


def tiny_space(tmp_path: Path) -> str:
    """Three architectures (three widths of the first stage): workers collide all the time."""
    text = (Path(__file__).parents[1] / "search_spaces/spaces/mnasnet.yaml").read_text()
    head = text[:text.index("choices:")]
    stages = "\n".join(f"  - {{stride: {s}, filters: [{c}], layers: [{n}]}}"
                       for s, c, n in [(1, "8, 16, 24", 1), (2, 24, 2), (2, 40, 2), (2, 80, 3), (1, 112, 3),
                                       (2, 192, 4), (1, 320, 1)])
    path = tmp_path / "tiny.yaml"
    path.write_text(head.replace("name: mnasnet", "name: tiny") + "choices:\n  ops: [mbconv6]\n  kernels: [3]\n"
                    "  se_ratios: [0.25]\n  skips: [identity]\nstages:\n" + stages + "\n")
    return str(path)


def run_three(workers, storage: str, out: Path, extra: list[str], trials: int = TRIALS) -> list[str]:
    args = [*FAST, "--trials", str(trials), "--storage", storage, "--study-name", "cluster", "--out", str(out), *extra]
    procs = [workers.start(args) for _ in range(N_WORKERS)]
    codes = workers.wait(timeout=400)
    logs = [workers.output(p) for p in procs]
    assert codes == [0] * N_WORKERS, "\n\n".join(log[-3000:] for log in logs)
    return logs


def check_workers(logs: list[str], study: optuna.Study) -> None:
    slots = sorted(int(re.search(r"worker slot (\d+)", log).group(1)) for log in logs)
    assert slots == list(range(N_WORKERS))  # distinct slots, hence distinct sampler seeds
    attrs = study_system_attrs(study)
    assert all(attrs[f"nas:worker:{k}"].get("ended") for k in slots)  # each released its slot on the way out


@pytest.mark.postgres
def test_three_workers_on_postgresql(pg_url, workers, tmp_path):
    out = tmp_path / "run"
    logs = run_three(workers, pg_url, out, ["--seed-arch", "efficientnet-b0,mnasnet-a1"])
    study = optuna.load_study(study_name="cluster", storage=pg_url)
    figures = audit(study, TRIALS, N_WORKERS)
    assert figures["lost"] == 0
    seeds = [t for t in study.trials if t.user_attrs.get("seed_arch")]
    assert sorted(t.user_attrs["seed_arch"] for t in seeds) == ["efficientnet-b0", "mnasnet-a1"]  # queued once
    check_workers(logs, study)
    assert_leaderboard_matches(out / "leaderboard.csv", study)
    manifest = (out / "manifest.json").read_text()
    assert json.loads(manifest)["storage"].startswith("postgresql://nas:***@127.0.0.1:")
    for text in [manifest, *logs]:
        assert PASSWORD not in text and "Traceback" not in text


def test_three_workers_on_a_shared_journal_file(workers, tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    journal = f"journal:{shared / 'study.journal'}"
    out = tmp_path / "run"
    logs = run_three(workers, journal, out, ["--space", tiny_space(tmp_path), "--sampler", "random"], trials=3)
    study = optuna.load_study(study_name="cluster", storage=open_storage(journal, shared))
    figures = audit(study, 3, N_WORKERS)
    assert figures["trained"] == 3  # every architecture of the space once, though the workers drew each many times
    check_workers(logs, study)
    assert_leaderboard_matches(out / "leaderboard.csv", study)
    assert not any("Traceback" in log for log in logs)


# --- the pieces, in one process -------------------------------------------------------------

def test_a_claimed_architecture_is_not_trained_twice():
    from nas.search.config import SearchConfig
    from nas.search.objective import Objective
    from search_spaces import get_preset
    from search_spaces.space import SearchSpace

    space = SearchSpace.load("mnasnet")
    study = optuna.create_study()
    params = space.encode(get_preset("efficientnet-b0"))
    study.enqueue_trial(params)
    study.enqueue_trial(params)
    first, second = study.ask(), study.ask()
    key = space.sample(first).to_str()
    assert space.sample(second).to_str() == key
    objective = Objective(SearchConfig(trials=5), space, train=None)
    for t in (first, second):
        t.set_user_attr("arch", key)
    assert objective._claim(first, key) is None  # first come: trains
    with pytest.raises(optuna.TrialPruned, match=f"duplicate of trial {first.number}, running on another worker"):
        objective._claim(second, key)


def test_worker_slots_are_distinct_and_freed(tmp_path):
    from nas.cluster.locks import StudyLock
    from nas.cluster.workers import register_worker, release_worker

    storage = open_storage(None, tmp_path)
    study = optuna.create_study(study_name="slots", storage=storage)
    lock = StudyLock(storage, "slots")
    a, b = register_worker(study, lock), register_worker(study, lock)
    assert (a, b) == (0, 1)
    release_worker(study, a)
    assert register_worker(study, lock) == 0


@pytest.mark.parametrize("argv,nproc,rest", [
    (["--trials", "3"], 1, ["--trials", "3"]),
    (["--nproc-per-node", "4", "--quiet"], 4, ["--quiet"]),
    (["--nproc-per-node=2"], 2, []),
])
def test_nproc_per_node_is_split_off(argv, nproc, rest):
    from nas.cluster.torchrun import split_nproc

    assert split_nproc(argv) == (nproc, rest)


def test_nproc_per_node_must_be_a_count():
    from nas.cli.search import main

    assert main(["--nproc-per-node", "two", "--dry-run"]) == 2


def test_a_pruned_trial_is_valued_by_its_reward_not_its_accuracy():
    """Optuna gives a pruned trial its last reported value: the objective reports rewards, so that value
    (and optuna-dashboard's history plot) is on the reward's scale."""
    from nas.search.config import SearchConfig
    from nas.search.objective import Objective
    from nas.search.reward import reward
    from search_spaces import get_preset
    from search_spaces.space import SearchSpace

    space, cfg = SearchSpace.load("mnasnet"), SearchConfig(trials=5)

    def train(arch, trial, seed):
        trial.report(0.5, 0)
        trial.report(0.625, 1)
        raise optuna.TrialPruned("pruned at step 1")
    study = optuna.create_study(direction="maximize")
    study.enqueue_trial(space.encode(get_preset("efficientnet-b0")))
    study.optimize(Objective(cfg, space, train), n_trials=1)
    [t] = study.trials
    want = [reward(acc, t.user_attrs["macs"], cfg.target, cfg.reward_exponent, cfg.reward) for acc in (0.5, 0.625)]
    assert t.state == optuna.trial.TrialState.PRUNED and t.user_attrs["trained"]
    assert list(t.intermediate_values.values()) == pytest.approx(want, rel=1e-12)
    assert t.value == pytest.approx(want[1], rel=1e-12) and t.value != 0.625


@pytest.mark.postgres
def test_the_dashboard_command_for_a_database_keeps_the_password_out(pg_url, tmp_path):
    """The command reads the URL from $NAS_STORAGE; expanded as a shell would, it opens the study."""
    import os
    import shlex
    import subprocess

    from nas.cluster.storage import dashboard_command

    study = optuna.create_study(study_name="dash", storage=open_storage(pg_url, tmp_path))
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    command = dashboard_command(pg_url, tmp_path)
    assert PASSWORD not in command and "nas:***@127.0.0.1" in command
    assert shlex.split(command, comments=True) == ["optuna-dashboard", "$NAS_STORAGE"]
    # the storage argument as the user's shell hands it to optuna-dashboard, with NAS_STORAGE set
    echo = command.replace("optuna-dashboard", "printf %s", 1)
    storage = subprocess.run(["sh", "-c", echo], capture_output=True, text=True, check=True,
                             env={**os.environ, "NAS_STORAGE": pg_url}).stdout
    assert storage == pg_url
    assert [t.value for t in optuna.load_study(study_name="dash", storage=storage).trials] == \
        [t.value for t in study.trials]


def test_the_dashboard_command_for_sqlite_is_the_url(tmp_path):
    import shlex

    from nas.cluster.storage import dashboard_command

    url = f"sqlite:///{tmp_path / 'dash.db'}"
    study = optuna.create_study(study_name="dash", storage=open_storage(url, tmp_path))
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    argv = shlex.split(dashboard_command(url, tmp_path))
    assert argv == ["optuna-dashboard", url]
    assert len(optuna.load_study(study_name="dash", storage=argv[1]).trials) == 2
