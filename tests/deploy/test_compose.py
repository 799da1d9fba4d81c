"""deploy/compose/docker-compose.yml, its .env.example and the Dockerfile, checked without a Docker
engine: parsed as YAML, services and commands matched against the hpsearch CLI and the worker
environment rules (paths resolved from the compose file's folder, as docker compose does)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from hpsearch.cli import build_parser
from hpsearch.storage import normalize_storage_url, redact_url
from hpsearch.workers.slots import resolve_slots

REPO = Path(__file__).resolve().parents[2]
HERE = REPO / "deploy" / "compose"  # docker compose resolves relative paths from the file's folder
_VAR = re.compile(r"(?<!\$)\$\{(\w+)(?::?[-?]([^}]*))?\}")


def _env_example() -> dict[str, str]:
    out = {}
    for line in (HERE / ".env.example").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            k, _, v = line.partition("=")
            out[k.strip()] = v.strip()
    return out


def _interpolate(value, env):
    """Compose-style ${VAR}, ${VAR:-default}, ${VAR:?error}; $$ is a literal $."""
    if isinstance(value, str):
        def sub(m):
            name, default = m.group(1), m.group(2)
            if name in env:
                return env[name]
            if "?" in m.group(0).split(name, 1)[1][:2]:
                raise KeyError(f"{name} is required: {default}")
            return default or ""
        return _VAR.sub(sub, value).replace("$$", "$")
    if isinstance(value, list):
        return [_interpolate(v, env) for v in value]
    if isinstance(value, dict):
        return {k: _interpolate(v, env) for k, v in value.items()}
    return value


@pytest.fixture(scope="module")
def raw():
    return yaml.safe_load((HERE / "docker-compose.yml").read_text())


@pytest.fixture(scope="module")
def compose(raw):
    return _interpolate(raw, _env_example())


def test_healthcheck_escapes_container_variables(compose):
    test = compose["services"]["postgres"]["healthcheck"]["test"]
    assert "${POSTGRES_USER}" in test[-1]  # $$ in the file: expanded by the container's shell


def test_services(compose):
    assert {"postgres", "worker", "dashboard"} <= set(compose["services"])
    assert compose["services"]["postgres"]["image"].startswith("postgres:")
    for name in ("worker", "worker-cpu", "dashboard"):
        build = compose["services"][name]["build"]
        context = (HERE / build["context"]).resolve()
        assert context == REPO and (context / build.get("dockerfile", "Dockerfile")).is_file()
    assert (REPO / ".dockerignore").is_file()
    assert not (REPO / "docker-compose.yml").exists(), "one compose file: deploy/compose/docker-compose.yml"


def test_worker_command_parses_with_the_cli(compose):
    for name in ("worker", "worker-cpu"):
        svc = compose["services"][name]
        a = build_parser().parse_args(svc["command"])
        assert a.command == "worker"
        mounts = dict(reversed(v.split(":")[:2]) for v in svc["volumes"] if v.startswith("."))
        host = HERE / mounts["/app/studies"] / Path(a.study).relative_to("studies")
        assert host.resolve().is_file(), f"{name}: study file {a.study} is not in the mounted studies/ folder"
        assert svc["depends_on"]["postgres"]["condition"] == "service_healthy"
        assert "container_name" not in svc  # --scale worker=N needs unnamed containers
        assert "ports" not in svc


def test_dockerfile_entrypoint_is_the_cli():
    text = (REPO / "Dockerfile").read_text()
    assert re.search(r'ENTRYPOINT \["hpsearch"\]', text)
    assert "USER " in text  # not root
    assert "COPY studies" in text


def test_secrets_come_from_the_environment(raw, compose):
    text = (HERE / "docker-compose.yml").read_text()
    assert "change-me" not in text
    assert "${POSTGRES_PASSWORD:?" in text  # refuses to start without a password
    for name in ("worker", "worker-cpu"):
        env = compose["services"][name]["environment"]
        url = env["HPSEARCH_STORAGE"]
        assert redact_url(url) == url, "no password in the storage URL"
        assert normalize_storage_url(url).startswith("postgresql+psycopg://")
        assert env["PGPASSWORD"] == _env_example()["POSTGRES_PASSWORD"]
    dash = compose["services"]["dashboard"]
    assert all(redact_url(c) == c for c in dash["command"])
    with pytest.raises(KeyError):
        _interpolate(raw, {k: v for k, v in _env_example().items() if k != "POSTGRES_PASSWORD"})
    ignored = (REPO / ".dockerignore").read_text().split()
    assert ".env" in ignored


def test_worker_gpu_reservation_and_memory_sharing(compose):
    svc = compose["services"]["worker"]
    devices = svc["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]
    env = svc["environment"]
    assert env["TF_FORCE_GPU_ALLOW_GROWTH"] == "true"
    assert env["XLA_PYTHON_CLIENT_PREALLOCATE"] == "false"
    assert 0 < float(env["XLA_PYTHON_CLIENT_MEM_FRACTION"]) <= 1
    assert "deploy" not in compose["services"]["worker-cpu"]
    assert "HPSEARCH_GPUS" not in compose["services"]["worker-cpu"]["environment"]
    assert compose["services"]["worker-cpu"]["profiles"] == ["cpu"]
    grace, interval = int(env["HPSEARCH_HEARTBEAT_GRACE"]), int(env["HPSEARCH_HEARTBEAT_INTERVAL"])
    assert grace >= 2 * interval
    # docker stops a container after stop_grace_period: the worker's own deadline must be shorter
    assert int(env["HPSEARCH_STOP_DEADLINE"]) < int(svc["stop_grace_period"].rstrip("s"))


def test_dashboard_only_on_loopback(compose):
    dash = compose["services"]["dashboard"]
    assert dash["entrypoint"] == ["optuna-dashboard"]
    for port in dash["ports"]:
        assert str(port).startswith("127.0.0.1:"), port
    args = dash["command"]
    assert args[0].startswith("postgresql+psycopg://")
    assert "--port" in args and args[args.index("--port") + 1] == "8080"
    assert all("ports" not in s for n, s in compose["services"].items() if n != "dashboard")


def test_replicas_pin_one_gpu_each(compose):
    """--scale worker=8 on an 8-GPU host: every replica sees all GPUs (the reservation) and claims
    launch % 8 of them (HPSEARCH_GPUS=auto, resolved as a replica would from nvidia-smi -L)."""
    svc = compose["services"]["worker"]
    assert svc["deploy"]["resources"]["reservations"]["devices"][0]["count"] == "all"
    env = {k: str(v) for k, v in svc["environment"].items()}
    assert env["HPSEARCH_GPUS"] == "auto" and "CUDA_VISIBLE_DEVICES" not in env
    smi = "".join(f"GPU {i}: NVIDIA H100 80GB HBM3 (UUID: GPU-{i:04d})\n" for i in range(8))
    gpus = resolve_slots(None, env, smi=lambda: smi)
    assert gpus == [str(i) for i in range(8)]
    launches = range(5, 13)  # 8 replicas started together: 8 consecutive launch numbers
    assert sorted(gpus[n % len(gpus)] for n in launches) == gpus
    assert "--gpus" not in svc["command"]  # the environment says it: one place to change
