"""Trials on several processes: ``nas-search --nproc-per-node 2`` on CPU (gloo), DDP inside each trial.

Rank 0 talks to the study; both ranks train every trial's network on their half of the data;
rank 0 checks that the ranks agree on the result before it records it (``nas.cluster.torchrun.Ranks``).
"""
from __future__ import annotations

import optuna
from conftest import FAST, audit
from optuna.storages.journal import JournalFileBackend, JournalStorage
from optuna.trial import TrialState


def test_two_processes_per_trial(workers, tmp_path):
    out = tmp_path / "run"
    proc = workers.start([*FAST, "--trials", "2", "--nproc-per-node", "2", "--out", str(out)])
    assert proc.wait(timeout=400) == 0, workers.output(proc)[-4000:]
    log = workers.output(proc)
    assert "2 process(es) per trial" in log and "Traceback" not in log
    study = optuna.load_study(study_name="nas-search",
                              storage=JournalStorage(JournalFileBackend(str(out / "study.journal"))))
    audit(study, 2, 1)
    done = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert done and all(t.user_attrs["world_size"] == 2 for t in done)
    # 256 training images, 128 per rank, batches of 64 per rank: 2 steps x 64 images x 2 ranks
    assert all(t.user_attrs["images"] == 256 for t in done)
    assert (out / "best.yaml").is_file() and (out / "leaderboard.csv").is_file()
