"""Successive halving's schedule as scikit-learn's ``HalvingRandomSearchCV`` runs it: the rungs
(epochs and candidates of each), the top-k rule between rungs, and the loop over rungs. The
scikit-learn halving engine trains the candidates; this module only decides which and how long."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["Rung", "halving_rungs", "top_k", "run_rungs"]


@dataclass(frozen=True)
class Rung:
    """One halving iteration: its index, the epochs and number of its candidates, whether it is the last."""

    index: int
    epochs: int
    n_candidates: int
    last: bool


def halving_rungs(n_candidates: int, min_epochs: int, max_epochs: int, factor: int) -> list[Rung]:
    """The rungs ``HalvingRandomSearchCV`` runs for ``n_candidates`` (``aggressive_elimination=False``):
    as many as needed to get below ``factor`` candidates, as far as the epochs allow; each keeps the
    best ``ceil(n / factor)`` of the one before."""
    n_required = 1 + math.floor(math.log(n_candidates, factor))
    n_possible = 1 + math.floor(math.log(max_epochs // min_epochs, factor))
    n_rungs = min(n_possible, n_required)
    rungs = []
    for i in range(n_rungs):
        rungs.append(Rung(i, min(int(factor ** i * min_epochs), max_epochs), n_candidates, i == n_rungs - 1))
        n_candidates = math.ceil(n_candidates / factor)
    return rungs


def top_k(candidates: Sequence[dict[str, Any]], scores: Sequence[float], k: int) -> list[dict[str, Any]]:
    """The ``k`` best candidates of a rung as scikit-learn's successive halving picks them (scores:
    greater is better; NaN ranks lowest), in its order: the weakest kept first."""
    s = np.asarray(scores, dtype=float)
    order = np.roll(np.argsort(s), np.count_nonzero(np.isnan(s)))
    return [candidates[int(i)] for i in order[-k:]]


def run_rungs(candidates: Sequence[dict[str, Any]], rungs: Sequence[Rung],
              evaluate: Callable[[dict[str, Any], int, Rung], float],
              on_rung: Callable[[list[dict[str, Any]], Rung], None] | None = None) -> None:
    """Successive halving: every candidate of a rung is evaluated (``evaluate(params, index, rung)``
    returns its mean score, greater is better); the best of them make the next rung. ``on_rung``
    hears each rung's candidates before they are evaluated (the packs plan them)."""
    index = 0
    current = list(candidates)
    for rung, following in zip(rungs, [*rungs[1:], None]):
        if on_rung is not None:
            on_rung(current, rung)
        scores = []
        for params in current:
            scores.append(evaluate(params, index, rung))
            index += 1
        if following is not None:
            current = top_k(current, scores, following.n_candidates)
