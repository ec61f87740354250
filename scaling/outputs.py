"""What ``nas-grid-scale`` shows and writes: the plan, candidates.csv, the family (variants, tables,
coefficients.yaml, plots) and the manifest."""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Mapping, Sequence

import yaml

from nas.config import mask_url, public_dict
from nas.search.report import write_manifest
from scaling.compound import Candidate, Coefficients
from scaling.config import GridConfig
from scaling.search import choose
from scaling.variants import Variant, make_family, variant_yaml
from search_spaces import ArchSpec, count_cost

OUTPUTS = ("candidates.csv", "variants.csv", "variants", "coefficients.yaml", "candidates.png", "variants.png",
           "manifest.json")  # what a grid run writes in --out, beside its study's files (nas.cluster.storage_files)

__all__ = ["OUTPUTS", "CANDIDATE_COLUMNS", "VARIANT_COLUMNS", "write_csv", "candidate_rows", "plan_text",
           "family_table", "emit", "write_outputs"]

CANDIDATE_COLUMNS = ("index", "alpha", "beta", "gamma", "product", "params", "macs", "macs_ratio", "resolution",
                     "proxy_resolution", "accuracy", "state", "trial", "seconds", "reason")
VARIANT_COLUMNS = ("phi", "mode", "name", "depth", "width", "resolution", "dropout", "drop_connect", "params", "macs",
                   "macs_ratio", "ideal_ratio", "predicted_ratio")
Results = dict[int, dict]  # candidate index -> its result row, as scaling.search.run_search returns them


def write_csv(path: Path, columns: Sequence[str], rows: Sequence[Mapping[str, object]]) -> None:
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        w.writeheader()
        w.writerows({k: ("" if r.get(k) is None else r.get(k)) for k in columns} for r in rows)


def candidate_rows(candidates: Sequence[Candidate], results: Results) -> list[dict]:
    return [{**c.row(), **results.get(c.index, {})} for c in candidates]


def plan_text(cfg: GridConfig, base: ArchSpec, candidates: Sequence[Candidate], seconds: float) -> str:
    """The plan: the base, the grid (or the given coefficients), the proxy task, the first candidates."""
    cost = count_cost(base)
    grid = cfg.grid
    n = len(grid.values())
    lines = [f"base       {base.name or cfg.base}: {cost.params:,} params, {cost.macs:,} MACs at {base.resolution}px"]
    if cfg.given:
        lines.append(f"given      alpha={cfg.given.alpha:g} beta={cfg.given.beta:g} gamma={cfg.given.gamma:g}, "
                     f"alpha*beta^2*gamma^2 = {cfg.given.product:.4f}")
    else:
        lines.append(f"grid       step {cfg.step:g}, 1..{cfg.max:g} ({n} values, {n ** 3} points), "
                     f"|alpha*beta^2*gamma^2 - 2| <= {cfg.tolerance:g}: {len(candidates)} candidates, "
                     f"enumerated and costed in {seconds:.3f} s")
        budget = min(cfg.max_candidates or len(candidates), len(candidates))
        lines.append(f"proxy      {cfg.dataset}, {cfg.proxy_resolution}px x gamma, {cfg.epochs:g} epoch(s); "
                     f"{budget} candidate(s) to train, timeout {cfg.timeout or 'none'}, pruner {cfg.pruner}")
    ratios = [c.macs_ratio for c in candidates]
    lines.append(f"MACs ratio {min(ratios):.3f} .. {max(ratios):.3f} (ideal 2; rounding moves it)")
    lines.append(f"{'#':>4} {'alpha':>5} {'beta':>5} {'gamma':>5} {'product':>7} {'res':>4} {'params':>11} "
                 f"{'MACs':>14} {'ratio':>6}")
    for c in candidates[:10]:
        k = c.coefficients
        lines.append(f"{c.index:>4} {k.alpha:5.2f} {k.beta:5.2f} {k.gamma:5.2f} {k.product:7.4f} "
                     f"{c.arch.resolution:>4} {c.params:>11,} {c.macs:>14,} {c.macs_ratio:6.3f}")
    if len(candidates) > 10:
        lines.append(f"     ... {len(candidates) - 10} more in candidates.csv (evaluation order)")
    return "\n".join(lines)


