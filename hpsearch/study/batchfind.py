"""The batch-size finder: the largest batch that fits the device's memory (Géron: use the largest
batch that fits the GPU, with a warm-up), found as Lightning's ``power`` + ``binsearch`` modes do:
double until out-of-memory, then bisect between the last size that fitted and the first that did
not. The out-of-memory error is caught (by class), the Keras session cleared and the process goes
on. On a CPU, where memory rarely runs out first, doubling stops where samples/s stops rising
(by :data:`MIN_GAIN`), since a bigger batch then only means fewer updates per epoch.

``memory_budget`` injects a device budget (a callable that raises :class:`DeviceOutOfMemory` for a
batch that would not fit): it is how the OOM path is tested on machines without a GPU.
"""

from __future__ import annotations

import gc
import os
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from hpsearch.data.prepare import PreparedData, prepare_data
from hpsearch.errors import ConfigError, HPSearchError
from hpsearch.models.builders import call_builder, resolve_builder
from hpsearch.spec.config import StudyConfig
from hpsearch.spec.space import SearchSpace
from hpsearch.study.lrfind import middle_params
from hpsearch.study.validate import apply_overrides, load_study_config

__all__ = ["BatchFindResult", "DeviceOutOfMemory", "BATCH_FIND_ATTR", "MIN_GAIN", "search_batch_size",
           "find_batch_size", "batch_size_for", "find_for_study", "resolve_batch_size", "oom_errors", "on_gpu"]

#: the study user attribute that holds the finder's result behind ``train.batch_size: auto``
BATCH_FIND_ATTR = "batch_find"
#: on a CPU, doubling the batch must raise samples/s by at least this fraction to go on
MIN_GAIN = 0.05
_TIMED_STEPS = (3, 50)  # fewest and most steps timed per size, after one warm-up step (which compiles)
_TIMED_SECONDS = 0.3  # time each size for about this long (between those bounds)


class DeviceOutOfMemory(HPSearchError):
    """A batch did not fit the device's memory (raised by an injected ``memory_budget``)."""


@dataclass
class BatchFindResult:
    """``batch_size``: the answer; ``reason``: ``memory`` (the next size ran out of memory),
    ``throughput`` (CPU: samples/s stopped rising), ``data`` (no more rows than this) or ``limit``;
    ``tried``: each size with ``fits`` and its samples/s."""

    batch_size: int
    reason: str
    device: str
    tried: list[dict[str, Any]] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return asdict(self)


def oom_errors() -> tuple[type[BaseException], ...]:
    """The out-of-memory exception classes of the loaded backends (never matched by message)."""
    kinds: list[type[BaseException]] = [DeviceOutOfMemory, MemoryError]
    tf = sys.modules.get("tensorflow")
    if tf is not None:
        kinds.append(tf.errors.ResourceExhaustedError)
    torch = sys.modules.get("torch")
    if torch is not None and hasattr(torch, "OutOfMemoryError"):
        kinds.append(torch.OutOfMemoryError)
    return tuple(kinds)


def on_gpu() -> bool:
    """Whether Keras' backend trains on an accelerator here."""
    import keras

    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        return bool(tf.config.list_logical_devices("GPU"))
    if backend == "jax":
        import jax

        return jax.default_backend() != "cpu"
    if backend == "torch":
        import torch

        return bool(torch.cuda.is_available())
    return False


def search_batch_size(probe: Callable[[int], float], *, start: int = 32, max_batch: int, cap_throughput: bool,
                      device: str = "cpu") -> BatchFindResult:
    """Double from ``start`` until ``probe`` (samples/s of one size) runs out of memory, then bisect.

    ``probe`` raises one of :func:`oom_errors` when the size does not fit."""
    oom = oom_errors()
    tried: list[dict[str, Any]] = []

    def fits(b: int) -> bool:
        try:
            rate = probe(b)
        except oom:
            tried.append({"batch_size": b, "fits": False, "samples_per_s": None})
            _recover()
            return False
        tried.append({"batch_size": b, "fits": True, "samples_per_s": rate})
        return True

    good, bad, reason = 0, None, "data"
    b = max(1, min(start, max_batch))
    while True:
        if not fits(b):
            bad, reason = b, "memory"
            break
        if cap_throughput and good and tried[-1]["samples_per_s"] < _rate(tried, good) * (1 + MIN_GAIN):
            return BatchFindResult(good, "throughput", device, tried)
        good = b
        if b >= max_batch:
            break
        b = min(2 * b, max_batch)
    if bad is not None:
        if good == 0:
            raise ConfigError(f"train.batch_size: even a batch of {bad} runs out of device memory;"
                              " use a smaller model or a fixed small batch_size")
        while bad - good > 1:  # as Lightning's binsearch: the last fit and the first failure meet
            mid = (good + bad) // 2
            if fits(mid):
                good = mid
            else:
                bad = mid
    return BatchFindResult(good, reason, device, tried)


