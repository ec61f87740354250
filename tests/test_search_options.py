"""nas-search beyond the paper's proxy: zero-cost scores as the objective, pre-screening, latency as
the cost, and the policy-gradient controller; each end to end on digits with a journal-file study."""
from __future__ import annotations

import json

import pytest
import torch
from optuna.trial import TrialState
from test_search_cli import FAST, load, snapshot

from nas.cli.search import main
from nas.cluster.trials import counted
from nas.proxy.data import DataConfig, load_data
from nas.search.config import ZC_NAMES
from nas.search.reward import reward
from search_spaces import build_model, count_cost, default_space

pytestmark = pytest.mark.usefixtures("one_thread")
SMALL = [*FAST, "--train-size", "256"]


def test_config_knows_every_zero_cost_proxy():
    from nas.proxy.zero_cost import ZC_PROXIES

    assert ZC_NAMES == ZC_PROXIES


def test_zero_cost_objective(tmp_path):
    from nas.proxy.zero_cost import score

    out = tmp_path / "zc"
    assert main([*SMALL, "--trials", "3", "--proxy", "zc:synflow", "--out", str(out)]) == 0
    study = load(out)
    done = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert len(done) == 3 and study.user_attrs["proxy"] == "zc:synflow"
    data = load_data(DataConfig(name="digits", resolution=16, train_size=256, seed=0))
    for t in done:
        assert t.user_attrs["epochs"] == 0 and t.user_attrs["images"] == 0  # nothing trained
        arch = default_space().from_params(t.params)
        torch.manual_seed(t.number)  # the trial's seed: --seed 0 + trial number
        model = build_model(arch, num_classes=10, in_chans=data.in_chans)
        x, y = next(data.batches("train", 128, seed=t.number))
        expected = score(model, x, y, "synflow")
        assert t.user_attrs["accuracy"] == pytest.approx(expected, rel=1e-9)
        assert t.value == pytest.approx(reward(expected, count_cost(arch).macs, 400e6), rel=1e-9)


def test_prescreen_queues_the_best_k_once(tmp_path):
    out = tmp_path / "pre"
    argv = [*SMALL, "--trials", "4", "--prescreen", "12:3", "--prescreen-proxy", "naswot", "--out", str(out)]
    assert main(argv) == 0
    study = load(out)
    record = study.user_attrs["prescreen"]
    assert record["proxy"] == "naswot" and record["sampled"] == 12 and record["queued"] == 3
    first = sorted(study.trials, key=lambda t: t.number)[:3]
    assert [t.user_attrs["prescreen_rank"] for t in first] == [0, 1, 2]
    scores = [t.user_attrs["prescreen_score"] for t in first]
    assert scores == sorted(scores, reverse=True) and [round(s, 4) for s in scores] == record["scores"]
    for t in first:
        assert 100e6 <= t.user_attrs["macs"] <= 1600e6  # in the band [T/4, 4T]
    n = len(study.trials)
    assert main([*argv[:-4], "--trials", "5", "--prescreen", "12:3", "--out", str(out)]) == 0  # resume
    study = load(out)
    assert sum(counted(t) for t in study.trials) == 5 and study.user_attrs["prescreen"] == record
    assert not any("prescreen_rank" in t.user_attrs for t in study.trials[n:])  # no second pre-screen


@pytest.mark.parametrize("argv, needle", [
    (["--proxy", "zc:foo"], "--proxy must be one of train, supernet, zc:synflow"),
    (["--proxy", "train:1"], "--proxy must be one of"),
    (["--prescreen", "3:5"], "--prescreen must be K:k"),
    (["--prescreen", "20"], "--prescreen must be K:k"),
    (["--prescreen", "20:2", "--prescreen-proxy", "params"], "--prescreen-proxy must be one of synflow"),
    (["--cost", "latency"], "--target-latency must be given with --cost latency"),
    (["--cost", "energy"], "--cost must be one of"),
    (["--cost", "latency", "--target-latency", "fast"], "'fast'"),
    (["--cost", "latency", "--target-latency", "-5ms"], "'-5ms'"),
    (["--sampler", "ppo"], "--sampler must be one of"),
])
def test_bad_options_exit_2_and_touch_nothing(argv, needle, tmp_path, capsys):
    out = tmp_path / "run"
    assert main([*SMALL, "--trials", "1", "--out", str(out)]) == 0
    before = snapshot(out)
    capsys.readouterr()
    try:
        code = main([*SMALL, "--trials", "2", "--out", str(out), *argv])
    except SystemExit as exc:
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2 and needle in err and len(err.strip().splitlines()) == 1, err
    assert snapshot(out) == before


def test_latency_as_the_cost(tmp_path):
    out = tmp_path / "lat"
    argv = [*SMALL, "--trials", "3", "--cost", "latency", "--target-latency", "2ms", "--flops-band", "1000",
            "--resolution", "64", "--out", str(out)]
    assert main(argv) == 0
    study = load(out)
    done = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert len(done) == 3 and study.user_attrs["cost"] == "latency"
    for t in done:
        seconds = t.user_attrs["latency_ms"] / 1e3
        assert t.value == pytest.approx(reward(t.user_attrs["accuracy"], seconds, 2e-3), rel=1e-9)
    table = out / "latency_table.json"
    assert table.is_file()
    code = main([*argv[:-2], "--target-latency", "4ms", "--out", str(out)])
    assert code == 2  # a study made for 2 ms is not resumed for 4 ms


def test_policy_gradient_controller(tmp_path):
    out = tmp_path / "rl"
    assert main([*SMALL, "--trials", "4", "--sampler", "rl", "--out", str(out)]) == 0
    study = load(out)
    assert sum(counted(t) for t in study.trials) == 4
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["config"]["sampler"] == "rl" and (out / "best.yaml").is_file()
