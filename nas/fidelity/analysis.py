"""``nas-proxy-check``'s analysis and report: rank agreement with bootstrap intervals, the table,
results.csv, summary.json and scatter.png. Functions of the scores alone; nothing is trained here."""
from __future__ import annotations

import csv
import itertools
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Mapping, Sequence, TypedDict

import numpy as np

from nas.config.figures import new_figure
from nas.fidelity.rankstats import bootstrap_ci, kendall_tau, spearman_rho

if TYPE_CHECKING:
    from nas.fidelity.cache import ScoreCache
    from nas.fidelity.config import CheckConfig
    from search_spaces import ArchSpec

MACS_RESOLUTION = 224  # MACs are counted at the deployment resolution, as nas-search does
BOOTSTRAP_SAMPLES, CI_LEVEL = 1000, 0.95
Stat = Callable[[np.ndarray, np.ndarray], float]


class Agreement(TypedDict, total=False):
    """How well two rankings agree: ``n`` pairs, tau and rho with their bootstrap intervals."""

    n: int
    kendall_tau: float
    kendall_tau_ci: tuple[float, float]
    spearman_rho: float
    spearman_rho_ci: tuple[float, float]
    seconds_per_arch: float  # of a proxy
    mean_std: float  # of the reference's seed-to-seed agreement


# -- analysis ------------------------------------------------------------------------------------------------------
def _rank_agreement(head: Agreement, x: np.ndarray, y: np.ndarray, tau: Stat, rho: Stat) -> Agreement:
    """``head``, then ``tau(x, y)`` and ``rho(x, y)`` with bootstrap CIs over the items (rows); NaN with < 3."""
    out = head.copy()
    enough = len(x) >= 3
    out["kendall_tau"] = tau(x, y) if enough else math.nan
    out["kendall_tau_ci"] = _ci(x, y, tau) if enough else (math.nan, math.nan)
    out["spearman_rho"] = rho(x, y) if enough else math.nan
    out["spearman_rho_ci"] = _ci(x, y, rho) if enough else (math.nan, math.nan)
    return out


def _ci(x: np.ndarray, y: np.ndarray, stat: Stat) -> tuple[float, float]:
    return bootstrap_ci(x, y, stat, n=BOOTSTRAP_SAMPLES, level=CI_LEVEL)


def fidelity(x: np.ndarray, y: np.ndarray) -> Agreement:
    """Kendall tau and Spearman rho of ``x`` against ``y`` with bootstrap CIs, over the pairs both finite."""
    ok = np.isfinite(x) & np.isfinite(y)
    return _rank_agreement({"n": int(ok.sum())}, x[ok], y[ok], kendall_tau, spearman_rho)


def _over_seed_pairs(stat: Stat) -> Stat:
    """``stat`` between every pair of columns of an archs x seeds matrix, averaged (the 2nd argument unused)."""
    def mean(runs: np.ndarray, _: np.ndarray) -> float:
        pairs = itertools.combinations(range(runs.shape[1]), 2)
        return float(np.mean([stat(runs[:, a], runs[:, b]) for a, b in pairs]))
    return mean


def seed_agreement(runs: np.ndarray) -> Agreement:
    """Agreement of the reference with itself across seeds (``runs``: archs x seeds, all finite rows).

    Tau and rho are the means over every pair of seeds; ``mean_std`` is the standard deviation
    (ddof 1) of an architecture's accuracy across seeds, averaged over architectures.
    """
    mean_std = float(np.mean(np.std(runs, axis=1, ddof=1))) if len(runs) else math.nan
    return _rank_agreement({"n": len(runs), "mean_std": mean_std}, runs, runs, _over_seed_pairs(kendall_tau),
                           _over_seed_pairs(spearman_rho))


@dataclass(frozen=True)
class Analysis:
    """The scores of the current architectures and what they say about each proxy."""

    archs: list[ArchSpec]
    macs: list[int]
    proxy_scores: dict[str, np.ndarray]  # method -> score per arch
    reference_runs: np.ndarray  # archs x reference seeds
    proxies: dict[str, Agreement]  # method -> fidelity(...) + seconds_per_arch
    seed_to_seed: Agreement | None
    reference_seconds: float

    @property
    def reference(self) -> np.ndarray:
        return self.reference_runs.mean(axis=1)


def analyse(cfg: CheckConfig, archs: Sequence[ArchSpec], cache: ScoreCache,
            stored: Mapping[str, str] | None = None) -> Analysis:
    """Each proxy's agreement with the reference; ``stored``: a proxy's name in the cache (``plan_items``)."""
    from search_spaces import count_cost

    stored = stored or {}

    def scores(method: str, seed: int) -> np.ndarray:
        return np.array([cache.score((a.to_str(), method, seed)) for a in archs])

    def seconds_per_arch(method: str, seeds: Sequence[int]) -> float:
        return float(np.mean([cache.seconds((a.to_str(), method, s)) for a in archs for s in seeds]))

    runs = np.stack([scores(cfg.reference_method, s) for s in cfg.reference_seed_values], axis=1)
    reference = runs.mean(axis=1)
    proxy_scores = {m: scores(stored.get(m, m), cfg.seed) for m in cfg.proxies}
    proxies: dict[str, Agreement] = {}
    for m, x in proxy_scores.items():
        proxies[m] = fidelity(x, reference)
        proxies[m]["seconds_per_arch"] = seconds_per_arch(stored.get(m, m), [cfg.seed])
    finite_rows = runs[np.isfinite(runs).all(axis=1)]
    seeds = seed_agreement(finite_rows) if runs.shape[1] >= 2 else None
    return Analysis(list(archs), [count_cost(a, MACS_RESOLUTION).macs for a in archs], proxy_scores, runs, proxies,
                    seeds, seconds_per_arch(cfg.reference_method, cfg.reference_seed_values))


