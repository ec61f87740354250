"""``nas.fidelity.rankstats`` and ``nas-proxy-check``: rank statistics, and the fidelity check end to end on digits."""
from __future__ import annotations

import csv
import hashlib
import json
import math
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from nas.cli.proxy_check import CACHE_NAME, main, parse_proxies, sample_archs
from nas.config import ConfigError
from nas.fidelity.rankstats import average_ranks, bootstrap_ci, kendall_tau, spearman_rho

K = 4  # architectures in the end-to-end runs
# Digits at 16 px, 256 training images, batches of 64: a training run takes under a second.
FAST = ["--dataset", "digits", "--proxy-resolution", "16", "--train-size", "256", "--batch-size", "64",
        "--threads", "1", "--device", "cpu", "--archs", str(K), "--proxies", "train:0.25", "--reference-epochs", "1",
        "--reference-seeds", "2"]
ZC_ALL = "zc:synflow,zc:naswot,zc:grad_norm,zc:snip"


# -- rank statistics -----------------------------------------------------------------------------------------------
@pytest.mark.filterwarnings("ignore:An input array is constant")  # scipy's NaN for a constant input, as ours
@pytest.mark.parametrize("seed", range(5))
def test_rank_stats_match_scipy_with_ties(seed):
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(seed)
    for n in (2, 3, 7, 30):
        x = rng.integers(0, 4, n).astype(float)  # many ties
        y = x + rng.integers(0, 3, n)
        for ours, theirs in ((kendall_tau, stats.kendalltau), (spearman_rho, stats.spearmanr)):
            want = theirs(x, y)[0]
            got = ours(x, y)
            assert (math.isnan(got) and math.isnan(want)) or got == pytest.approx(want, abs=1e-12), (ours, x, y)
        assert average_ranks(x) == pytest.approx(stats.rankdata(x))


