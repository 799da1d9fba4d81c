"""The scikit-learn engines: every candidate stored as a trial as it finishes, resume, failures."""

from __future__ import annotations

import numpy as np
import optuna
import pytest
from optuna.trial import TrialState

from hpsearch.config import parse_study_config
from hpsearch.errors import StudyFailedError, UserError
from hpsearch.records import STUDY, TRIAL
from hpsearch.study import run_study


def _cfg(name: str, engine: str = "random", **over):
    d = {
        "name": name,
        "data": {"source": "sklearn:iris", "split": {"valid": 0.2, "test": 0.2, "seed": 0}},
        "model": {"builder": "mlp", "fixed": {"optimizer": "adam"}},
        "space": {"n_neurons": {"int": [4, 16]}, "learning_rate": {"float": [0.005, 0.05], "log": True}},
        "train": {"epochs": 2, "batch_size": 16, "early_stopping": {"patience": 2}},
        "search": {"engine": engine, "n_trials": 3, "cv": 2, "seed": 1},
    }
    for k, v in over.items():
        d[k] = {**d.get(k, {}), **v} if isinstance(v, dict) and k != "space" else v
    return parse_study_config(d)


def test_random_records_every_candidate_with_fold_scores(sqlite_url, tmp_path):
    res = run_study(_cfg("rnd"), storage=sqlite_url, artifacts=str(tmp_path / "art"), progress=False)
    study = optuna.load_study(study_name="rnd", storage=sqlite_url)
    trials = study.get_trials()
    assert len(trials) == 3 and all(t.state == TrialState.COMPLETE for t in trials)
    for t in trials:
        folds = t.user_attrs[TRIAL.FOLD_SCORES]
        assert len(folds) == 2
        assert t.value == pytest.approx(np.mean(folds))
        assert 1 <= t.user_attrs[TRIAL.EPOCHS] <= 2
        assert t.user_attrs[TRIAL.FIT_TIME] > 0
        assert t.user_attrs[TRIAL.ENGINE] == "random"
        assert set(t.params) == {"n_neurons", "learning_rate"}
        # the fold-mean validation accuracy per epoch is the trial's learning curve
        assert 1 <= len(t.intermediate_values) <= 2
        assert all(0.0 <= v <= 1.0 for v in t.intermediate_values.values())
        assert isinstance(t.params["n_neurons"], int)
    assert sorted(t.user_attrs[TRIAL.CANDIDATE] for t in trials) == [0, 1, 2]
    assert study.user_attrs[STUDY.ENGINE] == "random"
    assert 0.0 <= study.user_attrs[STUDY.TEST_SCORE] <= 1.0
    assert study.user_attrs[STUDY.BEST_MODEL_ARTIFACT]
    assert res.best_trial == study.best_trial.number
    assert res.rows[0]["rank"] == 1 and res.rows[0]["value"] == pytest.approx(study.best_value)


def test_candidates_match_plain_randomized_search(sqlite_url, tmp_path):
    """The recording wrapper evaluates exactly RandomizedSearchCV's candidates."""
    from sklearn.model_selection import ParameterSampler

    cfg = _cfg("same")
    run_study(cfg, storage=sqlite_url, artifacts=str(tmp_path / "art"), progress=False)
    expected = list(ParameterSampler(cfg.search_space().to_sklearn_distributions(), 3, random_state=1))
    trials = sorted(optuna.load_study(study_name="same", storage=sqlite_url).get_trials(),
                    key=lambda t: t.user_attrs[TRIAL.CANDIDATE])
    for t, p in zip(trials, expected):
        assert t.params["n_neurons"] == int(p["n_neurons"])
        assert t.params["learning_rate"] == pytest.approx(float(p["learning_rate"]))


def test_interrupted_study_resumes_without_duplicates(sqlite_url, tmp_path, monkeypatch):
    counter = tmp_path / "builds"
    monkeypatch.setenv("HPS_COUNTER_FILE", str(counter))
    monkeypatch.setenv("HPS_INTERRUPT_AT", "5")  # 2 folds per candidate: dies in candidate 2
    monkeypatch.syspath_prepend(str(__import__("pathlib").Path(__file__).parent))
    cfg = _cfg("resume", model={"builder": "engine_builders:build_interrupts", "fixed": {}})
    with pytest.raises(KeyboardInterrupt):
        run_study(cfg, storage=sqlite_url, artifacts=str(tmp_path / "art"), progress=False)
    study = optuna.load_study(study_name="resume", storage=sqlite_url)
    assert len(study.get_trials()) == 2  # stored as each finished, not at the end
    with pytest.raises(UserError, match="--resume"):
        run_study(cfg, storage=sqlite_url, artifacts=str(tmp_path / "art"), progress=False)
    monkeypatch.setenv("HPS_INTERRUPT_AT", "0")
    counter.write_text("0")
    run_study(cfg, storage=sqlite_url, artifacts=str(tmp_path / "art"), progress=False, resume=True)
    # only the missing candidate was trained (3 folds) + the refit of the best
    assert int(counter.read_text()) == 2 + 1
    trials = optuna.load_study(study_name="resume", storage=sqlite_url).get_trials()
    assert sorted(t.user_attrs[TRIAL.CANDIDATE] for t in trials) == [0, 1, 2]
    res = run_study(cfg, storage=sqlite_url, artifacts=str(tmp_path / "art"), progress=False)
    assert res.already_complete and len(res.rows) == 3


