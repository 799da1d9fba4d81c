"""The scikit-learn engines (grid, random, halving): every candidate stored as a trial as it
finishes, preprocessing fitted inside each fold, resume, failures, n_jobs, halving's schedule."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import optuna
import pytest
from optuna.trial import TrialState
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.model_selection import StratifiedKFold
from sklearn.preprocessing import StandardScaler

from hpsearch.data.prepare import prepare_data
from hpsearch.engines import sklearn as sklearn_engine
from hpsearch.engines.base import get_engine
from hpsearch.engines.halving import halving_rungs, run_rungs
from hpsearch.engines.sklearn import (
    GridEngine,
    HalvingEngine,
    RandomEngine,
)
from hpsearch.errors import ConfigError, StudyFailedError
from hpsearch.metrics import default_metric, direction_of
from hpsearch.models.builders import resolve_builder
from hpsearch.models.estimators import KerasClassifier
from hpsearch.records import STUDY, TRIAL
from hpsearch.study.validate import parse_study_config
from hpsearch.trials.context import RunContext


def _cfg(name: str, engine: str = "random", **over: Any) -> Any:
    d: dict[str, Any] = {
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


class Recorder:
    """An observer that keeps the progress events."""

    total: int | None = None

    def __init__(self) -> None:
        self.done: list[tuple[int, str, float | None, str]] = []

    def begin(self, done: int, best: float | None) -> None:
        pass

    def trial_done(self, number: int, state: str, value: float | None, detail: str = "") -> None:
        self.done.append((number, state, value, detail))

    def message(self, text: str) -> None:
        pass

    def end(self) -> None:
        pass


def _ctx(cfg: Any, url: str) -> RunContext:
    """What ``study.py`` builds for a run: validated config, prepared data, a new study."""
    engine = get_engine(cfg.search.engine)
    data = prepare_data(cfg, engine.cv_folds(cfg))
    metric = cfg.search.metric or default_metric(data.task)
    direction = cfg.search.direction or direction_of(metric)
    storage = optuna.storages.RDBStorage(url)
    study = optuna.create_study(storage=storage, study_name=cfg.name, direction=direction, load_if_exists=True)
    return RunContext(cfg=cfg, space=cfg.search_space(), data=data, study=study, storage=storage, storage_url=url,
                      artifact_store=None, builder=resolve_builder(cfg.model.builder), builder_extra={},
                      metric=metric, direction=direction, engine=engine, observer=Recorder())


def _run(cfg: Any, url: str) -> RunContext:
    ctx = _ctx(cfg, url)
    ctx.engine.run(ctx)
    return ctx


def test_engines_are_registered_with_their_protocol_facts():
    for name, cls in {"random": RandomEngine, "grid": GridEngine, "halving": HalvingEngine}.items():
        engine = get_engine(name)
        assert type(engine) is cls and engine.name == name
        assert engine.default_cv == 3 and not engine.supports_workers and engine.needs_resume_flag
    cfg = _cfg("defaults", search={"n_trials": None, "cv": None})
    assert get_engine("random").n_trials(cfg) == 10 and cfg.search.n_trials is None  # not mutated
    assert get_engine("random").cv_folds(cfg) == 3


def test_a_builder_with_meta_and_catch_all_params_trains_every_candidate(sqlite_url):
    """``def build(meta=None, **params)``: the searched values reach ``**params`` (declared on the
    estimator, so set_params takes them), meta by name, and nothing under the catch-all's name."""
    cfg = _cfg("catch-all", model={"builder": "hps_user_builders:build_meta_params"},
               space={"width": {"choice": [3, 5]}}, search={"n_trials": 2})
    _run(cfg, sqlite_url)
    trials = optuna.load_study(study_name="catch-all", storage=sqlite_url).get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 2, [t.user_attrs for t in trials]
    assert sorted(t.params["width"] for t in trials) == [3, 5]


def test_random_plan_is_capped_by_a_small_grid(sqlite_url):
    cfg = _cfg("small", space={"n_neurons": {"choice": [4, 8]}}, search={"n_trials": 5})
    ctx = _ctx(cfg, sqlite_url)
    assert ctx.engine.plan(ctx) == 2 and not ctx.engine.is_complete(ctx)  # as ParameterSampler draws


