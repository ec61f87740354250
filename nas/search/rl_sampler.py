"""MnasNet's kind of controller as an Optuna sampler: an LSTM policy trained with REINFORCE.

The controller (Zoph & Le 2017, Tan et al. 2019) emits the categorical choices of a trial one
after another; each step's input is an embedding of the previous choice, so every choice is
conditioned on all earlier ones. Our search space suggests its parameters one by one, so the
sampler decodes in ``sample_independent`` and keeps each running trial's LSTM state; it needs no
relative search space and works from the very first trial (whose policy is uniform: the heads
start at zero). Integer and float parameters are learned too, as the bin of their range that holds
them (``nas.search.rl_tokens``).

Before each new trial the policy takes one REINFORCE step per finished trial it has not learned
from yet, read from the study's storage, whichever worker ran it: every worker learns from every
worker's trials, and a resumed study resumes learning. The log-probability of a trial's choices is
recomputed under the current policy (teacher forcing), so trials sampled by another worker or an
older policy are learned as if on-policy (no importance weights: a slight bias that the entropy
bonus and the normalized, bounded advantage keep in check).
"""
from __future__ import annotations

import math
import os
import random
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import optuna
import torch
import torch.nn.functional as F
from optuna.distributions import BaseDistribution
from optuna.trial import FrozenTrial, TrialState

from nas.cluster.optuna_private import all_trials, trial_id
from nas.proxy.train import torch_threads
from nas.search.rl_tokens import BINS, Key, Value, key, steps, tokens

_FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
REJECTED = "rejected untrained"  # the prefix of the ``reason`` of a trial rejected before training
_MAX_OPEN = 256  # running trials whose LSTM state is kept (more only if trials are never told)


