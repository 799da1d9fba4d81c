"""The chosen model on the held-out test split, as data (DESIGN.md: test data is never searched on;
the best model is scored on it once and that figure is recorded apart from the validation scores).

:func:`hpsearch.models.scoring.test_scores` is what a finished study records (the study metric plus
accuracy, or mse / mae / r2); :func:`evaluate_best` re-creates the split from a stored study and returns the report's
evaluation (confusion matrix, ROC curve, per-class scores, residuals) for :mod:`hpsearch.plots` to
draw. Nothing here prints or draws.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from hpsearch.data.sources.base import source_for
from hpsearch.errors import UserError
from hpsearch.models.scoring import predict_raw
from hpsearch.records import STUDY
from hpsearch.storage.artifacts import artifact_store_for, load_model_artifacts
from hpsearch.storage.queries import best_artifact_ids

if TYPE_CHECKING:  # pragma: no cover
    from hpsearch.data.prepare import PreparedData
    from hpsearch.spec.config import StudyConfig

__all__ = [
    "Evaluation",
    "evaluate_best",
    "evaluate_predictions",
    "stored_config",
]

@dataclass
class Evaluation:
    """The best model on the test split: ``scores`` (JSON-able, written to the report's
    metrics.json) and the arrays the report's figures are drawn from."""

    task: str
    note: str
    scores: dict[str, Any]
    labels: list[str] = field(default_factory=list)  # class names (classification)
    confusion: list[list[int]] | None = None  # rows: true class, columns: predicted
    roc: tuple[list[float], list[float]] | None = None  # (false positive rate, true positive rate), binary
    y_true: np.ndarray | None = None  # true and predicted values (classification: class indices)
    y_pred: np.ndarray | None = None
    images: np.ndarray | None = None  # a classifier's test inputs when they are images (rows, h, w[, c])


def _classification(y: np.ndarray, raw: np.ndarray, classes: list[Any] | None, note: str) -> Evaluation:
    from sklearn import metrics as m

    proba = np.column_stack([1 - raw.reshape(-1), raw.reshape(-1)]) if raw.ndim == 1 or raw.shape[1] == 1 else raw
    pred = proba.argmax(axis=1)
    labels = [str(c) for c in (classes or range(proba.shape[1]))]
    k = len(labels)
    ev = Evaluation(task="classification", note=note, labels=labels,
                        scores={"accuracy": float(m.accuracy_score(y, pred))},
                        confusion=m.confusion_matrix(y, pred, labels=list(range(k))).tolist(),
                        y_true=np.asarray(y), y_pred=pred)
    if k == 2:
        ev.scores["roc_auc"] = float(m.roc_auc_score(y, proba[:, 1]))
        fpr, tpr, _ = m.roc_curve(y, proba[:, 1])
        ev.roc = (fpr.tolist(), tpr.tolist())
    else:
        p, r, f, s = m.precision_recall_fscore_support(y, pred, labels=list(range(k)), zero_division=0)
        ev.scores["per_class"] = {labels[i]: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]),
                                              "support": int(s[i])} for i in range(k)}
    return ev


def _regression(y: np.ndarray, raw: np.ndarray, note: str) -> Evaluation:
    from sklearn import metrics as m

    y = np.asarray(y, dtype=np.float64)
    pred = raw.reshape(-1).astype(np.float64)
    scores = {"mae": float(m.mean_absolute_error(y, pred)), "rmse": float(np.sqrt(m.mean_squared_error(y, pred))),
              "r2": float(m.r2_score(y, pred))}
    return Evaluation(task="regression", note=note, scores=scores, y_true=y, y_pred=pred)


def evaluate_predictions(raw: np.ndarray, data: PreparedData, note: str = "") -> Evaluation:
    """Scores and figure data of raw model outputs on ``data``'s test split."""
    if data.task == "classification":
        ev = _classification(data.y_test, raw, data.preprocessor.classes, note)
        if np.ndim(data.X_test) in (3, 4):  # images: the report shows the misclassified ones
            ev.images = data.X_test
        return ev
    return _regression(data.y_test, raw, note)


def stored_config(study: Any) -> tuple[StudyConfig | None, str]:
    """The study's config from its stored study file, relative data paths resolved; else (None, why).

    Relative paths start at the study file's folder (stored as ``base_dir``), else the current one.
    """
    import yaml

    from hpsearch.study.validate import parse_study_config

    text = study.user_attrs.get(STUDY.CONFIG)
    if not text:
        return None, "the study has no stored study file (study_config attribute)"
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError:
        return None, "the stored study file is not valid YAML"
    why = ""
    for base in [b for b in (study.user_attrs.get(STUDY.BASE_DIR), os.getcwd()) if b]:
        try:
            cfg = parse_study_config(data, where="stored study file", base_dir=str(base), source_text=text)
        except UserError as e:
            return None, f"the stored study file does not validate: {e}"
        path = source_for(cfg.data.source).locate(cfg)
        if path is None or path.exists():
            return cfg, ""
        why = (f"data file {path} not found (relative paths are resolved from the current folder; run the"
               " report from the study file's folder)")
    return None, why


def _prepare(cfg: StudyConfig) -> PreparedData:
    from hpsearch.data.prepare import prepare_data
    from hpsearch.engines.base import get_engine

    return prepare_data(cfg, get_engine(cfg.search.engine).cv_folds(cfg))


def evaluate_best(study: Any, url: str, artifacts: str | None = None) -> Evaluation | str:
    """The study's best stored model on the test split of its re-created data, or why it cannot be.

    The split is re-created from the stored study file (seeded), so the scores match the ones the
    run recorded; a scaling that differs from the model's own is called out in the note.
    """
    cfg, why = stored_config(study)
    if cfg is None:
        return why
    try:
        data = _prepare(cfg)
    except UserError as e:
        return f"the data cannot be prepared again ({e})"
    if not len(data.y_test):
        return "the study has no test split (data.split.test: 0)"
    try:
        mid, pid, number = best_artifact_ids(study)
        store = artifact_store_for(url, artifacts or study.user_attrs.get(STUDY.ARTIFACTS))
        model, pre = load_model_artifacts(store, mid, pid)
    except UserError as e:
        return str(e)
    note = f"trial {number}, {len(data.y_test)} test rows (the seeded split of the stored study file)"
    mine = data.preprocessor.mean
    if pre.mean is not None and mine is not None and not np.allclose(pre.mean, mine, rtol=1e-4, atol=1e-6):
        note += "; WARNING: the data differs from the data the model was trained on (scaling does not match)"
    return evaluate_predictions(predict_raw(model, data.X_test), data, note)
