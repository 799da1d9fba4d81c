"""Packed trials (hpsearch.packing.model, engines/packed*.py): a member trains exactly as it would alone,
stops, freezes and fails alone, and ends as an ordinary stored trial that load_best can load."""

from __future__ import annotations

import keras
import numpy as np
import optuna
from optuna.trial import TrialState

import hpsearch
from hpsearch.models.mlp import build_mlp
from hpsearch.packing.model import PackedModel, member_spec
from hpsearch.packing.train import PackSettings, train_pack
from hpsearch.records import TRIAL
from hpsearch.study.run import run_study
from hpsearch.study.validate import parse_study_config
from tests.data_fixtures import toy_classes

META = {"n_features_in_": 8, "target_type_": "multiclass", "n_classes_": 3, "n_outputs_": 1}
MEMBERS = [  # two optimizers (and Nesterov), three depths, different widths, l1 / l2
    {"n_hidden": 1, "n_neurons": 12, "optimizer": "momentum", "learning_rate": 0.05, "l2": 1e-3},
    {"n_hidden": 2, "n_neurons": 6, "optimizer": "adam", "learning_rate": 0.01, "l1": 1e-4},
    {"n_hidden": 2, "n_neurons": 9, "optimizer": "nesterov", "learning_rate": 0.03, "activation": "tanh"},
    {"n_hidden": 0, "optimizer": "sgd", "learning_rate": 0.1},
]
DIVERGING = {"n_hidden": 1, "n_neurons": 5, "optimizer": "sgd", "learning_rate": 1e30}


def _data(n: int = 96, seed: int = 0) -> tuple[np.ndarray, ...]:
    return toy_classes(n, 64, seed)


def _settings(**over) -> PackSettings:
    base = {"epochs": 4, "batch_size": 16, "valid_batch": 32, "metric": "accuracy", "direction": "maximize",
            "patience": 10, "restore_best": False, "shuffle": False}
    return PackSettings(**{**base, **over})


def test_pack_trains_each_member_as_alone_and_a_diverging_member_fails_alone():
    Xt, yt, Xv, yv = _data()
    alone = []
    for i, p in enumerate([*MEMBERS, DIVERGING]):
        keras.utils.set_random_seed(i)
        model = build_mlp(**p, meta=META)
        init = model.get_weights()
        hist = model.fit(Xt, yt, batch_size=16, epochs=4, shuffle=False, validation_data=(Xv, yv), verbose=0)
        alone.append((init, hist.history["val_accuracy"], model.get_weights()))
    pm = PackedModel([member_spec(build_mlp, p) for p in [*MEMBERS, DIVERGING]], META)
    for i, (init, _, _) in enumerate(alone):
        pm.set_member_weights(i, init)  # the same initial weights (and, shuffle off, batch order)
    res = train_pack(pm, Xt, yt, Xv, yv, _settings())
    for r, (_, values, final) in zip(res[:-1], alone):
        assert r.state == "COMPLETE"
        np.testing.assert_allclose(r.values, values, atol=1e-6)
        for got, want in zip(r.weights, final):
            np.testing.assert_allclose(got, want, atol=1e-5)
    assert res[-1].state == "FAIL" and "diverged" in res[-1].failure and res[-1].weights is None


def test_regression_members_match_alone():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(80, 5)).astype("float32")
    y = (2 * X[:, 0] + X[:, 1]).astype("float32")
    meta = {"n_features_in_": 5, "target_type_": "continuous", "n_outputs_": 1, "task": "regression"}
    members = [{"n_hidden": 1, "n_neurons": 6, "optimizer": "adam", "learning_rate": 0.01},
               {"n_hidden": 0, "optimizer": "momentum", "learning_rate": 0.01}]
    alone = []
    for p in members:
        model = build_mlp(**p, meta=meta)
        init = model.get_weights()
        hist = model.fit(X[:64], y[:64], batch_size=16, epochs=3, shuffle=False, validation_data=(X[64:], y[64:]),
                         verbose=0)
        alone.append((init, hist.history["val_mse"]))
    pm = PackedModel([member_spec(build_mlp, p) for p in members], meta)
    for i, (init, _) in enumerate(alone):
        pm.set_member_weights(i, init)
    res = train_pack(pm, X[:64], y[:64], X[64:], y[64:], _settings(epochs=3, metric="mse", direction="minimize"))
    for r, (_, values) in zip(res, alone):
        np.testing.assert_allclose(r.values, values, rtol=1e-4)


