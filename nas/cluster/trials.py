"""What a trial's state and attributes mean to every worker of a study."""
from __future__ import annotations

from typing import Callable, cast

import optuna
from optuna.trial import FrozenTrial, TrialState

__all__ = ["FINISHED", "counted", "ReportedAs", "reported_as"]

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


def counted(t: FrozenTrial) -> bool:
    """A finished trial that counts towards ``--trials``: trained to the end or pruned while training."""
    return t.state in FINISHED and bool(t.user_attrs.get("trained"))


class ReportedAs:
    """``trial``, except that ``report(value, step)`` reports ``transform(value)``.

    Optuna gives a PRUNED trial its last intermediate value as its value, so what is reported
    must be on the objective's scale: a search whose objective is a reward reports the reward of
    each held-out accuracy, and the pruner, the samplers and optuna-dashboard's history plot all
    see rewards (see ``reported_as``).
    """

    def __init__(self, trial: optuna.Trial, transform: Callable[[float], float]) -> None:
        self.trial, self.transform = trial, transform

    def report(self, value: float, step: int) -> None:
        self.trial.report(self.transform(value), step)

    def __getattr__(self, name: str) -> object:
        if name in ("trial", "transform"):  # not set yet (a copy being made)
            raise AttributeError(name)
        return getattr(self.trial, name)


def reported_as(trial: optuna.Trial, transform: Callable[[float], float]) -> optuna.Trial:
    """``ReportedAs(trial, transform)``, typed as the trial it stands in for."""
    return cast(optuna.Trial, ReportedAs(trial, transform))