def test_grid_covers_the_grid(sqlite_url, tmp_path):
    cfg = _cfg("grid", "grid", space={"n_neurons": {"choice": [4, 8]},
                                      "learning_rate": {"float": [0.01, 0.05], "log": True, "grid": 2}},
               train={"epochs": 2})
    res = run_study(cfg, storage=sqlite_url, artifacts=str(tmp_path / "art"), progress=False)
    study = optuna.load_study(study_name="grid", storage=sqlite_url)
    seen = {(t.params["n_neurons"], round(t.params["learning_rate"], 6)) for t in study.get_trials()}
    assert seen == {(4, 0.01), (4, 0.05), (8, 0.01), (8, 0.05)}
    assert res.n_complete == 4


def test_halving_uses_epochs_as_resource(sqlite_url, tmp_path):
    cfg = _cfg("halv", "halving", train={"epochs": 4, "early_stopping": None},
               search={"n_trials": 4, "factor": 2, "min_resource": 2, "cv": 2})
    run_study(cfg, storage=sqlite_url, artifacts=str(tmp_path / "art"), progress=False)
    trials = optuna.load_study(study_name="halv", storage=sqlite_url).get_trials()
    resources = [t.user_attrs[TRIAL.N_RESOURCES] for t in trials]
    assert min(resources) == 2 and max(resources) > 2
    # later rungs train for more epochs, and fewer candidates reach them
    assert resources.count(2) > resources.count(max(resources))
    for t in trials:
        assert t.user_attrs[TRIAL.EPOCHS] == t.user_attrs[TRIAL.N_RESOURCES]
    # only the last rung competes for the best (as in sklearn); earlier rungs are stopped (PRUNED)
    last = max(resources)
    for t in trials:
        expected = TrialState.COMPLETE if t.user_attrs[TRIAL.N_RESOURCES] == last else TrialState.PRUNED
        assert t.state == expected
    study = optuna.load_study(study_name="halv", storage=sqlite_url)
    assert study.best_trial.user_attrs[TRIAL.N_RESOURCES] == last
    assert study.user_attrs["refit_epochs"] <= last


def test_failed_candidate_is_recorded_and_search_goes_on(sqlite_url, tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(__import__("pathlib").Path(__file__).parent))
    cfg = _cfg("fails", "grid", model={"builder": "engine_builders:build_fails_on_width", "fixed": {}},
               space={"n_neurons": {"choice": [8, 13, 16]}}, train={"epochs": 2})
    res = run_study(cfg, storage=sqlite_url, artifacts=str(tmp_path / "art"), progress=False)
    trials = optuna.load_study(study_name="fails", storage=sqlite_url).get_trials()
    by_width = {t.params["n_neurons"]: t for t in trials}
    assert by_width[13].state == TrialState.FAIL
    assert "width 13 is unlucky" in by_width[13].user_attrs[TRIAL.FAILURE]
    assert by_width[8].state == by_width[16].state == TrialState.COMPLETE
    assert res.n_failed == 1 and res.n_complete == 2


def test_every_candidate_failing_stops_with_a_clear_error(sqlite_url, tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(__import__("pathlib").Path(__file__).parent))
    cfg = _cfg("allfail", model={"builder": "engine_builders:build_always_fails", "fixed": {}},
               space={"n_neurons": {"int": [4, 8]}}, search={"max_failures_in_row": 2})
    with pytest.raises(StudyFailedError, match="failed in a row"):
        run_study(cfg, storage=sqlite_url, artifacts=str(tmp_path / "art"), progress=False)
    trials = optuna.load_study(study_name="allfail", storage=sqlite_url).get_trials()
    assert len(trials) == 2 and all(t.state == TrialState.FAIL for t in trials)
    assert "never works" in trials[0].user_attrs[TRIAL.FAILURE]


def test_regression_study_stores_positive_mse(sqlite_url, tmp_path):
    cfg = parse_study_config({
        "name": "reg", "data": {"source": "sklearn:diabetes", "max_rows": 200},
        "model": {"fixed": {"optimizer": "adam"}},
        "space": {"n_neurons": {"int": [4, 16]}, "learning_rate": {"float": [0.01, 0.05], "log": True}},
        "train": {"epochs": 3, "batch_size": 16},
        "search": {"engine": "random", "n_trials": 2, "cv": 2, "metric": "mse"},
    })
    run_study(cfg, storage=sqlite_url, artifacts=str(tmp_path / "art"), progress=False)
    study = optuna.load_study(study_name="reg", storage=sqlite_url)
    assert study.direction.name == "MINIMIZE"
    assert all(t.value > 0 for t in study.get_trials())
    assert study.user_attrs["test_metrics"]["mse"] > 0
