"""Keras callbacks used by the trial runner: per-epoch reporting + pruning, and a NaN guard.

They import only ``keras`` (backend-agnostic) and record what happened on the callback object so
the runner decides the trial's state after ``fit`` returns (raising inside ``fit`` would lose the
epoch count and the weights).
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import keras

from hpsearch.metrics import value_from_logs
from hpsearch.models import schedules

__all__ = ["PruningReporter", "NaNGuard", "EpochValues", "EpochLR", "TrialTimer", "trial_timeout_reason"]


class EpochValues(keras.callbacks.Callback):
    """Collects the study metric per epoch (``values``) from the logs and, with ``watch``, that log
    key's value (``watched``: what early stopping watches when it is not the metric)."""

    def __init__(self, metric: str, y_valid_var: float | None = None, watch: str | None = None) -> None:
        super().__init__()
        self.metric = metric
        self.y_valid_var = y_valid_var
        self.watch = watch
        self.values: list[float | None] = []
        self.watched: list[float] = []

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self.values.append(value_from_logs(self.metric, logs or {}, self.y_valid_var))
        if self.watch is not None:
            self.watched.append(float((logs or {}).get(self.watch, math.nan)))


class PruningReporter(EpochValues):
    """Reports the validation metric to the Optuna trial every epoch; stops training when pruned.

    The per-epoch write (``trial.report``) runs on a one-thread executor, so it overlaps with the
    next epoch's training instead of stalling it (DESIGN.md: storage writes off the hot path).
    Writes stay in order; before the pruner is asked (and at the end of training) the pending ones
    are waited for, and a storage error surfaces there. ``storage_time`` is the time the training
    thread actually waited on storage.
    """

    def __init__(self, trial: Any, metric: str, y_valid_var: float | None = None,
                 check_steps: set[int] | None = None, report: Callable[[float, int], Any] | None = None,
                 ask: Callable[[int, float], bool] | None = None) -> None:
        """``report(value, step)`` and ``ask(step, value)`` (prune?) default to the Optuna trial's
        ``report`` and ``should_prune``; a study of several objectives writes its values and asks its
        own rung rule (:mod:`hpsearch.trials.rungs`), since Optuna's take one value."""
        super().__init__(metric, y_valid_var)
        self.trial = trial
        self.report = report if report is not None else trial.report
        self.ask = ask if ask is not None else (lambda step, value: trial.should_prune())
        # steps where the pruner can decide (None: every step); elsewhere asking it is a wasted
        # storage round trip
        self.check_steps = check_steps
        self.pruned_at: int | None = None
        self.storage_time = 0.0
        self._executor: ThreadPoolExecutor | None = None
        self._pending: Future[Any] | None = None
        self._error: BaseException | None = None

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hpsearch-report")

    def _keep_error(self, fut: Future[Any]) -> None:
        if self._error is None and fut.exception() is not None:
            self._error = fut.exception()

    def flush(self) -> None:
        """Wait for the queued reports; re-raise the first storage error any of them hit."""
        if self._pending is not None:
            pending, self._pending = self._pending, None
            with contextlib.suppress(BaseException):
                pending.result()
        if self._error is not None:
            err, self._error = self._error, None
            raise err

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        super().on_epoch_end(epoch, logs)
        value = self.values[-1]
        if value is None or not math.isfinite(value):
            return  # the NaN guard stops training; nothing sensible to report
        step = epoch
        t0 = time.perf_counter()
        if self._executor is None:  # used outside fit(): report synchronously
            self.report(value, step)
        else:
            self._pending = self._executor.submit(self.report, value, step)
            self._pending.add_done_callback(self._keep_error)
        prune = False
        if self.check_steps is None or step in self.check_steps:
            self.flush()
            prune = self.ask(step, value)
        self.storage_time += time.perf_counter() - t0
        if prune:
            self.pruned_at = step
            self.model.stop_training = True

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        t0 = time.perf_counter()
        try:
            self.flush()
        finally:
            self.close()
            self.storage_time += time.perf_counter() - t0

    def close(self) -> None:
        """Stop the writer thread (also when ``fit`` raised before ``on_train_end``)."""
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None


