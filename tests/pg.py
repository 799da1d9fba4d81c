"""A throw-away PostgreSQL server for the tests (no Docker needed).

``PostgresServer.start()`` runs Debian's PostgreSQL binaries (``/usr/lib/postgresql/15/bin``; other
major versions there are used if 15 is absent) as the ``postgres`` OS user when the tests run as
root (PostgreSQL refuses to run as root), with the cluster, log and unix socket inside one temp
folder. It listens on 127.0.0.1 on a free port with ``fsync=off``; local-socket logins are trusted
(the admin connection), TCP logins need a password (scram-sha-256), so the tests exercise real
password handling with the role ``hps`` / ``s3cr:t@pw``.

If no binaries are found, postgresql-15 is installed through tests/syspkgs.py (under pytest the
session hook in tests/conftest.py has already done it, with every other package); if that fails,
:class:`PostgresUnavailable` is raised and the fixture FAILS (CI runs every PostgreSQL test; a skip
would hide a broken setup).
"""

from __future__ import annotations

import atexit
import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from urllib.parse import quote

try:
    from tests import syspkgs
except ImportError:  # pragma: no cover - rootdir not on sys.path
    import syspkgs  # type: ignore[no-redef]

__all__ = ["PostgresServer", "PostgresUnavailable", "find_pg_bin", "ensure_pg_bin", "connections_by_process"]

PG_VERSION = "15"
USER = "hps"
PASSWORD = "s3cr:t@pw/%?#&"
ADMIN = "postgres"
_BIN_ENV = "HPSEARCH_PG_BIN"  # override: a folder holding initdb and pg_ctl

_apt_tried = False


class PostgresUnavailable(RuntimeError):
    """No PostgreSQL server binaries could be found or installed."""


def find_pg_bin() -> Path | None:
    """The folder with ``initdb`` and ``pg_ctl``: $HPSEARCH_PG_BIN, version 15, newest other."""
    candidates: list[str] = []
    if os.environ.get(_BIN_ENV):
        candidates.append(os.environ[_BIN_ENV])
    candidates.append(f"/usr/lib/postgresql/{PG_VERSION}/bin")
    others = glob.glob("/usr/lib/postgresql/*/bin")
    others.sort(key=lambda p: int(Path(p).parent.name) if Path(p).parent.name.isdigit() else 0)
    candidates.extend(reversed(others))
    initdb = shutil.which("initdb")
    if initdb:
        candidates.append(str(Path(initdb).parent))
    for folder in candidates:
        if (Path(folder) / "initdb").is_file() and (Path(folder) / "pg_ctl").is_file():
            return Path(folder)
    return None


