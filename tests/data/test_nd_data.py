"""Beyond 2-D numeric tables: N-D inputs (reshape, rescale, per-channel scaling), messy tables
(encoding and imputation fitted on training rows only, per fold), image folders and Keras datasets."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from data_fixtures import messy_frame, write_image_folder

from hpsearch.data.prepare import PreparedData, Preprocessor, check_input_rank, prepare_data
from hpsearch.data.preprocess import fit_preprocessor
from hpsearch.data.sources.images import ImageFolderSource
from hpsearch.data.sources.kerasdata import KerasSource, keras_cache_dir
from hpsearch.errors import ConfigError, DataError
from hpsearch.spec.config import StudyConfig, schema_from_mapping


def cfg_of(source: str, base: Path | None = None, *, cv: int | None = None, **data: Any) -> StudyConfig:
    search: dict[str, Any] = {"n_trials": 2, **({"cv": cv} if cv else {})}
    study = {"name": "t", "data": {"source": source, **data}, "space": {"n_neurons": {"int": [1, 4]}}, "search": search}
    return schema_from_mapping(study, where="t.yaml", base_dir=str(base) if base else None)


def prep(cfg: StudyConfig) -> PreparedData:
    return prepare_data(cfg, cfg.search.cv or 1)


# -- N-D arrays ------------------------------------------------------------------------------------
def test_reshape_gives_images_scaled_per_channel_on_training_rows_only():
    data = prep(cfg_of("sklearn:digits", reshape=[8, 8, 1], rescale=16, max_rows=300))
    assert data.X_train.shape[1:] == (8, 8, 1) and data.X_test.shape[1:] == (8, 8, 1)
    assert data.X_train_raw.shape[1:] == (8, 8, 1)
    pre = data.preprocessor
    assert pre.input_shape == [8, 8, 1] and pre.rescale == 16 and len(pre.mean) == 1  # one channel
    raw = data.X_train_raw.astype(np.float64) / 16
    assert pre.mean[0] == pytest.approx(raw.mean(), rel=1e-5) and pre.scale[0] == pytest.approx(raw.std(), rel=1e-5)
    assert abs(float(data.X_train.mean())) < 1e-4 and abs(float(data.X_valid.mean())) > 1e-4
    meta = data.meta()
    assert meta["X_shape_"] == (len(data.y_train), 8, 8, 1) and meta["n_classes_"] == 10
    assert meta["X_shape_"][1:] == (8, 8, 1) and meta["n_features_in_"] == 8
    # raw images, or flat rows of 64 values, go in at predict time
    flat = data.X_train_raw[:3].reshape(3, 64)
    assert np.allclose(pre.transform(flat), data.X_train[:3]) and np.allclose(pre.transform(data.X_train_raw[:3]),
                                                                              data.X_train[:3])
    with pytest.raises(DataError, match=r"shape \(63,\); the model expects \(8, 8, 1\)"):
        pre.transform(np.zeros((2, 63)))
    assert Preprocessor.from_json(pre.to_json()) == pre


def test_reshape_that_does_not_fit_names_the_field():
    with pytest.raises(ConfigError, match=r"^data.reshape: \[8, 8, 2\] holds 128 values .* multiply to 64$"):
        prep(cfg_of("sklearn:digits", reshape=[8, 8, 2]))


def test_npz_sequences_keep_their_dtype_and_scale_per_feature(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.normal(loc=[0.0, 10.0], scale=[1.0, 5.0], size=(60, 7, 2))
    np.savez(tmp_path / "seq.npz", X=X, y=np.arange(60) % 2)
    data = prep(cfg_of("seq.npz", tmp_path, cv=3))
    assert data.X_train.shape[1:] == (7, 2) and len(data.preprocessor.mean) == 2
    assert data.preprocessor.mean[1] == pytest.approx(data.X_train_raw[..., 1].mean(), rel=1e-5)
    for fold in data.fold_arrays(3, 0):  # each fold scaled by its own training rows
        assert fold.X_train.shape[1:] == (7, 2)
        assert np.allclose(fold.X_train.reshape(-1, 2).mean(axis=0), 0.0, atol=1e-4)


def test_npz_labels_that_do_not_match_the_images(tmp_path):
    np.savez(tmp_path / "i.npz", X=np.zeros((10, 4, 4, 1), dtype=np.uint8), y=np.arange(9) % 2)
    with pytest.raises(DataError, match="10 feature rows but 9 target values"):
        prep(cfg_of("i.npz", tmp_path))


def test_input_rank_of_a_builder_is_checked():
    def images_only(meta: Any = None) -> None: ...

    images_only.input_ranks = (3,)  # type: ignore[attr-defined]
    tables = prep(cfg_of("sklearn:iris"))
    with pytest.raises(ConfigError, match=r"^model.builder: images_only takes images .* \(4,\); use a builder that"
                       r" takes table rows \(features,\) \(model.builder: mlp .*data.reshape: \[HEIGHT, WIDTH,"
                       r" CHANNELS\] whose sizes multiply to 4$"):
        check_input_rank(images_only, tables)
    check_input_rank(images_only, prep(cfg_of("sklearn:digits", reshape=[8, 8, 1])))
    check_input_rank(lambda: None, tables)  # declares nothing: not checked


def test_sequences_to_a_builder_of_table_rows_name_a_sequence_builder_or_flattening():
    """(samples, steps, features) given to a builder of rows: the fix is a builder that takes sequences
    (or flattening), never a reshape that adds an axis and makes them images."""
    def rows_only(meta: Any = None) -> None: ...

    def images_only(meta: Any = None) -> None: ...

    rows_only.input_ranks = (1,)  # type: ignore[attr-defined]
    images_only.input_ranks = (3,)  # type: ignore[attr-defined]
    sequences = prep(cfg_of("sklearn:digits", reshape=[8, 8]))
    with pytest.raises(ConfigError) as info:
        check_input_rank(rows_only, sequences)
    text = str(info.value)
    assert "data gives sequences (steps, features): each sample has shape (8, 8)" in text
    assert "use a builder that takes sequences (steps, features) (model.builder: cnn" in text
    assert "fn.input_ranks = (2,)" in text and "data.reshape: [64]" in text and "[8, 8, 1]" not in text
    with pytest.raises(ConfigError, match=r"sequences \(steps, features\).* or set data.reshape: \[8, 8, 1\]$"):
        check_input_rank(images_only, sequences)


# -- messy tables ------------------------------------------------------------------------------------
def test_text_categories_and_gaps_are_encoded_on_training_rows_only(tmp_path):
    df = messy_frame()
    df.to_csv(tmp_path / "m.csv", index=False)
    data = prep(cfg_of("m.csv", tmp_path, target="label"))
    pre = data.preprocessor
    kinds = {c["name"]: c for c in pre.columns}
    assert kinds["size"]["kind"] == "number" and kinds["size"]["indicator"] is True
    assert kinds["color"]["kind"] == "onehot" and sorted(kinds["color"]["values"]) == ["blue", "green", "red"]
    assert kinds["city"]["kind"] == "lookup"  # 40 towns > data.max_categories 20
    train_sizes = pd.to_numeric(pd.Series(data.X_train_raw[:, 0]))
    assert kinds["size"]["fill"] == pytest.approx(float(train_sizes.median()))  # training rows' median
    assert data.X_train.shape[1] == 2 + 3 + 1 and np.isfinite(data.X_train).all()
    assert data.summary["encoded_features"] == 6
    # raw rows at predict time: an unseen category, a missing number, a missing category
    raw = pd.DataFrame({"city": ["atlantis", "town 3"], "color": ["purple", None], "size": [np.nan, 0.5]})
    out = pre.transform(raw)
    assert out.shape == (2, 6) and np.isfinite(out).all()
    restored = Preprocessor.from_json(pre.to_json())
    assert restored == pre and np.array_equal(restored.transform(raw), out)
    json.loads(pre.to_json())  # plain JSON, no pickle


def test_table_encoding_refits_inside_each_fold(tmp_path):
    messy_frame().to_csv(tmp_path / "m.csv", index=False)
    data = prep(cfg_of("m.csv", tmp_path, target="label", cv=3, max_categories=50))
    assert {c["kind"] for c in data.preprocessor.columns} == {"number", "onehot"}  # 40 towns <= 50
    folds = data.fold_arrays(3, 0)  # one model input width for every fold: the layout is the study's
    assert len(folds) == 3 and all(f.X_train.shape[1] == f.X_valid.shape[1] == data.X_train.shape[1] for f in folds)
    rows = data.X_train_raw[:50]
    fold_pre = data.fit_preprocessor(rows)
    assert fold_pre.columns[0]["fill"] == pytest.approx(float(pd.to_numeric(pd.Series(rows[:, 0])).median()))
    assert fold_pre.mean != data.preprocessor.mean
    assert all(np.isfinite(f.X_train).all() and np.isfinite(f.X_valid).all() for f in folds)
    # the scikit-learn engines' step does the same, fitted on each fold's raw rows
    step = data.scaler()
    fitted = step.fit(data.X_train_raw[:50])
    assert fitted.pre_ == fit_preprocessor(data.X_train_raw[:50], "standard", data.preprocessor)
    assert np.allclose(fitted.transform(data.X_valid_raw), fitted.pre_.transform(data.X_valid_raw))


# -- image folders ------------------------------------------------------------------------------------
def test_image_folder_loads_skipping_the_corrupt_file(tmp_path):
    write_image_folder(tmp_path / "imgs")
    raw = ImageFolderSource().load(cfg_of("imgs/", tmp_path, skip_bad_files=True))
    assert raw.X.shape == (24, 12, 10, 3) and raw.X.dtype == np.uint8
    assert sorted(set(raw.y)) == ["bottom", "top"] and raw.info == {"images": 24, "skipped_files": 1}
    gray = ImageFolderSource().load(cfg_of("imgs/", tmp_path, skip_bad_files=True, color="grayscale",
                                           image_size=[6, 5]))
    assert gray.X.shape == (24, 6, 5, 1)
    data = prep(cfg_of("imgs/", tmp_path, skip_bad_files=True, rescale=255))
    assert data.summary["skipped_files"] == 1 and data.summary["input_shape"] == [12, 10, 3]
    assert len(data.preprocessor.mean) == 3 and data.preprocessor.classes == ["bottom", "top"]


def _mixed_sizes(root: Path) -> None:
    from PIL import Image

    write_image_folder(root, corrupt=False)
    Image.fromarray(np.zeros((5, 5, 3), dtype=np.uint8)).save(root / "top" / "small.png")


def _empty_class(root: Path) -> None:
    write_image_folder(root, corrupt=False)
    (root / "zebra").mkdir()


@pytest.mark.parametrize("make,fragment", [
    (lambda r: write_image_folder(r), r"cannot read image .*broken.png \(UnidentifiedImageError\); .*skip_bad_files"),
    (_mixed_sizes, r"images of different sizes .*small.png is 5x5.*set data.image_size: \[height, width\]"),
    (_empty_class, r"class folder 'zebra' has no images"),
    (lambda r: write_image_folder(r, classes=("only",), corrupt=False), r"at least two classes \(found only 'only'\)"),
    (lambda r: None, "folder not found"),
])
def test_image_folder_errors_are_one_line(tmp_path, make, fragment):
    make(tmp_path / "imgs")
    with pytest.raises(DataError, match=fragment) as ei:
        ImageFolderSource().load(cfg_of("imgs/", tmp_path))
    assert str(ei.value).startswith(f"data.source {tmp_path / 'imgs'}: ") and "\n" not in str(ei.value)


# -- Keras datasets -----------------------------------------------------------------------------------
def test_keras_source_names_and_cache(monkeypatch, tmp_path):
    with pytest.raises(ConfigError, match="unknown Keras dataset 'mnits'; use one of keras:mnist, keras:fashion_mnist"):
        KerasSource().check(cfg_of("keras:mnits"))
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    assert keras_cache_dir() == tmp_path / "datasets"
    monkeypatch.delenv("KERAS_HOME")
    assert keras_cache_dir() == Path.home() / ".keras" / "datasets"


# -- the chapter-10 recipe on 3-D arrays ----------------------------------------------------------------
def _flatten_mlp(n_neurons: int = 16, learning_rate: float = 1e-2, meta: Any = None) -> Any:
    import keras

    model = keras.Sequential([keras.Input(shape=meta["X_shape_"][1:]), keras.layers.Flatten(),
                              keras.layers.Dense(n_neurons, activation="relu"),
                              keras.layers.Dense(meta["n_classes_"], activation="softmax")])
    model.compile(loss="sparse_categorical_crossentropy", optimizer=keras.optimizers.SGD(learning_rate),
                  metrics=["accuracy"])
    return model


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_keras_classifier_takes_3d_arrays_inside_randomized_search():
    from scipy.stats import loguniform
    from sklearn.model_selection import RandomizedSearchCV

    from hpsearch import KerasClassifier

    rng = np.random.default_rng(0)
    y = np.arange(60) % 3
    X = rng.random((60, 6, 6)).astype("float32")
    for i in range(60):
        X[i, 2 * y[i]:2 * y[i] + 2] += 1.0
    search = RandomizedSearchCV(KerasClassifier(_flatten_mlp, epochs=3, verbose=0, random_state=0),
                                {"n_neurons": [8, 16], "learning_rate": loguniform(1e-2, 1e-1)},
                                n_iter=2, cv=2, random_state=0)
    search.fit(X, y)
    assert search.best_estimator_.X_shape_ == (60, 6, 6)
    assert search.best_estimator_.predict(X[:5]).shape == (5,) and 0.0 <= search.best_score_ <= 1.0
