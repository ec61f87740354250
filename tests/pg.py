"""A throwaway PostgreSQL server for tests: initdb in a temporary directory, loopback only.

Debian's ``postgresql`` package (``scripts/setup.sh`` installs it) puts the server binaries in
``/usr/lib/postgresql/<version>/bin``. ``initdb`` refuses to run as root, so as root the server
runs as the ``postgres`` user. Clients log in over TCP on 127.0.0.1 as ``nas`` with a password
(so tests see a password in the storage URL); the superuser uses the Unix socket in the
temporary directory. Durability is off (``fsync``): this server only ever holds test studies.
"""
from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

PASSWORD = "s3cret-pw"
USER = "nas"


def find_bindir() -> str | None:
    """The directory of ``initdb`` and ``pg_ctl``: ``$PG_BINDIR``, Debian's layout, or ``PATH``."""
    candidates = [os.environ.get("PG_BINDIR", "")] + sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)
    for d in candidates:
        if d and os.path.isfile(os.path.join(d, "initdb")) and os.path.isfile(os.path.join(d, "pg_ctl")):
            return d
    initdb = shutil.which("initdb")
    return os.path.dirname(initdb) if initdb and shutil.which("pg_ctl") else None


def why_unavailable() -> str | None:
    """None when a server can be started here, else the reason (for ``pytest.skip``)."""
    if find_bindir() is None:
        return "PostgreSQL server binaries (initdb, pg_ctl) not found: apt-get install postgresql (scripts/setup.sh)"
    if os.geteuid() == 0:
        try:
            import pwd

            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root and there is no 'postgres' user to run the server as"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PgServer:
    """One server: ``start`` (initdb on first use), ``stop``, ``url(db)``, ``create_database``, ``destroy``."""

    def __init__(self) -> None:
        self.bindir = find_bindir()
        if self.bindir is None:
            raise RuntimeError(why_unavailable())
        self.root = Path(tempfile.mkdtemp(prefix="nas-pg-"))
        self.data, self.log = self.root / "data", self.root / "server.log"
        self.port = free_port()
        self._as_postgres = os.geteuid() == 0
        if self._as_postgres:
            shutil.chown(self.root, "postgres")
        self._initialized = False

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        cmd = [os.path.join(self.bindir, args[0]), *args[1:]]
        if self._as_postgres:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        return subprocess.run(cmd, check=check, capture_output=True, text=True, timeout=120, cwd=self.root)

    def start(self) -> "PgServer":
        if not self._initialized:
            self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth-local=trust",
                      "--auth-host=scram-sha-256", "--no-sync", "-E", "UTF8")
            self._initialized = True
        opts = (f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off "
                "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200")
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", opts, "-w", "-t", "60", "start")
        if not getattr(self, "_user_made", False):
            self._sql(f"CREATE ROLE {USER} LOGIN PASSWORD '{PASSWORD}' CREATEDB")
            self._user_made = True
        return self

    def stop(self, mode: str = "fast") -> None:
        if self.data.exists():
            self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop", check=False)

    def running(self) -> bool:
        return self._run("pg_ctl", "-D", str(self.data), "status", check=False).returncode == 0

    def _sql(self, statement: str) -> None:
        import psycopg

        with psycopg.connect(host=str(self.root), port=self.port, user="postgres", dbname="postgres",
                             autocommit=True, connect_timeout=10) as conn:
            conn.execute(statement)

    def create_database(self, name: str) -> str:
        """A new empty database owned by ``nas``; its storage URL (with the password)."""
        self._sql(f"CREATE DATABASE {name} OWNER {USER}")
        return self.url(name)

    def url(self, db: str) -> str:
        return f"postgresql://{USER}:{PASSWORD}@127.0.0.1:{self.port}/{db}"

    def destroy(self) -> None:
        """Stop the server (immediately) and delete its files."""
        try:
            self.stop("immediate")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


def wait_until(predicate, timeout: float, poll: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(poll)
    return predicate()
