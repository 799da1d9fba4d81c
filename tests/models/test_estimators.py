"""Tests of hpsearch.models.estimators: tags and stratification, builder params, the classic recipe."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import pytest
import scipy.stats
from sklearn.base import clone, is_classifier, is_regressor
from sklearn.datasets import load_diabetes, load_iris
from sklearn.exceptions import NotFittedError
from sklearn.model_selection import (
    GridSearchCV,
    KFold,
    RandomizedSearchCV,
    StratifiedKFold,
    check_cv,
)
from sklearn.utils import estimator_checks as checks
from sklearn.utils import get_tags

from hpsearch.errors import ConfigError
from hpsearch.models.estimators import KerasClassifier, KerasRegressor
from hpsearch.models.mlp import build_mlp

TESTS_DIR = Path(__file__).resolve().parents[1]  # tests/: the helper modules


@pytest.fixture(scope="module")
def iris():
    X, y = load_iris(return_X_y=True)
    rng = np.random.default_rng(0)
    idx = rng.permutation(len(y))[:120]
    X = (X[idx] - X.mean(0)) / X.std(0)
    return X.astype("float32"), y[idx]


@pytest.fixture(scope="module")
def diabetes():
    X, y = load_diabetes(return_X_y=True)
    X = X[:200, :8].astype("float32") * 10
    y = ((y[:200] - y.mean()) / y.std()).astype("float32")
    return X, y


@pytest.fixture
def user_builders(monkeypatch):
    monkeypatch.syspath_prepend(str(TESTS_DIR))
    import hps_user_builders

    return hps_user_builders


class StopAfter(keras.callbacks.Callback):
    """Stops training after ``n`` epochs and counts the fits it saw."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.n = n
        self.fits = 0

    def on_train_begin(self, logs=None):
        self.fits += 1

    def on_epoch_end(self, epoch, logs=None):
        if epoch + 1 >= self.n:
            self.model.stop_training = True


def dense_units(model):
    return [layer.units for layer in model.layers if isinstance(layer, keras.layers.Dense)]


# ------------------------------------------------------------------------------------ tags --

def test_type_tags():
    clf, reg = KerasClassifier(), KerasRegressor()
    assert is_classifier(clf) and not is_regressor(clf)
    assert is_regressor(reg) and not is_classifier(reg)
    tags = get_tags(clf)
    assert tags.estimator_type == "classifier"
    assert tags.classifier_tags is not None and tags.classifier_tags.multi_class
    assert tags.regressor_tags is None
    assert tags.target_tags.required
    assert not tags.input_tags.allow_nan
    rtags = get_tags(reg)
    assert rtags.estimator_type == "regressor"
    assert rtags.regressor_tags is not None and rtags.classifier_tags is None
    assert rtags.target_tags.required


def test_check_cv_is_stratified_for_the_classifier_only(iris):
    _, y = iris
    assert isinstance(check_cv(3, y, classifier=is_classifier(KerasClassifier())), StratifiedKFold)
    assert isinstance(check_cv(3, y, classifier=is_classifier(KerasRegressor())), KFold)


def test_grid_search_cv3_uses_stratified_folds():
    # sorted, imbalanced labels: unshuffled KFold would put class 0 alone in the first test fold
    rng = np.random.default_rng(1)
    y = np.array([0] * 21 + [1] * 6 + [2] * 3)
    X = rng.normal(size=(len(y), 4)).astype("float32")
    folds = []

    def record(estimator, X_test, y_test):
        folds.append(sorted(set(y_test.tolist())))
        return float(estimator.score(X_test, y_test))

    search = GridSearchCV(
        KerasClassifier(n_hidden=1, n_neurons=3, epochs=1, batch_size=32),
        {"n_neurons": [2, 3]}, cv=3, scoring=record, refit=False,
    )
    search.fit(X, y)
    assert len(folds) == 6
    assert all(fold == [0, 1, 2] for fold in folds), folds


# ---------------------------------------------------------------------- builder parameters --

