"""The selection note (hpsearch.study.selection): trials within one standard error of the best are
said in one line and a study attribute; with search.ensemble the best K averaged are scored on test."""

from __future__ import annotations

import math

import optuna
import pytest

from hpsearch.records import STUDY
from hpsearch.storage.artifacts import artifact_store_for
from hpsearch.study.run import run_study
from hpsearch.study.selection import std_error
from hpsearch.study.validate import parse_study_config
from tests.observers import Lines


def test_the_standard_error_of_a_proportion():
    assert std_error(0.96, 360) == pytest.approx(0.01033, abs=1e-5)  # the anchors' digits split
    assert std_error(1.0, 30) == 0.0 and std_error(0.5, 100) == 0.05


def _study(name: str, metric: str, ensemble: int | None) -> dict:
    return {
        "name": name, "data": {"source": "sklearn:iris", "split": {"valid": 0.25, "test": 0.2, "seed": 0}},
        "model": {"builder": "mlp", "fixed": {"optimizer": "adam", "n_hidden": 1}},
        "space": {"n_neurons": {"int": [4, 16]}, "learning_rate": {"float": [0.005, 0.05], "log": True}},
        "train": {"epochs": 2, "batch_size": 16, "early_stopping": None},
        "search": {"engine": "optuna", "n_trials": 4, "seed": 0, "sampler": "random", "pruner": "none",
                   "metric": metric, "ensemble": ensemble},
    }


def test_trials_within_noise_are_said_and_the_ensemble_is_scored_on_test(sqlite_url, tmp_path):
    from hpsearch.results.ensemble import ensemble_scores

    art, obs = str(tmp_path / "a"), Lines()
    res = run_study(parse_study_config(_study("sel", "accuracy", 3)), storage=sqlite_url, artifacts=art, observer=obs)
    study = optuna.load_study(study_name="sel", storage=sqlite_url)
    sel = study.user_attrs[STUDY.SELECTION]
    values = [t.value for t in study.get_trials() if t.value is not None]
    best, n = max(values), sel["valid_rows"]
    assert n == 38 and sel["best_value"] == best and sel["std_error"] == pytest.approx(math.sqrt(best * (1 - best) / n))
    assert sel["within_one_se"] == sum(best - v <= sel["std_error"] + 1e-12 for v in values)
    # the ensemble's test score is what `hpsearch best --ensemble 3` scores, beside the best model's
    want = ensemble_scores(study, artifact_store_for(sqlite_url, art), 3)
    assert sel["ensemble"] == 3 and sel["ensemble_test_score"] == pytest.approx(want["test"])
    assert res.test_score == pytest.approx(want["best_test"])
    said = [line for line in obs.lines if "selection:" in line]
    assert len(said) == 1 and said[0] == f"hpsearch: {sel['line']}" and "search.ensemble" in said[0]


def test_a_metric_that_is_not_a_proportion_says_nothing(sqlite_url, tmp_path):
    obs = Lines()
    run_study(parse_study_config(_study("loss", "loss", None)), storage=sqlite_url,
              artifacts=str(tmp_path / "a"), observer=obs)
    study = optuna.load_study(study_name="loss", storage=sqlite_url)
    assert STUDY.SELECTION not in study.user_attrs and not any("selection:" in line for line in obs.lines)
