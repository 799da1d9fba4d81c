"""Searches started from Python over in-memory arrays (hpsearch.search): each candidate a trial in the
storage, the fitted attributes scikit-learn's, the candidates, folds and scores scikit-learn's own."""

from __future__ import annotations

import math

import keras
import numpy as np
import optuna
import pytest
from scipy.stats import reciprocal
from sklearn.datasets import load_iris
from sklearn.model_selection import RandomizedSearchCV as SkRandomizedSearchCV
from sklearn.model_selection import train_test_split

import hpsearch
from hpsearch.cli import main
from hpsearch.errors import ConfigError
from hpsearch.records import STUDY, TRIAL


def build_model(n_hidden=1, n_neurons=8, learning_rate=3e-2):
    """The classic recipe's builder: it compiles its own model."""
    model = keras.Sequential([keras.Input((4,))])
    for _ in range(n_hidden):
        model.add(keras.layers.Dense(n_neurons, activation="relu"))
    model.add(keras.layers.Dense(3, activation="softmax"))
    model.compile(optimizer=keras.optimizers.SGD(learning_rate), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    return model


@pytest.fixture(scope="module")
def iris():
    X, y = load_iris(return_X_y=True)
    X = (X - X.mean(0)) / X.std(0)
    return train_test_split(X, y, test_size=0.3, random_state=0, stratify=y)


DISTRIBS = {"n_hidden": [0, 1], "n_neurons": list(range(2, 10)), "learning_rate": reciprocal(3e-3, 3e-1)}


def test_randomized_search_matches_scikit_learn_and_is_stored(iris, tmp_path):
    X_tr, X_va, y_tr, y_va = iris
    url = f"sqlite:///{tmp_path / 'py.db'}"
    fit = {"epochs": 3, "validation_data": (X_va, y_va), "callbacks": [keras.callbacks.EarlyStopping(patience=2)]}
    ours = hpsearch.RandomizedSearchCV(hpsearch.KerasClassifier(build_model, random_state=0), DISTRIBS, n_iter=3,
                                       cv=2, random_state=0, study_name="py-random", storage=url,
                                       artifacts=str(tmp_path / "art"))
    ours.fit(X_tr, y_tr, **fit)
    theirs = SkRandomizedSearchCV(hpsearch.KerasClassifier(build_model, random_state=0), DISTRIBS, n_iter=3, cv=2,
                                  random_state=0).fit(X_tr, y_tr, **fit)
    ref = theirs.cv_results_
    # the same candidates, folds and scores, key by key (times aside: they are measured)
    assert ours.cv_results_["params"] == ref["params"]
    for key in ref:
        if key.endswith("_time") or key == "params":
            continue
        got, want = ours.cv_results_[key], ref[key]
        if key.startswith("param_"):
            assert list(got) == list(want), key
        else:
            np.testing.assert_allclose(np.asarray(got, float), np.asarray(want, float), rtol=1e-5, err_msg=key)
    assert ours.best_params_ == theirs.best_params_ and ours.best_index_ == theirs.best_index_
    assert math.isclose(ours.best_score_, theirs.best_score_, rel_tol=1e-6)
    assert ours.n_splits_ == 2 and ours.scorer_ is not None
    # stored like a study: every candidate a trial, the best model loadable by name, status works
    study = optuna.load_study(study_name="py-random", storage=url)
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 3
    assert study.user_attrs[STUDY.PYTHON_SEARCH]["class"] == "RandomizedSearchCV"
    assert ours.study_.study_name == "py-random" and ours.study_name_ == "py-random"
    best = hpsearch.load_best("py-random", storage=url, artifacts=str(tmp_path / "art"))
    np.testing.assert_array_equal(best.predict(X_va), ours.best_estimator_.predict(X_va))
    assert set(ours.predict(X_va)) <= {0, 1, 2} and 0.0 <= ours.score(X_va, y_va) <= 1.0
    assert main(["status", "py-random", "--storage", url]) == 0


def test_optuna_search_prunes_and_packs_the_builtin_mlp(iris, tmp_path):
    X_tr, X_va, y_tr, y_va = iris
    url = f"sqlite:///{tmp_path / 'opt.db'}"
    space = {"n_neurons": optuna.distributions.IntDistribution(4, 16),
             "learning_rate": optuna.distributions.FloatDistribution(1e-3, 1e-1, log=True)}
    search = hpsearch.OptunaSearchCV(hpsearch.KerasClassifier(), space, n_trials=6, pruner="hyperband",
                                     random_state=1, study_name="py-optuna", storage=url,
                                     artifacts=str(tmp_path / "art"), pack=3)
    search.fit(X_tr, y_tr, epochs=4, validation_data=(X_va, y_va))
    study = optuna.load_study(study_name="py-optuna", storage=url)
    assert len(study.trials) == 6 and "pruner: hyperband" in study.user_attrs[STUDY.CONFIG]
    sizes = [t.user_attrs.get(TRIAL.PACK_SIZE) for t in study.trials]
    assert None not in sizes and max(sizes) == 3, sizes  # every trial trained in a pack of up to three
    assert all(t.intermediate_values for t in study.trials)  # per-epoch reports: what the pruner reads
    assert search.best_params_ == study.trials[search.best_index_].params
    assert len(search.cv_results_["mean_test_score"]) == 6 and len(search.trials_) == 6
    assert search.best_estimator_.predict(X_va).shape == (len(y_va),)


def test_grid_and_halving_searches_run_their_engines(iris, tmp_path):
    X_tr, X_va, y_tr, y_va = iris
    url = f"sqlite:///{tmp_path / 'g.db'}"
    grid = hpsearch.GridSearchCV(hpsearch.KerasClassifier(build_model), {"n_neurons": [3, 6]}, cv=2, refit=False,
                                 study_name="py-grid", storage=url, artifacts=str(tmp_path / "art"))
    grid.fit(X_tr, y_tr, epochs=2, validation_data=(X_va, y_va))
    assert [p["n_neurons"] for p in grid.cv_results_["params"]] == [3, 6]
    assert any("no EarlyStopping callback" in m for m in grid.messages_)
    assert any("random_state=None: drew seed" in m for m in grid.messages_)  # unseeded, as scikit-learn's: said
    assert grid.study_.user_attrs[STUDY.PYTHON_SEARCH]["decisions"] == grid.messages_[:len(
        grid.study_.user_attrs[STUDY.PYTHON_SEARCH]["decisions"])]
    halving = hpsearch.HalvingRandomSearchCV(hpsearch.KerasClassifier(build_model), DISTRIBS, n_candidates=3,
                                             factor=3, min_resources=1, cv=2, random_state=0,
                                             study_name="py-halving", storage=url, artifacts=str(tmp_path / "art"),
                                             refit=False)
    halving.fit(X_tr, y_tr, epochs=3)  # no validation_data: a seeded share is held out, and it is said
    assert any("no validation_data given" in m for m in halving.messages_)
    assert list(halving.cv_results_["n_resources"]) == [1, 1, 1, 3]
    assert not hasattr(halving, "best_estimator_")


@pytest.mark.parametrize("make, fit, message", [
    (lambda: hpsearch.RandomizedSearchCV(hpsearch.KerasClassifier(build_model), DISTRIBS, n_iter=1),
     {"callbacks": [keras.callbacks.ModelCheckpoint("x.keras")]}, "^callbacks: ModelCheckpoint cannot run"),
    (lambda: hpsearch.RandomizedSearchCV(hpsearch.KerasClassifier(build_model), DISTRIBS, scoring="f1"),
     {}, "^scoring: 'f1' is not one hpsearch scores"),
    (lambda: hpsearch.OptunaSearchCV(hpsearch.KerasClassifier(build_model), DISTRIBS,
                                     sampler=optuna.samplers.TPESampler()), {}, "^sampler: TPESampler object"),
    (lambda: hpsearch.RandomizedSearchCV(hpsearch.KerasClassifier(build_model, shuffle=False), DISTRIBS),
     {}, r"^estimator.shuffle=False: not supported"),
    (lambda: hpsearch.RandomizedSearchCV(hpsearch.KerasClassifier(build_model), {"n_hidden": 3}), {},
     "^param_distributions: space.n_hidden: cannot read 3"),
    (lambda: hpsearch.RandomizedSearchCV(hpsearch.KerasClassifier(build_model), DISTRIBS), {"sample_weight": 1},
     "^fit: sample_weight is not a fit parameter"),
])
def test_a_mistake_is_one_line_before_anything_is_written(iris, tmp_path, monkeypatch, make, fit, message):
    monkeypatch.chdir(tmp_path)
    X_tr, _, y_tr, _ = iris
    with pytest.raises(ConfigError, match=message) as info:
        make().set_params(storage=f"sqlite:///{tmp_path / 'x.db'}").fit(X_tr, y_tr, **fit)
    assert "\n" not in str(info.value)
    assert not (tmp_path / "x.db").exists()


def test_a_search_is_a_scikit_learn_estimator():
    from sklearn.base import clone

    search = hpsearch.OptunaSearchCV(hpsearch.KerasRegressor(build_model), DISTRIBS, n_trials=3, study_name="s")
    copy = clone(search)
    assert copy.get_params()["n_trials"] == 3 and copy.study_name == "s" and not hasattr(copy, "study_")


def test_a_pipeline_ending_in_keras_is_searched_end_to_end_and_stored(tmp_path):
    """Pipeline(StandardScaler, KerasClassifier) with ``step__param`` names: every candidate a stored trial,
    the scaler fitted per fold (the study's data.scale: standard), the best model predicting raw rows;
    a user builder says in one line (output and study attribute) that it trains one model at a time."""
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X, y = load_iris(return_X_y=True)
    url = f"sqlite:///{tmp_path / 'pipe.db'}"
    pipe = make_pipeline(StandardScaler(), hpsearch.KerasClassifier(build_model, random_state=0))
    search = hpsearch.RandomizedSearchCV(pipe, {"kerasclassifier__n_neurons": [3, 5, 7],
                                                "kerasclassifier__learning_rate": [0.05, 0.1]},
                                         n_iter=2, cv=2, random_state=0, study_name="py-pipe", storage=url,
                                         artifacts=str(tmp_path / "art"))
    search.fit(X, y, epochs=2)
    study = optuna.load_study(study_name="py-pipe", storage=url)
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 2
    assert {t.params["n_neurons"] for t in study.trials} <= {3, 5, 7}
    assert set(search.cv_results_["params"][0]) == {"kerasclassifier__learning_rate", "kerasclassifier__n_neurons"}
    assert "param_kerasclassifier__n_neurons" in search.cv_results_
    assert set(search.best_params_) == {"kerasclassifier__learning_rate", "kerasclassifier__n_neurons"}
    decisions = study.user_attrs[STUDY.DECISIONS]
    assert decisions["data.scale"]["value"] == "standard"
    one_at_a_time = [m for m in search.messages_ if "trains one model at a time" in m or "one model at a time" in m]
    assert len(one_at_a_time) == 1 and "\n" not in one_at_a_time[0]
    assert decisions["search.estimator"]["line"] in one_at_a_time[0]
    best = hpsearch.load_best("py-pipe", storage=url, artifacts=str(tmp_path / "art"))
    assert best.preprocessor_.mean is not None  # the scaler travels with the stored model: raw rows in
    np.testing.assert_array_equal(best.predict(X), search.predict(X))
    assert search.score(X, y) > 0.3


def test_the_builtin_mlp_in_a_pipeline_packs_and_other_steps_are_refused(tmp_path):
    from sklearn.decomposition import PCA
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X, y = load_iris(return_X_y=True)
    search = hpsearch.RandomizedSearchCV(make_pipeline(StandardScaler(), hpsearch.KerasClassifier(random_state=0)),
                                         {"kerasclassifier__n_neurons": [3, 5]}, n_iter=2, cv=2, random_state=0,
                                         study_name="py-mlp", storage=f"sqlite:///{tmp_path / 'm.db'}",
                                         artifacts=str(tmp_path / "art"))
    search.fit(X, y, epochs=1)
    assert not any("one model at a time" in m for m in search.messages_)
    assert "search.estimator" not in search.study_.user_attrs.get(STUDY.DECISIONS, {})
    bad = hpsearch.GridSearchCV(make_pipeline(PCA(2), hpsearch.KerasClassifier()), {"kerasclassifier__n_neurons": [3]},
                                storage=f"sqlite:///{tmp_path / 'b.db'}")
    with pytest.raises(ConfigError, match=r"^estimator: Pipeline step 'pca' \(PCA\) cannot be stored") as info:
        bad.fit(X, y)
    assert "\n" not in str(info.value) and not (tmp_path / "b.db").exists()
    with pytest.raises(ConfigError, match=r"'n_neurons' is not a parameter of the Pipeline's Keras step"):
        hpsearch.GridSearchCV(make_pipeline(StandardScaler(), hpsearch.KerasClassifier()), {"n_neurons": [3]},
                              storage=f"sqlite:///{tmp_path / 'b.db'}").fit(X, y)
