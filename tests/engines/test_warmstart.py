"""Warm starts: search.enqueue runs known configurations first, once per study (also with three
workers on PostgreSQL); search.warm_start copies the compatible trials of an earlier study."""

from __future__ import annotations

import threading
from types import SimpleNamespace

import optuna
import pytest

from hpsearch.engines.warmstart import warm_start
from hpsearch.execution import budget as B
from hpsearch.records import STUDY, TRIAL
from hpsearch.storage import open_storage
from hpsearch.study.run import run_study
from hpsearch.study.validate import parse_study_config
from hpsearch.trials.context import NullObserver
from tests.study_dicts import MINIMAL, one_line_error, with_


def _cfg(name: str, epochs: int = 1, space: dict | None = None, **search):
    return parse_study_config({
        "name": name, "data": {"source": "sklearn:iris", "split": {"valid": 0.25, "test": 0.2, "seed": 0}},
        "model": {"builder": "mlp", "fixed": {"optimizer": "adam", "n_hidden": 1}},
        "space": space or {"n_neurons": {"int": [4, 16]}, "learning_rate": {"float": [1e-4, 0.05], "log": True}},
        "train": {"epochs": epochs, "batch_size": 16, "early_stopping": None},
        "search": {"engine": "optuna", "seed": 0, "sampler": "random", "pruner": "none", **search},
    })


@pytest.mark.parametrize(("search", "expected"), [
    ({"enqueue": [{"n_hidden": 2}]}, "search.enqueue[0].n_hidden: not a parameter of space; use one of n_neurons"),
    ({"enqueue": [{"n_neurons": 9}]}, "search.enqueue[0].n_neurons: 9 is not a value space.n_neurons can take"),
    ({"warm_start": {"study": "m"}}, "search.warm_start.study: is this study itself"),
    ({"engine": "random", "enqueue": [{"n_neurons": 9}]}, "search.enqueue[0].n_neurons: 9 is not a value"),
    ({"engine": "grid", "warm_start": {"study": "x"}}, "search.warm_start: engine grid draws its candidates without"),
    ({"engine": "random", "warm_start": {"study": "x"}}, "use search.engine: optuna, or put the earlier study's"),
    ({"engine": "random", "n_trials": 1, "enqueue": [{"n_neurons": 2}, {"n_neurons": 3}]},
     "search.enqueue: 2 parameter sets, more than the 1 candidates of engine random; raise search.n_trials"),
])
def test_bad_warm_starts_are_one_line_errors(search, expected):
    d = with_(MINIMAL, search={**MINIMAL["search"], **search})
    assert expected in one_line_error(parse_study_config, d, where="s.yaml")


def test_an_enqueued_set_off_the_grid_is_a_one_line_error():
    d = with_(MINIMAL, space={"learning_rate": {"float": [0.001, 0.1], "log": True, "grid": 3}},
              search={"engine": "grid", "enqueue": [{"learning_rate": 0.05}]})
    assert "search.enqueue[0]: {'learning_rate': 0.05} is no point of the grid" in one_line_error(
        parse_study_config, d, where="s.yaml")


@pytest.mark.parametrize("engine", ["random", "halving", "grid"])
def test_sklearn_engines_put_enqueued_configurations_first(engine):
    from hpsearch.engines.base import get_engine

    space = {"n_neurons": {"int": [4, 16]} if engine != "grid" else [4, 8, 16], "activation": ["relu", "tanh"]}
    first = [{"n_neurons": 16}, {"activation": "tanh"}]
    cfg = parse_study_config(with_(MINIMAL, space=space, search={"engine": engine, "n_trials": 4, "seed": 0,
                                                                  "enqueue": first}))
    plain = parse_study_config(with_(MINIMAL, space=space, search={"engine": engine, "n_trials": 4, "seed": 0}))
    eng, sp = get_engine(engine), cfg.search_space()
    got, drawn = eng.candidates(cfg, sp), eng.candidates(plain, sp)
    assert len(got) == len(drawn) and got[0]["n_neurons"] == 16 and got[1]["activation"] == "tanh"
    if engine == "grid":  # the same points, the matching ones first
        assert sorted(map(str, got)) == sorted(map(str, drawn)) and got[0] == {"n_neurons": 16, "activation": "relu"}
    else:  # the named values replace drawn ones; the rest stays drawn
        assert got[0]["activation"] == drawn[0]["activation"] and got[1]["n_neurons"] == drawn[1]["n_neurons"]
        assert got[2:] == drawn[2:]


