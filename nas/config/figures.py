"""A figure to draw on, without pyplot: no backend is chosen and no global state is touched.

``matplotlib.figure.Figure`` draws and saves by itself (Agg for PNG), so library code never calls
``matplotlib.use`` and a notebook's backend is left as it was. matplotlib is optional: without it
there is no figure, and the callers write no picture.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["new_figure"]


def new_figure(width: float, height: float) -> Figure | None:
    """A ``width`` × ``height`` inch figure, or None when matplotlib is not installed."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        return None
    return Figure(figsize=(width, height))
