"""MC-dropout uncertainty: refused without dropout, a positive spread with it, its mean close to
``predict_proba`` at many samples, and ``hpsearch predict`` end to end."""

from __future__ import annotations

import csv
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest
from sklearn.datasets import load_iris

from hpsearch.cli import main
from hpsearch.data.prepare import Preprocessor
from hpsearch.errors import UserError
from hpsearch.models.mlp import build_mlp
from hpsearch.results.best import fitted_estimator, load_best
from hpsearch.study.run import run_study
from hpsearch.study.validate import parse_study_config


def _iris_model(dropout: float):
    X, y = load_iris(return_X_y=True)
    mean, scale = X.mean(axis=0), X.std(axis=0)
    meta = {"n_features_in_": 4, "target_type_": "multiclass", "n_classes_": 3}
    model = build_mlp(n_hidden=1, n_neurons=32, dropout=dropout, optimizer="adam", learning_rate=0.02, meta=meta,
                      jit_compile=False)
    model.fit(((X - mean) / scale).astype("float32"), y, epochs=30, batch_size=32, verbose=0)
    pre = Preprocessor(task="classification", n_features=4, mean=mean.tolist(), scale=scale.tolist(),
                       classes=[0, 1, 2])
    return fitted_estimator(model, pre), X


def test_refused_without_dropout():
    est, X = _iris_model(0.0)
    with pytest.raises(UserError, match="^predict_uncertainty: the model has no dropout layer"):
        est.predict_uncertainty(X[:5])


def test_spread_with_dropout_and_mean_close_to_predict_proba():
    est, X = _iris_model(0.1)
    u = est.predict_uncertainty(X, samples=400, seed=0)
    proba = est.predict_proba(X)
    assert u.mean.shape == proba.shape == u.std.shape
    assert u.std.max() > 0.01 and (u.std >= 0).all()
    assert np.allclose(u.mean.sum(axis=1), 1.0, atol=1e-4)
    assert np.abs(u.mean - proba).mean() < 0.03
    assert u.entropy is not None and u.entropy.shape == (len(X),) and (u.entropy >= 0).all()
    with pytest.raises(UserError, match="^samples: must be an integer >= 2"):
        est.predict_uncertainty(X, samples=1)


def test_predict_command_writes_uncertainty_columns(sqlite_url, tmp_path, capsys):
    cfg = parse_study_config({
        "name": "mc", "data": {"source": "sklearn:iris", "split": {"valid": 0.25, "test": 0.2}},
        "model": {"fixed": {"optimizer": "adam", "learning_rate": 0.02, "dropout": 0.2}},
        "space": {"n_neurons": {"int": [8, 16]}}, "train": {"epochs": 3},
        "search": {"n_trials": 1, "pruner": "none"}})
    art = str(tmp_path / "art")
    run_study(cfg, storage=sqlite_url, artifacts=art)
    X, _ = load_iris(return_X_y=True, as_frame=True)
    rows = tmp_path / "rows.csv"
    X.head(7).to_csv(rows, index=False)
    out = tmp_path / "out.csv"
    argv = ["predict", "mc", str(rows), "-o", str(out), "--storage", sqlite_url, "--artifacts", art]
    assert main([*argv, "--mc", "20"]) == 0
    with out.open() as f:
        table = list(csv.DictReader(f))
    assert len(table) == 7 and {"prediction", "proba_0", "std_0", "entropy"} <= set(table[0])
    assert "wrote 7 rows" in capsys.readouterr().out
    assert main(argv) == 2  # the output exists: refused, nothing overwritten
    assert "already exists" in capsys.readouterr().err
    est = load_best("mc", sqlite_url, art)
    assert est.predict_uncertainty(X.head(3), samples=5).mean.shape == (3, 3)
