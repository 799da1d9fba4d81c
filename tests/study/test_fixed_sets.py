"""Study files on real splits: ``data.valid`` / ``data.test`` naming their own files, a builder module
beside the study file, compile knobs for an uncompiled user model (issue 22)."""

from __future__ import annotations

import sys
import textwrap

import numpy as np
import pandas as pd
import pytest
import yaml
from sklearn.datasets import load_iris

import hpsearch
from hpsearch.cli import main
from hpsearch.data.prepare import prepare_data
from hpsearch.errors import DataError
from hpsearch.records import STUDY
from hpsearch.study.validate import load_study_config


def _tables(folder, n_test=30, n_valid=0):
    """iris as train.csv, test.csv (the last ``n_test`` rows of a seeded shuffle) and maybe valid.csv."""
    X, y = load_iris(return_X_y=True)
    df = pd.DataFrame(X, columns=["a", "b", "c", "d"]).assign(label=y).sample(frac=1.0, random_state=0)
    test, valid, train = df[:n_test], df[n_test:n_test + n_valid], df[n_test + n_valid:]
    train.to_csv(folder / "train.csv", index=False)
    test.to_csv(folder / "test.csv", index=False)
    if n_valid:
        valid.to_csv(folder / "valid.csv", index=False)
    return train, valid, test


def _study(folder, **data):
    doc = {"name": "fixed", "data": {"source": "train.csv", "target": "label", **data},
           "space": {"n_neurons": {"int": [4, 8]}}, "train": {"epochs": 2, "pack": 1},
           "search": {"n_trials": 2, "pruner": "none"}}
    (folder / "s.yaml").write_text(yaml.safe_dump(doc))
    return folder / "s.yaml"


def test_fixed_sets_are_used_as_they_are(tmp_path):
    train, valid, _ = _tables(tmp_path, n_test=30, n_valid=20)
    cfg = load_study_config(_study(tmp_path, test="test.csv", valid="valid.csv"))
    data = prepare_data(cfg, 1)
    # both given: every row of train.csv trains, in its order; the other files are the other parts
    np.testing.assert_array_equal(data.X_train_raw, train[["a", "b", "c", "d"]].to_numpy())
    np.testing.assert_array_equal(data.X_valid_raw, valid[["a", "b", "c", "d"]].to_numpy())
    assert (len(data.y_test), data.summary["test_rows"]) == (30, 30)
    assert data.summary["test_source"].startswith("data.test ")
    # only the test file given: data.split.valid of train.csv's rows is the validation split
    data = prepare_data(load_study_config(_study(tmp_path, test="test.csv", split={"valid": 0.25})), 1)
    assert (len(data.y_train), len(data.y_valid), len(data.y_test)) == (75, 25, 30)


def test_a_fixed_set_with_other_columns_is_one_line(tmp_path):
    _tables(tmp_path)
    pd.read_csv(tmp_path / "test.csv").rename(columns={"d": "e"}).to_csv(tmp_path / "test.csv", index=False)
    with pytest.raises(DataError, match=r"^data\.test .*test\.csv: columns .* differ from data\.source's") as info:
        prepare_data(load_study_config(_study(tmp_path, test="test.csv")), 1)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("part", ["valid", "test"])
def test_a_missing_part_file_is_named_by_its_own_field(tmp_path, part):
    """A missing data.valid / data.test file was reported as ``data.source ...: file not found``."""
    _tables(tmp_path)
    cfg = load_study_config(_study(tmp_path, **{part: f"no{part}.csv"}))
    with pytest.raises(DataError, match=rf"^data\.{part} .*no{part}\.csv: file not found"):
        prepare_data(cfg, 1)


def test_the_test_score_is_the_chosen_model_on_the_test_file(tmp_path, capsys):
    _, _, test = _tables(tmp_path)
    path = _study(tmp_path, test="test.csv")
    url = f"sqlite:///{tmp_path / 'f.db'}"
    result = hpsearch.run_study(path, storage=url, artifacts=str(tmp_path / "art"))
    model = hpsearch.load_best("fixed", storage=url, artifacts=str(tmp_path / "art"))
    by_hand = float(np.mean(model.predict(test[["a", "b", "c", "d"]]) == test["label"].to_numpy()))
    assert result.test_score == pytest.approx(by_hand)
    assert main(["best", "fixed", "--storage", url]) == 0
    assert "on the held-out test split" in capsys.readouterr().out


def test_best_says_when_a_study_has_no_test_split(tmp_path, capsys):
    _tables(tmp_path)
    path = _study(tmp_path, split={"test": 0.0})
    url = f"sqlite:///{tmp_path / 'n.db'}"
    hpsearch.run_study(path, storage=url, artifacts=str(tmp_path / "art"))
    assert main(["best", "fixed", "--storage", url]) == 0
    assert "test score: none (no test split: data.split.test is 0)" in capsys.readouterr().out
    import optuna

    assert optuna.load_study(study_name="fixed", storage=url).user_attrs[STUDY.TEST_SCORE] is None


def test_a_builder_beside_the_study_file_is_found_and_compiled_with_the_searched_knobs(tmp_path):
    (tmp_path / "beside_builders.py").write_text(textwrap.dedent("""
        import keras

        def build(width=4, meta=None):
            return keras.Sequential([keras.Input((meta["n_features_in_"],)), keras.layers.Dense(width, "relu"),
                                     keras.layers.Dense(meta["n_classes_"], "softmax")])
    """))
    doc = {"name": "beside", "data": {"source": "sklearn:iris"}, "model": {"builder": "beside_builders:build"},
           "space": {"width": {"int": [2, 4]}, "learning_rate": {"float": [1e-3, 1e-1], "log": True},
                     "optimizer": {"choice": ["adam", "sgd"]}},
           "train": {"epochs": 1, "pack": 1}, "search": {"n_trials": 2, "pruner": "none"}}
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(doc))
    try:
        result = hpsearch.run_study(tmp_path / "s.yaml", storage=f"sqlite:///{tmp_path / 'b.db'}",
                                    artifacts=str(tmp_path / "art"))
        assert result.n_complete == 2 and str(tmp_path) in sys.path
        assert {"learning_rate", "optimizer", "width"} == set(result.best_params)
    finally:
        sys.modules.pop("beside_builders", None)
        if str(tmp_path) in sys.path:
            sys.path.remove(str(tmp_path))
