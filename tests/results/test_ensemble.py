"""Ensembles of the best: search.ensemble keeps enough models, load_best(top_k=K) averages them,
`hpsearch best STUDY --ensemble K` scores the ensemble next to the single best."""

from __future__ import annotations

import numpy as np
import optuna

from hpsearch.records import STUDY, TRIAL
from hpsearch.storage.artifacts import artifact_store_for, load_model_artifacts
from hpsearch.study.run import run_study
from hpsearch.study.validate import parse_study_config
from tests.study_dicts import MINIMAL, with_


def test_search_ensemble_raises_keep_models():
    assert parse_study_config(with_(MINIMAL, search={"n_trials": 3, "ensemble": 5})).search.keep_models == 5
    assert parse_study_config(with_(MINIMAL, search={"n_trials": 3, "ensemble": 2, "keep_models": 8})
                              ).search.keep_models == 8


def test_top_k_ensemble_averages_the_stored_models_and_best_scores_it(sqlite_url, tmp_path, capsys):
    import hpsearch
    from hpsearch.cli import main

    art = str(tmp_path / "a")
    cfg = parse_study_config({
        "name": "ens", "data": {"source": "sklearn:iris", "split": {"valid": 0.25, "test": 0.2, "seed": 0}},
        "model": {"builder": "mlp", "fixed": {"optimizer": "adam", "n_hidden": 1}},
        "space": {"n_neurons": {"int": [4, 16]}, "learning_rate": {"float": [0.005, 0.05], "log": True}},
        "train": {"epochs": 2, "batch_size": 16, "early_stopping": None},
        "search": {"engine": "optuna", "n_trials": 4, "seed": 0, "sampler": "random", "pruner": "none",
                   "keep_models": 1, "ensemble": 3},
    })
    run_study(cfg, storage=sqlite_url, artifacts=art)
    study = optuna.load_study(study_name="ens", storage=sqlite_url)
    X = np.random.default_rng(0).normal(5.0, 1.5, size=(7, 4))
    ens = hpsearch.load_best("ens", storage=sqlite_url, artifacts=art, top_k=3)
    store = artifact_store_for(sqlite_url, art)
    ranked = sorted((t for t in study.get_trials() if t.state.name == "COMPLETE"), key=lambda t: -t.value)
    assert ens.trials == [t.number for t in ranked[:3]]
    probs = []
    for t in ranked[:3]:
        ua = t.user_attrs
        model, pre = load_model_artifacts(store, ua[TRIAL.MODEL_ARTIFACT], ua[TRIAL.PREPROCESS_ARTIFACT])
        probs.append(model.predict(pre.transform(X), verbose=0))
    np.testing.assert_allclose(ens.predict_proba(X), np.mean(probs, axis=0), rtol=1e-6)
    assert set(ens.predict(X)) <= set(ens.classes_)

    rc = main(["best", "ens", "--storage", sqlite_url, "--artifacts", art, "--ensemble", "3"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "ensemble of the top 3 (trials " in out and "single best (trial " in out and "test " in out
    rc = main(["best", "ens", "--storage", sqlite_url, "--artifacts", art, "--ensemble", "9"])
    err = capsys.readouterr().err
    assert rc == 2 and "keeps 3 trained models, fewer than the 9 asked for" in err and len(err.splitlines()) == 1


def test_a_random_search_refits_its_top_k_for_the_ensemble_and_runs_enqueued_sets_first(sqlite_url, tmp_path):
    import hpsearch
    from hpsearch.trials.context import NullObserver

    art = str(tmp_path / "a")
    cfg = parse_study_config({
        "name": "rens", "data": {"source": "sklearn:iris", "max_rows": 60, "split": {"valid": 0.25, "test": 0.2}},
        "model": {"builder": "mlp", "fixed": {"optimizer": "adam", "n_hidden": 1}},
        "space": {"n_neurons": {"int": [4, 16]}},
        "train": {"epochs": 1, "batch_size": 16, "early_stopping": None},
        "search": {"engine": "random", "n_trials": 2, "cv": 2, "seed": 0, "ensemble": 2, "enqueue": [{"n_neurons": 9}]},
    })
    said: list[str] = []
    obs = NullObserver()
    obs.message = said.append  # type: ignore[method-assign]
    run_study(cfg, storage=sqlite_url, artifacts=art, observer=obs)
    study = optuna.load_study(study_name="rens", storage=sqlite_url)
    assert study.trials[0].params == {"n_neurons": 9}  # the enqueued set is the first candidate
    top = [t.number for t in sorted((t for t in study.get_trials() if t.state.name == "COMPLETE"),
                                    key=lambda t: (-t.value, t.number))[:2]]
    assert list(study.user_attrs[STUDY.ENSEMBLE_MODELS]) == [str(top[1])]  # the best is the refit finalize made
    assert any(m.startswith(f"hpsearch: search.ensemble = 2: refitted trials {top[1]}") for m in said)
    ens = hpsearch.load_best("rens", storage=sqlite_url, artifacts=art, top_k=2)
    assert ens.trials == top and ens.predict_proba(np.zeros((2, 4))).shape == (2, 3)
    said.clear()
    run_study(cfg, storage=sqlite_url, artifacts=art, observer=obs)  # complete: nothing refitted again
    assert not any("refitted" in m for m in said)
