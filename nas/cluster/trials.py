"""What a trial's state and attributes mean to every worker of a study."""
from __future__ import annotations

from optuna.trial import FrozenTrial, TrialState

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


def counted(t: FrozenTrial) -> bool:
    """A finished trial that counts towards ``--trials``: trained to the end or pruned while training."""
    return t.state in FINISHED and bool(t.user_attrs.get("trained"))
