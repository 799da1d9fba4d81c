"""Several objectives: search.metric lists, the Pareto front, pick rules, both engines end to end."""

from __future__ import annotations

from types import SimpleNamespace

import optuna
import pytest

from hpsearch.cli import main
from hpsearch.errors import UserError
from hpsearch.pareto import apply_pick, dominates, pareto_front, parse_pick
from hpsearch.records import TRIAL
from hpsearch.results.best import describe_best, load_best
from hpsearch.results.report import write_report
from hpsearch.storage.queries import study_status
from hpsearch.study.run import run_study
from hpsearch.study.validate import parse_study_config
from tests.observers import Lines
from tests.study_dicts import MINIMAL, one_line_error, with_

OBJ = [("accuracy", "maximize"), ("n_params", "minimize")]
NAMES = [n for n, _ in OBJ]


def _t(number, values, state="COMPLETE", constraints=None):
    attrs = {} if constraints is None else {TRIAL.CONSTRAINTS: constraints}
    return SimpleNamespace(number=number, values=values, state=SimpleNamespace(name=state), user_attrs=attrs,
                           params={"n": number})


def test_pick_rules_parse():
    assert parse_pick("best", NAMES) == parse_pick("  BEST ", NAMES)
    r = parse_pick("smallest n_params within 0.005 of the best accuracy", NAMES)
    assert (r.choice, r.objective, r.reference, r.tolerance, r.relative) == ("smallest", "n_params", "accuracy",
                                                                              0.005, False)
    r = parse_pick("smallest within 1% of best accuracy", NAMES)  # the objective: the other one
    assert (r.objective, r.tolerance, r.relative) == ("n_params", 0.01, True)
    assert parse_pick("within 0.1 of the best accuracy", NAMES).choice == "best"
    assert parse_pick("largest accuracy", NAMES).objective == "accuracy"


@pytest.mark.parametrize("rule, why", [("cheapest", "is not a pick rule"), ("", "is not a pick rule"),
                                       ("smallest size", "names 'size', not an objective"),
                                       ("best within x of the best accuracy", "is not a pick rule")])
def test_bad_pick_rules_are_one_line_errors(rule, why):
    with pytest.raises(UserError) as ei:
        parse_pick(rule, NAMES)
    msg = str(ei.value)
    assert msg.startswith("pick: ") and why in msg and "e.g. 'smallest n_params within" in msg and "\n" not in msg


def test_front_keeps_feasible_non_dominated_trials_and_picks_from_it():
    trials = [_t(0, [0.90, 500.0]), _t(1, [0.95, 900.0]), _t(2, [0.948, 600.0]), _t(3, [0.80, 100.0]),
              _t(4, [0.89, 700.0]),  # dominated by 0
              _t(5, [0.99, 50.0], constraints=[1.0]),  # infeasible: never on the front
              _t(6, [0.99, 40.0], state="PRUNED"), _t(7, None, state="FAIL")]
    front = pareto_front(trials, ["maximize", "minimize"])
    assert [t.number for t in front] == [1, 2, 0, 3]  # best accuracy first
    assert all(not dominates(a.values, b.values, ["maximize", "minimize"]) for a in front for b in front)
    pick = lambda rule: apply_pick(parse_pick(rule, NAMES), front, OBJ).number  # noqa: E731
    assert pick("best") == 1
    assert pick("smallest n_params within 0.005 of the best accuracy") == 2
    assert pick("smallest within 6% of the best accuracy") == 0
    assert pick("best n_params") == 3


def test_metric_lists_and_directions_in_the_study_file():
    ok = parse_study_config(with_(MINIMAL, search={"metric": ["val_accuracy", "n_params", "latency_ms"],
                                                   "direction": ["maximize", "minimize", "minimize"]}))
    assert ok.search.metrics == ["accuracy", "n_params", "latency_ms"] and ok.search.trained_metrics == ["accuracy"]
    bad = {
        "search.direction: 1 directions for 2 metrics": {"metric": ["accuracy", "n_params"], "direction": ["maximize"]},
        "search.direction: maximize is one direction for 2 metrics": {"metric": ["accuracy", "n_params"],
                                                                      "direction": "maximize"},
        "search.direction: unknown value 'up'": {"metric": ["accuracy", "n_params"], "direction": ["up", "minimize"]},
        "search.metric: the first objective must be a trained metric": {"metric": ["n_params", "accuracy"]},
        "search.metric: unknown metric 'size'": {"metric": ["accuracy", "size"]},
        "search.metric: ['accuracy', 'accuracy'] names an objective twice": {"metric": ["accuracy", "accuracy"]},
        "search.sampler: cmaes optimises one objective": {"metric": ["accuracy", "n_params"], "sampler": "cmaes"},
        "search.metric: a second trained metric (loss) needs a holdout split": {"metric": ["accuracy", "loss"],
                                                                                "cv": 2},
    }
    for expected, search in bad.items():
        assert expected in one_line_error(parse_study_config, with_(MINIMAL, search=search), where="s.yaml")


