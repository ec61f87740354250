"""One progress line per finished trial: a bar over the study's trial budget, best so far, ETA."""
from __future__ import annotations

import sys
import time
from typing import Any

from nas.search.objective import FinishedTrials, eta_seconds


def fmt_seconds(s: float) -> str:
    if s == float("inf"):
        return "?"
    m, s = divmod(int(s), 60)
    return f"{m // 60}h{m % 60:02d}m" if m >= 60 else f"{m}m{s:02d}s"


class Progress:
    """An Optuna callback printing to stderr; ``metric`` is the user attribute ranked (higher is better)."""

    def __init__(self, total: int, start_count: int, quiet: bool = False, metric: str = "reward") -> None:
        self.total, self.start_count, self.quiet, self.metric = total, start_count, quiet, metric
        self.t0 = time.monotonic()
        self._finished = FinishedTrials()
        self._best: float | None = None  # the best score so far

    def __call__(self, study: Any, trial: Any) -> None:
        if self.quiet:
            return
        self._finished.update(study.get_trials(deepcopy=False))  # each finished trial read once
        done = self._finished.counted
        for t in self._finished.new:
            score = t.user_attrs.get(self.metric) if t.state.name == "COMPLETE" else None
            if score is not None and (self._best is None or score > self._best):
                self._best = score
        eta = eta_seconds(done - self.start_count, self.total - self.start_count, time.monotonic() - self.t0)
        bar = "#" * int(20 * min(done, self.total) / self.total)
        ua = trial.user_attrs
        if ua.get(self.metric) is not None:
            what = f"{self.metric} {ua[self.metric]:.4f}"
            if self.metric != "accuracy" and ua.get("accuracy") is not None:
                what += f" acc {ua['accuracy']:.3f}"
        else:
            what = ua.get("reason") or trial.state.name.lower()
        if ua.get("duplicate_of") is not None:
            what += f" (same arch as #{ua['duplicate_of']})"
        macs = f" {ua['macs'] / 1e6:.0f}M MACs" if ua.get("macs") else ""
        best = "-" if self._best is None else f"{self._best:.4f}"
        print(f"[{bar:<20}] {min(done, self.total)}/{self.total} | trial {trial.number} {trial.state.name} "
              f"{what}{macs} | best {best} | ETA {fmt_seconds(eta)}", file=sys.stderr, flush=True)