def test_refused_features_are_named():
    assert member_spec(build_mlp, {"alpha_dropout": True}) == "alpha_dropout=True"
    assert member_spec(build_mlp, {"max_norm": 2.0}) == "max_norm=2.0"
    assert member_spec(build_mlp, {"optimizer": "rmsprop"}) == "optimizer='rmsprop'"
    assert member_spec(lambda **kw: None, {}) == "a user builder"


def test_early_stopped_member_is_frozen_while_others_train():
    Xt, yt, Xv, yv = _data()
    still = {"n_hidden": 1, "n_neurons": 4, "optimizer": "sgd", "learning_rate": 1e-12,  # never improves
             "batch_norm": True}  # its moving statistics must stop with it too
    pm = PackedModel([member_spec(build_mlp, p) for p in (MEMBERS[0], still)], META)
    pm.init_weights([0, 1])
    seen: list[list[np.ndarray]] = []

    def hook(values: dict[int, tuple[int, float]]) -> set[int]:
        seen.append(pm.member_weights(1))
        return set()

    res = train_pack(pm, Xt, yt, Xv, yv, _settings(epochs=6, patience=1), hook)
    assert res[1].state == "COMPLETE" and res[1].stopped_at == 1 and res[1].epochs == 2
    assert res[0].epochs > 2  # the other member went on training
    assert len(res[1].weights) == 7  # kernel, gamma, beta, moving mean / variance; output kernel, bias
    for got, want in zip(res[1].weights, seen[1]):  # no update after it stopped
        np.testing.assert_array_equal(got, want)


def _study(name: str, **train) -> object:
    return parse_study_config({
        "name": name,
        "data": {"source": "sklearn:iris", "split": {"valid": 0.25, "test": 0.2, "seed": 0}},
        "model": {"builder": "mlp", "fixed": {"optimizer": "adam", "dropout": 0.1}},
        "space": {"n_hidden": {"int": [0, 2]}, "n_neurons": {"int": [4, 16]},
                  "learning_rate": {"float": [0.005, 0.05], "log": True}, "batch_norm": {"choice": [False, True]}},
        "train": {"epochs": 3, "batch_size": 16, **train},
        "search": {"engine": "optuna", "n_trials": 5, "seed": 0, "sampler": "tpe", "pruner": "none"},
    })


def test_packed_members_are_ordinary_trials_and_load_best_works(sqlite_url, tmp_path, monkeypatch):
    from hpsearch.trials import runner as trial_runner
    saved: list[int] = []
    save = trial_runner.save_model_artifacts
    monkeypatch.setattr(trial_runner, "save_model_artifacts", lambda store, trial, *a: saved.append(1) or save(
        store, trial, *a))
    d = _study("packed", pack=4).model_dump()
    d["search"]["keep_models"] = 1
    res = run_study(parse_study_config(d), storage=sqlite_url, artifacts=str(tmp_path / "art"))
    assert len(saved) <= 2  # the pack stores only its best member (keep_models 1), not all four
    trials = optuna.load_study(study_name="packed", storage=sqlite_url).get_trials()
    assert len(trials) == 5 and res.n_complete == 5
    packed = [t for t in trials if TRIAL.PACK_SIZE in t.user_attrs]
    assert sorted(t.user_attrs[TRIAL.PACK_SLOT] for t in packed) == [0, 1, 2, 3]  # the 5th ran alone
    for t in packed:
        assert t.state == TrialState.COMPLETE and t.user_attrs[TRIAL.PACK_SIZE] == 4
        assert len(t.intermediate_values) == t.user_attrs[TRIAL.EPOCHS] == 3
        assert t.value == max(t.intermediate_values.values())
        assert t.user_attrs[TRIAL.N_PARAMS] > 0 and t.user_attrs[TRIAL.FIT_TIME] > 0
        assert set(t.params) == {"n_hidden", "n_neurons", "learning_rate", "batch_norm"}
    est = hpsearch.load_best("packed", storage=sqlite_url, artifacts=str(tmp_path / "art"))
    X = np.random.default_rng(0).normal(size=(5, 4))
    assert est.predict(X).shape == (5,)


