"""Every example in studies/ validates; the classic recipe runs end to end on a tiny budget."""

from __future__ import annotations

import json
import math
from pathlib import Path

import optuna
import pytest

from hpsearch.cli import main
from hpsearch.study.validate import load_study_config

pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")

REPO = Path(__file__).resolve().parents[2]
STUDIES = sorted((REPO / "studies").glob("*.yaml"))
#: studies of keras.datasets need Keras' download cache: validated by test_nd_studies.py against a
#: tiny file in that cache's format, not here (Keras reads KERAS_HOME once, at import)
KERAS_STUDIES = [p for p in STUDIES if "keras:" in p.read_text(encoding="utf-8")]


def test_required_examples_exist():
    names = {p.name for p in STUDIES}
    assert {"digits-random.yaml", "digits-grid.yaml", "diabetes-regression.yaml"} <= names


@pytest.mark.parametrize("path", [p for p in STUDIES if p not in KERAS_STUDIES],
                         ids=[p.stem for p in STUDIES if p not in KERAS_STUDIES])
def test_every_study_file_validates(path, capsys):
    cfg = load_study_config(path)
    assert cfg.name == path.stem  # one file, one study name: no accidental clashes in a shared storage
    rc = main(["validate", str(path)])
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert err == "" and out.startswith(f"{path}: ok (study {cfg.name}, engine {cfg.search.engine}")
    assert "rows x" in out  # the data was loaded and checked too


def test_classic_recipe_is_the_random_engine():
    cfg = load_study_config(REPO / "studies" / "digits-random.yaml")
    assert cfg.data.source == "sklearn:digits" and cfg.search.engine == "random" and cfg.search.cv == 3
    assert cfg.space["learning_rate"] == {"float": [3.0e-4, 3.0e-2], "log": True}
    grid = load_study_config(REPO / "studies" / "digits-grid.yaml")
    assert grid.search.engine == "grid" and len(grid.search_space().to_sklearn_grid()) == 3
    reg = load_study_config(REPO / "studies" / "diabetes-regression.yaml")
    assert reg.data.source == "sklearn:diabetes" and reg.search.metric in ("mse", "mae", "rmse", "r2")


@pytest.mark.slow
def test_digits_random_end_to_end_small_budget(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # the default artifact folder lands here
    monkeypatch.delenv("HPSEARCH_STORAGE", raising=False)
    monkeypatch.delenv("HPSEARCH_ARTIFACTS", raising=False)
    url = f"sqlite:///{tmp_path / 'hps.db'}"
    argv = ["run", str(REPO / "studies" / "digits-random.yaml"), "--storage", url,
            "--n-trials", "2", "--epochs", "3", "--no-progress"]

    rc = main(argv)
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert "Traceback" not in out + err
    assert "best trial" in out and "test accuracy" in out

    study = optuna.load_study(study_name="digits-random", storage=url)
    trials = study.get_trials(deepcopy=False)
    assert len(trials) == 2
    for t in trials:
        assert t.state == optuna.trial.TrialState.COMPLETE
        assert set(t.params) == {"n_hidden", "n_neurons", "learning_rate"}
        assert t.params["n_hidden"] in (0, 1, 2, 3) and 1 <= t.params["n_neurons"] <= 99
        assert 3e-4 <= t.params["learning_rate"] <= 3e-2
        assert t.value is not None and 0.0 <= t.value <= 1.0
        ua = t.user_attrs
        assert len(ua["fold_scores"]) == 3 and all(0.0 <= s <= 1.0 for s in ua["fold_scores"])
        assert math.isclose(t.value, sum(ua["fold_scores"]) / 3, rel_tol=1e-6)
        assert ua["fit_time"] > 0
        assert 1 <= ua["epochs_trained"] <= 3
    attrs = study.user_attrs
    assert attrs["engine"] == "random" and attrs["metric"] == "accuracy" and attrs["direction"] == "maximize"
    assert attrs["test_score"] is not None and 0.0 <= attrs["test_score"] <= 1.0
    assert attrs["best_trial_number"] == study.best_trial.number
    assert attrs.get("best_model_artifact_id")
    assert (tmp_path / "hpsearch-artifacts").is_dir()

    # again: the budget is reached, nothing runs, no trial is added
    rc = main(argv)
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert "is complete" in out and "nothing to run" in out
    assert len(optuna.load_study(study_name="digits-random", storage=url).trials) == 2

    # and --json prints one parseable document
    rc = main([*argv, "--json"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    res = json.loads(out)
    assert res["study_name"] == "digits-random" and res["engine"] == "random"
    assert res["n_complete"] == 2 and res["already_complete"] is True
    assert res["test_score"] == pytest.approx(attrs["test_score"])
    assert len(res["rows"]) == 2 and res["best_params"] == study.best_trial.params
    assert len(optuna.load_study(study_name="digits-random", storage=url).trials) == 2
