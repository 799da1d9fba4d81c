"""Worker scaling: trials/hour and memory per worker for 1, 2, 4 workers, on identical trials.

    python benchmarks/bench_workers.py                       # CPU, a throw-away PostgreSQL (tests/pg.py)
    python benchmarks/bench_workers.py --storage postgresql+psycopg://user@host/db   # PGPASSWORD in env
    KERAS_BACKEND=jax python benchmarks/bench_workers.py --gpus 0 --per-gpu 1,2,4    # K workers on one GPU

Like with like: every configuration runs the same ``--n-trials`` parameter sets (drawn once per seed
from the space with ``--seed``, queued by ``search.enqueue``, so the workers only change who trains
them), with the same data, split and epochs, ``train.pack: 1`` (one model per trial in every worker:
packing is measured by bench_packing.py, and a 16-trial budget would otherwise become one pack) and
no early stopping (every trial trains all its epochs: the same work). One JSON line per
configuration and seed (stdout), then a table side by side with the 1-worker (or 1-per-GPU)
baseline of the same seed in the same job. Wall time includes worker start-up (imports, first
compile), which is what a user waits for. On a machine with fewer cores than workers the workers
share the cores: ``cpu_count`` is in each line.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

STUDY = """name: {name}
data:
  source: "sklearn:{dataset}"
  split: {{valid: 0.2, test: 0.2, seed: 0}}
  scale: standard
model:
  builder: mlp
  fixed: {{activation: relu, optimizer: adam}}
space:
  n_hidden: {{int: [1, 3]}}
  n_neurons: {{int: [16, 128], log: true}}
  learning_rate: {{float: [1.0e-3, 3.0e-2], log: true}}
train: {{epochs: {epochs}, batch_size: 64, steps_per_execution: 8, pack: 1}}
search: {{engine: optuna, sampler: random, pruner: none, n_trials: {n_trials}, metric: accuracy, seed: {seed},
          enqueue: {enqueue}}}
