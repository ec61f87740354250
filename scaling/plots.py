"""The two pictures of a grid search: candidates (accuracy vs MACs ratio) and the family (MACs vs φ)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from nas.config.figures import new_figure

__all__ = ["plot_candidates", "plot_variants"]


def plot_candidates(rows: Sequence[dict[str, Any]], chosen: int | None, path: Path) -> bool:
    """Held-out accuracy vs real MACs ratio of the trained candidates, coloured by α.

    Args:
        rows: candidate rows with ``alpha``, ``macs_ratio``, ``accuracy`` (None: not trained) and ``index``.
        chosen: the index of the chosen candidate (marked with a star), or None.
        path: the PNG to write.

    Returns:
        False when matplotlib is missing or no candidate has an accuracy (nothing written).
    """
    done = [r for r in rows if r.get("accuracy") is not None]
    fig = new_figure(6, 4.2) if done else None
    if fig is None:
        return False
    ax = fig.subplots()
    points = ax.scatter([r["macs_ratio"] for r in done], [r["accuracy"] for r in done],
                        c=[r["alpha"] for r in done], cmap="viridis", s=28, edgecolors="k", linewidths=0.3)
    fig.colorbar(points, ax=ax, label="α (depth)")
    for r in done:
        ax.annotate(f"{r['beta']:g},{r['gamma']:g}", (r["macs_ratio"], r["accuracy"]), fontsize=6,
                    xytext=(3, 2), textcoords="offset points")
    best = [r for r in done if r["index"] == chosen]
    if best:
        ax.scatter([best[0]["macs_ratio"]], [best[0]["accuracy"]], marker="*", s=220, facecolors="none",
                   edgecolors="r", linewidths=1.2, label=f"chosen α={best[0]['alpha']:g} β={best[0]['beta']:g} "
                                                         f"γ={best[0]['gamma']:g}")
        ax.legend(loc="best", fontsize=8)
    ax.axvline(2.0, color="k", ls="--", lw=1)
    ax.set_xlabel("MACs / base MACs at φ = 1 (ideal 2; labels: β,γ)")
    ax.set_ylabel("held-out accuracy")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return True


def plot_variants(rows: Sequence[dict[str, Any]], path: Path) -> bool:
    """MACs ratio of B1..B7 to the base against the ideal ``2^φ`` (log scale)."""
    fig = new_figure(6, 4.2) if rows else None
    if fig is None:
        return False
    from matplotlib.ticker import FuncFormatter, NullFormatter

    phis = [r["phi"] for r in rows]
    ax = fig.subplots()
    ax.semilogy(phis, [2.0 ** p for p in phis], "k--", lw=1, label="ideal 2^φ")
    ax.semilogy(phis, [r["macs_ratio"] for r in rows], "o-", label=f"{rows[0]['mode']} family (real MACs)")
    if all(r.get("predicted_ratio") is not None for r in rows):
        ax.semilogy(phis, [r["predicted_ratio"] for r in rows], ":", color="gray", label="(α·β²·γ²)^φ")
    for r in rows:
        ax.annotate(f"{r['macs'] / 1e9:.2f}G", (r["phi"], r["macs_ratio"]), fontsize=7, xytext=(4, -10),
                    textcoords="offset points")
    ax.set_xticks(phis)
    ax.yaxis.set_major_formatter(FuncFormatter(lambda y, _: f"{y:g}"))
    ax.yaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("φ")
    ax.set_ylabel("MACs / base MACs (log scale)")
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return True
