"""Step 5: ``report.md``, ``report.png`` and ``5-report/report.json`` from the outputs of steps 1-4.

Every figure in the report is read from a step's output file (``chosen.json``, ``candidates.csv``,
``families.json``, ``final.json``, the ``done.json`` markers); ``report.json`` holds the few derived
ones: the per-φ comparison of the families and the Kendall τ of the proxy against the test ranking.
"""
from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Sequence, TypedDict

from nas.fidelity.rankstats import bootstrap_ci, kendall_tau
from nas.recipe.config import STEPS
from nas.recipe.markers import read_json, write_json
from nas.recipe.records import Chosen, EntryRow, Families, Final, FinalRow, MemberRow, load_record

__all__ = ["PhiRow", "Tau", "ReportRecord", "compare_families", "proxy_vs_test", "build_report", "acc", "mega"]


class PhiRow(TypedDict):
    """Ours against EfficientNet at one φ."""

    phi: int
    ours: str
    ours_macs: int
    ours_top1: float | None
    efficientnet: str
    efficientnet_macs: int
    efficientnet_top1: float | None
    equal_or_fewer_macs: bool
    higher_accuracy: bool
    beats: bool


class Tau(TypedDict):
    """Kendall τ of the proxy against the test ranking, with its bootstrap interval (None: undefined)."""

    n: int
    tau: float | None
    ci: tuple[float | None, float | None]


class ReportRecord(TypedDict):
    """``5-report/report.json``: the figures the report derives from the step outputs."""

    per_phi: list[PhiRow]
    family_beats_at_every_phi: bool
    kendall_tau: Tau
    step_seconds: dict[str, float | None]
    total_seconds: float
    chosen: dict[str, object]


def acc(x: object) -> str:
    """An accuracy as the report writes it (4 decimals; ``—`` for none)."""
    return f"{x:.4f}" if isinstance(x, (int, float)) and math.isfinite(x) else "—"


def mega(x: object) -> str:
    """MACs or parameters in millions, 1 decimal."""
    return f"{x / 1e6:.1f}M" if isinstance(x, (int, float)) else "—"


def compare_families(final: Sequence[FinalRow]) -> list[PhiRow]:
    """Per φ: ours against EfficientNet, on test top-1 at equal or fewer MACs."""
    by = {(r["family"], r["phi"]): r for r in final}
    out: list[PhiRow] = []
    for phi in sorted({r["phi"] for r in final}):
        ours, eff = by.get(("ours", phi)), by.get(("efficientnet", phi))
        if ours is None or eff is None:
            continue
        a, b = ours.get("test_top1"), eff.get("test_top1")
        cheaper = ours["macs"] <= eff["macs"]
        better = a is not None and (b is None or a > b)
        out.append({"phi": phi, "ours": ours["name"], "ours_macs": ours["macs"], "ours_top1": a,
                    "efficientnet": eff["name"], "efficientnet_macs": eff["macs"], "efficientnet_top1": b,
                    "equal_or_fewer_macs": cheaper, "higher_accuracy": better, "beats": cheaper and better})
    return out


def _none_if_nan(x: float) -> float | None:
    return None if math.isnan(x) else x


def proxy_vs_test(members: Sequence[MemberRow], final: Sequence[FinalRow], seed: int = 0) -> Tau:
    """Kendall τ between the brief proxy's accuracy and the test top-1 over every finally trained network,
    with its 95 % percentile-bootstrap interval (1,000 resamples of the networks)."""
    proxy = {m["name"]: m.get("proxy", {}).get("accuracy") for m in members}
    x: list[float] = []
    y: list[float] = []
    for r in final:
        p, t = proxy.get(r["name"]), r.get("test_top1")
        if p is not None and t is not None:
            x.append(p)
            y.append(t)
    if len(x) < 2:
        return {"n": len(x), "tau": None, "ci": (None, None)}
    lo, hi = bootstrap_ci(x, y, kendall_tau, n=1000, seed=seed)
    return {"n": len(x), "tau": _none_if_nan(kendall_tau(x, y)), "ci": (_none_if_nan(lo), _none_if_nan(hi))}


