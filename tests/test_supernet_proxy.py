"""The supernet as a proxy: nas-search --proxy supernet trains it in --out and scores candidates with
inherited weights; nas-proxy-check ranks with it; a supernet is never scored on images it trained on."""
from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import numpy as np
import optuna
import pytest
import torch
from optuna.storages.journal import JournalFileBackend, JournalStorage
from optuna.trial import TrialState

from nas.cli.proxy_check import main as proxy_check
from nas.cli.search import main as search
from nas.proxy import DataConfig, TrainConfig, evaluate, load_data
from nas.supernet import SupernetError, load_supernet, read_checkpoint
from nas.supernet.provenance import check_held_out
from search_spaces import build_model, resolve_arch
from search_spaces.space import default_space

# digits at 16 px, 256 training images (4 supernet steps per epoch), the default MnasNet space
TASK = ["--dataset", "digits", "--proxy-resolution", "16", "--train-size", "256", "--batch-size", "64",
        "--threads", "1", "--device", "cpu"]
SEARCH = [*TASK, "--proxy", "supernet", "--supernet-epochs", "3", "--supernet-random-subnets", "1",
          "--supernet-bn-batches", "2", "--pruner", "none", "--quiet"]


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def trials(out: Path) -> list[optuna.trial.FrozenTrial]:
    storage = JournalStorage(JournalFileBackend(str(out / "study.journal")))
    return optuna.load_study(study_name="nas-search", storage=storage).trials


def last_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    return err[-1] if err else ""


