"""Several objectives in the scikit-learn engines: every objective scored on each fold through
scikit-learn's multi-metric scoring (``check_scoring`` with a dict of scorers).

A trained metric is scored by its scikit-learn scorer; a measured objective by a scorer of this
module that reads the fitted fold model: ``n_params`` (its weights) and ``latency_ms`` (prediction
time per row, :func:`hpsearch.trials.constraints.measure`, the same measurement as
``search.constraints``). A candidate's value of each objective is its mean over the folds.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from hpsearch.trials.constraints import measure

if TYPE_CHECKING:  # pragma: no cover
    from hpsearch.trials.context import RunContext

__all__ = ["scoring_for", "score_fold", "n_params_score", "latency_score"]


def n_params_score(estimator: Any, X: Any, y: Any) -> float:
    """Scorer: the weights of a fitted fold pipeline's Keras model (smaller is better)."""
    return measure(estimator[-1].model_, X, ["max_params"])["n_params"]


def latency_score(estimator: Any, X: Any, y: Any) -> float:
    """Scorer: prediction time per row of a fitted fold pipeline's Keras model, in ms, on ``X``
    (the fold's held-out rows, preprocessed by the fold's own steps)."""
    return measure(estimator[-1].model_, estimator[:-1].transform(X), ["max_latency_ms"])["latency_ms"]


#: measured objective -> its scorer (module-level functions: joblib workers unpickle them)
_MEASURED_SCORERS = {"n_params": n_params_score, "latency_ms": latency_score}


def scoring_for(ctx: RunContext) -> tuple[str | dict[str, Any], list[float]]:
    """(scoring, signs): a scorer name for one objective, else a dict objective -> scorer for
    scikit-learn's multi-metric scoring; ``sign * score`` is each objective's value (e.g. mse > 0)."""
    from hpsearch.metrics import sklearn_scoring

    task = ctx.data.task
    if not ctx.several:
        name, sign = sklearn_scoring(ctx.metric, task)
        return name, [sign]
    scoring: dict[str, Any] = {}
    signs: list[float] = []
    for name, _ in ctx.objectives:
        if name in _MEASURED_SCORERS:
            scoring[name], sign = _MEASURED_SCORERS[name], 1.0
        else:
            scoring[name], sign = sklearn_scoring(name, task)
        signs.append(sign)
    return scoring, signs


def score_fold(scoring: str | dict[str, Any], estimator: Any, X: Any, y: Any) -> list[float]:
    """Every objective's score of a fitted fold model on its held-out rows, in objective order."""
    from sklearn.metrics import check_scoring, get_scorer

    if isinstance(scoring, str):
        return [float(get_scorer(scoring)(estimator, X, y))]
    scores = check_scoring(estimator, scoring=scoring)(estimator, X, y)
    return [float(scores[name]) for name in scoring]