def _plan(train: dict, space: dict | None = None, n_trials: int = 40) -> tuple[int, str | None]:
    from types import SimpleNamespace

    from hpsearch.packing.runner import pack_plan

    cfg = _study("plan", **train)
    d = cfg.model_dump()
    d["search"]["n_trials"] = n_trials
    d["space"] = {**d["space"], **(space or {})}
    cfg = parse_study_config(d)
    iris = {"n_features_in_": 4, "target_type_": "multiclass", "n_classes_": 3, "task": "classification"}
    ctx = SimpleNamespace(cfg=cfg, space=cfg.search_space(), data=SimpleNamespace(meta=lambda: iris),
                          builder=build_mlp, builder_extra={}, metric="accuracy", keras_callbacks=[],
                          objectives=[("accuracy", "maximize")])
    return pack_plan(ctx)


def test_pack_plan_packs_what_is_exact_and_falls_back_to_one_with_a_note():
    assert _plan({"pack": 1}) == (1, None)
    assert _plan({"pack": 6}) == (6, None)
    k, note = _plan({})  # auto; dropout and batch norm pack
    assert k > 1 and note is None
    assert _plan({}, n_trials=4) == (1, None)  # auto: a tiny budget is not worth a pack
    assert _plan({}, n_trials=70) == (35, None)  # auto: equal packs of at most 64, not 64 + 6
    k, note = _plan({}, space={"max_norm": {"float": [1.0, 3.0]}})
    assert k == 1 and "space.max_norm" in note and "1.0" in note
    k, note = _plan({"class_weight": "balanced"})
    assert k == 1 and "class_weight" in note


BN_DROPOUT = [  # batch norm and dropout, three optimizers; the first two share a group (padding, rate 0),
    # the third has the first's depth and activation without batch norm (a group of its own)
    {"n_hidden": 2, "n_neurons": 7, "batch_norm": True, "dropout": 0.3, "optimizer": "adam", "learning_rate": 0.01},
    {"n_hidden": 2, "n_neurons": 5, "batch_norm": True, "optimizer": "momentum", "learning_rate": 0.05},
    {"n_hidden": 2, "n_neurons": 7, "dropout": 0.5, "optimizer": "nesterov", "learning_rate": 0.03, "l2": 1e-3},
]


class _Tables:
    """Dropout noise from fixed tables, one per (member, hidden layer) and training step, read by
    a step counter: the same masks for a member alone and in the pack."""

    def __init__(self, widths: list[tuple[int, ...]], steps: int, batch: int) -> None:
        rng = np.random.default_rng(7)
        self.tables = [[rng.uniform(size=(steps, batch, w)).astype("float32") for w in ws] for ws in widths]

    def source(self, table: np.ndarray):
        step = keras.Variable(0, dtype="int32", trainable=False)  # outside any layer: not a weight

        def draw(shape):
            u = keras.ops.take(keras.ops.convert_to_tensor(table), step.value, axis=0)
            step.assign_add(1)
            return u

        return draw

    def packed(self, pm: PackedModel):
        """``dropout_noise`` for the pack: member j's table in row j (padding: kept, always zero)."""
        sources = {}
        for g in {pm.slot[m][0] for m in range(len(pm.specs))}:
            members = sorted((m for m in pm.slot if pm.slot[m][0] == g), key=lambda m: pm.slot[m][1])
            for d in range(len(pm.specs[members[0]].widths)):
                width = max(pm.specs[m].widths[d] for m in members)
                steps, batch = self.tables[members[0]][d].shape[:2]
                table = np.ones((steps, batch, len(members), width), "float32")
                for j, m in enumerate(members):
                    table[:, :, j, :pm.specs[m].widths[d]] = self.tables[m][d]
                sources[f"g{g}_dropout_{d}"] = self.source(table)
        return lambda name, shape: sources[name](shape)


