"""Learning-rate schedules that change the rate once per epoch, and the linear warm-up for any of them.

The three step schedules (``exponential``, ``cosine``, ``piecewise``) are Keras schedule objects
driven by the optimizer's step counter (see :func:`hpsearch.models.builders.compile_for_task`). The
schedules here need what an optimizer cannot see: ``performance`` watches the validation loss,
``onecycle`` and ``power`` count epochs, and a warm-up of ``lr_warmup_epochs`` precedes any
schedule. For these the optimizer gets a plain float rate and the compile step attaches a
:class:`ScheduleSpec` to the model (:func:`attach`); the epoch callback
(:class:`hpsearch.trials.callbacks.EpochLR`, added by both engines to every fit) sets the rate at the start
of each epoch from :func:`lr_at` through Keras' ``LearningRateScheduler``. With a warm-up, the step
schedules are also evaluated here, at the first step of each epoch.

Formulas (``lr`` = ``learning_rate``, ``t`` = epochs since the warm-up ended, ``W`` = warm-up epochs):

* warm-up, epoch ``e < W``: ``lr * (e + 1) / (W + 1)``
* ``power``: ``lr / (1 + t / lr_decay_epochs) ** lr_power``
* ``onecycle`` over ``C = lr_decay_epochs`` epochs, ``u = max(1, floor(0.45 C))``, ``lo = lr *
  lr_decay_rate``: linear ``lo -> lr`` for ``u`` epochs, ``lr -> lo`` for ``u`` epochs, then linear
  ``lo -> lo / 1000`` until epoch ``C``, ``lo / 1000`` after it (1cycle, Smith 2018)
* ``performance``: ``lr``, multiplied by ``lr_decay_rate`` each time ``val_loss`` has not improved
  for ``lr_patience`` epochs (Keras' ``ReduceLROnPlateau``, driven by the epoch callback)
* ``exponential``/``cosine``/``piecewise``: the Keras formulas at step ``t * steps_per_epoch``.
"""

from __future__ import annotations

import math
import weakref
from dataclasses import dataclass, field
from typing import Any

from hpsearch.errors import ConfigError

__all__ = ["STEP_SCHEDULES", "EPOCH_SCHEDULES", "LR_SCHEDULES", "ScheduleSpec", "ScheduleState",
           "attach", "attached", "lr_at", "make_spec", "needs_epochs", "optimizer_rate"]

STEP_SCHEDULES = ("exponential", "cosine", "piecewise")
EPOCH_SCHEDULES = ("power", "performance", "onecycle")
LR_SCHEDULES = STEP_SCHEDULES + EPOCH_SCHEDULES

#: the last phase of 1cycle ends this many times below its starting rate
_ONECYCLE_FINAL_DROP = 1000.0


@dataclass(frozen=True)
class ScheduleSpec:
    """Everything an epoch-driven schedule needs (validated by :func:`make_spec`)."""

    name: str | None
    learning_rate: float
    decay_steps: int = 1000
    decay_rate: float = 0.1
    decay_epochs: int = 10
    power: float = 1.0
    patience: int = 5
    warmup_epochs: int = 0


@dataclass
class ScheduleState:
    """Per-model schedule state: ``performance``'s rate so far and its Keras ``ReduceLROnPlateau``
    (kept with the model: it remembers the best ``val_loss`` and the epochs waited), and the rate of
    every epoch trained."""

    spec: ScheduleSpec
    rate: float
    plateau: Any = None  # keras.callbacks.ReduceLROnPlateau, made by the epoch callback
    history: list[float] = field(default_factory=list)


_ATTACHED: weakref.WeakKeyDictionary[Any, ScheduleState] = weakref.WeakKeyDictionary()


