"""Outputs of a search: leaderboard, best architecture, plots and the run manifest."""
from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

from optuna.trial import FrozenTrial, TrialState

from nas.config.figures import new_figure
from nas.config.provenance import provenance
from nas.search.objective import pareto_front

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

COLUMNS = ("number", "state", "arch", "accuracy", "top5", "macs", "params", "reward", "seconds",
           "epochs", "images", "duplicate_of", "reason")


def trial_rows(trials: Iterable[FrozenTrial]) -> list[dict[str, Any]]:
    """One row per finished trial (complete or pruned), by trial number."""
    rows = []
    for t in sorted(trials, key=lambda t: t.number):
        if t.state not in (TrialState.COMPLETE, TrialState.PRUNED):
            continue
        row = {c: t.user_attrs.get(c) for c in COLUMNS}
        row.update(number=t.number, state=t.state.name)
        rows.append(row)
    return rows


def write_leaderboard(rows: list[dict[str, Any]], path: Path) -> None:
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS)
        w.writeheader()
        w.writerows({k: ("" if v is None else v) for k, v in r.items()} for r in rows)


def top_table(rows: list[dict[str, Any]], n: int = 10) -> str:
    """The ``n`` best completed trials by reward, as a fixed-width text table."""
    ranked = sorted((r for r in rows if r["state"] == "COMPLETE" and r["reward"] is not None),
                    key=lambda r: -r["reward"])[:n]
    lines = [f"{'#':>5} {'reward':>7} {'acc':>6} {'MACs':>8} {'params':>7}  arch"]
    for r in ranked:
        lines.append(f"{r['number']:>5} {r['reward']:7.4f} {r['accuracy']:6.3f} {r['macs'] / 1e6:7.1f}M "
                     f"{r['params'] / 1e6:6.2f}M  {r['arch']}")
    return "\n".join(lines)


def _finish(fig: Figure, ax: Axes, xlabel: str, ylabel: str, path: Path) -> bool:
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return True


def plot_pareto(rows: list[dict[str, Any]], target: float, path: Path) -> bool:
    """Accuracy vs MACs of the trained trials, the Pareto front and the target line."""
    fig = new_figure(6, 4.2)
    if fig is None:
        return False
    done = [r for r in rows if r["state"] == "COMPLETE" and r["accuracy"] is not None]
    ax = fig.subplots()
    if done:
        pts = [(r["accuracy"], r["macs"]) for r in done]
        front = sorted((pts[i] for i in pareto_front(pts)), key=lambda p: p[1])
        ax.scatter([m / 1e6 for _, m in pts], [a for a, _ in pts], s=14, alpha=0.6, label="trials")
        ax.plot([m / 1e6 for _, m in front], [a for a, _ in front], "r.-", label="Pareto front")
    ax.axvline(target / 1e6, color="k", ls="--", lw=1, label=f"target {target / 1e6:.0f}M")
    return _finish(fig, ax, "MACs (M)", "held-out accuracy", path)


def plot_history(rows: list[dict[str, Any]], path: Path) -> bool:
    """Reward per trial and the best so far."""
    fig = new_figure(6, 4.2)
    if fig is None:
        return False
    done = [r for r in rows if r["state"] == "COMPLETE" and r["reward"] is not None]
    ax = fig.subplots()
    best, xs, ys = float("-inf"), [], []
    for r in done:
        best = max(best, r["reward"])
        xs.append(r["number"])
        ys.append(best)
    ax.scatter([r["number"] for r in done], [r["reward"] for r in done], s=14, alpha=0.6, label="trial")
    ax.step(xs, ys, where="post", color="r", label="best so far")
    return _finish(fig, ax, "trial", "reward", path)


def write_manifest(path: Path, config: dict[str, Any], extra: dict[str, Any]) -> None:
    """Command, full config, seeds, versions, git commit, host; no storage password."""
    manifest = {**provenance("torch", "optuna"), "config": config, **extra}
    path.write_text(json.dumps(manifest, indent=2, default=str) + "\n")
