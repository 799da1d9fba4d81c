"""``cv_results_`` of a Python search, read back from its study: one row per candidate trial, in
scikit-learn's shape (``params``, masked ``param_NAME`` arrays, ``splitK_test_score``,
``mean_/std_/rank_test_score``, fit and score times; halving adds ``iter`` and ``n_resources``).

Scores are in scikit-learn's orientation (greater is better: ``neg_mean_squared_error`` is the
negated MSE); the study stores the metric itself. A failed candidate scores NaN and ranks last.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from hpsearch.records import TRIAL

__all__ = ["candidate_trials", "cv_results"]


def candidate_trials(study: Any) -> list[Any]:
    """The finished trials of the search, in the order they were planned (trial number); a stopped
    halving search's result records (``TRIAL.RESULT_OF``) repeat a candidate listed already."""
    return sorted((t for t in study.get_trials(deepcopy=False)
                   if t.state.is_finished() and TRIAL.RESULT_OF not in t.user_attrs), key=lambda t: t.number)


def _fold_scores(trial: Any, sign: float) -> list[float]:
    """One score per fold (a holdout trial: its value as the one split), scikit-learn's orientation."""
    folds = trial.user_attrs.get(TRIAL.FOLD_SCORES)
    if not folds:
        value = trial.value if trial.state.name == "COMPLETE" else None
        folds = [value]
    return [math.nan if v is None else float(v) * sign for v in folds]


def _param_column(trials: list[Any], name: str) -> np.ma.MaskedArray:
    values = [t.params.get(name) for t in trials]
    column: np.ma.MaskedArray = np.ma.MaskedArray(np.empty(len(values), dtype=object),
                                                  mask=[name not in t.params for t in trials])
    for i, v in enumerate(values):
        column[i] = v
    return column


def _rank(scores: np.ndarray) -> np.ndarray:
    """scikit-learn's rank: 1 is best, ties share the lowest rank, NaN ranks last."""
    from scipy.stats import rankdata

    filled = np.where(np.isnan(scores), -np.inf, scores)
    return np.asarray(rankdata(-filled, method="min"), dtype=np.int32)


def cv_results(study: Any, sign: float, names: dict[str, str] | None = None) -> dict[str, Any]:
    """The study's candidates as scikit-learn's ``cv_results_``; ``names`` maps a study parameter to the
    name the search was given (``kerasclassifier__n_neurons``)."""
    rename = names or {}
    trials = candidate_trials(study)
    splits = [_fold_scores(t, sign) for t in trials]
    n = max((len(s) for s in splits), default=0)
    out: dict[str, Any] = {}
    fit = np.array([float(t.user_attrs.get(TRIAL.FIT_TIME) or (t.duration.total_seconds() if t.duration else 0))
                    for t in trials])
    score = np.array([float(t.user_attrs.get(TRIAL.SCORE_TIME) or 0.0) for t in trials])
    per_fold = np.array([max(1, len(s)) for s in splits], dtype=float)
    unknown = np.full(len(trials), math.nan)  # the study keeps each candidate's total time, not per fold
    out["mean_fit_time"], out["std_fit_time"] = fit / per_fold, unknown
    out["mean_score_time"], out["std_score_time"] = score / per_fold, unknown.copy()
    for given, name in sorted((rename.get(k, k), k) for k in {k for t in trials for k in t.params}):
        out[f"param_{given}"] = _param_column(trials, name)
    out["params"] = [{rename.get(k, k): v for k, v in t.params.items()} for t in trials]
    for k in range(n):
        out[f"split{k}_test_score"] = np.array([s[k] if k < len(s) else math.nan for s in splits])
    grid = np.array([s + [math.nan] * (n - len(s)) for s in splits]) if trials else np.zeros((0, n))
    with np.errstate(invalid="ignore"):
        mean = grid.mean(axis=1) if n else np.zeros(len(trials))
        std = grid.std(axis=1) if n else np.zeros(len(trials))
    out["mean_test_score"], out["std_test_score"] = mean, std
    out["rank_test_score"] = _rank(mean)
    if any(TRIAL.N_RESOURCES in t.user_attrs for t in trials):
        out["iter"] = np.array([int(t.user_attrs.get(TRIAL.HALVING_ITER, 0)) for t in trials])
        out["n_resources"] = np.array([int(t.user_attrs.get(TRIAL.N_RESOURCES, 0)) for t in trials])
    return out
