"""``nas-derive``: the refinement's statistics against hand-computed values, the config checks, and the whole
pipeline end to end on digits (resume at the first unfinished step, changed inputs refused, the report's
numbers equal to the step outputs)."""
from __future__ import annotations

import csv
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import nas.recipe as rs  # the refinement's statistics, through the package's face
from nas.recipe import CANNOT_TELL, Summary, analyse, coefficient_key

ROOT = Path(__file__).resolve().parents[1]
DIGITS = ROOT / "experiments" / "derive_digits.yaml"


# -- the refinement's statistics -------------------------------------------------------------------------------

def test_mean_and_spread_by_hand():
    mean, spread = rs.mean_spread([0.86, 0.88])
    assert mean == pytest.approx(0.87, abs=1e-12)
    assert spread == pytest.approx(0.02 / math.sqrt(2), abs=1e-12)  # sample sd of two values: |a - b| / sqrt 2
    mean, spread = rs.mean_spread([0.80, 0.83, 0.86])
    assert mean == pytest.approx(0.83) and spread == pytest.approx(0.03)  # sqrt((0.03² + 0 + 0.03²) / 2)
    assert math.isnan(rs.mean_spread([0.9])[1]) and math.isnan(rs.mean_spread([])[0])


def test_pooled_spread_margin_and_verdict_by_hand():
    # variances 0.0002 and 0: pooled sqrt((0.0002 + 0) / 2) = 0.01; margin (0.87 - 0.85) / 0.01 = 2 spreads
    spread = rs.pooled_spread([[0.86, 0.88], [0.85, 0.85]])
    assert spread == pytest.approx(0.01, abs=1e-12)
    assert rs.margin(0.87, 0.85, spread) == pytest.approx(2.0)
    assert rs.verdict(2.0) == "tells apart"
    # the case: 0.858 vs 0.856 with the proxy's seed spread ~0.018 is 0.11 spreads
    assert rs.margin(0.858, 0.856, 0.018) == pytest.approx(0.1111, abs=1e-4)
    assert [rs.verdict(v) for v in (0.1111, 0.999, math.nan)] == [CANNOT_TELL] * 3
    # degrees of freedom weight the groups: (2 * 0.03² + 1 * 0.0002) / 3
    assert rs.pooled_spread([[0.80, 0.83, 0.86], [0.86, 0.88], [0.7]]) == pytest.approx(math.sqrt(0.002 / 3))
    assert math.isnan(rs.pooled_spread([[0.9], [0.8]]))
    assert rs.margin(0.9, 0.8, 0.0) == math.inf and rs.margin(0.8, 0.8, 0.0) == 0.0


def test_versus_keep_count_ranking_and_learns():
    assert [rs.versus(v) for v in (1.5, -1.0, 0.3, -0.99)] == ["better", "worse", CANNOT_TELL, CANNOT_TELL]
    assert [rs.keep_count(n, None) for n in (1, 2, 3, 6, 8, 9, 10)] == [1, 2, 2, 2, 3, 3, 4]
    assert rs.keep_count(8, 5) == 5 and rs.keep_count(3, 5) == 3
    a, b, c = Summary("a", (0.80, 0.82)), Summary("b", (0.81, 0.81)), Summary("c", ())
    assert [s.key for s in rs.ranked([c, a, b], {"a": 5, "b": 3, "c": 1})] == ["b", "a", "c"]  # tie: fewer MACs first
    assert rs.learns(0.85, 0.90, 0.10) and not rs.learns(0.41, 0.86, 0.10)  # 0.75 >= 0.9*0.80; 0.31 < 0.9*0.76


def _entries():
    from nas.recipe import plan_entries
    from nas.recipe.refine import Entry
    from scaling.compound import Coefficients, cost_candidates
    from scaling.config import GridConfig
    from search_spaces import get_preset

    base, grid = get_preset("efficientnet-b0"), GridConfig()
    points = [Coefficients(1.2, 1.1, 1.15), Coefficients(1.0, 1.0, 1.4), Coefficients(2.0, 1.0, 1.0),
              Coefficients(1.0, 1.4, 1.0)]
    built = cost_candidates(base, points, 4, 32, ordered=False)
    acc = [0.858, 0.856, 0.41, 0.852]
    cands = [Entry(c.coefficients, c.arch, c.params, c.macs, c.macs_ratio, c.proxy_resolution,
                   key=coefficient_key(c.coefficients), roles=("candidate",), grid_index=i, grid_accuracy=a)
             for i, (c, a) in enumerate(zip(built, acc))]
    return plan_entries(cands, base, grid, None, True)


