"""The study's best model back as a fitted scikit-learn estimator (``load_best``, no retraining),
its description for ``hpsearch best``, and ``export_best`` to copy it out of the artifact store.

Models are stored as ``.keras`` files (loaded with ``safe_mode=True``) and preprocessing as JSON by
:mod:`hpsearch.storage.artifacts`: nothing is pickled.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin

from hpsearch.data.prepare import Preprocessor
from hpsearch.errors import UserError
from hpsearch.records import STUDY, TRIAL
from hpsearch.results.ensemble import ensemble_scores, load_ensemble
from hpsearch.results.export import export_serving
from hpsearch.results.uncertainty import MCDropoutMixin
from hpsearch.storage.artifacts import ARTIFACTS_ENV, artifact_store_for, load_model_artifacts
from hpsearch.storage.queries import best_artifact_ids, best_info, open_study_for_reading

__all__ = [
    "HPSearchClassifierModel",
    "HPSearchRegressorModel",
    "describe_best",
    "export_best",
    "fitted_estimator",
    "load_best",
]


class _FittedKerasModel(MCDropoutMixin, BaseEstimator):
    """A trained Keras model plus its preprocessing; ``predict`` takes raw (unscaled) features,
    ``predict_uncertainty`` gives MC-dropout spread (:mod:`hpsearch.results.uncertainty`).
    ``history_`` (from :func:`load_best`): every Keras metric of every epoch of the model's trial."""

    history_: dict[str, list[float]]

    def __init__(self, model: Any = None, preprocessor: Preprocessor | None = None) -> None:
        self.model = model
        self.preprocessor = preprocessor

    def __sklearn_is_fitted__(self) -> bool:
        return self.model is not None

    @property
    def model_(self) -> Any:
        return self.model

    @property
    def n_features_in_(self) -> int:
        return self.preprocessor.n_features  # type: ignore[union-attr]

    def _raw(self, X: Any) -> np.ndarray:
        Xs = self.preprocessor.transform(X)  # type: ignore[union-attr]
        return np.asarray(self.model.predict(Xs, batch_size=1024, verbose=0))


class HPSearchClassifierModel(ClassifierMixin, _FittedKerasModel):
    """Fitted classifier: ``predict`` returns the original labels, ``predict_proba`` one column per class."""

    @property
    def classes_(self) -> np.ndarray:
        return np.asarray(self.preprocessor.classes)  # type: ignore[union-attr]

    def predict_proba(self, X: Any) -> np.ndarray:
        raw = self._raw(X)
        if raw.ndim == 1 or raw.shape[1] == 1:
            p1 = raw.reshape(-1)
            return np.column_stack([1.0 - p1, p1])
        return raw

    def predict(self, X: Any) -> np.ndarray:
        return np.asarray(self.classes_[self.predict_proba(X).argmax(axis=1)])


class HPSearchRegressorModel(RegressorMixin, _FittedKerasModel):
    """Fitted regressor: ``predict`` returns one value per row; ``score`` is R²."""

    def predict(self, X: Any) -> np.ndarray:
        return self._raw(X).reshape(-1)


def fitted_estimator(model: Any, preprocessor: Preprocessor) -> _FittedKerasModel:
    """The estimator class that fits the preprocessing's task, wrapped around ``model``."""
    cls = HPSearchClassifierModel if preprocessor.task == "classification" else HPSearchRegressorModel
    return cls(model=model, preprocessor=preprocessor)


def _open(study_name: str, storage: str | None, artifacts: str | None) -> tuple[str, Any, Any]:
    """(URL, study, artifact store) of an existing study."""
    url, _, study = open_study_for_reading(study_name, storage)
    return url, study, artifact_store_for(url, artifacts or study.user_attrs.get(STUDY.ARTIFACTS))