def test_builder_defaults_are_params_and_clone_works():
    est = KerasClassifier(n_hidden=2)
    params = est.get_params()
    assert params["n_hidden"] == 2  # given
    assert params["n_neurons"] == 30 and params["activation"] == "relu"  # build_mlp's defaults
    assert params["model"] is None and params["verbose"] == 0  # None: the built-in MLP
    assert "n_neurons" not in vars(est)  # a default is reported, not set in __init__
    assert KerasClassifier(build_mlp).get_params()["n_neurons"] == 30
    # wrapper params keep scikeras' defaults
    assert params["optimizer"] == "rmsprop" and params["loss"] is None
    twin = clone(est)
    assert twin.get_params() == params
    est.set_params(n_neurons=7, activation="tanh")
    assert est.get_params()["n_neurons"] == 7 and clone(est).activation == "tanh"
    with pytest.raises(ValueError, match="Invalid parameter n_neuronz"):
        est.set_params(n_neuronz=3)


def test_numpy_params_fit_and_build_the_right_model(iris):
    X, y = iris
    est = KerasClassifier(epochs=1, batch_size=32)
    est.set_params(n_hidden=np.int64(2), n_neurons=np.int64(5), learning_rate=np.float64(0.01))
    est.fit(X, y)
    assert dense_units(est.model_) == [5, 5, 3]
    assert est.model_.get_layer("output").activation.__name__ == "softmax"
    assert est.predict(X).shape == (len(y),)
    assert est.predict_proba(X).shape == (len(y), 3)


def test_clear_session_before_each_build(iris, monkeypatch):
    X, y = iris
    calls = []
    real = keras.backend.clear_session
    monkeypatch.setattr(keras.backend, "clear_session", lambda *a, **k: (calls.append(1), real())[1])
    est = KerasClassifier(n_neurons=3, epochs=1)
    est.fit(X, y)
    est.fit(X, y)
    assert len(calls) >= 2


def test_wrapper_params_reach_the_builder(diabetes):
    X, y = diabetes
    est = KerasRegressor(loss="mae", optimizer="adam", n_neurons=4, epochs=1).fit(X, y)
    assert est.model_.loss == "mae"
    assert type(est.model_.optimizer).__name__ == "Adam"


def test_history_uses_keras_log_names_and_epochs_trained(diabetes):
    X, y = diabetes
    stop = StopAfter(2)
    est = KerasRegressor(n_neurons=4, epochs=5, batch_size=50)
    with pytest.raises(NotFittedError):
        _ = est.n_epochs_trained_
    est.fit(X[:150], y[:150], validation_data=(X[150:], y[150:]), callbacks=[stop])
    assert stop.fits == 1  # callbacks given to fit() are honoured
    assert est.n_epochs_trained_ == 2
    # training metrics named as scikeras names them, validation ones as Keras logs them
    assert set(est.history_) == {"loss", "mean_squared_error", "mean_absolute_error",
                                 "val_loss", "val_mse", "val_mae"}


def test_binary_classifier_history_names():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(80, 4)).astype("float32")
    y = np.where(X[:, 0] > 0, "yes", "no")
    est = KerasClassifier(n_neurons=4, epochs=1, batch_size=40)
    est.fit(X[:60], y[:60], validation_data=(X[60:], y[60:]))  # string labels are encoded
    assert set(est.history_) == {"loss", "accuracy", "a_u_c", "val_loss", "val_accuracy", "val_auc"}
    assert est.model_.get_layer("output").units == 1
    assert set(est.predict(X)) <= {"yes", "no"}


def test_integer_valued_regression_target_gets_a_linear_output():
    X, y = load_diabetes(return_X_y=True)  # y holds whole numbers
    est = KerasRegressor(n_neurons=3, epochs=1).fit(X[:100], y[:100])
    out = est.model_.get_layer("output")
    assert out.units == 1 and out.activation.__name__ == "linear"


def test_builder_references_and_user_builders(iris, user_builders):
    X, y = iris
    est = KerasClassifier("hps_user_builders:build_compiled", width=6, epochs=1).fit(X, y)
    assert dense_units(est.model_) == [6, 3]
    assert "width" in est.get_params()
    # uncompiled builder: compiled for the task with the estimator's optimizer
    est = KerasClassifier(user_builders.build_uncompiled, optimizer="rmsprop", epochs=1).fit(X, y)
    assert est.get_params()["n_inputs"] == 4
    assert type(est.model_.optimizer).__name__ == "RMSprop"
    assert est.model_.loss == "sparse_categorical_crossentropy"
    assert KerasClassifier("mlp").get_params()["n_neurons"] == 30