def test_enqueued_configurations_run_first_and_once(sqlite_url, tmp_path):
    first = [{"n_neurons": 7, "learning_rate": 0.01}, {"n_neurons": 5}]
    seen: list[str] = []
    obs = NullObserver()
    obs.message = seen.append  # type: ignore[method-assign]
    run_study(_cfg("enq", n_trials=3, enqueue=first), storage=sqlite_url, artifacts=str(tmp_path / "a"),
              observer=obs)
    trials = optuna.load_study(study_name="enq", storage=sqlite_url).get_trials()
    assert len(trials) == 3 and all(t.state.name == "COMPLETE" for t in trials)
    assert trials[0].params == first[0] and trials[1].params["n_neurons"] == 5
    assert "hpsearch: warm start: queued 2 parameter sets to run first" in seen


def test_warm_start_copies_compatible_trials_and_says_why_it_skipped_others(sqlite_url, tmp_path):
    art = str(tmp_path / "a")
    run_study(_cfg("old", epochs=4, n_trials=4), storage=sqlite_url, artifacts=art)
    old = optuna.load_study(study_name="old", storage=sqlite_url).get_trials()
    narrow = {"n_neurons": {"int": [4, 10]}, "learning_rate": {"float": [1e-4, 0.05], "log": True}}
    n_in = sum(t.params["n_neurons"] <= 10 for t in old)
    # the new study's own trial is a bad one (few epochs, the smallest learning rate): a copied one stays best
    res = run_study(_cfg("new", space=narrow, n_trials=1, warm_start={"study": "old"},
                         enqueue=[{"n_neurons": 4, "learning_rate": 1e-4}]), storage=sqlite_url, artifacts=art)
    study = optuna.load_study(study_name="new", storage=sqlite_url)
    trials = study.get_trials()
    copied = [t for t in trials if t.user_attrs.get(TRIAL.COPIED_FROM)]
    assert len(copied) == n_in and len(trials) == n_in + 1  # copies do not count toward n_trials
    assert all(TRIAL.MODEL_ARTIFACT not in t.user_attrs for t in copied)
    summary = study.user_attrs[STUDY.WARM_START]
    assert summary["copied"] == n_in and summary["enqueued"] == 1
    if n_in < 4:
        assert summary["skipped"] == {"n_neurons outside this space": 4 - n_in}
    # the best (a copied trial) was trained once at the end, and its model loads
    assert res.best_trial in {t.number for t in copied} and res.model_artifact and res.test_score is not None


def test_enqueue_with_three_workers_on_postgresql_runs_each_configuration_once(postgres_url):
    """Three workers start together; each applies the warm start and then takes trials from the
    shared budget: every enqueued configuration runs exactly once."""
    queued = [{"x": float(i) / 10} for i in range(6)]
    cfg = SimpleNamespace(search=SimpleNamespace(enqueue=queued, warm_start=None))
    st0 = open_storage(postgres_url, workers=3)
    optuna.create_study(study_name="enq3", storage=st0)
    errors: list[BaseException] = []
    start = threading.Barrier(3)

    def worker() -> None:
        try:
            st = open_storage(postgres_url, workers=3, heartbeat=True, heartbeat_interval=1, grace_period=3)
            study = optuna.load_study(study_name="enq3", storage=st)
            sid = st.get_study_id_from_name("enq3")
            ctx = SimpleNamespace(cfg=cfg, storage=st, storage_url=postgres_url, study=study, study_id=sid,
                                  observer=NullObserver())
            start.wait()
            warm_start(ctx)
            budget = B.Budget(study, st, postgres_url, sid, 9)
            while True:
                trial, finished = budget.reserve()
                if trial is None:
                    if finished:
                        return
                    continue
                study.tell(trial, trial.suggest_float("x", 0, 1))
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    trials = optuna.load_study(study_name="enq3", storage=st0).get_trials()
    assert len(trials) == 9
    xs = [t.params["x"] for t in trials[:6]]
    assert sorted(xs) == [q["x"] for q in queued]  # each enqueued once, and first