def test_random_records_every_candidate_with_fold_scores(sqlite_url):
    from sklearn.model_selection import ParameterSampler

    cfg = _cfg("rnd")
    ctx = _run(cfg, sqlite_url)
    study = optuna.load_study(study_name="rnd", storage=sqlite_url)
    trials = study.get_trials()
    assert len(trials) == 3 and all(t.state == TrialState.COMPLETE for t in trials)
    for t in trials:
        folds = t.user_attrs[TRIAL.FOLD_SCORES]
        assert len(folds) == 2
        assert t.value == pytest.approx(np.mean(folds))
        assert 1 <= t.user_attrs[TRIAL.EPOCHS] <= 2 and len(t.user_attrs[TRIAL.EPOCHS_PER_FOLD]) == 2
        assert t.user_attrs[TRIAL.FIT_TIME] > 0
        assert t.user_attrs[TRIAL.ENGINE] == "random"
        assert set(t.params) == {"n_neurons", "learning_rate"} and isinstance(t.params["n_neurons"], int)
        # the fold-mean validation accuracy per epoch is the trial's learning curve
        assert 1 <= len(t.intermediate_values) <= 2
        assert all(0.0 <= v <= 1.0 for v in t.intermediate_values.values())
    assert sorted(t.user_attrs[TRIAL.CANDIDATE] for t in trials) == [0, 1, 2]
    assert [(n, s) for n, s, _, _ in ctx.observer.done] == [(0, "COMPLETE"), (1, "COMPLETE"), (2, "COMPLETE")]
    assert ctx.engine.plan(ctx) == 3 and ctx.engine.is_complete(ctx)
    # exactly RandomizedSearchCV's candidates
    expected = ParameterSampler(cfg.search_space().to_sklearn_distributions(), 3, random_state=1)
    for t, p in zip(sorted(trials, key=lambda t: t.user_attrs[TRIAL.CANDIDATE]), expected, strict=True):
        assert t.params["n_neurons"] == int(p["n_neurons"])
        assert t.params["learning_rate"] == pytest.approx(float(p["learning_rate"]))


def test_folds_are_scaled_with_their_own_training_rows(sqlite_url, monkeypatch):
    """Each fold's scaler is fitted on that fold's training rows only (a Pipeline per fold), and the
    validation rows early stopping watches go through the same fold-fitted scaler."""
    seen: list[tuple[np.ndarray, np.ndarray]] = []
    fit = KerasClassifier.fit

    def spy(self: Any, X: Any, y: Any, **kw: Any) -> Any:
        seen.append((np.asarray(X), np.asarray(kw["validation_data"][0])))
        return fit(self, X, y, **kw)

    monkeypatch.setattr(KerasClassifier, "fit", spy)
    ctx = _run(_cfg("leak", train={"epochs": 1}, search={"n_trials": 1, "cv": 2}), sqlite_url)
    data = ctx.data
    folds = StratifiedKFold(2).split(data.X_train_raw, data.y_train)  # check_cv(2) for a classifier
    assert len(seen) == 2  # one candidate, two folds
    for (X, X_valid), (train, _test) in zip(seen, folds, strict=True):
        np.testing.assert_allclose(X.mean(axis=0), 0.0, atol=1e-6)  # fitted on exactly these rows
        scaler = StandardScaler().fit(data.X_train_raw[train])
        np.testing.assert_allclose(X, scaler.transform(data.X_train_raw[train]), atol=1e-5)
        np.testing.assert_allclose(X_valid, scaler.transform(data.X_valid_raw), atol=1e-5)
    # the refit model's preprocessing is fitted on the rows it is refitted on: the training split
    seen.clear()
    best = ctx.study.best_trial
    refit = ctx.engine.refit(ctx, dict(best.params), best)
    model, pre = refit.model, refit.preprocessor
    np.testing.assert_allclose(pre.mean, data.X_train_raw.mean(axis=0))
    assert pre.classes == data.preprocessor.classes
    np.testing.assert_allclose(seen[0][0], pre.transform(data.X_train_raw))
    np.testing.assert_allclose(seen[0][1], pre.transform(data.X_valid_raw))
    assert model.predict(seen[0][0][:5], verbose=0).shape == (5, 3)
    assert refit.epochs == 1


