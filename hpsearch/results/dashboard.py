"""``hpsearch dashboard``: optuna-dashboard on the study database and its artifact store.

The dashboard has no authentication, so it binds to 127.0.0.1 unless the user explicitly asks for
another address (the CLI then warns). Only the redacted storage URL is handed out for display.
The server is optuna-dashboard's WSGI app on a threaded ``wsgiref`` server (what the
``optuna-dashboard`` command itself uses), bound *before* the URL is shown, so the URL is ready
when it appears.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hpsearch.errors import UserError
from hpsearch.records import STUDY
from hpsearch.storage import STORAGE_ENV, redact_url
from hpsearch.storage.artifacts import ARTIFACTS_ENV, artifact_location, artifact_store_for
from hpsearch.storage.queries import open_storage_for_reading

__all__ = [
    "Dashboard",
    "dashboard_url",
    "is_loopback",
    "open_dashboard",
    "start_dashboard_process",
    "dashboard_log",
    "wait_until_ready",
]


def is_loopback(host: str) -> bool:
    """Does ``host`` reach this machine only (no one else can connect)?"""
    h = host.strip().strip("[]")
    if h.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(h).is_loopback
    except ValueError:
        return False


def dashboard_url(host: str, port: int) -> str:
    """The page to open for a server bound to ``host`` (a wildcard address shows as loopback)."""
    h = host.strip()
    if h in ("0.0.0.0", ""):
        h = "127.0.0.1"
    elif h == "::":
        h = "::1"
    if ":" in h and not h.startswith("["):
        h = f"[{h}]"
    return f"http://{h}:{port}/dashboard/"


def _default_artifacts(st: Any) -> str | None:
    """The artifact folder the studies recorded, when they all agree (and nothing else was asked for)."""
    import optuna

    if os.environ.get(ARTIFACTS_ENV, "").strip():
        return None
    locs = {s.user_attrs.get(STUDY.ARTIFACTS) for s in optuna.get_all_study_summaries(st, include_best_trial=False)}
    locs.discard(None)
    return locs.pop() if len(locs) == 1 else None


def _make_server(app: Any, host: str, port: int) -> Any:
    from socketserver import ThreadingMixIn
    from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

    class _Server(ThreadingMixIn, WSGIServer):
        daemon_threads = True
        allow_reuse_address = True

    class _Quiet(WSGIRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

    if ":" in host.strip("[]"):
        _Server.address_family = socket.AF_INET6
    try:
        return make_server(host.strip("[]"), port, app, server_class=_Server, handler_class=_Quiet)
    except OSError as e:
        if e.errno == errno.EADDRINUSE:
            raise UserError(f"port {port} on {host} is already in use; pass another --port") from None
        if e.errno in (errno.EACCES, errno.EPERM):
            raise UserError(f"no permission to listen on {host}:{port}; use a port above 1024") from None
        raise UserError(f"cannot listen on {host}:{port} ({e.strerror}); check --host") from None


@dataclass
class Dashboard:
    """optuna-dashboard bound to its address (not serving yet): what to tell the user, and the server."""

    server: Any
    host: str
    port: int
    storage: str  # redacted: safe to show
    artifacts: str  # where the models are
    url: str  # the page to open

    @property
    def loopback(self) -> bool:
        return is_loopback(self.host)

    def serve(self) -> None:
        """Serve until Ctrl-C (then return normally); the socket is closed either way."""
        try:
            self.server.serve_forever(poll_interval=0.25)
        except KeyboardInterrupt:
            return
        finally:
            self.server.server_close()


def open_dashboard(storage: str | None = None, artifacts: str | None = None, host: str = "127.0.0.1",
                   port: int = 8080) -> Dashboard:
    """optuna-dashboard for the storage (and its artifact store), bound to ``host:port``.

    The socket is bound here, before anyone is told the URL, so the URL answers once shown. A read
    command: the storage must exist (nothing is created).
    """
    from optuna_dashboard import wsgi

    if not (0 < int(port) < 65536):
        raise UserError(f"--port {port}: give a port number between 1 and 65535")
    url, st = open_storage_for_reading(storage)
    art = artifacts or _default_artifacts(st)
    store = artifact_store_for(url, art)
    server = _make_server(wsgi(st, artifact_store=store), host, port)
    return Dashboard(server=server, host=host, port=int(port), storage=redact_url(url),
                     artifacts=artifact_location(url, art), url=dashboard_url(host, port))


def dashboard_log(port: int) -> Path:
    """Where :func:`start_dashboard_process` writes the child's output by default."""
    return Path(tempfile.gettempdir()) / f"hpsearch-dashboard-{port}.log"


def start_dashboard_process(storage_url: str, artifacts: str | None = None, host: str = "127.0.0.1",
                            port: int = 8080, extra_args: Sequence[str] = (),
                            env: dict[str, str] | None = None,
                            log: str | os.PathLike[str] | None = None) -> subprocess.Popen[str]:
    """``python -m hpsearch dashboard`` in a child process (for tests and scripts).

    The storage URL goes in ``HPSEARCH_STORAGE`` rather than argv, so a password never shows in the
    process list. The child's stdout and stderr go to the file ``log`` (default
    :func:`dashboard_log`), not to pipes: a pipe that nobody reads fills after 64 KiB of output and
    freezes a long-lived server in its next write.
    """
    child_env = dict(os.environ if env is None else env)
    child_env[STORAGE_ENV] = storage_url
    child_env.setdefault("PYTHONUNBUFFERED", "1")
    cmd = [sys.executable, "-m", "hpsearch", "dashboard", "--host", host, "--port", str(port)]
    if artifacts:
        cmd += ["--artifacts", str(artifacts)]
    cmd += list(extra_args)
    with open(dashboard_log(port) if log is None else log, "w") as out:  # the child keeps its own handle
        return subprocess.Popen(cmd, env=child_env, stdout=out, stderr=subprocess.STDOUT, text=True)


def wait_until_ready(url: str, timeout: float = 30.0, proc: subprocess.Popen[Any] | None = None,
                     log: str | os.PathLike[str] | None = None) -> None:
    """Poll ``url`` (e.g. ``http://127.0.0.1:PORT/api/meta``) until it answers 200; raise TimeoutError.

    With ``proc``, a child that exits early raises RuntimeError with the end of its ``log``.
    """
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            err = Path(log).read_text(errors="replace") if log is not None and Path(log).exists() else ""
            raise RuntimeError(f"dashboard exited with code {proc.returncode}: {err[-2000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
                last = r.status
        except (urllib.error.URLError, ConnectionError, OSError) as e:
            last = e
        time.sleep(0.2)
    raise TimeoutError(f"{url} did not answer within {timeout:.0f} s (last: {last})")