def test_validation_happens_in_fit(iris):
    X, y = iris
    est = KerasClassifier(activation="rellu", epochs=1)  # accepted at construction
    with pytest.raises(ConfigError, match="model.activation: unknown value 'rellu'"):
        est.fit(X, y)
    bad = KerasClassifier("no_such_module_xyz:f")
    with pytest.raises(ConfigError, match="model: cannot import 'no_such_module_xyz'"):
        bad.fit(X, y)


def test_random_state_makes_fits_repeatable(diabetes):
    X, y = diabetes
    a = KerasRegressor(n_neurons=4, epochs=1, random_state=0).fit(X, y).predict(X[:5])
    b = KerasRegressor(n_neurons=4, epochs=1, random_state=0).fit(X, y).predict(X[:5])
    np.testing.assert_allclose(a, b, rtol=1e-5)


# ------------------------------------------------------------------------ the classic recipe --

def build_model(n_hidden=1, n_neurons=30, learning_rate=3e-3, input_shape=[8]):  # noqa: B006
    model = keras.models.Sequential()
    model.add(keras.layers.InputLayer(shape=input_shape))
    for _ in range(n_hidden):
        model.add(keras.layers.Dense(n_neurons, activation="relu"))
    model.add(keras.layers.Dense(1))
    optimizer = keras.optimizers.SGD(learning_rate=learning_rate)
    model.compile(loss="mse", optimizer=optimizer)
    return model


def test_classic_randomized_search_recipe(diabetes):
    X, y = diabetes
    X_train, y_train, X_valid, y_valid = X[:150], y[:150], X[150:], y[150:]
    keras_reg = KerasRegressor(build_model)
    param_distribs = {
        "n_hidden": [0, 1, 2, 3],
        "n_neurons": np.arange(1, 100),
        "learning_rate": scipy.stats.reciprocal(3e-4, 3e-2),
    }
    rnd_search_cv = RandomizedSearchCV(keras_reg, param_distribs, n_iter=2, cv=3, random_state=42)
    rnd_search_cv.fit(X_train, y_train, epochs=2, validation_data=(X_valid, y_valid),
                      callbacks=[keras.callbacks.EarlyStopping(patience=10)])
    assert set(rnd_search_cv.best_params_) == {"n_hidden", "n_neurons", "learning_rate"}
    assert np.isfinite(rnd_search_cv.cv_results_["mean_test_score"]).all()
    best = rnd_search_cv.best_estimator_
    model = best.model_
    assert isinstance(model, keras.Model)
    assert len(model.layers) == rnd_search_cv.best_params_["n_hidden"] + 1
    assert 1 <= best.n_epochs_trained_ <= 2
    assert "val_loss" in best.history_
    assert model.predict(X_valid[:3], verbose=0).shape == (3, 1)


# --------------------------------------------------------------------- sklearn's own checks --

PASSING_CHECKS = [
    "check_get_params_invariance",
    "check_set_params",
    "check_estimator_tags_renamed",
    "check_parameters_default_constructible",
    "check_estimator_repr",
    "check_valid_tag_types",
    "check_estimator_cloneable",
    "check_estimators_unfitted",
    "check_dont_overwrite_parameters",
    "check_fit_score_takes_y",
    "check_n_features_in",
    "check_fit_check_is_fitted",
    "check_estimators_pickle",
]


@pytest.mark.parametrize("check", PASSING_CHECKS)
@pytest.mark.parametrize("cls", [KerasClassifier, KerasRegressor])
def test_sklearn_estimator_checks(cls, check):
    getattr(checks, check)(cls.__name__, cls(n_neurons=4, epochs=1))


def test_sklearn_one_label_check():
    checks.check_classifiers_one_label("KerasClassifier", KerasClassifier(n_neurons=4, epochs=1))
