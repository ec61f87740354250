"""The trial objective and the stopping rule.

A trial samples an architecture from the space, prices it with the analytic cost model, rejects
it untrained when its MACs fall outside ``[T / band, T * band]``, reuses the result of an
architecture the study already evaluated, and otherwise trains it on the proxy task.
"""
from __future__ import annotations

import bisect
import contextlib
import math
import os
import socket
from dataclasses import dataclass, field
from typing import Any, Callable, cast

import optuna
from optuna.trial import FrozenTrial, TrialState

from nas.cluster.lease import CLAIM_ATTR
from nas.cluster.optuna_private import set_trial_system_attr
from nas.cluster.trials import FINISHED, counted, reported_as
from nas.search.config import SearchConfig
from nas.search.reward import reward
from search_spaces import ArchSpec, count_cost
from search_spaces.space import SearchSpace


class FinishedTrials:
    """A study's finished trials, each looked at once: a finished trial never changes.

    ``update(trials)`` takes the study's whole trial list (every state, in number order), indexes
    the finished trials it has not seen and returns the others. Below the first unfinished trial
    it has seen, everything is indexed, so a call reads only the list's tail: the stopping rule and
    the duplicate check no longer read every trial's attributes at every trial (at 10,000 trials
    that was ~70 ms a trial on 2 CPU cores).
    """

    def __init__(self) -> None:
        self.numbers: set[int] = set()
        self.by_arch: dict[object, list[FrozenTrial]] = {}
        self.counted = 0  # trials that count towards --trials (``counted``)
        self.diverged = 0  # FAIL trials whose training diverged
        self._prefix = 0  # every trial numbered below this is finished and indexed
        self.new: list[FrozenTrial] = []  # the trials the last update indexed

    def update(self, trials: list[FrozenTrial]) -> list[FrozenTrial]:
        """Index the finished trials not seen yet (``new`` lists them); returns the unfinished ones."""
        unfinished, self.new = [], []
        for t in trials[bisect.bisect_left(trials, self._prefix, key=lambda t: t.number):]:
            if t.number in self.numbers:
                continue
            if not t.state.is_finished():
                unfinished.append(t)
                continue
            self.new.append(t)
            self.numbers.add(t.number)
            self.counted += counted(t)
            self.diverged += t.state == TrialState.FAIL and t.user_attrs.get("reason", "").startswith(
                "training diverged")
            self.by_arch.setdefault(t.user_attrs.get("arch"), []).append(t)
        if trials:
            self._prefix = unfinished[0].number if unfinished else trials[-1].number + 1
        return unfinished


class StopAtTrials:
    """Stop every worker once the study holds ``n`` counted trials.

    Also stops after ``max_attempts`` trials in all (most rejected untrained: the budget band
    and the space do not fit) or ``max_failures`` failed trials (the proxy settings diverge).
    """

    def __init__(self, n: int, max_attempts: int, max_failures: int | None = None) -> None:
        self.n = n
        self.max_attempts = max_attempts
        self.max_failures = max_failures or max(5, n)
        self._finished = FinishedTrials()

    def why(self, study: optuna.Study) -> str | None:
        trials = study.get_trials(deepcopy=False)
        self._finished.update(trials)
        if self._finished.counted >= self.n:
            return "done"
        if len(trials) >= self.max_attempts:
            return f"stopped: {len(trials)} trials, too few trained (is the MACs band reachable in this space?)"
        fails = self._finished.diverged
        if fails >= self.max_failures:
            return f"stopped: {fails} trials diverged (lower --lr?)"
        return None

    def done(self, study: optuna.Study) -> bool:
        return self.why(study) is not None

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        if self.done(study):
            study.stop()


