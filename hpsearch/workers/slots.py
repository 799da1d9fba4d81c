"""GPU slots of self-started workers: each worker pins itself to one GPU before a backend starts.

A worker started by a cluster's launcher (``docker compose --scale worker=8``, a Kubernetes
Indexed Job, a Slurm job array) often sees every GPU of its host. With ``--gpus 0,1,2,3`` (or
``HPSEARCH_GPUS=0,1,2,3``; ``auto``: the GPUs this process sees, from ``CUDA_VISIBLE_DEVICES`` or
``nvidia-smi -L``) it claims a slot through the study: its launch number
(:func:`hpsearch.execution.budget.take_launch`, a counter on the study taken under the study lock)
modulo the list. N workers started together get N consecutive launch numbers, so N workers on N
GPUs get one GPU each. The worker then sets ``CUDA_VISIBLE_DEVICES`` to that one GPU, says so in one
line and records the slot on the study (system attr ``hpsearch:gpu_slot:<launch>``).

The claim happens as soon as the study is open, before anything trains; the CLI does not preload
TensorFlow for such a worker, and the record lists any deep-learning module that was imported
before the claim anyway (``backends_loaded``; CUDA reads the variable when a backend first touches
a device). Workers of ``run --workers`` are pinned by their launcher and claim nothing.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable, Mapping
from typing import Any

from hpsearch.errors import UserError
from hpsearch.execution.budget import take_launch
from hpsearch.workers.plan import MANAGED_ENV, parse_gpus

__all__ = ["GPUS_ENV", "SLOT_ATTR", "BACKENDS", "resolve_slots", "visible_gpus", "parse_nvidia_smi", "slot_claim"]

GPUS_ENV = "HPSEARCH_GPUS"
SLOT_ATTR = "hpsearch:gpu_slot:"  # + launch number: study system attr, one per claiming worker
BACKENDS = ("tensorflow", "keras", "jax", "torch")


def parse_nvidia_smi(text: str) -> list[str]:
    """GPU ids from ``nvidia-smi -L``: indexes ``0, 1, ...``; a GPU split into MIG instances gives
    its instances' ``MIG-`` UUIDs instead (a MIG instance is only addressable by UUID)."""
    ids: list[str] = []
    gpu_index: str | None = None
    migs: list[str] = []

    def flush() -> None:
        if gpu_index is not None:
            ids.extend(migs or [gpu_index])

    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("GPU ") and ":" in stripped:
            flush()
            gpu_index, migs = stripped[4:].split(":", 1)[0].strip(), []
        elif stripped.startswith("MIG ") and "UUID: MIG-" in stripped:
            migs.append("MIG-" + stripped.split("UUID: MIG-", 1)[1].rstrip(")").strip())
    flush()
    return ids


def visible_gpus(env: Mapping[str, str] = os.environ, smi: Callable[[], str | None] | None = None) -> list[str]:
    """The GPUs this process sees: ``CUDA_VISIBLE_DEVICES`` when set (empty: none), else
    ``nvidia-smi -L`` (none when the command is absent or fails)."""
    if "CUDA_VISIBLE_DEVICES" in env:
        return parse_gpus(env["CUDA_VISIBLE_DEVICES"] or None, what="CUDA_VISIBLE_DEVICES")
    text = (smi or _nvidia_smi)()
    return parse_nvidia_smi(text) if text else []


def _nvidia_smi() -> str | None:
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        r = subprocess.run([exe, "-L"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return r.stdout if r.returncode == 0 else None


def resolve_slots(flag: str | None, env: Mapping[str, str] = os.environ,
                  smi: Callable[[], str | None] | None = None) -> list[str]:
    """The GPU list a self-started worker claims a slot from ([]: no pinning): ``--gpus`` if given,
    else ``$HPSEARCH_GPUS``; ``auto`` is :func:`visible_gpus`. A malformed list, or ``auto`` with no
    GPU visible, is a :class:`UserError` naming where the value came from."""
    if env.get(MANAGED_ENV):
        return []  # run --workers: the launcher already pinned this process
    what, spec = ("--gpus", flag) if flag is not None else (GPUS_ENV, env.get(GPUS_ENV))
    if spec is None or (what == GPUS_ENV and not spec.strip()):
        return []
    if spec.strip().lower() == "auto":
        found = visible_gpus(env, smi)
        if not found:
            raise UserError(f"{what} auto: this process sees no GPU (CUDA_VISIBLE_DEVICES is empty or unset and "
                            "nvidia-smi -L lists none); give the ids (e.g. 0,1) or leave it out to run on the CPU")
        return found
    return parse_gpus(spec, what=what)


def slot_claim(gpus: list[str]) -> Callable[[Any, Any, str, Any], int]:
    """The claim :func:`hpsearch.study.run.prepare_context` makes once the study is open:
    ``claim(study, storage, url, observer) -> launch number``."""

    def claim(study: Any, storage: Any, url: str, observer: Any) -> int:
        name = study.study_name
        study_id = int(storage.get_study_id_from_name(name))
        launch = take_launch(storage, url, study_id, name)
        slot = launch % len(gpus)
        os.environ["CUDA_VISIBLE_DEVICES"] = gpus[slot]
        loaded = [m for m in BACKENDS if m in sys.modules]
        line = (f"hpsearch: GPU slot {slot} of {','.join(gpus)} (launch {launch} mod {len(gpus)}):"
                f" CUDA_VISIBLE_DEVICES={gpus[slot]}")
        if loaded:
            line += f" ({', '.join(loaded)} imported before the claim)"
        storage.set_study_system_attr(study_id, f"{SLOT_ATTR}{launch}", {
            "gpu": gpus[slot], "slot": slot, "slots": list(gpus), "launch": launch,
            "host": socket.gethostname(), "pid": os.getpid(),
            "cuda_visible_devices": os.environ["CUDA_VISIBLE_DEVICES"], "backends_loaded": loaded,
        })
        observer.message(line)
        return launch

    return claim
