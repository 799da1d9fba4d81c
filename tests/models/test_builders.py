"""Tests of hpsearch.models.builders and hpsearch.models.mlp: the MLP knobs, validation messages, the builder
registry, parameter routing and the named-choice checks run before a study starts."""

from __future__ import annotations

import math
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import pytest

from hpsearch.errors import ConfigError
from hpsearch.models import builders
from hpsearch.models.builders import (
    COMPILE_PARAMS,
    OPTIMIZERS,
    builder_accepts,
    builder_name,
    call_builder,
    check_builder_params,
    compile_for_task,
    count_params,
    resolve_builder,
)
from hpsearch.models.mlp import ACTIVATIONS, build_mlp
from hpsearch.models.schedules import STEP_SCHEDULES
from hpsearch.registry import BUILDERS
from hpsearch.spec.space import SearchSpace

TESTS_DIR = Path(__file__).resolve().parents[1]  # tests/: the helper modules

BINARY = {"n_features_in_": 5, "target_type_": "binary", "n_classes_": 2}
MULTI = {"n_features_in_": 5, "target_type_": "multiclass", "n_classes_": 3}
REGRESSION = {"n_features_in_": 5, "target_type_": "continuous", "n_outputs_": 1}


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(64, 5)).astype("float32")
    y_multi = rng.integers(0, 3, size=64)
    y_bin = (X[:, 0] > 0).astype("int64")
    y_reg = (X @ rng.normal(size=5)).astype("float32")
    return X, y_bin, y_multi, y_reg


@pytest.fixture
def user_builders(monkeypatch):
    monkeypatch.syspath_prepend(str(TESTS_DIR))
    import hps_user_builders

    return hps_user_builders


def dense_units(model):
    return [layer.units for layer in model.layers if isinstance(layer, keras.layers.Dense)]


def fit_one_epoch(model, X, y):
    history = model.fit(X, y, epochs=1, batch_size=32, verbose=0, validation_data=(X, y))
    return history.history


# ---------------------------------------------------------------------------------- knobs --

@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_each_activation_builds_and_trains(activation, data):
    X, _, y, _ = data
    model = build_mlp(n_hidden=1, n_neurons=4, activation=activation, meta=MULTI, jit_compile=False)
    hist = fit_one_epoch(model, X, y)
    assert math.isfinite(hist["loss"][0])
    if activation == "prelu":  # a layer with weights of its own after a linear Dense
        assert isinstance(model.get_layer("act_0"), keras.layers.PReLU)
        return
    hidden = model.get_layer("hidden_0")
    assert hidden.activation.__name__ in (activation, "silu" if activation == "swish" else activation)


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_each_optimizer_builds_and_trains(optimizer, data):
    X, _, _, y = data
    model = build_mlp(n_hidden=1, n_neurons=4, optimizer=optimizer, learning_rate=1e-3,
                      meta=REGRESSION, jit_compile=False)
    hist = fit_one_epoch(model, X, y)
    assert math.isfinite(hist["loss"][0])
    expected = {"sgd": "SGD", "momentum": "SGD", "nesterov": "SGD", "adagrad": "Adagrad",
                "rmsprop": "RMSprop", "adam": "Adam", "adamax": "Adamax", "nadam": "Nadam",
                "adamw": "AdamW"}[optimizer]
    assert type(model.optimizer).__name__ == expected


def test_sgd_variants_momentum():
    plain = build_mlp(optimizer="sgd", meta=REGRESSION).optimizer
    mom = build_mlp(optimizer="momentum", momentum=0.8, meta=REGRESSION).optimizer
    nest = build_mlp(optimizer="nesterov", momentum=0.7, meta=REGRESSION).optimizer
    assert plain.momentum == 0.0 and not plain.nesterov
    assert mom.momentum == pytest.approx(0.8) and not mom.nesterov
    assert nest.momentum == pytest.approx(0.7) and nest.nesterov


