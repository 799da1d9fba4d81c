"""One worker process on a shared study: ``hpsearch worker STUDY`` (also started by hand on another
machine, or by docker-compose, to join a study), or ``hpsearch worker --study NAME`` with no study
file (:mod:`hpsearch.workers.join`: the stored configuration and data snapshot). It runs the
engine's one trial loop (the same one ``hpsearch run`` uses in a single process) until the global
budget is met; there is no coordinator of our own: the storage is the only shared state (DESIGN.md
section 1).

SIGTERM / SIGINT stop it gracefully (exit 0): the running trial is failed and re-queued. Storage
outages are ridden out for ``HPSEARCH_STORAGE_RETRY`` seconds, including at start-up, when several
workers may race to create the tables.
"""

from __future__ import annotations

import contextlib
import os
import time
from typing import Any

from hpsearch.data.snapshot import RawParts
from hpsearch.engines.base import get_engine
from hpsearch.errors import TRANSIENT_STORAGE_ERRORS, StorageError, UserError
from hpsearch.execution.budget import study_lock
from hpsearch.execution.control import Control, LoopSettings, Retry, install_signals
from hpsearch.execution.loop import hard_stop, process_say
from hpsearch.registry import ENGINES
from hpsearch.spec.config import StudyConfig
from hpsearch.storage import is_connection_error, storage_error
from hpsearch.study.run import finalize, load_config, prepare_context
from hpsearch.trials.context import Observer, RunContext
from hpsearch.workers.plan import MANAGED_ENV, apply_backend_settings, worker_index
from hpsearch.workers.slots import slot_claim

__all__ = ["run_worker", "prepare_with_retry", "check_supports_workers"]


def prepare_with_retry(study: Any, budget: float, **kwargs: Any) -> RunContext:
    """prepare_context, retrying while the server is unreachable or workers race to create tables."""
    start = time.monotonic()
    while True:
        try:
            return prepare_context(study, **kwargs)
        except Exception as exc:
            # a storage call of Optuna's during start-up (load_study, the schema check) wraps a
            # server restart in StorageInternalError: a lost connection by its cause, retried too
            transient = isinstance(exc, TRANSIENT_STORAGE_ERRORS) or is_connection_error(exc)
            if not transient:
                raise
            if time.monotonic() - start > budget:
                if isinstance(exc, TRANSIENT_STORAGE_ERRORS):
                    raise
                raise storage_error(exc, str(kwargs.get("storage") or "")) from None
            time.sleep(1.0 + (os.getpid() % 7) / 10)


def check_supports_workers(cfg: StudyConfig, command: str) -> None:
    """Only engines whose trials go through the shared trial loop can have several workers
    (checked before anything is written)."""
    if get_engine(cfg.search.engine).supports_workers:
        return
    able = [n for n in ENGINES.names() if get_engine(n).supports_workers]
    raise UserError(f"{command} runs engine {', '.join(able)} only; study {cfg.name!r} uses {cfg.search.engine}"
                    f" (set search.engine: {able[0]}, or run it with one process)")


def run_worker(
    study: str | os.PathLike[str] | StudyConfig,
    *,
    storage: str | None = None,
    artifacts: str | None = None,
    n_trials: int | None = None,
    epochs: int | None = None,
    observer: Observer | None = None,
    gpus: list[str] | None = None,
    raws: RawParts | None = None,
) -> None:
    """Join (or create) a study and run trials until the global budget is met, or a graceful stop.

    ``gpus`` (:func:`hpsearch.workers.slots.resolve_slots`): claim one of them through the study and
    pin this process to it before anything trains. ``raws``: the data's rows (a worker that joined
    by name: the study's snapshot, :func:`hpsearch.workers.join.join_study`); by default read from
    the study's sources and checked against the study's snapshot.

    Raises StorageError / StudyFailedError with a one-line message for the CLI.
    """
    settings = LoopSettings.from_env()
    check_supports_workers(load_config(study, n_trials, epochs), "workers")  # before any signal handler
    ctl = Control()
    box: dict[str, RunContext] = {}
    undo = install_signals(ctl, hard_stop(ctl, lambda: box.get("ctx"), settings.deadline, 0), settings.deadline)
    try:
        ctx = prepare_with_retry(study, settings.retry, storage=storage, artifacts=artifacts, n_trials=n_trials,
                                 epochs=epochs, observer=observer, worker_index=worker_index(),
                                 claim=_pin_then_settings(gpus), raws=raws)
        box["ctx"] = ctx
        ctx.control = ctl
        _run(ctx, ctl, settings)
    except StorageError:
        raise
    except Exception as exc:
        ctx_or_none = box.get("ctx")
        if is_connection_error(exc) and ctx_or_none is not None:
            raise storage_error(exc, ctx_or_none.storage_url) from None
        raise
    finally:
        ctl.exited = True
        undo()


def _run(ctx: RunContext, ctl: Control, settings: LoopSettings) -> None:
    """The loop, then (a worker started by hand, once the budget is met) the study's finalisation."""
    with _observed(ctx):
        ctx.engine.run(ctx)
    finished = ctx.engine.is_complete(ctx)
    if finished and not ctl.stopping and not os.environ.get(MANAGED_ENV):
        retry = Retry(ctx.storage_url, ctl, settings.retry, process_say(ctx))
        study_id = retry(lambda: ctx.study_id, "finalize")
        with study_lock(ctx.storage, ctx.storage_url, study_id, ctx.study.study_name, timeout=600):
            retry(lambda: finalize(ctx), "finalize")
    if ctl.stopping:
        process_say(ctx)(f"stopped ({ctl.stop_reason}); no trial left running")


def _pin_then_settings(gpus: list[str] | None) -> Any:
    """The claim prepare_context makes once the study is open: the GPU slot (if any), then the
    backend settings that apply to the device it leaves visible."""
    pin = slot_claim(gpus) if gpus else None

    def claim(study: Any, storage: Any, url: str, observer: Any) -> int | None:
        launch = pin(study, storage, url, observer) if pin is not None else None
        apply_backend_settings()
        return launch

    return claim


@contextlib.contextmanager
def _observed(ctx: RunContext) -> Any:
    ctx.observer.begin(0, None)
    try:
        yield
    finally:
        ctx.observer.end()
