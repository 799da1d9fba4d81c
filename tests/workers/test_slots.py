"""GPU slots of self-started workers (hpsearch/workers/slots.py): the list from --gpus /
$HPSEARCH_GPUS / auto, one slot per worker claimed through the study, CUDA_VISIBLE_DEVICES set
before any backend is imported. Checked on the CPU through the environment each real worker process
sets and its trials run under."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest

from hpsearch.cli import main
from hpsearch.errors import UserError
from hpsearch.execution import budget as B
from hpsearch.execution import control as C
from hpsearch.storage import child_env_and_url, open_storage
from hpsearch.workers import plan as P
from hpsearch.workers import slots as S

REPO = Path(__file__).resolve().parents[2]

SMI = """GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-aaaa)
GPU 1: NVIDIA A100-SXM4-40GB (UUID: GPU-bbbb)
  MIG 3g.20gb     Device  0: (UUID: MIG-1111)
  MIG 3g.20gb     Device  1: (UUID: MIG-2222)
GPU 2: NVIDIA H100 80GB HBM3 (UUID: GPU-cccc)
"""


def test_slot_list_from_flag_env_and_auto():
    assert S.resolve_slots("0,1", {}) == ["0", "1"]
    assert S.resolve_slots(None, {S.GPUS_ENV: "2,3"}) == ["2", "3"]
    assert S.resolve_slots("1", {S.GPUS_ENV: "2,3"}) == ["1"]  # the flag wins
    assert S.resolve_slots(None, {}) == [] and S.resolve_slots(None, {S.GPUS_ENV: " "}) == []
    # auto: CUDA_VISIBLE_DEVICES first (Slurm's gres sets it), else nvidia-smi -L (MIG: its instances)
    assert S.resolve_slots("auto", {"CUDA_VISIBLE_DEVICES": "4,6"}, smi=lambda: SMI) == ["4", "6"]
    assert S.resolve_slots(None, {S.GPUS_ENV: "AUTO"}, smi=lambda: SMI) == ["0", "MIG-1111", "MIG-2222", "2"]
    assert S.parse_nvidia_smi("") == [] and S.parse_nvidia_smi("No devices were found") == []
    # run --workers: the launcher pinned the process already
    assert S.resolve_slots("0,1", {P.MANAGED_ENV: "1", S.GPUS_ENV: "0,1"}) == []


@pytest.mark.parametrize(("flag", "env", "named"), [
    ("0,x", {}, "--gpus"), (",", {}, "--gpus"), ("0,0", {}, "--gpus"), (None, {S.GPUS_ENV: "gpu0"}, "HPSEARCH_GPUS"),
    ("auto", {"CUDA_VISIBLE_DEVICES": ""}, "--gpus auto"), (None, {S.GPUS_ENV: "auto"}, "HPSEARCH_GPUS auto"),
])
def test_bad_slot_lists_are_user_errors_naming_their_source(flag, env, named):
    with pytest.raises(UserError) as err:
        S.resolve_slots(flag, env, smi=lambda: None)
    assert str(err.value).startswith(named) and "\n" not in str(err.value)


def test_malformed_gpus_is_one_line_exit_2_nothing_written(tmp_path, capfd, monkeypatch):
    monkeypatch.delenv(S.GPUS_ENV, raising=False)
    study = _study_file(tmp_path, "bad-gpus", 2, builder="mlp")
    db = tmp_path / "x.db"
    assert main(["worker", str(study), "--storage", f"sqlite:///{db}", "--gpus", "0,one", "--no-progress"]) == 2
    err = capfd.readouterr().err.strip().splitlines()
    assert err == ["hpsearch: error: --gpus: 'one' is not a GPU id; write indexes like 0,1 (see nvidia-smi -L)"]
    assert not db.exists()
    monkeypatch.setenv(S.GPUS_ENV, "0;1")
    assert main(["worker", str(study), "--storage", f"sqlite:///{db}", "--no-progress"]) == 2
    assert capfd.readouterr().err.strip().startswith("hpsearch: error: HPSEARCH_GPUS: '0;1' is not a GPU id")
    assert not db.exists()


def _study_file(tmp_path: Path, name: str, n_trials: int, builder: str = "tests.slot_builders:build_recording") -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(f"""name: {name}
data: {{source: "sklearn:iris", split: {{valid: 0.2, test: 0.2, seed: 0}}}}
model: {{builder: "{builder}"}}
space: {{n_neurons: {{int: [4, 12]}}}}
train: {{epochs: 1, batch_size: 32}}
search: {{engine: optuna, sampler: random, pruner: none, n_trials: {n_trials}, metric: accuracy, seed: 3}}
""")
    return path


def _worker_env(tmp_path: Path, postgres_url: str, gpus: str) -> tuple[str, dict[str, str]]:
    url, extra = child_env_and_url(postgres_url)
    drop = ("CUDA_VISIBLE_DEVICES", P.MANAGED_ENV, "HPSEARCH_STORAGE")
    env = {k: v for k, v in {**os.environ, **extra}.items() if k not in drop}
    env.update({S.GPUS_ENV: gpus, "HPSEARCH_TEST_EVENTS": str(tmp_path / "events"), "TF_CPP_MIN_LOG_LEVEL": "3",
                C.HEARTBEAT_ENV: "1", C.GRACE_ENV: "3", "OMP_NUM_THREADS": "1", "TF_NUM_INTRAOP_THREADS": "1",
                "PYTHONPATH": os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)})
    return url, env


@pytest.mark.gpu
@pytest.mark.skipif(not Path("/dev/nvidiactl").exists(), reason="needs an NVIDIA GPU")
def test_auto_slot_on_a_gpu_leaves_one_gpu_visible(tmp_path, postgres_url):  # pragma: no cover - GPU only
    """On a GPU machine: --gpus auto pins the worker to one GPU; its trials' TensorFlow sees exactly one."""
    (tmp_path / "events").mkdir()
    study = _study_file(tmp_path, "slots-gpu", 2)
    url, env = _worker_env(tmp_path, postgres_url, "")
    r = subprocess.run([sys.executable, "-m", "hpsearch", "worker", str(study), "--storage", url, "--gpus", "auto",
                        "--artifacts", str(tmp_path / "art")], env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert "hpsearch: GPU slot 0 of " in r.stdout + r.stderr
    execs = [json.loads(x) for x in (tmp_path / "events" / "executions.jsonl").read_text().splitlines()]
    assert execs and all(e["gpus_seen"] == 1 for e in execs), execs


def test_workers_claim_distinct_slots_and_pin_before_the_backend(tmp_path, postgres_url, monkeypatch):
    """2 real workers with HPSEARCH_GPUS=0,1 started together on a fresh study: launches 0 and 1 give
    slots 0 and 1; each says its slot in one line, records it, and its trials run under that
    CUDA_VISIBLE_DEVICES; no backend was imported before the claim; the budget is exact."""
    events = tmp_path / "events"
    events.mkdir()
    n_trials = 4
    study = _study_file(tmp_path, "slots", n_trials)
    url, env = _worker_env(tmp_path, postgres_url, "0,1")
    cmd = [sys.executable, "-m", "hpsearch", "worker", str(study), "--storage", url,
           "--artifacts", str(tmp_path / "art")]
    t0 = time.monotonic()
    procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for _ in range(2)]
    outs = {}
    for p in procs:
        out, _ = p.communicate(timeout=300)
        assert p.returncode == 0, out[-3000:]
        outs[p.pid] = out
    print(f"2 workers, {n_trials} trials: {time.monotonic() - t0:.1f} s")

    storage = open_storage(postgres_url)
    loaded = optuna.load_study(study_name="slots", storage=storage)
    attrs = storage.get_study_system_attrs(storage.get_study_id_from_name("slots"))
    records = sorted((v for k, v in attrs.items() if k.startswith(S.SLOT_ATTR)), key=lambda r: r["launch"])
    assert [(r["launch"], r["gpu"], r["cuda_visible_devices"]) for r in records] == [(0, "0", "0"), (1, "1", "1")]
    assert attrs[B.LAUNCH_ATTR] == 2  # the claim is the launch: the sampler did not take a second one
    assert all(r["backends_loaded"] == [] and r["slots"] == ["0", "1"] for r in records)
    assert {r["pid"] for r in records} == set(outs)
    for r in records:  # one line each, in that worker's own output
        line = f"hpsearch: GPU slot {r['slot']} of 0,1 (launch {r['launch']} mod 2): CUDA_VISIBLE_DEVICES={r['gpu']}"
        assert outs[r["pid"]].count(line) == 1, outs[r["pid"]][-2000:]
    gpu_of = {r["pid"]: r["gpu"] for r in records}
    execs = [json.loads(x) for x in (events / "executions.jsonl").read_text().splitlines()]
    assert execs and all(e["cuda"] == gpu_of[e["pid"]] for e in execs)
    assert all(e["gpus_seen"] == 0 for e in execs) or Path("/dev/nvidiactl").exists()
    states = [t.state.name for t in loaded.get_trials(deepcopy=False)]
    assert states.count("COMPLETE") == n_trials and "RUNNING" not in states and len(states) == n_trials