def family_table(variants: Sequence[Variant]) -> str:
    lines = [f"{'phi':>3} {'depth':>7} {'width':>7} {'res':>4} {'drop':>4} {'params':>11} {'MACs':>15} "
             f"{'ratio':>8} {'2^phi':>5} {'(abg)^phi':>9}"]
    for v in variants:
        a = v.arch
        pred = "" if v.predicted_ratio is None else f"{v.predicted_ratio:.2f}"
        lines.append(f"{v.phi:>3} {a.depth_mult:7.4g} {a.width_mult:7.4g} {a.resolution:>4} {a.dropout:4.1f} "
                     f"{v.params:>11,} {v.macs:>15,} {v.macs_ratio:8.3f} {v.ideal_ratio:5.0f} {pred:>9}")
    return "\n".join(lines)


def _record(cfg: GridConfig, base: ArchSpec, coefficients: Coefficients | None, candidates: Sequence[Candidate],
            results: Results, chosen: Candidate | None, seconds: float,
            variants: Sequence[Variant]) -> dict[str, object]:
    """What coefficients.yaml holds."""
    cost = count_cost(base)
    return {
        **({"alpha": coefficients.alpha, "beta": coefficients.beta, "gamma": coefficients.gamma,
            "product": round(coefficients.product, 6)} if coefficients else {}),
        "source": "given" if cfg.given else "grid search",
        "chosen": None if chosen is None else {**chosen.row(), **results[chosen.index]},
        "base": {"ref": cfg.base, "name": base.name, "resolution": base.resolution, "params": cost.params,
                 "macs": cost.macs},
        "grid": {"step": cfg.step, "max": cfg.max, "tolerance": cfg.tolerance, "target_product": 2.0,
                 "resolution_multiple": cfg.resolution_multiple, "values": list(cfg.grid.values()),
                 "feasible": len(candidates), "evaluated": sum(1 for r in results.values() if r.get("state")),
                 "enumerate_and_cost_seconds": round(seconds, 4)},
        "proxy": {"dataset": cfg.dataset, "proxy_resolution": cfg.proxy_resolution, "epochs": cfg.epochs,
                  "batch_size": cfg.batch_size, "val_size": cfg.val_size, "train_size": cfg.train_size,
                  "seed": cfg.seed},
        "macs_convention": "fvcore (conv+linear MACs, BN 2/element, adaptive_avg_pool2d 1/element)",
        "candidates": candidate_rows(candidates, results),
        "variants": [v.row() for v in variants],
    }


def emit(cfg: GridConfig, base: ArchSpec, coefficients: Coefficients | None, candidates: Sequence[Candidate],
         results: Results, chosen: Candidate | None, seconds: float) -> list[Variant]:
    """Write variants, tables, coefficients.yaml and plots to ``cfg.out_dir``."""
    from scaling import plots

    out = cfg.out_dir
    variants = make_family(base, cfg.phi, cfg.mode, coefficients, cfg.resolution_multiple)
    (out / "variants").mkdir(parents=True, exist_ok=True)
    for v in variants:
        (out / "variants" / f"b{v.phi}.yaml").write_text(variant_yaml(v, coefficients))
    write_csv(out / "variants.csv", VARIANT_COLUMNS, [v.row() for v in variants])
    record = _record(cfg, base, coefficients, candidates, results, chosen, seconds, variants)
    (out / "coefficients.yaml").write_text(yaml.safe_dump(record, sort_keys=False, default_flow_style=None, width=120))
    plots.plot_candidates(candidate_rows(candidates, results), chosen.index if chosen else None, out / "candidates.png")
    plots.plot_variants([v.row() for v in variants], out / "variants.png")
    return variants


def write_outputs(cfg: GridConfig, base: ArchSpec, candidates: Sequence[Candidate], results: Results,
                  seconds: float) -> tuple[Coefficients | None, Candidate | None, list[Variant]]:
    """candidates.csv always; with coefficients also the family, coefficients.yaml, plots and manifest."""
    chosen = None if cfg.given else choose(candidates, results)
    coefficients = cfg.given or (chosen.coefficients if chosen else None)
    cfg.out_dir.mkdir(parents=True, exist_ok=True)
    write_csv(cfg.out_dir / "candidates.csv", CANDIDATE_COLUMNS, candidate_rows(candidates, results))
    if coefficients is None:
        return None, None, []
    variants = emit(cfg, base, coefficients, candidates, results, chosen, seconds)
    write_manifest(cfg.out_dir / "manifest.json", public_dict(cfg),
                   {"study_name": cfg.study_name,
                    "storage": mask_url(cfg.storage) if cfg.storage else "journal (default)",
                    "alpha": coefficients.alpha, "beta": coefficients.beta, "gamma": coefficients.gamma})
    return coefficients, chosen, variants
