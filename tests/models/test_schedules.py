"""Each learning-rate schedule's rate per epoch against its formula, the warm-up, and that both
engines' callback drives it in a real fit."""

from __future__ import annotations

import math
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest

from hpsearch.errors import ConfigError
from hpsearch.models.mlp import build_mlp
from hpsearch.models.schedules import attached
from hpsearch.trials.callbacks import EpochLR

REGRESSION = {"n_features_in_": 3, "target_type_": "continuous", "n_outputs_": 1}
LR = 0.1


def _drive(model, epochs: int, val_losses=None, steps: int = 4) -> list[float]:
    """Run the epoch callback by hand (exact, no training): the rate it set in each epoch."""
    cb = EpochLR()
    cb.set_model(model)
    cb.set_params({"steps": steps, "epochs": epochs})
    cb.on_train_begin()
    rates = []
    for e in range(epochs):
        cb.on_epoch_begin(e)
        rates.append(float(np.asarray(model.optimizer.learning_rate)))
        logs = {"val_loss": 1.0 if val_losses is None else val_losses[e]}
        cb.on_epoch_end(e, logs)
        assert logs["learning_rate"] == pytest.approx(rates[-1])
    return rates


def _mlp(**kw):
    return build_mlp(n_hidden=1, n_neurons=4, learning_rate=LR, meta=REGRESSION, jit_compile=False, **kw)


def test_power():
    rates = _drive(_mlp(lr_schedule="power", lr_decay_epochs=4, lr_power=2.0), 9)
    assert rates == pytest.approx([LR / (1 + e / 4) ** 2 for e in range(9)])


def test_onecycle():
    rates = _drive(_mlp(lr_schedule="onecycle", lr_decay_epochs=10, lr_decay_rate=0.1), 12)
    lo, up = LR * 0.1, 4  # u = floor(0.45 * 10)
    want = [lo + (LR - lo) * e / up for e in range(4)] + [LR - (LR - lo) * (e - 4) / 4 for e in range(4, 8)]
    want += [lo - (lo - lo / 1000) * (e - 8) / 2 for e in (8, 9)] + [lo / 1000] * 2
    assert rates == pytest.approx(want)
    assert max(rates) == pytest.approx(LR)


def test_performance_cuts_the_rate_after_patience_epochs_without_improvement():
    losses = [1.0, 0.9, 0.95, 0.95, 0.8, 0.85, 0.85, 0.85, 0.85]
    rates = _drive(_mlp(lr_schedule="performance", lr_patience=2, lr_decay_rate=0.5), len(losses), losses)
    # no improvement at epochs 2, 3 -> cut before epoch 4; at 5, 6 -> cut before 7; 7, 8 -> (after the end)
    assert rates == pytest.approx([LR] * 4 + [LR / 2] * 3 + [LR / 4] * 2)


@pytest.mark.parametrize("schedule, formula", [
    ("exponential", lambda step: LR * 0.1 ** (step / 8)),
    ("cosine", lambda step: LR * (0.9 * 0.5 * (1 + math.cos(math.pi * min(step, 8) / 8)) + 0.1)),
    ("piecewise", lambda step: LR if step < 8 else LR * 0.1),
    (None, lambda step: LR),
])
def test_warmup_then_a_step_schedule_per_epoch(schedule, formula):
    model = _mlp(lr_schedule=schedule, lr_decay_steps=8, lr_decay_rate=0.1, lr_warmup_epochs=3)
    rates = _drive(model, 7, steps=4)
    assert rates[:3] == pytest.approx([LR / 4, LR / 2, 3 * LR / 4])
    assert rates[3:] == pytest.approx([formula(t * 4) for t in range(4)])


def test_step_schedules_without_warmup_stay_keras_schedules():
    model = _mlp(lr_schedule="exponential", lr_decay_steps=8)
    assert attached(model) is None  # the optimizer's own step counter drives it
    assert attached(_mlp()) is None


def test_a_real_fit_follows_the_schedule():
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(64, 3)).astype("float32"), rng.normal(size=64).astype("float32")
    model = _mlp(lr_schedule="power", lr_decay_epochs=1, lr_warmup_epochs=1)
    hist = model.fit(X, y, batch_size=32, epochs=3, validation_data=(X, y), callbacks=[EpochLR()], verbose=0)
    assert hist.history["learning_rate"] == pytest.approx([LR / 2, LR, LR / 2])


@pytest.mark.parametrize("kwargs, message", [
    ({"lr_schedule": "power", "lr_decay_epochs": 0}, "model.lr_decay_epochs: must be an integer >= 1, got 0"),
    ({"lr_schedule": "power", "lr_power": 0}, "model.lr_power: must be > 0, got 0"),
    ({"lr_schedule": "performance", "lr_patience": 0}, "model.lr_patience: must be an integer >= 1, got 0"),
    ({"lr_warmup_epochs": -1}, "model.lr_warmup_epochs: must be an integer >= 0, got -1"),
    ({"lr_schedule": "cyclic"}, "model.lr_schedule: unknown value 'cyclic'; use one of exponential, cosine,"
                                " piecewise, power, performance, onecycle"),
])
def test_out_of_range_knobs_are_one_line_errors(kwargs, message):
    with pytest.raises(ConfigError, match="^" + message.replace("(", r"\(").replace(")", r"\)")):
        _mlp(**kwargs)


@pytest.mark.parametrize("activation", ["softplus", "prelu"])
def test_new_activations_and_alpha_dropout(activation):
    import keras

    model = build_mlp(n_hidden=2, n_neurons=4, activation=activation, dropout=0.1, alpha_dropout=True,
                      meta=REGRESSION, jit_compile=False)
    kinds = [type(layer).__name__ for layer in model.layers]
    assert kinds.count("AlphaDropout") == 2
    assert ("PReLU" in kinds) == (activation == "prelu")
    assert np.isfinite(model.predict(np.ones((2, 3), "float32"), verbose=0)).all()
    assert isinstance(model.layers[0], keras.layers.Dense)


@pytest.mark.parametrize("engine", ["optuna", "random"])
def test_both_engines_drive_the_schedule(engine, sqlite_url, tmp_path, monkeypatch):
    from hpsearch.models import builders, schedules
    from hpsearch.study.run import run_study
    from hpsearch.study.validate import parse_study_config

    cfg = parse_study_config({
        "name": f"sched-{engine}", "data": {"source": "sklearn:iris", "split": {"valid": 0.25, "test": 0.2}},
        "model": {"fixed": {"optimizer": "sgd", "learning_rate": 0.09, "lr_schedule": "power",
                            "lr_decay_epochs": 1}},
        "space": {"n_neurons": {"choice": [4]}}, "train": {"epochs": 3, "early_stopping": {"patience": 10}},
        "search": {"engine": engine, "n_trials": 1, "pruner": "none"}})
    built = []

    def attach(model, spec):  # the real one, keeping each model's state to look at after the run
        schedules.attach(model, spec)
        built.append(schedules.attached(model))

    monkeypatch.setattr(builders, "attach", attach)
    run_study(cfg, storage=sqlite_url, artifacts=str(tmp_path / "art"))
    trained = [state.history for state in built if state.history]
    assert trained and all(h == pytest.approx([0.09, 0.09 / 2, 0.09 / 3]) for h in trained)
