"""Candidates x folds in one pack (issue 25 item 3): a per-member pack (input (batch, K, features),
each member its own rows and batches) trains each member exactly as a shared-input pack of its fold
does, folds of unequal sizes included; the classic 10 candidates x 3 folds are one pack, built and
traced once (counted, never timed)."""

from __future__ import annotations

import keras
import numpy as np
import optuna
import pytest

from hpsearch.models.mlp import build_mlp
from hpsearch.packing.model import PackedModel, member_spec
from hpsearch.packing.train import PackSettings, member_epoch_rows, train_pack
from hpsearch.study.run import run_study
from hpsearch.study.validate import parse_study_config
from tests.observers import Lines

META = {"n_features_in_": 6, "target_type_": "multiclass", "n_classes_": 3, "n_outputs_": 1}
#: two candidates of two depth groups (batch norm, Adam, momentum, l2)
CANDIDATES = [
    {"n_hidden": 1, "n_neurons": 7, "optimizer": "adam", "learning_rate": 0.01, "batch_norm": True, "l2": 0.01},
    {"n_hidden": 2, "n_neurons": 5, "optimizer": "momentum", "learning_rate": 0.05},
]


def _fold(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    X = rng.normal(size=(n, 6)).astype("float32")
    return X, (X[:, 0] + X[:, 1] > 0).astype("int64") + (X[:, 2] > 1).astype("int64")


def _settings() -> PackSettings:
    return PackSettings(epochs=4, batch_size=16, valid_batch=64, metric="accuracy", direction="maximize",
                        patience=2, shuffle=False)


def test_a_per_member_pack_trains_each_member_as_its_folds_pack():
    """Folds of 37 and 35 rows (3 batches of 16 each), fold-major members (c0f0, c1f0, c0f1, c1f1:
    the depth groups interleave on the K axis), each fold its own validation rows: the same curves,
    epochs and weights as a shared-input pack per fold, to float tolerance."""
    rng = np.random.default_rng(0)
    folds = [_fold(rng, 37), _fold(rng, 35)]
    Xv, yv = _fold(rng, 40)
    valid = [Xv, Xv * 1.5 + 0.2]  # as two folds' scalers would map the validation rows
    specs = [member_spec(build_mlp, p) for p in CANDIDATES]
    seeds = [11, 12]
    alone = []
    for (X, y), v in zip(folds, valid):
        pm = PackedModel(specs, META)
        pm.init_weights(seeds)
        alone.append(train_pack(pm, X, y, v, yv, _settings()))
    members = [(c, f) for f in range(2) for c in range(2)]
    pm = PackedModel([specs[c] for c, _ in members], META, per_member=True)
    assert pm.order == [0, 2, 1, 3]  # grouped by depth: the per-member input is gathered per group
    pm.init_weights([seeds[c] for c, _ in members])
    together = train_pack(pm, [folds[f][0] for _, f in members], [folds[f][1] for _, f in members],
                          np.stack([valid[f] for _, f in members], axis=1), yv, _settings())
    for m, (c, f) in enumerate(members):
        a, t = alone[f][c], together[m]
        assert t.state == a.state == "COMPLETE" and t.epochs == a.epochs and t.best_epoch == a.best_epoch
        np.testing.assert_allclose(t.values, a.values, atol=1e-6)
        for got, want in zip(t.weights, a.weights, strict=True):
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_member_rows_cover_each_members_own_rows_and_refuse_unequal_batch_counts():
    rows, weight = member_epoch_rows([37, 35], 16, 2, None)
    assert rows.shape == weight.shape == (96, 2)  # 2 epochs x 3 batches of 16, one length for both
    for k, n in enumerate((37, 35)):
        for e in range(2):
            epoch = rows[e * 48:(e + 1) * 48, k]
            np.testing.assert_array_equal(epoch[:n], np.arange(n))  # every row once, in order (no shuffle)
            w = weight[e * 48:(e + 1) * 48, k]
            assert (w[n:] == 0).all() and np.isclose(w[32:n], 16 / (n - 32)).all() and (w[:32] == 1).all()
    with pytest.raises(ValueError, match="one batch count"):
        member_epoch_rows([32, 33], 16, 1, None)  # 2 and 3 batches: a weight-0 batch would still step


def test_the_classic_ten_candidates_by_three_folds_are_one_pack(sqlite_url, tmp_path, monkeypatch):
    """``search.engine: random``, 10 candidates, cv 3, ``train.pack: auto``: one build, one
    train_pack of 30 per-member slots (every trace of the train step in it); every candidate stored
    with its 3 fold scores."""
    from hpsearch.packing import cv as packed_cv

    builds: list[tuple[int, bool]] = []
    traces: list[str] = []
    real_init, real_step = PackedModel.__init__, keras.Model.train_step

    def build(self, specs, *a, **k):
        builds.append((len(specs), bool(k.get("per_member"))))
        real_init(self, specs, *a, **k)

    def step(self, *args):
        if self.name.startswith("pack"):
            traces.append(self.name)
        return real_step(self, *args)

    calls: list[tuple[int, bool, int]] = []  # per train_pack: members, per-member input, traces in it
    real_train = packed_cv.train_pack

    def train(pm, *a, **k):
        before = len(traces)
        out = real_train(pm, *a, **k)
        calls.append((len(pm.specs), pm.per_member, len(traces) - before))
        return out

    monkeypatch.setattr(packed_cv, "train_pack", train)
    monkeypatch.setattr(packed_cv.PackedModel, "__init__", build)
    monkeypatch.setattr(keras.Model, "train_step", step)
    d = {"name": "classic", "data": {"source": "sklearn:iris", "split": {"valid": 0.2, "test": 0.2, "seed": 0}},
         "model": {"builder": "mlp", "fixed": {"optimizer": "sgd"}},
         "space": {"n_hidden": {"int": [0, 3]}, "n_neurons": {"int": [1, 99]},
                   "learning_rate": {"float": [3e-4, 3e-2], "log": True}},
         "train": {"epochs": 2, "batch_size": 32, "pack": "auto", "early_stopping": {"patience": 10}},
         "search": {"engine": "random", "n_trials": 10, "cv": 3, "seed": 0, "metric": "accuracy"}}

    obs = Lines()
    run_study(parse_study_config(d), storage=sqlite_url, artifacts=str(tmp_path / "art"), observer=obs)
    assert builds == [(30, True)]  # one model built (and compiled) for the 30 fits
    assert len(calls) == 1 and calls[0][:2] == (30, True)  # trained once
    assert calls[0][2] == len(traces) >= 1  # every trace of a pack's train step in that one call
    assert ("hpsearch: train.pack auto -> 30: 10 candidates x 3 folds in one pack of 30 members"
            " (one per candidate and fold, each on its fold's rows)") in obs.lines
    study = optuna.load_study(study_name="classic", storage=sqlite_url)
    assert study.user_attrs["decisions"]["pack"]["value"] == {"members": 30, "folds_in_pack": 3}
    trials = study.get_trials()
    assert len(trials) == 10 and all(len(t.user_attrs["fold_scores"]) == 3 for t in trials)
