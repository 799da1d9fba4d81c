"""Conditional spaces: `when:` and `per_layer:` in the study file, sampled define-by-run by Optuna
and as list-of-dict grids / distributions by the scikit-learn engines; inactive parameters are not
stored; bad conditions are one-line errors."""

from __future__ import annotations

import optuna
import pytest

from hpsearch.spec.space import SearchSpace
from hpsearch.study.run import run_study
from hpsearch.study.validate import parse_study_config
from tests.study_dicts import MINIMAL, one_line_error, with_

SPACE = {
    "optimizer": {"choice": ["sgd", "adam"]},
    "momentum": {"float": [0.0, 0.99], "when": {"optimizer": "sgd"}},
    "n_hidden": {"int": [1, 2]},
    "n_neurons": {"int": [4, 12], "per_layer": "n_hidden"},
}


def _check_stored(params: dict) -> None:
    assert ("momentum" in params) == (params["optimizer"] == "sgd")
    layers = sorted(k for k in params if k.startswith("n_neurons"))
    assert layers == [f"n_neurons_{i}" for i in range(params["n_hidden"])]


def test_branches_hold_only_active_parameters():
    space = SearchSpace.from_dict({**SPACE, "momentum": {"float": [0.0, 0.9], "grid": 2, "when": {"optimizer": "sgd"}}})
    grid = space.to_sklearn_grid()
    assert isinstance(grid, list) and len(grid) == 4  # optimizer x n_hidden
    for sub in grid:
        _check_stored({k: v[0] for k, v in sub.items()})
    assert space.builder_params({"n_hidden": 2, "n_neurons_0": 4, "n_neurons_1": 8}) == {
        "n_hidden": 2, "n_neurons": [4, 8]}
    assert set(space.to_optuna_distributions()) == {"optimizer", "momentum", "n_hidden", "n_neurons_0", "n_neurons_1"}
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(8):
        trial = study.ask()
        sampled = space.suggest(trial)
        _check_stored(trial.params)
        assert len(sampled["n_neurons"]) == sampled["n_hidden"]


@pytest.mark.parametrize(("space", "expected"), [
    ({"n_neurons": {"int": [1, 4], "when": {"optimiser": "sgd"}}},
     "space.n_neurons.when: unknown parameter 'optimiser'; use one of"),
    ({"optimizer": {"choice": ["adam", "sgd"]}, "momentum": {"float": [0, 1], "when": {"optimizer": "sdg"}}},
     "space.momentum.when.optimizer: 'sdg' is a value optimizer never takes"),
    ({"n_neurons": {"int": [1, 4], "when": {"dropout": 0.1}}, "dropout": {"float": [0, 0.5], "when": {"n_neurons": 2}}},
     "the conditions form a cycle (n_neurons -> dropout -> n_neurons)"),
    ({"n_neurons": {"int": [1, 4], "per_layer": "layers"}}, "space.n_neurons.per_layer: unknown parameter 'layers'"),
    ({"dropout": {"float": [0, 0.5]}, "n_neurons": {"int": [1, 4], "per_layer": "dropout"}},
     "space.n_neurons.per_layer: dropout must be an integer parameter"),
])
def test_bad_conditions_are_one_line_errors(space, expected):
    assert expected in one_line_error(parse_study_config, with_(MINIMAL, space=space), where="s.yaml")


def _cfg(name: str, engine: str):
    return parse_study_config({
        "name": name, "data": {"source": "sklearn:iris", "split": {"valid": 0.25, "test": 0.2, "seed": 0}},
        "model": {"builder": "mlp", "fixed": {"learning_rate": 0.05}}, "space": SPACE,
        "train": {"epochs": 1, "batch_size": 32, "early_stopping": None},
        "search": {"engine": engine, "n_trials": 3, "seed": 1,
                   **({"sampler": "random", "pruner": "none"} if engine == "optuna" else {"cv": 2})},
    })


@pytest.mark.parametrize("engine", ["optuna", "random"])
def test_a_conditional_study_runs_and_stores_only_active_parameters(engine, sqlite_url, tmp_path):
    import hpsearch

    res = run_study(_cfg(f"cond-{engine}", engine), storage=sqlite_url, artifacts=str(tmp_path / "a"))
    trials = optuna.load_study(study_name=f"cond-{engine}", storage=sqlite_url).get_trials()
    assert res.n_complete == 3
    for t in trials:
        _check_stored(t.params)
    best = hpsearch.load_best(f"cond-{engine}", storage=sqlite_url, artifacts=str(tmp_path / "a"))
    widths = [layer.units for layer in best.model_.layers if layer.name.startswith("hidden_")]
    assert widths == [res.best_params[f"n_neurons_{i}"] for i in range(res.best_params["n_hidden"])]
