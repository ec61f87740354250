"""Every private Optuna API behind ``nas.cluster.optuna_private``, checked on real studies.

When an Optuna release renames, moves or changes one of them, a test here fails with its name,
before a cluster run finds out. The pin in ``setup.cfg`` is the range these tests passed on.
"""
from __future__ import annotations

import configparser
import inspect
from datetime import datetime
from pathlib import Path

import numpy as np
import optuna
import pytest
import sqlalchemy as sa
from optuna.storages import BaseStorage, JournalStorage, RDBStorage
from optuna.storages.journal import BaseJournalBackend, JournalFileBackend
from optuna.trial import TrialState

from nas.cluster import optuna_private as op
from nas.cluster.lease import LeasedJournalStorage, RetryStaleTrial
from nas.cluster.rdb import ResilientStorage

ROOT = Path(__file__).resolve().parents[1]
DIST = optuna.distributions.FloatDistribution(0, 1)


@pytest.fixture(params=["journal", "sqlite", "memory"])
def study(request, tmp_path) -> optuna.Study:
    storage = {"journal": lambda: JournalStorage(JournalFileBackend(str(tmp_path / "s.journal"))),
               "sqlite": lambda: f"sqlite:///{tmp_path / 's.db'}",
               "memory": optuna.storages.InMemoryStorage}[request.param]()
    return optuna.create_study(study_name="private", storage=storage)


def test_the_pin_admits_the_installed_optuna_and_matches_the_adapter():
    from packaging.specifiers import SpecifierSet

    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    [pin] = [line.strip() for line in cfg["options"]["install_requires"].splitlines() if line.startswith("optuna")]
    assert pin == f"optuna{op.TESTED_OPTUNA}"
    assert optuna.__version__ in SpecifierSet(op.TESTED_OPTUNA), optuna.__version__


def test_storage_and_ids_of_a_study_and_its_trials(study):
    storage = op.storage_of(study)
    assert isinstance(storage, BaseStorage)
    sid = op.study_id(study)
    assert storage.get_study_id_from_name("private") == sid
    trial = study.ask({"x": DIST})
    tid = op.trial_id(trial)
    assert storage.get_trial_id_from_study_id_trial_number(sid, trial.number) == tid
    assert op.trial_id(study.trials[trial.number]) == tid  # FrozenTrial too
    assert storage.get_trial(tid).params == trial.params


def test_system_attributes_of_studies_and_trials(study):
    op.set_study_system_attr(study, "nas:worker:0", {"host": "h", "pid": 1})
    assert op.study_system_attrs(study)["nas:worker:0"] == {"host": "h", "pid": 1}
    assert "nas:worker:0" not in study.user_attrs
    trial = study.ask()
    op.set_trial_system_attr(trial, "nas:claim", trial.number)
    assert study.trials[trial.number].system_attrs["nas:claim"] == trial.number
    assert "nas:claim" not in study.trials[trial.number].user_attrs


def test_all_trials_sees_past_a_hyperband_bracket(tmp_path):
    """Under Hyperband a sampler is handed one bracket's view of the study; ``all_trials`` sees every trial."""
    seen: list[tuple[int, int, int]] = []

    class Probe(optuna.samplers.RandomSampler):
        def sample_independent(self, study, trial, param_name, param_distribution):
            seen.append((trial.number, len(op.all_trials(study)), len(study.get_trials(deepcopy=False))))
            return super().sample_independent(study, trial, param_name, param_distribution)

    def reporting(trial: optuna.Trial) -> float:
        x = trial.suggest_float("x", 0, 1)
        trial.report(x, 1)
        trial.should_prune()  # sets Hyperband's brackets up
        return x

    study = optuna.create_study(sampler=Probe(seed=0), pruner=optuna.pruners.HyperbandPruner(1, 9, 3))
    study.optimize(reporting, n_trials=12)
    assert [n for n, _, _ in seen] == list(range(12))
    assert all(everything == number + 1 for number, everything, _ in seen)  # every trial so far, this one too
    assert any(bracket < everything for _, everything, bracket in seen)  # the bracket view filters: why it is needed


