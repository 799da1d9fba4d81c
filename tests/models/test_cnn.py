"""Tests of the built-in ``cnn`` builder (hpsearch.models.cnn), the misclassified-images figure of the
report, and the digits-cnn study. Tiny arrays, one or two epochs."""

from __future__ import annotations

import inspect
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import pytest

from hpsearch.errors import ConfigError
from hpsearch.models.builders import (
    COMPILE_PARAMS,
    builder_accepts,
    call_builder,
    check_builder_params,
    compile_for_task,
)
from hpsearch.models.cnn import build_cnn, check_cnn_input
from hpsearch.registry import BUILDERS
from hpsearch.spec.space import SearchSpace

REPO = Path(__file__).resolve().parents[2]


def meta_for(shape: tuple[int, ...], n_classes: int = 3) -> dict:
    return {"X_shape_": shape, "n_features_in_": shape[1], "target_type_": "multiclass" if n_classes > 2 else "binary",
            "n_classes_": n_classes, "task": "classification"}


def layer_types(model) -> list[str]:
    return [type(layer).__name__ for layer in model.layers]


@pytest.mark.parametrize("shape, conv, first_conv", [
    ((16, 8, 8, 1), "auto", "Conv2D"),
    ((16, 8, 8), "auto", "Conv2D"),  # a channel axis is added inside the model
    ((16, 6, 6, 3), "2d", "Conv2D"),
    ((16, 12, 3), "1d", "Conv1D"),
])
def test_rank_picks_the_convolution_and_trains(shape, conv, first_conv):
    rng = np.random.default_rng(0)
    X = rng.random(shape, dtype=np.float32)
    y = np.arange(shape[0]) % 3
    params = {"conv": conv, "filters": 4, "dense_units": 8, "optimizer": "adam"}
    model = call_builder(build_cnn, params, meta_for(shape))
    types = layer_types(model)
    assert first_conv in types and ("Conv1D" if first_conv == "Conv2D" else "Conv2D") not in types
    assert ("Reshape" in types) == (shape == (16, 8, 8))
    history = model.fit(X, y, epochs=1, batch_size=8, verbose=0).history
    assert set(history) == {"loss", "accuracy"} and np.isfinite(history["loss"][0])
    assert model.predict(X[:2], verbose=0).shape == (2, 3)


def test_blocks_filters_pooling_and_head():
    model = call_builder(build_cnn, {"n_blocks": 3, "convs_per_block": 2, "filters": 8, "filter_growth": 1.5,
                                     "pooling": "average", "global_pooling": "max", "batch_norm": True,
                                     "dropout": 0.1, "dense_layers": 2, "dense_units": 16, "head_dropout": 0.3},
                         meta_for((4, 8, 8, 1)))
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    assert [c.filters for c in convs] == [8, 8, 12, 12, 18, 18]  # round(8 * 1.5 ** block)
    assert all(c.kernel_size == (3, 3) and c.padding == "same" and not c.use_bias for c in convs)
    types = layer_types(model)
    assert types.count("BatchNormalization") == 6 and types.count("AveragePooling2D") == 3
    assert "GlobalMaxPooling2D" in types and "Flatten" not in types
    dense = [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)]
    assert [d.units for d in dense] == [16, 16, 3]
    rates = sorted(layer.rate for layer in model.layers if isinstance(layer, keras.layers.Dropout))
    assert rates == [0.1, 0.1, 0.1, 0.3, 0.3]
    # pooling with "same" padding: more blocks than halvings of an 8x8 image still build
    deep = call_builder(build_cnn, {"n_blocks": 5, "filters": 2}, meta_for((4, 8, 8, 1)))
    assert deep.get_layer("pool_4").output.shape[1:3] == (1, 1)
    plain = call_builder(build_cnn, {"pooling": "none", "dense_layers": 0}, meta_for((4, 8, 8, 1)))
    assert "MaxPooling2D" not in layer_types(plain) and layer_types(plain)[-2:] == ["Flatten", "Dense"]


def test_activation_and_initializer_as_in_the_mlp():
    m = call_builder(build_cnn, {"activation": "selu", "batch_norm": False}, meta_for((4, 8, 8, 1)))
    conv = m.get_layer("conv_0_0")
    assert conv.activation.__name__ == "selu" and type(conv.kernel_initializer).__name__ == "LecunNormal"
    m = call_builder(build_cnn, {"activation": "tanh", "kernel_initializer": "he_uniform"}, meta_for((4, 8, 8, 1)))
    assert type(m.get_layer("dense_0").kernel_initializer).__name__ == "HeUniform"


