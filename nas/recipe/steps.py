"""Steps 1-4 of the derivation: what each runs, reads and writes in its own folder.

1. ``1-search``: ``nas-search`` with the search section → ``best.yaml``, our B0.
2. ``2-grid``: ``nas-grid-scale`` on our B0 at φ = 1 (the brief round), then the refinement
   (``nas.recipe.refine``) → ``refine.json`` and ``chosen.json`` (α, β, γ and the figures behind them).
3. ``3-families``: ours B0..BK and EfficientNet-B0..BK as YAML files, each scored on the grid's brief
   proxy → ``families.json``.
4. ``4-final``: ``nas-train`` of every member with the final section's recipe → ``final.json``.

Each function returns ``(summary, headline)``: the summary goes into the step's ``done.json``.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import cast

from nas.config import ConfigError
from nas.recipe.choice import analyse
from nas.recipe.config import STEPS, DeriveConfig, refine_proxy
from nas.recipe.markers import file_digest, read_json, write_json
from nas.recipe.records import Chosen, Families, FinalRow, MemberRow, load_record
from nas.recipe.refine import ProxyRunner, plan_entries, read_candidates, refine
from nas.recipe.tools import note, run_tool
from scaling.compound import Coefficients
from scaling.variants import make_family
from search_spaces import ArchSpec, count_cost, get_preset, load_arch, yaml_safe

__all__ = ["Result", "run_search", "run_grid", "run_families", "run_final", "BEST", "CHOSEN", "FAMILIES", "FINAL"]

Result = tuple[dict[str, object], str]
BEST = Path(STEPS[0].folder) / "best.yaml"
CHOSEN = Path(STEPS[1].folder) / "chosen.json"
CANDIDATES = Path(STEPS[1].folder) / "candidates.csv"
REFINE = Path(STEPS[1].folder) / "refine.json"
FAMILIES = Path(STEPS[2].folder) / "families.json"
FINAL = Path(STEPS[3].folder) / "final.json"


def _tool_config(path: Path, values: dict[str, object]) -> Path:
    """A ``--config`` file for a child command (never holds the storage URL: that goes as a flag)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("# written by nas-derive from its config; helpers may run the tool with it\n"
                    + yaml_safe.dump(values))  # quotes strings the child's YAML 1.2 reader would take as numbers
    return path


def _storage(cfg: DeriveConfig) -> list[str]:
    return ["--storage", cfg.storage] if cfg.storage else []


def run_search(cfg: DeriveConfig) -> Result:
    d = cfg.step_dir(STEPS[0])
    conf = _tool_config(d / "search.yaml", {**cfg.sections["search"], "out": str(d)})
    run_tool("nas.cli.search", ["--config", str(conf), *_storage(cfg)], d / "log.txt", "nas-search")
    if not (d / "best.yaml").is_file():
        raise ConfigError(f"nas-search finished without a best architecture (no trial completed): see {d / 'log.txt'}")
    manifest = read_json(d / "manifest.json") or {}
    rows = list(csv.DictReader((d / "leaderboard.csv").open()))
    best = next((r for r in rows if r["number"] == str(manifest.get("best_trial"))), None)
    arch = load_arch(d / "best.yaml")
    cost = count_cost(arch)
    summary: dict[str, object] = {
        "trials": len(rows), "completed": sum(r["state"] == "COMPLETE" for r in rows), "best_trial": manifest.get(
            "best_trial"), "name": arch.name, "macs": cost.macs, "params": cost.params, "resolution": arch.resolution,
        "accuracy": float(best["accuracy"]) if best and best["accuracy"] else None,
        "reward": float(best["reward"]) if best and best["reward"] else None,
        "target_flops": cfg.search.target_flops}
    acc = summary["accuracy"]
    return summary, (f"our B0 = {arch.name}: {cost.macs / 1e6:.1f}M MACs, proxy accuracy "
                     f"{acc if acc is None else f'{acc:.4f}'} ({len(rows)} trials)")


