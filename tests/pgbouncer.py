"""A throw-away PgBouncer in front of the test PostgreSQL (tests/pg.py), in transaction-pooling mode.

``PgBouncer(server).start()`` writes an ini file and a userlist into a temp folder, runs Debian's
``pgbouncer`` (installed by the session hook of tests/conftest.py through tests/syspkgs.py) in the
foreground (a child of the test process) as the ``postgres`` OS user when we are root (it refuses to
run as root), on 127.0.0.1 and a free port, and waits until it accepts connections. Clients log in
with the same role and password as on the server (scram-sha-256; the password is kept in the
userlist, which PgBouncer also uses to log in to the server). ``close()`` ends the process by its
pid and deletes the folder.

PgBouncer is single-threaded and, in the foreground, writes every log line to stderr as well as to
its logfile: its stderr goes to a file (``stderr.log``), never to a pipe. A pipe that nobody reads
fills after 64 KiB of log (a few hundred logins) and the blocked ``write`` freezes the pooler with
every client waiting for answers it holds (the 256-client hang of benchmarks/bench_scale.py).
The role is an admin of the console (``psql -h HOST -p PORT -U ROLE pgbouncer``, ``SHOW POOLS``).
"""

from __future__ import annotations

import atexit
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from urllib.parse import quote

try:
    from tests import syspkgs
    from tests.pg import PostgresServer, PostgresUnavailable
except ImportError:  # pragma: no cover - rootdir not on sys.path
    import syspkgs  # type: ignore[no-redef]
    from pg import PostgresServer, PostgresUnavailable  # type: ignore[no-redef]

__all__ = ["PgBouncer"]


def _binary() -> str:
    syspkgs.ensure(["pgbouncer"])
    for folder in (None, "/usr/sbin"):
        found = shutil.which("pgbouncer", path=folder)
        if found:
            return found
    raise PostgresUnavailable("pgbouncer is not installed (apt-get install -y pgbouncer)")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PgBouncer:
    """One PgBouncer process with ``pool_mode = transaction`` and ``pool_size`` server connections
    per database, in front of ``server``."""

    def __init__(self, server: PostgresServer, pool_size: int = 4) -> None:
        self.server, self.pool_size = server, pool_size
        self.host, self.port = "127.0.0.1", 0
        self.base = Path(tempfile.mkdtemp(prefix="hpsearch-pgbouncer-"))
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = self.base / "pgbouncer.log"
        self.stderr = self.base / "stderr.log"
        atexit.register(self.close)

    def _write_config(self) -> Path:
        users = self.base / "userlist.txt"
        esc = self.server.password.replace('"', '""')
        users.write_text(f'"{self.server.user}" "{esc}"\n')
        ini = self.base / "pgbouncer.ini"
        ini.write_text(
            "[databases]\n"
            f"* = host={self.server.host} port={self.server.port}\n"
            "[pgbouncer]\n"
            f"listen_addr = {self.host}\nlisten_port = {self.port}\nunix_socket_dir =\n"
            f"auth_type = scram-sha-256\nauth_file = {users}\n"
            "pool_mode = transaction\n"
            f"default_pool_size = {self.pool_size}\nmin_pool_size = 0\nreserve_pool_size = 0\n"
            "max_client_conn = 500\nserver_reset_query =\n"
            f"admin_users = {self.server.user}\n"
            "ignore_startup_parameters = extra_float_digits,options\n"
            f"logfile = {self.log}\n"
        )
        if os.geteuid() == 0:
            pw = pwd.getpwnam("postgres")
            for p in (self.base, users, ini):
                os.chown(p, pw.pw_uid, pw.pw_gid)
        os.chmod(users, 0o600)
        return ini

    def start(self) -> PgBouncer:
        binary = _binary()
        self.port = _free_port()
        cmd = [binary, str(self._write_config())]
        as_user: dict[str, object] = {}
        if os.geteuid() == 0:
            pw = pwd.getpwnam("postgres")
            as_user = {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": []}
        with self.stderr.open("wb") as err_file:  # not a pipe: see the module docstring
            self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err_file, **as_user)  # type: ignore[call-overload]
        end = time.monotonic() + 30
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                err = self.stderr.read_text(errors="replace")
                log = self.log.read_text(errors="replace") if self.log.exists() else ""
                raise PostgresUnavailable(f"pgbouncer exited ({self.proc.returncode}): {err[-1500:]} {log[-1500:]}")
            with socket.socket() as s:
                if s.connect_ex((self.host, self.port)) == 0:
                    return self
            time.sleep(0.05)
        self.close()
        raise PostgresUnavailable("pgbouncer did not accept connections within 30 s")

    def url(self, dbname: str, *, driver: str = "postgresql+psycopg") -> str:
        """The SQLAlchemy URL of ``dbname`` through the pooler (password URL-encoded)."""
        auth = f"{self.server.user}:{quote(self.server.password, safe='')}"
        return f"{driver}://{auth}@{self.host}:{self.port}/{dbname}"

    def close(self) -> None:
        """End the process by its pid (SIGTERM, then SIGKILL) and delete the folder."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        shutil.rmtree(self.base, ignore_errors=True)