def _int_at_least(field_name: str, value: Any, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value or value < low:
        raise ConfigError(f"model.{field_name}: must be an integer >= {low}, got {value!r}")
    return int(value)


def make_spec(learning_rate: float, lr_schedule: str | None, lr_decay_steps: int, lr_decay_rate: float,
              lr_decay_epochs: int, lr_power: float, lr_patience: int, lr_warmup_epochs: int) -> ScheduleSpec:
    """A checked spec; one-line :class:`ConfigError` naming the ``model.*`` knob that is out of range."""
    name = None if lr_schedule in (None, "none") else str(lr_schedule).lower()
    if name is not None and name not in LR_SCHEDULES:
        raise ConfigError(f"model.lr_schedule: unknown value {lr_schedule!r}; use one of {', '.join(LR_SCHEDULES)}")
    if not float(lr_power) > 0:
        raise ConfigError(f"model.lr_power: must be > 0, got {lr_power!r}")
    return ScheduleSpec(
        name=name, learning_rate=float(learning_rate), decay_steps=_int_at_least("lr_decay_steps", lr_decay_steps, 1),
        decay_rate=float(lr_decay_rate), decay_epochs=_int_at_least("lr_decay_epochs", lr_decay_epochs, 1),
        power=float(lr_power), patience=_int_at_least("lr_patience", lr_patience, 1),
        warmup_epochs=_int_at_least("lr_warmup_epochs", lr_warmup_epochs, 0))


def optimizer_rate(spec: ScheduleSpec) -> Any:
    """The optimizer's rate: a Keras step schedule, or a float (which the epoch callback moves)."""
    import keras

    lr = spec.learning_rate
    if not lr > 0:
        raise ConfigError(f"model.learning_rate: must be > 0, got {lr!r}")
    if not 0 <= spec.decay_rate <= 1:
        raise ConfigError(f"model.lr_decay_rate: must be in [0, 1], got {spec.decay_rate!r}")
    if spec.name is None or needs_epochs(spec):
        return lr
    steps, rate = spec.decay_steps, spec.decay_rate
    sch = keras.optimizers.schedules
    if spec.name == "exponential":
        return sch.ExponentialDecay(lr, decay_steps=steps, decay_rate=rate)
    if spec.name == "cosine":
        return sch.CosineDecay(lr, decay_steps=steps, alpha=rate)
    # Keras keeps the first value while step <= boundary: drop from step ``steps`` on
    return sch.PiecewiseConstantDecay([steps - 1], [lr, lr * rate])


def needs_epochs(spec: ScheduleSpec) -> bool:
    """Whether the epoch callback drives this spec's rate (else the optimizer's own schedule does)."""
    return spec.warmup_epochs > 0 or spec.name in EPOCH_SCHEDULES


def attach(model: Any, spec: ScheduleSpec) -> None:
    """Remember ``spec`` for ``model`` (weakly: the entry goes with the model)."""
    _ATTACHED[model] = ScheduleState(spec=spec, rate=spec.learning_rate)


def attached(model: Any) -> ScheduleState | None:
    """The schedule state the compile step attached to ``model``; None for a fixed or step schedule."""
    try:
        return _ATTACHED.get(model)
    except TypeError:  # an unhashable stand-in for a model
        return None


def _onecycle(spec: ScheduleSpec, t: int) -> float:
    peak, lo, c = spec.learning_rate, spec.learning_rate * spec.decay_rate, spec.decay_epochs
    up = max(1, int(0.45 * c))
    if t < up:
        return lo + (peak - lo) * t / up
    if t < 2 * up:
        return peak - (peak - lo) * (t - up) / up
    end = lo / _ONECYCLE_FINAL_DROP
    if t >= c:
        return end
    return lo - (lo - end) * (t - 2 * up) / max(1, c - 2 * up)


def _step_schedule(spec: ScheduleSpec, step: int) -> float:
    lr, steps, rate = spec.learning_rate, spec.decay_steps, spec.decay_rate
    if spec.name == "exponential":
        return lr * rate ** (step / steps)
    if spec.name == "cosine":
        return lr * ((1 - rate) * 0.5 * (1 + math.cos(math.pi * min(step, steps) / steps)) + rate)
    return lr if step < steps else lr * rate  # piecewise: drops from step ``steps`` on


def lr_at(spec: ScheduleSpec, epoch: int, steps_per_epoch: int = 1, plateau_rate: float | None = None) -> float:
    """The learning rate of (0-based) ``epoch``; ``plateau_rate`` is ``performance``'s current rate."""
    if epoch < spec.warmup_epochs:
        return spec.learning_rate * (epoch + 1) / (spec.warmup_epochs + 1)
    t = epoch - spec.warmup_epochs
    if spec.name == "power":
        return spec.learning_rate / (1 + t / spec.decay_epochs) ** spec.power
    if spec.name == "onecycle":
        return _onecycle(spec, t)
    if spec.name == "performance":
        return spec.learning_rate if plateau_rate is None else plateau_rate
    if spec.name in STEP_SCHEDULES:
        return _step_schedule(spec, t * max(1, steps_per_epoch))
    return spec.learning_rate
