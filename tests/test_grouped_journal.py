"""``GroupedJournalStorage``: a trial's parameters and user attributes reach the journal file with the
process's next other write or read, in one append. Checked against Optuna's own ``JournalStorage``:
the same study in the file, the same refusals, far fewer appends."""
from __future__ import annotations

import pickle

import optuna
import pytest
from optuna.exceptions import UpdateFinishedTrialError
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend

from nas.cluster.optuna_private import GroupedJournalStorage, trial_id
from search_spaces import default_space

DIST = optuna.distributions.FloatDistribution(0, 1)


class Counting(JournalFileBackend):
    """A journal file that counts its appends and can be told to fail the next ones."""

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.appends, self.fail = 0, 0

    def append_logs(self, logs):
        if self.fail:
            self.fail -= 1
            raise OSError("No space left on device")
        self.appends += 1
        super().append_logs(logs)


def _search(storage, trials: int = 6) -> None:
    space = default_space()

    def objective(trial: optuna.Trial) -> float:
        arch = space.sample(trial)
        trial.set_user_attr("arch", arch.to_str())
        trial.set_user_attr("blocks", sum(s.repeats for s in arch.stages))
        return sum(s.out_channels * s.kernel for s in arch.stages) / 1000

    sampler = optuna.samplers.TPESampler(seed=0, n_startup_trials=3, multivariate=True, constant_liar=True)
    optuna.create_study(study_name="g", storage=storage, sampler=sampler).optimize(objective, n_trials=trials)


def _read(path) -> list[tuple]:
    """The study as another process reads the file: Optuna's own journal storage."""
    study = optuna.load_study(study_name="g", storage=JournalStorage(JournalFileBackend(str(path))))
    return [(t.params, t.user_attrs, t.value, t.state) for t in study.trials]


def test_a_search_leaves_the_study_optunas_journal_leaves_in_a_tenth_of_the_appends(tmp_path):
    ours, ref = Counting(str(tmp_path / "ours")), Counting(str(tmp_path / "ref"))
    _search(GroupedJournalStorage(ours))
    _search(JournalStorage(ref))
    found = _read(tmp_path / "ours")
    assert found == _read(tmp_path / "ref")  # TPE saw the same history: the held lines were read back in time
    assert len(found) == 6 and len(found[0][0]) == 42 and set(found[0][1]) == {"arch", "blocks"}
    assert ref.appends >= 6 * (1 + 42 + 2 + 1)  # create, parameters, attributes, state: one append each
    assert ours.appends <= 4 + 6 * 3 and ours.appends * 10 <= ref.appends, (ours.appends, ref.appends)


@pytest.mark.parametrize("kind", ["optuna", "grouped"])
def test_refusals_come_at_once_as_optunas_journal_gives_them(tmp_path, kind):
    storage = (JournalStorage if kind == "optuna" else GroupedJournalStorage)(JournalFileBackend(str(tmp_path / "j")))
    study = optuna.create_study(storage=storage)
    done = study.ask()
    study.tell(done, 1.0)
    with pytest.raises(UpdateFinishedTrialError):
        storage.set_trial_param(trial_id(done), "x", 0.5, DIST)
    with pytest.raises(UpdateFinishedTrialError):
        storage.set_trial_user_attr(trial_id(done), "k", 1)
    with pytest.raises(KeyError):
        storage.set_trial_param(trial_id(done) + 100, "x", 0.5, DIST)
    trial = study.ask()
    with pytest.raises(TypeError):
        trial.set_user_attr("k", object())  # JSON cannot hold it
    trial.set_user_attr("k", 2)  # and the storage goes on
    study.tell(trial, 2.0)
    assert _user_attrs(tmp_path / "j") == [{}, {"k": 2}]


def _user_attrs(path) -> list[dict]:
    storage = JournalStorage(JournalFileBackend(str(path)))
    return [t.user_attrs for t in storage.get_all_trials(storage.get_all_studies()[0]._study_id)]


def test_held_lines_reach_the_file_with_the_next_read_or_write_and_outlive_a_failed_append(tmp_path):
    path = tmp_path / "j"
    backend = Counting(str(path))
    storage = GroupedJournalStorage(backend)
    study = optuna.create_study(study_name="g", storage=storage)
    trial = study.ask()
    x = trial.suggest_float("x", 0, 1)
    assert _read(path)[0][0] == {}  # held
    storage.get_trial(trial_id(trial))  # this process's next read
    assert _read(path)[0][0] == {"x": x}
    trial.set_user_attr("a", 1)
    backend.fail = 1
    with pytest.raises(OSError):
        trial.report(0.5, 1)  # the write fails, and nothing of it or of the held line is in the file
    assert _read(path)[0][1] == {}
    study.tell(trial, 1.0)
    [(params, attrs, value, state)] = _read(path)
    assert (params, attrs, value, state) == ({"x": x}, {"a": 1}, 1.0, optuna.trial.TrialState.COMPLETE)


def test_a_copy_in_another_process_holds_nothing_of_the_original(tmp_path):
    storage = GroupedJournalStorage(JournalFileBackend(str(tmp_path / "j")))
    study = optuna.create_study(study_name="g", storage=storage)
    trial = study.ask()
    trial.set_user_attr("a", 1)
    copy = pickle.loads(pickle.dumps(storage))
    assert copy.get_trial(trial_id(trial)).user_attrs == {}  # the original's held line is the original's
    study.tell(trial, 1.0)
    assert copy.get_trial(trial_id(trial)).user_attrs == {"a": 1}
