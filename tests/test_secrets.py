"""Storage passwords are never printed or written: ``mask_url``, and real runs whose every output is searched.

Each run gets a storage URL holding a password in one of the forms libpq and SQLAlchemy accept
(``user:pw@host``, ``?password=``, a password with ``/`` and ``@``) and the test then greps its
stdout, stderr, every file under ``--out`` and every attribute of the study for any piece of it.
"""
from __future__ import annotations

import itertools
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote

import pg
import pytest
from conftest import CLUSTER_ENV, FAST
from sqlalchemy.engine import make_url

from nas.config import ConfigError, check_url, mask_url, public_dict
from nas.search.config import SearchConfig

_names = itertools.count()
# (form, password, how the password is written in the URL): each password's pieces are distinctive
FORMS = [
    ("userinfo", "Sw0rdfishAlpha", "{user}:{pw}@{host}/{db}"),
    ("query", "QuerYsecretBeta", "{user}@{host}/{db}?password={pw}"),
    ("slash-and-at", "Sl4shy/Atmark@Cee3", "{user}:{pw_slash}@{host}/{db}"),  # '/' raw, '@' as %40
]
UNREACHABLE = "127.0.0.1:1"  # nothing listens on port 1


def _url(form: str, password: str, host: str, db: str, user: str = "nas") -> str:
    template = next(t for f, _, t in FORMS if f == form)
    encoded = quote(password, safe="/") if form == "slash-and-at" else quote(password, safe="")
    return "postgresql://" + template.format(user=user, pw=encoded, pw_slash=encoded, host=host, db=db)


def _pieces(password: str) -> set[str]:
    """The password, its percent-encoded forms, and every piece of it between '/' and '@' (4+ characters)."""
    pieces = {password, quote(password, safe=""), quote(password, safe="/")}
    return pieces | {p for p in re.split(r"[/@]", password) if len(p) >= 4}


def _leaks(texts: dict[str, bytes], password: str) -> list[str]:
    return sorted(f"{where}: {piece!r}" for where, text in texts.items() for piece in _pieces(password)
                  if piece.encode() in text)


def _outputs(done: subprocess.CompletedProcess, out: Path) -> dict[str, bytes]:
    texts = {"stdout": done.stdout.encode(), "stderr": done.stderr.encode()}
    texts.update({str(p.relative_to(out)): p.read_bytes() for p in out.rglob("*") if p.is_file()} if out.exists()
                 else {})
    return texts


def _run(module: str, args: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, **CLUSTER_ENV, "NAS_STORAGE_RETRY_SECONDS": "2"}
    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, timeout=600,
                          env=env, cwd=tmp_path)


# --- mask_url -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("url", "masked"), [
    ("postgresql://u:secret@h:5432/db", "postgresql://u:***@h:5432/db"),
    ("postgresql+psycopg://u:secret@h/db", "postgresql+psycopg://u:***@h/db"),
    ("postgresql://u@h/db?password=secret&sslmode=require", "postgresql://u@h/db?password=***&sslmode=require"),
    ("postgresql://u:one@h/db?sslpassword=two", "postgresql://u:***@h/db?sslpassword=***"),
    ("postgresql://u:se/cr@t@h/db", "postgresql://u:***@h/db"),  # raw '/' and '@': up to the last '@'
    ("postgresql://u:se%2Fcr%40t@h/db", "postgresql://u:***@h/db"),
    ("postgresql://u:p?q@h/db", "postgresql://u:***@h/db"),
    ("mysql://:secret@h/db", "mysql://:***@h/db"),
    ("--storage=postgresql://u:secret@h/db", "--storage=postgresql://u:***@h/db"),
    ("cannot open 'postgresql://u:secret@h/db': refused", "cannot open 'postgresql://u:***@h/db': refused"),
    ("host=h password=secret dbname=x", "host=h password=*** dbname=x"),
    ("journal:runs/x/study.journal", "journal:runs/x/study.journal"),
    ("sqlite:////tmp/runs/x.db", "sqlite:////tmp/runs/x.db"),
    ("postgresql://u@h:5432/db", "postgresql://u@h:5432/db"),
    ("runs/nas-search", "runs/nas-search"),
    ("", ""),
])
def test_mask_url(url: str, masked: str) -> None:
    assert mask_url(url) == masked and "secret" not in mask_url(url)


@pytest.mark.parametrize("url", ["postgresql://u:secret@h:5432/db", "postgresql+psycopg://nas:s3cret-pw@127.0.0.1:5/d",
                                 "postgresql://u:se%2Fcr%40t@h/db", "mysql://a:b@c/d?charset=utf8"])
def test_mask_url_shows_what_sqlalchemy_hides(url: str) -> None:
    """On ordinary URLs the result is SQLAlchemy's own ``render_as_string(hide_password=True)``."""
    assert mask_url(url) == make_url(url).render_as_string(hide_password=True)


def test_mask_url_where_sqlalchemy_would_show_part_of_the_password() -> None:
    url = "postgresql://u:p@ssword@h/db"  # SQLAlchemy: password 'p', host 'ssword@h'
    assert "ssword" in make_url(url).render_as_string(hide_password=True)
    assert "ssword" not in mask_url(url)


