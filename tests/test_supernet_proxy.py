"""The supernet as a proxy: nas-search --proxy supernet trains it in --out and scores candidates with
inherited weights; nas-proxy-check ranks with it; a supernet is never scored on images it trained on."""
from __future__ import annotations

import csv
import dataclasses
import hashlib
import importlib
import json
from pathlib import Path

import numpy as np
import optuna
import pytest
import torch
import torch.nn.functional as F
from optuna.storages.journal import JournalFileBackend, JournalStorage
from optuna.trial import TrialState

from nas.cli.proxy_check import main as proxy_check
from nas.cli.search import main as search
from nas.proxy import (
    DataConfig,
    ProxyData,
    TrainConfig,
    evaluate,
    fold_bn,
    load_data,
    recalibrate_bn,
    torch_threads,
)
from nas.supernet import SupernetError, extract_model, load_supernet, read_checkpoint, score
from nas.supernet.provenance import check_held_out
from nas.supernet.proxy import supernet_tag
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
    (["--supernet-val-images", "-1"],
     "--supernet-val-images must be a whole number of held-out images >= 0 (0: all of them), but got -1"),
    (["--val-size", "100", "--supernet-val-images", "101"],
     "--supernet-val-images must be at most the 100 held-out images that --val-size leaves, but got 101"),
    (["--supernet-val-images", "50", "--supernet-finetune", "0.1"],
     "--supernet-val-images must be 0 with --supernet-finetune"),
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
    (["--proxies", "supernet", "--supernet", "x.pt", "--supernet-val-images", "-1"],
     "--supernet-val-images must be a whole number of held-out images >= 0 (0: all of them), but got -1"),
    (["--proxies", "supernet", "--supernet", "x.pt", "--val-size", "100", "--supernet-val-images", "101"],
     "--supernet-val-images must be at most the 100 held-out images that --val-size leaves, but got 101"),
    (["--proxies", "supernet+ft:0.1", "--supernet", "x.pt", "--supernet-val-images", "50"],
     "--supernet-val-images must be 0 with --proxies supernet+ft:EPOCHS"),
])
def test_proxy_check_refuses_bad_supernet_options(args, says, tmp_path, capsys) -> None:
    assert proxy_check([*TASK, "--archs", "3", *args, "--out", str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and says in err[0], err


def digits() -> ProxyData:
    return load_data(DataConfig(name="digits", train_size=256, resolution=16, seed=0))


def test_fold_bn_folds_every_conv_bn_pair_into_the_conv_with_the_same_outputs() -> None:
    torch.manual_seed(0)
    model = build_model(resolve_arch("efficientnet-b0"), num_classes=10, in_chans=3)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d) and m.running_mean is not None and m.running_var is not None:
            m.running_mean.normal_()
            m.running_var.uniform_(0.5, 2.0)
    with pytest.raises(ValueError, match="training mode"):
        fold_bn(model.train())
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        expected = model.eval()(x)
        folded = fold_bn(model)
        assert folded is model and not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
        assert torch.allclose(model(x), expected, rtol=1e-4, atol=1e-5)


def test_folded_scoring_equals_the_unfolded_evaluation(searched, monkeypatch) -> None:
    folded: list[bool] = []

    def spy(model: torch.nn.Module) -> torch.nn.Module:
        out = fold_bn(model)
        folded.append(not any(isinstance(m, torch.nn.BatchNorm2d) for m in out.modules()))
        return out

    module = importlib.import_module("nas.supernet.score")  # the attribute nas.supernet.score is the function
    monkeypatch.setattr(module, "fold_bn", spy)
    supernet, data, space = load_supernet(searched / "supernet.pt"), digits(), default_space()
    config = TrainConfig(batch_size=64, device="cpu", threads=1)
    for arch in (resolve_arch("efficientnet-b0"), space.from_params(trials(searched)[1].params)):
        loss = score(supernet, arch, data, bn_batches=2, config=config, metric="loss")
        accuracy = score(supernet, arch, data, bn_batches=2, config=config)
        with torch_threads(1):  # as score() runs it: many threads on a small, busy machine take 50x longer
            top1, _, unfolded = evaluate(extract_model(supernet, arch), data,
                                         dataclasses.replace(config, bn_recalibrate_batches=2),
                                         device=torch.device("cpu"))
        assert loss == pytest.approx(-unfolded, rel=1e-5)
        assert abs(accuracy - top1) * data.num_val <= 1 + 1e-9
    assert folded == [True] * 4


def test_evaluate_reads_every_held_out_image_with_val_images_none_or_0(searched) -> None:
    supernet, data = load_supernet(searched / "supernet.pt"), digits()
    model = extract_model(supernet, resolve_arch("efficientnet-b0"))
    config = TrainConfig(batch_size=64, device="cpu", threads=1)
    with torch_threads(1):
        every, zero, first = (evaluate(model, data, config, device=torch.device("cpu"), val_images=n)
                              for n in (None, 0, 40))
    assert every == zero and every != first  # 0 is not "no images" (a division by zero before)
    assert first[0] * 40 == pytest.approx(round(first[0] * 40))  # 40 images: hits are whole


def test_val_images_scores_the_first_held_out_images(searched) -> None:
    supernet, data, arch = load_supernet(searched / "supernet.pt"), digits(), resolve_arch("efficientnet-b0")
    config = TrainConfig(batch_size=64, device="cpu", threads=1)
    model = extract_model(supernet, arch)  # the reference, by hand: recalibrate, then the first 50 images
    x, y = next(data.batches("val", data.num_val))
    with torch_threads(1), torch.no_grad():
        recalibrate_bn(model, data.batches("calib", 64, seed=config.seed), 2)
        logits = model.eval()(x[:50])
    loss = score(supernet, arch, data, bn_batches=2, config=config, metric="loss", val_images=50)
    accuracy = score(supernet, arch, data, bn_batches=2, config=config, val_images=50)
    assert loss == pytest.approx(-F.cross_entropy(logits, y[:50]).item(), rel=1e-5)
    assert abs(accuracy * 50 - (logits.argmax(1) == y[:50]).sum().item()) <= 1 + 1e-9
    assert score(supernet, arch, data, bn_batches=2, config=config, val_images=data.num_val) == \
        score(supernet, arch, data, bn_batches=2, config=config)
    too_many = data.num_val + 1
    with pytest.raises(SupernetError, match=rf"val_images must be .* in 0\.\.{data.num_val} .* but got {too_many}$"):
        score(supernet, arch, data, bn_batches=2, config=config, val_images=too_many)
    with pytest.raises(SupernetError, match="val_images must be 0 with fine-tuning"):
        score(supernet, arch, data, bn_batches=2, config=config, val_images=10, finetune_epochs=0.1)


def test_val_batches_with_a_limit_read_the_first_images_sharded_as_before() -> None:
    data = digits()
    labels = torch.cat([y for _, y in data.batches("val", 16, limit=37)])
    assert torch.equal(labels, data.val.labels[:37])
    shards = [data.shard("val", rank=r, world_size=2, limit=37) for r in range(2)]
    assert torch.equal(shards[0], torch.arange(0, 37, 2)) and torch.equal(shards[1], torch.arange(1, 37, 2))
    for r in range(2):
        got = torch.cat([y for _, y in data.batches("val", 16, rank=r, world_size=2, limit=37)])
        assert torch.equal(got, data.val.labels[shards[r]])
    assert torch.equal(data.shard("val", limit=data.num_val + 5), torch.arange(data.num_val))
    with pytest.raises(ValueError, match="'val' split only"):
        data.shard("calib", limit=10)


def test_a_study_keeps_its_held_out_images_and_an_older_study_resumes_with_all(searched, tmp_path, capsys) -> None:
    storage = JournalStorage(JournalFileBackend(str(searched / "study.journal")))
    assert "supernet_val_images" not in optuna.load_study(study_name="nas-search", storage=storage).user_attrs
    journal = sha(searched / "study.journal")
    assert search([*SEARCH, "--supernet-val-images", "40", "--trials", "4", "--out", str(searched)]) == 2
    assert "was made with supernet_val_images=0, but this run has supernet_val_images=40" in last_line(capsys)
    assert sha(searched / "study.journal") == journal
    assert search([*SEARCH, "--supernet-val-images", "0", "--trials", "4", "--seed-arch", "efficientnet-b0",
                   "--out", str(searched)]) == 0  # an older study: no key means all the images
    out = tmp_path / "v40"
    given = [*SEARCH, "--supernet", str(searched / "supernet.pt"), "--trials", "2", "--out", str(out)]
    assert search([*given, "--supernet-val-images", "40"]) == 0
    done = [t for t in trials(out) if t.state == TrialState.COMPLETE]
    assert done and all(t.user_attrs["accuracy"] * 40 == pytest.approx(round(t.user_attrs["accuracy"] * 40))
                        for t in done)  # hits out of 40 images
    journal = sha(out / "study.journal")
    for other in (["--supernet-val-images", "20"], []):
        assert search([*given, *other, "--trials", "3"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "was made with supernet_val_images=40" in err[0], err
    assert sha(out / "study.journal") == journal


def test_the_score_cache_tag_names_the_held_out_images_only_when_limited(searched, tmp_path) -> None:
    path = searched / "supernet.pt"
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    assert supernet_tag([path], 2) == supernet_tag([path], 2, 0) == f"@{digest}/bn2"  # old caches stay valid
    assert supernet_tag([path], 2, 30) == f"@{digest}/bn2/v30"
    out = tmp_path / "check"
    assert proxy_check([*TASK, "--archs", "3", "--proxies", "supernet-loss", "--reference-epochs", "0.1",
                        "--reference-seeds", "1", "--supernet", str(path), "--supernet-bn-batches", "2",
                        "--supernet-val-images", "30", "--out", str(out)]) == 0
    records = [json.loads(line) for line in (out / "scores.jsonl").read_text().splitlines()[1:]]
    assert {r["method"] for r in records} == {f"supernet-loss@{digest}/bn2/v30", "train:0.1"}
