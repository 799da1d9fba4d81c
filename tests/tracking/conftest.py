"""Fixtures of the tracking tests: a tiny iris study, a message-collecting observer and real
``mlflow server`` processes on 127.0.0.1 (ended by its process group), which a test may stop and start again."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from trk_user_callbacks import free_port


@pytest.fixture
def iris_study():
    """``iris_study(name, **sections)``: a validated 2-epoch iris study (sections replace defaults)."""
    from hpsearch.study.validate import parse_study_config

    def make(name: str, **sections):
        d = {"name": name, "data": {"source": "sklearn:iris", "split": {"valid": 0.2, "test": 0.2, "seed": 0}},
             "space": {"n_neurons": {"int": [4, 16]}, "learning_rate": {"float": [1e-3, 1e-1], "log": True}},
             "train": {"epochs": 2, "batch_size": 16, "pack": 1},
             "search": {"n_trials": 3, "seed": 0, "pruner": "none"}}
        for key, value in sections.items():
            d[key] = {**d.get(key, {}), **value} if isinstance(value, dict) else value
        return parse_study_config(d)

    return make


def start_mlflow_server(d: Path, port: int) -> subprocess.Popen:
    """A real ``mlflow server`` (SQLite backend and artifacts in ``d``) on 127.0.0.1:``port``, in its
    own session; returned once it answers /health (its log: ``d/server.log``)."""
    log = open(d / "server.log", "ab")  # noqa: SIM115 - the child holds it; closed here after the start
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    try:
        proc = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--backend-store-uri",
                                 f"sqlite:///{d}/mlflow.db", "--artifacts-destination", str(d / "artifacts"),
                                 "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env)
    finally:
        log.close()
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, (d / "server.log").read_text()[-2000:]
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                    if r.status == 200:
                        return proc
            except OSError:
                pass
            assert time.monotonic() < deadline, "mlflow server did not answer /health in 120 s"
            time.sleep(0.2)
    except BaseException:
        stop_mlflow_server(proc)
        raise


def stop_mlflow_server(proc: subprocess.Popen) -> None:
    """End a server of :func:`start_mlflow_server`: its process group (the server and its uvicorn child)."""
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


class MlflowServer:
    """One real server on a fixed port and folder that a test can stop and start again (the same
    database: what it held is there again)."""

    def __init__(self, d: Path) -> None:
        self.d, self.port = d, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self) -> str:
        if self.proc is None:
            self.proc = start_mlflow_server(self.d, self.port)
        return self.url

    def stop(self) -> None:
        if self.proc is not None:
            stop_mlflow_server(self.proc)
            self.proc = None


@pytest.fixture(scope="session")
def mlflow_server_control(tmp_path_factory):
    """The session's :class:`MlflowServer` (started by the first test that needs it, stopped at the end)."""
    server = MlflowServer(tmp_path_factory.mktemp("mlflow-server"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def mlflow_server(mlflow_server_control):
    """The URL of the session's real ``mlflow server`` on 127.0.0.1, running (started again if a test
    stopped it)."""
    return mlflow_server_control.start()