def worker_label() -> str:
    """``host:pid``: which worker ran a trial (user attribute ``worker``)."""
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass
class Objective:
    """The trial function: sample, price, reject / reuse, train, score.

    ``lock`` (a ``nas.cluster.locks.StudyLock`` when workers share the study) makes the check "is this
    architecture done or being trained?" and the claim that follows one step, so no architecture
    trains on two workers at once.
    """

    cfg: SearchConfig
    space: SearchSpace
    train: Callable[[ArchSpec, optuna.Trial | None, int], Any]  # (arch, trial, seed) -> TrainResult
    latency: Callable[[ArchSpec], float] | None = None  # seconds; the cost with ``--cost latency``
    multi_objective: bool = False
    lock: contextlib.AbstractContextManager = field(default_factory=contextlib.nullcontext)
    worker: str = field(default_factory=worker_label)
    _finished: FinishedTrials = field(default_factory=FinishedTrials, init=False, repr=False)

    def __call__(self, trial: optuna.Trial) -> float | tuple[float, float]:
        cfg = self.cfg
        arch = self.space.sample(trial)
        key = arch.to_str()
        cost = count_cost(arch, cfg.resolution)
        for k, v in (("arch", key), ("macs", cost.macs), ("params", cost.params), ("worker", self.worker)):
            trial.set_user_attr(k, v)
        value = self.cost_of(arch, cost.macs)
        if cfg.cost == "latency":
            trial.set_user_attr("latency_ms", value * 1e3)
        reason = self.out_of_band(value)
        if reason:
            trial.set_user_attr("reason", reason)
            raise optuna.TrialPruned(reason)
        reused = self._claim(trial, key)
        if reused is not None:
            return reused
        trial.set_user_attr("trained", True)
        scored = None if self.multi_objective else reported_as(  # reports rewards: a pruned trial is valued by one
            trial, lambda acc: reward(acc, value, cfg.target, cfg.reward_exponent, cfg.reward))
        try:
            result = self.train(arch, scored, cfg.seed + trial.number)
        except RuntimeError as exc:  # TrainingDiverged and friends: record why, the study goes on
            if "reason" not in trial.user_attrs:
                trial.set_user_attr("reason", str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__)
            raise
        r = reward(result.accuracy, value, cfg.target, cfg.reward_exponent, cfg.reward)
        for k, metric in (("accuracy", result.accuracy), ("top5", result.top5), ("loss", result.loss),
                          ("reward", r), ("seconds", result.seconds), ("epochs", result.epochs),
                          ("images", result.images)):
            trial.set_user_attr(k, metric)
        return (result.accuracy, float(value)) if self.multi_objective else r

    def cost_of(self, arch: ArchSpec, macs: int | None = None) -> float:
        """The reward's cost: MACs at ``--resolution``, or estimated latency in seconds."""
        if self.cfg.cost == "latency":
            return cast("Callable[[ArchSpec], float]", self.latency)(arch)  # set with --cost latency
        return count_cost(arch, self.cfg.resolution).macs if macs is None else macs

    def out_of_band(self, value: float) -> str | None:
        """Why a cost outside ``[T / band, T * band]`` is rejected untrained; None inside."""
        cfg = self.cfg
        low, high = cfg.target / cfg.flops_band, cfg.target * cfg.flops_band
        if low <= value <= high:
            return None
        if cfg.cost == "latency":
            return f"rejected untrained: {value * 1e3:.2f} ms outside [{low * 1e3:.2f} ms, {high * 1e3:.2f} ms]"
        return f"rejected untrained: {value / 1e6:.1f}M MACs outside [{low / 1e6:.1f}M, {high / 1e6:.1f}M]"

    def _claim(self, trial: optuna.Trial, key: str) -> float | tuple[float, float] | None:
        """Under the study lock: an earlier result of the same architecture, or prune, or claim it.

        Returns the values of a completed twin; prunes when a twin was pruned while training, is
        training on a worker (its claim is on record), or the study already holds its trials.
        Otherwise records this trial's claim and returns None: train it.
        """
        with self.lock:
            unfinished = self._finished.update(trial.study.get_trials(deepcopy=False))
            twins = [t for t in self._finished.by_arch.get(key, []) if t.state in FINISHED] + \
                [t for t in unfinished if t.state == TrialState.RUNNING and t.user_attrs.get("arch") == key]
            for t in sorted(twins, key=lambda t: t.number):
                if t.number == trial.number:
                    continue
                if t.state == TrialState.COMPLETE:
                    trial.set_user_attr("duplicate_of", t.user_attrs.get("duplicate_of", t.number))
                    for k in ("accuracy", "top5", "reward"):
                        trial.set_user_attr(k, t.user_attrs.get(k))
                    return cast("tuple[float, float]", tuple(t.values)) if self.multi_objective else t.values[0]
                if t.state == TrialState.PRUNED and t.user_attrs.get("trained"):
                    self._prune(trial, f"duplicate of trial {t.number}, pruned while training")
                if t.state == TrialState.RUNNING and t.system_attrs.get(CLAIM_ATTR) == t.number:
                    self._prune(trial, f"duplicate of trial {t.number}, running on another worker")
            done = self._finished.counted
            if done >= self.cfg.trials and "retry_of" not in trial.user_attrs:  # a retry was in flight already
                self._prune(trial, f"not trained: the study holds its {done} trials")
            set_trial_system_attr(trial, CLAIM_ATTR, trial.number)
        return None

    @staticmethod
    def _prune(trial: optuna.Trial, reason: str) -> None:
        trial.set_user_attr("reason", reason)
        raise optuna.TrialPruned(reason)