def _rate(tried: list[dict[str, Any]], batch: int) -> float:
    return float(next(t["samples_per_s"] for t in tried if t["batch_size"] == batch and t["fits"]))


def _recover() -> None:
    """After an out-of-memory error: drop the graphs and buffers of the failed size."""
    import keras

    keras.backend.clear_session()
    gc.collect()


def _probe(build: Callable[[], Any], X: np.ndarray, y: np.ndarray,
           memory_budget: Callable[[int], None] | None) -> Callable[[int], float]:
    def probe(b: int) -> float:
        model = build()
        if memory_budget is not None:
            memory_budget(b)
        idx = np.arange(b) % len(y)
        xb, yb = X[idx], y[idx]
        model.train_on_batch(xb, yb)  # compiles for this shape
        steps, t0 = 0, time.perf_counter()
        while steps < _TIMED_STEPS[0] or (steps < _TIMED_STEPS[1] and time.perf_counter() - t0 < _TIMED_SECONDS):
            model.train_on_batch(xb, yb)
            steps += 1
        return steps * b / max(time.perf_counter() - t0, 1e-9)

    return probe


def batch_size_for(build: Callable[[], Any], X: np.ndarray, y: np.ndarray, *, start: int = 32,
                    max_batch: int | None = None, device: str = "auto",
                    memory_budget: Callable[[int], None] | None = None) -> BatchFindResult:
    """The largest batch ``build()``'s model trains on (see the module docs).

    ``device``: ``auto`` (accelerator if Keras has one), ``gpu`` (bisect on out-of-memory only) or
    ``cpu`` (also stop where samples/s stops rising). ``max_batch`` defaults to the rows of ``X``."""
    if device not in ("auto", "cpu", "gpu"):
        raise ConfigError(f"device: unknown value {device!r}; use one of auto, cpu, gpu")
    kind = ("gpu" if on_gpu() else "cpu") if device == "auto" else device
    limit = len(y) if max_batch is None else min(int(max_batch), len(y))
    return search_batch_size(_probe(build, X, y, memory_budget), start=start, max_batch=limit,
                             cap_throughput=kind == "cpu", device=kind)


def find_for_study(cfg: StudyConfig, space: SearchSpace, data: PreparedData, builder: Any, *,
                   max_batch: int | None = None, device: str = "auto",
                   memory_budget: Callable[[int], None] | None = None) -> BatchFindResult:
    """The finder with a study's builder (parameters at the middle of their ranges) and training rows."""
    import keras

    params = middle_params(space.without_auto())
    if any(getattr(p, "auto", False) for p in space.params.values()):
        params["learning_rate"] = 1e-3  # any rate: only memory and speed are measured

    def build() -> Any:
        keras.backend.clear_session()
        return call_builder(builder, params, data.meta(), clear_session=False)

    return batch_size_for(build, data.X_train, data.y_train, start=32, max_batch=max_batch, device=device,
                           memory_budget=memory_budget)


def find_batch_size(config: str | os.PathLike[str] | StudyConfig, *, max_batch: int | None = None,
                    device: str = "auto") -> BatchFindResult:
    """``hpsearch batch-find``: the finder on a study file (its builder, data, middle parameters)."""
    cfg = config if isinstance(config, StudyConfig) else load_study_config(config)
    return find_for_study(cfg, cfg.search_space(), prepare_data(cfg, 1), resolve_builder(cfg.model.builder),
                          max_batch=max_batch, device=device)


def resolve_batch_size(cfg: StudyConfig, space: SearchSpace, data: PreparedData, builder: Any,
                       study: Any) -> StudyConfig:
    """``cfg`` with ``train.batch_size: auto`` replaced by the finder's answer, found once per study
    and stored on it (later runs and other workers read it back)."""
    if cfg.train.batch_size != "auto":
        return cfg
    stored = study.user_attrs.get(BATCH_FIND_ATTR)
    if stored is None:
        stored = find_for_study(cfg, space, data, builder).summary()
        study.set_user_attr(BATCH_FIND_ATTR, stored)
    return apply_overrides(cfg, {"train.batch_size": int(stored["batch_size"])})
