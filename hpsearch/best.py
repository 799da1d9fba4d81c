"""Stored models: save a trained Keras model with its preprocessing as Optuna artifacts, and
``load_best()`` to get the study's best model back as a fitted scikit-learn estimator, no retraining.

Models are stored as ``.keras`` files (loaded with ``safe_mode=True``) and preprocessing as JSON:
nothing is pickled.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Optional

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin

from hpsearch.data import Preprocessor
from hpsearch.errors import UserError
from hpsearch.records import STUDY, TRIAL

__all__ = [
    "HPSearchClassifierModel",
    "HPSearchRegressorModel",
    "save_model_artifacts",
    "load_model_artifacts",
    "load_best",
    "fitted_estimator",
    "export_best",
]


class _FittedKerasModel(BaseEstimator):
    """A trained Keras model plus its preprocessing; ``predict`` takes raw (unscaled) features."""

    def __init__(self, model: Any = None, preprocessor: Optional[Preprocessor] = None) -> None:
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
        return self.classes_[self.predict_proba(X).argmax(axis=1)]


class HPSearchRegressorModel(RegressorMixin, _FittedKerasModel):
    """Fitted regressor: ``predict`` returns one value per row; ``score`` is R²."""

    def predict(self, X: Any) -> np.ndarray:
        return self._raw(X).reshape(-1)


def fitted_estimator(model: Any, preprocessor: Preprocessor) -> _FittedKerasModel:
    cls = HPSearchClassifierModel if preprocessor.task == "classification" else HPSearchRegressorModel
    return cls(model=model, preprocessor=preprocessor)


def save_model_artifacts(
    artifact_store: Any, target: Any, model: Any, preprocessor: Preprocessor, storage: Any = None
) -> tuple[str, str]:
    """Upload ``model.keras`` and ``preprocess.json`` to ``target`` (a running Trial or a Study)."""
    from optuna.artifacts import upload_artifact

    tmp = tempfile.mkdtemp(prefix="hpsearch-model-")
    try:
        mpath = os.path.join(tmp, "model.keras")
        model.save(mpath)
        ppath = os.path.join(tmp, "preprocess.json")
        Path(ppath).write_text(preprocessor.to_json(), encoding="utf-8")
        kw = {"storage": storage} if storage is not None else {}
        mid = upload_artifact(artifact_store=artifact_store, file_path=mpath, study_or_trial=target, **kw)
        pid = upload_artifact(artifact_store=artifact_store, file_path=ppath, study_or_trial=target,
                              mimetype="application/json", **kw)
        return mid, pid
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def load_model_artifacts(artifact_store: Any, model_id: str, preprocess_id: str) -> tuple[Any, Preprocessor]:
    """Download and load a stored model (Keras safe mode) and its preprocessing."""
    import keras
    from optuna.artifacts import download_artifact

    tmp = tempfile.mkdtemp(prefix="hpsearch-load-")
    try:
        mpath = os.path.join(tmp, "model.keras")
        ppath = os.path.join(tmp, "preprocess.json")
        try:
            download_artifact(artifact_store=artifact_store, file_path=mpath, artifact_id=model_id)
            download_artifact(artifact_store=artifact_store, file_path=ppath, artifact_id=preprocess_id)
        except Exception as e:  # missing files in the artifact store
            raise UserError(
                f"the stored model {model_id} cannot be read from the artifact store ({e.__class__.__name__});"
                " check --artifacts / HPSEARCH_ARTIFACTS points at the study's artifact folder"
            ) from None
        model = keras.models.load_model(mpath, compile=False, safe_mode=True)
        pre = Preprocessor.from_json(Path(ppath).read_text(encoding="utf-8"))
        return model, pre
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _best_artifact_ids(study: Any) -> tuple[str, str, Optional[int]]:
    attrs = study.user_attrs
    mid, pid = attrs.get(STUDY.BEST_MODEL_ARTIFACT), attrs.get(STUDY.BEST_PREPROCESS_ARTIFACT)
    number = attrs.get(STUDY.BEST_TRIAL)
    if mid and pid:
        return mid, pid, number
    # fall back: best trial that has a model
    try:
        best = study.best_trial
    except ValueError:
        raise UserError(f"study {study.study_name!r} has no completed trial yet; run it first") from None
    mid, pid = best.user_attrs.get(TRIAL.MODEL_ARTIFACT), best.user_attrs.get(TRIAL.PREPROCESS_ARTIFACT)
    if not (mid and pid):
        raise UserError(
            f"study {study.study_name!r} has no stored model for its best trial; run it to the end"
            " (`hpsearch run FILE --resume`) so the best model is saved"
        )
    return mid, pid, best.number


def _open(study_name: str, storage: Optional[str], artifacts: Optional[str]) -> tuple[Any, Any]:
    import optuna

    from hpsearch.storage import artifact_store_for, open_storage, resolve_storage_url

    url = resolve_storage_url(storage, None)
    st = open_storage(url, must_exist=True)
    try:
        study = optuna.load_study(study_name=study_name, storage=st)
    except KeyError:
        names = [s.study_name for s in optuna.get_all_study_summaries(st)]
        hint = f"; studies there: {', '.join(names[:10])}" if names else "; the storage has no studies"
        raise UserError(f"study {study_name!r} not found in the storage{hint}") from None
    return study, artifact_store_for(url, artifacts or study.user_attrs.get("artifacts"))


def load_best(study_name: str, storage: Optional[str] = None, artifacts: Optional[str] = None) -> _FittedKerasModel:
    """The study's best model as a fitted sklearn estimator (``predict``, ``predict_proba``, ``score``).

    ``predict`` takes raw features: the fitted scaling and label encoding are applied inside.
    Works for studies of every engine.
    """
    study, store = _open(study_name, storage, artifacts)
    mid, pid, _ = _best_artifact_ids(study)
    model, pre = load_model_artifacts(store, mid, pid)
    return fitted_estimator(model, pre)


def export_best(study_name: str, path: str, storage: Optional[str] = None, artifacts: Optional[str] = None) -> Path:
    """Write the best model to ``path`` (a ``.keras`` file) and its preprocessing beside it (``.json``)."""
    from optuna.artifacts import download_artifact

    study, store = _open(study_name, storage, artifacts)
    mid, pid, _ = _best_artifact_ids(study)
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
    except Exception as e:  # missing files in the artifact store
        raise UserError(
            f"the stored model {mid} cannot be read from the artifact store ({e.__class__.__name__});"
            " check --artifacts / HPSEARCH_ARTIFACTS points at the study's artifact folder"
        ) from None
    json.loads(pre_path.read_text())  # a readable JSON file, or fail loudly
    return out