def run_grid(cfg: DeriveConfig) -> Result:
    d = cfg.step_dir(STEPS[1])
    best = cfg.out / BEST
    conf = _tool_config(d / "grid.yaml", {**cfg.sections["grid"], "out": str(d), "base": str(best), "phi": 1})
    run_tool("scaling.cli", ["--config", str(conf), *_storage(cfg)], d / "log.txt", "nas-grid-scale")
    base = load_arch(best)
    candidates = read_candidates(cfg.out / CANDIDATES, base, cfg.grid)
    entries = plan_entries(candidates, base, cfg.grid, cfg.refine.keep, cfg.refine.baselines)
    runner = ProxyRunner(refine_proxy(cfg, cfg.grid.seed))
    seeds = [cfg.grid.seed + i for i in range(cfg.refine.seeds)]
    runs = refine(entries, runner, seeds, cfg.out / REFINE, lambda text: note(d / "log.txt", text))
    classes = next((int(str(r["num_classes"])) for rs in runs.values() for r in rs if r.get("num_classes")), 10)
    grid_record = yaml_safe.load_file(d / "coefficients.yaml") if (d / "coefficients.yaml").is_file() else {}
    choice = analyse(entries, runs, 1.0 / classes, (grid_record if isinstance(grid_record, dict) else {}).get("chosen"))
    trained = sum(c.grid_accuracy is not None for c in candidates)
    choice["grid"] = {"candidates": len(candidates), "trained": trained, "epochs": cfg.grid.epochs,
                      "train_size": cfg.grid.train_size}
    choice["refine"] = {"seeds": seeds, "epochs": cfg.refine.epochs, "warmup_epochs": cfg.refine.warmup_epochs,
                        "train_size": runner.task.train_size, "lr": runner.task.lr, "kept": sum(
                            "candidate" in e.roles for e in entries)}
    write_json(cfg.out / CHOSEN, choice)
    m = choice["margin"]
    margin_text = "no runner-up" if m is None else f"margin {m:.2f} spreads over the runner-up: {choice['verdict']}"
    summary: dict[str, object] = {"alpha": choice["alpha"], "beta": choice["beta"], "gamma": choice["gamma"],
                                  "mean": choice["mean"], "pooled_spread": choice["pooled_spread"], "margin": m,
                                  "verdict": choice["verdict"]}
    return summary, (f"chosen alpha={choice['alpha']:g} beta={choice['beta']:.4g} gamma={choice['gamma']:.4g}, "
                     f"refined accuracy {choice['mean']:.4f}; {margin_text}")


def _members(cfg: DeriveConfig) -> list[tuple[str, str, int, ArchSpec]]:
    """``(name, family, phi, arch)`` of ours B0..BK and EfficientNet-B0..BK."""
    chosen = load_record(cfg.out / CHOSEN, Chosen)
    k = Coefficients(float(chosen["alpha"]), float(chosen["beta"]), float(chosen["gamma"]))
    base = load_arch(cfg.out / BEST)
    ours = [(0, base)] + [(v.phi, v.arch) for v in make_family(base, cfg.families.phis, "compound", k,
                                                               cfg.grid.resolution_multiple)]
    effnet = [(phi, get_preset(f"efficientnet-b{phi}")) for phi in (0, *cfg.families.phis)]
    return [(f"ours-b{phi}", "ours", phi, a.replace(name=f"ours-b{phi}")) for phi, a in ours] + \
        [(f"efficientnet-b{phi}", "efficientnet", phi, a) for phi, a in effnet]


