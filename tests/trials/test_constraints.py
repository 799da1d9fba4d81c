"""search.constraints: limits checked on the built model before any epoch; an infeasible trial is
stored with its constraint values (Optuna's constraints support) and costs no training."""

from __future__ import annotations

import optuna

from hpsearch.records import TRIAL
from hpsearch.study.run import run_study
from hpsearch.study.validate import parse_study_config
from tests.study_dicts import MINIMAL, one_line_error, with_


def test_sklearn_engines_refuse_constraints():
    d = with_(MINIMAL, search={"engine": "random", "n_trials": 2, "constraints": {"max_params": 10}})
    assert "search.constraints: engine random does not check limits" in one_line_error(
        parse_study_config, d, where="s.yaml")


def test_an_infeasible_trial_is_not_trained_and_never_best(sqlite_url, tmp_path):
    cfg = parse_study_config({
        "name": "lim", "data": {"source": "sklearn:iris", "split": {"valid": 0.25, "test": 0.2, "seed": 0}},
        "model": {"builder": "mlp", "fixed": {"optimizer": "adam", "n_hidden": 1, "learning_rate": 0.05}},
        "space": {"n_neurons": {"int": [2, 64]}},
        "train": {"epochs": 2, "batch_size": 16, "early_stopping": None},
        # iris: 4 features, 3 classes -> 8 * n_neurons + 3 weights; n_neurons <= 24 fits 200
        "search": {"engine": "optuna", "n_trials": 3, "seed": 0, "sampler": "tpe", "pruner": "none",
                   "constraints": {"max_params": 200, "max_latency_ms": 1000.0},
                   "enqueue": [{"n_neurons": 60}, {"n_neurons": 8}]},
    })
    res = run_study(cfg, storage=sqlite_url, artifacts=str(tmp_path / "a"))
    trials = optuna.load_study(study_name="lim", storage=sqlite_url).get_trials()
    big = trials[0]
    assert big.state.name == "PRUNED" and TRIAL.EPOCHS not in big.user_attrs and not big.intermediate_values
    assert big.user_attrs[TRIAL.INFEASIBLE].startswith("infeasible: n_params 483 > max_params 200")
    assert big.user_attrs[TRIAL.CONSTRAINTS][0] == 283 and big.constraints["max_params"] == 283
    ok = trials[1]
    assert ok.state.name == "COMPLETE" and ok.user_attrs[TRIAL.CONSTRAINTS][0] == 67 - 200
    assert ok.constraints["max_params"] == 67 - 200 and ok.constraints["max_latency_ms"] < 0
    assert 0 < ok.user_attrs[TRIAL.LATENCY_MS] < 1000
    assert res.best_params["n_neurons"] <= 24
