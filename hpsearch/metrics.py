"""Metric names shared by every engine: direction, task, sklearn scorer, Keras log key, test scoring.

The metric table lives here (not in the study-file schema) so that the schema, the data checks and
the engines read one table without importing each other.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = [
    "METRICS",
    "MEASURED",
    "default_metric",
    "direction_of",
    "metric_problem",
    "score_predictions",
    "sklearn_scoring",
    "value_from_logs",
]

#: metric name -> (direction, task it applies to: classification | binary | regression | any)
METRICS: dict[str, tuple[str, str]] = {
    "accuracy": ("maximize", "classification"),
    "auc": ("maximize", "binary"),
    "loss": ("minimize", "any"),
    "mse": ("minimize", "regression"),
    "mae": ("minimize", "regression"),
    "rmse": ("minimize", "regression"),
    "r2": ("maximize", "regression"),
}


#: objectives measured on a built model rather than trained for (``search.metric: [accuracy, n_params]``):
#: name -> direction. ``latency_ms`` is prediction time per row on the machine that ran the trial.
MEASURED: dict[str, str] = {"n_params": "minimize", "latency_ms": "minimize"}


def _metrics_for(*tasks: str) -> list[str]:
    return [m for m, (_, t) in METRICS.items() if t in tasks]


def metric_problem(metric: str, task: str, n_classes: int | None, source: str = "the data") -> str | None:
    """Why ``metric`` cannot score ``task`` (one line naming search.metric and the fix), or None.

    ``n_classes`` None means "not known yet" (a declared task before the data is read): the binary
    check of ``auc`` then waits for the data.
    """
    needs = METRICS[metric][1]
    if task == "regression" and needs in ("classification", "binary"):
        return (f"search.metric: {metric} needs a classification target, but {source} is regression;"
                f" use {', '.join(_metrics_for('regression'))} or loss")
    if task == "classification" and needs == "regression":
        return (f"search.metric: {metric} needs a regression target, but {source} is classification;"
                f" use {', '.join(_metrics_for('classification', 'binary'))} or loss (or set data.task: regression)")
    if task == "classification" and needs == "binary" and n_classes is not None and n_classes != 2:
        return f"search.metric: {metric} needs a binary target, {source} has {n_classes} classes; use accuracy or loss"
    return None


def default_metric(task: str) -> str:
    """The metric a study uses when ``search.metric`` is not set."""
    return "accuracy" if task == "classification" else "mse"


def direction_of(metric: str) -> str:
    """Whether larger (maximize) or smaller (minimize) values of ``metric`` (or of a measured
    objective, :data:`MEASURED`) are better."""
    return MEASURED[metric] if metric in MEASURED else METRICS[metric][0]


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


def value_from_logs(metric: str, logs: dict[str, Any], y_valid_var: float | None = None) -> float | None:
    """Read the validation value of ``metric`` from a Keras epoch's logs (``val_*`` keys)."""
    def get(key: str) -> float | None:
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