def test_augmentation_is_active_in_training_only():
    rng = np.random.default_rng(1)
    X = rng.random((8, 8, 8, 1), dtype=np.float32)
    model = call_builder(build_cnn, {"flip": "horizontal", "rotation": 0.1, "zoom": 0.2, "translation": 0.2,
                                     "filters": 4}, meta_for((8, 8, 8, 1)))
    augment = keras.Sequential([model.get_layer(n) for n in ("flip", "rotation", "zoom", "translation")])
    assert np.array_equal(np.asarray(augment(X, training=False)), X)
    assert not np.allclose(np.asarray(augment(X, training=True)), X)
    assert np.allclose(model.predict(X, verbose=0), model.predict(X, verbose=0))


def test_compile_knobs_are_the_shared_list():
    sig = inspect.signature(build_cnn).parameters
    shared = inspect.signature(compile_for_task).parameters
    assert {k: sig[k].default for k in COMPILE_PARAMS} == {k: shared[k].default for k in COMPILE_PARAMS}
    assert builder_accepts(build_cnn) >= COMPILE_PARAMS | {"n_blocks", "filters", "flip"}
    model = call_builder(build_cnn, {"optimizer": "nesterov", "learning_rate": 0.02, "clipnorm": 1.0},
                         meta_for((4, 8, 8, 1)))
    opt = model.optimizer
    assert isinstance(opt, keras.optimizers.SGD) and opt.nesterov and opt.clipnorm == 1.0
    assert float(opt.learning_rate) == pytest.approx(0.02)
    with pytest.raises(ConfigError, match=r"^model\.optimzer: unknown parameter for builder cnn"):
        build_cnn(optimzer="adam", meta=meta_for((4, 8, 8, 1)))


def test_registered_as_cnn():
    assert BUILDERS.get("cnn") is build_cnn and "cnn" in BUILDERS.names()


@pytest.mark.parametrize("meta, conv, message", [
    (meta_for((10, 64)), "auto", r"^model\.builder: cnn needs images .* 2-D table of 64 features; set data\.reshape"),
    ({"n_features_in_": 64}, "auto", r"data\.reshape \(e\.g\. \[8, 8, 1\] for sklearn:digits\) or use builder: mlp$"),
    (meta_for((10, 2, 8, 8, 1)), "auto", r"^model\.builder: cnn takes 3-D or 4-D inputs, got 5-D"),
    (meta_for((10, 8, 8, 1)), "1d", r"^model\.conv: 1d needs sequences"),
    (None, "auto", r"^model\.builder: cnn needs the input shape"),
])
def test_wrong_input_rank_is_one_line_with_the_fix(meta, conv, message):
    with pytest.raises(ConfigError, match=message) as e:
        check_cnn_input(meta, conv)
    assert "\n" not in str(e.value)
    with pytest.raises(ConfigError, match=message):
        build_cnn(conv=conv, meta=meta)
    assert build_cnn.input_ranks == (2, 3)  # what the data side checks before a study writes anything


@pytest.mark.parametrize("params, message", [
    ({"n_blocks": 0}, r"^model\.n_blocks: must be an integer >= 1, got 0$"),
    ({"filters": 2.5}, r"^model\.filters: must be an integer >= 1"),
    ({"filter_growth": 0}, r"^model\.filter_growth: must be a number > 0"),
    ({"kernel_size": 0}, r"^model\.kernel_size: must be an integer >= 1"),
    ({"dense_layers": -1}, r"^model\.dense_layers: must be an integer >= 0"),
    ({"dropout": 1.0}, r"^model\.dropout: must be a number in \[0, 1\)"),
    ({"rotation": 0.7}, r"^model\.rotation: must be a number in \[0, 0\.5\]"),
    ({"pooling": "maximum"}, r"^model\.pooling: unknown value 'maximum'; use one of max, average, none$"),
    ({"global_pooling": "flat"}, r"^model\.global_pooling: unknown value"),
    ({"flip": "diagonal"}, r"^model\.flip: unknown value 'diagonal'"),
    ({"activation": "sigmoidal"}, r"^model\.activation: unknown value"),
    ({"optimizer": "adamm"}, r"^model\.optimizer: unknown value"),
    ({"conv": "3d"}, r"^model\.conv: unknown value '3d'; use one of auto, 1d, 2d$"),
    ({"conv": "1d", "rotation": 0.1}, r"^model\.flip/rotation/zoom/translation: augmentation is for images only"),
])
def test_bad_values_are_one_line_config_errors(params, message):
    shape = (4, 12, 3) if params.get("conv") == "1d" else (4, 8, 8, 1)
    with pytest.raises(ConfigError, match=message):
        call_builder(build_cnn, params, meta_for(shape))