@pytest.fixture(scope="module")
def searched(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("supernet-search") / "run"
    assert search([*SEARCH, "--trials", "4", "--seed-arch", "efficientnet-b0", "--out", str(out)]) == 0
    return out


def test_the_search_trains_the_supernet_in_out_on_its_training_split(searched) -> None:
    state = read_checkpoint(searched / "supernet.pt")
    assert state["step"] == 3 * (256 // 64)  # 3 epochs of 4 full batches
    assert state["recipe"]["epochs"] == 3.0 and state["recipe"]["batch_size"] == 64
    assert state["recipe"]["random_subnets"] == 1  # --supernet-random-subnets (the default is 2)
    data = load_data(DataConfig(name="digits", train_size=256, resolution=16, seed=0))
    assert state["trained_on"]["num_train"] == 256
    assert torch.equal(state["trained_on"]["train_index"], torch.from_numpy(np.sort(data.train.source_index)))
    assert not np.intersect1d(data.val.source_index, data.train.source_index).size


def test_each_trial_scores_the_extracted_network_with_recalibrated_bn(searched) -> None:
    """A trial's accuracy is what the stand-alone network with the supernet's weights scores."""
    done = [t for t in trials(searched) if t.state == TrialState.COMPLETE and "duplicate_of" not in t.user_attrs]
    assert len(done) == 4 and done[0].user_attrs["arch"] == resolve_arch("efficientnet-b0").to_str()
    space = default_space()
    supernet = load_supernet(searched / "supernet.pt")
    data = load_data(DataConfig(name="digits", train_size=256, resolution=16, seed=0))
    for t in done[:2]:
        arch = space.from_params(t.params)
        assert arch.to_str() == t.user_attrs["arch"]
        model = build_model(arch, num_classes=10, in_chans=3)
        model.load_state_dict(supernet.extract(arch))  # the extraction, loaded as nas-export would
        config = TrainConfig(batch_size=64, device="cpu", threads=1, bn_recalibrate_batches=2)
        accuracy = evaluate(model, data, config, device=torch.device("cpu"))[0]
        assert t.user_attrs["accuracy"] == pytest.approx(accuracy, abs=1e-9), t.number
        assert 0 <= accuracy <= 1 and t.user_attrs["epochs"] == 0.0


def test_a_rerun_resumes_the_study_and_keeps_the_trained_supernet(searched) -> None:
    before = sha(searched / "supernet.pt")
    assert search([*SEARCH, "--trials", "6", "--seed-arch", "efficientnet-b0", "--out", str(searched)]) == 0
    assert sha(searched / "supernet.pt") == before
    assert sum(t.state == TrialState.COMPLETE for t in trials(searched)) >= 6


def test_a_study_refuses_another_supernet_and_is_left_as_it_was(searched, tmp_path, capsys) -> None:
    other = tmp_path / "other"
    assert search([*SEARCH, "--supernet-epochs", "1", "--trials", "1", "--out", str(other)]) == 0
    journal = sha(searched / "study.journal")
    code = search([*SEARCH, "--trials", "8", "--supernet", str(other / "supernet.pt"), "--out", str(searched)])
    assert code == 2
    assert "supernet_digest" in last_line(capsys)
    assert sha(searched / "study.journal") == journal


def test_likelihood_scores_are_exp_of_minus_the_held_out_loss_and_a_study_keeps_its_score(searched, tmp_path,
                                                                                            capsys) -> None:
    out = tmp_path / "likelihood"
    given = [*SEARCH, "--supernet", str(searched / "supernet.pt"), "--trials", "2", "--out", str(out)]
    assert search([*given, "--supernet-score", "likelihood"]) == 0
    done = [t for t in trials(out) if t.state == TrialState.COMPLETE]
    space, supernet = default_space(), load_supernet(searched / "supernet.pt")
    data = load_data(DataConfig(name="digits", train_size=256, resolution=16, seed=0))
    config = TrainConfig(batch_size=64, device="cpu", threads=1, bn_recalibrate_batches=2)
    for t in done:
        model = build_model(space.from_params(t.params), num_classes=10, in_chans=3)
        model.load_state_dict(supernet.extract(space.from_params(t.params)))
        loss = evaluate(model, data, config, device=torch.device("cpu"))[2]
        assert t.user_attrs["accuracy"] == pytest.approx(float(np.exp(-loss)), rel=1e-5), t.number  # float32 sums
    journal = sha(out / "study.journal")
    assert search([*given, "--trials", "3"]) == 2  # the default score is accuracy: not mixed into this study
    assert "supernet_score='likelihood'" in last_line(capsys)
    assert sha(out / "study.journal") == journal


def test_a_trained_proxy_study_refuses_supernet_scores(searched, tmp_path, capsys) -> None:
    out = tmp_path / "trained"
    assert search([*TASK, "--epochs", "0.25", "--pruner", "none", "--quiet", "--trials", "1", "--out", str(out)]) == 0
    journal = sha(out / "study.journal")
    code = search([*SEARCH, "--supernet", str(searched / "supernet.pt"), "--trials", "2", "--out", str(out)])
    assert code == 2 and "was made with proxy='train', but this run has proxy='supernet'" in last_line(capsys)
    assert sha(out / "study.journal") == journal


def test_a_supernet_is_not_scored_on_a_split_holding_its_training_images(searched, tmp_path, capsys) -> None:
    """--seed 1 draws another held-out split; it overlaps the training images of the seed-0 supernet."""
    moved = load_data(DataConfig(name="digits", train_size=256, resolution=16, seed=1))
    trained = read_checkpoint(searched / "supernet.pt")["trained_on"]["train_index"].numpy()
    shared = np.intersect1d(moved.val.source_index, trained).size
    assert shared > 0
    out = tmp_path / "moved"
    code = search([*SEARCH, "--seed", "1", "--trials", "2", "--supernet", str(searched / "supernet.pt"),
                   "--out", str(out)])
    line = last_line(capsys)
    assert code == 2 and f"shares {shared} of its {len(moved.val)} images" in line, line
    assert not (out / "study.journal").exists()
    with pytest.raises(SupernetError, match="shares"):
        check_held_out(load_supernet(searched / "supernet.pt"), moved)


@pytest.mark.parametrize(("args", "says"), [
    (["--proxy", "train", "--supernet", "x.pt"], "--supernet must be given with --proxy supernet"),
    (["--supernet", "missing.pt"], "does not exist"),
    (["--supernet-epochs", "0"], "--supernet-epochs must be a number of epochs > 0, but got 0.0"),
    (["--supernet-random-subnets", "-1"],
     "--supernet-random-subnets must be a whole number of subnets >= 0, but got -1"),
    (["--supernet-bn-batches", "-1"], "--supernet-bn-batches must be a whole number of batches >= 0, but got -1"),
    (["--supernet-finetune", "-0.5"], "--supernet-finetune must be a number of epochs >= 0, but got -0.5"),
    (["--supernet-score", "top5"], "--supernet-score must be one of accuracy, likelihood, but got 'top5'"),
    (["--supernet-score", "likelihood", "--supernet-finetune", "0.1"],
     "--supernet-score must be accuracy with --supernet-finetune"),
])
def test_bad_supernet_options_are_refused_in_one_line(args, says, tmp_path, capsys) -> None:
    out = tmp_path / "run"
    assert search([*SEARCH, *args, "--trials", "1", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("nas-search: error: ") and says in err[0], err
    assert not out.exists() or not any(out.iterdir())


def test_a_file_that_is_not_a_supernet_is_refused(tmp_path, capsys) -> None:
    bogus = tmp_path / "bogus.pt"
    torch.save({"weights": torch.zeros(2)}, bogus)
    assert search([*SEARCH, "--supernet", str(bogus), "--trials", "1", "--out", str(tmp_path / "run")]) == 2
    assert "is not a supernet checkpoint" in last_line(capsys)


def test_proxy_check_ranks_with_inherited_and_fine_tuned_weights(searched, tmp_path, capsys) -> None:
    out = tmp_path / "check"
    args = [*TASK, "--archs", "4", "--proxies", "supernet,supernet-loss,supernet+ft:0.25", "--reference-epochs", "0.5",
            "--reference-seeds", "1", "--supernet", str(searched / "supernet.pt"), "--supernet-bn-batches", "2",
            "--out", str(out)]
    assert proxy_check(args) == 0
    records = [json.loads(line) for line in (out / "scores.jsonl").read_text().splitlines()[1:]]
    digest = hashlib.sha256((searched / "supernet.pt").read_bytes()).hexdigest()[:16]
    methods = {r["method"] for r in records}
    assert methods == {f"supernet@{digest}/bn2", f"supernet-loss@{digest}/bn2", f"supernet+ft:0.25@{digest}/bn2",
                       "train:0.5"}
    losses = [r["score"] for r in records if r["method"].startswith("supernet-loss@")]
    assert len(losses) == 4 and all(-20 < x < 0 for x in losses)  # minus a cross-entropy: higher is better
    assert all(0 <= r["score"] <= 1 for r in records if not r["method"].startswith("supernet-loss@"))
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert len(rows) == 4 and {"supernet", "supernet-loss", "supernet+ft:0.25"} <= set(rows[0])
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["proxies"]) == {"supernet", "supernet-loss", "supernet+ft:0.25"}
    capsys.readouterr()
    assert proxy_check(args) == 0  # everything cached: nothing recomputed
    assert len((out / "scores.jsonl").read_text().splitlines()) == 1 + len(records)


@pytest.mark.parametrize(("args", "says"), [
    (["--proxies", "supernet,train:1"], "--proxies supernet needs --supernet, the trained supernet file"),
    (["--proxies", "train:0.5", "--supernet", "x.pt"],
     "--supernet must be given only with --proxies supernet, supernet-loss or supernet+ft:EPOCHS, as a trained "
     "supernet file, "
     "but got 'x.pt'"),
    (["--proxies", "supernet+ft:0"], "expected supernet+ft:EPOCHS with EPOCHS > 0"),
    (["--proxies", "supernet-loss:2"], "expected train:EPOCHS (like train:1), zc:NAME (like zc:synflow), supernet, "
                                       "supernet-loss or supernet+ft:EPOCHS"),
    (["--proxies", "supernet", "--supernet", "missing.pt"], "does not exist"),
])
def test_proxy_check_refuses_bad_supernet_options(args, says, tmp_path, capsys) -> None:
    assert proxy_check([*TASK, "--archs", "3", *args, "--out", str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and says in err[0], err
