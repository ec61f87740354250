"""nas-search's TPE samples what Optuna's samples; the finished-trial index counts what a full scan counts."""
from __future__ import annotations

import inspect

import optuna
import pytest
from optuna.trial import TrialState

from nas.cluster.storage import open_storage
from nas.cluster.trials import counted
from nas.search.objective import FinishedTrials
from nas.search.study import make_sampler
from nas.search.tpe import CachedTPESampler
from search_spaces import default_space

SETTINGS = dict(multivariate=True, constant_liar=True, seed=3, n_startup_trials=10)


def _search(sampler: optuna.samplers.BaseSampler, storage: object = None, n: int = 70) -> list[dict]:
    """A search on the real space with every trial state TPE reads: complete, pruned, failed, running, queued."""
    space = default_space()
    study = optuna.create_study(storage=storage, sampler=sampler, direction="maximize")
    study.enqueue_trial({"s1_layers": 2})  # a queued trial: sampled around its one fixed parameter
    seen = []
    for i in range(n):
        trial = study.ask()
        arch = space.sample(trial)
        seen.append(dict(trial.params))
        if i == 25:
            continue  # left running: the constant liar's case (its parameters come from system attributes)
        if i % 9 == 4:
            study.tell(trial, state=TrialState.FAIL)
        elif i % 7 == 0:
            study.tell(trial, state=TrialState.PRUNED)
        else:
            study.tell(trial, len(arch.to_str()) % 13 / 13 + i * 1e-4)
    return seen


@pytest.mark.parametrize("storage", ["memory", "journal"])
def test_cached_tpe_samples_exactly_what_optunas_tpe_samples(storage, tmp_path):
    def store(name):
        if storage == "memory":
            return None
        (tmp_path / name).mkdir()
        return open_storage(None, tmp_path / name)

    ours = CachedTPESampler(**SETTINGS)
    reference = _search(optuna.samplers.TPESampler(**SETTINGS), store("a"))
    assert _search(ours, store("b")) == reference
    assert len({tuple(sorted(p.items())) for p in reference}) > 50  # TPE really sampled (not one point)
    assert ours._rows and max(r.size for r in ours._rows.values()) >= 50  # the cache was used, not bypassed


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
