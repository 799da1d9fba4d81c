"""Fixtures of the tracking tests: a tiny iris study, a message-collecting observer and a real
``mlflow server`` process on 127.0.0.1 (started once, ended by its process group)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request

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


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory):
    """A real ``mlflow server`` (sqlite backend) on 127.0.0.1; its URL."""
    d = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    log = open(d / "server.log", "wb")  # noqa: SIM115 - closed at teardown
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    proc = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{d}/mlflow.db",
                             "--artifacts-destination", str(d / "artifacts"), "--host", "127.0.0.1",
                             "--port", str(port), "--workers", "1"],
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, (d / "server.log").read_text()[-2000:]
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, "mlflow server did not answer /health in 120 s"
            time.sleep(0.2)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # its own session: the server and its uvicorn child
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        log.close()
