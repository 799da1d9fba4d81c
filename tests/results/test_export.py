"""Serving formats: `hpsearch best STUDY --export DIR --format keras|saved_model|onnx` writes the best
model with its preprocessing inside; each artefact, loaded by its own runtime, predicts raw rows
(with gaps) as load_best does."""

from __future__ import annotations

import json

import numpy as np
import optuna
import pytest

from hpsearch.cli import main
from hpsearch.data.preprocess import Preprocessor
from hpsearch.records import TRIAL
from hpsearch.storage.artifacts import artifact_store_for, save_model_artifacts

# raw rows: 3 numeric columns, the second with training gaps (median fill + a missing indicator)
COLUMNS = [{"name": "a", "kind": "number", "fill": 1.5, "indicator": False},
           {"name": "b", "kind": "number", "fill": -2.0, "indicator": True},
           {"name": "c", "kind": "number", "fill": 0.0, "indicator": False}]
ROWS = np.array([[0.5, np.nan, 3.0], [2.0, 1.0, -1.0], [-4.0, np.nan, 0.25], [10.0, 7.0, 2.0]], dtype=np.float32)


def _names(folder) -> list[str]:
    """What is in ``folder`` besides the SQLite files (no temporary export folder left behind)."""
    return sorted(p.name for p in folder.iterdir() if not p.name.startswith("hpsearch.db"))


def _stored_study(url: str, art: str, columns: list[dict]) -> None:
    """A study whose best trial stores an (untrained) 3-class model behind ``columns`` + standardisation."""
    import keras

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(5, activation="relu"),
                              keras.layers.Dense(3, activation="softmax")])
    pre = Preprocessor(task="classification", n_features=3, mean=[1.0, -1.0, 0.3, 0.5], scale=[2.0, 3.0, 0.5, 1.0],
                       classes=["x", "y", "z"], feature_names=["a", "b", "c"], columns=columns)
    study = optuna.create_study(study_name="exp", storage=url, direction="maximize")
    trial = study.ask()
    mid, pid = save_model_artifacts(artifact_store_for(url, art), trial, model, pre)
    trial.set_user_attr(TRIAL.MODEL_ARTIFACT, mid)
    trial.set_user_attr(TRIAL.PREPROCESS_ARTIFACT, pid)
    study.tell(trial, 0.5)


def test_exported_formats_predict_raw_rows_as_load_best(sqlite_url, tmp_path, capsys):
    import keras
    import onnxruntime
    import tensorflow as tf

    import hpsearch
    from hpsearch.results.export import custom_objects

    art = str(tmp_path / "art")
    _stored_study(sqlite_url, art, COLUMNS)
    ref = hpsearch.load_best("exp", storage=sqlite_url, artifacts=art).predict_proba(ROWS)
    base = ["best", "exp", "--storage", sqlite_url, "--artifacts", art]
    for fmt in ("keras", "saved_model", "onnx"):
        (tmp_path / fmt).mkdir()  # an empty folder is fine
        assert main([*base, "--export", str(tmp_path / fmt), "--format", fmt]) == 0
        assert f"({fmt}, preprocessing inside: it takes raw features;" in " ".join(capsys.readouterr().out.split())
    assert _names(tmp_path) == ["art", "keras", "onnx", "saved_model"]
    meta = json.loads((tmp_path / "onnx" / "hpsearch.json").read_text())
    assert meta["classes"] == ["x", "y", "z"] and meta["input_shape"] == [3] and meta["file"] == "model.onnx"

    saved = tf.saved_model.load(str(tmp_path / "saved_model" / "saved_model"))  # kept: serve() needs its variables
    got = {"keras": keras.models.load_model(tmp_path / "keras" / "model.keras", custom_objects=custom_objects())
           .predict(ROWS, verbose=0),
           "saved_model": saved.serve(ROWS).numpy()}
    session = onnxruntime.InferenceSession(str(tmp_path / "onnx" / "model.onnx"))
    assert [i.name for i in session.get_inputs()] == ["features"]
    got["onnx"] = session.run(None, {"features": ROWS})[0]
    for fmt, pred in got.items():
        diff = float(np.abs(pred - ref).max())
        assert diff < 1e-5, fmt

    # one-line refusals, nothing written: a used folder, an unknown format, --format without --export
    capsys.readouterr()
    for argv in ([*base, "--export", str(tmp_path / "onnx"), "--format", "onnx"],
                 [*base, "--export", str(tmp_path / "new"), "--format", "tflite"],
                 [*base, "--format", "onnx"]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and ("--format" in err or "--export" in err), err
    assert _names(tmp_path) == ["art", "keras", "onnx", "saved_model"]


def test_category_columns_are_refused_in_one_line(sqlite_url, tmp_path, capsys):
    art = str(tmp_path / "art")
    _stored_study(sqlite_url, art, [*COLUMNS[:2], {"name": "c", "kind": "onehot", "values": ["p"]}])
    rc = main(["best", "exp", "--storage", sqlite_url, "--artifacts", art, "--export", str(tmp_path / "out"),
               "--format", "saved_model"])
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1
    assert "--format saved_model" in err and "text/category columns" in err and "--export PATH.keras" in err
    assert _names(tmp_path) == ["art"]


@pytest.mark.parametrize("shape", [None, [2, 2]])
def test_serving_model_rescales_and_reshapes_like_the_preprocessor(shape):
    import keras

    from hpsearch.results.export import serving_model

    pre = Preprocessor(task="regression", n_features=4, mean=[0.1, 0.2] if shape else [0.1, 0.2, 0.3, 0.4],
                       scale=[0.5, 2.0] if shape else [0.5, 2.0, 1.0, 4.0], input_shape=shape, rescale=255.0)
    inner = keras.Sequential([keras.Input(tuple(shape or [4])), keras.layers.Flatten(), keras.layers.Dense(1)])
    X = np.random.default_rng(0).uniform(0, 255, size=(5, *(shape or [4]))).astype(np.float32)
    np.testing.assert_allclose(serving_model(inner, pre).predict(X, verbose=0),
                               inner.predict(pre.transform(X), verbose=0), rtol=1e-5, atol=1e-6)
