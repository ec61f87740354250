"""nas-search's TPE samples what Optuna's samples; the finished-trial index counts what a full scan counts."""
from __future__ import annotations

import inspect

import numpy as np
import optuna
import pytest
from optuna.distributions import CategoricalDistribution
from optuna.samplers._tpe.parzen_estimator import _ParzenEstimatorParameters
from optuna.samplers._tpe.sampler import _split_trials as split_trials
from optuna.samplers._tpe.sampler import default_weights
from optuna.trial import TrialState

from nas.cluster import optuna_private as op
from nas.cluster.storage import open_storage
from nas.cluster.trials import counted
from nas.search import tpe
from nas.search.objective import FinishedTrials
from nas.search.study import make_sampler
from nas.search.tpe import CachedTPESampler, categorical_log_pdf
from search_spaces import default_space

above_log_pdf = tpe._above_log_pdf

SETTINGS = dict(multivariate=True, constant_liar=True, seed=3, n_startup_trials=10)


def _search(sampler: optuna.samplers.BaseSampler, storage: object = None, n: int = 70,
            direction: str = "maximize") -> list[dict]:
    """A search on the real space with every trial state and kind TPE reads: complete (with tied values),
    pruned (with and without intermediate values, one NaN), infeasible, failed, running, queued."""
    space = default_space()
    study = optuna.create_study(storage=storage, sampler=sampler, direction=direction)
    study.enqueue_trial({"s1_layers": 2})  # a queued trial: sampled around its one fixed parameter
    seen = []
    for i in range(n):
        trial = study.ask()
        arch = space.sample(trial)
        seen.append(dict(trial.params))
        if i in (25, 48):
            continue  # left running: the constant liar's case (its parameters come from system attributes)
        if i % 11 == 3:
            trial.set_constraint("macs", i % 3 - 1.5)  # infeasible (> 0) or feasible
        if i % 9 == 4:
            study.tell(trial, state=TrialState.FAIL)
        elif i % 7 == 0:
            for step in range(i % 3):
                trial.report(float("nan") if i == 35 else i % 5 / 5, step)
            study.tell(trial, state=TrialState.PRUNED)
        else:
            study.tell(trial, len(arch.to_str()) % 13 / 13 + i % 4 * 0.1)  # many ties: the split's order matters
    return seen


@pytest.mark.parametrize("storage,direction", [("memory", "maximize"), ("journal", "maximize"),
                                               ("memory", "minimize")])
def test_cached_tpe_samples_exactly_what_optunas_tpe_samples(storage, direction, tmp_path, monkeypatch):
    def store(name):
        if storage == "memory":
            return None
        (tmp_path / name).mkdir()
        return open_storage(None, tmp_path / name)

    reference = _search(optuna.samplers.TPESampler(**SETTINGS), store("a"), direction=direction)
    closed_form = []  # the fast path ran, Optuna's _sample did not
    monkeypatch.setattr(tpe, "_above_log_pdf", lambda *a: closed_form.append(1) or above_log_pdf(*a))
    monkeypatch.setattr(optuna.samplers.TPESampler, "_sample", None)
    ours = CachedTPESampler(**SETTINGS)
    assert _search(ours, store("b"), direction=direction) == reference
    assert len({tuple(sorted(p.items())) for p in reference}) > 50  # TPE really sampled (not one point)
    assert len(closed_form) > 50  # every trial after the startup ones
    assert ours._rows and max(r.size for r in ours._rows.values()) >= 50  # the cache was used, not bypassed


@pytest.mark.parametrize("prior_weight", [1.0, 0.3, 2.5])
@pytest.mark.parametrize("observations", [0, 1, 7, 30, 400])
def test_the_closed_form_is_optunas_parzen_estimator(observations, prior_weight):
    """``categorical_log_pdf`` against Optuna's ``_ParzenEstimator.log_pdf`` at many points, to 1e-9."""
    rng = np.random.default_rng(observations)
    choices = rng.integers(2, 7, size=12)
    space = {f"p{i}": CategoricalDistribution(list(range(n))) for i, n in enumerate(choices)}
    seen = rng.integers(0, choices, size=(observations, len(choices)))
    seen[: observations // 3] = seen[0] if observations else seen[:0]  # repeated observations, as a converged search
    points = rng.integers(0, choices, size=(200, len(choices)))
    on = min(observations // 2, 100)
    points[:on] = seen[:on]  # points on observations: the density's peaks
    parameters = _ParzenEstimatorParameters(prior_weight, True, False, default_weights, True)
    optunas = op.ParzenEstimator({n: seen[:, i] for i, n in enumerate(space)}, space, parameters)
    expected = optunas.log_pdf({n: points[:, i].astype(float) for i, n in enumerate(space)})
    matches = (points[:, None, :] == seen[None, :, :]).sum(axis=2)
    got = categorical_log_pdf(matches, default_weights(observations), prior_weight, choices)
    np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-9)
    assert np.ptp(expected) > 1 or observations == 0  # the points tell the density's peaks from its valleys


def test_the_split_is_optunas():
    """``_below`` picks the trials Optuna's ``_split_trials`` puts below, ties and all, for every size."""
    study = optuna.create_study(direction="maximize")
    rng = np.random.default_rng(0)
    for i in range(60):
        trial = study.ask({"x": CategoricalDistribution([0, 1, 2])})
        if i % 6 == 1:
            trial.set_constraint("c", float(i % 4) - 1)
        if i % 5 == 2:
            for step in range(i % 4):
                trial.report(float(rng.integers(3)), step)
            study.tell(trial, state=TrialState.PRUNED)
        elif i % 13 != 12:
            study.tell(trial, float(rng.integers(4)))
    trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING))
    rows = tpe._Rows(study.trials[0].distributions, True)
    located, _ = rows.locate(trials, study)
    for n_below in range(len(trials) + 2):
        below, _ = split_trials(study, trials, n_below)
        mask = tpe._below(rows, located, n_below, maximize=True)
        assert [trials[p].number for p in np.flatnonzero(mask)] == [t.number for t in below], n_below