def test_plan_keeps_the_best_third_and_adds_the_baselines():
    entries = _entries()
    roles = {e.key: e.roles for e in entries}
    # 4 trained -> keep max(2, ceil(4/3)) = 2: the 0.858 and 0.856 candidates; then depth-only (on the grid,
    # kept with its brief figure 0.41), width-only and resolution-only at sqrt(2) (not on the grid)
    assert list(roles) == ["a1.2-b1.1-g1.15", "a1-b1-g1.4", "a2-b1-g1", "a1-b1.41421-g1", "a1-b1-g1.41421"]
    assert roles["a2-b1-g1"] == ("depth-only",) and roles["a1-b1.41421-g1"] == ("width-only",)
    depth = next(e for e in entries if e.key == "a2-b1-g1")
    assert depth.grid_accuracy == 0.41 and depth.arch.depth_mult == 2.0
    res = next(e for e in entries if e.key == "a1-b1-g1.41421")
    assert res.arch.resolution == 316 and res.proxy_resolution == 45  # 224*sqrt2 = 316.8 -> 316; 32*sqrt2 = 45.25


def test_analyse_the_refined_runs_by_hand():
    entries = _entries()
    accs = {"a1.2-b1.1-g1.15": [0.858, 0.840], "a1-b1-g1.4": [0.856, 0.850], "a2-b1-g1": [0.80, 0.82],
            "a1-b1.41421-g1": [0.853, 0.853], "a1-b1-g1.41421": [0.90, 0.86]}
    runs = {k: [{"seed": s, "accuracy": a, "state": "COMPLETE"} for s, a in enumerate(v)] for k, v in accs.items()}
    out = analyse(entries, runs, 0.1, {"alpha": 1.2, "beta": 1.1, "gamma": 1.15})
    # means: 0.849, 0.853, 0.81, 0.853, 0.88; variances 0.000162, 0.000018, 0.0002, 0, 0.0008 (one dof each)
    pooled = math.sqrt((0.000162 + 0.000018 + 0.0002 + 0 + 0.0008) / 5)
    assert out["pooled_spread"] == pytest.approx(pooled)
    assert out["key"] == "a1-b1-g1.4" and (out["alpha"], out["beta"], out["gamma"]) == (1.0, 1.0, 1.4)
    assert out["runner_up"]["key"] == "a1.2-b1.1-g1.15"
    assert out["margin"] == pytest.approx((0.853 - 0.849) / pooled) and out["verdict"] == CANNOT_TELL
    assert out["changed_by_refinement"] is True
    base = {b["role"]: b for b in out["baselines"]}
    assert base["depth-only"]["margin"] == pytest.approx((0.853 - 0.81) / pooled)  # 2.80 spreads
    assert base["depth-only"]["chosen_is"] == "better"
    assert base["width-only"]["chosen_is"] == CANNOT_TELL  # 0.853 against 0.853
    assert base["resolution-only"]["chosen_is"] == "worse"  # -1.9 spreads
    # the deepest network (alpha 2) reached 0.81 against the best 0.853, chance 0.1: 0.71 >= 0.9 * 0.753
    assert out["depth"]["key"] == "a2-b1-g1" and out["depth"]["learns"] is True
    assert out["depth"]["grid_accuracy"] == 0.41


# -- bad configs: one line, exit 2, nothing written ----------------------------------------------------------

def _derive(*args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "nas.cli.derive", *args], capture_output=True, text=True,
                          cwd=ROOT, env=env, timeout=timeout)


def _config(tmp_path: Path, out: Path, **changes: dict) -> Path:
    data = yaml.safe_load(DIGITS.read_text())
    data["out"] = str(out)
    for section, values in changes.items():
        if isinstance(values, dict) and isinstance(data.get(section), dict):
            data[section] = {**data[section], **values}
        else:
            data[section] = values
    path = tmp_path / f"derive-{len(list(tmp_path.glob('derive-*.yaml')))}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize("changes, expected", [
    ({"color": "red"}, "unknown key 'color'"),
    ({"search": {"trails": 3}}, "search: unknown key 'trails'"),
    ({"grid": {"base": "efficientnet-b0"}}, "grid.base is set by nas-derive"),
    ({"refine": {"seeds": 1}}, "refine.seeds must be a whole number >= 2"),
    ({"families": {"k": 9}}, "families.k must be a whole number in 1..7"),
    ({"final": {"recipe": "adam"}}, "final.recipe must be one of rmsprop, sgd"),
    ({"grid": {"step": 0.3, "max": 1.3}}, "grid: --tolerance 0.1 leaves no candidate"),
    ({"search": {"seed_arch": "no-such-net"}}, "search:"),
    ({"refine": {"train": {"momentom": 0.9}}}, "refine: train: unknown key 'momentom'"),
])
def test_bad_config_is_one_line_and_writes_nothing(tmp_path, changes, expected):
    out = tmp_path / "run"
    r = _derive("--config", str(_config(tmp_path, out, **changes)))
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("nas-derive: error: ") and expected in lines[0], r.stderr
    assert "Traceback" not in r.stderr and not out.exists()