def test_adamw_weight_decay_and_clipping():
    opt = build_mlp(optimizer="adamw", weight_decay=0.01, clipnorm=1.0, meta=REGRESSION).optimizer
    assert opt.weight_decay == pytest.approx(0.01)
    assert opt.clipnorm == pytest.approx(1.0)
    opt = build_mlp(optimizer="adam", clipvalue=0.5, meta=REGRESSION).optimizer
    assert opt.clipvalue == pytest.approx(0.5)


@pytest.mark.parametrize("schedule", STEP_SCHEDULES)
def test_each_schedule_reaches_the_floor(schedule, data):
    X, _, _, y = data
    model = build_mlp(learning_rate=0.01, lr_schedule=schedule, lr_decay_steps=10,
                      lr_decay_rate=0.1, meta=REGRESSION, jit_compile=False)
    sch = model.optimizer._learning_rate
    assert isinstance(sch, keras.optimizers.schedules.LearningRateSchedule)
    assert float(sch(0)) == pytest.approx(0.01)
    assert float(sch(10)) == pytest.approx(0.001, rel=1e-3)
    assert float(sch(11)) <= 0.001 * 1.0001
    hist = fit_one_epoch(model, X, y)
    assert math.isfinite(hist["loss"][0])


def test_constant_width_and_funnel():
    assert dense_units(build_mlp(n_hidden=3, n_neurons=20, meta=MULTI)) == [20, 20, 20, 3]
    assert dense_units(build_mlp(n_hidden=3, n_neurons=64, funnel=0.5, meta=MULTI)) == [64, 32, 16, 3]
    # never below one unit
    assert dense_units(build_mlp(n_hidden=4, n_neurons=3, funnel=0.1, meta=BINARY)) == [3, 1, 1, 1, 1]
    assert dense_units(build_mlp(n_hidden=0, meta=BINARY)) == [1]


def test_numpy_scalars_are_accepted(data):
    X, _, y, _ = data
    model = build_mlp(n_hidden=np.int64(2), n_neurons=np.int64(7), learning_rate=np.float64(0.01),
                      dropout=np.float32(0.1), batch_norm=np.bool_(True), meta=MULTI,
                      steps_per_execution=np.int64(2), jit_compile=False)
    assert dense_units(model) == [7, 7, 3]
    assert all(type(u) is int for u in dense_units(model))
    assert math.isfinite(fit_one_epoch(model, X, y)["loss"][0])


def test_default_initializers():
    def init(activation):
        model = build_mlp(activation=activation, meta=BINARY)
        return type(model.get_layer("hidden_0").kernel_initializer).__name__

    assert init("relu") == "HeNormal"
    assert init("elu") == "HeNormal"
    assert init("selu") == "LecunNormal"
    assert init("tanh") == "GlorotUniform"
    model = build_mlp(activation="relu", kernel_initializer="glorot_normal", meta=BINARY)
    assert type(model.get_layer("hidden_0").kernel_initializer).__name__ == "GlorotNormal"


def test_regularization_layers():
    model = build_mlp(n_hidden=2, n_neurons=8, batch_norm=True, dropout=0.3, l1=1e-4, l2=1e-3,
                      max_norm=2.0, meta=BINARY)
    kinds = [type(layer).__name__ for layer in model.layers]
    assert kinds == ["Dense", "BatchNormalization", "Activation", "Dropout"] * 2 + ["Dense"]
    hidden = model.get_layer("hidden_0")
    assert hidden.use_bias is False  # the BatchNormalization layer carries the shift
    assert hidden.kernel_regularizer.l1 == pytest.approx(1e-4)
    assert hidden.kernel_regularizer.l2 == pytest.approx(1e-3)
    assert hidden.kernel_constraint.max_value == pytest.approx(2.0)
    assert model.get_layer("dropout_0").rate == pytest.approx(0.3)
    plain = build_mlp(meta=BINARY).get_layer("hidden_0")
    assert plain.kernel_regularizer is None and plain.kernel_constraint is None


def test_compile_levers_are_passed():
    model = build_mlp(steps_per_execution=4, jit_compile=False, meta=BINARY)
    assert model.steps_per_execution == 4
    assert model.jit_compile is False


