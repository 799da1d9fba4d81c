"""The one trial record format shared by every engine (see DESIGN.md: Optuna storage is the record).

Engines, the CLI, the report and ``load_best`` read and write trials only through these names, so a
study made by the scikit-learn engine and one made by the Optuna engine look the same everywhere.

Study user attributes (``study.user_attrs``):
    hpsearch_version, engine, metric, direction, task ("classification"/"regression"),
    study_config (the study file as YAML text), data_summary (dict: rows per split, features,
    classes), space (dict: parameter -> description), test_score (float, best model on the test
    split), test_metric, best_trial_number, complete (bool: the search ended by itself).

Trial user attributes (``trial.user_attrs``):
    engine, fold_scores (list[float]), fit_time (seconds, float), epochs_trained (int),
    n_params (int), failure_reason (str, FAIL trials), candidate (int: index in the sklearn
    candidate list), n_resources / halving_iter (halving engine), model_artifact_id,
    preprocess_artifact_id (artifacts of the trained model and its preprocessing).
Intermediate values: the validation metric after each epoch (Optuna engine).
"""

from __future__ import annotations

from typing import Any

__all__ = ["STUDY", "TRIAL", "clean_attr"]


class STUDY:
    VERSION = "hpsearch_version"
    ENGINE = "engine"
    METRIC = "metric"
    DIRECTION = "direction"
    TASK = "task"
    CONFIG = "study_config"
    DATA_SUMMARY = "data_summary"
    SPACE = "space"
    TEST_SCORE = "test_score"
    TEST_METRIC = "test_metric"
    BEST_TRIAL = "best_trial_number"
    COMPLETE = "complete"
    BEST_MODEL_ARTIFACT = "best_model_artifact_id"
    BEST_PREPROCESS_ARTIFACT = "best_preprocess_artifact_id"


class TRIAL:
    ENGINE = "engine"
    FOLD_SCORES = "fold_scores"
    FIT_TIME = "fit_time"
    EPOCHS = "epochs_trained"
    N_PARAMS = "n_params"
    FAILURE = "failure_reason"
    CANDIDATE = "candidate"
    N_RESOURCES = "n_resources"
    HALVING_ITER = "halving_iter"
    MODEL_ARTIFACT = "model_artifact_id"
    PREPROCESS_ARTIFACT = "preprocess_artifact_id"
    CURVE_ARTIFACT = "curve_artifact_id"
    WORKER = "worker"


def clean_attr(value: Any) -> Any:
    """Make a value JSON-storable as an Optuna attribute (numpy scalars/arrays to Python)."""
    import numpy as np

    if isinstance(value, dict):
        return {str(k): clean_attr(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean_attr(v) for v in value]
    if isinstance(value, np.ndarray):
        return clean_attr(value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and value != value:  # NaN is not valid JSON
        return None
    return value