@pytest.mark.parametrize("fixed, space, message", [
    ({"pooling": "maxx"}, {}, r"^model\.fixed\.pooling: unknown value 'maxx'"),
    ({"n_blocks": 0}, {}, r"^model\.fixed\.n_blocks: must be an integer >= 1"),
    ({}, {"flip": {"choice": ["none", "sideways"]}}, r"^space\.flip: unknown value 'sideways'"),
    ({}, {"dropout": {"choice": [0.0, 1.5]}}, r"^space\.dropout: must be a number in \[0, 1\)"),
    ({}, {"lr_schedule": {"choice": ["cosine", "linear"]}}, r"^space\.lr_schedule: unknown value 'linear'"),
    ({"n_filters": 8}, {}, r"^model\.fixed\.n_filters: unknown parameter for builder cnn"),
])
def test_study_values_are_checked_before_anything_runs(fixed, space, message):
    with pytest.raises(ConfigError, match=message):
        check_builder_params(build_cnn, SearchSpace.from_dict(space, fixed=fixed))


def test_study_values_that_pass():
    space = SearchSpace.from_dict({"n_blocks": {"int": [1, 3]}, "pooling": {"choice": ["max", "average"]},
                                     "flip": {"choice": ["none", "horizontal"]}, "optimizer": {"choice": ["adam"]}},
                                    fixed={"global_pooling": "average", "kernel_initializer": None, "rotation": 0.05})
    check_builder_params(build_cnn, space)


def test_keras_classifier_on_image_arrays():
    """hpsearch.KerasClassifier gives the cnn the array's shape through meta: 4-D and 3-D images."""
    from sklearn.base import clone
    from sklearn.datasets import load_digits

    from hpsearch import KerasClassifier

    digits = load_digits()
    X = (digits.data[:600] / 16.0).reshape(-1, 8, 8, 1).astype("float32")
    y = digits.target[:600]
    clf = KerasClassifier(model="cnn", filters=8, dense_units=16, optimizer="adam", learning_rate=1e-2, epochs=3,
                          batch_size=32, random_state=0)
    assert clf.get_params()["n_blocks"] == 2 and clf.get_params()["lr_schedule"] is None
    clf.fit(X[:500], y[:500])
    assert clf.predict(X[500:]).shape == (100,) and clf.score(X[500:], y[500:]) > 0.3  # chance: 0.1
    three_d = clone(clf).set_params(epochs=1, global_pooling="average").fit(X[:64, :, :, 0], y[:64])
    assert three_d.model_.get_layer("add_channel") is not None
    with pytest.raises(ConfigError, match=r"2-D table of 64 features; set data\.reshape"):
        clone(clf).fit(digits.data[:32], digits.target[:32])


# ---------------------------------------------------------------------------------------------- report

def test_misclassified_grid_png(tmp_path):
    from PIL import Image

    from hpsearch.plots import save_misclassified

    rng = np.random.default_rng(2)
    for shape in ((40, 8, 8), (40, 8, 8, 1), (40, 6, 6, 3)):
        images = rng.normal(size=shape)
        y_true = np.arange(40) % 4
        y_pred = np.where(np.arange(40) % 3 == 0, (y_true + 1) % 4, y_true)
        path = tmp_path / f"mis{len(shape)}_{shape[-1]}.png"
        save_misclassified(images, y_true, y_pred, ["a", "b", "c", "d"], str(path))
        with Image.open(path) as im:
            assert im.format == "PNG" and im.size[0] > 300 and im.size[1] > 150
    with pytest.raises(ValueError, match="every test image is classified correctly"):
        save_misclassified(images, y_true, y_true, ["a", "b", "c", "d"], str(tmp_path / "none.png"))


def test_evaluation_keeps_the_test_images_of_an_image_classifier():
    from types import SimpleNamespace

    from hpsearch.results.evaluation import evaluate_predictions

    raw = np.eye(3)[[0, 1, 2, 0, 2, 1]]  # predicted 0 1 2 0 2 1
    for X, kept in ((np.zeros((6, 4, 4)), True), (np.zeros((6, 4, 4, 3)), True), (np.zeros((6, 16)), False)):
        data = SimpleNamespace(task="classification", X_test=X, y_test=np.array([0, 1, 2, 1, 2, 0]),
                               preprocessor=SimpleNamespace(classes=["a", "b", "c"]))
        ev = evaluate_predictions(raw, data)
        assert (ev.images is X) == kept
        assert ev.y_true.tolist() == [0, 1, 2, 1, 2, 0] and ev.y_pred.tolist() == [0, 1, 2, 0, 2, 1]


