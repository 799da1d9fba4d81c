"""The build log of tests/worker_builders.py for packed trials, which no user builder can trace (packing
takes the built-in ``mlp`` only): each trial a process takes into a pack (at its start or refilling a
slot; once, though a trial that waited for a slot is carried to the next pack) writes one JSON line
(pid, tag, time) to ``$HPSEARCH_TEST_EVENTS/executions.jsonl``.

The packed fault scenarios of tests/workers/test_faults.py put a ``sitecustomize.py`` that calls
:func:`install` on their processes' ``PYTHONPATH``, so ``hpsearch run`` and the workers it starts all
log. :func:`install` imports nothing heavy: it wraps ``PackedRunner.member_params`` once
``hpsearch.packing.runner`` is first imported (a worker pins its threads before the backend loads).
"""

from __future__ import annotations

import importlib.abc
import json
import os
import sys
import time
from collections.abc import Callable
from typing import Any

TARGET = "hpsearch.packing.runner"
TAG_ENV = "HPSEARCH_TEST_TAG"  # the parameter that names a configuration (default learning_rate)


def _patch(module: Any) -> None:
    runner = module.PackedRunner
    original = runner.member_params
    events, tag = os.environ["HPSEARCH_TEST_EVENTS"], os.environ.get(TAG_ENV, "learning_rate")

    seen: set[int] = set()

    def member_params(self: Any, trial: Any) -> Any:
        out = original(self, trial)
        if trial.number in seen:  # a trial carried to the next pack is asked its params again
            return out
        seen.add(trial.number)
        with open(os.path.join(events, "executions.jsonl"), "a") as f:
            f.write(json.dumps({"pid": os.getpid(), "tag": trial.params[tag], "t": time.time()}) + "\n")
        return out

    runner.member_params = member_params


class PatchOnImport(importlib.abc.MetaPathFinder):
    """Runs ``patches[name](module)`` right after module ``name`` is first imported (before any other
    module can take a name from it), then steps aside for that module; gone once all are patched.
    Also used by benchmarks/scale_probe.py."""

    def __init__(self, patches: dict[str, Callable[[Any], None]]) -> None:
        self.patches = dict(patches)

    def find_spec(self, name: str, path: Any, target: Any = None) -> Any:
        patch = self.patches.pop(name, None)
        if patch is None:
            return None
        sys.meta_path.remove(self)
        try:
            import importlib.util

            spec = importlib.util.find_spec(name)
        finally:
            if self.patches:
                sys.meta_path.insert(0, self)
        if spec is None or spec.loader is None:
            return spec
        loader = spec.loader
        exec_module = loader.exec_module

        def patched(module: Any) -> None:
            exec_module(module)
            patch(module)

        loader.exec_module = patched  # type: ignore[method-assign]
        return spec


def install() -> None:
    if os.environ.get("HPSEARCH_TEST_EVENTS"):
        sys.meta_path.insert(0, PatchOnImport({TARGET: _patch}))
