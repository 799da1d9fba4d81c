"""hpsearch's KerasClassifier / KerasRegressor keep scikeras' contracts (they are drop-ins).

The same contracts as scikeras' own test suite (which cannot be copied here; it is run against
hpsearch's classes as a measurement, see the README's API section): uncompiled models compiled
from the wrapper's ``loss`` / ``optimizer`` / ``metrics``, the routing prefixes, ``build_fn`` and
``_keras_build_fn``, ``meta`` / ``compile_kwargs`` / ``params``, ``partial_fit`` / ``warm_start``,
``history_``, multi-output and one-hot targets, the error types, and the scikit-learn estimator
checks that pass on scikeras.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from typing import Any

import keras
import numpy as np
import pytest
from scikeras.utils.random_state import tf_get_seed
from scikeras.wrappers import KerasClassifier as ScikerasClassifier
from sklearn.utils import estimator_checks as checks

from hpsearch.errors import ConfigError, UserError
from hpsearch.models.estimators import KerasClassifier, KerasRegressor

RNG = np.random.default_rng(0)
X = RNG.normal(size=(24, 3)).astype("float32")
Y3 = np.array([0, 1, 2] * 8)
YR = X @ np.array([1.0, -1.0, 0.5], dtype="float32")

#: scikeras' meta keys for each class (a builder that asks for ``meta`` gets exactly these)
CLASSIFIER_META = {"X_dtype_", "y_dtype_", "classes_", "target_type_", "n_classes_", "n_features_in_",
                   "X_shape_", "n_outputs_expected_", "y_ndim_", "n_outputs_", "feature_encoder_",
                   "target_encoder_"}
REGRESSOR_META = CLASSIFIER_META - {"classes_", "n_classes_"}


def uncompiled(meta: dict[str, Any]) -> keras.Model:
    """An uncompiled model sized from meta (classifier: softmax over the classes)."""
    n_classes = meta.get("n_classes_")
    out = keras.layers.Dense(n_classes, activation="softmax") if n_classes else keras.layers.Dense(meta["n_outputs_"])
    return keras.Sequential([keras.Input((meta["n_features_in_"],)), out])


def compiles_itself(width: int = 4, meta: Any = None, compile_kwargs: Any = None) -> keras.Model:
    """scikeras' canonical builder: compiles with the wrapper's compile_kwargs."""
    model = keras.Sequential([keras.Input((meta["n_features_in_"],)), keras.layers.Dense(width, activation="relu"),
                              keras.layers.Dense(meta["n_outputs_"])])
    model.compile(**compile_kwargs)
    return model


def quiet(cls: type, **kw: Any) -> Any:
    return cls(**{"epochs": 1, "batch_size": 64, **kw})


# ------------------------------------------------------------------- compile from the wrapper --

def test_uncompiled_model_is_compiled_from_the_wrappers_keras_names():
    est = quiet(KerasClassifier, model=uncompiled, loss="sparse_categorical_crossentropy", metrics=["acc"],
                optimizer="adam", optimizer__learning_rate=0.5).fit(X, Y3)
    assert type(est.model_.optimizer).__name__ == "Adam"
    assert float(est.model_.optimizer.learning_rate.numpy()) == pytest.approx(0.5)  # optimizer__ routed
    assert "acc" in est.history_  # Keras' own metric vocabulary


def test_routed_optimizer_params_reach_a_builder_that_takes_optimizer():
    est = quiet(KerasClassifier, optimizer="adam", optimizer__learning_rate=0.25, n_neurons=2).fit(X, Y3)
    assert type(est.model_.optimizer).__name__ == "Adam"  # the built-in MLP, which takes optimizer
    assert float(est.model_.optimizer.learning_rate.numpy()) == pytest.approx(0.25)


def test_default_optimizer_is_rmsprop_for_compile_kwargs_builders():
    est = quiet(KerasRegressor, model=compiles_itself, loss="mse").fit(X, YR)
    assert KerasRegressor().optimizer == ScikerasClassifier().optimizer == "rmsprop"
    assert type(est.model_.optimizer).__name__ == "RMSprop"


# ---------------------------------------------------------------------------------- routing --

def test_routing_prefixes_and_builder_context():
    seen: dict[str, Any] = {}

    def build(width, meta, compile_kwargs, params):
        seen.update(width=width, meta=set(meta), compile=set(compile_kwargs), params=set(params))
        return compiles_itself(width, meta, compile_kwargs)

    est = quiet(KerasRegressor, model=build, model__width=3, loss=keras.losses.MeanSquaredError,
                loss__reduction="sum")
    est.fit(X, YR)
    assert seen["width"] == 3 and seen["meta"] == REGRESSOR_META
    assert seen["compile"] <= KerasRegressor._compile_kwargs and seen["params"] == set(est.get_params())
    assert est.model_.loss.reduction == "sum"


def test_kwargs_builder_gets_the_same_arguments_in_the_same_order():
    order: list[str] = []

    def build(**kwargs):
        order.extend(kwargs)
        return compiles_itself(kwargs["width"], kwargs["meta"], kwargs["compile_kwargs"])

    quiet(KerasRegressor, model=build, model__width=2, loss="mse").fit(X, YR)
    assert order == ["width", "meta", "compile_kwargs", "params"]


def test_undeclared_user_parameter_fails_like_scikeras():
    def no_bar(foo=42):
        return None

    for kw in ({"model__bar": 1}, {"bar": 1}):
        with pytest.raises(TypeError, match="unexpected keyword argument"):
            KerasClassifier(model=no_bar, **kw).fit(X, Y3)


def test_builder_defaults_are_searchable_without_being_set_in_init():
    est = KerasRegressor(model=compiles_itself, loss="mse")
    assert est.get_params()["width"] == 4 and "width" not in vars(est)
    checks.check_no_attributes_set_in_init("KerasRegressor", est)
    est.set_params(width=2, epochs=1).fit(X, YR)
    assert est.model_.layers[0].units == 2  # set_params reached the builder


# ----------------------------------------------------------------- build_fn, _keras_build_fn --

def test_build_fn_and_keras_build_fn_are_honoured():
    with pytest.warns(UserWarning, match="build_fn"):
        est = quiet(KerasRegressor, build_fn=compiles_itself, loss="mse").fit(X, YR)
    assert est.model_.layers[0].units == 4

    class Own(KerasRegressor):
        def _keras_build_fn(self, width: int, meta: Any, compile_kwargs: Any) -> keras.Model:
            return compiles_itself(width, meta, compile_kwargs)

    est = quiet(Own, width=5, loss="mse").fit(X, YR)
    assert est.model_.layers[0].units == 5
    assert KerasRegressor("mlp").get_params()["n_neurons"] == 30  # a builder name


# --------------------------------------------------------------- partial_fit, warm_start, history --

def test_partial_fit_and_warm_start_keep_the_model_and_history():
    est = quiet(KerasClassifier, model=uncompiled, loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    est.partial_fit(X, Y3)
    model = est.model_
    est.partial_fit(X, Y3)
    assert est.model_ is model and len(est.history_["loss"]) == 2 and est.current_epoch == 2
    warm = quiet(KerasRegressor, model=compiles_itself, loss="mse", warm_start=True, metrics=["mse"]).fit(X, YR)
    first = warm.model_
    warm.fit(X, YR)
    assert warm.model_ is first
    assert set(warm.history_) == {"loss", "mean_squared_error"}  # scikeras' metric names


# ---------------------------------------------------------------------------- targets --

def test_multi_output_regression_and_one_hot_classification():
    Y2 = np.stack([YR, -YR], axis=1)
    reg = quiet(KerasRegressor, model=compiles_itself, loss="mse").fit(X, Y2)
    assert reg.n_outputs_ == 2 and reg.predict(X).shape == (len(X), 2)
    onehot = np.eye(3)[Y3]
    clf = quiet(KerasClassifier, model=uncompiled, loss="categorical_crossentropy").fit(X, onehot)
    assert clf.predict(X).shape == onehot.shape and clf.predict_proba(X).shape == (len(X), 3)
    # labels one-hot encoded by the wrapper: the built-in MLP gets a categorical output
    mlp = quiet(KerasClassifier, loss="categorical_crossentropy", n_neurons=3).fit(X, Y3)
    assert mlp.model_.loss == "categorical_crossentropy" and mlp.predict(X).shape == (len(X),)


# ---------------------------------------------------------------------------- errors --

def test_error_types_are_scikeras_ones():
    assert issubclass(ConfigError, ValueError) and issubclass(ConfigError, UserError)
    with pytest.raises(ValueError, match="cannot import"):
        KerasClassifier("no_such_module_xyz:f").fit(X, Y3)
    with pytest.raises(TypeError, match="``model`` must be"):
        KerasClassifier(model=object()).fit(X, Y3)
    with pytest.raises(ValueError, match="You must provide an optimizer"):
        quiet(KerasRegressor, model=compiles_itself, loss="mse", optimizer=None).fit(X, YR)
    with pytest.raises(ValueError, match="provide a loss"):  # its builder owns compilation
        quiet(KerasRegressor, model=lambda meta, compile_kwargs: uncompiled(meta)).fit(X, YR)


def test_seeded_build_leaves_no_global_seed_behind():
    before = tf_get_seed()
    a = quiet(KerasRegressor, model=compiles_itself, loss="mse", random_state=3).fit(X, YR).predict(X[:4])
    b = quiet(KerasRegressor, model=compiles_itself, loss="mse", random_state=3).fit(X, YR).predict(X[:4])
    np.testing.assert_allclose(a, b, rtol=1e-5)
    assert tf_get_seed() == before


# ------------------------------------------------------------ scikit-learn's estimator checks --

#: checks that pass on scikeras' classes in its own suite (test_scikit_learn_checks.py), and on
#: hpsearch's (a fast subset: each fits a tiny model for one epoch)
SKLEARN_CHECKS = [
    "check_no_attributes_set_in_init",
    "check_get_params_invariance",
    "check_set_params",
    "check_fit_score_takes_y",
    "check_estimators_fit_returns_self",
    "check_estimators_empty_data_messages",
    "check_fit1d",
    "check_dont_overwrite_parameters",
    "check_n_features_in",
]


@pytest.mark.parametrize("check", SKLEARN_CHECKS)
@pytest.mark.parametrize("cls", [KerasClassifier, KerasRegressor])
def test_sklearn_checks_that_pass_on_scikeras(cls: type, check: str) -> None:
    getattr(checks, check)(cls.__name__, cls(epochs=1, batch_size=1000))


def test_a_seeded_fit_leaves_op_determinism_as_it_was():
    """scikeras' seeded fit turns TensorFlow's op determinism on for good; every unseeded random op
    of the process then fails. Ours puts it back."""
    import tensorflow as tf

    X = np.random.default_rng(0).random((40, 3)).astype("float32")
    y = np.arange(40) % 2
    KerasClassifier(epochs=1, verbose=0, random_state=0).fit(X, y)
    tf.random.uniform((2,))  # raises "Random ops require a seed" while determinism is on
