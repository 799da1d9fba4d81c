"""Pruning a study of several objectives at rungs: hpsearch's own decision, since Optuna's pruners
and ``Trial.report`` take one value.

The rule (MO-ASHA, a Pareto-aware asynchronous successive halving): at each rung step (the epochs
``min_resource * eta**k`` of the study's pruner settings), among the trials that reported a value at
that step, each is a point (its first, trained objective at that step; the objectives known before
training, e.g. ``n_params``, measured once the model is built). A trial reaching the rung is kept
when it is on one of the first ``fronts`` non-dominated fronts of those points (:data:`KEPT_FRONTS`)
or among the best ``max(1, n // eta)`` by (front, crowding distance, first objective):
:func:`hpsearch.pareto.rung_keep`. A trial on the front at its rung is never pruned. The same
object decides for one trial at a time (:class:`hpsearch.trials.runner.TrialRunner`) and for the
members of a pack reaching a rung in the same epoch (:mod:`hpsearch.packing.pack`), judged together.

Peers are read from the study: a trial with a stored intermediate value at the step and its known
objectives stored as trial attributes (``n_params``, ``latency_ms``: a finished trial's). A trial
still running in another process joins the comparison once it has finished.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from hpsearch.pareto import rung_keep

__all__ = ["KEPT_FRONTS", "ParetoRungs"]

#: the first non-dominated fronts a rung never prunes. Measured on studies/digits-pareto.yaml
#: (benchmarks/bench_pareto.py, 3 seeds, packed): keeping the first front only lost up to 0.8 % of
#: the unpruned hypervolume (a trade-off point behind at epoch 2 that ends on the front) with 21-26 %
#: of the epochs; the first two: 99.95-100 % with 38-43 %; three: 99.97-100 % with 56-69 %.
KEPT_FRONTS = 2


@dataclass(frozen=True)
class ParetoRungs:
    """Where and how a study of several objectives prunes: ``steps`` (0-based reported epochs),
    ``eta`` (keep 1/eta at each rung, the first ``fronts`` fronts always), ``directions`` of every
    objective and ``known``, the names of the objectives after the first (each known before training)."""

    steps: frozenset[int]
    eta: int
    directions: tuple[str, ...]
    known: tuple[str, ...]
    fronts: int = KEPT_FRONTS

    def due(self, step: int) -> bool:
        return step in self.steps

    def prune(self, study: Any, step: int, reaching: Mapping[int, tuple[float, Sequence[float]]]) -> set[int]:
        """The trial numbers of ``reaching`` (number -> (first objective at ``step``, known objectives'
        values)) to prune at rung ``step``, judged with every stored trial that reached it."""
        if step not in self.steps or not reaching:
            return set()
        numbers: list[int] = []
        points: list[tuple[float, ...]] = []
        for number, (value, known) in reaching.items():
            numbers.append(number)
            points.append((float(value), *map(float, known)))
        for t in study.get_trials(deepcopy=False):
            if t.number in reaching or step not in t.intermediate_values:
                continue
            point = (t.intermediate_values[step], *(t.user_attrs.get(n) for n in self.known))
            if all(v is not None and math.isfinite(v) for v in point):
                numbers.append(t.number)
                points.append(tuple(float(v) for v in point))
        ok = [i for i, p in enumerate(points) if all(math.isfinite(v) for v in p)]
        kept = {ok[i] for i in rung_keep([points[i] for i in ok], self.directions, self.eta, self.fronts)}
        return {n for i, n in enumerate(numbers) if n in reaching and i not in kept}
