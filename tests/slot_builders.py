"""A builder for the GPU-slot tests (tests/workers/test_slots.py), referenced as
"tests.slot_builders:build_recording". Keras is imported inside the function, as a builder module
that must not load a backend before its worker pins a GPU would do; each trial appends the pid and
the ``CUDA_VISIBLE_DEVICES`` it runs under and the GPUs TensorFlow sees to
``$HPSEARCH_TEST_EVENTS``/executions.jsonl."""

from __future__ import annotations

import json
import os


def build_recording(n_neurons: int = 8, meta=None):
    import keras

    with open(os.path.join(os.environ["HPSEARCH_TEST_EVENTS"], "executions.jsonl"), "a") as f:
        f.write(json.dumps({"pid": os.getpid(), "cuda": os.environ.get("CUDA_VISIBLE_DEVICES"),
                            "gpus_seen": _gpus_seen()}) + "\n")
    model = keras.Sequential([
        keras.Input(shape=(meta["n_features_in_"],)),
        keras.layers.Dense(n_neurons, activation="relu"),
        keras.layers.Dense(int(meta["n_classes_"]), activation="softmax"),
    ])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def _gpus_seen() -> int | None:
    """The GPUs the backend sees in this trial (TensorFlow only; None under another backend)."""
    if os.environ.get("KERAS_BACKEND", "tensorflow") != "tensorflow":
        return None
    import tensorflow as tf

    return len(tf.config.list_physical_devices("GPU"))
