"""Metric names shared by both engines: direction, sklearn scorer, Keras log key, and test scoring."""

from __future__ import annotations

from typing import Any, Optional

import numpy as np

from hpsearch.config import METRICS

__all__ = ["default_metric", "direction_of", "sklearn_scoring", "value_from_logs", "score_predictions"]


def default_metric(task: str) -> str:
    return "accuracy" if task == "classification" else "mse"


def direction_of(metric: str) -> str:
    return METRICS[metric][0]


def sklearn_scoring(metric: str, task: str) -> tuple[str, float]:
    """The sklearn scorer name for a metric and the sign that turns its score into our value."""
    table = {
        "accuracy": ("accuracy", 1.0),
        "auc": ("roc_auc", 1.0),
        "mse": ("neg_mean_squared_error", -1.0),
        "mae": ("neg_mean_absolute_error", -1.0),
        "rmse": ("neg_root_mean_squared_error", -1.0),
        "r2": ("r2", 1.0),
    }
    if metric == "loss":
        return ("neg_log_loss", -1.0) if task == "classification" else ("neg_mean_squared_error", -1.0)
    return table[metric]


def value_from_logs(metric: str, logs: dict[str, Any], y_valid_var: Optional[float] = None) -> Optional[float]:
    """Read the validation value of ``metric`` from a Keras epoch's logs (``val_*`` keys)."""
    def get(key: str) -> Optional[float]:
        v = logs.get(key)
        return None if v is None else float(v)

    if metric in ("accuracy", "loss", "mse", "mae", "auc"):
        v = get(f"val_{metric}")
        if v is None and metric == "mse":
            v = get("val_mean_squared_error")
        if v is None and metric == "mae":
            v = get("val_mean_absolute_error")
        return v
    mse = get("val_mse")
    if mse is None:
        mse = get("val_mean_squared_error")
    if mse is None:
        return None
    if metric == "rmse":
        return float(np.sqrt(mse))
    if metric == "r2":
        return None if not y_valid_var else float(1.0 - mse / y_valid_var)
    return None


def score_predictions(metric: str, task: str, y_true: np.ndarray, raw: np.ndarray) -> float:
    """Score raw model outputs (probabilities or regression values) on encoded labels."""
    from sklearn import metrics as m

    raw = np.asarray(raw)
    if task == "classification":
        if raw.ndim == 1 or raw.shape[1] == 1:
            p1 = raw.reshape(-1)
            proba = np.column_stack([1.0 - p1, p1])
        else:
            proba = raw
        pred = proba.argmax(axis=1)
        if metric == "accuracy":
            return float(m.accuracy_score(y_true, pred))
        if metric == "auc":
            return float(m.roc_auc_score(y_true, proba[:, 1]))
        if metric == "loss":
            return float(m.log_loss(y_true, np.clip(proba, 1e-7, 1.0), labels=np.arange(proba.shape[1])))
        raise ValueError(f"metric {metric} does not apply to classification")
    pred = raw.reshape(-1)
    if metric in ("mse", "loss"):
        return float(m.mean_squared_error(y_true, pred))
    if metric == "mae":
        return float(m.mean_absolute_error(y_true, pred))
    if metric == "rmse":
        return float(np.sqrt(m.mean_squared_error(y_true, pred)))
    if metric == "r2":
        return float(m.r2_score(y_true, pred))
    raise ValueError(f"metric {metric} does not apply to regression")