def test_nas_search_tpe_is_the_cached_one_and_optunas_hook_is_unchanged():
    sampler = make_sampler("tpe", 0)
    assert isinstance(sampler, CachedTPESampler)
    assert (sampler._multivariate, sampler._constant_liar) == (True, True)
    hook = inspect.signature(optuna.samplers.TPESampler._get_internal_repr)
    assert list(hook.parameters) == ["self", "trials", "search_space", "study"]  # what CachedTPESampler overrides
    assert "_get_internal_repr" in inspect.getsource(optuna.samplers.TPESampler._build_parzen_estimator)


def test_finished_trials_counts_what_a_full_scan_counts(tmp_path):
    study = optuna.create_study(storage=open_storage(None, tmp_path))
    study.enqueue_trial({"x": 0.5})  # queued below the trials that finish first: the index must not skip it
    queued = None
    index = FinishedTrials()
    for i in range(12):
        trial = study.ask()
        trial.suggest_float("x", 0, 1)
        if i == 0:
            queued = trial
            continue
        trial.set_user_attr("arch", f"a{i % 4}")
        trial.set_user_attr("trained", i % 3 != 0)
        if i % 5 == 0:
            trial.set_user_attr("reason", "training diverged at step 3")
            study.tell(trial, state=TrialState.FAIL)
        else:
            study.tell(trial, 0.1 * i)
        index.update(study.get_trials(deepcopy=False))
    assert queued is not None and queued.number == 0
    unfinished = index.update(study.get_trials(deepcopy=False))
    assert [t.number for t in unfinished] == [0]
    queued.set_user_attr("arch", "a0")
    queued.set_user_attr("trained", True)
    study.tell(queued, 0.9)
    assert index.update(study.get_trials(deepcopy=False)) == []
    trials = study.get_trials(deepcopy=False)
    assert index.counted == sum(counted(t) for t in trials) == 7
    assert index.diverged == 2
    assert sorted(t.number for t in index.by_arch["a0"]) == [0, 4, 8]


def test_the_progress_line_counts_and_ranks_as_a_full_scan_does(tmp_path, capsys):
    from nas.search.progress import Progress

    study = optuna.create_study(storage=open_storage(None, tmp_path), direction="maximize")
    progress = Progress(total=10, start_count=0)
    rewards = [0.3, 0.7, None, 0.5, 0.9, 0.2]  # None: rejected untrained (pruned, not counted)
    for i, reward in enumerate(rewards):
        trial = study.ask()
        trial.suggest_float("x", 0, 1)
        if reward is None:
            study.tell(trial, state=TrialState.PRUNED)
        else:
            trial.set_user_attr("trained", True)
            trial.set_user_attr("reward", reward)
            study.tell(trial, reward)
        progress(study, study.trials[-1])
        line = capsys.readouterr().err.strip()
        done = [r for r in rewards[:i + 1] if r is not None]
        assert f"] {len(done)}/10 | trial {i} " in line and f"| best {max(done):.4f} |" in line, line


@pytest.mark.parametrize("popcount", [True, False])
@pytest.mark.parametrize("parameters", [42, 100])  # 2 and 5 words of 64 choices
def test_shared_bits_count_the_parameters_two_points_share(popcount, parameters, monkeypatch):
    if not popcount:  # numpy < 2: a product of the unpacked bits
        monkeypatch.setattr(tpe, "_POPCOUNT", None)
    rng = np.random.default_rng(parameters)
    choices = rng.integers(2, 6, size=parameters)
    rows = tpe._Rows({f"p{i}": CategoricalDistribution(list(range(n))) for i, n in enumerate(choices)}, True)
    seen, points = (rng.integers(0, choices, size=(n, parameters)) for n in (300, 24))
    seen[:24] = points  # every parameter shared
    got = tpe.shared_bits(rows.bits(points), rows.bits(seen))
    np.testing.assert_array_equal(got, (points[:, None, :] == seen[None, :, :]).sum(axis=2))