def test_report_adds_the_grid_for_image_classifiers_only(tmp_path):
    from hpsearch.results import report
    from hpsearch.results.evaluation import Evaluation

    def evaluation(images, wrong: bool) -> Evaluation:
        y = np.arange(20) % 2
        return Evaluation(task="classification", note="", scores={"accuracy": 0.5, "roc_auc": 0.5},
                          labels=["no", "yes"], confusion=[[5, 5], [5, 5]], roc=([0.0, 1.0], [0.0, 1.0]),
                          y_true=y, y_pred=1 - y if wrong else y, images=images)

    images = np.random.default_rng(3).normal(size=(20, 8, 8, 1))
    for name, ev, expected in [("img", evaluation(images, True), "misclassified.png"),
                               ("right", evaluation(images, False), "every test image is classified correctly"),
                               ("table", evaluation(None, True), None)]:
        rep = report._Report(tmp_path)
        report._evaluation_sections(rep, ev)
        titles = [s["title"] for s in rep.sections]
        if expected is None:
            assert "Misclassified test images" not in titles
            continue
        section = rep.sections[titles.index("Misclassified test images")]
        assert expected in (section["image"] or section["note"]), (name, section)
    assert (tmp_path / "misclassified.png").stat().st_size > 1000


def test_fashion_mnist_study_uses_the_cnn_on_the_keras_dataset():
    import yaml

    data = yaml.safe_load((REPO / "studies" / "fashion-mnist-cnn.yaml").read_text())
    assert data["data"]["source"] == "keras:fashion_mnist" and data["model"]["builder"] == "cnn"
    fixed, space = data["model"].get("fixed", {}), data.get("space", {})
    check_builder_params(build_cnn, SearchSpace.from_dict(space, fixed=fixed))


# ---------------------------------------------------------------------------------------------- studies
# The tests below need the N-D data path of issue 9's data half (data.reshape, X_shape_ in meta, the
# builder's input_ranks checked before a study writes anything, keras: sources).

def test_a_table_for_the_cnn_is_refused_before_anything_is_written(tmp_path, monkeypatch, capsys):
    from hpsearch.cli import main

    monkeypatch.chdir(tmp_path)
    study = tmp_path / "flat.yaml"
    study.write_text("name: flat\ndata: {source: 'sklearn:digits'}\nmodel: {builder: cnn}\n"
                     "space: {filters: {int: [4, 8]}}\nsearch: {engine: optuna, n_trials: 1}\ntrain: {epochs: 1}\n")
    rc = main(["run", str(study), "--storage", f"sqlite:///{tmp_path / 'hps.db'}", "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert err.startswith("hpsearch: error: ") and "model.builder" in err and "set data.reshape" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["flat.yaml"]


@pytest.mark.slow
def test_digits_cnn_study_end_to_end(tmp_path, monkeypatch, capsys):
    """The digits as 8x8x1 images (data.reshape) through the cnn builder, run and reported.

    Needs the N-D data path (data.reshape, meta X_shape_) of issue 9's data half."""
    from hpsearch.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("HPSEARCH_STORAGE", raising=False)
    monkeypatch.delenv("HPSEARCH_ARTIFACTS", raising=False)
    url = f"sqlite:///{tmp_path / 'hps.db'}"
    study = str(REPO / "studies" / "digits-cnn.yaml")
    rc = main(["run", study, "--storage", url, "--n-trials", "2", "--epochs", "2", "--no-progress"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert "test accuracy" in out
    assert main(["report", "digits-cnn", "--storage", url, "-o", str(tmp_path / "rep")]) == 0
    assert (tmp_path / "rep" / "misclassified.png").exists()
    assert (tmp_path / "rep" / "confusion_matrix.png").exists()


@pytest.mark.slow
def test_fashion_mnist_cnn_study_against_a_tiny_keras_cache(tmp_path):
    """Run in a child process: Keras reads KERAS_HOME once, at import."""
    import subprocess
    import sys

    from data_fixtures import write_fashion_mnist_cache  # the data half's fixture (tests/data_fixtures.py)

    write_fashion_mnist_cache(tmp_path / "keras")
    env = {**os.environ, "KERAS_HOME": str(tmp_path / "keras"), "PYTHONPATH": str(REPO)}
    env.pop("HPSEARCH_STORAGE", None)
    env.pop("HPSEARCH_ARTIFACTS", None)
    argv = [sys.executable, "-m", "hpsearch", "run", str(REPO / "studies" / "fashion-mnist-cnn.yaml"), "--storage",
            f"sqlite:///{tmp_path / 'f.db'}", "--n-trials", "1", "--epochs", "1", "--no-progress"]
    done = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
