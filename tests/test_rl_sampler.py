"""The RL controller sampler (``nas.search.rl_sampler``): it learns, from every worker's trials, cheaply."""
from __future__ import annotations

import copy
import pickle
import random
import shutil
import statistics

import numpy as np
import optuna
import pytest
import torch
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.storages.journal import JournalFileBackend, JournalStorage
from optuna.testing.pytest_samplers import BasicSamplerTestCase, SingleOnlySamplerTestCase
from optuna.trial import TrialState, create_trial

from nas.search.rl_sampler import RLSampler
from nas.search.rl_tokens import steps as _steps
from nas.search.rl_tokens import tokens
from search_spaces import default_space, get_preset

optuna.logging.set_verbosity(optuna.logging.WARNING)

TARGET = (2, 0, 3, 1, 1, 2)  # the hidden best choice of each toy parameter
CHOICES = [0, 1, 2, 3]


def toy(trial: optuna.Trial) -> float:
    """Six parameters of four choices; the reward is the fraction equal to ``TARGET``."""
    return sum(trial.suggest_categorical(f"p{i}", CHOICES) == t for i, t in enumerate(TARGET)) / len(TARGET)


def run(study: optuna.Study, n: int, objective=toy) -> list[float]:
    """``n`` ask / tell rounds of ``objective``; the rewards."""
    out = []
    for _ in range(n):
        t = study.ask()
        out.append(objective(t))
        study.tell(t, out[-1])
    return out


def new_study(sampler: optuna.samplers.BaseSampler, **kwargs) -> optuna.Study:
    return optuna.create_study(direction="maximize", sampler=sampler, **kwargs)


def test_learns_the_toy_problem_and_beats_random():
    rl = run(new_study(RLSampler(seed=0)), 200)
    rand = run(new_study(optuna.samplers.RandomSampler(seed=0)), 200)
    late = statistics.mean(rl[150:])
    assert late > statistics.mean(rl[:30]) + 0.3
    assert late > statistics.mean(rand[150:]) + 0.3


def test_learns_from_trials_another_worker_sampled():
    """Two samplers on one study: each learns from every finished trial, its own or not."""
    storage = optuna.storages.InMemoryStorage()
    a = RLSampler(seed=1)
    run(new_study(a, storage=storage, study_name="s"), 150)
    b = RLSampler(seed=2)
    shared = optuna.load_study(study_name="s", storage=storage, sampler=b)
    fresh = run(new_study(RLSampler(seed=2)), 30)  # the same sampler without the shared history
    assert b.trials_learned == 0
    after = run(shared, 30)
    assert b.trials_learned == 150 + 29  # a's trials, and its own but the last (told after its last ask)
    assert statistics.mean(after) > statistics.mean(fresh) + 0.2


def test_workers_on_a_journal_file_take_in_each_others_trials(tmp_path):
    storage = JournalStorage(JournalFileBackend(str(tmp_path / "study.log")))
    a, b = RLSampler(seed=1), RLSampler(seed=2)
    worker_a = new_study(a, storage=storage, study_name="s")
    worker_b = optuna.load_study(study_name="s", storage=storage, sampler=b)
    for _ in range(10):
        run(worker_a, 1)
        run(worker_b, 1)
    assert (a.trials_learned, b.trials_learned) == (18, 19)  # all but those told after their last ask
    c = RLSampler(seed=3)  # a worker joining (or resuming) later learns from the whole history
    run(optuna.load_study(study_name="s", storage=storage, sampler=c), 1)
    assert c.trials_learned == 20


def reject_or_fail(trial: optuna.Trial) -> float:
    """``a`` = "big" is rejected untrained, "nan" fails; otherwise ``b`` sets the reward."""
    a = trial.suggest_categorical("a", ["big", "nan", "ok1", "ok2"])
    b = trial.suggest_categorical("b", [0, 1, 2, 3])
    if a == "big":
        trial.set_user_attr("reason", "rejected untrained: 900.0M MACs outside [200.0M, 600.0M]")
        raise optuna.TrialPruned()
    if a == "nan":
        raise RuntimeError("training diverged")
    return 0.5 + 0.1 * b


