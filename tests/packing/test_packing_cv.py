"""Packed cross-validation (hpsearch.packing.cv): the scikit-learn engines train candidates
a fold at a time in packs, with the same candidates, fold preprocessing, initial weights and
stored trials as unpacked; with the batch order matched (shuffle off) the fold scores are equal.
The pack is compiled once and reused on the second fold, so that fold checks the reset too."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import numpy as np
import optuna

from hpsearch.data.prepare import prepare_data
from hpsearch.engines import sklearn as sklearn_engine
from hpsearch.engines.base import get_engine
from hpsearch.models.builders import resolve_builder
from hpsearch.packing.cv import CvPlan, cv_layout, cv_pack_plan
from hpsearch.packing.model import AUTO_MAX_MEMBERS
from hpsearch.records import TRIAL
from hpsearch.study.validate import parse_study_config
from hpsearch.trials.context import RunContext


def _cfg(name: str, pack: Any, engine: str = "random") -> Any:
    return parse_study_config({
        "name": name,
        "data": {"source": "sklearn:diabetes", "max_rows": 120, "split": {"valid": 0.2, "test": 0.2, "seed": 0}},
        "model": {"fixed": {}},
        "space": {"n_hidden": {"int": [0, 2]}, "n_neurons": {"int": [4, 16]},
                  "optimizer": {"choice": ["adam", "momentum"]},
                  "learning_rate": {"float": [0.001, 0.01], "log": True}},
        "train": {"epochs": 3, "batch_size": 16, "early_stopping": {"patience": 1}, "pack": pack},
        "search": {"engine": engine, "n_trials": 4, "cv": 2, "seed": 3, "metric": "mse"},
    })


class _Notes:
    def __init__(self) -> None:
        self.notes: list[str] = []

    def begin(self, done: int, best: float | None) -> None: ...

    def trial_done(self, number: int, state: str, value: float | None, detail: str = "") -> None: ...

    def message(self, text: str) -> None:
        self.notes.append(text)

    def end(self) -> None: ...


def _run(cfg: Any, url: str) -> tuple[list[Any], list[str]]:
    engine = get_engine(cfg.search.engine)
    data = prepare_data(cfg, engine.cv_folds(cfg))
    storage = optuna.storages.RDBStorage(url)
    study = optuna.create_study(storage=storage, study_name=cfg.name, direction="minimize")
    obs = _Notes()
    ctx = RunContext(cfg=cfg, space=cfg.search_space(), data=data, study=study, storage=storage, storage_url=url,
                     artifact_store=None, builder=resolve_builder(cfg.model.builder), builder_extra={},
                     metric="mse", direction="minimize", engine=engine, observer=obs)
    engine.run(ctx)
    return sorted(study.get_trials(), key=lambda t: t.user_attrs[TRIAL.CANDIDATE]), obs.notes


def _same(alone: list[Any], packed: list[Any]) -> None:
    assert len(alone) == len(packed) == 4
    for a, p in zip(alone, packed):
        assert a.params == p.params and a.state == p.state == optuna.trial.TrialState.COMPLETE
        assert set(a.user_attrs) == set(p.user_attrs)  # stored as an unpacked candidate is
        assert a.user_attrs[TRIAL.EPOCHS_PER_FOLD] == p.user_attrs[TRIAL.EPOCHS_PER_FOLD]
        np.testing.assert_allclose(p.user_attrs[TRIAL.FOLD_SCORES], a.user_attrs[TRIAL.FOLD_SCORES], rtol=1e-4)
        np.testing.assert_allclose(p.user_attrs[TRIAL.STD_SCORE], a.user_attrs[TRIAL.STD_SCORE], rtol=1e-3, atol=1e-6)
        np.testing.assert_allclose(p.value, a.value, rtol=1e-4)
        assert sorted(a.intermediate_values) == sorted(p.intermediate_values)
        np.testing.assert_allclose(list(p.intermediate_values.values()), list(a.intermediate_values.values()),
                                   rtol=1e-4)


def test_packed_folds_equal_unpacked_with_the_same_batch_order(sqlite_url, monkeypatch):
    """Shuffling off in all three (the same batch order): the same candidates, fold scores, std,
    epochs and curves unpacked, packed one fold at a time and packed candidates x folds in one pack
    (folds of 48 rows each here, batch 16: the same batches); with shuffling on, only the batch order
    differs (benchmarks/bench_packing_sklearn.py)."""
    from hpsearch.packing import cv as packed_cv

    make = sklearn_engine.keras_estimator
    monkeypatch.setattr(sklearn_engine, "keras_estimator", lambda ctx: make(ctx).set_params(shuffle=False))
    packs: list[tuple[int, bool]] = []
    real = packed_cv.train_pack
    monkeypatch.setattr(packed_cv, "train_pack", lambda pm, *a, **k: packs.append((len(pm.specs), pm.per_member))
                        or real(pm, *a, **k))
    alone, notes = _run(_cfg("alone", 1), sqlite_url)
    together, tnotes = _run(_cfg("together", "auto"), sqlite_url)  # auto: 4 candidates x 2 folds, one pack
    monkeypatch.setattr(packed_cv, "FOLDS_TOGETHER", False)
    apart, anotes = _run(_cfg("apart", "auto"), sqlite_url)  # one pack per fold, the model reused
    assert notes == ["hpsearch: train.pack 1: one model per fit"]  # each decision said in one line
    assert tnotes == ["hpsearch: train.pack auto -> 8: 4 candidates x 2 folds in one pack of 8 members"
                      " (one per candidate and fold, each on its fold's rows)"]
    assert anotes == ["hpsearch: train.pack auto -> 4: 4 candidates x 2 folds train 4 at a time; one pack per"
                      " fold: hpsearch.packing.cv.FOLDS_TOGETHER is off"]
    assert packs == [(8, True), (4, False), (4, False)]
    _same(alone, together)
    _same(alone, apart)


def test_folds_of_different_widths_pack_one_fold_at_a_time(sqlite_url, monkeypatch):
    """Where the folds' preprocessing makes inputs of different widths (the second fold one column
    wider here), a per-member pack cannot take them: it says so in one line and packs per fold."""
    from hpsearch.packing import cv as packed_cv

    real_prepare = packed_cv.FoldPacks._prepare
    seen: list[int] = []

    def wider(self, train, test):
        fold = real_prepare(self, train, test)
        seen.append(fold.X.shape[1])
        if len(seen) % 2 == 0:
            pad = lambda a: np.hstack([a, np.zeros((len(a), 1), dtype=a.dtype)])  # noqa: E731
            fold.X, fold.X_valid, fold.X_test = pad(fold.X), pad(fold.X_valid), pad(fold.X_test)
        return fold

    packs: list[tuple[int, bool, int]] = []
    real = packed_cv.train_pack
    monkeypatch.setattr(packed_cv.FoldPacks, "_prepare", wider)
    monkeypatch.setattr(packed_cv, "train_pack", lambda pm, *a, **k: packs.append(
        (len(pm.specs), pm.per_member, pm.n_features)) or real(pm, *a, **k))
    trials, notes = _run(_cfg("widths", "auto"), sqlite_url)
    assert notes[1:] == ["hpsearch: train.pack: the folds' preprocessing makes [10, 11] features: one pack per fold"
                         " (a pack's members share one input width)"]
    assert packs == [(4, False, 10), (4, False, 11)]
    assert all(t.state == optuna.trial.TrialState.COMPLETE and len(t.user_attrs[TRIAL.FOLD_SCORES]) == 2
               for t in trials)


def test_halving_packs_each_rung_as_unpacked(sqlite_url, monkeypatch):
    """Halving: a rung's candidates x folds train as packs at the rung's epochs, with the same
    candidates, rungs and fold scores as unpacked (shuffle off, the same batch order)."""
    make = sklearn_engine.keras_estimator
    monkeypatch.setattr(sklearn_engine, "keras_estimator", lambda ctx: make(ctx).set_params(shuffle=False))
    from hpsearch.packing import cv as packed_cv
    packs: list[int] = []
    real = packed_cv.FoldPacks
    monkeypatch.setattr(packed_cv, "FoldPacks", lambda *a: packs.append(a[4]) or real(*a))
    alone, _ = _run(_cfg("h-alone", 1, engine="halving"), sqlite_url)
    packed, notes = _run(_cfg("h-packed", "auto", engine="halving"), sqlite_url)
    assert notes == ["hpsearch: train.pack auto -> 8: 4 candidates x 2 folds in one pack of 8 members"
                     " (one per candidate and fold, each on its fold's rows)"]
    # both rungs packed: 4 candidates x 2 folds at 1 epoch, then 2 x 2 at 3 epochs (4 members, auto's least)
    assert packs == [1, 3], packs
    assert [t.params for t in alone] == [t.params for t in packed] and len(packed) > 4
    for a, p in zip(alone, packed):
        assert a.state == p.state and a.user_attrs[TRIAL.CANDIDATE_KEY] == p.user_attrs[TRIAL.CANDIDATE_KEY]
        np.testing.assert_allclose(p.user_attrs[TRIAL.FOLD_SCORES], a.user_attrs[TRIAL.FOLD_SCORES], rtol=1e-4)


def _plan_args(pack: Any, n: int, **over: Any) -> tuple[Any, list[dict[str, Any]]]:
    cfg = _cfg("plan", pack)
    meta = {"n_features_in_": 10, "target_type_": "continuous", "n_outputs_": 1, "task": "regression"}
    ctx = SimpleNamespace(cfg=cfg, space=cfg.search_space(), data=SimpleNamespace(meta=lambda: meta),
                          builder=over.get("builder", resolve_builder("mlp")), builder_extra={}, metric="mse")
    return ctx, [{"n_hidden": 1, "n_neurons": 8, "optimizer": "adam", "learning_rate": 0.01, **over.get("p", {})}] * n


def _plan(engine: str, pack: Any, n: int = 10, **over: Any) -> tuple[int, str | None]:
    ctx, cands = _plan_args(pack, n, **over)
    return cv_pack_plan(ctx, engine, cands)


def test_cv_layout_packs_candidates_x_folds_or_one_fold_at_a_time_and_says_why():
    """Batch 16: folds of 40 and 41 rows make 3 batches each (one pack); 48 and 49 make 3 and 4
    (a weight-0 batch would still step: one pack per fold); ``train.pack`` 5 holds under 2 x 3 folds."""
    ctx, cands = _plan_args("auto", 10)
    assert cv_layout(ctx, "random", cands, [40, 41, 41]) == (CvPlan(30, 10, True), None)
    assert cv_layout(ctx, "random", cands * 3, [40, 41, 41])[0] == CvPlan(63, 21, True)  # 64 cap, whole candidates
    plan, _ = cv_layout(ctx, "random", cands, [48, 49])
    assert plan == CvPlan(10, 10, False, "folds of 48-49 rows make 3-4 batches of 16")
    ctx, cands = _plan_args(5, 10)
    assert cv_layout(ctx, "random", cands, [40, 41, 41])[0] == CvPlan(5, 5, False, "5 members hold under 2 candidates"
                                                                      " x 3 folds")
    ctx, cands = _plan_args("auto", 2)
    assert cv_layout(ctx, "random", cands, [40, 41, 41])[0] == CvPlan(6, 2, True)  # 2 candidates x 3 folds: 6 pay


def test_cv_pack_plan_packs_random_and_grid_and_says_why_not():
    assert _plan("random", "auto")[0] == 10 and _plan("grid", 4) == (4, None)
    assert _plan("random", 1) == (1, None)
    assert _plan("random", "auto", n=3) == (1, None)  # auto: too few members to pay, no note
    assert _plan("halving", "auto")[0] == 10  # a rung's candidates
    assert _plan("random", "auto", n=100)[0] == AUTO_MAX_MEMBERS == 64  # the Optuna engine's cap, one constant
    k, note = _plan("random", 4, p={"max_norm": 2.0})
    assert k == 1 and "max_norm=2.0" in note
