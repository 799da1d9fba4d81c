"""Compile once (issue 25 item 4): a pack whose members fit the slots of an earlier pack's compiled
model trains in it (:meth:`PackedModel.host` / :meth:`PackedModel.restart`) with no new trace, and
its members train exactly as in a new build. Traces are counted (``keras.Model.train_step`` and
``predict_step`` run in Python only while a function is traced), never timed."""

from __future__ import annotations

import keras
import numpy as np
import optuna
import pytest

from hpsearch.models.mlp import build_mlp
from hpsearch.packing.model import PackedModel, member_spec
from hpsearch.packing.train import PackSettings, train_pack
from hpsearch.records import STUDY, TRIAL
from hpsearch.study.run import run_study
from hpsearch.study.validate import parse_study_config
from tests.data_fixtures import toy_classes
from tests.observers import Lines

META = {"n_features_in_": 8, "target_type_": "multiclass", "n_classes_": 3, "n_outputs_": 1}
FIRST = [  # batch norm, dropout, Adam, momentum, Nesterov, plain SGD; two groups
    {"n_hidden": 1, "n_neurons": 10, "optimizer": "adam", "learning_rate": 0.01, "dropout": 0.2, "batch_norm": True},
    {"n_hidden": 1, "n_neurons": 6, "optimizer": "momentum", "learning_rate": 0.05, "batch_norm": True},
    {"n_hidden": 2, "n_neurons": 8, "optimizer": "sgd", "learning_rate": 0.1},
    {"n_hidden": 2, "n_neurons": 5, "optimizer": "nesterov", "learning_rate": 0.03},
]
SECOND = [  # the same layout (groups in the same order, the same widest member per group), new members
    {"n_hidden": 1, "n_neurons": 4, "optimizer": "momentum", "learning_rate": 0.02, "dropout": 0.1, "batch_norm": True},
    {"n_hidden": 1, "n_neurons": 10, "optimizer": "adam", "learning_rate": 0.003, "dropout": 0.3, "batch_norm": True},
    {"n_hidden": 2, "n_neurons": 3, "optimizer": "adam", "learning_rate": 0.02},
    {"n_hidden": 2, "n_neurons": 8, "optimizer": "sgd", "learning_rate": 0.2},
]


def _data() -> tuple[np.ndarray, ...]:
    return toy_classes()


def _settings() -> PackSettings:
    return PackSettings(epochs=3, batch_size=16, valid_batch=32, metric="accuracy", direction="maximize",
                        patience=10, restore_best=False)


@pytest.fixture
def traces(monkeypatch) -> list[str]:
    """One entry per trace of a pack's train or predict step (a pack's models are named pack*)."""
    seen: list[str] = []

    def counted(real, step: str):
        def run(self, *args):  # (data); JAX: (state, data)
            if self.name.startswith("pack"):
                seen.append(step)
            return real(self, *args)
        return run

    for name in ("train_step", "predict_step"):
        monkeypatch.setattr(keras.Model, name, counted(getattr(keras.Model, name), name))
    return seen