def test_policy_learns_to_avoid_rejected_and_failed_trials():
    study = new_study(RLSampler(seed=3))
    study.optimize(reject_or_fail, n_trials=160, catch=(RuntimeError,))
    late = [t.params["a"] for t in study.trials[110:]]
    assert sum(a in ("big", "nan") for a in late) / len(late) < 0.2  # half of them for random search


def finished(state: TrialState, value: float | None = None, **attrs) -> optuna.trial.FrozenTrial:
    return create_trial(state=state, value=value, params={"a": 1}, user_attrs=attrs,
                        distributions={"a": CategoricalDistribution([0, 1, 2])})


def test_reward_of_each_trial_state(monkeypatch):
    sampler = RLSampler(seed=0)
    study = new_study(sampler)
    updates, update = [], sampler._update
    monkeypatch.setattr(sampler, "_update", lambda t, r: (updates.append((t.number, r)), update(t, r)))
    rejected = finished(TrialState.PRUNED, reason="rejected untrained: 1.0M MACs outside [2.0M, 8.0M]")
    study.add_trials([rejected, finished(TrialState.FAIL)])
    study.ask()
    assert sampler.trials_learned == 0  # penalized, but no reward has set the scale yet
    assert sampler.reward(rejected) is None
    study.add_trials([finished(TrialState.COMPLETE, 0.7), finished(TrialState.COMPLETE, 0.4),
                      finished(TrialState.COMPLETE, 0.9)])
    study.ask()
    assert sampler.trials_learned == 5
    assert updates == [(3, 0.7), (0, 0.7), (1, 0.7), (4, 0.4), (5, 0.9)]  # the waiting ones after the first reward
    assert sampler.reward(study.trials[3]) == 0.7
    assert sampler.reward(study.trials[3], sign=-1.0) == -0.7
    assert sampler.reward(rejected) == sampler.reward(finished(TrialState.FAIL)) == 0.4  # the lowest so far
    for skipped in (finished(TrialState.PRUNED, trained=True),  # pruned while training
                    finished(TrialState.PRUNED, reason="duplicate of trial 3, running on another worker"),
                    finished(TrialState.PRUNED, reason="not trained: the study holds its 12 trials")):
        assert sampler.reward(skipped) is None
    assert RLSampler(seed=0, penalty=-1.0).reward(rejected) == -1.0


def test_trials_pruned_while_training_leave_the_policy_alone():
    sampler = RLSampler(seed=0)
    study = new_study(sampler)
    study.add_trials([finished(TrialState.PRUNED, trained=True) for _ in range(5)])
    before = [p.detach().clone() for p in sampler._controller._params()]
    study.ask()
    assert all(torch.equal(p, q) for p, q in zip(before, sampler._controller._params()))


def params_sequence(seed: int, n: int = 40, objective=toy) -> list[dict]:
    study = new_study(RLSampler(seed=seed))
    run(study, n, objective)
    return [t.params for t in study.trials]


def test_same_seed_same_params_and_global_state_untouched():
    torch.manual_seed(0)
    np.random.seed(0)
    torch_state, np_state = torch.get_rng_state(), np.random.get_state()[1].copy()
    threads = torch.get_num_threads()
    first = params_sequence(5)
    assert torch.equal(torch.get_rng_state(), torch_state)
    assert np.array_equal(np.random.get_state()[1], np_state)
    assert torch.get_num_threads() == threads
    torch.manual_seed(1)  # the caller's seed for its models must not matter either
    assert params_sequence(5) == first
    assert params_sequence(6) != first


def test_reward_scale_does_not_matter():
    """Advantages are normalized: an affine change of the reward leaves the search as it was."""
    assert params_sequence(4, 60, lambda t: 1000 * toy(t) - 5) == params_sequence(4, 60)


