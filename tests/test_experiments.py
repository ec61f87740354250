"""Every shipped experiment config is valid: ``--dry-run`` of its command plans it and exits 0."""
from __future__ import annotations

from pathlib import Path

import pytest

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"
SEARCH = sorted(p for p in EXPERIMENTS.rglob("*.yaml") if not p.name.startswith(("grid", "derive")))
GRID = sorted(EXPERIMENTS.rglob("grid*.yaml"))


def test_there_are_configs():
    assert len(SEARCH) >= 4 and len(GRID) >= 2


@pytest.mark.parametrize("path", SEARCH, ids=lambda p: str(p.relative_to(EXPERIMENTS)))
def test_search_config_plans(path: Path, tmp_path, capsys):
    from nas.cli.search import main

    assert main(["--config", str(path), "--dry-run", "--out", str(tmp_path / "run")]) == 0
    out = capsys.readouterr().out
    assert "objective" in out and "budget" in out
    assert not (tmp_path / "run").exists()  # a dry run writes nothing


@pytest.mark.parametrize("path", GRID, ids=lambda p: str(p.relative_to(EXPERIMENTS)))
def test_grid_config_plans(path: Path, tmp_path, capsys):
    from scaling.cli import main

    assert main(["--config", str(path), "--dry-run", "--out", str(tmp_path / "run")]) == 0
    assert "candidates.csv" in capsys.readouterr().out
