"""deploy/kubernetes: every manifest validated against the Kubernetes API schemas (kubernetes-validate,
which bundles them: no cluster, no network), strict (an unknown field fails), on the oldest and the
newest version it knows; then what the schemas cannot see: the Secret is the only place of the
password, URLs carry none, Services select existing pods, the workers' command parses with the CLI."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from hpsearch.cli import build_parser
from hpsearch.execution import control as C
from hpsearch.storage import normalize_storage_url, redact_url
from hpsearch.workers.slots import GPUS_ENV, resolve_slots

REPO = Path(__file__).resolve().parents[2]
HERE = REPO / "deploy" / "kubernetes"
VERSIONS = ["1.29.0", kubernetes_validate.latest_version()]
SECRET = "hpsearch-db"


def _docs() -> list[tuple[str, dict]]:
    out = []
    for path in sorted(HERE.glob("*.yaml")):
        if path.name != "kustomization.yaml":
            out += [(path.name, d) for d in yaml.safe_load_all(path.read_text()) if d]
    return out


DOCS = _docs()


def _by_kind(kind: str) -> dict[str, dict]:
    return {d["metadata"]["name"]: d for _, d in DOCS if d["kind"] == kind}


def _pod_specs() -> dict[str, dict]:
    return {d["metadata"]["name"]: d["spec"]["template"]["spec"] for _, d in DOCS
            if d["kind"] in ("Deployment", "StatefulSet", "Job")}


def _env(container: dict, **subst: str) -> dict[str, object]:
    """name -> value (with $(VAR) substituted from ``subst``) or the valueFrom mapping."""
    out: dict[str, object] = {}
    for e in container.get("env", []):
        if "valueFrom" in e:
            out[e["name"]] = e["valueFrom"]
        else:
            out[e["name"]] = re.sub(r"\$\((\w+)\)", lambda m: subst[m[1]], e["value"])
    return out


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize(("name", "doc"), DOCS, ids=[f"{n}:{d['kind']}/{d['metadata']['name']}" for n, d in DOCS])
def test_manifest_matches_the_kubernetes_schema(name, doc, version):
    kubernetes_validate.validate(doc, version, strict=True)


def test_the_validator_rejects_a_broken_manifest():
    job = copy.deepcopy(_by_kind("Job")["hpsearch-workers"])
    job["spec"]["completions"] = "eight"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(job, VERSIONS[-1], strict=True)
    job = copy.deepcopy(_by_kind("Job")["hpsearch-workers"])
    job["spec"]["template"]["spec"]["containers"][0]["gpus"] = 1  # not a field: strict mode refuses it
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(job, VERSIONS[-1], strict=True)


def test_kustomization_lists_existing_files_and_leaves_the_secret_out():
    k = yaml.safe_load((HERE / "kustomization.yaml").read_text())
    assert all((HERE / r).is_file() for r in k["resources"])
    assert "secret.yaml" not in k["resources"]  # applying never overwrites the real password
    listed = set(k["resources"]) | {"secret.yaml", "pgbouncer.yaml"}  # pgbouncer: optional, commented in
    assert listed == {p.name for p in HERE.glob("*.yaml")} - {"kustomization.yaml"}


def test_the_password_lives_only_in_the_secret():
    secret = _by_kind("Secret")[SECRET]
    assert secret["stringData"]["password"] == ""  # filled by kubectl create secret, never in git
    for name, spec in _pod_specs().items():
        for c in spec.get("initContainers", []) + spec["containers"]:
            env = _env(c, PGUSER="hpsearch")
            for key in ("PGPASSWORD", "POSTGRES_PASSWORD"):
                if key in env:
                    assert env[key] == {"secretKeyRef": {"name": SECRET, "key": "password"}}, (name, key)
            assert not any("password" in str(a).lower() for a in c.get("args", [])), name
    for path in HERE.glob("*.yaml"):
        assert "change-me" not in path.read_text()


def test_workers_are_an_indexed_job_of_one_gpu_each():
    job = _by_kind("Job")["hpsearch-workers"]
    spec = job["spec"]
    assert spec["completionMode"] == "Indexed" and spec["completions"] == spec["parallelism"] >= 2
    pod = spec["template"]["spec"]
    (c,) = pod["containers"]
    assert c["resources"]["limits"]["nvidia.com/gpu"] == 1
    a = build_parser().parse_args(c["args"])
    assert a.command == "worker" and (REPO / a.study).is_file()  # the image holds studies/ (Dockerfile)
    env = {k: v for k, v in _env(c, PGUSER="hpsearch").items() if isinstance(v, str)}
    url = env["HPSEARCH_STORAGE"]
    assert redact_url(url) == url and normalize_storage_url(url).startswith("postgresql+psycopg://hpsearch@")
    assert url.split("@")[1].split(":")[0] in _by_kind("Service")
    # the pod sees its one GPU: auto gives slot 0 of it (nvidia-smi -L inside the pod lists one)
    assert resolve_slots(None, env, smi=lambda: "GPU 0: NVIDIA H100 (UUID: GPU-1)\n") == ["0"]
    assert env[GPUS_ENV] == "auto"
    assert int(env[C.STOP_DEADLINE_ENV]) < pod["terminationGracePeriodSeconds"]
    assert int(env[C.GRACE_ENV]) >= 2 * int(env[C.HEARTBEAT_ENV])
    assert pod["restartPolicy"] == "OnFailure"


def test_services_select_pods_and_the_dashboard_stays_inside():
    labels = {n: d["spec"]["template"]["metadata"]["labels"] for _, d in DOCS
              if d["kind"] in ("Deployment", "StatefulSet", "Job") for n in [d["metadata"]["name"]]}
    for name, svc in _by_kind("Service").items():
        sel = svc["spec"]["selector"]
        assert any(sel.items() <= lab.items() for lab in labels.values()), f"Service {name} selects no pod"
        assert svc["spec"].get("type", "ClusterIP") == "ClusterIP", name
    dash = _pod_specs()["hpsearch-dashboard"]["containers"][0]
    assert dash["command"] == ["optuna-dashboard"]
    url = re.sub(r"\$\((\w+)\)", "hpsearch", dash["args"][0])
    assert redact_url(url) == url and normalize_storage_url(url).startswith("postgresql+psycopg://")
    ini = _by_kind("ConfigMap")["hpsearch-pgbouncer"]["data"]["pgbouncer.ini"]
    assert "pool_mode = transaction" in ini
    assert re.search(r"host=([\w-]+)", ini)[1] in _by_kind("Service")
    sts = _by_kind("StatefulSet")["hpsearch-postgres"]
    assert sts["spec"]["serviceName"] in _by_kind("Service")