def test_decoder_follows_fixed_and_single_choice_params_as_teacher_forcing_does(monkeypatch):
    """The numpy decoder steps through every categorical choice, its own or not, and agrees with
    the torch LSTM that learns: the same policy."""
    sampler = RLSampler(seed=0)
    study = new_study(sampler)
    run(study, 30)
    controller, decoded = sampler._controller, []
    step = controller.step

    def recording_step(state, key):
        logits, off = step(state, key)
        decoded.append((key[0], logits - np.log(np.exp(logits).sum())))
        return logits, off

    monkeypatch.setattr(controller, "step", recording_step)
    study.enqueue_trial({"p1": 3})  # chosen without the sampler: fixed, as is a one-choice parameter
    t = study.ask()
    t.suggest_categorical("one", ["only"])
    study.tell(t, toy(t))
    assert [name for name, _ in decoded] == ["one", "p0", "p1", "p2", "p3", "p4", "p5"]
    steps = list(_steps(t, list(t.params)))
    logp = sum(log_probs[index] for (_, log_probs), (_, index) in zip(decoded, steps))
    assert logp == pytest.approx(controller.log_prob(steps)[0].item(), abs=1e-4)


def test_drives_the_real_space_with_an_enqueued_network():
    space = default_space()
    study = new_study(RLSampler(seed=0))
    b0 = get_preset("efficientnet-b0")
    study.enqueue_trial(space.encode(b0))
    choices = space.choices()
    for i in range(30):
        t = study.ask()
        arch = space.sample(t)
        assert space.contains(arch)
        assert all(t.params[name] in c for name, c in choices.items())
        study.tell(t, sum(s.se_ratio > 0 for s in arch.stages) / 7 + 0.01 * (i % 3))
    assert study.trials[0].params == space.encode(b0)
    assert len({space.from_params(t.params).to_str() for t in study.trials}) > 20


def mixed(trial: optuna.Trial) -> float:
    x = trial.suggest_float("x", -1.0, 1.0)
    k = trial.suggest_categorical("k", ["a", "b"])
    n = trial.suggest_int("n", 1, 5)
    if trial.number >= 15:  # a new parameter mid-study: the policy grows, Adam's state carries over
        trial.suggest_categorical("wide", list(range(100)))
    return x + n + (k == "a")


def test_other_distributions_threads_and_parameters_that_appear_later():
    study = new_study(RLSampler(seed=0))
    study.optimize(mixed, n_trials=30, n_jobs=2)
    assert len(study.trials) == 30 and all(t.state == TrialState.COMPLETE for t in study.trials)
    for t in study.trials:
        assert -1 <= t.params["x"] <= 1 and 1 <= t.params["n"] <= 5 and t.params["k"] in ("a", "b")
    assert sum("wide" in t.params for t in study.trials) == 15


def test_learns_from_every_hyperband_bracket():
    """With Hyperband the sampler is handed one bracket's view of the study; it learns from all."""
    def reporting(trial: optuna.Trial) -> float:
        value = toy(trial)
        trial.report(value, 1)
        trial.should_prune()  # sets Hyperband's brackets up
        return value

    sampler = RLSampler(seed=0)
    study = new_study(sampler, pruner=optuna.pruners.HyperbandPruner(min_resource=1, max_resource=9))
    run(study, 40, reporting)
    assert sampler.trials_learned == 39
    bracket = optuna.pruners._filter_study(study, study.trials[-1])
    assert len(bracket.get_trials(deepcopy=False)) < 30  # what ``before_trial`` is handed


def test_multi_objective_is_refused():
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=RLSampler(seed=0))
    with pytest.raises(ValueError, match="multi-objective"):
        study.ask()


def test_each_finished_trial_is_learned_once(monkeypatch):
    """The work per trial does not grow with the study: every finished trial feeds one policy update,
    once, however many trials follow (its cost in ms is measured by bench/bench_controller.py --samplers rl,random)."""
    space = default_space()
    sampler = RLSampler(seed=0)
    learned: list[int] = []
    learn = sampler._controller.learn
    monkeypatch.setattr(sampler._controller, "learn", lambda *a, **k: (learned.append(1), learn(*a, **k))[1])
    study = new_study(sampler)
    run(study, 40, lambda t: len(space.sample(t).stages) + t.number % 3)
    assert sampler.trials_learned == 39  # all but the last, which the next trial's before_trial would learn
    assert len(learned) == 39


