"""nas-search end to end on real data (scikit-learn's digits), with a journal-file study."""
from __future__ import annotations

import csv
import hashlib
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.storages.journal import JournalFileBackend, JournalStorage
from optuna.trial import TrialState

from nas.cli.search import main
from search_spaces import build_model, get_preset, load_arch

FAST = ["--dataset", "digits", "--proxy-resolution", "16", "--epochs", "1", "--batch-size", "128",
        "--lr", "0.05", "--threads", "1", "--pruner", "none", "--quiet"]
B0_MACS = 401_659_392  # fvcore convention, docs/reference.md section 2


def load(out: Path, name: str = "nas-search") -> optuna.Study:
    return optuna.load_study(study_name=name, storage=JournalStorage(JournalFileBackend(str(out / "study.journal"))))


def snapshot(out: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(out.iterdir()) if p.is_file()}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("search") / "run"
    assert main([*FAST, "--trials", "3", "--seed-arch", "efficientnet-b0", "--out", str(out)]) == 0
    return out


def test_outputs(run_dir):
    for name in ("best.yaml", "leaderboard.csv", "pareto.png", "history.png", "manifest.json", "study.journal"):
        assert (run_dir / name).is_file(), name
    best = load_arch(run_dir / "best.yaml")
    assert build_model(best, num_classes=10).eval()(__import__("torch").zeros(1, 3, 32, 32)).shape == (1, 10)
    rows = list(csv.DictReader((run_dir / "leaderboard.csv").open()))
    assert {"number", "arch", "accuracy", "macs", "params", "reward", "state"} <= set(rows[0])
    trained = [r for r in rows if r["state"] == "COMPLETE" and not r["duplicate_of"]]
    assert len(trained) == 3
    # the seed architecture is trial 0 and is EfficientNet-B0 itself
    assert rows[0]["arch"] == get_preset("efficientnet-b0").to_str()
    assert int(rows[0]["macs"]) == B0_MACS
    assert int(rows[0]["params"]) == 5_288_548  # costs are of the deployment network (1000 classes)


def test_trial_attributes_and_reward(run_dir):
    study = load(run_dir)
    done = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert len(done) == 3
    for t in done:
        ua = t.user_attrs
        for key in ("accuracy", "macs", "params", "reward", "arch", "seconds", "epochs", "images"):
            assert key in ua, key
        assert 0.0 <= ua["accuracy"] <= 1.0 and ua["images"] > 0 and ua["seconds"] > 0
        assert t.value == pytest.approx(ua["accuracy"] * (ua["macs"] / 400e6) ** -0.07)
        assert 400e6 / 4 <= ua["macs"] <= 400e6 * 4
    best = max(done, key=lambda t: t.value)
    assert f"trial {best.number}," in (run_dir / "best.yaml").read_text().splitlines()[0]


def test_manifest(run_dir):
    m = json.loads((run_dir / "manifest.json").read_text())
    assert m["config"]["target_flops"] == 400_000_000 and m["config"]["trials"] == 3
    assert set(m["versions"]) == {"python", "torch", "optuna"}
    assert "git_commit" in m and m["host"] and len(m["space"]["digest"]) == 16
    assert m["seeds"]["seed"] == 0


def test_resume_trains_nothing_new(run_dir):
    before = len(load(run_dir).trials)
    assert main([*FAST, "--trials", "3", "--seed-arch", "efficientnet-b0", "--out", str(run_dir)]) == 0
    assert len(load(run_dir).trials) == before