def _iris(name: str, search: dict, space: dict | None = None, epochs: int = 2) -> object:
    return parse_study_config({
        "name": name, "data": {"source": "sklearn:iris", "split": {"valid": 0.25, "test": 0.2, "seed": 0}},
        "model": {"builder": "mlp", "fixed": {"optimizer": "adam", "n_hidden": 1, "learning_rate": 0.05}},
        "space": space or {"n_neurons": {"int": [2, 64]}},
        "train": {"epochs": epochs, "batch_size": 16, "early_stopping": None},
        "search": {"seed": 0, **search},
    })


def test_optuna_study_of_two_objectives_end_to_end(sqlite_url, tmp_path, capsys):
    # iris: 8 * n_neurons + 3 weights; the first enqueued model is over max_params
    cfg = _iris("two", {"engine": "optuna", "n_trials": 3, "metric": ["accuracy", "n_params"], "pruner": "median",
                        "constraints": {"max_params": 300}, "enqueue": [{"n_neurons": 60}, {"n_neurons": 4},
                                                                          {"n_neurons": 30}]})
    notes = Lines()
    res = run_study(cfg, storage=sqlite_url, artifacts=str(tmp_path / "a"), observer=notes)
    assert any("2 objectives (accuracy, n_params): search.pruner median -> Pareto successive halving" in n
               for n in notes.lines)  # Optuna's pruners take one value: hpsearch's rule (tests/trials/test_rungs.py)
    study = optuna.load_study(study_name="two", storage=sqlite_url)
    assert [d.name for d in study.directions] == ["MAXIMIZE", "MINIMIZE"] and study.metric_names == NAMES
    trials = study.get_trials()
    assert trials[0].state.name == "PRUNED" and trials[0].user_attrs[TRIAL.INFEASIBLE]
    done = [t for t in trials if t.state.name == "COMPLETE"]
    assert done and all(len(t.values) == 2 and t.values[1] == t.user_attrs[TRIAL.N_PARAMS] for t in done)
    # per-epoch values are stored (hpsearch writes them; Optuna's report takes one value); none untrained
    assert all(sorted(t.intermediate_values) == list(range(t.user_attrs.get(TRIAL.EPOCHS, 0))) for t in trials)
    front = [r["number"] for r in res.front]
    assert 0 not in front and set(front) == {t.number for t in study.best_trials}  # Optuna's own front agrees
    assert res.best_trial == front[0] and res.test_score is not None
    # the read side: best, status and report show the front; pick rules choose from it
    info = describe_best("two", storage=sqlite_url)
    assert [r["number"] for r in info["front"]] == front and info["best_trial"] == front[0]
    assert [r["number"] for r in study_status("two", sqlite_url)["front"]] == front
    small = load_best("two", storage=sqlite_url, pick="smallest n_params within 1 of the best accuracy")
    smallest = min(res.front, key=lambda r: r["values"]["n_params"])
    assert small.model_.count_params() == smallest["values"]["n_params"]
    assert load_best("two", storage=sqlite_url).model_.count_params() == res.front[0]["values"]["n_params"]
    with pytest.raises(UserError, match="^pick: 'tiny' is not a pick rule"):
        load_best("two", storage=sqlite_url, pick="tiny")
    assert main(["best", "two", "--storage", sqlite_url]) == 0
    out = capsys.readouterr().out
    assert "Pareto front" in out and "n_params (min)" in out and "chosen by pick 'best'" in out
    files = write_report("two", str(tmp_path / "rep"), storage=sqlite_url)
    assert any(f.name == "pareto_front.png" for f in files)


def test_sklearn_engine_scores_every_metric_and_refits_the_default_pick(sqlite_url, tmp_path):
    cfg = _iris("sk2", {"engine": "grid", "cv": 2, "metric": ["accuracy", "n_params"]},
                space={"n_neurons": [2, 16]}, epochs=1)
    res = run_study(cfg, storage=sqlite_url, artifacts=str(tmp_path / "a"))
    study = optuna.load_study(study_name="sk2", storage=sqlite_url)
    values = {t.params["n_neurons"]: t.values for t in study.get_trials()}
    assert values[2][1] == 8 * 2 + 3 and values[16][1] == 8 * 16 + 3  # n_params, scored on each fold
    assert res.front and res.best_trial == res.front[0]["number"] and res.model_artifact
    assert study.user_attrs["best_trial_number"] == res.best_trial  # the refit is of the default pick


@pytest.mark.parametrize("name, cls", [("nsga2", "NSGAIISampler"), ("nsga3", "NSGAIIISampler")])
def test_nsga_samplers_are_registered_and_optunas_pruner_is_off_for_several_objectives(name, cls):
    from hpsearch.engines.samplers import make_pruner, make_sampler

    cfg = parse_study_config(with_(MINIMAL, search={"n_trials": 40, "sampler": name,
                                                    "metric": ["accuracy", "n_params"]}))
    sampler = make_sampler(cfg, cfg.search_space(), 0)
    assert type(sampler).__name__ == cls
    # Optuna's pruners take one value: hpsearch's Pareto rung rule prunes these (hpsearch.trials.rungs)
    assert isinstance(make_pruner(cfg), optuna.pruners.NopPruner)