class TestOptunaSamplerKit(BasicSamplerTestCase, SingleOnlySamplerTestCase):
    """Optuna's own generic sampler tests (``optuna.testing.pytest_samplers``): every kind of
    distribution in range and of the right type, conditional and dynamic search spaces,
    PartialFixedSampler, NaN values, and refusing a multi-objective study."""

    @pytest.fixture
    def sampler(self):
        return lambda: RLSampler(seed=0)


def late_share(objective, name: str, hit, sampler: optuna.samplers.BaseSampler, n: int = 300) -> float:
    """The share of the last 100 of ``n`` trials whose ``name`` satisfies ``hit``."""
    study = new_study(sampler)
    run(study, n, objective)
    return sum(hit(t.params[name]) for t in study.trials[-100:]) / 100


def test_an_integer_parameter_is_learned():
    """One integer value of ten is rewarded: the policy picks it in most late trials (chance: 10 %)."""
    def seven(trial: optuna.Trial) -> float:
        return float(trial.suggest_int("n", 0, 9) == 7)

    assert late_share(seven, "n", lambda v: v == 7, RLSampler(seed=0)) > 0.6  # 0.99 here
    assert late_share(seven, "n", lambda v: v == 7, optuna.samplers.RandomSampler(seed=0)) < 0.2


@pytest.mark.parametrize("suggest, hit, chance", [
    (lambda t: t.suggest_int("v", 0, 999), lambda v: 600 <= v < 660, 0.06),  # 16 bins of a long grid
    (lambda t: t.suggest_float("v", 0.0, 1.0), lambda v: 0.8 <= v < 0.9, 0.10),
    (lambda t: t.suggest_float("v", 1e-5, 1e-1, log=True), lambda v: 10 ** -3.25 <= v < 10 ** -2.75, 0.125),
])
def test_wide_integer_and_float_parameters_are_learned_by_bins(suggest, hit, chance):
    share = late_share(lambda t: float(hit(suggest(t))), "v", hit, RLSampler(seed=1))
    assert share > 3 * chance, share  # 0.44 to 1.0 here


@pytest.mark.parametrize("dist, count", [
    (IntDistribution(0, 9), 10), (IntDistribution(-10, 10, step=2), 11), (IntDistribution(1, 100, log=True), 15),
    (IntDistribution(0, 999), 16), (IntDistribution(1, 10 ** 9, log=True), 16),
    (FloatDistribution(-10, 10, step=0.1), 16), (FloatDistribution(1e-7, 1, log=True), 16),
    (FloatDistribution(0, 1), 16), (FloatDistribution(2, 2), 1), (CategoricalDistribution(["a", None, 3]), 3),
])
def test_every_token_is_a_bin_that_holds_its_values(dist, count):
    """No empty bin (a log grid's first values are a bin each), and a value drawn in a bin is learned as that bin."""
    tok, rng = tokens(dist), random.Random(0)
    assert len(tok.labels) == count
    for k in range(count):
        for _ in range(30):
            value = tok.value(k, rng)
            assert dist._contains(dist.to_internal_repr(value)) and tok.index(value) == k


def test_pickles_and_deep_copies_and_a_restored_copy_continues_as_the_original(tmp_path):
    """Optuna's save-the-sampler recipe: ``pickle.dump(study.sampler)``, then resume the study with it."""
    path = tmp_path / "a.log"
    study = new_study(RLSampler(seed=0), storage=JournalStorage(JournalFileBackend(str(path))), study_name="s")
    run(study, 25, mixed)
    saved, copied = pickle.dumps(study.sampler), copy.deepcopy(study.sampler)
    shutil.copy(path, tmp_path / "b.log")
    shutil.copy(path, tmp_path / "c.log")
    shutil.copy(path, tmp_path / "d.log")
    run(study, 15, mixed)
    for name, sampler in (("b.log", pickle.loads(saved)), ("c.log", copied), ("d.log", RLSampler(seed=0))):
        resumed = optuna.load_study(study_name="s", sampler=sampler,
                                    storage=JournalStorage(JournalFileBackend(str(tmp_path / name))))
        run(resumed, 15, mixed)
        same = [t.params for t in resumed.trials] == [t.params for t in study.trials]
        assert same == (name != "d.log"), name  # a fresh sampler of the same seed does not continue so
    assert copied._controller.head_w is not study.sampler._controller.head_w
