"""The trial callbacks of a run, gathered in one place: the study file's trackers (``tracking:``) and
``search.callbacks``, then the ones given from Python; and the Keras callbacks added to every fit.

A callback reference is ``package.module:function`` (the form of a user builder); an unknown one is
a one-line :class:`~hpsearch.errors.ConfigError` naming ``search.callbacks``. A tracker's missing
extra is one line naming the ``pip install``.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable, Sequence
from typing import Any

from hpsearch.errors import ConfigError
from hpsearch.tracking.base import Tracker
from hpsearch.trials.context import RunContext

__all__ = ["Tracker", "EXTRA", "resolve_callbacks", "check_tracking", "attach_callbacks", "end_trackers"]

#: what installs the trackers' packages (``hpsearch[mlflow]`` and ``hpsearch[tensorboard]`` one each)
EXTRA = "pip install 'hpsearch[tracking]'"


def resolve_callbacks(refs: Sequence[str], field: str = "search.callbacks") -> list[Callable[..., Any]]:
    """``package.module:function`` references -> the callables (one-line ConfigError naming ``field``)."""
    out = []
    fix = "; give 'package.module:function' importable from where hpsearch runs"
    for ref in refs:
        module_name, _, name = ref.partition(":")
        try:
            found: Any = importlib.import_module(module_name)
        except Exception as exc:  # ImportError, or any error raised by the module itself
            reason = " ".join(f"{type(exc).__name__}: {exc}".split())
            raise ConfigError(f"{field}: cannot import {module_name!r} ({reason}){fix}") from exc
        for part in name.split("."):
            found = getattr(found, part, None)
        if found is None or not callable(found):
            raise ConfigError(f"{field}: {ref!r} is not a function of module {module_name!r}{fix}")
        out.append(found)
    return out


def check_tracking(cfg: Any) -> None:
    """``tracking:``'s packages are installed (a one-line ConfigError naming the extra otherwise)."""
    t = cfg.tracking
    for key, module in (("mlflow", "mlflow"), ("tensorboard", "tensorboard")):
        if t is not None and getattr(t, key) and importlib.util.find_spec(module) is None:
            raise ConfigError(f"tracking.{key}: the {module} package is not installed; pip install 'hpsearch[{key}]'")
    if t is not None and t.log_models and not t.mlflow:
        raise ConfigError("tracking.log_models: the models are logged to MLflow; give tracking.mlflow: URI too"
                          " (or drop log_models)")
    resolve_callbacks(cfg.search.callbacks)


def attach_callbacks(ctx: RunContext, callbacks: Sequence[Callable[..., Any]] | None = None,
                     keras_callbacks: Sequence[Any] | None = None) -> None:
    """Set ``ctx.trial_callbacks`` (trackers, ``search.callbacks``, then ``callbacks``) and
    ``ctx.keras_callbacks``; each tracker says where it writes, in one line."""
    t = ctx.cfg.tracking
    trackers: list[Tracker] = []
    if t is not None and t.mlflow:
        from hpsearch.tracking.mlflowlog import MlflowTracker

        trackers.append(MlflowTracker(t.mlflow, ctx.study, ctx.observer.message,
                                      models=ctx.artifact_store if t.log_models else None))
    if t is not None and t.tensorboard:
        from hpsearch.tracking.tblog import TensorBoardTracker

        trackers.append(TensorBoardTracker(t.tensorboard, ctx.study, ctx.space, ctx.metric, ctx.observer.message))
    ctx.trial_callbacks = [*trackers, *resolve_callbacks(ctx.cfg.search.callbacks), *(callbacks or [])]
    ctx.keras_callbacks = list(keras_callbacks or [])


def end_trackers(ctx: RunContext) -> None:
    """Close each tracker's record of the study (after ``finalize``)."""
    for f in ctx.trial_callbacks:
        if isinstance(f, Tracker):
            f.end_study(ctx.study)
