"""Keras callbacks used by the trial runner: per-epoch reporting + pruning, and a NaN guard.

They import only ``keras`` (backend-agnostic) and record what happened on the callback object so
the runner decides the trial's state after ``fit`` returns (raising inside ``fit`` would lose the
epoch count and the weights).
"""

from __future__ import annotations

import math
import time
from typing import Any, Optional

import keras

from hpsearch.metrics import value_from_logs

__all__ = ["PruningReporter", "NaNGuard", "EpochValues"]


class EpochValues(keras.callbacks.Callback):
    """Collects the study metric per epoch (``values``) from the logs."""

    def __init__(self, metric: str, y_valid_var: Optional[float] = None) -> None:
        super().__init__()
        self.metric = metric
        self.y_valid_var = y_valid_var
        self.values: list[Optional[float]] = []

    def on_epoch_end(self, epoch: int, logs: Optional[dict[str, Any]] = None) -> None:
        self.values.append(value_from_logs(self.metric, logs or {}, self.y_valid_var))


class PruningReporter(EpochValues):
    """Reports the validation metric to the Optuna trial every epoch; stops training when pruned."""

    def __init__(self, trial: Any, metric: str, y_valid_var: Optional[float] = None, step_offset: int = 0,
                 check_steps: Optional[set[int]] = None) -> None:
        super().__init__(metric, y_valid_var)
        self.trial = trial
        # steps where the pruner can decide (None: every step); elsewhere asking it is a wasted
        # storage round trip
        self.check_steps = check_steps
        self.step_offset = step_offset
        self.pruned_at: Optional[int] = None
        self.storage_time = 0.0  # seconds spent in report/should_prune (storage round trips)

    def on_epoch_end(self, epoch: int, logs: Optional[dict[str, Any]] = None) -> None:
        super().on_epoch_end(epoch, logs)
        value = self.values[-1]
        if value is None or not math.isfinite(value):
            return  # the NaN guard stops training; nothing sensible to report
        step = epoch + self.step_offset
        t0 = time.perf_counter()
        self.trial.report(value, step)
        prune = (self.check_steps is None or step in self.check_steps) and self.trial.should_prune()
        self.storage_time += time.perf_counter() - t0
        if prune:
            self.pruned_at = step
            self.model.stop_training = True


class NaNGuard(keras.callbacks.Callback):
    """Stops training at the first non-finite loss and remembers where (the trial then FAILs)."""

    def __init__(self) -> None:
        super().__init__()
        self.diverged_at: Optional[int] = None
        self.loss: Optional[float] = None
        self._epoch = 0

    def on_epoch_begin(self, epoch: int, logs: Optional[dict[str, Any]] = None) -> None:
        self._epoch = epoch

    def _check(self, logs: Optional[dict[str, Any]]) -> None:
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)) and self.diverged_at is None:
            self.diverged_at = self._epoch + 1
            self.loss = float(loss)
            self.model.stop_training = True

    def on_epoch_end(self, epoch: int, logs: Optional[dict[str, Any]] = None) -> None:
        self._check(logs)
        val = (logs or {}).get("val_loss")
        if val is not None and not math.isfinite(float(val)) and self.diverged_at is None:
            self.diverged_at = epoch + 1
            self.loss = float(val)
            self.model.stop_training = True