def test_dry_run_touches_nothing(tmp_path, capsys):
    out = tmp_path / "never"
    assert main(["--dry-run", "--seed-arch", "efficientnet-b0,mnasnet-a1", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "5.940e+20 architectures" in text and "42 parameters" in text
    assert "efficientnet-b0: 401.7M MACs, 5.29M params" in text
    assert not out.exists()


def _bad_space(tmp_path: Path) -> str:
    text = (Path(__file__).parents[1] / "search_spaces/spaces/mnasnet.yaml").read_text()
    p = tmp_path / "bad_space.yaml"
    p.write_text(text.replace("kernels: [3, 5]", "kernels: [3, 4]"))
    return str(p)


BAD = {
    "flops-malformed": (["--target-flops", "40X0M"], "40X0M"),
    "flops-negative": (["--target-flops", "-400M"], "-400M"),
    "trials-zero": (["--trials", "0"], "0"),
    "dataset": (["--dataset", "imagenette"], "imagenette"),
    "sampler": (["--sampler", "cmaes"], "cmaes"),
    "pruner": (["--pruner", "asha"], "asha"),
    "data-dir": (["--dataset", "fashion-mnist", "--data-dir", "/nonexistent/fmnist"], "/nonexistent/fmnist"),
    "config-missing": (["--config", "/nonexistent/c.yaml"], "/nonexistent/c.yaml"),
    "config-malformed": (["--config", "{tmp}/malformed.yaml"], "malformed.yaml"),
    "config-unknown-key": (["--config", "{tmp}/unknown.yaml"], "target_flop"),
    "space-invalid": (["--space", "{space}"], "kernels: bad value 4"),
    "storage-unknown": (["--storage", "redis2://localhost/0"], "redis2"),
    "storage-unreachable": (["--storage", "postgresql://nas:s3cret@127.0.0.1:9/studies"], "127.0.0.1:9"),
    "other-target": (["--target-flops", "300M"], "300000000"),
    "seed-not-in-space": (["--seed-arch", "efficientnet-b3"], "width_mult=1.2"),
    "seed-too-large": (["--seed", "4294967296"], "--seed must be a whole number in 0..2147483647, but got 4294967296"),
    "latency-table-folder": (["--cost", "latency", "--target-latency", "15ms", "--latency-table", "{tmp}"],
                             "--latency-table must be a file path (created when missing), not a folder"),
    "nproc-storage-unreachable": (["--nproc-per-node", "2", "--storage", "postgresql://nas:s3cret@127.0.0.1:9/studies"],
                                  "127.0.0.1:9"),  # refused once, before torchrun starts a process per GPU
    "target-unreachable": (["--target-flops", "1e30"], "misses every architecture of the space"),
    "target-too-small": (["--target-flops", "1M"], "the band [2.5e+05, 4e+06] (--flops-band 4) misses"),
}


def test_the_reachable_range_holds_every_sampled_architecture():
    """The range check_reachable refuses outside of contains what the search itself samples."""
    import optuna

    from nas.search import SearchConfig
    from nas.search.objective import check_reachable
    from search_spaces import count_cost, default_space

    space, cfg = default_space(), SearchConfig()
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    macs = [count_cost(space.sample(study.ask()), cfg.resolution).macs for _ in range(200)]
    for target in (min(macs) / 3.9, max(macs) * 3.9):  # each band just reaches a sampled architecture
        check_reachable(SearchConfig(target_flops=int(target)), space)


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_exits_2_and_keeps_the_study(case, run_dir, tmp_path, capsys):
    (tmp_path / "malformed.yaml").write_text("trials: [1, 2\n")
    (tmp_path / "unknown.yaml").write_text("target_flop: 400M\n")
    args, needle = BAD[case]
    args = [a.format(tmp=tmp_path, space=_bad_space(tmp_path)) for a in args]
    before = snapshot(run_dir)
    try:
        rc = main([*FAST, "--trials", "3", "--out", str(run_dir), *args])
    except SystemExit as exc:  # argparse
        rc = exc.code
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert len(err.splitlines()) == 1 and needle in err and "Traceback" not in err
    assert "s3cret" not in err
    assert snapshot(run_dir) == before


def test_bad_input_from_the_console_script(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "nas.cli.search", "--trials", "0", "--out", str(tmp_path / "x")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()] and "--trials" in proc.stderr
    assert not (tmp_path / "x").exists()


def test_nsga2_gives_a_pareto_front(tmp_path):
    out = tmp_path / "moo"
    assert main([*FAST, "--trials", "2", "--sampler", "nsga2", "--out", str(out)]) == 0
    study = load(out)
    assert len(study.directions) == 2
    front = study.best_trials
    assert front and all(len(t.values) == 2 for t in front)
    assert (out / "best.yaml").is_file() and (out / "pareto.png").stat().st_size > 1000


def test_ctrl_c_keeps_the_study_and_resumes(tmp_path):
    out = tmp_path / "int"
    cmd = [sys.executable, "-m", "nas.cli.search", *FAST, "--trials", "1000", "--out", str(out)]
    # SIGINT as at a terminal, even where pytest runs as a shell's background job (which ignores
    # SIGINT, and an ignored SIGINT is inherited: Python then installs no KeyboardInterrupt handler)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 120
    while time.time() < deadline:  # wait until a trial has finished and another is running
        time.sleep(0.5)
        if (out / "study.journal").exists():
            trials = load(out).trials
            if any(t.state == TrialState.COMPLETE for t in trials) and trials[-1].state == TrialState.RUNNING:
                break
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr[-2000:]
    assert "Resume with: nas-search" in stderr and "Traceback" not in stderr
    trials = load(out).trials
    assert not any(t.state == TrialState.RUNNING for t in trials)
    done = sum(t.state == TrialState.COMPLETE for t in trials)
    assert (out / "leaderboard.csv").is_file()
    # resuming with one more trial trains exactly one more
    assert main([*FAST, "--trials", str(done + 1), "--out", str(out)]) == 0
    trained = [t for t in load(out).trials if t.state == TrialState.COMPLETE and t.user_attrs.get("trained")]
    assert len(trained) == done + 1


# -- a study written by the previous release resumes -------------------------------------------------------------
FIXTURES = Path(__file__).parent / "fixtures"
# The flags tests/fixtures/head_search/study.journal was written with (tests/fixtures/README.md).
HEAD_SEARCH = ["--dataset", "digits", "--proxy-resolution", "16", "--epochs", "1", "--batch-size", "64",
               "--train-size", "128", "--lr", "0.05", "--threads", "1", "--pruner", "none", "--quiet"]


def test_a_journal_written_by_the_previous_release_resumes(tmp_path):
    import shutil

    from nas.cluster.trials import counted

    out = tmp_path / "run"
    out.mkdir()
    shutil.copy(FIXTURES / "head_search" / "study.journal", out / "study.journal")
    before = load(out)
    old = [(t.number, t.params, t.value, t.user_attrs["accuracy"]) for t in before.trials]
    assert len(old) == 2 and sum(counted(t) for t in before.trials) == 2
    assert main([*HEAD_SEARCH, "--trials", "3", "--out", str(out)]) == 0  # its settings are not refused
    study = load(out)
    assert sum(counted(t) for t in study.trials) == 3  # one more trained trial
    assert [(t.number, t.params, t.value, t.user_attrs["accuracy"]) for t in study.trials[:2]] == old
    assert study.user_attrs == before.user_attrs  # the stored settings, as the previous release wrote them
    # the same trials as the previous release's own resume of it: the worker takes the free slot 0 again, so its
    # sampler proposes trials 0 and 1 again (reused as duplicates), then a new architecture
    columns = ("number", "state", "arch", "macs", "params", "duplicate_of")
    expected = [{k: r[k] for k in columns} for r in csv.DictReader((FIXTURES / "head_search" /
                                                                     "resumed_leaderboard.csv").open())]
    assert [{k: r[k] for k in columns} for r in csv.DictReader((out / "leaderboard.csv").open())] == expected
    # and other settings are still refused
    assert main([*HEAD_SEARCH, "--trials", "4", "--dataset", "synthetic", "--out", str(out)]) == 2
