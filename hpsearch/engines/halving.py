"""Successive halving's schedule as scikit-learn's ``HalvingRandomSearchCV`` runs it: the rungs
(epochs and candidates of each), the top-k rule between rungs, and the loop over rungs. The
scikit-learn halving engine trains the candidates; this module only decides which and how long.

A stop rule (``search.timeout``, a callback's ``study.stop()``) that ends the search before its last
rung would leave every candidate PRUNED (only the last rung competes) and the study without a
result: the highest rung reached is its last then (:func:`rung_reached`), as scikit-learn's search
would have ended there had it planned fewer rungs."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from hpsearch.records import TRIAL

__all__ = ["Rung", "halving_rungs", "top_k", "run_rungs", "rung_reached"]


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


def rung_reached(trials: Sequence[Any]) -> list[Any]:
    """The candidates of the highest rung a stopped search reached, in trial order: its PRUNED
    trials not recorded as a result before (``TRIAL.RESULT_OF``); none when a trial of the last rung
    completed (it competes) or no rung was reached."""
    if any(t.state.name == "COMPLETE" and TRIAL.RESULT_OF not in t.user_attrs for t in trials):
        return []
    done = {t.user_attrs[TRIAL.RESULT_OF] for t in trials if TRIAL.RESULT_OF in t.user_attrs}
    rungs = [(t, t.user_attrs.get(TRIAL.HALVING_ITER)) for t in trials if t.state.name == "PRUNED"]
    reached = max((r for _, r in rungs if r is not None), default=None)
    return sorted((t for t, r in rungs if r == reached and reached is not None and t.number not in done),
                  key=lambda t: t.number)