"""


def _params(n: int, seed: int) -> list[dict]:
    """``n`` parameter sets of the space above, drawn once per seed: every configuration trains these."""
    import numpy as np

    rng = np.random.default_rng(seed)
    return [{"n_hidden": int(rng.integers(1, 4)), "n_neurons": round(float(np.exp(rng.uniform(np.log(16),
             np.log(128))))), "learning_rate": float(np.exp(rng.uniform(np.log(1e-3), np.log(3e-2))))}
            for _ in range(n)]


def _rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def _gpu_mb() -> dict[int, float]:
    if not shutil.which("nvidia-smi"):
        return {}
    try:
        out = subprocess.run(["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=10).stdout
    except Exception:  # noqa: BLE001
        return {}
    res = {}
    for line in out.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 2 and parts[0].isdigit():
            with contextlib.suppress(ValueError):
                res[int(parts[0])] = float(parts[1])
    return res


class Sampler(threading.Thread):
    """Peak RSS (and GPU memory) of each worker pid while it runs."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.pids: list[int] = []
        self.rss: dict[int, float] = {}
        self.gpu: dict[int, float] = {}
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.wait(0.5):
            for pid in list(self.pids):
                r = _rss_mb(pid)
                if r is not None:
                    self.rss[pid] = max(self.rss.get(pid, 0.0), r)
            for pid, mb in _gpu_mb().items():
                if pid in self.pids:
                    self.gpu[pid] = max(self.gpu.get(pid, 0.0), mb)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workers", default="1,2,4", help="worker counts (CPU), e.g. 1,2,4")
    p.add_argument("--gpus", help="GPU ids, e.g. 0 (then --per-gpu sets the worker counts)")
    p.add_argument("--per-gpu", default="1,2,4", help="workers per GPU to compare (with --gpus)")
    p.add_argument("--n-trials", type=int, default=16)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--dataset", default="digits")
    p.add_argument("--seeds", default="0,1,2", help="one set of identical trials per seed")
    p.add_argument("--storage", help="PostgreSQL URL (default: a throw-away server from tests/pg.py)")
    a = p.parse_args(argv)

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    server = None
    url = a.storage
    if not url:
        from tests.pg import PostgresServer

        server = PostgresServer().start()
        url = server.url(server.create_database())
    configs = ([(int(k), k) for k in a.per_gpu.split(",")] if a.gpus
               else [(int(n), None) for n in a.workers.split(",")])
    tmp = Path(tempfile.mkdtemp(prefix="hpsearch-bench-"))
    rows: list[dict] = []
    try:
        for seed in [int(x) for x in a.seeds.split(",")]:
            enqueue = json.dumps(_params(a.n_trials, seed))
            for n, per_gpu in configs:
                rows.append(_one(a, url, tmp, n, per_gpu, seed, enqueue))
                print(json.dumps(rows[-1]), flush=True)
        base = {r["seed"]: r["trials_per_hour"] for r in rows if r["config"] == rows[0]["config"]}  # 1 worker
        print(f"\n{'config':>10} {'seed':>5} {'workers':>8} {'wall s':>8} {'trials/h':>9} {'x 1':>6} {'rss MB':>8}"
              f" {'best':>8}")
        for r in rows:
            x = r["trials_per_hour"] / base[r["seed"]] if base.get(r["seed"]) else float("nan")
            print(f"{r['config']:>10} {r['seed']:>5} {r['workers']:>8} {r['wall_s']:>8.1f} {r['trials_per_hour']:>9.1f}"
                  f" {x:>6.2f} {r['rss_mb_per_worker_max'] or 0:>8.0f} {r['best_value'] or 0:>8.4f}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if server is not None:
            server.close()
    return 0


def _one(a: argparse.Namespace, url: str, tmp: Path, n: int, per_gpu: str | None, seed: int, enqueue: str) -> dict:
    """One configuration on a fresh study with the seed's queued trials: its figures."""
    from hpsearch.workers.launcher import run_workers

    name = f"bench-{n}w-{seed}-{uuid.uuid4().hex[:6]}"
    study = tmp / f"{name}.yaml"
    study.write_text(STUDY.format(name=name, dataset=a.dataset, epochs=a.epochs, n_trials=a.n_trials, seed=seed,
                                  enqueue=enqueue))
    sampler = Sampler()
    sampler.start()
    t0 = time.monotonic()
    res = run_workers(study, storage=url, artifacts=str(tmp / "art"), n_workers=n if not a.gpus else 1,
                      gpus=a.gpus, per_gpu=int(per_gpu) if per_gpu else 1, on_spawn=sampler.pids.extend)
    wall = time.monotonic() - t0
    sampler.halt.set()
    sampler.join()
    rss = list(sampler.rss.values())
    gpu = list(sampler.gpu.values())
    return {
        "config": f"{per_gpu}/gpu" if per_gpu else f"{n} cpu", "seed": seed, "workers": len(sampler.pids),
        "gpus": a.gpus, "per_gpu": per_gpu, "backend": os.environ.get("KERAS_BACKEND", "tensorflow"),
        "dataset": a.dataset, "n_trials": a.n_trials, "epochs": a.epochs, "complete": res.n_complete,
        "pruned": res.n_pruned, "failed": res.n_failed, "wall_s": round(wall, 2),
        "trials_per_hour": round(3600 * (res.n_complete + res.n_pruned) / wall, 1),
        "rss_mb_per_worker_max": round(max(rss), 1) if rss else None,
        "rss_mb_per_worker_mean": round(sum(rss) / len(rss), 1) if rss else None,
        "gpu_mb_per_worker_max": round(max(gpu), 1) if gpu else None,
        "best_value": res.best_value, "cpu_count": os.cpu_count(),
    }


if __name__ == "__main__":
    sys.exit(main())
