"""model.init_from: a trial starts from the lower layers of another study's best model, frozen for
the first epochs; a source with other input shapes is a one-line error before anything runs."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import optuna
import pytest

from hpsearch.errors import ConfigError
from hpsearch.models.freeze import frozen
from hpsearch.models.mlp import build_mlp
from hpsearch.models.transfer import transfer_builder
from hpsearch.records import TRIAL
from hpsearch.results.best import load_best
from hpsearch.study.run import run_study
from hpsearch.study.validate import parse_study_config

IRIS = {"n_features_in_": 4, "target_type_": "multiclass", "n_classes_": 3}


def _study(name: str, source: str = "sklearn:iris", **model):
    return parse_study_config({
        "name": name, "data": {"source": source, "split": {"valid": 0.25, "test": 0.2}},
        "model": {"fixed": {"optimizer": "adam", "learning_rate": 0.02, "n_hidden": 2}, **model},
        "space": {"n_neurons": {"choice": [8]}}, "train": {"epochs": 3, "batch_size": 16},
        "search": {"n_trials": 1, "pruner": "none"}})


def test_builder_copies_and_freezes_the_lower_layers():
    source = build_mlp(n_hidden=2, n_neurons=8, meta=IRIS)
    build = transfer_builder(build_mlp, source, 1, 2, "src")
    model = build(n_hidden=2, n_neurons=8, meta=IRIS)
    assert np.array_equal(model.get_layer("hidden_0").get_weights()[0], source.get_layer("hidden_0").get_weights()[0])
    assert not np.array_equal(model.get_layer("hidden_1").get_weights()[0],
                              source.get_layer("hidden_1").get_weights()[0])
    assert not model.get_layer("hidden_0").trainable and model.get_layer("hidden_1").trainable
    assert frozen(model).epochs == 2
    with pytest.raises(ConfigError, match=r"^model.init_from.layers: layer 1 is Dense \[\(4, 16\)"):
        transfer_builder(build_mlp, source, 1, 0, "src")(n_hidden=2, n_neurons=16, meta=IRIS)


def test_a_study_starts_from_another_studys_layers(sqlite_url, tmp_path):
    art = str(tmp_path / "art")
    run_study(_study("src"), storage=sqlite_url, artifacts=art)
    init = {"study": "src", "layers": 2, "freeze_epochs": 1}
    res = run_study(_study("dst", init_from=init), storage=sqlite_url, artifacts=art)
    assert res.n_complete == 1
    trial = optuna.load_study(study_name="dst", storage=sqlite_url).trials[0]
    assert trial.user_attrs[TRIAL.EPOCHS] == 3  # one frozen epoch, then two with every layer
    src, dst = load_best("src", sqlite_url, art).model_, load_best("dst", sqlite_url, art).model_
    assert dst.get_layer("hidden_0").trainable  # thawed, then trained on
    assert not np.array_equal(src.get_layer("hidden_0").get_weights()[0], dst.get_layer("hidden_0").get_weights()[0])
    with pytest.raises(ConfigError, match=r"^model.init_from: study 'src' takes inputs of shape \(4,\), this study's"
                                          r" data has \(64,\)"):
        run_study(_study("dst2", source="sklearn:digits", init_from=init), storage=sqlite_url, artifacts=art)
    assert "dst2" not in optuna.get_all_study_names(sqlite_url)