def test_heartbeat_protocol_and_its_hooks(tmp_path):
    assert inspect.isabstract(op.BaseHeartbeat)
    hooks = set(op.BaseHeartbeat.__abstractmethods__)
    assert {"record_heartbeat", "_get_stale_trial_ids", "get_heartbeat_interval"} <= hooks
    assert hooks <= {"record_heartbeat", "_get_stale_trial_ids", "get_heartbeat_interval",
                     "get_heartbeat_stale_trial_callback", "get_failed_trial_callback"}, hooks
    for cls in (LeasedJournalStorage, ResilientStorage):  # ours implement all of it, under either name
        assert not inspect.isabstract(cls), (cls, cls.__abstractmethods__)
    rdb = RDBStorage(f"sqlite:///{tmp_path / 'h.db'}", heartbeat_interval=1, grace_period=2)
    assert op.heartbeat_enabled(rdb) and op.heartbeat_enabled(op.cached(rdb))
    assert not op.heartbeat_enabled(optuna.storages.InMemoryStorage())
    assert not op.heartbeat_enabled(RDBStorage(f"sqlite:///{tmp_path / 'n.db'}"))


@pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed to be used with Study.optimize")
def test_heartbeats_and_stale_trials_of_an_rdb_storage(tmp_path):
    rdb = RDBStorage(f"sqlite:///{tmp_path / 'h.db'}", heartbeat_interval=1, grace_period=2)
    study = optuna.create_study(study_name="beats", storage=rdb)
    sid = op.study_id(study)
    trial = study.ask()
    tid = op.trial_id(trial)
    assert op.running_heartbeats(rdb, sid) == {tid: None}
    rdb.record_heartbeat(tid)
    [(got, beat)] = op.running_heartbeats(rdb, sid).items()
    assert got == tid and isinstance(beat, datetime)
    assert op.stale_trial_ids(rdb, sid) == []
    with rdb.engine.begin() as conn:  # as if its worker had died long ago
        conn.execute(sa.text("UPDATE trial_heartbeats SET heartbeat = :t"), {"t": datetime(2000, 1, 1)})
    assert op.stale_trial_ids(rdb, sid) == [tid]
    study.tell(trial, 0.5)
    assert op.running_heartbeats(rdb, sid) == {}


def test_optunas_read_cache_over_an_rdb_storage(tmp_path):
    rdb = RDBStorage(f"sqlite:///{tmp_path / 'c.db'}")
    cache = op.cached(rdb)
    assert isinstance(cache, BaseStorage) and isinstance(cache, op.BaseHeartbeat)
    assert op.uncached(cache) is rdb and op.uncached(rdb) is rdb
    study = optuna.create_study(study_name="cache", storage=cache)
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=3)
    assert len(optuna.load_study(study_name="cache", storage=rdb.url).trials) == 3
    # the wrapper delegates every public method the cache has, so none falls back to a slower default
    public = {n for n, v in vars(type(cache)).items() if callable(v) and not n.startswith("_")}
    assert public - set(vars(ResilientStorage)) == set(), public - set(vars(ResilientStorage))
    assert set(BaseStorage.__abstractmethods__) <= set(vars(ResilientStorage))


def test_storage_method_signatures_the_wrapper_repeats():
    for name in BaseStorage.__abstractmethods__ | {"get_best_trial", "get_trial_id_from_study_id_trial_number"}:
        ours = list(inspect.signature(getattr(ResilientStorage, name)).parameters)
        theirs = list(inspect.signature(getattr(BaseStorage, name)).parameters)
        assert ours == theirs, (name, ours, theirs)


def test_the_file_of_a_journal_storage(tmp_path):
    path = str(tmp_path / "f.journal")
    assert op.journal_file_path(JournalStorage(JournalFileBackend(path))) == path

    class Lines(BaseJournalBackend):  # a journal without a file (as Redis's)
        def __init__(self) -> None:
            self.logs: list[dict[str, object]] = []

        def read_logs(self, log_number_from: int):
            yield from self.logs[log_number_from:]

        def append_logs(self, logs) -> None:
            self.logs.extend(logs)
    assert op.journal_file_path(JournalStorage(Lines())) is None


