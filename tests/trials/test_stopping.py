"""One early-stopping rule and one monitor for every engine (hpsearch.trials.stopping): the study's
first metric on the validation rows unless ``train.early_stopping.monitor`` says ``val_loss``; the
scikit-learn engines and the Optuna engine build the same Keras ``EarlyStopping``, and packs watch
the same quantity per member."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import keras
import numpy as np

from hpsearch.packing.train import member_scores, member_val_losses, stop_settings
from hpsearch.spec.config import EarlyStoppingConfig
from hpsearch.study.run import run_study
from hpsearch.study.validate import parse_study_config
from hpsearch.trials.stopping import stop_rule


def _study(name: str, engine: str, monitor: str) -> Any:
    search: dict[str, Any] = {"engine": engine, "n_trials": 1, "seed": 0}
    search.update({"cv": 2} if engine == "random" else {"sampler": "random", "pruner": "none"})
    return parse_study_config({
        "name": name,
        "data": {"source": "sklearn:iris", "split": {"valid": 0.25, "test": 0.2, "seed": 0}},
        "model": {"builder": "mlp", "fixed": {"optimizer": "adam", "n_hidden": 1}},
        "space": {"n_neurons": {"int": [4, 8]}},
        "train": {"epochs": 2, "batch_size": 16, "pack": 1,
                  "early_stopping": {"patience": 1, "min_delta": 0.01, "monitor": monitor}},
        "search": search,
    })


def test_the_sklearn_and_the_optuna_engine_stop_on_the_same_monitor(tmp_path, monkeypatch):
    """The default: the study metric (the scikit-learn engines watched val_loss before)."""
    seen: dict[str, set[tuple[str, str, int, float]]] = {}
    engine = ["?"]

    class Recording(keras.callbacks.EarlyStopping):
        def __init__(self, **kw: Any) -> None:
            super().__init__(**kw)
            seen.setdefault(engine[0], set()).add((kw["monitor"], kw["mode"], kw["patience"], kw["min_delta"]))

    monkeypatch.setattr(keras.callbacks, "EarlyStopping", Recording)
    for name in ("optuna", "random"):
        engine[0] = name
        run_study(_study(f"es-{name}", name, "metric"), storage=f"sqlite:///{tmp_path / name}.db",
                  artifacts=str(tmp_path / f"{name}-art"))
    assert seen == {"optuna": {("val_accuracy", "max", 1, 0.01)}, "random": {("val_accuracy", "max", 1, 0.01)}}


def test_one_rule_for_every_metric_and_the_packs_watch_the_same_quantity():
    es = EarlyStoppingConfig(patience=3)
    assert stop_rule(es, 9, "accuracy", "maximize", best_weights_when_off=True).key == "val_accuracy"
    for metric, direction in (("r2", "maximize"), ("rmse", "minimize")):  # Keras logs them as val_mse
        r = stop_rule(es, 9, metric, direction, best_weights_when_off=True)
        assert (r.key, r.mode) == ("val_mse", "min")
    loss = stop_rule(EarlyStoppingConfig(monitor="val_loss"), 9, "accuracy", "maximize", best_weights_when_off=True)
    assert (loss.key, loss.mode, loss.on_metric) == ("val_loss", "min", False)
    off = [stop_rule(None, 9, "mae", "minimize", best_weights_when_off=b) for b in (True, False)]
    assert [(r.patience, r.enabled, r.restore_best, len(r.keras_callbacks())) for r in off] == [
        (9, False, True, 1), (9, False, False, 0)]  # Optuna keeps the best epoch's weights; sklearn the last

    pred = np.random.default_rng(0).random((6, 2, 1))
    y = np.arange(6, dtype="float64")
    pm = SimpleNamespace(task="regression", specs=[SimpleNamespace(l1=0.0, l2=0.0)] * 2)
    on_mse = stop_settings(stop_rule(es, 9, "mse", "minimize", best_weights_when_off=True), "mse", pm, y)
    assert on_mse["monitor"] is None  # the metric's own scores
    on_r2 = stop_settings(stop_rule(es, 9, "r2", "maximize", best_weights_when_off=True), "r2", pm, y)["monitor"]
    assert on_r2(pred) == member_scores("regression", "mse", pred, y, None)
    on_loss = stop_settings(loss, "accuracy", pm, y)["monitor"]
    assert on_loss(pred) == member_val_losses(pm, pred, y)


def test_the_rule_is_keras_early_stopping():
    rule = stop_rule(EarlyStoppingConfig(patience=2, min_delta=0.1), 9, "accuracy", "maximize",
                     best_weights_when_off=True)
    assert rule.improved(0.75, 0.6) and not rule.improved(0.7, 0.6) and rule.improved(0.5, None)
    assert not rule.exhausted(1, 3) and rule.exhausted(2, 3) and not rule.exhausted(5, 0)
    es = rule.keras_callbacks()[0]
    assert (es.monitor, es.patience, es.restore_best_weights) == ("val_accuracy", 2, True)
    # the value a val_loss rule gives a trial: the metric at the epoch whose weights are kept
    loss = stop_rule(EarlyStoppingConfig(monitor="val_loss"), 9, "accuracy", "maximize", best_weights_when_off=True)
    assert loss.trial_value([0.5, 0.9, 0.7], 3, "maximize") == (0.7, 2)
    assert rule.trial_value([0.5, 0.9, 0.7], 3, "maximize") == (0.9, 1)
