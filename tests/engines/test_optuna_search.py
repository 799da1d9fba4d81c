"""The Optuna engine: pruning, divergence, failures, k-fold, stored models and load_best."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import optuna
import pytest
from optuna.trial import TrialState

from hpsearch.data.prepare import prepare_data
from hpsearch.records import STUDY, TRIAL
from hpsearch.study.run import run_study
from hpsearch.study.validate import parse_study_config

HERE = Path(__file__).resolve().parents[1]  # tests/: the helper modules


def _cfg(name: str, **over):
    d = {
        "name": name,
        "data": {"source": "sklearn:iris", "split": {"valid": 0.25, "test": 0.2, "seed": 0}},
        "model": {"builder": "mlp", "fixed": {"optimizer": "adam", "n_hidden": 1}},
        "space": {"n_neurons": {"int": [4, 16]}, "learning_rate": {"float": [0.005, 0.05], "log": True}},
        "train": {"epochs": 4, "batch_size": 16, "early_stopping": {"patience": 20}},
        "search": {"engine": "optuna", "n_trials": 3, "seed": 0, "sampler": "random", "pruner": "none"},
    }
    for k, v in over.items():
        d[k] = {**d.get(k, {}), **v} if isinstance(v, dict) and k != "space" else v
    return parse_study_config(d)


def _enqueue(name: str, url: str, direction: str, params: list[dict]):
    study = optuna.create_study(study_name=name, storage=url, direction=direction)
    for p in params:
        study.enqueue_trial(p)
    return study


def test_pruned_trials_train_fewer_epochs(sqlite_url, tmp_path):
    good = {"n_neurons": 16, "learning_rate": 0.05}
    bad = {"n_neurons": 4, "learning_rate": 1e-5}
    _enqueue("prune", sqlite_url, "maximize", [good] * 5 + [bad] * 2)
    cfg = _cfg("prune", space={"n_neurons": {"int": [4, 16]}, "learning_rate": {"float": [1e-5, 0.05], "log": True}},
               train={"epochs": 8}, search={"n_trials": 7, "pruner": "median"})
    res = run_study(cfg, storage=sqlite_url, artifacts=str(tmp_path / "art"))
    study = optuna.load_study(study_name="prune", storage=sqlite_url)
    pruned = [t for t in study.get_trials() if t.state == TrialState.PRUNED]
    complete = [t for t in study.get_trials() if t.state == TrialState.COMPLETE]
    assert len(pruned) >= 1 and res.n_pruned == len(pruned)
    for t in pruned:
        assert t.user_attrs[TRIAL.EPOCHS] < 8
        assert len(t.intermediate_values) == t.user_attrs[TRIAL.EPOCHS]
    assert all(t.user_attrs[TRIAL.EPOCHS] == 8 for t in complete)
    assert max(t.user_attrs[TRIAL.EPOCHS] for t in pruned) < min(t.user_attrs[TRIAL.EPOCHS] for t in complete)
    # per-epoch validation accuracy is stored as intermediate values
    assert all(0.0 <= v <= 1.0 for t in complete for v in t.intermediate_values.values())


def test_load_best_gives_back_identical_predictions(sqlite_url, tmp_path):
    import hpsearch

    cfg = _cfg("lb")
    run_study(cfg, storage=sqlite_url, artifacts=str(tmp_path / "art"))
    study = optuna.load_study(study_name="lb", storage=sqlite_url)
    est = hpsearch.load_best("lb", storage=sqlite_url, artifacts=str(tmp_path / "art"))
    data = prepare_data(cfg, 1)
    pre = data.preprocessor
    X_raw = data.X_test * np.asarray(pre.scale, dtype=np.float32) + np.asarray(pre.mean, dtype=np.float32)
    y_raw = np.asarray(pre.classes)[data.y_test]
    # the score recorded at the end of the run (in-memory model) == the reloaded model's score
    assert est.score(X_raw, y_raw) == pytest.approx(study.user_attrs[STUDY.TEST_SCORE])
    # and the stored best trial's own model gives identical predictions
    from hpsearch.storage.artifacts import artifact_store_for, load_model_artifacts

    best = study.best_trial
    model, _ = load_model_artifacts(artifact_store_for(sqlite_url, str(tmp_path / "art")),
                                    best.user_attrs[TRIAL.MODEL_ARTIFACT], best.user_attrs[TRIAL.PREPROCESS_ARTIFACT])
    np.testing.assert_array_equal(est.predict_proba(X_raw), model.predict(data.X_test, verbose=0))
    assert set(est.predict(X_raw)) <= set(pre.classes)
    assert est.predict_proba(X_raw).shape == (len(X_raw), 3)
    assert study.user_attrs[STUDY.BEST_TRIAL] == best.number
    # the best trial led the study when it finished, so it carries its training-curve PNG
    from optuna.artifacts import get_all_artifact_meta

    names = {m.filename for m in get_all_artifact_meta(best, storage=study._storage)}
    assert {"model.keras", "preprocess.json", "training-curve.png"} <= names
    assert best.user_attrs[TRIAL.CURVE_ARTIFACT]


def test_diverging_trial_fails_with_reason_and_study_goes_on(sqlite_url, tmp_path):
    _enqueue("nan", sqlite_url, "maximize", [{"n_neurons": 16, "learning_rate": 1e6, "optimizer": "sgd"}])
    cfg = _cfg("nan", space={"n_neurons": {"int": [4, 16]}, "learning_rate": {"float": [0.01, 1e6], "log": True},
                             "optimizer": {"choice": ["sgd", "adam"]}},
               model={"fixed": {"n_hidden": 2}}, search={"n_trials": 2})
    run_study(cfg, storage=sqlite_url, artifacts=str(tmp_path / "art"))
    trials = optuna.load_study(study_name="nan", storage=sqlite_url).get_trials()
    first = trials[0]
    assert first.state == TrialState.FAIL
    assert "diverged" in first.user_attrs[TRIAL.FAILURE]
    assert sum(t.state == TrialState.COMPLETE for t in trials) == 2


def test_trial_that_raises_is_recorded_and_study_survives(sqlite_url, tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(HERE))
    _enqueue("raise", sqlite_url, "maximize", [{"n_neurons": 13}])
    cfg = _cfg("raise", model={"builder": "engine_builders:build_fails_on_width", "fixed": {}},
               space={"n_neurons": {"int": [8, 16]}}, search={"n_trials": 2, "sampler": "tpe"})
    res = run_study(cfg, storage=sqlite_url, artifacts=str(tmp_path / "art"))
    trials = optuna.load_study(study_name="raise", storage=sqlite_url).get_trials()
    assert trials[0].state == TrialState.FAIL
    assert trials[0].user_attrs[TRIAL.FAILURE] == "ValueError: width 13 is unlucky"
    assert res.n_complete == 2 and res.n_failed == 1


def _run_failing(name: str, builder: str, train: str, search: str, sqlite_url: str, tmp_path, monkeypatch,
                 capsys) -> tuple[int, str]:
    """``hpsearch run`` of an iris study whose builder (engine_builders) fails: (exit code, stderr)."""
    from hpsearch.cli import main

    monkeypatch.syspath_prepend(str(HERE))
    path = tmp_path / "s.yaml"
    path.write_text(f"name: {name}\ndata: {{source: 'sklearn:iris'}}\nmodel: {{builder: 'engine_builders:{builder}'}}\n"
                    f"space: {{n_neurons: {{int: [4, 8]}}}}\ntrain: {train}\nsearch: {search}\n")
    rc = main(["run", str(path), "--storage", sqlite_url, "--artifacts", str(tmp_path / "a"), "--no-progress"])
    return rc, capsys.readouterr().err


def test_failures_in_a_row_stop_the_study(sqlite_url, tmp_path, monkeypatch, capsys):
    rc, err = _run_failing("allfail", "build_always_fails", "{epochs: 2}",
                           "{engine: optuna, n_trials: 10, max_failures_in_row: 3}", sqlite_url, tmp_path, monkeypatch,
                           capsys)
    assert rc == 1
    assert "3 trials failed in a row" in err and "never works" in err and "Traceback" not in err
    trials = optuna.load_study(study_name="allfail", storage=sqlite_url).get_trials()
    assert len(trials) == 3 and all(t.state == TrialState.FAIL for t in trials)
    assert "check the space ranges and the data" in err  # an error of the trial's own: the default hint


def test_a_builder_that_returns_no_model_stops_with_its_own_fix(sqlite_url, tmp_path, monkeypatch, capsys):
    """The streak's hint was "check the space ranges and the data" whatever the last failure said."""
    rc, err = _run_failing("nomodel", "build_returns_none", "{epochs: 1, pack: 1}",
                           "{engine: optuna, n_trials: 4, max_failures_in_row: 2}", sqlite_url, tmp_path, monkeypatch,
                           capsys)
    assert rc == 1 and "Traceback" not in err, err
    assert ("2 trials failed in a row (last: ConfigError: model.builder: engine_builders:build_returns_none returned"
            " NoneType, not a keras.Model); fix what it names") in err


