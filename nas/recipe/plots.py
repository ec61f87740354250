"""``report.png``: test accuracy against MACs of both families; the grid's candidates and the baselines."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from nas.config.figures import new_figure
from nas.recipe.records import Chosen, FinalRow

if TYPE_CHECKING:
    from matplotlib.axes import Axes

__all__ = ["plot_report"]


def _families(ax: Axes, final: Sequence[FinalRow]) -> None:
    for family, style in (("ours", "o-"), ("efficientnet", "s--")):
        rows = sorted((r for r in final if r["family"] == family and r.get("test_top1") is not None),
                      key=lambda r: r["macs"])
        if not rows:
            continue
        ax.plot([r["macs"] / 1e6 for r in rows], [r.get("test_top1", 0.0) for r in rows], style,
                label="ours (compound, chosen α, β, γ)" if family == "ours" else "EfficientNet (official table)")
        for r in rows:
            ax.annotate(f"B{r['phi']}", (r["macs"] / 1e6, r.get("test_top1", 0.0)), fontsize=7, xytext=(3, 3),
                        textcoords="offset points")
    ax.set_xscale("log")
    ax.set_xlabel("MACs (millions, at the network's own resolution)")
    ax.set_ylabel("test top-1")
    ax.set_title("final training")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)


def _grid(ax: Axes, candidates: Sequence[dict[str, str]], chosen: Chosen) -> None:
    brief = [c for c in candidates if c.get("accuracy") not in (None, "")]
    if brief:
        ax.scatter([int(c["macs"]) / 1e6 for c in brief], [float(c["accuracy"]) for c in brief], c="0.6", s=18,
                   label="grid, brief round")
    for e in chosen.get("entries", []):
        mean = e.get("mean")
        if mean is None:
            continue
        is_baseline = "candidate" not in e["roles"]
        marker = "*" if e["key"] == chosen.get("key") else ("D" if is_baseline else "o")
        ax.errorbar(e["macs"] / 1e6, mean, yerr=e.get("spread") or 0.0, fmt=marker, capsize=3,
                    markersize=10 if marker == "*" else 5, color="C3" if is_baseline else "C0")
        label = "/".join(r for r in e["roles"] if r != "candidate") or f"{e['alpha']:g},{e['beta']:g},{e['gamma']:g}"
        ax.annotate(label, (e["macs"] / 1e6, mean), fontsize=6, xytext=(4, -8), textcoords="offset points")
    ax.set_xlabel("MACs (millions)")
    ax.set_ylabel("held-out accuracy (proxy)")
    ax.set_title("grid at φ = 1: refined mean ± spread (blue), baselines (red)")
    ax.grid(alpha=0.3)
    if brief:
        ax.legend(fontsize=7)


def plot_report(final: Sequence[FinalRow], candidates: Sequence[dict[str, str]], chosen: Chosen, path: Path) -> bool:
    """Two panels; False when matplotlib is missing (nothing written)."""
    fig = new_figure(11, 4.2)
    if fig is None:
        return False
    left, right = fig.subplots(1, 2)
    _families(left, final)
    _grid(right, candidates, chosen)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return True
