"""A study with ``search.seed`` run twice from scratch in one process gives the same trials: numbers,
parameters, states, values and curves (to 1e-6 on CPU), packed (refilled slots, TPE asking between
tells, Hyperband pruning, dropout) and unpacked (issue 20 item 3)."""

from __future__ import annotations

import math

import optuna

from hpsearch.records import TRIAL
from hpsearch.study.run import run_study
from hpsearch.study.validate import parse_study_config


def _study(pack: int, n_trials: int, epochs: int) -> object:
    return parse_study_config({
        "name": "repro",
        "data": {"source": "sklearn:iris", "split": {"valid": 0.25, "test": 0.2, "seed": 0}},
        "model": {"builder": "mlp", "fixed": {"optimizer": "adam", "n_hidden": 1}},
        "space": {"n_neurons": {"int": [2, 12]}, "learning_rate": {"float": [1e-3, 0.1], "log": True},
                  "dropout": {"float": [0.0, 0.3]}},
        "train": {"epochs": epochs, "batch_size": 16, "pack": pack, "early_stopping": {"patience": 2}},
        "search": {"engine": "optuna", "n_trials": n_trials, "seed": 5, "sampler": "tpe", "pruner": "hyperband",
                   "min_resource": 1},
    })


def _run(tmp_path, tag: str, pack: int, n_trials: int, epochs: int) -> list[tuple]:
    url = f"sqlite:///{tmp_path / tag}.db"
    run_study(_study(pack, n_trials, epochs), storage=url, artifacts=str(tmp_path / f"{tag}-art"))
    return [(t.number, t.state.name, t.params, t.value, t.intermediate_values, t.user_attrs.get(TRIAL.PACK_SLOT))
            for t in optuna.load_study(study_name="repro", storage=url).get_trials()]


def _same(a: list[tuple], b: list[tuple]) -> None:
    assert len(a) == len(b)
    for (n, state, params, value, curve, _), (n2, state2, params2, value2, curve2, _) in zip(a, b):
        assert (n, state, params) == (n2, state2, params2)
        assert (value is None) == (value2 is None) and (value is None or math.isclose(value, value2, abs_tol=1e-6))
        assert sorted(curve) == sorted(curve2)
        assert all(math.isclose(curve[e], curve2[e], abs_tol=1e-6) for e in curve), n


def test_a_packed_study_run_twice_gives_the_same_trials(tmp_path):
    first = _run(tmp_path, "a", pack=4, n_trials=8, epochs=5)
    _same(first, _run(tmp_path, "b", pack=4, n_trials=8, epochs=5))
    assert {t[5] for t in first} == {0, 1, 2, 3}  # 8 trials through 4 slots: refilled
    assert {"PRUNED", "COMPLETE"} <= {t[1] for t in first}  # the pruner decided, and it decided the same


def test_an_unpacked_study_run_twice_gives_the_same_trials(tmp_path):
    first = _run(tmp_path, "a", pack=1, n_trials=3, epochs=3)
    _same(first, _run(tmp_path, "b", pack=1, n_trials=3, epochs=3))
    assert all(t[5] is None for t in first)