def test_kfold_inside_a_trial_reports_fold_mean(sqlite_url, tmp_path):
    cfg = _cfg("cv", search={"n_trials": 2, "cv": 2}, train={"epochs": 3})
    run_study(cfg, storage=sqlite_url, artifacts=str(tmp_path / "art"))
    study = optuna.load_study(study_name="cv", storage=sqlite_url)
    for t in study.get_trials():
        assert t.state == TrialState.COMPLETE
        folds = t.user_attrs[TRIAL.FOLD_SCORES]
        assert len(folds) == 2
        assert t.value == pytest.approx(max(t.intermediate_values.values()))
        assert t.value == pytest.approx(np.mean(folds))
        assert len(t.intermediate_values) == 3
    assert study.user_attrs[STUDY.TEST_SCORE] is not None


def test_rerun_continues_to_budget_and_keeps_best_k_models(sqlite_url, tmp_path):
    art = tmp_path / "art"
    cfg = _cfg("cont", search={"n_trials": 2, "keep_models": 1})
    run_study(cfg, storage=sqlite_url, artifacts=str(art))
    cfg4 = _cfg("cont", search={"n_trials": 4, "keep_models": 1})
    res = run_study(cfg4, storage=sqlite_url, artifacts=str(art))
    assert res.n_complete == 4 and not res.already_complete
    again = run_study(cfg4, storage=sqlite_url, artifacts=str(art))
    assert again.already_complete and again.n_complete == 4
    # disk stays bounded: model files of trials outside the best K are removed
    study = optuna.load_study(study_name="cont", storage=sqlite_url)
    removed = set(study.user_attrs.get(STUDY.REMOVED_ARTIFACTS, []))
    live_models = [t for t in study.get_trials() if t.user_attrs.get(TRIAL.MODEL_ARTIFACT)
                   and t.user_attrs[TRIAL.MODEL_ARTIFACT] not in removed]
    assert len(live_models) == 1 and live_models[0].number == study.best_trial.number
    files = [p for p in art.rglob("*") if p.is_file()]
    assert len(files) <= 3 * 3  # (model, preprocessing, curve) for the kept one + removed curves at most