def best_trial(study: optuna.Study) -> FrozenTrial | None:
    """The completed trial with the highest reward (over the Pareto front for two objectives)."""
    done = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if t.user_attrs.get("reward") is not None]
    if not done:
        return None
    return max(done, key=lambda t: (t.user_attrs["reward"], -t.number))


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of (accuracy, macs) points no other point beats on both (higher acc, lower MACs)."""
    front = []
    for i, (a, m) in enumerate(points):
        if not any((a2 >= a and m2 <= m) and (a2 > a or m2 < m) for a2, m2 in points):
            front.append(i)
    return front


def eta_seconds(done: int, total: int, elapsed: float) -> float:
    return math.inf if done == 0 else elapsed / done * max(0, total - done)


def check_reachable(cfg: SearchConfig, space: SearchSpace, samples: int = 300) -> None:
    """Refuse a MACs target whose band no architecture of ``space`` comes near, before the first trial.

    The MACs of ``samples`` random architectures and of the space's smallest and largest choices
    (every stage at its fewest/most layers, narrowest/widest filters) give the range the search
    can reach; a band ``[T / band, T * band]`` wholly outside it would only reject every trial.

    Raises:
        ConfigError: the band misses the range (names the target, the band and the range).
    """
    import numpy as np

    from nas.config import ConfigError

    if cfg.cost != "macs":
        return
    choices = space.choices()
    rng = np.random.default_rng(0)
    picks = [{k: c[int(rng.integers(len(c)))] for k, c in choices.items()} for _ in range(samples)]
    numeric = {k: c for k, c in choices.items() if all(isinstance(v, (int, float)) for v in c)}
    for pick in (min, max):
        picks.append({**picks[0], **{k: pick(c) for k, c in numeric.items()}})
    macs = [count_cost(space.from_params(p), cfg.resolution).macs for p in picks]
    low, high = cfg.target / cfg.flops_band, cfg.target * cfg.flops_band
    if high < min(macs) or low > max(macs):
        raise ConfigError(f"--target-flops {cfg.target:.4g}: the band [{low:.4g}, {high:.4g}] (--flops-band "
                          f"{cfg.flops_band:g}) misses every architecture of the space ({min(macs):.4g} to "
                          f"{max(macs):.4g} MACs at {cfg.resolution} px); choose a target in that range")