class _TableDropout(keras.layers.Layer):
    """Keras' Dropout (x / (1 - rate) where the noise >= rate) with the noise from a table."""

    def __init__(self, rate: float, draw, **kwargs) -> None:
        super().__init__(**kwargs)
        self.rate, self.draw = rate, draw

    def call(self, x, training=None):
        if not training:
            return x
        keep = keras.ops.cast(self.draw(keras.ops.shape(x)) >= self.rate, x.dtype)
        return x * keras.ops.convert_to_tensor(1.0 / (1.0 - self.rate), x.dtype) * keep


def _alone_with_tables(p: dict, tables: _Tables, member: int) -> keras.Model:
    """The standalone MLP of ``p`` (build_mlp), its Dropout layers reading ``tables``."""
    model = build_mlp(**p, meta=META)
    drops = iter(range(len(model.layers)))

    def swap(layer):
        if isinstance(layer, keras.layers.Dropout):
            return _TableDropout(layer.rate, tables.source(tables.tables[member][next(drops)]), name=layer.name)
        return layer.__class__.from_config(layer.get_config())

    clone = keras.models.clone_model(model, clone_function=swap)
    clone.set_weights(model.get_weights())
    clone.compile_from_config(model.get_compile_config())
    return clone


def test_batch_norm_and_dropout_members_train_as_alone_and_load_standalone():
    """Per-epoch validation predictions (probabilities, not only accuracy), final weights and batch
    norm's moving statistics of each member match the same MLP trained alone from the same initial
    weights and batch order. Batch norm is deterministic: compared as it is. Dropout's masks are
    random: both paths read the same noise tables (``dropout_noise`` / a Dropout reading them), so
    this proves the per-member dropout arithmetic (rates, scaling, rate 0 untouched, padding), not
    that the pack's seeded generator draws the masks a standalone Dropout would draw."""
    Xt, yt, Xv, yv = _data()
    epochs, tables = 3, _Tables([member_spec(build_mlp, p).widths for p in BN_DROPOUT], 12, 16)
    alone = []
    for i, p in enumerate(BN_DROPOUT):
        keras.utils.set_random_seed(i)  # reproducible initial weights (max differences measured: 4e-6)
        model = _alone_with_tables(p, tables, i)
        init, probs = model.get_weights(), []
        record = keras.callbacks.LambdaCallback(
            on_epoch_end=lambda e, logs, m=model, out=probs: out.append(m.predict(Xv, verbose=0)))
        hist = model.fit(Xt, yt, batch_size=16, epochs=epochs, shuffle=False, validation_data=(Xv, yv), verbose=0,
                         callbacks=[record])
        alone.append((init, hist.history["val_accuracy"], probs, model.get_weights()))
    noise: dict = {}  # bound once the pack's layout (pm.slot) is known; first drawn in training
    pm = PackedModel([member_spec(build_mlp, p) for p in BN_DROPOUT], META,
                     dropout_noise=lambda name, shape: noise["draw"](name, shape))
    noise["draw"] = tables.packed(pm)
    for i, (init, *_) in enumerate(alone):
        pm.set_member_weights(i, init)
    packed_probs: list[np.ndarray] = []

    def hook(values: dict[int, tuple[int, float]]) -> set[int]:
        packed_probs.append(pm.predict(Xv, 32))
        return set()

    res = train_pack(pm, Xt, yt, Xv, yv, _settings(epochs=epochs), hook)
    for i, (r, (_, values, probs, final)) in enumerate(zip(res, alone)):
        np.testing.assert_allclose(r.values, values, atol=1e-6)
        np.testing.assert_allclose(np.stack([p[:, i] for p in packed_probs]), np.stack(probs), atol=2e-5)
        for got, want in zip(r.weights, final, strict=True):
            np.testing.assert_allclose(got, want, atol=2e-5)
        standalone = build_mlp(**BN_DROPOUT[i], meta=META)
        standalone.set_weights(r.weights)  # load_best's path: the member's own model
        np.testing.assert_allclose(standalone.predict(Xv, verbose=0), packed_probs[-1][:, i], atol=1e-5)
        assert pm.n_params(i) == standalone.count_params()


