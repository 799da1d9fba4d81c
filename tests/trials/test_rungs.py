"""Pruning a study of several objectives: the Pareto rung rule (MO-ASHA, :mod:`hpsearch.trials.rungs`)
and 2-objective studies that prune, packed and unpacked, with their front intact."""

from __future__ import annotations

from types import SimpleNamespace

import optuna
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hpsearch.engines.samplers import pareto_rungs
from hpsearch.pareto import dominates, front_ranks, rung_keep
from hpsearch.records import STUDY, TRIAL
from hpsearch.study.run import run_study
from hpsearch.study.validate import parse_study_config
from hpsearch.trials.rungs import KEPT_FRONTS, ParetoRungs
from tests.observers import Lines

DIRS = ("maximize", "minimize")


def test_a_front_member_is_kept_and_a_dominated_bottom_member_is_pruned():
    # (accuracy at the rung, n_params): 0 and 1 are the front; 5 is dominated by every other point
    points = [(0.9, 100), (0.8, 50), (0.5, 200), (0.4, 300), (0.6, 60), (0.3, 400)]
    assert front_ranks(points, DIRS) == [0, 0, 2, 3, 1, 4]
    assert rung_keep(points, DIRS, 3) == {0, 1}
    assert rung_keep(points, DIRS, 3, fronts=2) == {0, 1, 4}  # the second front kept too (hpsearch's default)
    # a front larger than 1/eta is kept whole: here all 4 points trade accuracy against size
    trade = [(0.9, 400), (0.8, 300), (0.7, 200), (0.6, 100)]
    assert rung_keep(trade, DIRS, 3) == {0, 1, 2, 3}
    # one point alone is kept (the first trial at a rung is never pruned)
    assert rung_keep([(0.1, 999)], DIRS, 3) == {0}


@settings(derandomize=True, max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 1), st.integers(1, 50)), min_size=1, max_size=12), st.integers(2, 4),
       st.integers(1, 2))
