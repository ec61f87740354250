"""Step 1's search: train the candidates on the proxy task in an Optuna study over the candidate grid.

The study has one categorical parameter, ``candidate`` (an index into the evaluation order of
``cost_candidates``). ``CandidateSampler`` hands out the first candidate that no trial has
finished or is running, so several workers on one storage split the grid and a resumed run
skips what is evaluated. Storage, study resumption (refused with other settings), pruners,
stopping and the progress line are ``nas-search``'s (``nas.search``, ``nas.cluster.storage``,
``nas.search.progress``).
"""
from __future__ import annotations

import hashlib
import logging
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

import optuna
from optuna.distributions import BaseDistribution
from optuna.trial import FrozenTrial, TrialState

from nas.cluster.trials import counted
from nas.search.objective import worker_label
from scaling.compound import Candidate

if TYPE_CHECKING:
    from nas.cluster.locks import StudyLock
    from nas.proxy.data import DataConfig, ProxyData
    from nas.proxy.train import TrainConfig, TrainResult
    from search_spaces import ArchSpec

__all__ = ["CandidateSampler", "StopAtCandidates", "CandidateTrainer", "Evaluate", "SearchSettings", "claims",
           "next_candidate", "run_search", "collect", "choose", "study_settings"]

log = logging.getLogger("nas-grid-scale")


def claims(trials: Sequence[FrozenTrial], number: int | None = None) -> tuple[set[int], set[int]]:
    """``(done, running)`` candidate indices over ``trials`` other than trial ``number``.

    Done: evaluated (trained to the end or pruned while training). A trial pruned untrained (a
    duplicate claim) leaves its candidate free, and so does a failed one: a candidate whose worker
    was killed is trained again (as ``nas-search`` retrains a killed trial), by the retry the
    storage's lease queues with the candidate fixed (``nas.cluster.lease``) or, failing that, by
    the next trial the sampler hands it to.
    """
    done, running = set(), set()
    for t in trials:
        i = t.params.get("candidate")
        if i is None or t.number == number:
            continue
        if counted(t):
            done.add(i)
        elif t.state == TrialState.RUNNING:
            running.add(i)
    return done, running


def next_candidate(trials: Sequence[FrozenTrial], n: int, number: int) -> int:
    """The first index in ``range(n)`` neither done nor running in a trial other than ``number``.

    When none is free (workers raced for the last one), the first not done: ``Evaluate`` then
    prunes the trial untrained as a duplicate.
    """
    done, running = claims(trials, number)
    free = [i for i in range(n) if i not in done and i not in running] or [i for i in range(n) if i not in done]
    return free[0] if free else 0


class CandidateSampler(optuna.samplers.BaseSampler):
    """Hands out candidate indices in order (see ``next_candidate``); the same on every worker."""

    def __init__(self, n: int) -> None:
        self.n = n

    def infer_relative_search_space(self, study: optuna.Study, trial: FrozenTrial) -> dict:
        return {}

    def sample_relative(self, study: optuna.Study, trial: FrozenTrial, search_space: dict) -> dict:
        return {}

    def sample_independent(self, study: optuna.Study, trial: FrozenTrial, name: str,
                           distribution: BaseDistribution) -> int:
        return next_candidate(study.get_trials(deepcopy=False), self.n, trial.number)


class StopAtCandidates:
    """Stop a worker once ``n`` distinct candidates are evaluated or claimed by running trials of
    other workers (or after too many attempts)."""

    def __init__(self, n: int, max_attempts: int) -> None:
        self.n, self.max_attempts = n, max_attempts

    def evaluated(self, study: optuna.Study) -> int:
        return len({t.params.get("candidate") for t in study.get_trials(deepcopy=False) if counted(t)})

    def done(self, study: optuna.Study) -> bool:
        trials = study.get_trials(deepcopy=False)
        evaluated = {t.params.get("candidate") for t in trials if counted(t)}
        running = claims(trials)[1]
        return len(evaluated) >= self.n or len(evaluated | running) >= self.n or len(trials) >= self.max_attempts

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        if self.done(study):
            study.stop()


@dataclass
class CandidateTrainer:
    """``train(arch, trial, seed)`` for any candidate's arch: builds and trains it at its own proxy resolution.

    Every rank of a ``torchrun`` group holds the same candidates, so a follower rank finds the
    proxy resolution of the architecture rank 0 sends (``nas.cluster.torchrun.Ranks``).
    """

    candidates: Sequence[Candidate]
    data_config: DataConfig  # its resolution is replaced by the candidate's
    train_config: TrainConfig
    _data: dict[int, ProxyData] = field(default_factory=dict)

    def data(self, resolution: int) -> ProxyData:
        from nas.proxy.data import load_data

        if resolution not in self._data:  # one load per distinct proxy resolution
            self._data[resolution] = load_data(replace(self.data_config, resolution=resolution))
        return self._data[resolution]

    def __call__(self, arch: ArchSpec, trial: optuna.Trial | None, seed: int) -> TrainResult:
        import torch

        from nas.proxy.train import train_proxy
        from search_spaces import build_model

        c = next(c for c in self.candidates if c.arch == arch)
        data = self.data(c.proxy_resolution)
        with torch.random.fork_rng(devices=[]):  # the same initialisation seed for every candidate, on any worker
            torch.manual_seed(seed)
            model = build_model(c.arch, num_classes=data.num_classes, in_chans=data.in_chans)
        return train_proxy(model, data, replace(self.train_config, seed=seed), trial=trial)


