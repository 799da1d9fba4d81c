"""Layers frozen for the first epochs of training (transfer learning), remembered per model.

:mod:`hpsearch.models.transfer` freezes the reused lower layers of a freshly built model and records here
for how many epochs; the trial runner trains those epochs, then :func:`unfreeze` makes the layers
trainable and recompiles the model from its own compile config (a fresh optimizer, as the recipe
asks: Géron ch. 11), and trains on. Keras applies a ``trainable`` change only at compile time.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Any

__all__ = ["Freeze", "freeze", "frozen", "unfreeze"]


@dataclass(frozen=True)
class Freeze:
    """``layers``: names of the frozen layers; ``epochs``: how long they stay frozen."""

    layers: tuple[str, ...]
    epochs: int


_FROZEN: weakref.WeakKeyDictionary[Any, Freeze] = weakref.WeakKeyDictionary()


def freeze(model: Any, layers: list[Any], epochs: int) -> None:
    """Make ``layers`` untrainable and recompile ``model`` so that it takes effect; ``epochs`` = 0
    leaves them trainable (the weights are only a starting point)."""
    if epochs <= 0:
        return
    for layer in layers:
        layer.trainable = False
    _recompile(model)
    _FROZEN[model] = Freeze(tuple(layer.name for layer in layers), int(epochs))


def frozen(model: Any) -> Freeze | None:
    """The freeze recorded for ``model`` (None if nothing is frozen)."""
    try:
        return _FROZEN.get(model)
    except TypeError:  # an unhashable stand-in for a model
        return None


def unfreeze(model: Any) -> None:
    """Make the frozen layers trainable again and recompile; the record goes."""
    spec = _FROZEN.pop(model, None)
    if spec is None:
        return
    for name in spec.layers:
        model.get_layer(name).trainable = True
    _recompile(model)


def _recompile(model: Any) -> None:
    if getattr(model, "compiled", False):
        model.compile_from_config(model.get_compile_config())