def test_interrupted_study_resumes_without_duplicates(sqlite_url, monkeypatch, tmp_path):
    counter = tmp_path / "builds"
    monkeypatch.setenv("HPS_COUNTER_FILE", str(counter))
    monkeypatch.setenv("HPS_INTERRUPT_AT", "3")  # 2 folds per candidate: dies in candidate 1
    cfg = _cfg("resume", model={"builder": "engine_builders:build_interrupts", "fixed": {}},
               train={"epochs": 1}, search={"n_trials": 2})
    ctx = _ctx(cfg, sqlite_url)
    with pytest.raises(KeyboardInterrupt):
        ctx.engine.run(ctx)
    study = optuna.load_study(study_name="resume", storage=sqlite_url)
    assert len(study.get_trials()) == 1  # stored as each finished, not at the end
    assert not ctx.engine.is_complete(ctx)
    monkeypatch.setenv("HPS_INTERRUPT_AT", "0")
    counter.write_text("0")
    ctx = _run(cfg, sqlite_url)
    assert int(counter.read_text()) == 2  # only the missing candidate was trained (2 folds)
    trials = optuna.load_study(study_name="resume", storage=sqlite_url).get_trials()
    assert sorted(t.user_attrs[TRIAL.CANDIDATE] for t in trials) == [0, 1]
    assert [n for n, *_ in ctx.observer.done] == [1]
    assert ctx.engine.is_complete(ctx)


def test_grid_covers_the_grid_and_a_failed_candidate_does_not_stop_it(sqlite_url):
    cfg = _cfg("grid", "grid", model={"builder": "engine_builders:build_fails_on_width", "fixed": {}},
               space={"n_neurons": {"choice": [8, 13]},
                      "learning_rate": {"float": [0.01, 0.05], "log": True, "grid": 2}},
               train={"epochs": 1})
    ctx = _run(cfg, sqlite_url)
    trials = ctx.study.get_trials()
    seen = {(t.params["n_neurons"], round(t.params["learning_rate"], 6)) for t in trials}
    assert seen == {(8, 0.01), (8, 0.05), (13, 0.01), (13, 0.05)}
    for t in trials:
        if t.params["n_neurons"] == 13:
            assert t.state == TrialState.FAIL and t.user_attrs[TRIAL.FAILURE] == "ValueError: width 13 is unlucky"
        else:
            assert t.state == TrialState.COMPLETE
    # ParameterGrid's order: keys sorted, the last varies fastest
    assert [s for _, s, _, _ in ctx.observer.done] == ["COMPLETE", "FAIL", "COMPLETE", "FAIL"]
    assert "width 13 is unlucky" in ctx.observer.done[1][3]
    # a failed candidate is finished too
    assert ctx.engine.plan(ctx) == 4 and ctx.engine.is_complete(ctx) and ctx.engine.n_trials(cfg) is None
    with pytest.raises(ConfigError, match="space.learning_rate"):
        _cfg("nogrid", "grid")


class _Toy(ClassifierMixin, BaseEstimator):
    """A Keras-free classifier whose score depends only on its params (halving's schedule test)."""

    def __init__(self, a: float = 0.0, epochs: int = 1) -> None:
        self.a = a
        self.epochs = epochs

    def fit(self, X: Any, y: Any) -> _Toy:
        self.classes_ = np.unique(y)
        return self

    def predict(self, X: Any) -> np.ndarray:
        return np.zeros(len(X), dtype=int)

    def score(self, X: Any, y: Any) -> float:
        return -abs(self.a - 0.3) * self.epochs


@pytest.mark.parametrize(("n", "low", "high", "factor"), [(10, 1, 27, 3), (4, 2, 4, 2), (20, 1, 5, 2), (9, 3, 81, 3)])
def test_halving_schedule_is_sklearns(n, low, high, factor):
    from sklearn.experimental import enable_halving_search_cv  # noqa: F401
    from sklearn.model_selection import HalvingRandomSearchCV, ParameterSampler

    X, y = np.zeros((12, 1)), np.array([0, 1] * 6)
    dists = {"a": [i / 20 for i in range(20)]}
    sk = HalvingRandomSearchCV(_Toy(), dists, n_candidates=n, resource="epochs", min_resources=low,
                               max_resources=high, factor=factor, cv=2, random_state=0, refit=False).fit(X, y)
    rungs = halving_rungs(n, low, high, factor)
    assert [r.epochs for r in rungs] == sk.n_resources_ and [r.n_candidates for r in rungs] == sk.n_candidates_
    order: list[tuple[float, int, int]] = []

    def evaluate(params: dict[str, Any], index: int, rung: Any) -> float:
        order.append((params["a"], rung.epochs, index))
        return -abs(params["a"] - 0.3) * rung.epochs

    run_rungs(list(ParameterSampler(dists, n, random_state=0)), rungs, evaluate)
    assert [(a, e) for a, e, _ in order] == [(p["a"], p["epochs"]) for p in sk.cv_results_["params"]]
    assert [i for *_, i in order] == list(range(len(order)))
    assert [r.last for r in rungs] == [False] * (len(rungs) - 1) + [True]