@pytest.mark.parametrize("sampler", ["tpe", "cmaes", "random", "grid", "qmc", "gp"])
def test_every_sampler_runs(sampler, sqlite_url, tmp_path):
    space = {"n_neurons": {"int": [4, 8], "step": 4}, "learning_rate": {"float": [0.01, 0.05], "log": True, "grid": 1}}
    cfg = _cfg(f"s-{sampler}", space=space, train={"epochs": 1},
               search={"n_trials": 2, "sampler": sampler, "pruner": "hyperband"})
    res = run_study(cfg, storage=sqlite_url, artifacts=str(tmp_path / "art"))
    assert res.n_complete + res.n_pruned == 2


def test_regression_with_r2_metric(sqlite_url, tmp_path):
    cfg = parse_study_config({
        "name": "r2", "data": {"source": "sklearn:diabetes", "max_rows": 200},
        "model": {"fixed": {"optimizer": "adam", "learning_rate": 0.05}},
        "space": {"n_neurons": {"int": [4, 16]}},
        "train": {"epochs": 3, "batch_size": 16},
        "search": {"engine": "optuna", "n_trials": 2, "metric": "r2", "pruner": "none"},
    })
    run_study(cfg, storage=sqlite_url, artifacts=str(tmp_path / "art"))
    study = optuna.load_study(study_name="r2", storage=sqlite_url)
    assert study.direction.name == "MAXIMIZE"
    assert all(v < 1.0 for t in study.get_trials() for v in t.intermediate_values.values())
    assert "r2" in study.user_attrs[STUDY.TEST_METRICS]


