"""Builders for the engine tests (referenced as "engine_builders:<name>"): they fail on purpose."""

from __future__ import annotations

import os
from pathlib import Path

from hpsearch.models.mlp import build_mlp


def build_fails_on_width(n_neurons: int = 8, learning_rate: float = 0.01, optimizer: str = "adam", meta=None):
    """Raises for n_neurons == 13: one bad candidate in an otherwise good search."""
    if n_neurons == 13:
        raise ValueError("width 13 is unlucky")
    return build_mlp(n_hidden=1, n_neurons=n_neurons, learning_rate=learning_rate, optimizer=optimizer, meta=meta)


def build_always_fails(n_neurons: int = 8, meta=None):
    raise RuntimeError("this builder never works")


def build_returns_none(n_neurons: int = 8, meta=None):
    """A builder that forgets its ``return model``."""


def build_interrupts(n_neurons: int = 8, learning_rate: float = 0.01, meta=None):
    """Raises KeyboardInterrupt on the Nth build ($HPS_INTERRUPT_AT), counted in $HPS_COUNTER_FILE."""
    path = os.environ["HPS_COUNTER_FILE"]
    n = int(Path(path).read_text()) if os.path.exists(path) else 0
    Path(path).write_text(str(n + 1))
    if n + 1 == int(os.environ.get("HPS_INTERRUPT_AT", "0")):
        raise KeyboardInterrupt
    return build_mlp(n_hidden=1, n_neurons=n_neurons, learning_rate=learning_rate, optimizer="adam", meta=meta)