def _no_training(*args: Any, **kwargs: Any) -> Any:
    raise AssertionError("a stored candidate was trained again")


def test_halving_uses_epochs_as_resource(sqlite_url, monkeypatch):
    cfg = _cfg("halv", "halving", train={"epochs": 4, "early_stopping": None},
               search={"n_trials": 2, "factor": 2, "min_resource": 2, "cv": 2})
    ctx = _ctx(cfg, sqlite_url)
    assert not ctx.engine.is_complete(ctx)
    ctx.engine.run(ctx)
    trials = optuna.load_study(study_name="halv", storage=sqlite_url).get_trials()
    assert len(trials) == ctx.engine.plan(ctx) == 2 + 1
    resources = [t.user_attrs[TRIAL.N_RESOURCES] for t in trials]
    assert resources == [2, 2, 4]
    assert [t.user_attrs[TRIAL.HALVING_ITER] for t in trials] == [0, 0, 1]
    for t in trials:  # no early stopping: each trained its rung's epochs
        assert t.user_attrs[TRIAL.EPOCHS] == t.user_attrs[TRIAL.N_RESOURCES]
        # only the last rung competes for the best (as in sklearn); earlier rungs are stopped (PRUNED)
        assert t.state == (TrialState.COMPLETE if t.user_attrs[TRIAL.N_RESOURCES] == 4 else TrialState.PRUNED)
    assert all(1 in t.intermediate_values for t in trials if t.state == TrialState.PRUNED)
    assert ctx.engine.is_complete(ctx) and ctx.study.user_attrs[STUDY.COMPLETE] is True
    best = ctx.study.best_trial
    assert ctx.engine.refit(ctx, dict(best.params), best).epochs == 4  # the best's rung, not train.epochs
    # resumed, halving reads the stored scores to pick the next rung: nothing is trained again
    monkeypatch.setattr(sklearn_engine, "fit_fold", _no_training)
    again = _run(cfg, sqlite_url)
    assert len(again.study.get_trials()) == 3 and again.observer.done == []
    with pytest.raises(ConfigError, match="space.epochs"):
        _cfg("halv2", "halving", space={"epochs": {"int": [1, 4]}})


