"""``--out`` of every command: an empty path, a file, or a folder of someone else's files is refused
with one line and exit code 2 before anything is written; the folder of an earlier run is accepted."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from nas.cli.proxy_check import main as proxy_check_main
from nas.cli.search import main as search_main
from nas.cluster.storage import storage_files
from nas.search.outputs import OUTPUTS
from scaling.cli import main as grid_main
from search_spaces.files import check_out_dir, is_ours
from search_spaces.interop.cli import main as export_main

COMMANDS = {
    "nas-search": (search_main, ["--trials", "1", "--dry-run"]),
    "nas-grid-scale": (grid_main, ["--dry-run"]),
    "nas-proxy-check": (proxy_check_main, ["--archs", "3"]),
}


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _run(command: str, out: str, capsys) -> tuple[int, str]:
    main, args = COMMANDS[command]
    code = main([*args, "--out", out])
    return code, capsys.readouterr().err.strip()


@pytest.mark.parametrize("command", COMMANDS)
def test_an_empty_out_is_refused(command, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code, err = _run(command, "", capsys)
    assert (code, err) == (2, f"{command}: error: --out must be a folder path, but got ''")
    assert list(tmp_path.iterdir()) == []  # nothing written in the working folder


@pytest.mark.parametrize("command", COMMANDS)
def test_a_folder_of_someone_elses_files_is_refused_and_left_as_it_was(command, tmp_path, capsys):
    folder = tmp_path / "thesis"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine\n")
    (folder / "manifest.json").write_text('{"title": "my own manifest"}\n')
    (folder / "leaderboard.csv").write_text("my,own,table\n")
    before = _snapshot(folder)
    code, err = _run(command, str(folder), capsys)
    assert code == 2 and "\n" not in err, err
    assert "holds files this command did not write" in err and "notes.txt" in err
    assert _snapshot(folder) == before


@pytest.mark.parametrize("command", COMMANDS)
def test_a_file_as_out_is_refused(command, tmp_path, capsys):
    target = tmp_path / "results"
    target.write_text("keep me\n")
    code, err = _run(command, str(target), capsys)
    assert (code, err) == (2, f"{command}: error: --out {str(target)!r} is a file, expected a folder")
    assert target.read_text() == "keep me\n"


def test_the_folder_of_an_earlier_run_is_accepted(tmp_path, capsys):
    out = tmp_path / "grid"
    assert grid_main(["--dry-run", "--out", str(out)]) == 0
    (out / "notes.txt").write_text("the user's own note beside a run\n")
    (out / "manifest.json").write_text(json.dumps({"command": ["nas-grid-scale"], "versions": {"python": "3"}}))
    assert grid_main(["--dry-run", "--out", str(out)]) == 0  # a run of ours, with a note the user added
    assert (out / "notes.txt").read_text() == "the user's own note beside a run\n"


def test_what_counts_as_ours(tmp_path):
    assert not is_ours(tmp_path)
    (tmp_path / "manifest.json").write_text("{}")
    assert not is_ours(tmp_path)  # a manifest, but not one the toolkit wrote
    (tmp_path / "study.journal").write_text("")
    assert is_ours(tmp_path)
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "step.json").write_text("{}")
    assert is_ours(tmp_path / "x")  # a nas-derive step folder
    assert check_out_dir(tmp_path / "new" / "deeper", ()) == tmp_path / "new" / "deeper"
    (tmp_path / "y").mkdir()
    (tmp_path / "y" / "study.journal.lock").write_text("")
    (tmp_path / "y" / "best.yaml.partial").write_text("")
    assert check_out_dir(tmp_path / "y", ("study.journal", "best.yaml")) == tmp_path / "y"  # companions of ours


def test_nas_export_refuses_an_empty_out(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert export_main(["efficientnet-b0", "--out", ""]) == 2
    assert capsys.readouterr().err.strip() == "nas-export: error: --out must be a file or folder path, but got ''"
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("storage, left", [("sqlite:///{out}/study.db", ["study.db", "study.db-journal"]),
                                           ("journal:{out}/grid.journal", ["grid.journal", "grid.journal.lock"])])
def test_a_run_interrupted_before_its_manifest_resumes_with_its_own_storage_file(storage, left, tmp_path):
    """A study file in --out (SQLite, or a journal under another name) is the run's, not someone else's."""
    out = tmp_path / "run"
    out.mkdir()
    for name in left:  # what a first run leaves when it is stopped before writing any output
        (out / name).write_text("")
    assert check_out_dir(out, (*OUTPUTS, *storage_files(storage.format(out=out))), ValueError) == out
    with pytest.raises(ValueError, match="holds files this command did not write"):
        check_out_dir(out, OUTPUTS, ValueError)  # without the storage's files they would be foreign
