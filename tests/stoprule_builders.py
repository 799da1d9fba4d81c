"""Builders for the stop-rule tests (referenced as "stoprule_builders:<name>")."""

from __future__ import annotations

from typing import Any


def build_constant(n_neurons: int = 4, meta: dict[str, Any] | None = None) -> Any:
    """A classifier that cannot learn (frozen zero weights): every trial scores exactly the same,
    so a patience rule trips at a known trial."""
    import keras

    assert meta is not None
    model = keras.Sequential([
        keras.Input((meta["n_features_in_"],)),
        keras.layers.Dense(meta["n_classes_"], activation="softmax", kernel_initializer="zeros", trainable=False),
    ])
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model
