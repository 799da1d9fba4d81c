"""``hpsearch.load_split``: the study's own train / valid / test rows, as its run prepared them."""

from __future__ import annotations

import numpy as np
import optuna
import pandas as pd
import pytest
import yaml
from sklearn.datasets import load_iris

import hpsearch
from hpsearch.data.sources.memory import content_key
from hpsearch.errors import DataError
from hpsearch.records import STUDY


def _run(tmp_path):
    X, y = load_iris(return_X_y=True)
    names = np.array(["setosa", "versicolor", "virginica"])
    pd.DataFrame(X, columns=["a", "b", "c", "d"]).assign(kind=names[y]).to_csv(tmp_path / "iris.csv", index=False)
    doc = {"name": "split", "data": {"source": "iris.csv", "target": "kind",
                                     "split": {"valid": 0.2, "test": 0.2, "seed": 7}},
           "space": {"n_neurons": {"int": [4, 8]}}, "train": {"epochs": 2, "pack": 1},
           "search": {"n_trials": 1, "pruner": "none", "seed": 0}}
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(doc))
    url = f"sqlite:///{tmp_path / 's.db'}"
    result = hpsearch.run_study(tmp_path / "s.yaml", storage=url, artifacts=str(tmp_path / "art"))
    return url, result


def test_load_split_gives_the_rows_the_study_trained_and_was_scored_on(tmp_path, monkeypatch):
    url, result = _run(tmp_path)
    monkeypatch.chdir(tmp_path.parent)  # relative data paths resolve from the stored study file's folder
    split = hpsearch.load_split("split", storage=url)
    X_train, y_train, X_valid, y_valid, X_test, y_test = split
    summary = optuna.load_study(study_name="split", storage=url).user_attrs[STUDY.DATA_SUMMARY]
    assert (len(y_train), len(y_valid), len(y_test)) == (90, 30, 30)
    assert (len(y_train), len(y_valid), len(y_test)) == (summary["train_rows"], summary["valid_rows"],
                                                         summary["test_rows"])
    assert split.feature_names == ["a", "b", "c", "d"] and split.classes == ["setosa", "versicolor", "virginica"]
    assert set(y_test) <= {"setosa", "versicolor", "virginica"}  # the data's own labels
    # the same rows: the run's recorded hashes (of the encoded labels), the scaling fitted on the training
    # rows, and the recorded test score equal to the best model on load_split's test rows
    pre = split.classes
    encode = {c: i for i, c in enumerate(pre)}
    for name, X, y in (("train", X_train, y_train), ("valid", X_valid, y_valid), ("test", X_test, y_test)):
        assert content_key(X, np.array([encode[v] for v in y])) == summary["split_sha256"][name]
    best = hpsearch.load_best("split", storage=url, artifacts=str(tmp_path / "art"))
    np.testing.assert_allclose(best.preprocessor_.mean, X_train.mean(axis=0), rtol=1e-6)
    assert result.test_score == pytest.approx(float(np.mean(best.predict(X_test) == y_test)))


def test_load_split_refuses_rows_that_changed_since_the_run(tmp_path):
    url, _ = _run(tmp_path)
    df = pd.read_csv(tmp_path / "iris.csv")
    df.loc[0, "a"] += 1.0
    df.to_csv(tmp_path / "iris.csv", index=False)
    with pytest.raises(DataError, match=r"^study 'split': the \w+ rows made again from .* differ .* changed") as info:
        hpsearch.load_split("split", storage=url)
    assert "\n" not in str(info.value)
