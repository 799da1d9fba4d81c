"""The one seed rule for training a trial: a trial's seed comes from ``search.seed`` and its trial
number, never from the clock or the order trials finish in. An unpacked trial seeds Keras with it
(initial weights, dropout masks, the batch order of ``fit``) right after it clears the session; a
packed member initialises its weights from it (:mod:`hpsearch.packing.model`), so the same study
file run again from scratch in one process trains the same trials to the same values.
"""

from __future__ import annotations

import os

import numpy as np

__all__ = ["trial_seeds", "seed_keras"]


def trial_seeds(seed: int | None, numbers: list[int]) -> list[int]:
    """One seed per trial number, derived from ``search.seed`` (24 bits: every backend's generator
    takes it); without ``search.seed``, fresh entropy."""
    if seed is None:
        return [int.from_bytes(os.urandom(3), "little") for _ in numbers]
    return [int(np.random.SeedSequence([int(seed) % (1 << 64), int(n)]).generate_state(1)[0]) >> 8 for n in numbers]


def seed_keras(seed: int | None) -> None:
    """Seed Keras' global generators (Python, NumPy, the backend's) for the model built next; call it
    after ``keras.backend.clear_session()``, which resets Keras' global seed generator. None: leave
    them unseeded (a study without ``search.seed``)."""
    if seed is None:
        return
    import keras

    keras.utils.set_random_seed(int(seed))
