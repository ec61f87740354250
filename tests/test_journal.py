"""The study journal survives a torn write, garbage after its end and a full disk; its plain path works too.

Each test first shows what plain Optuna does with the same file (the damage is real), then what
``open_storage`` makes of it. The full-disk test mounts a small tmpfs (as root; skipped otherwise).
"""
from __future__ import annotations

import hashlib
import json
import os
import shlex
import subprocess
import sys
import uuid
from pathlib import Path

import optuna
import pytest
from conftest import CLUSTER_ENV, FAST
from optuna.storages.journal import JournalFileBackend, JournalStorage

from nas.cluster.journal import JournalDamaged, scan_journal
from nas.cluster.storage import dashboard_command, open_storage

NAME = "journal"


def plain(path: Path) -> JournalStorage:
    """What optuna-dashboard and a user's script open for a journal file."""
    return JournalStorage(JournalFileBackend(str(path)))


def make_study(path: Path, trials: int = 3) -> list[float]:
    study = optuna.create_study(study_name=NAME, storage=open_storage(f"journal:{path}", path.parent))
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=trials)
    return [t.value for t in study.trials]


def records(path: Path) -> list[dict]:
    data = path.read_bytes()
    assert data.endswith(b"\n")
    return [json.loads(line) for line in data.splitlines()]


def asides(path: Path) -> list[Path]:
    return sorted(path.parent.glob(f"{path.name}.torn-*"))


def test_a_torn_tail_is_kept_aside_and_cut_before_anything_is_appended(tmp_path):
    path = tmp_path / "study.journal"
    values = make_study(path)
    whole = path.read_bytes()
    last = whole[:-1].rsplit(b"\n", 1)[1] + b"\n"
    fragment = last[: len(last) // 2]  # a write cut short
    path.write_bytes(whole + fragment)

    control = tmp_path / "control.journal"  # plain Optuna resumes after the fragment: the study is destroyed
    control.write_bytes(whole + fragment)
    resumed = optuna.load_study(study_name=NAME, storage=plain(control))
    resumed.set_user_attr("first", 1)  # lands on the fragment's line
    with pytest.raises(ValueError):  # the next write makes that a middle line: nothing reads the study any more
        resumed.set_user_attr("second", 2)
    with pytest.raises(ValueError):
        optuna.load_study(study_name=NAME, storage=plain(control))

    study = optuna.load_study(study_name=NAME, storage=open_storage(f"journal:{path}", tmp_path))
    [aside] = asides(path)
    assert aside.read_bytes() == fragment and path.read_bytes() == whole
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    reread = optuna.load_study(study_name=NAME, storage=plain(path)).trials
    assert [t.value for t in reread[:3]] == values and len(reread) == 5
    assert scan_journal(path.read_bytes())[1] == 0 and len(records(path)) > 0


def test_garbage_appended_is_kept_aside_and_cut(tmp_path):
    path = tmp_path / "study.log"  # a plain path ending in .log is a journal too
    values = make_study(path)
    whole = path.read_bytes()
    garbage = b"\x00\xff not a record\n{\"half\": \n\n\x1b[2J"
    path.write_bytes(whole + garbage)
    with pytest.raises(ValueError):  # plain Optuna cannot read it
        optuna.load_study(study_name=NAME, storage=plain(path))
    study = optuna.load_study(study_name=NAME, storage=open_storage(str(path), tmp_path))
    assert [t.value for t in study.trials] == values
    [aside] = asides(path)
    assert aside.read_bytes() == garbage and path.read_bytes() == whole
    assert [t.value for t in optuna.load_study(study_name=NAME, storage=plain(path)).trials] == values


def test_a_clean_journal_is_left_alone(tmp_path):
    path = tmp_path / "study.journal"
    make_study(path)
    before = path.read_bytes()
    open_storage(None, tmp_path)
    assert path.read_bytes() == before and not asides(path)


def test_a_damaged_middle_is_refused_and_left_untouched(tmp_path):
    """A broken line followed by complete records (what a resume of the old release made of a torn tail)."""
    path = tmp_path / "study.journal"
    make_study(path)
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join(lines[:3]) + lines[3][:10] + b"".join(lines[3:]))
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    with pytest.raises(JournalDamaged) as info:
        open_storage(f"journal:{path}", tmp_path)
    assert "line 4 is not a complete record" in str(info.value) and "\n" not in str(info.value)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == digest and not asides(path)


def test_a_journal_directory_is_refused_with_one_line(tmp_path):
    from nas.config import ConfigError

    with pytest.raises(ConfigError, match="is a directory, expected a journal file"):
        open_storage(f"journal:{tmp_path}", tmp_path)


@pytest.mark.parametrize("form", ["journal:{}", "{}"])
@pytest.mark.parametrize("name", ["study.journal", "study.log"])
def test_the_dashboard_command_opens_the_study(form, name, tmp_path):
    """The summary's optuna-dashboard command: its storage argument is the plain path, opened as the dashboard does."""
    path = tmp_path / name
    storage = form.format(path)
    study = optuna.create_study(study_name=NAME, storage=open_storage(storage, tmp_path))
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    values = [t.value for t in study.trials]
    argv = shlex.split(dashboard_command(storage, tmp_path))
    assert argv[0] == "optuna-dashboard" and len(argv) == 2 and not argv[1].startswith("journal:")
    assert os.path.isfile(argv[1])  # optuna-dashboard opens an existing file as a journal
    assert [t.value for t in optuna.load_study(study_name=NAME, storage=plain(Path(argv[1]))).trials] == values


