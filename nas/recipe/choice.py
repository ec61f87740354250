"""The choice of α, β, γ after the refinement, and what the refined figures say about it.

The chosen triple is the refined candidate with the best mean accuracy (ties: fewer MACs). Its margin
over the runner-up, and over each single-dimension baseline, is measured in units of the pooled
seed-to-seed spread (``nas.recipe.stats``); under one spread the answer is ``cannot tell``.
"""
from __future__ import annotations

import math
from typing import Mapping, Sequence

from nas.config import ConfigError
from nas.recipe.records import BaselineRow, Chosen, DepthRow, EntryRow, ProxyRun
from nas.recipe.refine import BASELINES, Entry, coefficient_key
from nas.recipe.stats import Summary, learns, margin, pooled_spread, ranked, verdict, versus
from scaling.compound import Coefficients

__all__ = ["analyse", "coefficients_key"]


def _finished(runs: Sequence[ProxyRun]) -> tuple[float, ...]:
    return tuple(float(a) for r in runs if isinstance(a := r.get("accuracy"), (int, float)))


def _clean(x: float) -> float | None:
    """NaN (no figure) as None; an infinite margin (a difference with zero spread) stays infinite."""
    return None if math.isnan(x) else x


def _entry_rows(entries: Sequence[Entry], summaries: Mapping[str, Summary],
                runs: Mapping[str, Sequence[ProxyRun]]) -> list[EntryRow]:
    rows: list[EntryRow] = []
    for e in entries:
        s = summaries[e.key]
        c = e.coefficients
        rows.append({"key": e.key, "roles": list(e.roles), "alpha": c.alpha, "beta": c.beta, "gamma": c.gamma,
                     "params": e.params, "macs": e.macs, "macs_ratio": round(e.macs_ratio, 6),
                     "resolution": e.arch.resolution, "proxy_resolution": e.proxy_resolution,
                     "grid_index": e.grid_index, "grid_accuracy": e.grid_accuracy, "accuracies": list(s.values),
                     "mean": _clean(s.mean), "spread": _clean(s.spread),
                     "seeds": [r.get("seed", -1) for r in runs[e.key]],
                     "diverged": sum(1 for r in runs[e.key] if r.get("state") == "DIVERGED")})
    return rows


def _depth(entries: Sequence[Entry], summaries: Mapping[str, Summary], best: float, chance: float) -> DepthRow:
    """Whether the deepest refined architecture learns on the refined proxy (its accuracy above chance is at
    least 0.9 of the best's)."""
    deep = max(entries, key=lambda e: (e.coefficients.alpha, -e.macs))
    mean = summaries[deep.key].mean
    return {"key": deep.key, "alpha": deep.coefficients.alpha, "roles": list(deep.roles),
            "grid_accuracy": deep.grid_accuracy, "refined_mean": _clean(mean), "best_mean": _clean(best),
            "chance": chance, "learns": (not math.isnan(mean)) and learns(mean, best, chance)}


def _baselines(entries: Sequence[Entry], summaries: Mapping[str, Summary], chosen: Summary,
               spread: float) -> list[BaselineRow]:
    rows: list[BaselineRow] = []
    for role, _ in BASELINES:
        b = next((e for e in entries if role in e.roles), None)
        if b is None:
            continue
        bm = margin(chosen.mean, summaries[b.key].mean, spread)
        rows.append({"role": role, "key": b.key, "macs": b.macs, "mean": _clean(summaries[b.key].mean),
                     "spread": _clean(summaries[b.key].spread), "margin": _clean(bm),
                     "chosen_is": "the same architecture" if b.key == chosen.key else versus(bm)})
    return rows


def analyse(entries: Sequence[Entry], runs: Mapping[str, Sequence[ProxyRun]], chance: float,
            grid_choice: Mapping[str, object] | None) -> Chosen:
    """The refined choice: chosen triple, runner-up, pooled spread, margins, baselines, depth.

    Raises:
        ConfigError: no refined candidate finished a seed (every run diverged).
    """
    summaries = {e.key: Summary(e.key, _finished(runs[e.key])) for e in entries}
    by_key = {e.key: e for e in entries}
    spread = pooled_spread([s.values for s in summaries.values()])
    candidates = ranked([summaries[e.key] for e in entries if "candidate" in e.roles], {e.key: e.macs for e in entries})
    if not candidates or math.isnan(candidates[0].mean):
        raise ConfigError("no refined candidate finished training on the refined proxy (every run diverged): "
                          "lower the refine lr or raise refine.warmup_epochs")
    chosen = candidates[0]
    runner = candidates[1] if len(candidates) > 1 and not math.isnan(candidates[1].mean) else None
    m = margin(chosen.mean, runner.mean, spread) if runner else math.nan
    c = by_key[chosen.key].coefficients
    return {
        "alpha": c.alpha, "beta": c.beta, "gamma": c.gamma, "key": chosen.key, "mean": chosen.mean,
        "spread": _clean(chosen.spread), "pooled_spread": _clean(spread),
        "runner_up": None if runner is None else {"key": runner.key, "mean": runner.mean,
                                                  "spread": _clean(runner.spread)},
        "margin": _clean(m), "verdict": verdict(m) if runner else "no runner-up",
        "grid_choice": dict(grid_choice) if grid_choice else None,
        "changed_by_refinement": grid_choice is not None and coefficients_key(grid_choice) != chosen.key,
        "baselines": _baselines(entries, summaries, chosen, spread),
        "depth": _depth(entries, summaries, chosen.mean, chance),
        "chance": chance, "entries": _entry_rows(entries, summaries, runs),
    }


def coefficients_key(row: Mapping[str, object]) -> str:
    """The key of the (α, β, γ) in a row of numbers (the grid's own choice)."""
    return coefficient_key(Coefficients(*(float(str(row[k])) for k in ("alpha", "beta", "gamma"))))
