"""The learning-rate range test: its suggestion on digits trains with plain SGD (and 100x it does
not), the figure, `learning_rate: {float: auto}` and `train.batch_size: auto` in a study."""

from __future__ import annotations

import math
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import optuna
import pytest

from hpsearch.cli import main
from hpsearch.data.prepare import prepare_data
from hpsearch.errors import ConfigError
from hpsearch.models.mlp import build_mlp
from hpsearch.spec.space import SearchSpace
from hpsearch.study.batchfind import BATCH_FIND_ATTR
from hpsearch.study.lrfind import LR_FIND_ATTR, lr_find
from hpsearch.study.run import run_study
from hpsearch.study.validate import parse_study_config


def _digits(**over):
    d = {"name": "digits-lr", "data": {"source": "sklearn:digits", "split": {"valid": 0.2, "test": 0.2}},
         "model": {"fixed": {"optimizer": "sgd", "n_hidden": 1}},
         "space": {"n_neurons": {"int": [16, 48]}, "learning_rate": {"float": "auto", "log": True}},
         "train": {"epochs": 2, "batch_size": 32}, "search": {"n_trials": 2, "pruner": "none"}}
    d.update(over)
    return parse_study_config(d)


def _val_accuracy(data, lr: float) -> tuple[float, float]:
    keras.utils.set_random_seed(0)
    model = build_mlp(n_hidden=1, n_neurons=32, optimizer="sgd", learning_rate=lr, meta=data.meta(), jit_compile=False)
    hist = model.fit(data.X_train, data.y_train, epochs=3, batch_size=32, validation_data=(data.X_valid, data.y_valid),
                     verbose=0).history
    return hist["val_accuracy"][-1], hist["loss"][-1]


def test_suggestion_on_digits_trains_and_100x_it_does_not(tmp_path):
    cfg = _digits()
    res = lr_find(cfg, output=tmp_path, steps=150)
    assert res.low < res.suggestion < res.high == res.turn
    assert 1e-3 < res.suggestion < 5.0
    assert (tmp_path / "lr_find_digits-lr.png").stat().st_size > 10_000 and res.figure
    data = prepare_data(cfg, 1)
    acc, _ = _val_accuracy(data, res.suggestion)
    assert acc > 0.85
    acc_100, loss_100 = _val_accuracy(data, 100 * res.suggestion)
    assert not math.isfinite(loss_100) or acc_100 < 0.5


def test_cli_prints_the_suggestion_and_range(tmp_path, capsys):
    study = tmp_path / "s.yaml"
    study.write_text("name: iris-lr\ndata: {source: 'sklearn:iris'}\nmodel: {fixed: {optimizer: sgd}}\n"
                     "space: {n_neurons: {int: [4, 8]}}\nsearch: {n_trials: 1}\n")
    assert main(["lr-find", str(study), "-o", str(tmp_path), "--steps", "60", "--set", "n_neurons=6"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("suggested learning_rate: ") and "suggested range: {float: [" in out
    assert (tmp_path / "lr_find_iris-lr.png").exists()
    assert main(["lr-find", str(study), "--set", "n_neurons"]) == 2
    assert "--set n_neurons: expected NAME=VALUE" in capsys.readouterr().err


def test_auto_is_for_learning_rate_only():
    with pytest.raises(ConfigError, match="^space.n_neurons: `float: auto` comes from a learning-rate range test"):
        SearchSpace.from_dict({"n_neurons": {"float": "auto", "log": True}})
    with pytest.raises(ConfigError, match="^space.learning_rate: `float: auto` is a log range"):
        SearchSpace.from_dict({"learning_rate": {"float": "auto", "log": False}})


def test_study_with_auto_rate_and_auto_batch_searches_the_found_values(sqlite_url, tmp_path):
    cfg = _digits(data={"source": "sklearn:iris"}, train={"epochs": 2, "batch_size": "auto"},
                  search={"n_trials": 2, "pruner": "none"})
    art = str(tmp_path / "art")
    run_study(cfg, storage=sqlite_url, artifacts=art)
    study = optuna.load_study(study_name="digits-lr", storage=sqlite_url)
    found, batch = study.user_attrs[LR_FIND_ATTR], study.user_attrs[BATCH_FIND_ATTR]
    assert found["figure_artifact"] and 0 < found["low"] < found["suggestion"] < found["high"]
    assert batch["batch_size"] >= 32 and batch["reason"] in ("throughput", "data", "memory")
    rates = [t.params["learning_rate"] for t in study.trials]
    assert all(found["low"] <= r <= found["high"] for r in rates)
    # a second run continues in the same range without a new test
    run_study(cfg, storage=sqlite_url, artifacts=art, n_trials=3)
    again = optuna.load_study(study_name="digits-lr", storage=sqlite_url)
    assert again.user_attrs[LR_FIND_ATTR] == found and len(again.trials) == 3


@pytest.mark.parametrize("kind,fragment", [("file", "is a file, not a folder; give a folder"),
                                           ("missing", "folder does not exist; create it first")])
def test_an_output_that_is_not_a_folder_is_refused_before_training(tmp_path, capsys, monkeypatch, kind, fragment):
    """A file given to -o was said "folder does not exist", and only after the range test had trained."""
    import hpsearch.study.lrfind as lrfind

    study = tmp_path / "s.yaml"
    study.write_text("name: iris-lr\ndata: {source: 'sklearn:iris'}\nmodel: {fixed: {optimizer: sgd}}\n"
                     "space: {n_neurons: {int: [4, 8]}}\nsearch: {n_trials: 1}\n")
    out = tmp_path / "afile"
    if kind == "file":
        out.write_text("x")
    monkeypatch.setattr(lrfind, "run_on_data", lambda *a, **k: pytest.fail("trained before refusing -o"))
    assert main(["lr-find", str(study), "-o", str(out), "--steps", "60"]) == 2
    err = capsys.readouterr().err
    assert f"-o {out}: {fragment}" in err and err.count("\n") == 1
