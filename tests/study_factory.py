"""A realistic stored hpsearch study, made quickly and without the search engines.

``make_study(tmp_path)`` writes what a finished Optuna-engine run leaves behind: the study
attributes of :mod:`hpsearch.records`, complete / pruned / failed trials with params, per-epoch
intermediate values and user attributes, and, for the best trial, a real (tiny) trained Keras model
with its preprocessing plus a training-curve PNG as trial artifacts (through the same
:mod:`hpsearch.storage.artifacts` helpers the engines use), referenced from the study attributes exactly as
:func:`hpsearch.study.run.finalize` does.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

DATASETS = {
    # dataset -> (metric, direction, rows)
    "iris": ("accuracy", "maximize", 90),
    "breast_cancer": ("auc", "maximize", 120),
    "diabetes": ("mse", "minimize", 120),
}


@dataclass
class FactoryStudy:
    name: str
    url: str
    db_path: Path
    artifacts: Path
    task: str
    metric: str
    direction: str
    best_number: int
    n_complete: int
    n_pruned: int
    n_failed: int
    model_artifact_id: str = ""
    curve_artifact_id: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def study_yaml(name: str, dataset: str, metric: str, rows: int, epochs: int) -> str:
    return f"""name: {name}
description: test study made by tests/study_factory.py
data:
  source: "sklearn:{dataset}"
  max_rows: {rows}
  split: {{valid: 0.2, test: 0.3, seed: 0}}
model:
  builder: mlp
  fixed: {{activation: relu, optimizer: adam}}
space:
  n_hidden: {{int: [1, 2]}}
  n_neurons: {{int: [4, 16]}}
  learning_rate: {{float: [1.0e-3, 1.0e-1], log: true}}