def ensure_pg_bin() -> Path:
    """Find the binaries; if absent, install postgresql-15 through tests/syspkgs (the one shared,
    locked apt-get call that tests/conftest.py already made for the whole session under pytest)."""
    global _apt_tried
    found = find_pg_bin()
    if found is not None:
        return found
    if not _apt_tried:
        _apt_tried = True
        try:
            syspkgs.ensure([f"postgresql-{PG_VERSION}"])
        except syspkgs.AptFailed as exc:
            raise PostgresUnavailable(str(exc)) from None
        found = find_pg_bin()
        if found is not None:
            return found
    raise PostgresUnavailable(
        f"PostgreSQL server binaries not found (looked in /usr/lib/postgresql/*/bin, PATH and "
        f"${_BIN_ENV}); install postgresql-{PG_VERSION} (apt-get install -y postgresql-{PG_VERSION})"
    )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run_user() -> str | None:
    """The OS user to run the server as (None: the current user, when not root)."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            continue
    raise PostgresUnavailable("running as root but there is no 'postgres' (or 'nobody') OS user")


class PostgresServer:
    """One PostgreSQL cluster in a temp folder. Use :meth:`start` / :meth:`close`."""

    def __init__(self) -> None:
        self.bin = ensure_pg_bin()
        self.user = USER
        self.password = PASSWORD
        self.host = "127.0.0.1"
        self.port = 0
        self.run_as = _run_user()
        self.base = Path(tempfile.mkdtemp(prefix="hpsearch-pg-"))
        self.data = self.base / "data"
        self.sock = self.base / "sock"
        self.log = self.base / "server.log"
        self.sock.mkdir()
        if self.run_as is not None:
            pw = pwd.getpwnam(self.run_as)
            for p in (self.base, self.sock):
                os.chown(p, pw.pw_uid, pw.pw_gid)
        os.chmod(self.base, 0o700)
        self._running = False
        self._closed = False
        atexit.register(self.close)

    # -- process control -------------------------------------------------------------------------

    def _cmd(self, *args: str) -> list[str]:
        cmd = [str(self.bin / args[0]), *args[1:]]
        if self.run_as is not None:
            cmd = ["runuser", "-u", self.run_as, "--", *cmd]
        return cmd

    def _check(self, *args: str, timeout: float = 120) -> None:
        proc = subprocess.run(
            self._cmd(*args), capture_output=True, text=True, timeout=timeout, cwd=self.base
        )
        if proc.returncode != 0:
            log = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
            raise PostgresUnavailable(
                f"{' '.join(args[:2])} failed ({proc.returncode}): {proc.stderr.strip()}\n{log}"
            )

    def _options(self) -> str:
        return (
            f"-p {self.port} -k {self.sock} -c listen_addresses={self.host} -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off -c max_connections=300 "
            "-c shared_buffers=32MB"
        )

    def start(self) -> PostgresServer:
        """initdb on first use, then start the server and wait until it accepts connections."""
        if self._running:
            return self
        first = not self.data.exists()
        if first:
            self._check(
                "initdb", "-D", str(self.data), "-U", ADMIN, "--auth-local=trust",
                "--auth-host=scram-sha-256", "-E", "UTF8", "--locale=C", "--no-sync",
                "--no-instructions",
            )
        for attempt in range(3):
            if first or not self.port:
                self.port = _free_port()
            try:
                self._check(
                    "pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60",
                    "-o", self._options(), "start",
                )
                break
            except PostgresUnavailable:
                if attempt == 2 or not first:
                    raise
                time.sleep(0.2)  # the free port was taken meanwhile: pick another
        self._running = True
        if first:
            self._bootstrap()
        return self

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (``mode``: smart, fast or immediate); the cluster is kept."""
        if self._running:
            self._check("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")
            self._running = False

    def restart(self, mode: str = "fast", down_for: float = 0.0) -> None:
        """Stop, optionally stay down ``down_for`` seconds, start again on the same port."""
        self.stop(mode)
        if down_for:
            time.sleep(down_for)
        self.start()

    def close(self) -> None:
        """Stop immediately and delete the temp folder (idempotent; also run at exit)."""
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(Exception):  # best effort at teardown
            self.stop("immediate")
        shutil.rmtree(self.base, ignore_errors=True)

    # -- SQL -------------------------------------------------------------------------------------

    def admin(self, dbname: str = "postgres"):
        """An autocommit psycopg connection as the superuser over the unix socket."""
        import psycopg

        return psycopg.connect(
            host=str(self.sock), port=self.port, user=ADMIN, dbname=dbname, autocommit=True
        )

    def _bootstrap(self) -> None:
        from psycopg import sql

        with self.admin() as conn:
            conn.execute(
                sql.SQL("CREATE ROLE {} LOGIN CREATEDB PASSWORD {}").format(
                    sql.Identifier(self.user), sql.Literal(self.password)
                )
            )

    def create_database(self, name: str | None = None) -> str:
        """Create an empty database owned by ``hps``; return its name."""
        from psycopg import sql

        name = name or f"t_{uuid.uuid4().hex[:12]}"
        with self.admin() as conn:
            conn.execute(
                sql.SQL("CREATE DATABASE {} OWNER {}").format(
                    sql.Identifier(name), sql.Identifier(self.user)
                )
            )
        return name

    def drop_database(self, name: str) -> None:
        from psycopg import sql

        with self.admin() as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))

    def tables(self, dbname: str) -> list[str]:
        """Names of the tables in ``dbname``'s public schema (to assert nothing was written)."""
        with self.admin(dbname) as conn:
            rows = conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1"
            ).fetchall()
        return [r[0] for r in rows]

    def url(self, dbname: str, *, password: bool = True, driver: str = "postgresql+psycopg") -> str:
        """The SQLAlchemy URL of ``dbname`` as ``hps`` (password URL-encoded unless dropped)."""
        auth = self.user
        if password:
            auth += ":" + quote(self.password, safe="")
        return f"{driver}://{auth}@{self.host}:{self.port}/{dbname}"


def connections_by_process(server: PostgresServer, dbname: str) -> dict[int | None, int]:
    """Open connections to ``dbname`` per local client process id, from ``pg_stat_activity``.

    Each backend's ``client_port`` is matched to the local TCP socket with that port
    (/proc/net/tcp*) and the socket to the process holding it (/proc/PID/fd); a backend whose client
    is not found (it just closed) counts under None. Linux only.
    """
    with server.admin() as conn:
        ports = [r[0] for r in conn.execute(
            "SELECT client_port FROM pg_stat_activity WHERE datname = %s AND client_port IS NOT NULL", (dbname,)
        ).fetchall()]
    inode_port: dict[str, int] = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as f:
            for line in f.read().splitlines()[1:]:
                cols = line.split()
                inode_port[cols[9]] = int(cols[1].rsplit(":", 1)[1], 16)
    port_pid: dict[int, int] = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{pid}/fd"):
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
                if link.startswith("socket:[") and link[8:-1] in inode_port:
                    port_pid[inode_port[link[8:-1]]] = int(pid)
    out: dict[int | None, int] = {}
    for port in ports:
        pid = port_pid.get(port)
        out[pid] = out.get(pid, 0) + 1
    return out