def test_changing_the_metric_of_a_study_is_refused(sqlite_url, tmp_path):
    from hpsearch.errors import UserError

    run_study(_cfg("m", search={"n_trials": 1}, train={"epochs": 1}), storage=sqlite_url,
              artifacts=str(tmp_path / "art"))
    with pytest.raises(UserError, match="exists with metric accuracy"):
        run_study(_cfg("m", search={"n_trials": 2, "metric": "loss", "direction": "maximize"}),
                  storage=sqlite_url, artifacts=str(tmp_path / "art"))


def test_without_early_stopping_the_stored_model_is_the_best_epoch(sqlite_url, tmp_path):
    """The trial value is the best epoch's; the stored model must be that epoch's too."""
    import hpsearch

    cfg = _cfg("noes", search={"n_trials": 1}, train={"epochs": 6, "early_stopping": None},
               space={"learning_rate": {"float": [0.3, 0.6], "log": True}},
               model={"fixed": {"optimizer": "sgd", "n_hidden": 1, "n_neurons": 8}})
    run_study(cfg, storage=sqlite_url, artifacts=str(tmp_path / "art"))
    study = optuna.load_study(study_name="noes", storage=sqlite_url)
    data = prepare_data(cfg, 1)
    est = hpsearch.load_best("noes", storage=sqlite_url, artifacts=str(tmp_path / "art"))
    pre = data.preprocessor
    X_raw = data.X_valid * np.asarray(pre.scale, dtype=np.float32) + np.asarray(pre.mean, dtype=np.float32)
    valid_acc = est.score(X_raw, np.asarray(pre.classes)[data.y_valid])
    assert valid_acc == pytest.approx(study.best_value, abs=1e-6)


def test_export_refuses_to_overwrite(sqlite_url, tmp_path, capsys):
    from hpsearch.cli import main

    run_study(_cfg("ex", search={"n_trials": 1}, train={"epochs": 1}), storage=sqlite_url,
              artifacts=str(tmp_path / "art"))
    out = tmp_path / "best.keras"
    args = ["best", "ex", "--storage", sqlite_url, "--artifacts", str(tmp_path / "art"), "--export", str(out)]
    assert main(args) == 0 and out.exists() and out.with_suffix(".preprocess.json").exists()
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "already exists" in err and len(err.strip().splitlines()) == 1


def test_gp_sampler_without_pytorch_is_one_line_naming_the_extra(monkeypatch, tmp_path):
    """`sampler: gp` needs PyTorch (the `gp` extra): without it, validation refuses the study."""
    import importlib.util

    from hpsearch.errors import ConfigError

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "torch" else real(name, *a))
    with pytest.raises(ConfigError, match=r"gp needs PyTorch; install it with pip install 'hpsearch\[gp\]'") as e:
        _cfg("gp", search={"sampler": "gp"})
    assert "\n" not in str(e.value)