class _Controller:
    """The policy: an LSTM shared by all steps, and per parameter a linear head and an embedding.

    The heads and embeddings of all parameters are rows of three banks; a (name, choices) pair
    gets its rows the first time it is seen. Learning runs a trial's whole sequence through a
    torch ``LSTM``; decoding, one step per ``suggest`` call, runs the same cell in numpy on a
    snapshot of the weights (a torch op costs microseconds, and a trial makes dozens of steps).
    Weights come from the sampler's own generator, never torch's global one; heads start at
    zero, so a new parameter's choices start equally likely.
    """

    def __init__(self, hidden: int, lr: float, generator: torch.Generator) -> None:
        self.hidden, self.lr, self.gen = hidden, lr, generator
        with torch.device("meta"):  # made without drawing from torch's global RNG
            self.lstm = torch.nn.LSTM(hidden, hidden).to_empty(device="cpu")
        with torch.no_grad():
            for w in self.lstm.parameters():
                w.uniform_(-0.1, 0.1, generator=generator)
        self.start = torch.nn.Parameter(torch.zeros(1, hidden))
        self.rows: dict[Key, int] = {}  # first row of each parameter in the banks
        self.used = 0
        self.head_w, self.head_b, self.embed = self._banks(64)
        self.optimizer = torch.optim.Adam(self._params(), lr=lr, foreach=True)
        self._snapshot: _Snapshot | None = None

    def _params(self) -> list[torch.Tensor]:
        return [*self.lstm.parameters(), self.start, self.head_w, self.head_b, self.embed]

    def _banks(self, rows: int, old: Sequence[torch.Tensor] = ()) -> list[torch.nn.Parameter]:
        """Banks of ``rows`` rows, the first ones copied from ``old``."""
        fresh = [torch.zeros(rows, self.hidden), torch.zeros(rows),
                 torch.empty(rows, self.hidden).uniform_(-0.1, 0.1, generator=self.gen)]
        for new, bank in zip(fresh, old):
            new[:len(bank)] = bank.detach()
        return [torch.nn.Parameter(t) for t in fresh]

    def offset(self, key: Key) -> int:
        """The first bank row of parameter ``key``; its rows are made on first use."""
        if key not in self.rows:
            self.rows[key], self.used = self.used, self.used + len(key[1])
            if self.used > len(self.embed):
                self._grow(2 * self.used)
            self._snapshot = None
        return self.rows[key]

    def _grow(self, rows: int) -> None:
        """Larger banks; Adam's moments carry over (zero for the new rows)."""
        old_params, old_state = self._params(), self.optimizer.state
        self.head_w, self.head_b, self.embed = self._banks(rows, (self.head_w, self.head_b, self.embed))
        self.optimizer = torch.optim.Adam(self._params(), lr=self.lr, foreach=True)
        for old, new in zip(old_params, self._params()):
            if old in old_state:
                self.optimizer.state[new] = {k: _pad(v, len(new)) for k, v in old_state[old].items()}

    # -- learning (torch) -------------------------------------------------------------------------
    def log_prob(self, steps: Sequence[tuple[Key, int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Teacher forcing: log-probability and entropy (summed over steps) of the choices ``steps``."""
        offs = torch.tensor([self.offset(key) for key, _ in steps])
        sizes = torch.tensor([len(key[1]) for key, _ in steps])
        chosen = torch.tensor([index for _, index in steps])
        inputs = torch.cat([self.start, self.embed[offs[:-1] + chosen[:-1]]])
        h = self.lstm(inputs.unsqueeze(1))[0][:, 0]  # (steps, hidden)
        cols = torch.arange(int(sizes.max()))
        valid = cols < sizes[:, None]  # (steps, most choices)
        rows = torch.where(valid, offs[:, None] + cols, 0)
        logits = torch.einsum("sh,sch->sc", h, self.head_w[rows]) + self.head_b[rows]
        log_probs = F.log_softmax(logits.masked_fill(~valid, -math.inf), dim=1).masked_fill(~valid, 0.0)
        logp = log_probs.gather(1, chosen[:, None]).sum()
        return logp, -(log_probs.exp() * log_probs).sum()

    def learn(self, steps: Sequence[tuple[Key, int]], advantage: float, entropy_weight: float) -> None:
        """One Adam step on ``-(advantage * log p(steps) + entropy_weight * entropy)``."""
        with torch.enable_grad():
            logp, entropy = self.log_prob(steps)
            loss = -(advantage * logp + entropy_weight * entropy)
            self.optimizer.zero_grad()
            loss.backward()
            self.optimizer.step()
        self._snapshot = None

    # -- decoding (numpy) -------------------------------------------------------------------------
    def begin(self) -> "_State":
        """A new decoding, before its first step."""
        snap = self.snapshot()
        return _State(snap.start_gates, np.zeros(self.hidden, np.float32), np.zeros(self.hidden, np.float32))

    def step(self, state: "_State", key: Key) -> tuple[np.ndarray, int]:
        """Advance ``state`` by one LSTM step: the logits of ``key``'s choices and their first row."""
        off = self.offset(key)
        snap, h = self.snapshot(), self.hidden
        gates = state.gates + snap.w_hh @ state.h
        i, f, o = (1 / (1 + np.exp(-gates[a * h:(a + 1) * h])) for a in (0, 1, 3))
        state.c = f * state.c + i * np.tanh(gates[2 * h:3 * h])
        state.h = o * np.tanh(state.c)
        n = len(key[1])
        return snap.head_w[off:off + n] @ state.h + snap.head_b[off:off + n], off

    def feed(self, state: "_State", row: int) -> None:
        """Make bank row ``row`` (a choice) the next step's input."""
        state.gates = self.snapshot().in_gates[row]

    def snapshot(self) -> "_Snapshot":
        """The weights as numpy arrays, with every row's input gates precomputed."""
        if self._snapshot is None:
            with torch.no_grad():
                w_ih, w_hh, b_ih, b_hh = self.lstm.parameters()
                in_gates = torch.addmm(b_ih + b_hh, torch.cat([self.start, self.embed]), w_ih.T).numpy()
                self._snapshot = _Snapshot(in_gates[0], in_gates[1:],
                                           *(w.detach().numpy().copy() for w in (w_hh, self.head_w, self.head_b)))
        return self._snapshot


@dataclass
class _Snapshot:
    start_gates: np.ndarray  # (4 hidden,): the first step's input gates
    in_gates: np.ndarray  # (rows, 4 hidden): W_ih e + biases for each choice's embedding e
    w_hh: np.ndarray
    head_w: np.ndarray
    head_b: np.ndarray


@dataclass
class _State:
    """A decoding in progress: the next step's input gates, the LSTM state, how many params were fed."""

    gates: np.ndarray
    h: np.ndarray
    c: np.ndarray
    fed: int = 0


def _pad(t: torch.Tensor, rows: int) -> torch.Tensor:
    """``t`` with zero rows appended up to ``rows`` (scalars, like Adam's step count, as they are)."""
    if t.dim() == 0 or len(t) >= rows:
        return t
    return torch.cat([t, t.new_zeros(rows - len(t), *t.shape[1:])])


class _Baseline:
    """Exponential moving average of the reward and of its squared deviation from it.

    ``advantage(r)`` is ``(r - b) / s`` with ``b`` the average before ``r`` and ``s`` the root of
    the average squared deviation, ``r``'s included: scale-free, and within
    ``± 1 / sqrt(1 - decay)``. The first reward only sets ``b`` (advantage 0).
    """

    def __init__(self, decay: float) -> None:
        self.decay = decay
        self.mean: float | None = None
        self.var: float | None = None

    def advantage(self, r: float) -> float:
        if self.mean is None:
            self.mean = r
            return 0.0
        d = r - self.mean
        self.var = d * d if self.var is None else self.decay * self.var + (1 - self.decay) * d * d
        self.mean += (1 - self.decay) * d
        return d / math.sqrt(self.var) if self.var > 0 else 0.0


class RLSampler(optuna.samplers.BaseSampler):
    """An LSTM controller over the trial's parameters, trained by REINFORCE on the study's trials.

    Rewards: a COMPLETE trial's value (negated when the study minimizes). A FAILED trial, or one
    PRUNED untrained with a ``reason`` starting "rejected untrained" (outside the MACs band), gets
    ``penalty``; by default the lowest reward seen so far: as bad as the worst real result, so the
    policy learns to avoid them at any reward scale (before any COMPLETE trial such trials wait, as
    there is no scale yet). Trials pruned while training (``trained``), or pruned untrained for
    other reasons (a duplicate, the budget reached), are skipped: the pruner's intermediate values
    are on another scale than the reward, and Hyperband prunes most trials by design.

    Advantages are normalized by a moving baseline (see ``_Baseline``); each trial gives one Adam
    step on ``-(advantage * log p(choices) + entropy_weight * entropy)``.

    Integer and float parameters are tokens of the policy as categorical ones are: the bin of their
    range (at most ``bins``; one per value for a short integer range) is learned, the value drawn
    uniformly within it (``nas.search.rl_tokens``). Deterministic for a given ``seed`` in one
    process; torch's global RNG is never used. It pickles and deep-copies (Optuna's
    save-the-sampler recipe, ``pickle.dump(study.sampler, f)``): a restored copy continues as the
    original would.
    A few milliseconds a trial (42 parameters, 2 CPU cores), on one torch thread: MKL and oneDNN
    split even a 42 x 32 matmul across threads, and on a busy machine each such op waits for a core.

    Args:
        seed: Seed of the initial weights and of the sampling; ``None``: from the OS.
        lr: Adam's learning rate.
        baseline_decay: Decay of the moving-average baseline (about ``1 / (1 - decay)`` trials).
        entropy_weight: Weight of the entropy bonus (entropy summed over the parameters).
        hidden: LSTM width (also the embedding width).
        penalty: Reward of failed and rejected trials; ``None``: the lowest reward seen so far.
        bins: The most tokens of an integer or float parameter.
    """

    def __init__(self, seed: int | None = None, *, lr: float = 0.005, baseline_decay: float = 0.9,
                 entropy_weight: float = 0.01, hidden: int = 32, penalty: float | None = None,
                 bins: int = BINS) -> None:
        if bins < 1:
            raise ValueError(f"bins must be >= 1, but got {bins!r}")
        seed = _os_seed() if seed is None else seed
        self._rng = random.Random(seed)
        self._bins = bins
        self._controller = _Controller(hidden, lr, torch.Generator().manual_seed(seed + 1))
        self._baseline = _Baseline(baseline_decay)
        self._entropy_weight = entropy_weight
        self._penalty = penalty
        self._lowest: float | None = None  # the lowest reward learned from so far
        self._learned: set[int] = set()  # numbers of the finished trials already taken in
        self._waiting: list[FrozenTrial] = []  # penalized trials seen before any reward
        self._open: OrderedDict[int, _State] = OrderedDict()  # trial id -> its decoding
        self._lock = threading.RLock()

    def __getstate__(self) -> dict[str, object]:
        """Everything but the lock (a lock cannot be pickled; a copy gets its own)."""
        with self._lock:
            state = self.__dict__.copy()
        del state["_lock"]
        return state

    def __setstate__(self, state: dict[str, object]) -> None:
        self.__dict__.update(state)
        self._lock = threading.RLock()

    @property
    def trials_learned(self) -> int:
        """How many finished trials the policy has taken in (those skipped included)."""
        return len(self._learned) - len(self._waiting)

    def reseed_rng(self) -> None:
        self._rng.seed(_os_seed())

    def infer_relative_search_space(self, study: optuna.Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return {}

    def sample_relative(self, study: optuna.Study, trial: FrozenTrial,
                        search_space: dict[str, BaseDistribution]) -> dict[str, Value]:
        _check_single_objective(study)
        return {}

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        """Learn from the study's finished trials not learned from yet."""
        _check_single_objective(study)
        sign = 1.0 if study.direction == optuna.study.StudyDirection.MAXIMIZE else -1.0
        # The storage, not study.get_trials: with Hyperband, ``study`` sees one bracket only.
        trials = all_trials(study, _FINISHED)
        with self._lock, torch_threads(1):
            for t in sorted((t for t in trials if t.number not in self._learned), key=lambda t: t.number):
                self._learned.add(t.number)
                self._take(t, sign)

    def sample_independent(self, study: optuna.Study, trial: FrozenTrial, param_name: str,
                           param_distribution: BaseDistribution) -> Value:
        """The policy's next choice for ``param_name``, given the trial's earlier choices."""
        _check_single_objective(study)
        tok = tokens(param_distribution, self._bins)
        with self._lock, torch_threads(1):
            state = self._open.pop(trial_id(trial), None) or self._controller.begin()
            self._open[trial_id(trial)] = state
            while len(self._open) > _MAX_OPEN:
                self._open.popitem(last=False)
            # Catch up on the choices made without us (enqueued, single-choice, other samplers).
            for done, index in steps(trial, list(trial.params)[state.fed:], self._bins):
                self._controller.feed(state, self._controller.step(state, done)[1] + index)
            logits, off = self._controller.step(state, key(param_name, param_distribution, self._bins))
            cumulative = np.cumsum(np.exp(logits - logits.max()))
            index = min(int(np.searchsorted(cumulative, self._rng.random() * cumulative[-1], side="right")),
                        len(cumulative) - 1)
            self._controller.feed(state, off + index)
            state.fed = len(trial.params) + 1
            return tok.value(index, self._rng)

    def after_trial(self, study: optuna.Study, trial: FrozenTrial, state: TrialState,
                    values: Sequence[float] | None) -> None:
        with self._lock:
            self._open.pop(trial_id(trial), None)

    # -- learning ---------------------------------------------------------------------------------
    def reward(self, trial: FrozenTrial, sign: float = 1.0) -> float | None:
        """The reward ``trial`` is learned with; ``None``: skipped (or, for a penalty, not known yet).

        Args:
            trial: A finished trial.
            sign: 1 when the study maximizes, -1 when it minimizes.
        """
        if trial.state == TrialState.COMPLETE:
            value = None if trial.value is None else sign * trial.value
            return value if value is not None and math.isfinite(value) else None
        if _penalized(trial):
            return self._penalty if self._penalty is not None else self._lowest
        return None

    def _take(self, trial: FrozenTrial, sign: float) -> None:
        r = self.reward(trial, sign)
        if r is None:
            if _penalized(trial):
                self._waiting.append(trial)
            return
        if trial.state == TrialState.COMPLETE:
            self._lowest = r if self._lowest is None else min(self._lowest, r)
        self._update(trial, r)
        waiting, self._waiting = self._waiting, []
        for t in waiting:
            self._update(t, self.reward(t, sign))  # type: ignore[arg-type]

    def _update(self, trial: FrozenTrial, r: float) -> None:
        taken = list(steps(trial, list(trial.params), self._bins))
        if not taken:
            return
        self._controller.learn(taken, self._baseline.advantage(r), self._entropy_weight)


def _penalized(trial: FrozenTrial) -> bool:
    """Failed, or pruned before training because it was out of bounds."""
    return trial.state == TrialState.FAIL or (
        trial.state == TrialState.PRUNED and not trial.user_attrs.get("trained")
        and str(trial.user_attrs.get("reason", "")).startswith(REJECTED))


def _check_single_objective(study: optuna.Study) -> None:
    if len(study.directions) > 1:
        raise ValueError("RLSampler learns from one reward and cannot drive a multi-objective study "
                         f"({len(study.directions)} directions); use --sampler nsga2 or tpe")


def _os_seed() -> int:
    return int.from_bytes(os.urandom(7), "little")