# --------------------------------------------------------------------- task, loss, metrics --

def test_binary_output_loss_and_log_names(data):
    X, y, _, _ = data
    model = build_mlp(meta=BINARY, jit_compile=False)
    out = model.get_layer("output")
    assert out.units == 1 and out.activation.__name__ == "sigmoid"
    assert model.loss == "binary_crossentropy"
    hist = fit_one_epoch(model, X, y)
    assert set(hist) == {"loss", "accuracy", "auc", "val_loss", "val_accuracy", "val_auc"}


def test_multiclass_output_loss_and_log_names(data):
    X, _, y, _ = data
    model = build_mlp(meta=MULTI, jit_compile=False)
    out = model.get_layer("output")
    assert out.units == 3 and out.activation.__name__ == "softmax"
    assert model.loss == "sparse_categorical_crossentropy"
    assert set(fit_one_epoch(model, X, y)) == {"loss", "accuracy", "val_loss", "val_accuracy"}


@pytest.mark.parametrize("loss", [None, "mse", "mae", "huber"])
def test_regression_losses_and_log_names(loss, data):
    X, _, _, y = data
    model = build_mlp(meta=REGRESSION, loss=loss, jit_compile=False)
    out = model.get_layer("output")
    assert out.units == 1 and out.activation.__name__ == "linear"
    assert model.loss == (loss or "mse")
    assert set(fit_one_epoch(model, X, y)) == {"loss", "mse", "mae", "val_loss", "val_mse", "val_mae"}


def test_integer_valued_regression_target_without_classes_is_regression():
    # scikeras' KerasRegressor reports "multiclass" for integer-valued float targets but no n_classes_
    meta = {"n_features_in_": 5, "target_type_": "multiclass", "n_outputs_": 1}
    assert builders.task_of(meta) == "regression"
    assert builders.task_of({**meta, "n_classes_": 4}) == "multiclass"


def test_explicit_metrics(data):
    X, _, _, y = data
    model = build_mlp(meta=REGRESSION, metrics=["rmse", "mae"], jit_compile=False)
    assert set(fit_one_epoch(model, X, y)) == {"loss", "rmse", "mae", "val_loss", "val_rmse", "val_mae"}


def test_no_meta_means_regression_with_lazy_input(data):
    X, _, _, y = data
    model = build_mlp(n_hidden=1, n_neurons=3, jit_compile=False)
    assert count_params(model) == 0  # not built yet
    fit_one_epoch(model, X, y)
    assert count_params(model) == (5 * 3 + 3) + (3 + 1)


def test_count_params():
    model = build_mlp(n_hidden=2, n_neurons=10, meta=MULTI)
    assert count_params(model) == (5 * 10 + 10) + (10 * 10 + 10) + (10 * 3 + 3)
    assert isinstance(count_params(model), int)


# ------------------------------------------------------------------------------ validation --

@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"activation": "rellu"},
         "model.activation: unknown value 'rellu'; use one of relu, leaky_relu, elu, selu, gelu, swish, tanh"),
        ({"optimizer": "adamm"}, "model.optimizer: unknown value 'adamm'; use one of sgd, momentum,"),
        ({"kernel_initializer": "zeros"}, "model.kernel_initializer: unknown value 'zeros'; use one of"),
        ({"loss": "hinge"}, "model.loss: unknown value 'hinge'; use one of mse, mae, huber"),
        ({"lr_schedule": "step"}, "model.lr_schedule: unknown value 'step'; use one of exponential, cosine, piecewise"),
        ({"metrics": ["f1"]}, "model.metrics: unknown value 'f1'"),
        ({"n_hidden": -1}, "model.n_hidden: must be an integer in [0, 1000], got -1"),
        ({"n_neurons": 0}, "model.n_neurons: must be an integer in [1, 65536], got 0"),
        ({"n_neurons": 2.5}, "model.n_neurons: must be an integer in [1, 65536], got 2.5"),
        ({"n_neurons": 10**12}, "model.n_neurons: must be an integer in [1, 65536], got 1000000000000"),
        ({"batch_norm": "yes"}, "model.batch_norm: must be true or false, got 'yes'"),
        ({"dropout": 1.0}, "model.dropout: must be a number in [0, 1), got 1.0"),
        ({"dropout": -0.1}, "model.dropout: must be a number in [0, 1), got -0.1"),
        ({"learning_rate": 0}, "model.learning_rate: must be > 0"),
        ({"funnel": 0}, "model.funnel: must be a number > 0"),
        ({"l2": -1}, "model.l2: must be a number >= 0, got -1"),
        ({"steps_per_execution": 0}, "model.steps_per_execution: must be an integer >= 1"),
        ({"jit_compile": "yes"}, "model.jit_compile: unknown value 'yes'"),
    ],
)
def test_bad_values_raise_one_line_config_errors(kwargs, message):
    with pytest.raises(ConfigError) as info:
        build_mlp(meta=REGRESSION, **kwargs)
    text = str(info.value)
    assert text.startswith(message)
    assert "\n" not in text