def test_missing_config_and_bad_flag_are_one_line(tmp_path):
    for args in ([], ["--config", str(tmp_path / "none.yaml")], ["--config", str(DIGITS), "--stop-after", "x"]):
        r = _derive(*args)
        assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_dry_run_plans_and_writes_nothing(tmp_path):
    out = tmp_path / "run"
    r = _derive("--config", str(_config(tmp_path, out)), "--dry-run")
    assert r.returncode == 0, r.stderr
    assert "1-search" in r.stdout and "4-final" in r.stdout and "budget" in r.stdout
    assert not out.exists()


# -- the whole pipeline on digits ----------------------------------------------------------------------------

def _markers(out: Path) -> dict[str, str]:
    return {p.relative_to(out).as_posix(): p.read_text() for p in sorted(out.glob("*/done.json"))}


@pytest.fixture(scope="module")
def derived(tmp_path_factory):
    """The digits derivation, stopped after step 2, then run again to the end."""
    tmp = tmp_path_factory.mktemp("derive")
    out = tmp / "run"
    config = _config(tmp, out)
    first = _derive("--config", str(config), "--stop-after", "grid")
    assert first.returncode == 0, first.stdout + first.stderr
    trials = len(list(csv.DictReader((out / "1-search/leaderboard.csv").open())))
    after_grid = {"markers": _markers(out), "trials": trials, "families_existed": (out / "3-families").exists(),
                  "journal": (out / "1-search/study.journal").read_bytes(), "stdout": first.stdout}
    second = _derive("--config", str(config))
    assert second.returncode == 0, second.stdout + second.stderr
    return {"out": out, "config": config, "tmp": tmp, "after_grid": after_grid, "stdout": second.stdout}


@pytest.mark.slow
def test_stop_after_grid_then_resume_at_the_first_unfinished_step(derived):
    out, before = derived["out"], derived["after_grid"]
    assert sorted(before["markers"]) == ["1-search/done.json", "2-grid/done.json"]
    assert not before["families_existed"]
    lines = before["stdout"].splitlines()
    assert [ln.split("] ")[1].split()[:2] for ln in lines if "] " in ln] == [
        ["search", "started"], ["search", "done"], ["grid", "started"], ["grid", "done"]]
    # the rerun skipped steps 1-2: their markers, the study and its trial count are unchanged
    after = _markers(out)
    assert {k: after[k] for k in before["markers"]} == before["markers"]
    assert len(list(csv.DictReader((out / "1-search/leaderboard.csv").open()))) == before["trials"] == 3
    assert (out / "1-search/study.journal").read_bytes() == before["journal"]
    steps = [ln.split("] ")[1] for ln in derived["stdout"].splitlines() if "] " in ln]
    assert steps[0].startswith("search already done") and steps[1].startswith("grid already done")
    assert [s.split()[:2] for s in steps[2:]] == [["families", "started"], ["families", "done"], ["final", "started"],
                                                 ["final", "done"], ["report", "started"], ["report", "done"]]
    assert sorted(after) == [f"{s}/done.json" for s in ("1-search", "2-grid", "3-families", "4-final", "5-report")]


