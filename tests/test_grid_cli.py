"""``nas-grid-scale`` end to end: bad input, dry run, given coefficients, a real tiny grid search and its resume."""
from __future__ import annotations

import csv
import hashlib
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from scaling.cli import main
from scaling.search import next_candidate
from search_spaces import count_cost, load_arch

# docs/reference.md section 2: exact parameter counts of B1..B7.
REFERENCE_PARAMS = {1: 7_794_184, 2: 9_109_994, 3: 12_233_232, 4: 19_341_616, 5: 30_389_784, 6: 43_040_704,
                    7: 66_347_960}
CANDIDATE_COLUMNS = ("alpha", "beta", "gamma", "product", "params", "macs", "macs_ratio")  # the list
# A grid of {1, 1.5, 2} with |α·β²·γ² − 2| ≤ 0.25 holds exactly (2, 1, 1), (1, 1.5, 1) and (1, 1, 1.5).
TINY_GRID = ["--step", "0.5", "--tolerance", "0.25"]
# A small base network (an architecture file, as nas-search's best.yaml is) keeps the real training short.
TINY_BASE = """name: tiny
stem_channels: 8
stages: [ds_r1_k3_s1_e1_c8_se0.25, ir_r1_k3_s2_e3_c16_se0.25, ir_r2_k5_s2_e3_c24_se0.25]
head_channels: 64
resolution: 224
"""
TINY_PROXY = ["--dataset", "digits", "--proxy-resolution", "16", "--val-size", "0.2", "--train-size", "128",
              "--epochs", "1", "--batch-size", "32", "--lr", "0.05", "--threads", "1", "--seed", "0"]