def test_classification_loss_must_match_the_target():
    with pytest.raises(ConfigError, match="model.loss: 'mse' does not fit a binary target"):
        build_mlp(meta=BINARY, loss="mse")
    assert build_mlp(meta=BINARY, loss="binary_crossentropy").loss == "binary_crossentropy"


# -------------------------------------------------------------------------------- registry --

def test_resolve_builtin_and_callable():
    assert resolve_builder("mlp") is build_mlp
    assert resolve_builder(build_mlp) is build_mlp


def test_resolve_module_function(user_builders):
    assert resolve_builder("hps_user_builders:build_compiled") is user_builders.build_compiled


@pytest.mark.parametrize(
    ("ref", "message"),
    [
        ("no_such_module_xyz:build", "model.builder: cannot import 'no_such_module_xyz' (ModuleNotFoundError"),
        ("hps_user_builders:missing", "model.builder: module 'hps_user_builders' has no function 'missing'"),
        ("hps_user_builders:NOT_A_FUNCTION", "model.builder: 'hps_user_builders:NOT_A_FUNCTION' is not callable"),
        ("resnet", "model.builder: 'resnet' is neither a built-in builder (mlp, cnn) nor of the form"),
        ("a.b:", "model.builder: 'a.b:' is neither"),
        ("", "model.builder: expected 'mlp' or 'cnn' or 'package.module:function'"),
    ],
)
def test_resolve_errors(ref, message, user_builders):
    with pytest.raises(ConfigError) as info:
        resolve_builder(ref)
    text = str(info.value)
    assert text.startswith(message)
    assert "\n" not in text
    if ref:  # each names the fix
        assert text.endswith("; use mlp or cnn or 'package.module:function' importable from where hpsearch runs")


def test_builder_accepts_and_check_builder_params(user_builders):
    accepted = builder_accepts(build_mlp)
    assert {"n_hidden", "n_neurons", "funnel", "optimizer", "learning_rate"} <= accepted
    assert "meta" not in accepted
    assert builder_accepts(user_builders.build_kwargs) is None
    assert builder_accepts(user_builders.build_uncompiled) == {"width", "n_inputs", "n_outputs"}

    def build_open(width=4, meta=None, **more):
        raise AssertionError("not called")

    assert builder_accepts(build_open) is None  # takes anything ...
    assert builders.builder_defaults(build_open) == {"width": 4}  # ... and its named defaults are known

    check_builder_params(build_mlp, space(params={"n_hidden": [1, 2]}, fixed={"learning_rate": 0.1}))
    check_builder_params(user_builders.build_kwargs, space(params={"anything": [1]}))
    with pytest.raises(ConfigError) as info:
        check_builder_params(build_mlp, space(params={"n_hiden": [1, 2]}))
    assert str(info.value).startswith(
        "space.n_hiden: unknown parameter for builder mlp; remove it or check the spelling (known: activation, ")
    with pytest.raises(ConfigError, match=r"^model\.fixed\.wings: unknown parameter for builder mlp"):
        check_builder_params(build_mlp, space(fixed={"wings": 2}))
    # compile knobs pass for a builder that does not take them (an uncompiled model is compiled with
    # them, see below), their values checked like the built-ins'
    check_builder_params(user_builders.build_uncompiled, space(params={"learning_rate": [0.1, 0.01],
                                                                       "optimizer": ["adam", "sgd"]}))
    with pytest.raises(ConfigError, match=r"^space\.optimizer: unknown value 'adamm'"):
        check_builder_params(user_builders.build_uncompiled, space(params={"optimizer": ["adamm"]}))
    with pytest.raises(ConfigError, match=r"^model\.fixed\.learning_rate: "):
        check_builder_params(user_builders.build_uncompiled, space(fixed={"learning_rate": -1.0}))