@pytest.mark.slow
def test_the_refinement_and_the_families(derived):
    out = derived["out"]
    chosen = json.loads((out / "2-grid/chosen.json").read_text())
    refine = json.loads((out / "2-grid/refine.json").read_text())["runs"]
    kept = [e for e in chosen["entries"] if "candidate" in e["roles"]]
    assert len(kept) == 2 and {b["role"] for b in chosen["baselines"]} == {"depth-only", "width-only",
                                                                           "resolution-only"}
    for e in chosen["entries"]:  # two seeds each, the mean and spread of the recorded runs
        values = [refine[f"{e['key']}/seed{s}"]["accuracy"] for s in (0, 1)]
        assert e["accuracies"] == values
        assert e["mean"] == pytest.approx(sum(values) / 2)
        assert e["spread"] == pytest.approx(abs(values[0] - values[1]) / math.sqrt(2))
    assert chosen["verdict"] in ("tells apart", CANNOT_TELL)
    assert (chosen["verdict"] == CANNOT_TELL) == (chosen["margin"] < 1)
    members = json.loads((out / "3-families/families.json").read_text())["members"]
    assert [m["name"] for m in members] == ["ours-b0", "ours-b1", "efficientnet-b0", "efficientnet-b1"]
    from search_spaces import count_cost, get_preset, load_arch

    assert members[2]["macs"] == count_cost(get_preset("efficientnet-b0")).macs
    b1 = load_arch(out / "3-families/ours-b1.yaml")
    b0 = load_arch(out / "1-search/best.yaml")
    assert b1.depth_mult == pytest.approx(b0.depth_mult * chosen["alpha"])
    assert b1.width_mult == pytest.approx(b0.width_mult * chosen["beta"])


@pytest.mark.slow
def test_report_numbers_equal_the_step_outputs(derived):
    from nas.fidelity import kendall_tau

    out = derived["out"]
    report = (out / "report.md").read_text()
    assert (out / "report.png").stat().st_size > 10_000
    final = json.loads((out / "4-final/final.json").read_text())["members"]
    assert len(final) == 4
    for r in final:
        metrics = json.loads((out / "4-final" / r["name"] / "metrics.json").read_text())
        assert r["test_top1"] == metrics["test_top1"]
        row = next(ln for ln in report.splitlines() if ln.startswith(f"| {r['name']} |"))
        assert f"| {r['test_top1']:.4f} |" in row and f"| {r['macs'] / 1e6:.1f}M |" in row
    members = {m["name"]: m for m in json.loads((out / "3-families/families.json").read_text())["members"]}
    tau = kendall_tau([members[r["name"]]["proxy"]["accuracy"] for r in final], [r["test_top1"] for r in final])
    record = json.loads((out / "5-report/report.json").read_text())
    if math.isnan(tau):
        assert record["kendall_tau"]["tau"] is None
    else:
        assert record["kendall_tau"]["tau"] == pytest.approx(tau)
        assert f"Kendall τ = {tau:.4f}" in report
    chosen = json.loads((out / "2-grid/chosen.json").read_text())
    assert f"margin {chosen['margin']:+.2f} spreads over the runner-up: **{chosen['verdict']}**" in report
    per_phi = record["per_phi"]
    assert [p["phi"] for p in per_phi] == [0, 1]
    for p in per_phi:
        ours = next(r for r in final if r["name"] == p["ours"])
        eff = next(r for r in final if r["name"] == p["efficientnet"])
        assert p["beats"] == (ours["macs"] <= eff["macs"] and ours["test_top1"] > eff["test_top1"])
    answer = "**yes**" if record["family_beats_at_every_phi"] else "**no**"
    assert f"at every φ? {answer}" in report
    for step in ("1-search", "2-grid", "3-families", "4-final"):
        seconds = json.loads((out / step / "done.json").read_text())["seconds"]
        m, s = divmod(round(seconds), 60)
        assert re.search(rf"\| {step} \| {m} min {s:02d} s \|", report), step


@pytest.mark.slow
def test_a_changed_input_is_refused_and_nothing_is_rerun(derived, tmp_path):
    out, before = derived["out"], _markers(derived["out"])
    report = (out / "report.md").read_bytes()
    changed = _config(tmp_path, out, grid={"epochs": 2})
    r = _derive("--config", str(changed))
    assert r.returncode == 2, r.stdout + r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "step 2-grid was run with other inputs" in lines[0] and "grid" in lines[0]
    assert r.stdout == ""  # refused before any step ran
    # an upstream output that changed (a search redone elsewhere) is refused at the step that read it
    best = out / "1-search/best.yaml"
    text = best.read_text()
    try:
        best.write_text(text + "# edited\n")
        r = _derive("--config", str(derived["config"]))
        assert r.returncode == 2 and "1-search/best.yaml" in r.stderr and "2-grid" in r.stderr, r.stderr
    finally:
        best.write_text(text)
    assert _markers(out) == before and (out / "report.md").read_bytes() == report
    r = _derive("--config", str(derived["config"]))  # restored: everything done, nothing rerun
    assert r.returncode == 0 and r.stdout.count("already done") == 5, r.stdout + r.stderr