def test_one_default_min_resource_for_halving_and_hyperband():
    """`search.min_resource` means the same for both engines: epochs // factor**3 by default."""
    import optuna as _optuna

    from hpsearch.engines.base import min_resource
    from hpsearch.engines.samplers import make_pruner, pruning_steps

    cfg = _cfg("mr", train={"epochs": 100}, search={"pruner": "hyperband"})
    assert min_resource(cfg) == 3
    assert pruning_steps(cfg, make_pruner(cfg)) == {3, 9, 27, 81}
    assert pruning_steps(cfg, _optuna.pruners.NopPruner()) == set()
    assert min_resource(_cfg("mr2", train={"epochs": 100}, search={"min_resource": 5})) == 5


def test_cv_folds_are_scaled_on_their_own_training_rows(sqlite_url, tmp_path, monkeypatch):
    """Preprocessing inside the folds: every fold model trains on rows standardised with that
    fold's own statistics (the held-out fold does not leak into them)."""
    from hpsearch.trials.runner import TrialRunner

    seen: list[np.ndarray] = []
    real_fit = TrialRunner._fit

    def spy(self, model, X, y, Xv, yv, epochs, callbacks, initial_epoch=0):
        if initial_epoch == 0:
            seen.append(np.asarray(X))
        return real_fit(self, model, X, y, Xv, yv, epochs, callbacks, initial_epoch)

    monkeypatch.setattr(TrialRunner, "_fit", spy)
    cfg = _cfg("cvscale", search={"n_trials": 1, "cv": 3}, train={"epochs": 1, "batch_size": 1})
    run_study(cfg, storage=sqlite_url, artifacts=str(tmp_path / "art"))
    folds = seen[:3]
    assert len(folds) == 3
    for X in folds:  # batch_size 1: no padding rows, so the fold's own mean is exactly 0
        np.testing.assert_allclose(X.mean(axis=0), 0.0, atol=1e-5)


def test_one_process_run_uses_the_trial_loop_and_requeues_a_stale_trial(sqlite_url, tmp_path, monkeypatch):
    """`hpsearch run` without --workers runs the same loop as the workers: a trial left RUNNING by a
    killed run (its heartbeat stopped) is failed and its re-queued copy is run, within the budget."""
    import time as _time

    from hpsearch.storage import open_storage

    monkeypatch.setenv("HPSEARCH_HEARTBEAT_INTERVAL", "1")
    monkeypatch.setenv("HPSEARCH_HEARTBEAT_GRACE", "2")
    cfg = _cfg("stale", search={"n_trials": 2})
    run_study(_cfg("stale", search={"n_trials": 1}), storage=sqlite_url, artifacts=str(tmp_path / "art"))
    st = open_storage(sqlite_url, heartbeat=True, heartbeat_interval=1, grace_period=2)
    study = optuna.load_study(study_name="stale", storage=st)
    killed = study.ask({"n_neurons": optuna.distributions.IntDistribution(4, 16),
                        "learning_rate": optuna.distributions.FloatDistribution(0.005, 0.05, log=True)})
    st.record_heartbeat(st.get_trial_id_from_study_id_trial_number(
        st.get_study_id_from_name("stale"), killed.number))
    _time.sleep(2.5)  # the heartbeat goes stale
    res = run_study(cfg, storage=sqlite_url, artifacts=str(tmp_path / "art"))
    trials = optuna.load_study(study_name="stale", storage=sqlite_url).get_trials()
    assert trials[killed.number].state == TrialState.FAIL
    copies = [t for t in trials if t.number > killed.number and t.params == trials[killed.number].params]
    assert copies and copies[0].state == TrialState.COMPLETE
    assert res.n_complete == 2