train: {{epochs: {epochs}, batch_size: 16}}
search: {{engine: optuna, sampler: random, pruner: median, n_trials: 5, metric: {metric}}}
"""


def _tiny_model(data: Any, n_neurons: int, epochs: int, metric: str) -> tuple[Any, dict[str, list[float]]]:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    import numpy as np

    keras.utils.set_random_seed(0)
    n_features = data.X_train.shape[1]
    if data.task == "classification":
        n_classes = data.n_classes
        if n_classes == 2:
            out, loss, metrics = keras.layers.Dense(1, activation="sigmoid"), "binary_crossentropy", [
                "accuracy", keras.metrics.AUC(name="auc")]
        else:
            out, loss, metrics = keras.layers.Dense(n_classes, activation="softmax"), \
                "sparse_categorical_crossentropy", ["accuracy"]
        y_train, y_valid = data.y_train, data.y_valid
    else:
        out, loss, metrics = keras.layers.Dense(1), "mse", ["mse", "mae"]
        y_train, y_valid = data.y_train, data.y_valid
    model = keras.Sequential([keras.Input((n_features,)), keras.layers.Dense(n_neurons, activation="relu"), out])
    model.compile(optimizer=keras.optimizers.Adam(0.02), loss=loss, metrics=metrics)
    hist = model.fit(data.X_train, y_train, validation_data=(data.X_valid, y_valid), epochs=epochs,
                     batch_size=16, verbose=0)
    history = {k: [float(x) for x in v] for k, v in hist.history.items()}
    if data.task == "regression" and np.isnan(history["val_loss"]).any():  # pragma: no cover
        raise RuntimeError("factory model diverged")
    return model, history


def make_study(
    tmp_path: Path,
    dataset: str = "iris",
    name: str | None = None,
    epochs: int = 6,
    url: str | None = None,
    artifacts: Path | None = None,
) -> FactoryStudy:
    """Create and fill one study in ``tmp_path/hpsearch.db`` (or ``url``); returns its description."""
    import warnings

    import numpy as np
    import optuna
    from optuna.trial import TrialState

    from hpsearch.data.prepare import prepare_data
    from hpsearch.metrics import score_predictions
    from hpsearch.models.scoring import test_scores
    from hpsearch.records import STUDY, TRIAL, clean_attr
    from hpsearch.storage import open_storage
    from hpsearch.storage.artifacts import artifact_store_for, save_curve_artifact, save_model_artifacts
    from hpsearch.study.validate import parse_study_config

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    metric, direction, rows = DATASETS[dataset]
    name = name or f"{dataset.replace('_', '-')}-test"
    db_path = tmp_path / "hpsearch.db"
    url = url or f"sqlite:///{db_path}"
    artifacts = artifacts or (tmp_path / "hpsearch-artifacts")
    text = study_yaml(name, dataset, metric, rows, epochs)
    cfg = parse_study_config(yaml.safe_load(text), source_text=text)
    data = prepare_data(cfg, 1)  # the Optuna engine on a holdout split: no CV folds

    storage = open_storage(url)
    store = artifact_store_for(url, str(artifacts))
    study = optuna.create_study(study_name=name, storage=storage, direction=direction,
                                sampler=optuna.samplers.RandomSampler(seed=0))
    study.set_metric_names([metric])  # the dashboard shows the metric name instead of "Objective 0"
    for k, v in {
        STUDY.VERSION: "0.1.0", STUDY.ENGINE: "optuna", STUDY.METRIC: metric, STUDY.DIRECTION: direction,
        STUDY.TASK: data.task, STUDY.CONFIG: text, STUDY.DATA_SUMMARY: data.summary,
        STUDY.SPACE: {"n_hidden": "IntParam(1, 2)", "n_neurons": "IntParam(4, 16)",
                      "learning_rate": "FloatParam(0.001, 0.1, log=True)"},
        STUDY.BUILDER: "mlp", STUDY.ARTIFACTS: str(artifacts),
    }.items():
        study.set_user_attr(k, clean_attr(v))

    sign = 1.0 if direction == "maximize" else -1.0
    # the real model (best trial): its validation curve is the best trial's learning curve
    t0 = time.monotonic()
    model, history = _tiny_model(data, 8, epochs, metric)
    fit_time = time.monotonic() - t0
    raw_valid = np.asarray(model.predict(data.X_valid, verbose=0))
    best_value = score_predictions(metric, data.task, data.y_valid, raw_valid)
    val_key = {"accuracy": "val_accuracy", "auc": "val_auc", "mse": "val_mse"}[metric]
    best_curve = history[val_key]

    def curve(final: float, n: int) -> list[float]:
        # a plausible curve that ends at `final`, improving over the epochs
        start = final - sign * 0.3 * (abs(final) + 0.1)
        return [float(start + (final - start) * (1 - 0.6 ** (i + 1)) / (1 - 0.6 ** n)) for i in range(n)]

    def worse(by: float) -> float:  # a value ``by`` (relative) worse than the best one
        return best_value - sign * by * (abs(best_value) + 0.1)

    plan = [
        # (state, params, value, epochs trained)
        ("COMPLETE", {"n_hidden": 1, "n_neurons": 4, "learning_rate": 0.002}, worse(0.15), epochs),
        ("COMPLETE", {"n_hidden": 1, "n_neurons": 8, "learning_rate": 0.02}, best_value, epochs),  # best
        ("PRUNED", {"n_hidden": 2, "n_neurons": 5, "learning_rate": 0.001}, worse(0.4), 2),
        ("FAIL", {"n_hidden": 2, "n_neurons": 16, "learning_rate": 0.09}, None, 1),
        ("COMPLETE", {"n_hidden": 2, "n_neurons": 12, "learning_rate": 0.01}, worse(0.08), epochs),
    ]
    best_number = 1
    mid = pid = cid = ""
    for number, (state, params, value, n_ep) in enumerate(plan):
        study.enqueue_trial(params)
        trial = study.ask()
        trial.suggest_int("n_hidden", 1, 2)
        trial.suggest_int("n_neurons", 4, 16)
        trial.suggest_float("learning_rate", 1e-3, 1e-1, log=True)
        trial.set_user_attr(TRIAL.ENGINE, "optuna")
        trial.set_user_attr(TRIAL.WORKER, "factory-0")
        if state == "FAIL":
            trial.set_user_attr(TRIAL.FAILURE, "NaN loss at epoch 1 (learning rate too high)")
            trial.set_user_attr(TRIAL.EPOCHS, 1)
            study.tell(trial, state=TrialState.FAIL)
            continue
        values = best_curve if number == best_number else curve(float(value), n_ep)
        for step, v in enumerate(values):
            trial.report(float(v), step)
        trial.set_user_attr(TRIAL.EPOCHS, n_ep)
        trial.set_user_attr(TRIAL.FOLD_SCORES, [float(values[-1])])
        trial.set_user_attr(TRIAL.FIT_TIME, float(fit_time if number == best_number else 0.5 + 0.1 * number))
        trial.set_user_attr(TRIAL.N_PARAMS, int(model.count_params()) if number == best_number else 50 + number)
        if number == best_number:
            mid, pid = save_model_artifacts(store, trial, model, data.preprocessor)
            trial.set_user_attr(TRIAL.MODEL_ARTIFACT, mid)
            trial.set_user_attr(TRIAL.PREPROCESS_ARTIFACT, pid)
            cid = save_curve_artifact(store, trial, history, f"trial {number}") or ""
            assert cid, "the training-curve PNG was not stored"
            trial.set_user_attr(TRIAL.CURVE_ARTIFACT, cid)
        if state == "PRUNED":
            study.tell(trial, state=TrialState.PRUNED)
        else:
            study.tell(trial, float(values[-1]))

    # what finalize() records: best model artifacts and the test score
    test = test_scores(model, data, metric)
    for k, v in {
        STUDY.BEST_TRIAL: best_number, STUDY.BEST_MODEL_ARTIFACT: mid, STUDY.BEST_PREPROCESS_ARTIFACT: pid,
        STUDY.TEST_SCORE: test[metric], STUDY.TEST_METRIC: metric, STUDY.TEST_METRICS: test, STUDY.COMPLETE: True,
    }.items():
        study.set_user_attr(k, clean_attr(v))
    assert study.best_trial.number == best_number, (study.best_trial.number, [t.value for t in study.trials])
    return FactoryStudy(
        name=name, url=url, db_path=db_path, artifacts=artifacts, task=data.task, metric=metric,
        direction=direction, best_number=best_number, n_complete=3, n_pruned=1, n_failed=1,
        model_artifact_id=mid, curve_artifact_id=cid,
        extra={"history": history, "test": test},
    )
