"""``load_best`` returns a real scikit-learn estimator: its parameters are the best trial's
hyperparameters (``clone`` gives an unfitted copy, ``fit`` retrains), its fitted state ends in ``_``
(``n_features_in_``, ``feature_names_in_``, ``classes_``, ``model_``), and it pickles."""

from __future__ import annotations

import pickle

import numpy as np
import optuna
import pandas as pd
import pytest
import yaml
from sklearn.base import clone
from sklearn.datasets import load_iris
from sklearn.exceptions import NotFittedError
from sklearn.utils.validation import check_is_fitted

import hpsearch
from hpsearch.records import TRIAL

NAMES = ["sepal_l", "sepal_w", "petal_l", "petal_w"]


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """An iris study from a CSV (column names, text labels): one trial, 2 epochs."""
    folder = tmp_path_factory.mktemp("best")
    X, y = load_iris(return_X_y=True)
    labels = np.array(["setosa", "versicolor", "virginica"])[y]
    pd.DataFrame(X, columns=NAMES).assign(kind=labels).to_csv(folder / "iris.csv", index=False)
    doc = {"name": "est", "data": {"source": "iris.csv", "target": "kind", "split": {"seed": 3}},
           "model": {"builder": "mlp", "fixed": {"n_hidden": 1}},
           "space": {"n_neurons": {"int": [4, 8]}, "learning_rate": {"float": [0.01, 0.1], "log": True}},
           "train": {"epochs": 2, "pack": 1, "batch_size": 16}, "search": {"n_trials": 1, "pruner": "none", "seed": 0}}
    (folder / "s.yaml").write_text(yaml.safe_dump(doc))
    url = f"sqlite:///{folder / 's.db'}"
    hpsearch.run_study(folder / "s.yaml", storage=url, artifacts=str(folder / "art"))
    trial = optuna.load_study(study_name="est", storage=url).best_trial
    (folder / "iris.csv").rename(folder / "moved.csv")  # loading needs the stored model, not the data
    best = hpsearch.load_best("est", storage=url, artifacts=str(folder / "art"))
    return best, trial, pd.DataFrame(X, columns=NAMES), labels


def test_the_parameters_are_the_best_trials_hyperparameters(study):
    best, trial, X, y = study
    params = best.get_params()
    assert params["builder"] == "mlp" and params["n_hidden"] == 1 and params["batch_size"] == 16
    assert {k: params[k] for k in trial.params} == trial.params
    assert params["epochs"] == trial.user_attrs[TRIAL.EPOCHS] and params["random_state"] == 0
    # fitted with the trial's own network
    check_is_fitted(best)
    assert best.n_features_in_ == 4 and list(best.feature_names_in_) == NAMES
    assert list(best.classes_) == ["setosa", "versicolor", "virginica"]
    assert best.score(X, y) > 0.3


def test_clone_is_unfitted_with_the_same_hyperparameters_and_fit_retrains(study):
    best, _, X, y = study
    fresh = clone(best)
    assert fresh.get_params() == best.get_params()
    assert not hasattr(fresh, "model_")
    with pytest.raises(NotFittedError):
        check_is_fitted(fresh)
    fresh.set_params(n_neurons=3, epochs=1)
    assert fresh.fit(X, y) is fresh
    assert fresh.model_ is not best.model_ and len(fresh.history_["loss"]) == 1
    assert next(layer.units for layer in fresh.model_.layers if hasattr(layer, "units")) == 3
    assert fresh.predict(X.iloc[:5]).shape == (5,) and set(fresh.predict(X)) <= set(best.classes_)
    assert list(fresh.feature_names_in_) == NAMES and list(fresh.classes_) == list(best.classes_)
    # numpy rows have no column names: no feature_names_in_, as scikit-learn's estimators
    fresh.fit(X.to_numpy(), y)
    assert fresh.n_features_in_ == 4 and not hasattr(fresh, "feature_names_in_")


def test_pickle_round_trips(study):
    best, _, X, _ = study
    back = pickle.loads(pickle.dumps(best))
    assert back.get_params() == best.get_params()
    np.testing.assert_allclose(back.predict_proba(X), best.predict_proba(X), rtol=1e-6)
    assert list(back.feature_names_in_) == NAMES
