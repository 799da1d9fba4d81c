"""``hpsearch dashboard``: optuna-dashboard on the study database and its artifact store.

The dashboard has no authentication, so it binds to 127.0.0.1 unless the user explicitly asks for
another address (then a warning goes to stderr). Only the redacted storage URL is ever printed.
The server is optuna-dashboard's WSGI app on a threaded ``wsgiref`` server (what the
``optuna-dashboard`` command itself uses), bound *before* the URL is printed, so the printed URL
is ready when it appears.
"""

from __future__ import annotations

import ipaddress
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from typing import Any, Optional, Sequence

from hpsearch.errors import UserError

__all__ = ["run_dashboard", "start_dashboard_process", "wait_until_ready", "dashboard_url", "is_loopback"]

NO_AUTH_WARNING = (
    "hpsearch: warning: the dashboard has no authentication; anyone who can reach {host}:{port} can read"
    " and change the studies (delete them, too). Bind to 127.0.0.1 and use an SSH tunnel if you can."
)


def is_loopback(host: str) -> bool:
    h = host.strip().strip("[]")
    if h.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(h).is_loopback
    except ValueError:
        return False


def dashboard_url(host: str, port: int) -> str:
    h = host.strip()
    if h in ("0.0.0.0", ""):
        h = "127.0.0.1"
    elif h == "::":
        h = "::1"
    if ":" in h and not h.startswith("["):
        h = f"[{h}]"
    return f"http://{h}:{port}/dashboard/"


def _default_artifacts(st: Any) -> Optional[str]:
    """The artifact folder the studies recorded, when they all agree (and nothing else was asked for)."""
    import optuna

    from hpsearch.storage import ARTIFACTS_ENV

    if os.environ.get(ARTIFACTS_ENV, "").strip():
        return None
    locs = {s.user_attrs.get("artifacts") for s in optuna.get_all_study_summaries(st, include_best_trial=False)}
    locs.discard(None)
    return locs.pop() if len(locs) == 1 else None


def _make_server(app: Any, host: str, port: int) -> Any:
    from socketserver import ThreadingMixIn
    from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

    class _Server(ThreadingMixIn, WSGIServer):
        daemon_threads = True
        allow_reuse_address = True

    class _Quiet(WSGIRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
            pass

    if ":" in host.strip("[]"):
        import socket

        _Server.address_family = socket.AF_INET6  # type: ignore[misc]
    try:
        return make_server(host.strip("[]"), port, app, server_class=_Server, handler_class=_Quiet)
    except OSError as e:
        import errno

        if e.errno == errno.EADDRINUSE:
            raise UserError(f"port {port} on {host} is already in use; pass another --port") from None
        if e.errno in (errno.EACCES, errno.EPERM):
            raise UserError(f"no permission to listen on {host}:{port}; use a port above 1024") from None
        raise UserError(f"cannot listen on {host}:{port} ({e.strerror}); check --host") from None


def run_dashboard(storage: Optional[str] = None, artifacts: Optional[str] = None, host: str = "127.0.0.1",
                  port: int = 8080) -> int:
    """Serve optuna-dashboard for the storage (and its artifact store) until Ctrl-C; returns 0."""
    from optuna_dashboard import wsgi

    from hpsearch.report import open_study_storage
    from hpsearch.storage import artifact_location, artifact_store_for, redact_url

    if not (0 < int(port) < 65536):
        raise UserError(f"--port {port}: give a port number between 1 and 65535")
    url, st = open_study_storage(storage)
    art = artifacts or _default_artifacts(st)
    store = artifact_store_for(url, art)
    where = artifact_location(url, art)
    app = wsgi(st, artifact_store=store)
    server = _make_server(app, host, port)
    if not is_loopback(host):
        print(NO_AUTH_WARNING.format(host=host, port=port), file=sys.stderr, flush=True)
    print(f"optuna-dashboard for {redact_url(url)} (artifacts: {where})", flush=True)
    print(f"open {dashboard_url(host, port)}   (Ctrl-C to stop)", flush=True)
    try:
        server.serve_forever(poll_interval=0.25)
    except KeyboardInterrupt:
        print("dashboard stopped", flush=True)
    finally:
        server.server_close()
    return 0


def start_dashboard_process(storage_url: str, artifacts: Optional[str] = None, host: str = "127.0.0.1",
                            port: int = 8080, extra_args: Sequence[str] = (),
                            env: Optional[dict[str, str]] = None) -> subprocess.Popen[str]:
    """``python -m hpsearch dashboard`` in a child process (for tests and scripts).

    The storage URL goes in ``HPSEARCH_STORAGE`` rather than argv, so a password never shows in the
    process list.
    """
    from hpsearch.storage import STORAGE_ENV

    child_env = dict(os.environ if env is None else env)
    child_env[STORAGE_ENV] = storage_url
    child_env.setdefault("PYTHONUNBUFFERED", "1")
    cmd = [sys.executable, "-m", "hpsearch", "dashboard", "--host", host, "--port", str(port)]
    if artifacts:
        cmd += ["--artifacts", str(artifacts)]
    cmd += list(extra_args)
    return subprocess.Popen(cmd, env=child_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_until_ready(url: str, timeout: float = 30.0, proc: Optional[subprocess.Popen[Any]] = None) -> None:
    """Poll ``url`` (e.g. ``http://127.0.0.1:PORT/api/meta``) until it answers 200; raise TimeoutError.

    With ``proc``, a child that exits early raises RuntimeError with its stderr.
    """
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            err = proc.stderr.read() if proc.stderr else ""
            raise RuntimeError(f"dashboard exited with code {proc.returncode}: {str(err)[-2000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
                last = r.status
        except (urllib.error.URLError, ConnectionError, OSError) as e:
            last = e
        time.sleep(0.2)
    raise TimeoutError(f"{url} did not answer within {timeout:.0f} s (last: {last})")
