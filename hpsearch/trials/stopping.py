"""The one early-stopping rule of every engine (Optuna, random, grid, halving; packed or not):
what it watches, in which direction, how patiently, and which weights it keeps.

The monitor is the study's first metric on the validation rows (``train.early_stopping.monitor:
metric``, the default) or the compiled loss on them (``val_loss``). Keras logs ``rmse`` and ``r2``
as ``val_mse``, which orders epochs the same way, so the rule watches ``val_mse`` for them.
The rule is Keras' ``EarlyStopping`` (built by :meth:`StopRule.keras_callback`); where Keras does
not train the model (packs, the Optuna engine's lockstep CV folds) the same comparison, patience
count and best epoch come from :meth:`StopRule.improved` / :meth:`StopRule.exhausted`
(``hpsearch.packing.train.member_monitor`` gives a pack's per-member monitored quantity).

Without ``train.early_stopping`` (``null``) nothing stops early; the Optuna engine still keeps the
best epoch's weights (its trial value is the best epoch's, the stored model must be that one),
while the scikit-learn engines keep the last epoch's, as a plain scikeras ``fit`` does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from hpsearch.records import best_of, is_better
from hpsearch.spec.config import EarlyStoppingConfig

__all__ = ["StopRule", "stop_rule"]


@dataclass(frozen=True)
class StopRule:
    """Early stopping as configured, for one study."""

    key: str  # the Keras log key watched: val_<metric>, val_mse (rmse, r2) or val_loss
    mode: str  # "max" or "min"
    patience: int
    min_delta: float
    restore_best: bool
    enabled: bool  # False: train.early_stopping is null (patience = all epochs)
    on_metric: bool  # watches the study metric (the default), not val_loss

    @property
    def direction(self) -> str:
        return "maximize" if self.mode == "max" else "minimize"

    def improved(self, value: float | None, best: float | None) -> bool:
        """Keras ``EarlyStopping``'s test: better than ``best`` by more than ``min_delta``."""
        return is_better(value, best, self.direction, self.min_delta)

    def exhausted(self, wait: int, epoch: int) -> bool:
        """Keras' stop test after ``wait`` epochs without improvement (never at the first epoch)."""
        return wait >= self.patience and epoch > 0

    def keras_callbacks(self) -> list[Any]:
        """The callbacks one ``fit`` takes for the rule: Keras' ``EarlyStopping``, or none when the
        rule neither stops nor restores (no early stopping, last weights kept)."""
        import keras

        if not self.enabled and not self.restore_best:
            return []
        return [keras.callbacks.EarlyStopping(monitor=self.key, mode=self.mode, patience=self.patience,
                                              min_delta=self.min_delta, restore_best_weights=self.restore_best)]

    def trial_value(self, values: Sequence[float | None], best_epoch: int, direction: str) -> tuple[float | None, int]:
        """(value, 0-based epoch) of a trained model from its per-epoch study metric ``values``:
        watching the metric, its best epoch (the weights restored); watching ``val_loss``, the
        metric at the epoch whose weights are kept (``best_epoch``, 1-based, or the last epoch)."""
        if self.on_metric or not values:
            return best_of(list(values), direction)
        i = best_epoch - 1 if self.restore_best and best_epoch > 0 else len(values) - 1
        return values[i], i


def stop_rule(es: EarlyStoppingConfig | None, epochs: int, metric: str, direction: str, *,
              best_weights_when_off: bool) -> StopRule:
    """The rule for ``train.early_stopping`` ``es`` on a study of ``metric`` / ``direction``;
    ``best_weights_when_off``: what an engine keeps when ``es`` is null (see the module docstring)."""
    on_metric = es is None or es.monitor == "metric"
    if not on_metric:
        key, mode = "val_loss", "min"
    elif metric in ("rmse", "r2"):
        key, mode = "val_mse", "min"
    else:
        key, mode = f"val_{metric}", "max" if direction == "maximize" else "min"
    if es is None:
        return StopRule(key, mode, epochs, 0.0, best_weights_when_off, False, True)
    return StopRule(key, mode, es.patience, es.min_delta, es.restore_best_weights, True, on_metric)