def test_the_rung_rule_never_drops_the_front_and_keeps_at_least_one_in_eta(points, eta, fronts):
    kept = rung_keep(points, DIRS, eta, fronts)
    front = {i for i, p in enumerate(points) if not any(dominates(q, p, DIRS) for q in points)}
    assert front <= kept and len(kept) >= max(1, len(points) // eta)
    ranks = front_ranks(points, DIRS)
    protected = {i for i, r in enumerate(ranks) if r < fronts}
    assert protected <= kept and len(kept - protected) <= max(1, len(points) // eta)


def _stored(number, step_values, n_params):
    return SimpleNamespace(number=number, intermediate_values=step_values, user_attrs={TRIAL.N_PARAMS: n_params})


def test_the_rule_judges_trials_reaching_a_rung_with_the_stored_ones():
    rungs = ParetoRungs(frozenset({1, 3}), 3, DIRS, ("n_params",), fronts=1)  # MO-ASHA: the first front only
    study = SimpleNamespace(get_trials=lambda deepcopy=False: [
        _stored(0, {0: 0.5, 1: 0.9}, 100), _stored(1, {0: 0.5, 1: 0.8}, 50),  # the front at step 1
        _stored(2, {0: 0.4}, 10),  # never reached step 1: not a peer there
        SimpleNamespace(number=3, intermediate_values={1: 0.99}, user_attrs={}),  # size unknown: not a peer
    ])
    # 7 is dominated by trial 0 (less accurate, larger); 8 is the smallest: on the front, kept
    assert rungs.prune(study, 1, {7: (0.7, [150.0]), 8: (0.1, [5.0])}) == {7}
    assert rungs.prune(study, 2, {7: (0.0, [150.0])}) == set()  # not a rung: nothing is decided
    # judged together: two alone at step 3, 7 dominates 8; max(1, 2 // 3) = 1 is kept, the front
    assert rungs.prune(study, 3, {7: (0.7, [150.0]), 8: (0.2, [300.0])}) == {8}
    # hpsearch's default keeps the first two fronts: 7 (behind the front only) stays; 9, behind 7, goes
    default = ParetoRungs(frozenset({1, 3}), 3, DIRS, ("n_params",))
    assert default.fronts == KEPT_FRONTS == 2
    assert default.prune(study, 1, {7: (0.7, [150.0]), 8: (0.1, [5.0]), 9: (0.6, [200.0])}) == {9}


@pytest.mark.parametrize("pruner, steps, eta", [("hyperband", [1, 3], 3), ("sha", [1, 3], 3), ("median", [1, 2, 4], 2),
                                                 ("none", None, None)])
def test_each_pruner_maps_to_rungs_in_one_line(pruner, steps, eta):
    cfg = _iris_cfg("m", pruner=pruner, pack=1)
    rungs, line = pareto_rungs(cfg, [("accuracy", "maximize"), ("n_params", "minimize")])
    assert line.startswith("2 objectives (accuracy, n_params): ")
    if steps is None:
        assert rungs is None and "no pruning (search.pruner none)" in line
        return
    assert rungs is not None and sorted(rungs.steps) == steps and rungs.eta == eta and rungs.known == ("n_params",)
    epochs = ", ".join(str(s + 1) for s in steps)  # 6 epochs: no rung at the last one
    assert f"search.pruner {pruner} -> Pareto successive halving on accuracy after epochs {epochs}:" in line
    trained, why = pareto_rungs(cfg, [("accuracy", "maximize"), ("loss", "minimize")])
    assert trained is None and "objective loss is trained, its value is not known at a rung" in why


# iris: 8 * n_neurons + 3 weights. Small accurate models first, then large ones with a learning rate
# too small to learn in 2 epochs: dominated at the first rung (less accurate and larger), pruned.
GOOD = [{"n_neurons": 6, "learning_rate": 0.05}, {"n_neurons": 12, "learning_rate": 0.05}]
BAD = [{"n_neurons": 30, "learning_rate": 1e-4}, {"n_neurons": 34, "learning_rate": 1e-4}]


def _iris_cfg(name: str, pruner: str = "hyperband", pack: int | str = "auto", n_trials: int = 8,
              constraints: dict | None = None, enqueue: list | None = None):
    search = {"engine": "optuna", "seed": 0, "sampler": "tpe", "pruner": pruner, "n_trials": n_trials,
              "metric": ["accuracy", "n_params"], "min_resource": 1, "factor": 3, "enqueue": enqueue or []}
    if constraints:
        search["constraints"] = constraints
    return parse_study_config({
        "name": name, "data": {"source": "sklearn:iris", "split": {"valid": 0.25, "test": 0.2, "seed": 0}},
        "model": {"builder": "mlp", "fixed": {"optimizer": "adam", "n_hidden": 1}},
        "space": {"n_neurons": {"int": [2, 40]}, "learning_rate": {"float": [1e-4, 0.05], "log": True}},
        "train": {"epochs": 6, "batch_size": 16, "early_stopping": None, "pack": pack}, "search": search,
    })


def _check_pruned_study(study, n_trials: int) -> None:
    """The exact budget, states, curves, and the front intact: every pruned trial was dominated at
    its rung by a trial that reached it; the front is COMPLETE trials only."""
    trials = study.get_trials()
    assert len(trials) == n_trials and {t.state.name for t in trials} <= {"COMPLETE", "PRUNED"}
    trained = [t for t in trials if TRIAL.INFEASIBLE not in t.user_attrs]
    pruned = [t for t in trained if t.state.name == "PRUNED"]
    assert pruned, "no trial was pruned"
    for t in trained:  # per-epoch curves are stored (the dashboard draws them), several objectives too
        assert sorted(t.intermediate_values) == list(range(t.user_attrs[TRIAL.EPOCHS]))
    for t in pruned:
        step = t.user_attrs[TRIAL.PRUNED_AT]
        assert step in (1, 3) and t.user_attrs[TRIAL.EPOCHS] == step + 1
        me = (t.intermediate_values[step], t.user_attrs[TRIAL.N_PARAMS])
        assert any(dominates((o.intermediate_values[step], o.user_attrs[TRIAL.N_PARAMS]), me, DIRS)
                   for o in trained if o.number != t.number and step in o.intermediate_values), t.number
    front = study.best_trials
    assert front and all(t.state.name == "COMPLETE" for t in front)
    assert all(t.values[1] == t.user_attrs[TRIAL.N_PARAMS] for t in front)
    assert study.user_attrs[STUDY.DECISIONS]["pruning"]["value"] == [1, 3]


def test_unpacked_two_objective_study_prunes_dominated_trials(sqlite_url, tmp_path):
    cfg = _iris_cfg("mo1", pack=1, n_trials=6, enqueue=[*GOOD, *BAD])
    notes = Lines()
    run_study(cfg, storage=sqlite_url, artifacts=str(tmp_path / "a"), observer=notes)
    assert any("Pareto successive halving on accuracy after epochs 2, 4" in n for n in notes.lines)
    study = optuna.load_study(study_name="mo1", storage=sqlite_url)
    _check_pruned_study(study, 6)
    assert {t.number for t in study.get_trials() if t.state.name == "PRUNED"} >= {2, 3}  # the large slow ones


def test_packed_two_objective_study_prunes_and_checks_max_params_per_member(sqlite_url, tmp_path):
    # max_params 300: n_neurons > 37 is over the limit, stored PRUNED before it is placed in the pack
    over = {"n_neurons": 40, "learning_rate": 0.01}
    cfg = _iris_cfg("mo2", n_trials=8, constraints={"max_params": 300}, enqueue=[*GOOD, *BAD, over])
    notes = Lines()
    run_study(cfg, storage=sqlite_url, artifacts=str(tmp_path / "a"), observer=notes)
    assert any(n.startswith("hpsearch: train.pack auto -> 8:") for n in notes.lines), notes.lines
    study = optuna.load_study(study_name="mo2", storage=sqlite_url)
    _check_pruned_study(study, 8)
    trials = study.get_trials()
    big = trials[4]
    assert big.state.name == "PRUNED" and TRIAL.EPOCHS not in big.user_attrs and not big.intermediate_values
    assert big.user_attrs[TRIAL.INFEASIBLE].startswith("infeasible: n_params 323 > max_params 300")
    assert big.constraints["max_params"] == 23
    packed = [t for t in trials if t.number != 4]
    assert all(t.user_attrs[TRIAL.PACK_SIZE] == 7 for t in packed)  # the other 7 trained as one pack
    assert all(t.user_attrs[TRIAL.CONSTRAINTS][0] == t.user_attrs[TRIAL.N_PARAMS] - 300 for t in packed)
    assert {2, 3} <= {t.number for t in trials if t.state.name == "PRUNED"}


@pytest.mark.parametrize("packed", [False, True], ids=["tpe", "pack-tpe"])
def test_tpe_asks_after_pruned_trials_of_a_study_of_two_objectives(packed):
    """Optuna's TPE ranks a PRUNED trial by its last intermediate value in ``study.direction``, which
    raises for several objectives: hpsearch's TPE (and a pack's one fit) rank them on the first."""
    from optuna.distributions import FloatDistribution, IntDistribution
    from optuna.trial import TrialState, create_trial

    from hpsearch.engines.packsampling import PackTPESampler
    from hpsearch.engines.samplers import make_sampler

    cfg = _iris_cfg("tpe2", pack="auto" if packed else 1)
    tpe = make_sampler(cfg, cfg.search_space(), 0)
    assert isinstance(tpe, optuna.samplers.TPESampler)
    study = optuna.create_study(directions=list(DIRS), sampler=PackTPESampler(tpe, 4) if packed else tpe)
    dist = {"n_neurons": IntDistribution(2, 40),
            "learning_rate": FloatDistribution(1e-4, 0.05, log=True)}
    for i in range(8):
        params = {"n_neurons": 2 + 4 * i, "learning_rate": 1e-4 * 1.8 ** i}
        if i % 2:
            study.add_trial(create_trial(state=TrialState.PRUNED, params=params, distributions=dist,
                                         intermediate_values={0: 0.3, 1: 0.1 * i}))
        else:
            study.add_trial(create_trial(values=[0.5 + 0.05 * i, 8 * params["n_neurons"] + 3], params=params,
                                         distributions=dist))
    # Optuna's own TPE on the same trials, for the record (when it passes, FirstDirection can go)
    plain = optuna.create_study(directions=list(DIRS), sampler=optuna.samplers.TPESampler(n_startup_trials=1, seed=0))
    plain.add_trials(study.trials)
    with pytest.raises(RuntimeError):
        plain.ask(dist)
    for _ in range(3):
        trial = study.ask(dist)
        assert 2 <= trial.params["n_neurons"] <= 40
        study.tell(trial, [0.9, 8 * trial.params["n_neurons"] + 3])
