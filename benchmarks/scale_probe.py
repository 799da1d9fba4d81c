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
import importlib.abc
import importlib.util
import json
import os
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

EVENTS_ENV = "HPSEARCH_BENCH_EVENTS"
RECORD_ENV = "HPSEARCH_BENCH_RECORD"
_BUDGET = "hpsearch.execution.budget"
_RDB = "optuna.storages._rdb.storage"


def _patch_budget(module: Any) -> None:
    real = module.study_lock
    path = os.path.join(os.environ[EVENTS_ENV], f"lock-{os.getpid()}.txt")

    @contextlib.contextmanager
    def study_lock(*args: Any, **kwargs: Any) -> Iterator[None]:
        t0 = time.perf_counter()
        with real(*args, **kwargs):
            wait = time.perf_counter() - t0
            with open(path, "a") as f:
                f.write(f"{wait:.6f}\n")
            yield

    module.study_lock = study_lock  # Budget and take_launch look the name up at each call


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


class _Finder(importlib.abc.MetaPathFinder):
    """Runs a patch right after its module is first imported, then steps aside for that module."""

    def __init__(self, patches: dict[str, Callable[[Any], None]]) -> None:
        self.patches = patches

    def find_spec(self, name: str, path: Any, target: Any = None) -> Any:
        patch = self.patches.get(name)
        if patch is None:
            return None
        del self.patches[name]
        if not self.patches:
            sys.meta_path.remove(self)
        spec = next((s for f in sys.meta_path if f is not self and hasattr(f, "find_spec")
                     for s in [f.find_spec(name, path, target)] if s is not None), None)
        if spec is None or spec.loader is None:
            return spec
        loader = spec.loader
        exec_module = loader.exec_module

        def run(module: Any) -> None:
            exec_module(module)
            patch(module)

        loader.exec_module = run  # type: ignore[method-assign]
        return spec


def install() -> None:
    if EVENTS_ENV not in os.environ:
        return
    patches: dict[str, Callable[[Any], None]] = {_BUDGET: _patch_budget}
    if os.environ.get(RECORD_ENV) == "1":
        patches[_RDB] = _patch_rdb
    sys.meta_path.insert(0, _Finder(patches))
