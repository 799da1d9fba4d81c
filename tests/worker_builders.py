"""Builders for the worker tests (referenced as "tests.worker_builders:<name>").

``build_traced`` writes one JSON line per execution (pid, tag, time) to ``$HPSEARCH_TEST_EVENTS``
/``executions.jsonl`` and an event file ``started-<pid>-<n>``, then sleeps
``$HPSEARCH_TEST_SLEEP`` seconds (default 0) so a test can kill or stop the worker in the middle
of a trial, on the event, not after a guessed delay. The float ``tag`` is sampled per trial, so it
identifies a trial and its re-queued copy (same params).
"""

from __future__ import annotations

import json
import os
import time

import keras


def build_traced(n_neurons: int = 8, tag: float = 0.0, meta=None):
    events = os.environ.get("HPSEARCH_TEST_EVENTS")
    if events:
        pid = os.getpid()
        with open(os.path.join(events, "executions.jsonl"), "a") as f:
            f.write(json.dumps({"pid": pid, "tag": tag, "t": time.time()}) + "\n")
        n = len([p for p in os.listdir(events) if p.startswith(f"started-{pid}-")])
        with open(os.path.join(events, f"started-{pid}-{n}"), "w") as f:
            f.write(repr(tag))
    delay = float(os.environ.get("HPSEARCH_TEST_SLEEP", "0"))
    if delay:
        time.sleep(delay)
    n_out = int(meta.get("n_classes_") or 2)
    model = keras.Sequential([
        keras.Input(shape=(meta["n_features_in_"],)),
        keras.layers.Dense(n_neurons, activation="relu"),
        keras.layers.Dense(n_out, activation="softmax"),
    ])
    model.compile(optimizer=keras.optimizers.Adam(0.02), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    return model


def build_broken(n_neurons: int = 8, meta=None):
    """A builder that always fails: every trial is FAIL with its reason (one line each, no traceback)."""
    raise ValueError(f"broken builder (n_neurons={n_neurons})")
