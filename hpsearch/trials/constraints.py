"""Limits checked before training: ``search.constraints: {max_params: 50000, max_latency_ms: 2.0}``.

Once a trial's model is built, and before any epoch runs, the Optuna engine's trial runner measures
what the limits name (``n_params``: the model's weights; ``latency_ms``: prediction time per row on
this machine, the best of a few batched calls after a warm-up) and compares them with the limits:

* over a limit: the trial costs no training; it is stored as PRUNED (it never competes for the
  best) with its constraint values (``TRIAL.CONSTRAINTS``: measured minus limit, > 0 = violated)
  and the reason (``TRIAL.INFEASIBLE``);
* within them: it trains as usual and stores the same values (<= 0).

The values also go to Optuna's constraints support (``Trial.set_constraint``, one per limit), so
the samplers that use it (TPE, GP, NSGA-II) learn the feasible region, and ``best_trial`` only ever
picks a feasible trial.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from hpsearch.records import TRIAL

if TYPE_CHECKING:  # pragma: no cover
    from hpsearch.spec.config import StudyConfig

__all__ = ["TrialInfeasible", "limits", "measure", "apply_limits", "apply_measured", "infeasible_attrs"]

#: limit key -> the measured quantity it bounds
MEASURED = {"max_params": "n_params", "max_latency_ms": "latency_ms"}


class TrialInfeasible(Exception):
    """A built model is over a limit of ``search.constraints``: the trial is not trained."""

    def __init__(self, reason: str, measured: dict[str, float], violations: list[float]) -> None:
        super().__init__(reason)
        self.measured, self.violations = measured, violations


def limits(cfg: StudyConfig) -> list[tuple[str, float]]:
    """(limit key, limit) of each constraint set, in a fixed order."""
    c = cfg.search.constraints
    if c is None:
        return []
    return [(key, float(v)) for key in MEASURED if (v := getattr(c, key)) is not None]


def _latency_ms(model: Any, X: np.ndarray, repeats: int = 3) -> float:
    rows = X[: min(len(X), 256)]
    model.predict(rows, batch_size=len(rows), verbose=0)  # warm-up: tracing and compiling
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        model.predict(rows, batch_size=len(rows), verbose=0)
        best = min(best, time.perf_counter() - t0)
    return 1000.0 * best / len(rows)


def measure(model: Any, X: np.ndarray, keys: Sequence[str]) -> dict[str, float]:
    """The quantities the limits ``keys`` name, for a built model (``X``: preprocessed rows)."""
    from hpsearch.models.builders import count_params

    out: dict[str, float] = {}
    if "max_params" in keys:
        out["n_params"] = float(count_params(model))
    if "max_latency_ms" in keys:
        out["latency_ms"] = _latency_ms(model, X)
    return out


def apply_limits(cfg: StudyConfig, trial: Any, model: Any, X: np.ndarray) -> dict[str, Any]:
    """Measure a built model, store its constraint values on the Optuna trial
    (``Trial.set_constraint``, one per limit) and return the trial attributes of a feasible model;
    raise :class:`TrialInfeasible` when it is over a limit."""
    return apply_measured(cfg, trial, measure(model, X, [k for k, _ in limits(cfg)]))


def apply_measured(cfg: StudyConfig, trial: Any, measured: dict[str, float]) -> dict[str, Any]:
    """:func:`apply_limits` for what was ``measured`` already (a pack member's ``n_params``, known
    from its shape before any weight exists): the same constraint values, attributes and refusal."""
    lim = limits(cfg)
    violations = [measured[MEASURED[k]] - v for k, v in lim]
    for (key, _), d in zip(lim, violations):
        trial.set_constraint(key, d)
    over = [f"{MEASURED[k]} {measured[MEASURED[k]]:.6g} > {k} {v:g}" for (k, v), d in zip(lim, violations) if d > 0]
    if over:
        raise TrialInfeasible("infeasible: " + ", ".join(over) + " (search.constraints); not trained",
                              measured, violations)
    attrs: dict[str, Any] = {TRIAL.CONSTRAINTS: violations}
    if "latency_ms" in measured:
        attrs[TRIAL.LATENCY_MS] = measured["latency_ms"]
    return attrs


def infeasible_attrs(e: TrialInfeasible) -> dict[str, Any]:
    """What an infeasible trial stores: its constraint values, what was measured, and why."""
    attrs: dict[str, Any] = {TRIAL.CONSTRAINTS: e.violations, TRIAL.INFEASIBLE: str(e)}
    if "n_params" in e.measured:
        attrs[TRIAL.N_PARAMS] = int(e.measured["n_params"])
    if "latency_ms" in e.measured:
        attrs[TRIAL.LATENCY_MS] = e.measured["latency_ms"]
    return attrs