def load_best(study_name: str, storage: str | None = None, artifacts: str | None = None,
              top_k: int | None = None, pick: str | None = None) -> Any:
    """The study's best model as a fitted sklearn estimator (``predict``, ``predict_proba``, ``score``).

    ``predict`` takes raw features: the fitted scaling and label encoding are applied inside.
    Works for studies of every engine. Its ``history_`` holds every Keras metric of every epoch
    of the model's trial (``{"loss": [...], "val_loss": [...], ...}``). ``top_k=K`` (K > 1): the
    stored models of the K best trials averaged (:mod:`hpsearch.results.ensemble`; probabilities for a classifier).

    ``pick``: for a study of several objectives, a rule that chooses one trial of the Pareto front,
    e.g. ``"smallest n_params within 0.005 of the best accuracy"``, ``"smallest within 1% of the best
    accuracy"``, ``"best latency_ms"``. Grammar: ``[best|smallest|largest [OBJECTIVE]] [within D[%]
    of the best OBJECTIVE]``; an omitted objective is the first one the ``within`` part does not
    name. Default (None or ``"best"``): the front's best trial on the first objective, the one
    ``hpsearch best`` shows and scored on the test split. A bad rule is a one-line UserError.
    """
    _, study, store = _open(study_name, storage, artifacts)
    if top_k is not None and top_k != 1:
        return load_ensemble(study, store, top_k)
    mid, pid, number = best_artifact_ids(study, pick)
    model, pre = load_model_artifacts(store, mid, pid)
    est = fitted_estimator(model, pre)
    trial = next((t for t in study.get_trials(deepcopy=False) if t.number == number), None)
    est.history_ = dict(trial.user_attrs.get(TRIAL.HISTORY) or {}) if trial is not None else {}
    return est


def _export(study: Any, store: Any, path: str) -> Path:
    from optuna.artifacts import download_artifact
    from optuna.artifacts.exceptions import ArtifactNotFound

    mid, pid, _ = best_artifact_ids(study)
    out = Path(path)
    if out.suffix != ".keras":
        raise UserError(f"--export {path}: the file name must end in .keras")
    if not out.parent.exists():
        raise UserError(f"--export {path}: folder {out.parent} does not exist; create it first")
    pre_path = out.with_suffix(".preprocess.json")
    for target in (out, pre_path):
        if target.exists():
            raise UserError(f"--export {path}: {target} already exists; remove it or choose another path")
    try:
        download_artifact(artifact_store=store, file_path=str(out), artifact_id=mid)
        download_artifact(artifact_store=store, file_path=str(pre_path), artifact_id=pid)
    except (ArtifactNotFound, OSError) as e:
        raise UserError(
            f"the stored model {mid} cannot be read from the artifact store ({e.__class__.__name__});"
            f" check --artifacts / {ARTIFACTS_ENV} points at the study's artifact folder"
        ) from None
    json.loads(pre_path.read_text())  # a readable JSON file, or fail loudly
    return out


def export_best(study_name: str, path: str, storage: str | None = None, artifacts: str | None = None) -> Path:
    """Write the best model to ``path`` (a ``.keras`` file) and its preprocessing beside it (``.json``)."""
    _, study, store = _open(study_name, storage, artifacts)
    return _export(study, store, path)


def describe_best(study_name: str, storage: str | None = None, artifacts: str | None = None,
                  export: str | None = None, ensemble: int | None = None, fmt: str | None = None) -> dict[str, Any]:
    """``hpsearch best``: :func:`hpsearch.storage.queries.best_info`, after exporting the model to ``export``
    (with ``fmt``, a serving folder of :mod:`hpsearch.results.export`); with ``ensemble=K``, the top-K
    ensemble's scores next to the single best model's."""
    if fmt is not None and not export:
        raise UserError(f"--format {fmt}: give the folder to write with --export DIR")
    url, _, study = open_study_for_reading(study_name, storage)
    info = best_info(study, url, artifacts)
    if ensemble is not None:
        store = artifact_store_for(url, artifacts or study.user_attrs.get(STUDY.ARTIFACTS))
        info["ensemble"] = ensemble_scores(study, store, ensemble)
    if export:
        store = artifact_store_for(url, artifacts or study.user_attrs.get(STUDY.ARTIFACTS))
        written = _export(study, store, export) if fmt is None else export_serving(study, store, export, fmt)
        info["exported"], info["export_format"] = str(written), fmt
    return info