def test_a_refilled_slot_trains_its_new_member_as_alone():
    """A member that ends frees its slot; the new member put there (Adam: its own step count for
    the bias correction, zero moments) trains exactly as it would alone from the same weights."""
    Xt, yt, Xv, yv = _data()
    first = {"n_hidden": 2, "n_neurons": 9, "optimizer": "adam", "learning_rate": 1e-12}  # never improves
    new = {"n_hidden": 2, "n_neurons": 7, "optimizer": "adam", "learning_rate": 0.01,
           "kernel_initializer": "he_uniform"}
    pm = PackedModel([member_spec(build_mlp, p) for p in (MEMBERS[1], first)], META)
    pm.init_weights([0, 1])
    start: list[list[np.ndarray]] = []

    def refill(ended: list[int], res: list, room: bool) -> set[int]:
        if start or 1 not in ended:
            return set()
        assert pm.fits(1, member_spec(build_mlp, new))
        pm.replace([(1, member_spec(build_mlp, new), 5)])
        start.append(pm.member_weights(1))
        return {1}

    res = train_pack(pm, Xt, yt, Xv, yv, _settings(epochs=4, patience=1), refill=refill)
    assert start and res[1].state == "COMPLETE" and res[1].epochs == 4
    keras.utils.set_random_seed(0)
    alone = build_mlp(**new, meta=META)
    alone.set_weights(start[0])
    hist = alone.fit(Xt, yt, batch_size=16, epochs=4, shuffle=False, validation_data=(Xv, yv), verbose=0)
    np.testing.assert_allclose(res[1].values, hist.history["val_accuracy"], atol=1e-6)
    for got, want in zip(res[1].weights, alone.get_weights(), strict=True):
        np.testing.assert_allclose(got, want, atol=1e-5)
    assert not pm.fits(1, member_spec(build_mlp, {**new, "n_hidden": 1}))  # another depth: another group
    assert not pm.fits(1, member_spec(build_mlp, {**new, "n_neurons": 12}))  # wider than the group


def test_a_study_refills_freed_slots_without_a_rebuild(sqlite_url, tmp_path, monkeypatch):
    """Trials beyond the pack size take the slots of members that ended (one compiled model for
    the study); each is still an ordinary trial with its own epochs and intermediate values."""
    from hpsearch.packing import runner as packed
    builds: list[int] = []
    real = packed.PackedModel
    monkeypatch.setattr(packed, "PackedModel", lambda *a, **k: builds.append(1) or real(*a, **k))
    d = _study("refill", pack=3, epochs=8, early_stopping={"patience": 1}).model_dump()
    d["model"]["fixed"] = {"optimizer": "sgd", "n_hidden": 1, "n_neurons": 6}  # every new trial fits a freed slot
    d["space"] = {"learning_rate": {"float": [1e-4, 0.5], "log": True}, "l2": {"choice": [0.0]}}
    d["search"]["n_trials"] = 8
    res = run_study(parse_study_config(d), storage=sqlite_url, artifacts=str(tmp_path / "art"))
    trials = optuna.load_study(study_name="refill", storage=sqlite_url).get_trials()
    assert len(trials) == 8 and res.n_complete == 8
    assert len(builds) == 1  # 8 trials, 3 slots, one build
    assert {t.user_attrs[TRIAL.PACK_SIZE] for t in trials} == {3}
    assert {t.user_attrs[TRIAL.PACK_SLOT] for t in trials} == {0, 1, 2}
    for t in trials:
        epochs = t.user_attrs[TRIAL.EPOCHS]
        assert sorted(t.intermediate_values) == list(range(epochs)) and 1 <= epochs <= 8
        assert t.value == max(t.intermediate_values.values())