@pytest.mark.parametrize("text", ["://", "a://@", "x://:@?&=", "p://u:@@@/?password", "\x00://\udcff", "://" * 1000])
def test_mask_url_never_raises(text: str) -> None:
    assert isinstance(mask_url(text), str)


def test_public_config_masks_every_url() -> None:
    cfg = SearchConfig(storage="postgresql://u@h/db?password=hunter22", train={"note": "postgresql://a:hunter33@h/x"})
    data = json.dumps(public_dict(cfg))
    assert "hunter22" not in data and "hunter33" not in data and "password=***" in data


def test_a_raw_at_sign_in_the_password_is_refused_before_connecting() -> None:
    check_url("postgresql://u:se/cret@h/db")  # a raw '/' is fine
    with pytest.raises(ConfigError, match=r"'postgresql://u:\*\*\*@h/db': the password holds a raw '@'.*%40") as err:
        check_url("postgresql://u:sec@ret@h/db")
    assert "sec@ret" not in str(err.value) and "ret@h" not in str(err.value)


# --- real runs ---------------------------------------------------------------------------------------------

GIVEN = ["--alpha", "1.2", "--beta", "1.1", "--gamma", "1.15", "--phi", "1..2"]


@pytest.mark.parametrize(("form", "password"), [(f, p) for f, p, _ in FORMS] + [("raw-at", "R4wAtsign@Hidden9")])
def test_grid_scale_with_given_coefficients_writes_no_password(tmp_path: Path, form: str, password: str) -> None:
    """nas-grid-scale with given coefficients never opens the storage, but prints and records it."""
    url = (f"postgresql://nas:{password}@{UNREACHABLE}/db" if form == "raw-at"
           else _url(form, password, UNREACHABLE, "db"))
    done = _run("scaling.cli", [*GIVEN, "--storage", url, "--out", str(tmp_path / "out")], tmp_path)
    assert done.returncode == 0, done.stderr
    texts = _outputs(done, tmp_path / "out")
    assert {"manifest.json", "coefficients.yaml", "variants.csv"} <= set(texts)
    assert _leaks(texts, password) == []
    assert b"***" in texts["manifest.json"]  # the storage is recorded, masked


@pytest.mark.parametrize(("form", "password"), [(f, p) for f, p, _ in FORMS] + [("raw-at", "R4wAtsign@Hidden9")])
def test_search_on_an_unreachable_storage_prints_no_password(tmp_path: Path, form: str, password: str) -> None:
    url = (f"postgresql://nas:{password}@{UNREACHABLE}/db" if form == "raw-at"
           else _url(form, password, UNREACHABLE, "db"))
    done = _run("nas.cli.search", [*FAST, "--trials", "1", "--storage", url, "--out", str(tmp_path / "out")], tmp_path)
    # 2: cannot be opened (refused at the start, or the raw '@' refused before connecting); 3: stayed unreachable
    assert done.returncode in (2, 3), done.stderr
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr and "***" in done.stderr
    assert _leaks(_outputs(done, tmp_path / "out"), password) == []
    if form == "raw-at":
        assert "the password holds a raw '@'" in done.stderr


def _role_and_database(server: pg.PgServer, password: str) -> tuple[str, str]:
    n = f"{os.getpid()}_{next(_names)}"
    role, db = f"secret_{n}", f"secret_db_{n}"
    escaped = password.replace("'", "''")
    server._sql(f"CREATE ROLE {role} LOGIN PASSWORD '{escaped}'")
    server._sql(f"CREATE DATABASE {db} OWNER {role}")
    return role, db


def _study_attributes(url: str) -> bytes:
    """Every study's and trial's user and system attributes (the storage's own API: FrozenStudy, FrozenTrial)."""
    import optuna

    storage = optuna.storages.RDBStorage(url)
    try:
        dumped = [{"name": s.study_name, "user": s.user_attrs, "system": s.system_attrs,
                   "trials": [{"user": t.user_attrs, "system": t.system_attrs, "params": t.params} for t in
                              optuna.load_study(study_name=s.study_name, storage=storage).get_trials(deepcopy=False)]}
                  for s in storage.get_all_studies()]
    finally:
        storage.engine.dispose()
    return json.dumps(dumped, default=str).encode()


@pytest.mark.slow
@pytest.mark.parametrize(("form", "password"), [(f, p) for f, p, _ in FORMS])
def test_search_on_postgresql_writes_no_password(pg_server, tmp_path: Path, form: str, password: str) -> None:
    """A real two-trial search on the test PostgreSQL, logged in with the password in each form."""
    role, db = _role_and_database(pg_server, password)
    url = _url(form, password, f"127.0.0.1:{pg_server.port}", db, user=role)
    out = tmp_path / "out"
    done = _run("nas.cli.search", [*FAST, "--trials", "2", "--storage", url, "--out", str(out)], tmp_path)
    assert done.returncode == 0, done.stderr
    texts = _outputs(done, out)
    assert {"manifest.json", "leaderboard.csv", "best.yaml"} <= set(texts)
    texts["study attributes"] = _study_attributes(url)
    assert b'"reward"' in texts["study attributes"]  # the trials were found there
    assert _leaks(texts, password) == []
    manifest = json.loads(texts["manifest.json"])
    assert "***" in json.dumps(manifest) and role in json.dumps(manifest)  # recorded, with the password masked