@dataclass
class Evaluate:
    """The trial function: claim the candidate the sampler picked and train it (``train(arch, trial, seed)``)."""

    candidates: Sequence[Candidate]
    train: Callable[[ArchSpec, optuna.Trial | None, int], TrainResult]  # CandidateTrainer, or rank 0's view of it
    seed: int = 0
    lock: AbstractContextManager[object] = field(default_factory=nullcontext)  # StudyLock: candidates claimed in turn
    worker: str = field(default_factory=worker_label)

    def __call__(self, trial: optuna.Trial) -> float:
        from nas.proxy.train import TrainingDiverged

        with self.lock:  # the sampler reads the study and the claim is written before the next worker looks
            index = trial.suggest_categorical("candidate", list(range(len(self.candidates))))
            done, running = claims(trial.study.get_trials(deepcopy=False), trial.number)
        if index in done or index in running:
            reason = f"candidate {index} is {'evaluated' if index in done else 'running'} in another trial"
            trial.set_user_attr("reason", reason)
            raise optuna.TrialPruned(reason)
        c = self.candidates[index]
        for k, v in {**c.row(), "worker": self.worker, "trained": True}.items():
            trial.set_user_attr(k, v)
        try:
            result = self.train(c.arch, trial, self.seed)
        except TrainingDiverged as exc:  # evaluated, without an accuracy: the grid moves on
            trial.set_user_attr("reason", str(exc))
            raise optuna.TrialPruned(str(exc)) from None
        for k in ("accuracy", "top5", "loss", "seconds", "epochs", "images"):
            trial.set_user_attr(k, getattr(result, k))
        return result.accuracy


@dataclass(frozen=True)
class SearchSettings:
    """The controller options of one worker (the ``nas-search`` flags of the same names)."""

    study_name: str
    storage: str | None
    out_dir: Path
    pruner: str = "none"
    max_candidates: int | None = None
    timeout: float | None = None
    quiet: bool = False


def _digest(value: object) -> str:
    return hashlib.sha256(repr(value).encode()).hexdigest()[:16]


def study_settings(base_yaml: str, candidates: Sequence[Candidate], proxy: dict[str, object]) -> dict[str, object]:
    """What a resumed study must agree on: the base, the candidates (in order) and the proxy task."""
    grid = [(c.coefficients.as_tuple(), c.arch.resolution, c.proxy_resolution) for c in candidates]
    return {"base_digest": _digest(base_yaml), "candidates_digest": _digest(grid), "candidates": len(grid), **proxy}


def run_search(settings: SearchSettings, objective: Evaluate,
               study_attrs: dict[str, object]) -> tuple[dict[int, dict[str, object]], bool, StudyLock]:
    """Evaluate candidates until ``max_candidates`` (all workers together), the grid or the timeout runs out.

    Returns:
        ``({candidate index: result}, interrupted, lock)``: the results of the whole study (every
        worker's trials) and the study's ``nas.cluster.locks.StudyLock``, to write shared outputs under.

    Raises:
        ConfigError: the storage cannot be opened, or the study exists with other settings.
    """
    import nas.search as ctl
    from nas.cluster import workers
    from nas.cluster.lease import RetryStaleTrial
    from nas.cluster.locks import StudyLock
    from nas.cluster.storage import MAX_RETRY, is_journal, open_storage
    from nas.search.progress import Progress

    n = len(objective.candidates)
    if is_journal(settings.storage):
        settings.out_dir.mkdir(parents=True, exist_ok=True)
    storage = open_storage(settings.storage, settings.out_dir)
    study = ctl.open_study(settings.study_name, storage, ["maximize"], study_attrs, CandidateSampler(n),
                           ctl.make_pruner(settings.pruner))
    objective.lock = StudyLock(storage, settings.study_name)
    total = min(settings.max_candidates or n, n)
    stop = StopAtCandidates(total, max_attempts=2 * n + 10)
    start = stop.evaluated(study)
    interrupted = False
    if stop.done(study):
        rest = "" if start >= total else ", the rest running on other workers"
        log.info("%d of %d candidates evaluated in study %r%s: nothing to train", start, total,
                 settings.study_name, rest)
    else:
        log.info("grid search: %d of %d candidates done; worker %s", start, total, objective.worker)
        try:
            workers.optimize(study, objective, stop.done, settings.timeout,
                             [stop, Progress(total, start, settings.quiet, "accuracy")], catch=())
        except KeyboardInterrupt:
            interrupted = True
            workers.requeue_interrupted(study, objective.worker, RetryStaleTrial(MAX_RETRY))
    return collect(study.get_trials(deepcopy=False)), interrupted, objective.lock


def collect(trials: Sequence[FrozenTrial]) -> dict[int, dict[str, object]]:
    """Per candidate index: its first completed trial, else its first one pruned while training."""
    rows: dict[int, dict[str, object]] = {}
    for t in sorted(trials, key=lambda t: t.number):
        i = t.params.get("candidate")
        if i is None or not counted(t):  # skips duplicate claims pruned untrained
            continue
        if i in rows and rows[i]["state"] == "COMPLETE":
            continue
        ua = t.user_attrs
        rows[i] = {"state": t.state.name, "trial": t.number,
                   "accuracy": ua.get("accuracy") if t.state == TrialState.COMPLETE else None,
                   "seconds": ua.get("seconds"), "reason": ua.get("reason")}
    return rows


def choose(candidates: Sequence[Candidate], results: dict[int, dict]) -> Candidate | None:
    """The best held-out accuracy; ties go to fewer MACs (then the earlier candidate)."""
    done = [c for c in candidates if results.get(c.index, {}).get("accuracy") is not None]
    return max(done, key=lambda c: (results[c.index]["accuracy"], -c.macs, -c.index)) if done else None