def _step_times(out: Path) -> list[tuple[str, float | None, object]]:
    """``(step, seconds, attempts)`` of steps 1-4 from their done markers."""
    rows = []
    for step in STEPS[:4]:
        done = read_json(out / step.folder / "done.json") or {}
        seconds = done.get("seconds")
        rows.append((step.folder, float(seconds) if isinstance(seconds, (int, float)) else None, done.get("attempts")))
    return rows


def _duration(seconds: object) -> str:
    if not isinstance(seconds, (int, float)):
        return "—"
    m, s = divmod(round(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h} h {m:02d} min {s:02d} s" if h else f"{m} min {s:02d} s"


def _spreads(m: object) -> str:
    return "margin —" if not isinstance(m, (int, float)) else f"margin {m:+.2f} spreads"


def _phi_text(p: PhiRow) -> str:
    why = "beats" if p["beats"] else "more MACs" if not p["equal_or_fewer_macs"] else "lower or equal accuracy"
    return (f"φ={p['phi']}: {acc(p['ours_top1'])} at {mega(p['ours_macs'])} against "
            f"{acc(p['efficientnet_top1'])} at {mega(p['efficientnet_macs'])} ({why})")


def _answers(per_phi: Sequence[PhiRow], chosen: Chosen, tau: Tau) -> list[str]:
    every = bool(per_phi) and all(p["beats"] for p in per_phi)
    fam = ("**yes**" if every else "**no**") + ": " + "; ".join(_phi_text(p) for p in per_phi)
    base = "; ".join(f"{b['role']} {acc(b['mean'])}: {b['chosen_is']} ({_spreads(b['margin'])})"
                     for b in chosen.get("baselines", [])) or "no baselines trained"
    lo, hi = tau["ci"]
    return [f"- Does our family beat EfficientNet's at equal or fewer MACs on test accuracy, at every φ? {fam}.",
            f"- Does the chosen (α, β, γ) beat the single-dimension baselines (refined proxy, chosen "
            f"{acc(chosen.get('mean'))})? {base}.",
            f"- Can the grid tell its candidates apart? The chosen triple is {_spreads(chosen.get('margin'))} over "
            f"the runner-up: **{chosen.get('verdict')}**.",
            f"- Proxy against test: Kendall τ = {acc(tau['tau'])} (95 % bootstrap interval [{acc(lo)}, {acc(hi)}]) "
            f"over the {tau['n']} networks trained to the end (the brief grid proxy's held-out accuracy against "
            "test top-1)."]


def _tables(final: Sequence[FinalRow], members: Sequence[MemberRow], per_phi: Sequence[PhiRow]) -> list[str]:
    proxy = {m["name"]: m.get("proxy", {}).get("accuracy") for m in members}
    lines = ["## Final training (the test split, read once per network)", "",
             "| network | φ | MACs | params | trained at | test top-1 | test top-5 | brief proxy | train time |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in final:
        lines.append(f"| {r['name']} | {r['phi']} | {mega(r['macs'])} | {mega(r['params'])} "
                     f"| {r.get('resolution')} px | {acc(r.get('test_top1'))} | {acc(r.get('test_top5'))} "
                     f"| {acc(proxy.get(r['name']))} | {_duration(r.get('seconds'))} |")
    lines += ["", "| φ | ours | MACs | test top-1 | EfficientNet | MACs | test top-1 | ours beats it |",
              "|---|---|---|---|---|---|---|---|"]
    for p in per_phi:
        lines.append(f"| {p['phi']} | {p['ours']} | {mega(p['ours_macs'])} | {acc(p['ours_top1'])} "
                     f"| {p['efficientnet']} | {mega(p['efficientnet_macs'])} | {acc(p['efficientnet_top1'])} "
                     f"| {'yes' if p['beats'] else 'no'} |")
    return lines


def _grid_row(index: str, a: float, b: float, g: float, macs: int, px: object, brief: object,
              e: EntryRow | None, chosen_key: object) -> str:
    mark = " **chosen**" if e and e["key"] == chosen_key else ""
    return (f"| {index} | {a:.4g} | {b:.4g} | {g:.4g} | {mega(macs)} | {px} | {acc(brief)} "
            f"| {acc(e['mean']) if e else '—'} | {acc(e['spread']) if e else '—'} "
            f"| {'/'.join(e['roles']) if e else ''}{mark} |")


def _grid_tables(candidates: Sequence[dict[str, str]], chosen: Chosen) -> list[str]:
    """The trained candidates (the brief round) with their refined figures, then the baselines off the grid."""
    entries = chosen.get("entries", [])
    by_index = {e["grid_index"]: e for e in entries if e.get("grid_index") is not None}
    g, r = chosen.get("grid", {}), chosen.get("refine", {})
    lines = ["## The grid: all candidates briefly, the best third longer with several seeds", "",
             f"Brief round: {g.get('trained')} of the {g.get('candidates')} feasible candidates, {g.get('epochs')} "
             f"epoch(s). Refined round: {r.get('kept')} candidates and the baselines, {r.get('epochs')} epochs "
             f"(warm-up {r.get('warmup_epochs')}), seeds {r.get('seeds')}. Spread = standard deviation over seeds; "
             f"the margin unit is the pooled spread, {acc(chosen.get('pooled_spread'))}.", "",
             "| # | α | β | γ | MACs | proxy px | brief accuracy | refined mean | spread | role |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for c in candidates:
        e, brief = by_index.get(int(c["index"])), float(c["accuracy"]) if c.get("accuracy") else None
        if brief is not None or e is not None:
            lines.append(_grid_row(c["index"], float(c["alpha"]), float(c["beta"]), float(c["gamma"]),
                                   int(c["macs"]), c["proxy_resolution"], brief, e, chosen.get("key")))
    for e in entries:
        if e.get("grid_index") is None:
            lines.append(_grid_row("—", e["alpha"], e["beta"], e["gamma"], e["macs"], e["proxy_resolution"], None,
                                   e, chosen.get("key")))
    d = chosen.get("depth")
    if d:
        lines += ["", f"Depth: the deepest refined network ({d['key']}, α={d['alpha']:g}) reached "
                  f"{acc(d['refined_mean'])} on the refined proxy (brief round: {acc(d['grid_accuracy'])}; best "
                  f"{acc(d['best_mean'])}; chance {acc(d['chance'])}): it "
                  f"**{'learns' if d['learns'] else 'does not learn'}** (learns = accuracy above chance at least "
                  "0.9 of the best's)."]
    return lines


def build_report(out: Path, config_path: str) -> ReportRecord:
    """Write ``OUT/report.md``, ``OUT/report.png`` and ``OUT/5-report/report.json``; returns the last."""
    from nas.recipe.plots import plot_report

    chosen = load_record(out / STEPS[1].folder / "chosen.json", Chosen)
    candidates = list(csv.DictReader((out / STEPS[1].folder / "candidates.csv").open()))
    members = load_record(out / STEPS[2].folder / "families.json", Families).get("members", [])
    final = load_record(out / STEPS[3].folder / "final.json", Final).get("members", [])
    search = (read_json(out / STEPS[0].folder / "done.json") or {}).get("summary")
    b0 = search if isinstance(search, dict) else {}
    per_phi, tau, times = compare_families(final), proxy_vs_test(members, final), _step_times(out)
    total = sum(t or 0.0 for _, t, _ in times)
    lines = [f"# nas-derive: {out}", "",
             f"Config `{config_path}`. Our B0: {b0.get('name')} ({mega(b0.get('macs'))} MACs at "
             f"{b0.get('resolution')} px, search target {mega(b0.get('target_flops'))}).", "",
             "## Answers", "", *_answers(per_phi, chosen, tau), "", "![report](report.png)", "",
             *_tables(final, members, per_phi), "", *_grid_tables(candidates, chosen), "",
             "## Wall time per step", "", "| step | wall time | attempts |", "|---|---|---|",
             *[f"| {step} | {_duration(t)} | {n} |" for step, t, n in times],
             f"| total (steps 1-4) | {_duration(total)} | |", ""]
    (out / "report.md").write_text("\n".join(lines))
    plot_report(final, candidates, chosen, out / "report.png")
    record: ReportRecord = {
        "per_phi": per_phi, "family_beats_at_every_phi": bool(per_phi) and all(p["beats"] for p in per_phi),
        "kendall_tau": tau, "step_seconds": {step: t for step, t, _ in times}, "total_seconds": total,
        "chosen": {"alpha": chosen.get("alpha"), "beta": chosen.get("beta"), "gamma": chosen.get("gamma"),
                   "mean": chosen.get("mean"), "margin": chosen.get("margin"), "verdict": chosen.get("verdict")}}
    write_json(out / STEPS[4].folder / "report.json", record)
    return record