def test_the_default_journal_and_the_dashboard_line(tmp_path):
    from nas.cluster.storage import dashboard_line

    make_study(tmp_path / "study.journal")
    assert dashboard_line(None, tmp_path) == f"dashboard: optuna-dashboard {tmp_path.resolve() / 'study.journal'}"
    assert dashboard_line("memory", tmp_path).startswith("dashboard: none")


# --- a full disk ------------------------------------------------------------------------------------

def fill(mount: Path, leave: int) -> Path:
    """Fill ``mount`` until about ``leave`` bytes are free."""
    filler = mount / f"filler-{uuid.uuid4().hex}"
    stat = os.statvfs(mount)
    free = stat.f_bavail * stat.f_frsize
    with open(filler, "wb") as f:
        f.write(b"\0" * max(0, free - leave))
    return filler


def test_append_to_a_full_disk_is_undone(small_tmpfs):
    from nas.cluster.journal import JournalWriteError

    path = small_tmpfs / "study.journal"
    values = make_study(path, trials=2)
    filler = fill(small_tmpfs, 4096)
    study = optuna.load_study(study_name=NAME, storage=open_storage(f"journal:{path}", small_tmpfs))
    before = path.read_bytes()
    with pytest.raises(JournalWriteError) as info:
        for _ in range(200):  # each trial a few hundred bytes: the disk fills within a page or two
            study.enqueue_trial({"x": 0.5}, user_attrs={"pad": "p" * 1000})
    assert "No space left on device (ENOSPC)" in str(info.value) and "\n" not in str(info.value)
    assert path.read_bytes().startswith(before) and scan_journal(path.read_bytes())[1] == 0
    assert [t.value for t in optuna.load_study(study_name=NAME, storage=plain(path)).trials][:2] == values
    filler.unlink()


@pytest.mark.slow  # two nas-search runs, ~30 s
def test_a_full_disk_ends_the_run_with_exit_3_and_the_journal_readable(small_tmpfs, tmp_path):
    path = small_tmpfs / "study.journal"
    args = [sys.executable, "-m", "nas.cli.search", *FAST, "--trials", "2", "--storage", f"journal:{path}",
            "--out", str(tmp_path / "run"), "--quiet"]
    env = {**os.environ, **CLUSTER_ENV}
    filler = fill(small_tmpfs, 16 * 1024)  # room for the study and part of a trial
    run = subprocess.run(args, capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 3, run.stderr[-3000:]
    assert "Traceback" not in run.stderr, run.stderr[-3000:]
    last = run.stderr.strip().splitlines()[-1]
    assert last.startswith(f"nas-search: error: cannot write the study journal {path}: No space left on device")
    assert scan_journal(path.read_bytes())[1] == 0  # no torn tail
    optuna.load_study(study_name="nas-search", storage=plain(path))  # plain Optuna reads it
    filler.unlink()  # space again: the same command resumes and finishes
    again = subprocess.run(args, capture_output=True, text=True, env=env, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    study = optuna.load_study(study_name="nas-search", storage=plain(path))
    assert sum(t.state == optuna.trial.TrialState.COMPLETE and bool(t.user_attrs.get("trained"))
               for t in study.trials) >= 2
    assert not any(t.state == optuna.trial.TrialState.RUNNING for t in study.trials)


@pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed to be used with Study.optimize")
def test_the_journal_lists_the_trials_plain_optuna_lists(tmp_path):
    """``LeasedJournalStorage.get_all_trials`` reads only past the finished head: the same lists (the same
    objects) as plain Optuna's full read, for every state filter, with another process's trials and a long tail."""
    path = tmp_path / "study.journal"
    ours = open_storage(f"journal:{path}", tmp_path)
    study = optuna.create_study(study_name=NAME, storage=ours)
    other = optuna.load_study(study_name=NAME, storage=plain(path))  # another worker, writing the same file
    sid = study._study_id
    filters = [None, (optuna.trial.TrialState.RUNNING,), (optuna.trial.TrialState.WAITING,),
               (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.RUNNING)]

    def check() -> None:
        for states in filters:
            got = ours.get_all_trials(sid, deepcopy=False, states=states)
            want = JournalStorage.get_all_trials(ours, sid, deepcopy=False, states=states)
            assert [t.number for t in got] == [t.number for t in want] and all(a is b for a, b in zip(got, want))
        assert ours.get_all_trials(sid, states=filters[1]) == JournalStorage.get_all_trials(ours, sid,
                                                                                           states=filters[1])
    check()  # no trial yet
    running = [study.ask(), other.ask()]
    for i in range(40):  # a tail longer than the one read trial by trial, then short ones
        if i % 10 == 3:
            other.enqueue_trial({"x": 0.5})
        (study if i % 2 else other).tell((study if i % 2 else other).ask(), i % 3 if i % 7 else None,
                                         state=None if i % 7 else optuna.trial.TrialState.FAIL)
        if i > 30:
            check()
    check()
    study.tell(running[0], 1.0)
    other.tell(running[1], state=optuna.trial.TrialState.PRUNED)
    while other.get_trials(states=(optuna.trial.TrialState.WAITING,)):
        other.tell(other.ask(), 0.5)
    check()
    for i in range(4):  # short tails, read trial by trial
        trial = (other if i % 2 else study).ask()
        check()
        (other if i % 2 else study).tell(trial, 0.1 * i)
        check()
    optuna.delete_study(study_name=NAME, storage=plain(path))
    with pytest.raises(KeyError):
        ours.get_all_trials(sid)
