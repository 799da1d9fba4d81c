"""One fold of a scikit-learn-engine candidate: fit it (early stopping, the NaN guard, per-epoch
learning rates, the trial timer) and score it into a :class:`FoldResult`. Built where the fit runs:
joblib workers get picklable specs, no shared objects."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

from hpsearch.engines.multiscore import score_fold
from hpsearch.trials.stopping import StopRule

__all__ = ["FoldSpec", "FoldResult", "fit_fold", "fit_callbacks"]

#: the Keras step's name in a scikit-learn-engine pipeline: searched parameters are set as ``model__NAME``
MODEL = "model"


def fit_callbacks(rule: StopRule, timer: Any = None) -> list[Any]:
    """Fresh callbacks for one fit (built where the fit runs: joblib workers get no shared objects)."""
    import keras

    from hpsearch.trials.callbacks import EpochLR

    return [keras.callbacks.TerminateOnNaN(), EpochLR(), *([timer] if timer is not None else []),
            *rule.keras_callbacks()]


@dataclass(frozen=True)
class FoldSpec:
    """What every fold of a run shares besides the rows (picklable: it goes to joblib workers)."""

    scoring: str | dict[str, Any]  # scorer name (greater is better); several objectives: name -> scorer
    metric: str  # the study metric, read per epoch from the Keras logs
    y_valid_var: float | None  # regression: variance of the validation targets (r2 per epoch)
    stop: StopRule  # the study's early-stopping rule
    trial_timeout: float | None = None  # train.trial_timeout: seconds a candidate's folds may train


@dataclass
class FoldResult:
    """One fold's outcome, returned by :func:`fit_fold` from whichever process ran it."""

    score: float  # the scorer's value (greater is better); NaN when the fold failed
    epochs: int = 0
    curve: list[float | None] = field(default_factory=list)  # the validation metric after each epoch
    fit_time: float = 0.0
    score_time: float = 0.0
    failure: str | None = None
    extra: list[float] = field(default_factory=list)  # several objectives: the other objectives' scores
    history: dict[str, list[float]] = field(default_factory=dict)  # every Keras metric after each epoch
    deadline_stop: int | None = None  # packed: the 0-based epoch at which search.timeout ended the fold


def _reason(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:500]


def fit_fold(estimator: Any, params: dict[str, Any], X: Any, y: Any, train: Any, test: Any,
             valid: tuple[Any, Any], spec: FoldSpec, deadline: float | None = None) -> FoldResult:
    """Fit a clone of ``estimator`` with ``params`` on a fold's training rows, score it on the held-out rows.

    Any ``Exception`` of the build, the fit or the scorer fails the fold (the search goes on);
    ``KeyboardInterrupt`` and ``SystemExit`` stop the search. A loss that became NaN / inf fails it too,
    and so does training still running at ``deadline`` (``time.time()``, from ``train.trial_timeout``).
    """
    from sklearn.base import clone

    from hpsearch.metrics import value_from_logs
    from hpsearch.trials.callbacks import TrialTimer, trial_timeout_reason

    est = clone(estimator).set_params(**params)
    timer = TrialTimer(spec.trial_timeout, deadline) if spec.trial_timeout is not None else None
    start = time.perf_counter()
    try:
        est.fit(X[train], y[train], **{f"{MODEL}__validation_data": valid,
                                       f"{MODEL}__callbacks": fit_callbacks(spec.stop, timer)})
    except Exception as exc:  # noqa: BLE001 - any error of a candidate fails it; the search goes on
        return FoldResult(math.nan, fit_time=time.perf_counter() - start, failure=_reason(exc))
    fit_time = time.perf_counter() - start
    history = est[-1].history_
    losses = history.get("loss", [])
    epochs = len(losses)
    curve = [value_from_logs(spec.metric, {k: v[i] for k, v in history.items() if i < len(v)}, spec.y_valid_var)
             for i in range(epochs)]
    logs = {str(k): [float(x) for x in v] for k, v in history.items()}
    if losses and not math.isfinite(losses[-1]):
        return FoldResult(math.nan, epochs, curve, fit_time,
                          failure=f"training diverged: loss became {losses[-1]} at epoch {epochs}")
    if timer is not None and timer.elapsed is not None:
        return FoldResult(math.nan, epochs, curve, fit_time, failure=trial_timeout_reason(timer.limit, timer.elapsed))
    start = time.perf_counter()
    try:
        score, *extra = score_fold(spec.scoring, est, X[test], y[test])
    except Exception as exc:  # noqa: BLE001 - e.g. predictions a scorer rejects
        return FoldResult(math.nan, epochs, curve, fit_time, time.perf_counter() - start, _reason(exc))
    return FoldResult(score, epochs, curve, fit_time, time.perf_counter() - start, extra=extra, history=logs)