def space(params=None, fixed=None):
    return SearchSpace.from_dict(params or {}, fixed or {})


@pytest.mark.parametrize("fixed, params, message", [
    ({"optimizer": "adamm"}, {}, "model.fixed.optimizer: unknown value 'adamm'; use one of sgd, momentum,"),
    ({}, {"activation": ["relu", "rleu"]}, "space.activation: unknown value 'rleu'; use one of relu, "),
    ({"kernel_initializer": "he_normel"}, {}, "model.fixed.kernel_initializer: unknown value 'he_normel'"),
    ({"lr_schedule": "step"}, {}, "model.fixed.lr_schedule: unknown value 'step'; use one of exponential,"),
    ({"loss": "hubber"}, {}, "model.fixed.loss: unknown value 'hubber'; use one of mse, mae, huber (regression)"),
    ({}, {"loss": ["mse", "hubber"]}, "space.loss: unknown value 'hubber'"),
])
def test_mlp_named_values_are_checked_before_anything_runs(fixed, params, message):
    with pytest.raises(ConfigError) as info:
        check_builder_params(build_mlp, space(params, fixed))
    assert str(info.value).startswith(message)
    assert "\n" not in str(info.value)


def test_mlp_named_values_that_pass():
    check_builder_params(build_mlp, space(
        {"activation": list(ACTIVATIONS), "lr_schedule": [None, "cosine"], "kernel_initializer": [None, "he_uniform"]},
        {"optimizer": "Adam", "loss": "binary_crossentropy"},
    ))


def test_a_builder_declares_its_own_value_check():
    seen = []

    def check(values):
        seen.append({name: list(pairs) for name, pairs in values.items()})
        for field, value in values.get("kernel", ()):
            if value % 2 == 0:
                raise ConfigError(f"{field}: must be odd, got {value}")

    @builders.with_param_check(check)
    def build_conv(kernel=3, filters=8):
        raise AssertionError("not built by a check")

    check_builder_params(build_conv, space({"kernel": [3, 5]}, {"filters": 4}))
    assert seen == [{"filters": [("model.fixed.filters", 4)],
                     "kernel": [("space.kernel", 3), ("space.kernel", 5)]}]
    with pytest.raises(ConfigError, match=r"^space\.kernel: must be odd, got 4"):
        check_builder_params(build_conv, space({"kernel": [3, 4]}))


def test_compile_knobs_are_one_list():
    """COMPILE_PARAMS are compile_for_task's keywords, and the MLP takes them with the same defaults."""
    import inspect

    compile_sig = inspect.signature(compile_for_task).parameters
    assert set(compile_sig) - {"model", "meta"} == COMPILE_PARAMS
    mlp_sig = inspect.signature(build_mlp).parameters
    assert set(mlp_sig) >= COMPILE_PARAMS
    assert {k: mlp_sig[k].default for k in COMPILE_PARAMS} == {k: compile_sig[k].default for k in COMPILE_PARAMS}