@pytest.mark.parametrize("pack", ["auto", 1])
def test_halving_stopped_before_its_last_rung_has_the_highest_rung_reached_as_its_result(sqlite_url, pack):
    """A stop rule that trips before halving's last rung (here a callback's ``study.stop()`` at the
    second candidate of rung 1; ``search.timeout`` in tests/packing/test_pack_deadline.py) left every
    candidate PRUNED and the study without a result ("no completed trial"). The candidates of the
    highest rung reached are its result: recorded again as COMPLETE, one line, one decision;
    cv_results_ lists each evaluation once; a resumed search goes on to the last rung. Packed (auto:
    3 candidates x 2 folds in one pack, so the third is recorded past the stop: its work is done)
    and unpacked (the third is not started)."""
    from hpsearch.engines.halving import rung_reached
    from hpsearch.search.cvresults import cv_results

    cfg = _cfg(f"halvstop{pack}", "halving", train={"epochs": 4, "early_stopping": None, "pack": pack},
               search={"n_trials": 3, "factor": 2, "min_resource": 1, "cv": 2})
    ctx = _ctx(cfg, sqlite_url)

    def stop_at_two(study: Any, trial: Any) -> None:
        if trial.number == 1:
            study.stop()

    ctx.trial_callbacks = [stop_at_two]
    ctx.engine.run(ctx)
    n = 3 if pack == "auto" else 2  # rung 1's candidates recorded
    trials = ctx.study.get_trials()
    assert [t.state for t in trials] == [TrialState.PRUNED] * n + [TrialState.COMPLETE] * n
    for pruned, result in zip(trials[:n], trials[n:]):
        assert result.user_attrs[TRIAL.RESULT_OF] == pruned.number and result.params == pruned.params
        assert result.value == pytest.approx(np.mean(pruned.user_attrs[TRIAL.FOLD_SCORES]))
        assert result.user_attrs[TRIAL.N_RESOURCES] == 1 and result.intermediate_values == pruned.intermediate_values
    decision = ctx.study.user_attrs[STUDY.DECISIONS]["halving_result"]
    assert decision["value"] == {"rung": 0, "trials": [n, 2 * n - 1]}
    assert "stopped at halving rung 1 of 2" in decision["line"] and "called study.stop()" in decision["line"]
    assert ctx.study.best_trial.number >= n and not ctx.study.user_attrs.get(STUDY.COMPLETE)
    assert len(cv_results(ctx.study, 1.0)["params"]) == n  # each evaluation once
    # resumed without the callback: rung 1's last candidates, then the last rung; nothing recorded twice
    again = _run(cfg, sqlite_url)
    trials = again.study.get_trials()
    assert [t.user_attrs[TRIAL.HALVING_ITER] for t in trials] == [0] * (2 * n) + [0] * (3 - n) + [1, 1]
    assert [t.state for t in trials[-2:]] == [TrialState.COMPLETE] * 2
    assert again.study.user_attrs[STUDY.COMPLETE] is True and rung_reached(trials) == []
    assert len(cv_results(again.study, 1.0)["params"]) == 5


def test_every_candidate_failing_stops_with_a_clear_error(sqlite_url):
    cfg = _cfg("allfail", model={"builder": "engine_builders:build_always_fails", "fixed": {}},
               space={"n_neurons": {"int": [4, 8]}}, search={"max_failures_in_row": 2})
    ctx = _ctx(cfg, sqlite_url)
    with pytest.raises(StudyFailedError, match="2 candidates failed in a row"):
        ctx.engine.run(ctx)
    trials = ctx.study.get_trials()
    assert len(trials) == 2 and all(t.state == TrialState.FAIL for t in trials)
    assert trials[0].user_attrs[TRIAL.FAILURE] == "RuntimeError: this builder never works"


def test_n_jobs_keeps_epochs_curves_and_failure_reasons(sqlite_url):
    """Folds run in joblib worker processes: what they learn comes back in their results."""
    cfg = _cfg("jobs", "grid", model={"builder": "engine_builders:build_fails_on_width", "fixed": {}},
               space={"n_neurons": {"choice": [8, 13]}}, train={"epochs": 2, "early_stopping": None},
               search={"n_jobs": 2})
    ctx = _run(cfg, sqlite_url)
    by_width = {t.params["n_neurons"]: t for t in ctx.study.get_trials()}
    ok, bad = by_width[8], by_width[13]
    assert ok.state == TrialState.COMPLETE and ok.user_attrs[TRIAL.EPOCHS_PER_FOLD] == [2, 2]
    assert sorted(ok.intermediate_values) == [0, 1]
    assert bad.state == TrialState.FAIL and bad.user_attrs[TRIAL.FAILURE] == "ValueError: width 13 is unlucky"


def test_regression_study_stores_positive_mse(sqlite_url):
    """Also the unscaled path: the pipeline's preprocessing is "passthrough"."""
    cfg = parse_study_config({
        "name": "reg", "data": {"source": "sklearn:diabetes", "max_rows": 120, "scale": "none"},
        "model": {"fixed": {"optimizer": "adam"}},
        "space": {"n_neurons": {"int": [4, 16]}, "learning_rate": {"float": [0.01, 0.05], "log": True}},
        "train": {"epochs": 2, "batch_size": 16},
        "search": {"engine": "random", "n_trials": 1, "cv": 2, "metric": "mse"},
    })
    ctx = _run(cfg, sqlite_url)
    assert ctx.study.direction.name == "MINIMIZE" and ctx.data.scaler() == "passthrough"
    assert all(t.value > 0 and math.isfinite(t.value) for t in ctx.study.get_trials())