def test_retry_history_of_a_retried_trial(tmp_path):
    """``lost_trials`` reads Optuna's ``failed_trial`` and ``retry_history`` system attributes."""
    study = optuna.create_study()
    first = study.ask({"x": DIST})
    study.tell(first, state=TrialState.FAIL)
    RetryStaleTrial(3).queue(study, study.trials[first.number])
    retry = study.trials[-1]
    assert retry.state == TrialState.WAITING and retry.params == study.trials[first.number].params
    assert retry.system_attrs["failed_trial"] == first.number and retry.system_attrs["retry_history"] == [first.number]
    assert retry.user_attrs["retry_of"] == first.number


def test_telling_a_trial_another_worker_failed(study):
    """``nas.cluster.workers.optimize`` recognizes these messages: the trial was failed as stale elsewhere."""
    trial = study.ask()
    op.storage_of(study).set_trial_state_values(op.trial_id(trial), TrialState.FAIL)
    with pytest.raises((ValueError, optuna.exceptions.UpdateFinishedTrialError)) as info:
        study.tell(trial, 0.5)
    assert isinstance(info.value, optuna.exceptions.UpdateFinishedTrialError) or str(info.value).startswith(
        "Cannot tell a FAIL trial")


def test_a_pruned_trial_takes_its_last_intermediate_value():
    """Why ``nas.cluster.trials.ReportedAs`` reports rewards: Optuna makes the last report a PRUNED trial's value."""
    study = optuna.create_study(direction="maximize")
    trial = study.ask()
    trial.report(0.25, 0)
    trial.report(0.75, 1)
    study.tell(trial, state=TrialState.PRUNED)
    assert study.trials[0].value == 0.75


def test_the_tpe_internals_nas_search_tpe_reads():
    """Each TPE accessor of the adapter on a real sampler and study (``nas.search.tpe.CachedTPESampler``)."""
    from optuna.samplers import TPESampler
    from optuna.samplers._tpe import sampler as tpe

    sampler = TPESampler(multivariate=True, constant_liar=True, seed=0, n_startup_trials=3, n_ei_candidates=7)
    assert op.tpe_settings(sampler) == (True, 3, 7, 1.0, tpe.default_weights, True)
    study = optuna.create_study(sampler=sampler, direction="maximize")
    for i in range(6):
        trial = study.ask()
        trial.suggest_float("x", 0, 1)
        trial.suggest_float("y", 0, 1)
        if i == 4:
            trial.report(0.5, 2)
            study.tell(trial, state=TrialState.PRUNED)
        elif i < 4:
            study.tell(trial, i)
    running = study.trials[-1]  # sampled relatively (a constant liar shares those parameters), not told
    assert running.state == TrialState.RUNNING and op.tpe_params(sampler, running, study) == running.params
    assert [t.number for t in op.tpe_trials(sampler, study)] == list(range(6))  # complete, pruned, running
    assert [t.number for t in op.cached_trials(study)] == list(range(6))
    assert op.tpe_gamma(sampler, study) is tpe.default_gamma
    assert op.pruned_trial_score(study.trials[4], study) == (-2, -0.5)
    assert isinstance(op.tpe_rng(sampler), np.random.RandomState)
    estimator = op.tpe_below_estimator(sampler, study, running.distributions, study.trials[:2])
    assert isinstance(estimator, op.ParzenEstimator) and estimator.log_pdf({"x": np.array([0.5]),
                                                                           "y": np.array([0.5])}).shape == (1,)
    np.testing.assert_array_equal(op.parzen_weights(tpe.default_weights, 30), tpe.default_weights(30))
    with pytest.raises(ValueError):
        op.parzen_weights(lambda n: -np.ones(n), 3)
    # the hooks CachedTPESampler overrides, and the steps of Optuna's own _sample its fast path repeats
    for name, parameters in {"_sample": ["self", "study", "trial", "search_space"],
                             "_sample_relative": ["self", "study", "trial", "search_space"],
                             "_get_internal_repr": ["self", "trials", "search_space", "study"]}.items():
        assert list(inspect.signature(getattr(TPESampler, name)).parameters) == parameters, name
    source = inspect.getsource(TPESampler._sample)
    for step in ("_split_trials(", "self._build_parzen_estimator(", "mpe_below.sample(self._rng.rng",
                 "self._compute_acquisition_func(", "handle_below=False"):
        assert step in source, step
