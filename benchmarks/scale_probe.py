"""Measurement probes for benchmarks/bench_scale.py, installed in every process of a run through a
``sitecustomize.py`` on ``PYTHONPATH`` (as tests/pack_trace.py does for the fault suite).

:func:`install` imports nothing heavy (a worker pins its GPU and threads before a backend loads): it
waits for the modules to be imported, then

* wraps ``hpsearch.execution.budget.study_lock`` so that each wait for the study lock (asking for it
  to holding it) is appended, in seconds, to ``$HPSEARCH_BENCH_EVENTS/lock-<pid>.txt``;
* with ``HPSEARCH_BENCH_RECORD=1``, counts the calls of each public ``RDBStorage`` method and writes
  them to ``$HPSEARCH_BENCH_EVENTS/calls-<pid>.json`` when the process exits (the call mix that the
  benchmark's simulated clients replay).
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

from tests.pack_trace import PatchOnImport  # the same import hook as the fault suite's trace

EVENTS_ENV = "HPSEARCH_BENCH_EVENTS"
RECORD_ENV = "HPSEARCH_BENCH_RECORD"
_BUDGET = "hpsearch.execution.budget"
_RDB = "optuna.storages._rdb.storage"


def timed_lock(real: Callable[..., Any], on_wait: Callable[[float], None]) -> Callable[..., Any]:
    """``study_lock`` that passes each wait for the lock (asking for it to holding it, s) to ``on_wait``."""

    @contextlib.contextmanager
    def study_lock(*args: Any, **kwargs: Any) -> Iterator[None]:
        t0 = time.perf_counter()
        with real(*args, **kwargs):
            on_wait(time.perf_counter() - t0)
            yield

    return study_lock


def _patch_budget(module: Any) -> None:
    path = os.path.join(os.environ[EVENTS_ENV], f"lock-{os.getpid()}.txt")

    def write(wait: float) -> None:
        with open(path, "a") as f:
            f.write(f"{wait:.6f}\n")

    module.study_lock = timed_lock(module.study_lock, write)  # Budget and take_launch look it up per call


def _patch_rdb(module: Any) -> None:
    cls = module.RDBStorage
    calls: Counter[str] = Counter()
    for name in [n for n in vars(cls) if not n.startswith("_") and callable(getattr(cls, n))]:
        original = getattr(cls, name)

        def counted(self: Any, *args: Any, __name: str = name, __f: Callable[..., Any] = original, **kw: Any) -> Any:
            calls[__name] += 1
            return __f(self, *args, **kw)

        setattr(cls, name, counted)
    path = os.path.join(os.environ[EVENTS_ENV], f"calls-{os.getpid()}.json")

    def dump() -> None:
        if calls:
            with open(path, "w") as f:
                f.write(json.dumps(dict(calls)))

    atexit.register(dump)


def install() -> None:
    if EVENTS_ENV not in os.environ:
        return
    patches: dict[str, Callable[[Any], None]] = {_BUDGET: _patch_budget}
    if os.environ.get(RECORD_ENV) == "1":
        patches[_RDB] = _patch_rdb
    sys.meta_path.insert(0, PatchOnImport(patches))
