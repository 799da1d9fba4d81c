"""Ensembles of the best: the stored models of a study's top-K trials, averaged.

``load_best(name, top_k=3)`` returns an :class:`EnsembleClassifier` (mean of the members'
probabilities) or :class:`EnsembleRegressor` (mean of their predictions); ``hpsearch best STUDY
--ensemble 3`` scores it on the validation split and on the held-out test split next to the single
best model (:func:`ensemble_scores`). The members are the best-ranked completed trials that still
have a stored model: a study keeps ``search.keep_models`` of them, raised to ``search.ensemble``
when an ensemble is asked for at study time. The scikit-learn engines keep no per-trial model:
with ``search.ensemble`` they refit the top K after the search (:mod:`hpsearch.engines.ensemble_refit`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.base import BaseEstimator

from hpsearch.errors import UserError
from hpsearch.metrics import score_predictions
from hpsearch.models.scoring import predict_raw
from hpsearch.records import STUDY
from hpsearch.results.estimator import RawClassifierOutputs, RawRegressorOutputs
from hpsearch.results.evaluation import stored_config
from hpsearch.storage.artifacts import load_model_artifacts
from hpsearch.storage.queries import best_artifact_ids, top_models

__all__ = ["EnsembleClassifier", "EnsembleRegressor", "load_ensemble", "ensemble_scores"]


class _Ensemble(BaseEstimator):
    """Fitted Keras models with their preprocessing; ``predict`` takes raw (unscaled) features."""

    def __init__(self, members: list[tuple[Any, Any]] | None = None, trials: list[int] | None = None) -> None:
        self.members = members
        self.trials = trials

    def __sklearn_is_fitted__(self) -> bool:
        return bool(self.members)

    def _raw(self, X: Any) -> np.ndarray:
        outs = [np.asarray(model.predict(pre.transform(X), batch_size=1024, verbose=0))
                for model, pre in self.members or []]
        return np.mean(outs, axis=0)


class EnsembleClassifier(RawClassifierOutputs, _Ensemble):
    """``predict_proba``: the members' mean probabilities; ``predict``: their argmax as the original labels."""

    @property
    def classes_(self) -> np.ndarray:  # type: ignore[override]
        return np.asarray((self.members or [])[0][1].classes)


class EnsembleRegressor(RawRegressorOutputs, _Ensemble):
    """``predict``: the members' mean prediction."""


def load_ensemble(study: Any, store: Any, k: int) -> EnsembleClassifier | EnsembleRegressor:
    """The top-``k`` stored models of ``study`` as one fitted estimator."""
    members, numbers = [], []
    for number, mid, pid in top_models(study, k):
        members.append(load_model_artifacts(store, mid, pid))
        numbers.append(number)
    cls = EnsembleClassifier if members[0][1].task == "classification" else EnsembleRegressor
    return cls(members=members, trials=numbers)


def ensemble_scores(study: Any, store: Any, k: int) -> dict[str, Any]:
    """The ensemble of the top ``k`` and the single best model, on the validation split (where the
    trials were compared) and on the held-out test split, re-created from the stored study file."""
    from hpsearch.data.prepare import prepare_data
    from hpsearch.engines.base import get_engine

    ensemble = load_ensemble(study, store, k)
    cfg, why = stored_config(study)
    if cfg is None:
        raise UserError(f"study {study.study_name!r}: the ensemble cannot be scored: {why}")
    data = prepare_data(cfg, get_engine(cfg.search.engine).cv_folds(cfg))
    metric = str(study.user_attrs.get(STUDY.METRIC))
    mid, pid, best_number = best_artifact_ids(study)
    best_model, _ = load_model_artifacts(store, mid, pid)
    models = [m for m, _ in ensemble.members or []]

    def score(ms: list[Any], X: Any, y: Any) -> float | None:
        if not len(y):
            return None
        return score_predictions(metric, data.task, y, np.mean([predict_raw(m, X) for m in ms], axis=0))

    return {
        "k": k, "trials": ensemble.trials, "metric": metric, "best_trial": best_number,
        "valid": score(models, data.X_valid, data.y_valid), "test": score(models, data.X_test, data.y_test),
        "best_valid": score([best_model], data.X_valid, data.y_valid),
        "best_test": score([best_model], data.X_test, data.y_test),
    }