# -- outputs -------------------------------------------------------------------------------------------------------
def _with_ci(value: float, ci: tuple[float, float]) -> str:
    lo, hi = ci
    return f"{value:6.3f} [{lo:6.3f}, {hi:6.3f}]"


def _agreement_columns(d: Agreement) -> str:
    return (f"{d['n']:>3}  {_with_ci(d['kendall_tau'], d['kendall_tau_ci']):<26} "
            f"{_with_ci(d['spearman_rho'], d['spearman_rho_ci']):<26}")


def report_table(cfg: CheckConfig, a: Analysis) -> str:
    """The fidelity table: one row per proxy, then the reference's seed-to-seed agreement."""
    lines = [f"{len(a.archs)} architectures ({min(a.macs) / 1e6:.0f}M..{max(a.macs) / 1e6:.0f}M MACs at "
             f"{MACS_RESOLUTION} px); reference {cfg.reference_method} x {cfg.reference_seeds} seed(s), "
             f"{a.reference_seconds:.1f} s per run; {cfg.task.dataset} at {cfg.task.proxy_resolution} px",
             f"{'proxy':<14} {'n':>3}  {'Kendall tau [95% CI]':<26} {'Spearman rho [95% CI]':<26} {'s/arch':>7}"]
    for method, d in a.proxies.items():
        lines.append(f"{method:<14} {_agreement_columns(d)} {d['seconds_per_arch']:7.2f}")
    if a.seed_to_seed is not None:
        d = a.seed_to_seed
        lines.append(f"{'seed-to-seed':<14} {_agreement_columns(d)}  (mean std of accuracy across seeds "
                     f"{d['mean_std']:.4f})")
    return "\n".join(lines)


def write_results_csv(cfg: CheckConfig, a: Analysis, path: Path) -> None:
    """One row per architecture: name, arch string, MACs, each proxy's score, the reference per seed and mean."""
    seeds = [f"reference_seed{s}" for s in cfg.reference_seed_values]
    columns = ["name", "arch", "macs", *a.proxy_scores, *seeds, "reference_mean"]
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(columns)
        for i, arch in enumerate(a.archs):
            values = [a.proxy_scores[m][i] for m in a.proxy_scores] + [*a.reference_runs[i], a.reference[i]]
            w.writerow([arch.name, arch.to_str(), a.macs[i], *("" if math.isnan(v) else repr(float(v))
                                                              for v in values)])


def _plain(value: object) -> object:
    """JSON-safe: tuples as lists, NaN/inf as null."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_summary(cfg: CheckConfig, a: Analysis, computed: int, items: int, path: Path) -> None:
    summary = {
        "config": cfg.public(),
        "archs": len(a.archs),
        "reference": {"method": cfg.reference_method, "seeds": list(cfg.reference_seed_values),
                      "seconds_per_run": a.reference_seconds},
        "proxies": a.proxies,
        "seed_to_seed": a.seed_to_seed,
        "bootstrap": {"samples": BOOTSTRAP_SAMPLES, "level": CI_LEVEL},
        "scores": {"needed": items, "computed_this_run": computed, "reused": items - computed},
    }
    path.write_text(json.dumps(_plain(summary), indent=2) + "\n")


def plot_scatter(cfg: CheckConfig, a: Analysis, path: Path) -> bool:
    """One panel per proxy (score vs reference mean, tau in the title), then seed vs seed of the reference."""
    panels = [(m, a.proxy_scores[m], a.reference, f"{m}  τ = {a.proxies[m]['kendall_tau']:.2f}",
               f"{m} score", f"reference ({cfg.reference_method}, mean)") for m in a.proxy_scores]
    if a.seed_to_seed is not None:
        s1, s2 = cfg.reference_seed_values[:2]
        panels.append(("seeds", a.reference_runs[:, 0], a.reference_runs[:, 1],
                       f"seed-to-seed  τ = {a.seed_to_seed['kendall_tau']:.2f}",
                       f"{cfg.reference_method} seed {s1}", f"{cfg.reference_method} seed {s2}"))
    columns = min(3, len(panels))
    rows = math.ceil(len(panels) / columns)
    fig = new_figure(4.2 * columns, 3.6 * rows)
    if fig is None:
        return False
    axes = fig.subplots(rows, columns, squeeze=False)
    is_b0 = np.array([arch.name == "efficientnet-b0" for arch in a.archs])
    for ax, (_, x, y, title, xlabel, ylabel) in zip(axes.flat, panels):
        ax.scatter(x[~is_b0], y[~is_b0], s=16, alpha=0.7)
        if is_b0.any():
            ax.scatter(x[is_b0], y[is_b0], marker="*", s=90, color="r", label="EfficientNet-B0")
            ax.legend(loc="lower right", fontsize=8)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel(xlabel, fontsize=9)
        ax.set_ylabel(ylabel, fontsize=9)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return True