def test_rank_stats_hand_values():
    up = [1.0, 2.0, 3.0, 4.0, 5.0]
    assert kendall_tau(up, [10, 20, 30, 40, 50]) == 1.0 and spearman_rho(up, [0.1, 0.2, 0.3, 0.4, 0.5]) == 1.0
    assert kendall_tau(up, up[::-1]) == -1.0 and spearman_rho(up, up[::-1]) == -1.0
    # one swapped pair of 6: (5 - 1) / 6; rho = 1 - 6 * sum(d^2) / (n (n^2 - 1)) = 1 - 12 / 60
    assert kendall_tau([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(2 / 3)
    assert spearman_rho([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(0.8)
    # tau-b with a tie in x: 2 concordant pairs, 2 pairs untied in x, 3 in y
    assert kendall_tau([1, 1, 2], [1, 2, 3]) == pytest.approx(2 / math.sqrt(6))
    assert list(average_ranks([10, 20, 20, 30])) == [1.0, 2.5, 2.5, 4.0]
    assert math.isnan(kendall_tau([1, 1, 1], [1, 2, 3])) and math.isnan(spearman_rho([1, 2, 3], [5, 5, 5]))


def test_rank_stats_reject_bad_input():
    for x, y in (([1, 2, 3], [1, 2]), ([1], [1]), ([1, float("nan"), 3], [1, 2, 3]), ([[1, 2]], [[1, 2]])):
        with pytest.raises(ValueError):
            kendall_tau(x, y)
        with pytest.raises(ValueError):
            spearman_rho(x, y)


def test_bootstrap_ci_contains_estimate_and_narrows_with_more_pairs():
    rng = np.random.default_rng(0)
    widths = []
    for n in (15, 150):
        x = rng.normal(size=n)
        y = x + rng.normal(size=n)
        for stat in (kendall_tau, spearman_rho):
            lo, hi = bootstrap_ci(x, y, stat, n=300, seed=1)
            assert lo <= stat(x, y) <= hi
        widths.append(hi - lo)
    assert widths[1] < widths[0] / 2
    assert bootstrap_ci(x, y, kendall_tau, n=200, seed=3) == bootstrap_ci(x, y, kendall_tau, n=200, seed=3)
    lo90, hi90 = bootstrap_ci(x, y, kendall_tau, n=500, level=0.9)
    lo99, hi99 = bootstrap_ci(x, y, kendall_tau, n=500, level=0.99)
    assert lo99 <= lo90 and hi90 <= hi99
    assert all(math.isnan(v) for v in bootstrap_ci([1, 1, 1], [1, 2, 3], kendall_tau, n=50))  # constant x
    with pytest.raises(ValueError):
        bootstrap_ci([1, 2, 3], [1, 2, 3], kendall_tau, level=1.0)


def test_fidelity_drops_non_finite_pairs_and_seed_agreement_averages_seed_pairs():
    from nas.fidelity.analysis import fidelity, seed_agreement

    f = fidelity(np.array([1, 2, np.nan, 4.0]), np.array([1, 3, 2, 4.0]))
    assert f["n"] == 3 and f["kendall_tau"] == 1.0 and f["spearman_rho"] == 1.0
    assert math.isnan(fidelity(np.array([1, 2, np.nan]), np.array([1, 2, 3.0]))["kendall_tau"])  # under 3 pairs
    runs = np.array([[1, 2, 3], [2, 1, 4], [3, 3, 5], [4, 5, 6.0]])  # seed pairs: tau 2/3, 1, 2/3
    agreement = seed_agreement(runs)
    assert agreement["kendall_tau"] == pytest.approx(7 / 9) and agreement["n"] == 4
    assert agreement["mean_std"] == pytest.approx(np.mean(np.std(runs, axis=1, ddof=1)))
    lo, hi = agreement["kendall_tau_ci"]
    assert lo <= 7 / 9 <= hi


# -- configuration and sampling --------------------------------------------------------------------------------------
def test_parse_proxies_normalizes_and_names_the_bad_item(monkeypatch):
    assert parse_proxies("train:1.0, train:0.25,,train:1") == ("train:1", "train:0.25")
    for bad, named in (("train:0", "train:0"), ("train:-1", "train:-1"), ("train:x", "train:x"), ("foo", "foo"),
                       ("", "at least one"), ("train:nan", "train:nan")):
        with pytest.raises(ConfigError, match=named):
            parse_proxies(bad)
    monkeypatch.setitem(sys.modules, "nas.proxy.zero_cost", None)  # as if the module were absent
    with pytest.raises(ConfigError, match="nas.proxy.zero_cost"):
        parse_proxies("train:1,zc:synflow")


def test_sample_archs_seeded_distinct_in_band_and_extendable():
    from search_spaces import count_cost, default_space, get_preset

    space = default_space()
    archs = sample_archs(space, 6, 3, 400e6, 2.0, include_b0=True)
    assert archs[0].name == "efficientnet-b0" and archs[0].to_str() == get_preset("efficientnet-b0").to_str()
    assert len({a.to_str() for a in archs}) == 6
    assert all(200e6 <= count_cost(a, 224).macs <= 800e6 for a in archs)
    assert [a.to_str() for a in sample_archs(space, 6, 3, 400e6, 2.0, True)] == [a.to_str() for a in archs]
    more = sample_archs(space, 8, 3, 400e6, 2.0, True)
    assert [a.to_str() for a in more[:6]] == [a.to_str() for a in archs]  # a larger --archs extends the list
    assert [a.to_str() for a in sample_archs(space, 6, 4, 400e6, 2.0, True)] != [a.to_str() for a in archs]
    with pytest.raises(ConfigError, match="--archs 3"):
        sample_archs(space, 3, 0, 400e6, 1.000001, False)


# -- the command ---------------------------------------------------------------------------------------------------
def _run(capsys, *args: str) -> tuple[int, str, str]:
    try:
        code = main(list(args))
    except SystemExit as exc:  # argparse's own errors
        code = exc.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def _summary(folder: Path) -> dict:
    return json.loads((folder / "summary.json").read_text())


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    """One small check on digits; tests copy its output folder."""
    import torch

    out = tmp_path_factory.mktemp("check") / "out"
    threads = torch.get_num_threads()
    try:
        code = main([*FAST, "--out", str(out)])
    finally:
        torch.set_num_threads(threads)
    assert code == 0
    return out


@pytest.fixture
def run_copy(first_run, tmp_path) -> Path:
    out = tmp_path / "out"
    shutil.copytree(first_run, out)
    return out


def test_cli_end_to_end_writes_table_csv_summary_and_plot(first_run):
    rows = list(csv.DictReader((first_run / "results.csv").open()))
    assert len(rows) == K
    assert list(rows[0]) == ["name", "arch", "macs", "train:0.25", "reference_seed1", "reference_seed2",
                             "reference_mean"]
    for r in rows:
        assert 100e6 <= int(r["macs"]) <= 1600e6
        seeds = float(r["reference_seed1"]), float(r["reference_seed2"])
        assert float(r["reference_mean"]) == pytest.approx(sum(seeds) / 2)
    summary = _summary(first_run)
    proxy = summary["proxies"]["train:0.25"]
    assert proxy["n"] == K and -1 <= proxy["kendall_tau"] <= 1 and math.isfinite(proxy["spearman_rho"])
    lo, hi = proxy["kendall_tau_ci"]
    assert lo <= proxy["kendall_tau"] <= hi
    seeds = summary["seed_to_seed"]
    assert math.isfinite(seeds["kendall_tau"]) and seeds["mean_std"] >= 0
    assert summary["scores"] == {"needed": 3 * K, "computed_this_run": 3 * K, "reused": 0}
    assert (first_run / "scatter.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    lines = (first_run / CACHE_NAME).read_text().splitlines()
    assert len(lines) == 1 + 3 * K and json.loads(lines[0])["tool"] == "nas-proxy-check"


def test_rerun_recomputes_nothing_and_finishes_a_torn_line(run_copy, capsys, caplog, one_thread):
    caplog.set_level("INFO", logger="nas-proxy-check")
    before = _digests(run_copy)
    code, out, _ = _run(capsys, *FAST, "--out", str(run_copy))
    assert code == 0 and "Kendall tau" in out and "seed-to-seed" in out
    assert _summary(run_copy)["scores"]["computed_this_run"] == 0
    assert _digests(run_copy)[CACHE_NAME] == before[CACHE_NAME]
    assert _digests(run_copy)["results.csv"] == before["results.csv"]
    assert not [r for r in caplog.records if r.getMessage().startswith("[")]  # no per-score progress line
    # killed while writing the last score: that half line is dropped and the score computed again
    cache = run_copy / CACHE_NAME
    text = cache.read_text()
    cache.write_text(text[:len(text) - len(text.splitlines()[-1]) // 2 - 1])
    caplog.clear()
    assert _run(capsys, *FAST, "--out", str(run_copy))[0] == 0
    assert _summary(run_copy)["scores"]["computed_this_run"] == 1
    assert len(cache.read_text().splitlines()) == len(text.splitlines())
    assert [r.getMessage()[:6] for r in caplog.records if r.getMessage().startswith("[")] == ["[1/1] "]


@pytest.mark.parametrize("change", [["--lr", "0.1"], ["--train-size", "200"], ["--seed", "1"],
                                    ["--proxy-resolution", "20"], ["--dataset", "synthetic"]])
def test_inconsistent_rerun_is_refused_and_changes_nothing(run_copy, capsys, change):
    before = _digests(run_copy)
    code, out, err = _run(capsys, *FAST, *change, "--out", str(run_copy))
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("nas-proxy-check: error: ") and CACHE_NAME in err
    assert change[0] in err or "setting" in err
    assert _digests(run_copy) == before


def test_a_second_run_on_the_same_out_is_refused(run_copy, capsys):
    from nas.cli.proxy_check import exclusive

    before = _digests(run_copy)
    with exclusive(run_copy / CACHE_NAME):  # as a run in progress holds it
        code, _, err = _run(capsys, *FAST, "--out", str(run_copy))
    assert code == 2 and err.count("\n") == 1 and "in use by another nas-proxy-check run" in err
    assert _digests(run_copy) == before


def test_not_a_cache_is_refused(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / CACHE_NAME).write_text('{"something": "else"}\n')
    code, _, err = _run(capsys, *FAST, "--out", str(out))
    assert code == 2 and "not a nas-proxy-check score cache" in err
    assert sorted(p.name for p in out.iterdir()) == [CACHE_NAME]


@pytest.mark.parametrize("args, named", [
    (["--proxies", "nope"], "'nope'"),
    (["--proxies", "train:0"], "'train:0'"),
    (["--proxies", "zc:foo"], "'zc:foo'"),
    (["--archs", "2"], "--archs"),
    (["--archs", "-4"], "-4"),
    (["--archs", "many"], "'many'"),
    (["--reference-seeds", "0"], "--reference-seeds"),
    (["--reference-epochs", "0"], "--reference-epochs"),
    (["--target-flops", "lots"], "'lots'"),
    (["--flops-band", "0.5"], "--flops-band"),
    (["--flops-band", "1.000001", "--archs", "3"], "--flops-band"),
    (["--dataset", "mnist", "--data-dir", "/no/such/dir"], "/no/such/dir"),
    (["--dataset", "imagenet"], "'imagenet'"),
    (["--epochs", "3"], "--epochs"),
    (["--lr", "-1"], "-1"),
    (["--train-size", "40"], "--batch-size 64"),
    (["--unknown-flag"], "--unknown-flag"),
])
def test_bad_input_exits_2_with_one_line_and_writes_nothing(tmp_path, capsys, args, named):
    if args[-1] == "zc:foo":
        pytest.importorskip("nas.proxy.zero_cost")
    out = tmp_path / "out"
    code, stdout, err = _run(capsys, *FAST, *args, "--out", str(out))
    assert code == 2 and stdout == ""
    assert err.count("\n") == 1 and err.startswith("nas-proxy-check: error: ") and named in err, err
    assert not out.exists()


def test_a_diverged_run_is_stored_and_left_out_of_the_statistics(run_copy, capsys, monkeypatch):
    import nas.fidelity.check as pc
    from nas.proxy.train import TrainingDiverged

    def fake_measure(item, data, trainer, device, scorers=None):
        assert item.method == "train:0.5"  # everything else is in the cache
        if item.arch.name == "arch00":
            raise TrainingDiverged("training diverged at step 1 of 2")
        return int(item.arch.name[-2:]) / 10

    monkeypatch.setattr(pc, "measure", fake_measure)
    code, out, _ = _run(capsys, *FAST, "--proxies", "train:0.25,train:0.5", "--out", str(run_copy))
    assert code == 0 and "train:0.5" in out
    summary = _summary(run_copy)
    assert summary["scores"]["computed_this_run"] == K and summary["proxies"]["train:0.5"]["n"] == K - 1
    records = [json.loads(line) for line in (run_copy / CACHE_NAME).read_text().splitlines()[1:]]
    failed = [r for r in records if r["score"] is None]
    assert len(failed) == 1 and "diverged" in failed[0]["error"]
    rows = list(csv.DictReader((run_copy / "results.csv").open()))
    assert [r["train:0.5"] for r in rows] == ["", *(repr(i / 10) for i in range(1, K))]


def test_zero_cost_proxies_join_the_cached_run(run_copy, capsys, one_thread):
    pytest.importorskip("nas.proxy.zero_cost")
    zc = ["zc:synflow", "zc:naswot"]  # the other two: tests/test_zero_cost.py; their names: the next test
    code, out, _ = _run(capsys, *FAST, "--proxies", ",".join(["train:0.25", *zc]), "--out", str(run_copy))
    assert code == 0
    summary = _summary(run_copy)
    assert summary["scores"]["computed_this_run"] == len(zc) * K  # only the zero-cost scores are new
    for name in zc:
        assert name in out and math.isfinite(summary["proxies"][name]["kendall_tau"])
    rows = list(csv.DictReader((run_copy / "results.csv").open()))
    assert len(rows) == K and all(math.isfinite(float(r["zc:synflow"])) for r in rows)


def test_default_proxies_are_the_training_and_zero_cost_ones():
    pytest.importorskip("nas.proxy.zero_cost")
    from nas.cli.proxy_check import CheckConfig

    assert CheckConfig().proxies == ("train:1", *ZC_ALL.split(","))


# -- a cache written by the previous release is reused -------------------------------------------------------------
FIXTURES = Path(__file__).parent / "fixtures" / "head_proxy_check"
# The flags tests/fixtures/head_proxy_check/scores.jsonl was written with (tests/fixtures/README.md).
HEAD_CHECK = ["--dataset", "digits", "--proxy-resolution", "16", "--train-size", "128", "--batch-size", "32",
              "--threads", "1", "--device", "cpu", "--archs", "3", "--proxies", "train:0.25,zc:synflow",
              "--reference-epochs", "0.5", "--reference-seeds", "1"]


def test_a_cache_written_by_the_previous_release_is_reused(tmp_path, capsys, one_thread):
    pytest.importorskip("nas.proxy.zero_cost")
    out = tmp_path / "out"
    out.mkdir()
    shutil.copy(FIXTURES / CACHE_NAME, out / CACHE_NAME)
    before = (out / CACHE_NAME).read_bytes()
    code, stdout, err = _run(capsys, *HEAD_CHECK, "--out", str(out))
    assert code == 0, err
    assert _summary(out)["scores"] == {"needed": 9, "computed_this_run": 0, "reused": 9}
    assert (out / CACHE_NAME).read_bytes() == before
    # the report of the previous release, from the same scores
    assert (out / "results.csv").read_text() == (FIXTURES / "results.csv").read_text()
    assert "zc:synflow" in stdout and "train:0.25" in stdout


# -- scripts/restore_proxy_reference.py ----------------------------------------------------------------------------
RESTORE = Path(__file__).resolve().parents[1] / "scripts" / "restore_proxy_reference.py"


def _restore(csv_path: Path, out: Path):
    import subprocess

    return subprocess.run([sys.executable, str(RESTORE), str(csv_path), "--", *FAST, "--out", str(out)],
                          capture_output=True, text=True, timeout=120)


def test_a_restored_reference_is_not_trained_again_and_gives_the_same_table(first_run, tmp_path, capsys,
                                                                              one_thread):
    out = tmp_path / "fresh"
    done = _restore(first_run / "results.csv", out)
    assert done.returncode == 0, done.stderr
    code, table, _ = _run(capsys, *FAST, "--out", str(out))
    assert code == 0 and "Kendall tau" in table
    assert _summary(out)["scores"] == {"needed": 3 * K, "computed_this_run": K, "reused": 2 * K}  # the proxy only
    ours, theirs = _summary(out), _summary(first_run)
    assert ours["proxies"]["train:0.25"]["kendall_tau"] == theirs["proxies"]["train:0.25"]["kendall_tau"]
    assert ours["seed_to_seed"]["kendall_tau"] == theirs["seed_to_seed"]["kendall_tau"]


def test_restoring_refuses_a_row_that_does_not_match_and_an_existing_cache(first_run, tmp_path):
    rows = list(csv.DictReader((first_run / "results.csv").open()))
    rows[1]["arch"] = rows[2]["arch"]
    bad = tmp_path / "bad.csv"
    with bad.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    done = _restore(bad, tmp_path / "a")
    assert done.returncode == 2 and f"{rows[1]['name']}: no row of that name and architecture" in done.stderr
    assert not (tmp_path / "a").exists()
    done = _restore(first_run / "results.csv", first_run)
    assert done.returncode == 2 and "exists: give a new --out" in done.stderr