def _member_row(cfg: DeriveConfig, runner: ProxyRunner, name: str, family: str, phi: int, arch: ArchSpec,
                before: MemberRow | None) -> MemberRow:
    """Write the member's YAML; score it on the brief proxy unless its file is unchanged and already scored."""
    d = cfg.step_dir(STEPS[2])
    path = d / f"{name}.yaml"
    path.write_text(f"# nas-derive: {family} B{phi}\n" + arch.to_yaml())
    cost = count_cost(arch)
    b0 = load_arch(cfg.out / BEST) if family == "ours" else get_preset("efficientnet-b0")
    row: MemberRow = {"name": name, "family": family, "phi": phi, "file": path.name, "digest": file_digest(path),
                      "params": cost.params, "macs": cost.macs, "resolution": arch.resolution,
                      "proxy_resolution": runner.resolution_of(arch, b0.resolution)}
    if cfg.families.proxy_scores:
        if before and before.get("digest") == row["digest"] and "proxy" in before:
            row["proxy"] = before["proxy"]
        else:
            row["proxy"] = runner.train(arch, row["proxy_resolution"], cfg.grid.seed)
            note(d / "log.txt", f"brief proxy {name} ({row['proxy_resolution']}px): {row['proxy']}")
    return row


def run_families(cfg: DeriveConfig) -> Result:
    d = cfg.step_dir(STEPS[2])
    d.mkdir(parents=True, exist_ok=True)
    before = {m["name"]: m for m in load_record(d / "families.json", Families).get("members", [])}
    runner = ProxyRunner(cfg.grid)
    members: list[MemberRow] = []
    for name, family, phi, arch in _members(cfg):
        members.append(_member_row(cfg, runner, name, family, phi, arch, before.get(name)))
        done = {m["name"] for m in members}  # scored so far, and what an earlier attempt scored
        write_json(d / "families.json", {"members": members + [m for n, m in before.items() if n not in done]})
    write_json(d / "families.json", {"members": members, "phis": list(cfg.families.phis)})
    return ({"members": len(members)},
            f"{len(members)} members: " + ", ".join(f"{m['name']} {m['macs'] / 1e6:.0f}M" for m in members))


def _metrics(path: Path) -> FinalRow | None:
    """nas-train's ``metrics.json`` when it finished, else None."""
    try:
        value = json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return cast(FinalRow, value) if isinstance(value, dict) and value.get("finished") else None


def _final_row(m: MemberRow, metrics: FinalRow) -> FinalRow:
    keep = ("test_top1", "test_top5", "heldout_top1", "seconds", "epochs", "images", "resolution", "recipe",
            "macs_224")
    return cast(FinalRow, {"name": m["name"], "family": m["family"], "phi": m["phi"], "macs": m["macs"],
                           "params": m["params"], **{k: v for k, v in metrics.items() if k in keep}})


def run_final(cfg: DeriveConfig, train_command: str = "nas.cli.train") -> Result:
    d = cfg.step_dir(STEPS[3])
    fam = cfg.step_dir(STEPS[2])
    rows: list[FinalRow] = []
    for m in load_record(cfg.out / FAMILIES, Families).get("members", []):
        out = d / m["name"]
        metrics = _metrics(out / "metrics.json")
        if metrics is None:  # nas-train resumes from its checkpoint when an earlier attempt was cut short
            run_tool(train_command, [str(fam / m["file"]), "--out", str(out), *cfg.final.flags(), "--quiet"],
                     d / "log.txt", f"nas-train {m['name']}")
            metrics = _metrics(out / "metrics.json")
            if metrics is None:
                raise ConfigError(f"nas-train {m['name']} exited 0 without a finished {out / 'metrics.json'}")
        rows.append(_final_row(m, metrics))
        write_json(d / "final.json", {"members": rows})
    best = {f: max((r for r in rows if r["family"] == f), key=lambda r: r.get("test_top1", 0.0), default=None)
            for f in ("ours", "efficientnet")}
    return ({"members": len(rows)}, "; ".join(f"best {f}: {r['name']}, test top-1 {r.get('test_top1', 0.0):.4f}"
                                              for f, r in best.items() if r))
