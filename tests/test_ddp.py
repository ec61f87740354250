"""Data-parallel proxy training: 2 CPU processes under torchrun with gloo.

The test runs this file under ``python -m torch.distributed.run``; each rank writes what it
saw to a JSON file, and the test checks that the ranks agree and their shards are disjoint.
"""
from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn as nn

ROOT = Path(__file__).resolve().parents[1]


def small_cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10),
    )


def _worker(out_dir: Path) -> None:
    import optuna
    import torch.distributed as dist

    from nas.proxy.data import DataConfig, load_data
    from nas.proxy.train import TrainConfig, evaluate, train_proxy

    rank = int(os.environ["RANK"])
    torch.manual_seed(100 + rank)  # a different init on each rank: DDP starts from rank 0's
    data = load_data(DataConfig("digits", resolution=16))
    config = TrainConfig(epochs=2, batch_size=32, lr=0.2, warmup_epochs=0.2, threads=1)
    model = small_cnn()
    result = train_proxy(model, data, config)
    world = dist.get_world_size()
    # The final model scored here alone on the whole held-out split (statistics as left by the run).
    alone = evaluate(model, data, dataclasses.replace(config, bn_recalibrate_batches=0), device=torch.device("cpu"))
    shards = {split: data.shard(split, epoch=1, seed=config.seed, rank=rank, world_size=world).tolist()
              for split in ("train", "val")}
    trial = optuna.create_study(pruner=optuna.pruners.ThresholdPruner(lower=0.999)).ask() if rank == 0 else None
    try:
        train_proxy(small_cnn(), data, config, trial=trial)
        pruned = False
    except optuna.TrialPruned:
        pruned = True
    state = {k: v.double().sum().item() for k, v in model.state_dict().items()}
    report = {"world": world, "result": dataclasses.asdict(result), "alone": alone, "shards": shards,
              "state": state, "pruned": pruned, "num_train": data.num_train, "num_val": data.num_val}
    (out_dir / f"rank{rank}.json").write_text(json.dumps(report))


@pytest.fixture(scope="module")
def ranks(tmp_path_factory) -> list[dict]:
    out = tmp_path_factory.mktemp("ddp")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           __file__, str(out)]
    run = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    return [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]


def test_both_ranks_return_the_same_all_reduced_metrics(ranks) -> None:
    a, b = ranks
    assert a["world"] == b["world"] == 2
    assert a["result"]["accuracy"] == b["result"]["accuracy"] > 0.6
    for key in ("top5", "loss", "epochs", "images", "train_loss"):
        assert a["result"][key] == pytest.approx(b["result"][key], rel=1e-9), key
    steps = 2 * (a["num_train"] // 2 // 32)
    assert a["result"]["images"] == steps * 32 * 2  # images over both processes


def test_metrics_cover_the_whole_held_out_split(ranks) -> None:
    for rank in ranks:
        top1, top5, loss = rank["alone"]
        assert top1 == rank["result"]["accuracy"]
        assert loss == pytest.approx(rank["result"]["loss"], rel=1e-6)


def test_ranks_end_with_the_same_weights_and_bn_statistics(ranks) -> None:
    a, b = ranks
    assert a["state"].keys() == b["state"].keys()
    for key in a["state"]:
        assert a["state"][key] == pytest.approx(b["state"][key], rel=1e-6, abs=1e-9), key


def test_shards_are_disjoint(ranks) -> None:
    a, b = (r["shards"] for r in ranks)
    assert not set(a["train"]) & set(b["train"])
    assert len(a["train"]) == len(b["train"]) == ranks[0]["num_train"] // 2
    assert not set(a["val"]) & set(b["val"])
    assert sorted(a["val"] + b["val"]) == list(range(ranks[0]["num_val"]))


def test_rank_zero_pruning_decision_stops_both_ranks(ranks) -> None:
    assert [r["pruned"] for r in ranks] == [True, True]


if __name__ == "__main__":
    _worker(Path(sys.argv[1]))