def test_builtin_builders_come_from_the_registry(monkeypatch):
    from hpsearch.registry import Registry

    assert BUILDERS.get("mlp") is build_mlp and builder_name(build_mlp) == "mlp"
    registry = Registry("builder", "model.builder", {"mlp": "hpsearch.models.mlp:build_mlp",
                                                     "tiny": "hps_user_builders:build_uncompiled"})
    monkeypatch.setattr(builders, "BUILDERS", registry)
    monkeypatch.syspath_prepend(str(TESTS_DIR))
    import hps_user_builders

    assert resolve_builder("tiny") is hps_user_builders.build_uncompiled
    assert builder_name(hps_user_builders.build_uncompiled) == "tiny"
    with pytest.raises(ConfigError, match=r"^model\.builder: expected 'mlp' or 'tiny' or 'package"):
        resolve_builder(" ")


def test_call_builder_passes_meta_only_when_asked(user_builders, monkeypatch):
    seen = {}

    def no_meta(width=3):
        seen["called"] = width
        return build_mlp(n_neurons=width, meta=MULTI)

    model = call_builder(no_meta, {"width": np.int64(6)}, MULTI)
    assert seen["called"] == 6 and type(seen["called"]) is int
    assert dense_units(model) == [6, 3]

    model = call_builder(user_builders.build_compiled, {"width": 5}, MULTI)
    assert model.compiled and dense_units(model) == [5, 3]
    assert model.optimizer.__class__.__name__ == "Adam"  # the builder's own compile is kept


def test_call_builder_clears_the_session(monkeypatch):
    calls = []
    real = keras.backend.clear_session
    monkeypatch.setattr(keras.backend, "clear_session", lambda *a, **k: (calls.append(1), real())[1])
    call_builder(build_mlp, {"n_neurons": 3}, MULTI)
    assert calls == [1]


def test_uncompiled_user_builder_is_compiled_for_the_task(user_builders, data):
    X, _, y, _ = data
    model = call_builder(
        user_builders.build_uncompiled,
        {"width": 4, "n_inputs": 5, "optimizer": "adam", "learning_rate": 0.01},
        MULTI,
    )
    assert model.compiled
    assert type(model.optimizer).__name__ == "Adam"
    lr = keras.ops.convert_to_numpy(model.optimizer.learning_rate)  # keras 3.3's Variable has no __float__
    assert float(lr) == pytest.approx(0.01)
    assert model.loss == "sparse_categorical_crossentropy"
    assert set(fit_one_epoch(model, X, y)) == {"loss", "accuracy", "val_loss", "val_accuracy"}

    # no compile params: build_mlp's defaults (sgd)
    model = call_builder(user_builders.build_uncompiled, {"n_inputs": 5}, MULTI)
    assert type(model.optimizer).__name__ == "SGD"


def test_uncompiled_kwargs_builder_gets_meta(user_builders, data):
    X, _, _, y = data
    model = call_builder(user_builders.build_kwargs, {"width": 3}, REGRESSION)
    assert model.compiled and model.loss == "mse"
    assert set(fit_one_epoch(model, X, y)) == {"loss", "mse", "mae", "val_loss", "val_mse", "val_mae"}


def test_compile_params_for_a_compiled_model_are_refused(user_builders):
    with pytest.raises(ConfigError, match=r"model.learning_rate: builder .*build_compiled compiles its own model"):
        call_builder(user_builders.build_compiled, {"learning_rate": 0.1}, MULTI)


def test_unknown_parameter_is_refused_before_building(user_builders):
    with pytest.raises(ConfigError, match="model.depth: unknown parameter for builder"):
        call_builder(user_builders.build_uncompiled, {"depth": 3}, MULTI)


def test_builder_must_return_a_model(user_builders):
    with pytest.raises(ConfigError, match="returned str, not a keras.Model"):
        call_builder(user_builders.build_not_a_model, {}, MULTI)


def test_steps_per_execution_falls_back_to_one_on_torch(monkeypatch):
    """Keras' PyTorch trainer refuses steps_per_execution > 1: a speed knob must not fail trials."""
    meta = {"n_features_in_": 4, "target_type_": "multiclass", "n_classes_": 3}
    assert build_mlp(n_neurons=4, steps_per_execution=4, meta=meta).steps_per_execution == 4
    monkeypatch.setattr(keras.backend, "backend", lambda: "torch")
    assert build_mlp(n_neurons=4, steps_per_execution=4, meta=meta).steps_per_execution == 1
