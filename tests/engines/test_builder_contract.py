"""One builder contract under every engine (issue 22): a ``def build(meta=None, **params)`` builder gets
the same arguments from the Optuna engine and the scikit-learn engines, and an uncompiled user model is
compiled the same way (the study's compile knobs over compile_for_task's defaults: SGD, not scikeras'
RMSprop), with the task's metrics."""

from __future__ import annotations

from typing import Any

import hps_user_builders
import numpy as np
import optuna
import pytest
from optuna.trial import TrialState

import hpsearch
from hpsearch.study.validate import parse_study_config

ENGINES = ["optuna", "random", "grid"]


def _study(name: str, engine: str, builder: str, space: dict[str, Any]) -> Any:
    search: dict[str, Any] = {"engine": engine, "seed": 0}
    search.update({"n_trials": 1, "pruner": "none"} if engine == "optuna" else {"cv": 2})
    if engine == "random":
        search["n_trials"] = 1
    return parse_study_config({"name": name, "data": {"source": "sklearn:iris"}, "model": {"builder": builder},
                               "space": space, "train": {"epochs": 1, "pack": 1, "early_stopping": None},
                               "search": search}, where=name)


def _run(tmp_path, name: str, engine: str, builder: str, space: dict[str, Any]) -> Any:
    url = f"sqlite:///{tmp_path / 'c.db'}"
    hpsearch.run_study(_study(name, engine, builder, space), storage=url, artifacts=str(tmp_path / "art"))
    trials = optuna.load_study(study_name=name, storage=url).get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE], [t.user_attrs for t in trials]
    return hpsearch.load_best(name, storage=url, artifacts=str(tmp_path / "art"))


@pytest.mark.parametrize("engine", ENGINES)
def test_a_catch_all_builder_gets_meta_and_its_hyperparameters_only(tmp_path, engine):
    hps_user_builders.CALLS.clear()
    _run(tmp_path, f"calls-{engine}", engine, "hps_user_builders:build_recording",
         {"width": {"choice": [3]}, "learning_rate": {"choice": [0.05]}})
    assert hps_user_builders.CALLS, "the builder was not called"
    # the same names for every build (folds included), under every engine: no compile_kwargs / params
    assert {tuple(c) for c in hps_user_builders.CALLS} == {("learning_rate", "meta", "width")}


@pytest.mark.parametrize("engine", ENGINES)
def test_an_uncompiled_user_model_is_compiled_alike_under_every_engine(tmp_path, engine, monkeypatch):
    """Default optimizer: compile_for_task's SGD at its 3e-3 (the wrapper's rmsprop before); a searched
    learning_rate the builder does not take compiles the model (every candidate failed before)."""
    import keras

    compiled: list[tuple[str, float, bool]] = []
    real = keras.Model.compile

    def spy(self: Any, *args: Any, **kwargs: Any) -> Any:
        opt = kwargs["optimizer"]
        compiled.append((type(opt).__name__, round(float(opt.learning_rate), 6), "accuracy" in str(kwargs["metrics"])))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(keras.Model, "compile", spy)
    best = _run(tmp_path, f"opt-{engine}", engine, "hps_user_builders:build_named_uncompiled",
                {"width": {"choice": [3]}})
    assert set(compiled) == {("SGD", 0.003, True)}
    compiled.clear()
    best = _run(tmp_path, f"lr-{engine}", engine, "hps_user_builders:build_named_uncompiled",
                {"width": {"choice": [3]}, "learning_rate": {"choice": [0.05]},
                 "optimizer": {"choice": ["adam"]}})
    assert set(compiled) == {("Adam", 0.05, True)}
    assert np.isfinite(best.history_["val_accuracy"]).all()
