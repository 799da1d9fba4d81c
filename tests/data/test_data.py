"""Prepared data: validation, seeded stratified splits, labels, and scaling fitted on training rows
(per fold under CV). Reading the sources themselves is tested in test_datasources.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from hpsearch.data.prepare import PreparedData, Preprocessor, prepare_data, validate_arrays
from hpsearch.data.sources.tables import SKLEARN_DATASETS
from hpsearch.errors import ConfigError, DataError, UserError
from hpsearch.spec.config import StudyConfig, schema_from_mapping


def make_cfg(source: str, tmp: Path | None = None, *, cv: int | None = None, metric: str | None = None,
             **data: Any) -> StudyConfig:
    d: dict[str, Any] = {"source": source, **data}
    search: dict[str, Any] = {"n_trials": 2}
    if cv is not None:
        search["cv"] = cv
    if metric is not None:
        search["metric"] = metric
    return schema_from_mapping(
        {"name": "t", "data": d, "space": {"n_neurons": {"int": [1, 4]}}, "search": search},
        where="t.yaml", base_dir=str(tmp) if tmp else None,
    )


def prep(cfg: StudyConfig) -> PreparedData:
    """As a holdout engine would call it (k folds when search.cv is set)."""
    return prepare_data(cfg, cfg.search.cv or 1)


def imbalanced_frame(n: int = 200, seed: int = 0) -> pd.DataFrame:
    """Three string classes at 50% / 30% / 20%, two informative features and a shifted one."""
    rng = np.random.default_rng(seed)
    labels = np.array(["cat"] * (n // 2) + ["dog"] * (3 * n // 10) + ["eel"] * (n - n // 2 - 3 * n // 10))
    rng.shuffle(labels)
    code = np.searchsorted(["cat", "dog", "eel"], labels)
    return pd.DataFrame({
        "f1": rng.normal(size=n) + code,
        "f2": rng.normal(loc=5.0, scale=3.0, size=n),
        "f3": rng.uniform(100, 200, size=n),
        "label": labels,
    })


# --------------------------------------------------------------------------------------------------
# splits and scaling
# --------------------------------------------------------------------------------------------------


def test_seeded_split_is_reproducible(tmp_path):
    imbalanced_frame().to_csv(tmp_path / "d.csv", index=False)
    a = prep(make_cfg("d.csv", tmp_path, target="label", split={"valid": 0.2, "test": 0.2, "seed": 7}))
    b = prep(make_cfg("d.csv", tmp_path, target="label", split={"valid": 0.2, "test": 0.2, "seed": 7}))
    c = prep(make_cfg("d.csv", tmp_path, target="label", split={"valid": 0.2, "test": 0.2, "seed": 8}))
    for name in ("X_train", "y_train", "X_valid", "y_valid", "X_test", "y_test"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert not np.array_equal(a.X_train, c.X_train)
    assert a.summary["train_rows"] + a.summary["valid_rows"] + a.summary["test_rows"] == 200
    assert a.summary["test_rows"] == 40 and a.summary["valid_rows"] == 40
    assert a.X_train.dtype == np.float32 and a.y_train.dtype == np.int64


def test_stratified_class_proportions(tmp_path):
    imbalanced_frame().to_csv(tmp_path / "d.csv", index=False)
    data = prep(make_cfg("d.csv", tmp_path, target="label"))
    overall = np.array([0.5, 0.3, 0.2])
    for y in (data.y_train, data.y_valid, data.y_test):
        props = np.bincount(y, minlength=3) / len(y)
        np.testing.assert_allclose(props, overall, atol=0.03)
    assert data.summary["class_counts"] == {"cat": 100, "dog": 60, "eel": 40}


def test_regression_split_is_not_stratified_and_keeps_floats(tmp_path):
    data = prep(make_cfg("sklearn:diabetes", tmp_path))
    assert data.task == "regression" and data.preprocessor.classes is None
    assert data.y_train.dtype == np.float32 and data.target_type == "continuous"
    assert len(data.y_train) + len(data.y_valid) + len(data.y_test) == 442


def test_scaler_fitted_on_train_only(tmp_path):
    df = imbalanced_frame()
    df.to_csv(tmp_path / "d.csv", index=False)
    data = prep(make_cfg("d.csv", tmp_path, target="label"))
    pre = data.preprocessor
    np.testing.assert_allclose(data.X_train.mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(data.X_train.std(axis=0), 1.0, atol=1e-4)
    # valid/test were transformed with the training statistics, not their own
    assert np.abs(data.X_test.mean(axis=0)).max() > 1e-3
    assert np.abs(data.X_valid.mean(axis=0)).max() > 1e-3
    # the stored statistics are those of the raw training rows (undo the scaling to find them)
    raw_train = data.X_train.astype(np.float64) * np.asarray(pre.scale) + np.asarray(pre.mean)
    np.testing.assert_allclose(np.asarray(pre.mean), raw_train.mean(axis=0), rtol=1e-5)
    raw_all = df[["f1", "f2", "f3"]].to_numpy()
    assert not np.allclose(np.asarray(pre.mean), raw_all.mean(axis=0), rtol=1e-6)
    # each raw training row is one of the file's rows
    assert all(np.isclose(raw_all, r, rtol=1e-4).all(axis=1).any() for r in raw_train[:10])
    # and the preprocessor reproduces the transform on new raw data
    np.testing.assert_allclose(pre.transform(raw_train), data.X_train, atol=1e-4)


def test_scale_none_keeps_raw_values_and_constant_columns_are_safe(tmp_path):
    df = imbalanced_frame()
    df["const"] = 3.0
    df.to_csv(tmp_path / "d.csv", index=False)
    raw = prep(make_cfg("d.csv", tmp_path, target="label", scale="none"))
    assert raw.preprocessor.mean is None and raw.X_train[:, 2].min() >= 100
    scaled = prep(make_cfg("d.csv", tmp_path, target="label"))
    assert np.all(np.isfinite(scaled.X_train)) and scaled.preprocessor.scale[3] == 1.0
    assert np.allclose(scaled.X_train[:, 3], 0.0)


def test_test_fraction_zero(tmp_path):
    data = prep(make_cfg("sklearn:iris", tmp_path, split={"valid": 0.2, "test": 0.0}))
    assert len(data.y_test) == 0 and data.X_test.shape == (0, 4)
    assert len(data.y_train) + len(data.y_valid) == 150


# --------------------------------------------------------------------------------------------------
# labels
# --------------------------------------------------------------------------------------------------


def test_string_labels_are_encoded_and_decode_round_trip(tmp_path):
    df = imbalanced_frame()
    df.to_csv(tmp_path / "d.csv", index=False)
    data = prep(make_cfg("d.csv", tmp_path, target="label"))
    pre = data.preprocessor
    assert pre.classes == ["cat", "dog", "eel"] and data.n_classes == 3
    assert set(np.unique(data.y_train)) == {0, 1, 2}
    labels = df["label"].to_numpy()
    enc = pre.encode_labels(labels)
    assert list(pre.decode_labels(enc)) == list(labels)
    decoded = pre.decode_labels(data.y_test)
    assert set(decoded) <= {"cat", "dog", "eel"} and all(isinstance(v, str) for v in decoded)
    # the preprocessor survives JSON (it is stored with every model)
    back = Preprocessor.from_json(pre.to_json())
    assert back == pre
    assert list(back.decode_labels(back.encode_labels(labels))) == list(labels)
    with pytest.raises(DataError, match="'fox' was not seen"):
        pre.encode_labels(["fox"])
    m = data.meta()
    assert m["n_classes_"] == 3 and m["target_type_"] == "multiclass" and m["n_features_in_"] == 3


def test_integer_labels_that_are_not_0_to_k(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 3))
    y = np.array([3, 7, 9] * 20)
    np.savez(tmp_path / "d.npz", X=X, y=y)
    data = prep(make_cfg("d.npz", tmp_path))
    assert data.preprocessor.classes == [3, 7, 9]
    assert set(np.unique(data.y_train)) == {0, 1, 2}
    np.testing.assert_array_equal(data.preprocessor.decode_labels(np.array([0, 1, 2])), [3, 7, 9])
    assert data.preprocessor.transform(X).shape == (60, 3)


def test_binary_meta(tmp_path):
    data = prep(make_cfg("sklearn:breast_cancer", tmp_path, metric="auc"))
    assert data.n_classes == 2 and data.target_type == "binary"


# --------------------------------------------------------------------------------------------------
# sources
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(SKLEARN_DATASETS))
def test_sklearn_datasets(name, tmp_path):
    data = prep(make_cfg(f"sklearn:{name}", tmp_path))
    assert data.task == SKLEARN_DATASETS[name][1]
    expected_classes = {"digits": 10, "breast_cancer": 2, "wine": 3, "iris": 3, "diabetes": 0}[name]
    assert data.n_classes == expected_classes
    assert data.preprocessor.feature_names and len(data.preprocessor.feature_names) == data.X_train.shape[1]


def test_max_rows_is_seeded_and_bounded(tmp_path):
    a = prep(make_cfg("sklearn:digits", tmp_path, max_rows=120))
    b = prep(make_cfg("sklearn:digits", tmp_path, max_rows=120))
    assert a.summary["rows"] == 120 and len(a.y_train) + len(a.y_valid) + len(a.y_test) == 120
    np.testing.assert_array_equal(a.X_train, b.X_train)
    big = prep(make_cfg("sklearn:iris", tmp_path, max_rows=10_000))
    assert big.summary["rows"] == 150


def test_csv_and_parquet_round_trip_to_the_same_arrays(tmp_path):
    df = imbalanced_frame()
    df.to_csv(tmp_path / "d.csv", index=False)
    df.to_parquet(tmp_path / "d.parquet")
    a = prep(make_cfg("d.csv", tmp_path, target="label"))
    b = prep(make_cfg("d.parquet", tmp_path, target="label"))
    for name in ("X_train", "y_train", "X_valid", "y_valid", "X_test", "y_test"):
        np.testing.assert_allclose(getattr(a, name), getattr(b, name), rtol=1e-6)
    assert a.preprocessor.classes == b.preprocessor.classes == ["cat", "dog", "eel"]
    assert b.preprocessor.feature_names == ["f1", "f2", "f3"]


def test_features_subset_and_dataframe_transform(tmp_path):
    df = imbalanced_frame()
    df.to_parquet(tmp_path / "d.parquet")
    data = prep(make_cfg("d.parquet", tmp_path, target="label", features=["f3", "f1"]))
    assert data.X_train.shape[1] == 2 and data.preprocessor.feature_names == ["f3", "f1"]
    # a DataFrame with the columns in another order is reordered by name
    out = data.preprocessor.transform(df[["f1", "label", "f3"]])
    np.testing.assert_allclose(out, data.preprocessor.transform(df[["f3", "f1"]].to_numpy()))


def test_npz_named_target_and_regression(tmp_path):
    rng = np.random.default_rng(1)
    X = rng.normal(size=(50, 4))
    np.savez(tmp_path / "r.npz", X=X, price=X @ np.arange(4) + rng.normal(size=50) * 0.1)
    data = prep(make_cfg("r.npz", tmp_path, target="price"))
    assert data.task == "regression" and data.X_train.shape[1] == 4


def test_declared_task_overrides_inference(tmp_path):
    rng = np.random.default_rng(2)
    np.savez(tmp_path / "c.npz", X=rng.normal(size=(40, 2)), y=np.arange(40) % 4)
    assert prep(make_cfg("c.npz", tmp_path)).task == "classification"
    assert prep(make_cfg("c.npz", tmp_path, task="regression", metric="mse")).task == "regression"


# --------------------------------------------------------------------------------------------------
# validation (library level; the CLI side is in test_cli_errors.py)
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("X,y,task,fragment", [
    (np.zeros((0, 2)), np.zeros(0), "classification", "no data"),
    (np.ones(5), np.arange(5), "regression", "rows of a table, images or sequences"),
    (np.ones((5, 2)), np.arange(4), "regression", "5 feature rows but 4"),
    (np.array([[1.0, np.nan], [2.0, 3.0], [1.0, 1.0], [2.0, 2.0]]), np.array([0, 1, 0, 1]), "classification", "NaN"),
    (np.array([[1.0, np.inf], [2.0, 3.0], [1.0, 1.0], [2.0, 2.0]]), np.array([0, 1, 0, 1]), "classification", "inf"),
    (np.ones((4, 2)), np.array([1.0, np.nan, 2.0, 3.0]), "regression", "target contains NaN"),
    (np.ones((4, 2)), np.array([0, 0, 0, 0]), "classification", "one class"),
    (np.ones((4, 2)), np.array([2.0, 2.0, 2.0, 2.0]), "regression", "constant"),
    (np.ones((4, 2)), np.array(["a", "b", "a", "b"]), "regression", "numeric target"),
    (np.ones((4, 2)), np.array([0.5, 1.0, 0.0, 1.0]), "classification", "fractional"),
    (np.array([["a", "b"]] * 4), np.array([0, 1, 0, 1]), "classification", "numeric"),
    (np.ones((3, 2)), np.array([0, 1, 0]), "classification", "only 3 rows"),
])
def test_validate_arrays_rejects(X, y, task, fragment):
    with pytest.raises(DataError) as ei:
        validate_arrays(X, y, task, "data.source f.csv", min_rows=4)
    msg = str(ei.value)
    assert fragment in msg and msg.startswith("data.source f.csv: ") and "\n" not in msg


def test_metric_must_fit_the_task_found_in_the_data(tmp_path):
    with pytest.raises(ConfigError, match=r"search.metric: r2 needs a regression target"):
        prep(make_cfg("sklearn:wine", tmp_path, metric="r2"))
    with pytest.raises(ConfigError, match=r"search.metric: auc needs a binary target"):
        prep(make_cfg("sklearn:wine", tmp_path, metric="auc"))
    with pytest.raises(ConfigError, match=r"search.metric: accuracy needs a classification target"):
        prep(make_cfg("sklearn:diabetes", tmp_path, metric="accuracy"))
    assert prep(make_cfg("sklearn:wine", tmp_path, metric="loss")).n_classes == 3


def test_cv_folds_need_rows_in_the_training_split(tmp_path):
    pd.DataFrame({"a": np.arange(12.0), "y": np.arange(12.0) * 1.5}).to_csv(tmp_path / "r.csv", index=False)
    with pytest.raises(DataError, match="add rows, or lower search.cv"):
        prep(make_cfg("r.csv", tmp_path, target="y", cv=10))
    assert prep(make_cfg("r.csv", tmp_path, target="y", cv=3)).task == "regression"


def test_folds_are_given_by_the_caller(tmp_path):
    y = np.array(["a"] * 20 + ["b"] * 20 + ["r"] * 4)
    pd.DataFrame({"x": np.arange(44.0), "y": y}).to_csv(tmp_path / "c.csv", index=False)
    cfg = make_cfg("c.csv", tmp_path, target="y")
    # holdout: 4 rows of 'r' are enough
    assert prepare_data(cfg, 1).n_classes == 3
    # 3-fold cv (an engine's default_cv, say) needs 3 'r' rows in the training split
    with pytest.raises(DataError, match="class 'r'") as ei:
        prepare_data(cfg, 3)
    assert isinstance(ei.value, UserError)


# --------------------------------------------------------------------------------------------------
# preprocessing inside the folds (issue 8): no held-out row shapes the scaling of training rows
# --------------------------------------------------------------------------------------------------


def _leaky_folds(data: PreparedData, k: int, seed: int) -> list[np.ndarray]:
    """Training parts of folds cut from the globally scaled training split (hpsearch 0.1's way)."""
    from sklearn.model_selection import StratifiedKFold

    splitter = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    return [data.X_train[tr] for tr, _ in splitter.split(data.X_train, data.y_train)]


def test_each_fold_is_scaled_with_its_own_training_rows_only(tmp_path):
    """Fails on hpsearch 0.1, whose folds were cut from data scaled with the whole training split."""
    imbalanced_frame().to_csv(tmp_path / "d.csv", index=False)
    data = prep(make_cfg("d.csv", tmp_path, target="label", cv=3))
    folds = data.fold_arrays(3, seed=0)
    assert len(folds) == 3
    for X_tr, y_tr, X_va, y_va in folds:
        assert X_tr.dtype == np.float32 and X_va.dtype == np.float32
        np.testing.assert_allclose(X_tr.astype(np.float64).mean(axis=0), 0.0, atol=1e-6)
        np.testing.assert_allclose(X_tr.astype(np.float64).std(axis=0), 1.0, atol=1e-5)
        assert len(X_tr) == len(y_tr) and len(X_va) == len(y_va)
        assert len(y_tr) + len(y_va) == len(data.y_train)
    # the old way is measurably different: the held-out rows shifted every training fold's scaling
    worst = max(np.abs(X.astype(np.float64).mean(axis=0)).max() for X in _leaky_folds(data, 3, 0))
    assert worst > 1e-3


def test_folds_are_the_rows_of_stratified_kfold_and_valid_uses_the_fold_statistics(tmp_path):
    from sklearn.model_selection import StratifiedKFold

    imbalanced_frame().to_csv(tmp_path / "d.csv", index=False)
    data = prep(make_cfg("d.csv", tmp_path, target="label", cv=4))
    splits = StratifiedKFold(n_splits=4, shuffle=True, random_state=7).split(data.X_train_raw, data.y_train)
    for (tr, va), fold in zip(splits, data.fold_arrays(4, seed=7)):
        np.testing.assert_array_equal(fold.y_train, data.y_train[tr])
        np.testing.assert_array_equal(fold.y_valid, data.y_train[va])
        raw_tr, raw_va = data.X_train_raw[tr], data.X_train_raw[va]
        expected = (raw_va - raw_tr.mean(axis=0)) / raw_tr.std(axis=0)
        np.testing.assert_allclose(fold.X_valid, expected, rtol=1e-4, atol=1e-5)
    # seeded: the same seed gives the same folds, another seed others
    a, b, c = data.fold_arrays(4, 1), data.fold_arrays(4, 1), data.fold_arrays(4, 2)
    np.testing.assert_array_equal(a[0].X_train, b[0].X_train)
    assert not np.array_equal(a[0].y_valid, c[0].y_valid) or not np.array_equal(a[0].X_valid, c[0].X_valid)


def test_regression_folds_use_kfold(tmp_path):
    from sklearn.model_selection import KFold

    data = prep(make_cfg("sklearn:diabetes", tmp_path, cv=3))
    splits = KFold(n_splits=3, shuffle=True, random_state=0).split(data.X_train_raw)
    for (tr, _), fold in zip(splits, data.fold_arrays(3, seed=0)):
        np.testing.assert_array_equal(fold.y_train, data.y_train[tr])
        np.testing.assert_allclose(fold.X_train.astype(np.float64).mean(axis=0), 0.0, atol=1e-6)


def test_raw_training_rows_and_fit_preprocessor(tmp_path):
    imbalanced_frame().to_csv(tmp_path / "d.csv", index=False)
    data = prep(make_cfg("d.csv", tmp_path, target="label"))
    assert data.X_train_raw.shape == data.X_train.shape and data.X_train_raw.dtype == np.float64
    np.testing.assert_allclose(data.preprocessor.transform(data.X_train_raw), data.X_train, atol=1e-6)
    rows = data.X_train_raw[:50]
    pre = data.fit_preprocessor(rows)
    assert pre.classes == data.preprocessor.classes and pre.feature_names == data.preprocessor.feature_names
    assert pre.task == data.task and pre.n_features == 3
    np.testing.assert_allclose(pre.mean, rows.mean(axis=0))
    np.testing.assert_allclose(pre.transform(rows).astype(np.float64).mean(axis=0), 0.0, atol=1e-6)
    assert Preprocessor.from_json(pre.to_json()) == pre  # stored with models in the same JSON form
    assert data.fit_preprocessor(data.X_train_raw) == data.preprocessor


def test_scaler_is_the_same_step_for_a_pipeline(tmp_path):
    from sklearn.base import clone
    from sklearn.preprocessing import StandardScaler

    df = imbalanced_frame()
    df["const"] = 3.0
    df.to_csv(tmp_path / "d.csv", index=False)
    data = prep(make_cfg("d.csv", tmp_path, target="label"))
    step = data.scaler()
    assert isinstance(step, StandardScaler) and not hasattr(step, "mean_")  # unfitted
    fitted = clone(step).fit(data.X_train_raw)
    np.testing.assert_allclose(fitted.transform(data.X_train_raw), data.X_train, atol=1e-5)
    raw = prep(make_cfg("d.csv", tmp_path, target="label", scale="none"))
    assert raw.scaler() == "passthrough"
    for fold in raw.fold_arrays(3, seed=0):
        assert fold.X_train.dtype == np.float32 and fold.X_train[:, 2].min() >= 100  # unscaled