class NaNGuard(keras.callbacks.TerminateOnNaN):
    """Keras' ``TerminateOnNaN`` (stops at the first batch whose loss is NaN / inf) that also
    remembers where and what the loss was, so the runner fails the trial with that reason
    ("training diverged: ..."), and stops on a non-finite ``val_loss`` too, which Keras' callback
    does not watch (a model whose training loss stays finite can still predict inf on new rows)."""

    def __init__(self) -> None:
        super().__init__()
        self.diverged_at: int | None = None
        self.loss: float | None = None
        self._epoch = 0

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._epoch = epoch

    def _diverged(self, at: int, loss: Any) -> None:
        if self.diverged_at is None:
            self.diverged_at, self.loss = at, float(loss)
        self.model.stop_training = True

    def on_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            super().on_batch_end(batch, logs)  # Keras' own stop
            self._diverged(self._epoch + 1, loss)

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        for key in ("loss", "val_loss"):
            v = (logs or {}).get(key)
            if v is not None and not math.isfinite(float(v)):
                self._diverged(epoch + 1, v)
                return


class EpochLR(keras.callbacks.Callback):
    """Sets the learning rate each epoch for a model whose compile step attached an epoch schedule
    or a warm-up (:mod:`hpsearch.models.schedules`); does nothing for any other model. Both engines add
    one to every fit, so the schedule follows the model, not the engine.

    Keras does the work where it has the mechanism: ``keras.callbacks.LearningRateScheduler`` sets
    each epoch's rate from :func:`~hpsearch.models.schedules.lr_at` (power, the step schedules under
    a warm-up, and the formulas Keras lacks: 1cycle and the linear warm-up), and
    ``keras.callbacks.ReduceLROnPlateau`` (``val_loss``, factor ``lr_decay_rate``, ``lr_patience``,
    ``min_delta`` 0) cuts ``performance``'s rate after the warm-up. The plateau callback lives on the
    model's schedule state, not on this callback: the Optuna engine's CV folds fit one epoch per
    ``fit`` call, and Keras' callback would forget its best ``val_loss`` at every ``on_train_begin``.
    A rate of 1 never cuts (Keras refuses a factor >= 1): no plateau callback then."""

    def __init__(self) -> None:
        super().__init__()
        self._state: schedules.ScheduleState | None = None
        self._scheduler: keras.callbacks.LearningRateScheduler | None = None

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        self._state = state = schedules.attached(self.model)
        if state is None:
            return
        self._scheduler = keras.callbacks.LearningRateScheduler(self._rate)
        self._scheduler.set_model(self.model)
        spec = state.spec
        if spec.name == "performance" and state.plateau is None and spec.decay_rate < 1.0:
            state.plateau = keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=spec.decay_rate,
                                                              patience=spec.patience, min_delta=0.0, min_lr=0.0)

    def _rate(self, epoch: int, lr: float | None = None) -> float:
        state = self._state
        assert state is not None
        steps = int((self.params or {}).get("steps") or 1)
        return float(schedules.lr_at(state.spec, epoch, steps, state.rate))

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        state = self._state
        if state is None or self._scheduler is None:
            return
        self._scheduler.on_epoch_begin(epoch, logs)
        state.history.append(float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)))

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        state = self._state
        if state is None:
            return
        if state.plateau is not None and epoch >= state.spec.warmup_epochs and (logs or {}).get("val_loss") is not None:
            state.plateau.set_model(self.model)
            state.plateau.on_epoch_end(epoch, dict(logs or {}))  # a copy: its learning_rate entry is the cut one
            state.rate = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
        if logs is not None:
            logs["learning_rate"] = float(state.history[-1]) if state.history else state.rate


def trial_timeout_reason(limit: float, elapsed: float) -> str:
    """The failure reason of a trial stopped by ``train.trial_timeout``."""
    return f"trial_timeout: training stopped after {elapsed:.1f} s (train.trial_timeout = {limit:g} s)"


class TrialTimer(keras.callbacks.Callback):
    """Stops training at the next batch once a trial ran past ``train.trial_timeout`` and remembers
    it (``elapsed``), so the runner records the trial as failed with that reason.

    ``deadline`` is wall-clock time (``time.time()``): the folds of one candidate, trained in other
    processes by joblib, share it.
    """

    def __init__(self, limit: float, deadline: float | None = None) -> None:
        super().__init__()
        self.limit = limit
        self.deadline = time.time() + limit if deadline is None else deadline
        self.elapsed: float | None = None  # seconds the trial had run when it was stopped

    @property
    def expired(self) -> bool:
        return self.elapsed is not None

    def _check(self) -> None:
        now = time.time()
        if now >= self.deadline:
            if self.elapsed is None:
                self.elapsed = self.limit + (now - self.deadline)
            self.model.stop_training = True

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        self._check()

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._check()
