"""User builders for the builder-registry tests (referenced as "hps_user_builders:<name>")."""

from __future__ import annotations

import keras

NOT_A_FUNCTION = 42


def build_compiled(width: int = 8, meta=None):
    """A compiled model that reads its input size and output from meta."""
    n_out = int(meta.get("n_classes_") or 1)
    model = keras.Sequential([
        keras.Input(shape=(meta["n_features_in_"],)),
        keras.layers.Dense(width, activation="relu"),
        keras.layers.Dense(n_out, activation="softmax" if n_out > 2 else "sigmoid"),
    ])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def build_uncompiled(width: int = 8, n_inputs: int = 4, n_outputs: int = 3):
    """An uncompiled model; no meta: the caller compiles it for the task."""
    return keras.Sequential([
        keras.Input(shape=(n_inputs,)),
        keras.layers.Dense(width, activation="relu"),
        keras.layers.Dense(n_outputs, activation="softmax"),
    ])


def build_kwargs(**kwargs):
    """Takes anything (and therefore meta too)."""
    meta = kwargs["meta"]
    model = keras.Sequential([
        keras.Input(shape=(meta["n_features_in_"],)),
        keras.layers.Dense(int(kwargs.get("width", 4))),
        keras.layers.Dense(1),
    ])
    return model


def build_not_a_model(width: int = 1):
    return "nope"


def build_image_only(width: int = 8, meta=None):
    """A builder of images only: it declares the sample rank it takes (checked before a run)."""
    return keras.Sequential([
        keras.Input(shape=meta["X_shape_"][1:]),
        keras.layers.Conv2D(width, 3, activation="relu"),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(int(meta["n_classes_"]), activation="softmax"),
    ])


build_image_only.input_ranks = (3,)  # type: ignore[attr-defined]


def build_meta_params(meta=None, **params):
    """scikeras' form: ``meta`` by name, the hyperparameters through ``**params`` (and nothing else: a study
    gives no ``compile_kwargs`` / ``params`` context, under any engine)."""
    assert set(params) <= {"width", "optimizer"}, sorted(params)
    return keras.Sequential([
        keras.Input(shape=(meta["n_features_in_"],)),
        keras.layers.Dense(int(params["width"]), activation="relu"),
        keras.layers.Dense(meta["n_classes_"], activation="softmax"),
    ])


#: what :func:`build_recording` was called with, one sorted list of argument names per build
CALLS: list[list[str]] = []


def build_recording(meta=None, **params):
    """An uncompiled model that records the names of the arguments it got (the builder contract test)."""
    CALLS.append(sorted(["meta", *params]))
    return keras.Sequential([
        keras.Input(shape=(meta["n_features_in_"],)),
        keras.layers.Dense(int(params.get("width", 4)), activation="relu"),
        keras.layers.Dense(meta["n_classes_"], activation="softmax"),
    ])


def build_named_uncompiled(width: int = 4, meta=None):
    """An uncompiled model that takes no compile knob: the study compiles it with the searched ones."""
    return keras.Sequential([
        keras.Input(shape=(meta["n_features_in_"],)),
        keras.layers.Dense(int(width), activation="relu"),
        keras.layers.Dense(meta["n_classes_"], activation="softmax"),
    ])