def run_main(argv: list[str], capsys) -> tuple[int, str, str]:
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse errors
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def snapshot(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open() as f:
        return list(csv.DictReader(f))


@pytest.fixture
def existing_run(tmp_path) -> Path:
    """An output directory holding a study (default journal storage) and another file."""
    out = tmp_path / "run"
    out.mkdir()
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    storage = JournalStorage(JournalFileBackend(str(out / "study.journal")))
    study = optuna.create_study(study_name="nas-grid-scale", storage=storage, direction="maximize")
    study.enqueue_trial({"candidate": 0})
    (out / "coefficients.yaml").write_text("alpha: 1.2\n")
    return out


@pytest.mark.parametrize("argv,needle", [
    (["--alpha", "0.9", "--beta", "1.1", "--gamma", "1.15"], "0.9"),
    (["--alpha", "1.2", "--beta", "1.1", "--gamma", "0.99"], "--gamma"),
    (["--alpha", "1.2"], "--beta"),
    (["--step", "0"], "--step"),
    (["--step", "-0.05"], "-0.05"),
    (["--step", "abc"], "'abc'"),
    (["--tolerance", "0.001", "--step", "0.3"], "nearest products"),
    (["--max", "0.5"], "0.5"),
    (["--phi", "0"], "--phi"),
    (["--mode", "tf"], "'tf'"),
    (["--dataset", "imagenet21k"], "imagenet21k"),
])
def test_bad_input_is_one_line_exit_2_and_touches_nothing(argv, needle, existing_run, capsys):
    before = snapshot(existing_run)
    code, out, err = run_main([*argv, "--out", str(existing_run)], capsys)
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and needle in err, err
    assert snapshot(existing_run) == before


def test_base_that_does_not_parse(existing_run, tmp_path, capsys):
    bad = tmp_path / "best.yaml"
    bad.write_text("stages: [ir_r2_k3_s2_e6_c24\n  name: : :\n")
    before = snapshot(existing_run)
    code, _, err = run_main(["--base", str(bad), "--out", str(existing_run)], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert str(bad) in err and "does not parse" in err
    code, _, err = run_main(["--base", str(tmp_path / "missing.yaml"), "--out", str(existing_run)], capsys)
    assert code == 2 and "missing.yaml" in err and len(err.strip().splitlines()) == 1
    assert snapshot(existing_run) == before


def test_console_entry_point_exits_2(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "scaling.cli", "--step", "0", "--out", str(tmp_path / "x")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == ["nas-grid-scale: error: --step must be > 0, but got 0.0"]
    assert not (tmp_path / "x").exists()


def test_dry_run_writes_candidates_and_trains_nothing(tmp_path, capsys):
    out = tmp_path / "dry"
    code, stdout, _ = run_main(["--dry-run", "--out", str(out)], capsys)
    assert code == 0
    rows = read_csv(out / "candidates.csv")
    assert set(CANDIDATE_COLUMNS) <= set(rows[0])
    paper = [r for r in rows if (float(r["alpha"]), float(r["beta"]), float(r["gamma"])) == (1.2, 1.1, 1.15)]
    assert len(paper) == 1 and float(paper[0]["product"]) == pytest.approx(1.920, abs=5e-4)
    assert all(abs(float(r["product"]) - 2) <= 0.1 + 1e-9 for r in rows)
    assert sorted(p.name for p in out.iterdir()) == ["candidates.csv"]  # no study, no variants
    assert "109 candidates" in stdout  # printed plan


def test_official_family_from_given_coefficients(tmp_path, capsys):
    out = tmp_path / "official"
    code, stdout, _ = run_main(["--base", "efficientnet-b0", "--alpha", "1.2", "--beta", "1.1", "--gamma", "1.15",
                                "--mode", "official", "--out", str(out)], capsys)
    assert code == 0
    rows = {int(r["phi"]): r for r in read_csv(out / "variants.csv")}
    assert {phi: int(r["params"]) for phi, r in rows.items()} == REFERENCE_PARAMS
    assert all(float(r["ideal_ratio"]) == 2 ** phi for phi, r in rows.items())
    for phi, params in REFERENCE_PARAMS.items():
        assert count_cost(load_arch(out / "variants" / f"b{phi}.yaml")).params == params
    record = yaml.safe_load((out / "coefficients.yaml").read_text())
    assert (record["alpha"], record["beta"], record["gamma"], record["source"]) == (1.2, 1.1, 1.15, "given")
    assert "66,347,960" in stdout  # the printed table
    assert not (out / "study.journal").exists()  # nothing to search, nothing trained


def test_tiny_grid_search_on_digits_and_resume(tmp_path, capsys):
    out = tmp_path / "grid"
    (tmp_path / "best.yaml").write_text(TINY_BASE)
    argv = ["--base", str(tmp_path / "best.yaml"), *TINY_GRID, *TINY_PROXY, "--max-candidates", "2", "--phi", "1,2",
            "--out", str(out), "--quiet"]
    code, _, err = run_main(argv, capsys)
    assert code == 0, err
    rows = read_csv(out / "candidates.csv")
    assert {(float(r["alpha"]), float(r["beta"]), float(r["gamma"])) for r in rows} == \
        {(2.0, 1.0, 1.0), (1.0, 1.5, 1.0), (1.0, 1.0, 1.5)}
    trained = [r for r in rows if r["accuracy"]]
    assert len(trained) == 2
    for r in rows:  # resolution candidates train at round(16 * 1.5) = 24 px, the others at 16 px
        assert int(r["proxy_resolution"]) == (24 if float(r["gamma"]) == 1.5 else 16)
    record = yaml.safe_load((out / "coefficients.yaml").read_text())
    best = max(trained, key=lambda r: (float(r["accuracy"]), -int(r["macs"])))
    assert (record["alpha"], record["beta"], record["gamma"]) == (float(best["alpha"]), float(best["beta"]),
                                                                  float(best["gamma"]))
    assert record["source"] == "grid search" and len(record["candidates"]) == 3
    assert abs(record["product"] - 2) <= 0.25 + 1e-9
    for phi in (1, 2):
        arch = load_arch(out / "variants" / f"b{phi}.yaml")
        assert arch.depth_mult == pytest.approx(record["alpha"] ** phi)
    assert {"candidates.png", "variants.png", "variants.csv", "manifest.json", "study.journal"} <= \
        {p.name for p in out.iterdir()}

    journal = out / "study.journal"
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(journal)))
    n_trials = len(optuna.load_study(study_name="nas-grid-scale", storage=storage).trials)
    code, _, err = run_main(argv, capsys)  # resume: every candidate asked for is already evaluated
    assert code == 0, err
    assert len(optuna.load_study(study_name="nas-grid-scale", storage=storage).trials) == n_trials
    assert yaml.safe_load((out / "coefficients.yaml").read_text())["chosen"] == record["chosen"]

    code, _, err = run_main([*argv[:-3], "--epochs", "2", "--out", str(out), "--quiet"], capsys)
    assert code == 2 and "epochs" in err  # the study refuses other settings


def _trial(number: int, candidate: int, state: str, trained: bool = True) -> SimpleNamespace:
    return SimpleNamespace(number=number, params={"candidate": candidate}, state=TrialState[state],
                           user_attrs={"trained": True} if trained else {})


def test_workers_take_the_first_free_candidate():
    trials = [_trial(0, 0, "COMPLETE"), _trial(1, 1, "RUNNING"), _trial(2, 2, "PRUNED", trained=False),
              _trial(3, 3, "FAIL")]
    assert next_candidate(trials, 6, number=9) == 2  # a duplicate claim pruned untrained leaves 2 free
    trials.append(_trial(4, 2, "RUNNING"))
    assert next_candidate(trials, 6, number=9) == 3  # a failed candidate (its worker killed) is trained again
    assert next_candidate(trials, 6, number=4) == 2  # a trial does not block itself
    trials += [_trial(5, 4, "PRUNED"), _trial(6, 5, "COMPLETE"), _trial(7, 3, "COMPLETE")]
    assert next_candidate(trials, 6, number=9) == 1  # none free: the first not done (Evaluate prunes the duplicate)
