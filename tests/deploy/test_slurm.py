"""deploy/slurm/hpsearch-array.sbatch on a real single-node Slurm (tests/slurm.py: munged,
slurmctld and slurmd started here, stopped by PID): a job array of 2 tasks, each `hpsearch worker`,
against the test PostgreSQL, ends with the exact budget."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest

from hpsearch.execution import budget as B
from hpsearch.execution import control as C
from hpsearch.storage import child_env_and_url, open_storage

try:
    from tests.slurm import SlurmCluster, SlurmUnavailable
except ImportError:  # pragma: no cover - rootdir not on sys.path
    from slurm import SlurmCluster, SlurmUnavailable  # type: ignore[no-redef]

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "deploy" / "slurm" / "hpsearch-array.sbatch"


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    t0 = time.monotonic()
    try:
        cluster = SlurmCluster(tmp_path_factory.mktemp("slurm")).start()
    except SlurmUnavailable as exc:
        pytest.fail(f"a single-node Slurm is required for this test and could not be started: {exc}")
    print(f"slurm up in {time.monotonic() - t0:.1f} s")
    try:
        yield cluster
    finally:
        procs = dict(cluster.procs)
        cluster.close()
        assert all(p.poll() is not None for p in procs.values()), "a Slurm daemon outlived the test"


def test_script_refuses_without_storage_in_one_line(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "HPSEARCH_STORAGE"}
    r = subprocess.run(["bash", str(SCRIPT), "study.yaml"], env=env, capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "HPSEARCH_STORAGE" in r.stderr
    r = subprocess.run(["bash", str(SCRIPT)], env=env, capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 2 and r.stderr.startswith("usage: sbatch")


def test_job_array_of_two_workers_meets_the_exact_budget(slurm, postgres_url, tmp_path):
    n_trials = 4
    study = tmp_path / "slurm-study.yaml"
    study.write_text(f"""name: slurm-array
data: {{source: "sklearn:iris", split: {{valid: 0.2, test: 0.2, seed: 0}}}}
model: {{builder: mlp, fixed: {{activation: relu, optimizer: adam}}}}
space: {{n_neurons: {{int: [4, 12]}}}}
train: {{epochs: 1, batch_size: 32}}
search: {{engine: optuna, sampler: random, pruner: none, n_trials: {n_trials}, metric: accuracy, seed: 0}}
""")
    url, extra = child_env_and_url(postgres_url)  # the password travels in PGPASSWORD, not the URL
    env = {"HPSEARCH_STORAGE": url, **extra, "HPSEARCH_ARTIFACTS": str(tmp_path / "artifacts"),
           "HPSEARCH_PYTHON": sys.executable, C.HEARTBEAT_ENV: "1", C.GRACE_ENV: "3",
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
    t0 = time.monotonic()
    # the script's own directives, with the array size and no GPU (this node has no GRES) given here
    r = slurm.run("sbatch", "--wait", "--parsable", "--array=0-1", "--gres=none", "--cpus-per-task=1",
                  f"--chdir={tmp_path}", str(SCRIPT), study.name, env=env, check=False, timeout=300)
    wall = time.monotonic() - t0
    outs = {p.name: p.read_text() for p in tmp_path.glob("hpsearch-*.out")}
    assert r.returncode == 0, f"{r.stderr}\n" + "\n".join(f"== {k}\n{v[-2000:]}" for k, v in outs.items())
    job = r.stdout.strip().split(";")[0]
    assert sorted(outs) == [f"hpsearch-{job}_0.out", f"hpsearch-{job}_1.out"]
    for text in outs.values():
        assert "hpsearch-array: job" in text and "Traceback" not in text

    storage = open_storage(postgres_url)
    loaded = optuna.load_study(study_name="slurm-array", storage=storage)
    states = [t.state.name for t in loaded.get_trials(deepcopy=False)]
    finished = states.count("COMPLETE") + states.count("PRUNED")
    running = states.count("RUNNING")
    launches = storage.get_study_system_attrs(storage.get_study_id_from_name("slurm-array"))[B.LAUNCH_ATTR]
    print(f"slurm array of 2: budget {n_trials}, finished {finished}, RUNNING {running}, launches {launches},"
          f" {wall:.1f} s")
    assert (finished, running, len(states)) == (n_trials, 0, n_trials)
    assert launches == 2  # both array tasks joined the study
    assert slurm.run("squeue", "-h", "-j", job).stdout.strip() == ""