def test_a_reused_model_trains_a_new_pack_as_a_new_build_without_a_trace_and_spares_stay_empty(traces):
    Xt, yt, Xv, yv = _data()
    pm = PackedModel([member_spec(build_mlp, p) for p in FIRST], META, seed=5)
    pm.init_weights([0, 1, 2, 3])
    train_pack(pm, Xt, yt, Xv, yv, _settings())
    assert traces.count("train_step") >= 1 and traces.count("predict_step") >= 1
    before, train_function = len(traces), pm.model.train_function
    second = [member_spec(build_mlp, p) for p in SECOND]
    slots = pm.host(second)
    assert slots == [0, 1, 2, 3]
    pm.restart(slots, second, [10, 11, 12, 13], seed=7)
    reused = train_pack(pm, Xt, yt, Xv, yv, _settings())
    assert len(traces) == before and pm.model.train_function is train_function  # no trace, no compile

    fresh = PackedModel([member_spec(build_mlp, p) for p in SECOND], META, seed=7)
    fresh.init_weights([10, 11, 12, 13])
    new = train_pack(fresh, Xt, yt, Xv, yv, _settings())
    assert len(traces) > before  # a new build traces (the counter counts)
    for r, n in zip(reused, new, strict=True):  # the same layout: bit for bit
        assert r.state == n.state == "COMPLETE" and r.values == n.values
        for got, want in zip(r.weights, n.weights, strict=True):
            np.testing.assert_array_equal(got, want)

    # a third pack of three in the four slots: one spare slot, empty and frozen
    specs = [member_spec(build_mlp, p) for p in (SECOND[3], SECOND[2], SECOND[1])]
    assert pm.host(specs[:1]) is None  # three of four slots would compute for nothing
    assert pm.host([member_spec(build_mlp, {**SECOND[3], "n_neurons": 9})] * 2) is None  # wider than its group
    assert pm.host([member_spec(build_mlp, {**SECOND[3], "n_hidden": 3})] * 2) is None  # no such group
    slots = pm.host(specs)
    assert slots == [2, 3, 0]
    pm.restart(slots, specs, [4, 5, 6], seed=1)
    assert pm.empty == {1}
    before = len(traces)
    res = train_pack(pm, Xt, yt, Xv, yv, _settings())
    assert len(traces) == before
    assert res[1].state == "EMPTY" and not res[1].values
    assert all(not np.any(w) for w in pm.member_weights(1))  # zero and frozen: it never trained
    for slot in (0, 2, 3):  # the members train (the study test below compares them with a rebuild)
        assert res[slot].state == "COMPLETE" and len(res[slot].values) == 3


def _trial(depth: int, width: int, lr: float) -> dict:
    return {"n_hidden": depth, "n_neurons": width, "learning_rate": lr}


#: pack 1 (depth 1) trains; pack 2 (depth 2) fits none of its slots, so it waits and builds; pack 3
#: (depth 1 again, its widest member as wide as pack 1's) fits pack 1's kept model: reused
ENQUEUED = ([_trial(1, w, lr) for w, lr in ((8, 0.05), (6, 0.04), (8, 0.06), (5, 0.05))]
            + [_trial(2, w, lr) for w, lr in ((7, 0.02), (4, 0.03), (7, 0.04), (6, 0.02))]
            + [_trial(1, w, lr) for w, lr in ((8, 0.1), (7, 0.03), (8, 0.01), (6, 0.2))])


def _run(sqlite_url: str, tmp_path, name: str) -> tuple[optuna.Study, list[str]]:
    d = {"name": name, "data": {"source": "sklearn:iris", "split": {"valid": 0.25, "test": 0.2, "seed": 0}},
         "model": {"builder": "mlp", "fixed": {"optimizer": "sgd"}},
         "space": {"n_hidden": {"int": [1, 2]}, "n_neurons": {"int": [4, 8]},
                   "learning_rate": {"float": [0.01, 0.2], "log": True}},
         "train": {"epochs": 2, "batch_size": 16, "pack": 4, "early_stopping": {"patience": 5}},
         "search": {"engine": "optuna", "n_trials": 12, "seed": 0, "sampler": "random", "pruner": "none",
                    "enqueue": ENQUEUED}}

    obs = Lines()
    run_study(parse_study_config(d), storage=sqlite_url, artifacts=str(tmp_path / name), observer=obs)
    return optuna.load_study(study_name=name, storage=sqlite_url), obs.lines


def test_packs_of_one_shape_trace_once(sqlite_url, tmp_path, monkeypatch, traces):
    from hpsearch.packing import model as packed_model

    counted: list[int] = []
    restart = packed_model.PackedModel.restart

    def counting(self, *a, **k):  # the reused pack's traces: none from here on (it is the last pack)
        counted.append(len(traces))
        return restart(self, *a, **k)

    monkeypatch.setattr(packed_model.PackedModel, "restart", counting)
    study, lines = _run(sqlite_url, tmp_path, "once")
    assert len(counted) == 1 and len(traces) == counted[0]
    assert {k: v for k, v in study.user_attrs[STUDY.PACK_MODELS].items() if k != "note"} == {"built": 2, "reused": 1}
    assert sum("share one compiled model" in line for line in lines) == 1
    trials = study.get_trials()
    assert [t.params["n_hidden"] for t in trials] == [p["n_hidden"] for p in ENQUEUED]
    assert all(t.user_attrs[TRIAL.PACK_SIZE] == 4 for t in trials)

    assert all(t.state.name == "COMPLETE" and len(t.intermediate_values) == 2 for t in trials)
