"""Planning worker processes: GPU pinning, per-worker environment and command line.

``--gpus 0,1 --per-gpu K`` gives each worker ``CUDA_VISIBLE_DEVICES=<id>`` (K per id) and the memory
settings that let K processes share one GPU: TensorFlow memory growth
(``TF_FORCE_GPU_ALLOW_GROWTH``), JAX without preallocation and capped at ``0.9/K`` of the memory
(``XLA_PYTHON_CLIENT_PREALLOCATE=false``, ``XLA_PYTHON_CLIENT_MEM_FRACTION``), PyTorch with
expandable segments and ``torch.cuda.set_per_process_memory_fraction(0.9/K)`` applied in the worker
(``HPSEARCH_GPU_MEMORY_FRACTION``). Without ``--gpus`` the workers run on the CPU
(``CUDA_VISIBLE_DEVICES=""``, ``JAX_PLATFORMS=cpu``) with ``cores // N`` threads each
(OMP / TensorFlow intra-op threads) so that N workers do not oversubscribe the cores.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence

from hpsearch.errors import UserError

__all__ = ["parse_gpus", "plan_workers", "worker_env", "worker_command", "apply_backend_settings",
           "worker_index", "GPU_FRACTION_ENV", "CPU_THREADS_ENV", "MANAGED_ENV", "INDEX_ENV"]

GPU_FRACTION_ENV = "HPSEARCH_GPU_MEMORY_FRACTION"
CPU_THREADS_ENV = "HPSEARCH_CPU_THREADS"
MANAGED_ENV = "HPSEARCH_WORKER_MANAGED"  # set by run_workers: the parent finalizes, not the worker
INDEX_ENV = "HPSEARCH_WORKER_INDEX"
GPU_MEMORY_SHARE = 0.9  # of a GPU's memory, split between the workers pinned to it


def parse_gpus(spec: str | Sequence[str | int] | None, what: str = "--gpus") -> list[str]:
    """``"0,1"`` -> ``["0", "1"]``. Ids are indexes or ``GPU-``/``MIG-`` UUIDs; no duplicates.
    ``what`` names where the list came from in the one-line error (a flag or a variable)."""
    if spec is None:
        return []
    items = spec.split(",") if isinstance(spec, str) else [str(s) for s in spec]
    ids = [s.strip() for s in items if s.strip()]
    if isinstance(spec, str) and spec.strip() and not ids:
        raise UserError(f"{what} {spec!r} names no GPU; write e.g. {what}=0,1")
    for g in ids:
        if not (g.isdigit() or g.upper().startswith(("GPU-", "MIG-"))):
            raise UserError(f"{what}: {g!r} is not a GPU id; write indexes like 0,1 (see nvidia-smi -L)")
    dup = sorted({g for g in ids if ids.count(g) > 1})
    if dup:
        raise UserError(f"{what} lists {', '.join(dup)} twice; use --per-gpu K for several workers per GPU")
    return ids


def plan_workers(n_workers: int, gpus: Sequence[str], per_gpu: int = 1) -> list[str | None]:
    """The GPU id of each worker (``None``: CPU). With GPUs the default is ``len(gpus) * per_gpu``
    workers; an explicit ``n_workers`` > 1 may use fewer slots (spread round-robin), not more."""
    if not isinstance(n_workers, int) or n_workers < 1 or not isinstance(per_gpu, int) or per_gpu < 1:
        raise UserError("--workers and --per-gpu must be >= 1")
    if not gpus:
        if per_gpu != 1:
            raise UserError("--per-gpu needs --gpus (e.g. --gpus 0 --per-gpu 2)")
        return [None] * n_workers
    slots = len(gpus) * per_gpu
    n = slots if n_workers == 1 else n_workers
    if n > slots:
        raise UserError(
            f"--workers {n_workers} is more than --gpus {','.join(gpus)} x --per-gpu {per_gpu} = {slots} slots; "
            f"raise --per-gpu or leave --workers out"
        )
    return [gpus[i % len(gpus)] for i in range(n)]


def worker_env(
    gpu: str | None,
    *,
    per_gpu: int = 1,
    n_workers: int = 1,
    cpu_count: int | None = None,
    base: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Environment additions for one worker (see the module docstring). Thread counts already set
    in ``base`` (the user's environment) are kept."""
    base = os.environ if base is None else base
    env: dict[str, str] = {}
    cores = cpu_count or os.cpu_count() or 1
    if gpu is not None:
        frac = f"{GPU_MEMORY_SHARE / per_gpu:.3f}"
        env.update({
            "CUDA_VISIBLE_DEVICES": gpu,
            "TF_FORCE_GPU_ALLOW_GROWTH": "true",
            "XLA_PYTHON_CLIENT_PREALLOCATE": "false",
            "XLA_PYTHON_CLIENT_MEM_FRACTION": frac,
            "PYTORCH_CUDA_ALLOC_CONF": "expandable_segments:True",
            GPU_FRACTION_ENV: frac,
        })
    else:
        env.update({"CUDA_VISIBLE_DEVICES": "", "JAX_PLATFORMS": "cpu"})
    threads = str(max(1, cores // max(1, n_workers)))
    for key in ("OMP_NUM_THREADS", "TF_NUM_INTRAOP_THREADS", CPU_THREADS_ENV):
        env[key] = base.get(key) or threads
    env["TF_NUM_INTEROP_THREADS"] = base.get("TF_NUM_INTEROP_THREADS") or str(min(2, int(threads)))
    return env


def worker_command(
    study_file: str | os.PathLike[str],
    storage_url: str,
    *,
    artifacts: str | None = None,
    n_trials: int | None = None,
    epochs: int | None = None,
    progress: bool = False,
    python: str | None = None,
) -> list[str]:
    """argv of one spawned worker. ``storage_url`` must carry no password (see child_env_and_url)."""
    cmd = [python or sys.executable, "-m", "hpsearch", "worker", str(study_file), "--storage", storage_url]
    if artifacts:
        cmd += ["--artifacts", str(artifacts)]
    if n_trials is not None:
        cmd += ["--n-trials", str(n_trials)]
    if epochs is not None:
        cmd += ["--epochs", str(epochs)]
    if not progress:
        cmd.append("--no-progress")
    return cmd



def apply_backend_settings(env: Mapping[str, str] = os.environ) -> None:
    """In a worker, before Keras builds anything: per-backend GPU memory and CPU thread limits that
    environment variables alone do not cover (PyTorch; TensorFlow growth for already-visible GPUs)."""
    backend = env.get("KERAS_BACKEND", "tensorflow")
    frac = env.get(GPU_FRACTION_ENV)
    threads = env.get(CPU_THREADS_ENV)
    if backend == "torch":
        try:
            import torch
        except ImportError:
            return
        if threads and threads.isdigit():
            torch.set_num_threads(int(threads))
        if frac and torch.cuda.is_available():
            torch.cuda.set_per_process_memory_fraction(float(frac), 0)
    elif backend == "tensorflow" and frac:
        try:
            import tensorflow as tf

            for dev in tf.config.list_physical_devices("GPU"):
                tf.config.experimental.set_memory_growth(dev, True)
        except Exception:  # noqa: BLE001 - TF_FORCE_GPU_ALLOW_GROWTH already asks for the same
            pass


def worker_index(env: Mapping[str, str] = os.environ) -> int | None:
    """This worker's index under run_workers (None: started by hand / docker-compose)."""
    try:
        return int(env[INDEX_ENV])
    except (KeyError, ValueError):
        return None