def test_tied_members_finishing_in_reverse_order_keep_the_best_trials_model(sqlite_url, tmp_path, monkeypatch):
    """Ties are the norm on small data with accuracy: every member ends with the same value, one at
    a time, the highest trial number first. The one ranking (ties: the lower trial number) names
    trial 0 best, so its model must be stored although three tied models were stored before it;
    the run ends with a result (it exited 1 with `the best trial 0 has no stored model` before)."""
    from hpsearch.packing import pack as packed
    def tied_reversed(pm, X, y, Xv, yv, s, hook=None, callbacks=None, refill=None, pace=None, shrink=None):
        res = [packed.MemberResult() for _ in pm.specs]
        for i in reversed(range(len(res))):  # the last slot (highest trial number) ends first
            res[i] = packed.MemberResult(values=[0.5, 0.5], best=0.5, best_epoch=1, state="COMPLETE",
                                         weights=pm.member_weights(i))
            if refill is not None:
                refill([i], res, True)
        return res

    monkeypatch.setattr(packed, "train_pack", tied_reversed)
    d = _study("ties", pack=8).model_dump()
    d["search"].update(n_trials=8, keep_models=3)
    res = run_study(parse_study_config(d), storage=sqlite_url, artifacts=str(tmp_path / "art"))
    assert res.best_trial == 0 and res.best_value == 0.5 and res.n_complete == 8
    trials = optuna.load_study(study_name="ties", storage=sqlite_url).get_trials()
    kept = sorted(t.number for t in trials if t.user_attrs.get(TRIAL.MODEL_ARTIFACT))
    assert kept[:3] == [0, 1, 2]  # the best three of the one ranking have models
    assert [r["number"] for r in res.rows][:3] == [0, 1, 2]  # the run table ranks ties the same way
    est = hpsearch.load_best("ties", storage=sqlite_url, artifacts=str(tmp_path / "art"))
    assert est.predict(np.random.default_rng(0).normal(size=(3, 4))).shape == (3,)


def test_a_packs_fit_data_has_no_prefetch_threads_to_wait_for():
    """A pack's fit ends early (its members are done, or a shrink cuts the chunk), which leaves Keras'
    epoch iterator in a reference cycle; destroying a prefetching tf.data iterator at the next full
    garbage collection waited for its threads (0.3-7 s, issue 25). The pack's data is a tf.data
    pipeline without prefetch or autotuning, its batches the rows in order."""
    import tensorflow as tf

    from hpsearch.packing.train import _fit_data

    xb, yb, weight = np.arange(20.0).reshape(10, 2), np.arange(10), np.ones(10)
    kwargs = _fit_data(xb, yb, weight, 4)
    data = kwargs["x"]
    assert isinstance(data, tf.data.Dataset) and kwargs["shuffle"] is False
    assert not data.options().autotune.enabled and not data.options().experimental_optimization.inject_prefetch
    assert "Prefetch" not in type(data).__name__ and "Prefetch" not in type(data._input_dataset).__name__
    batches = [b[0].numpy() for b in data]
    assert [len(b) for b in batches] == [4, 4, 2] and (np.concatenate(batches) == xb).all()
