"""Packing beside what it meets in real use (issue 20 item 5): Hyperband and SHA shown to prune a study
built to hold bad trials, packed and not; and on packed studies ``search.timeout``, ``patience``,
``target``, ``enqueue``, ``warm_start``, and ``constraints`` (``max_params`` per member; a latency
limit, which packing refuses in one line)."""

from __future__ import annotations

from typing import Any

import optuna
import pytest

from hpsearch.records import STUDY, TRIAL
from hpsearch.study.run import run_study
from hpsearch.study.validate import parse_study_config
from tests.combinations import Recorder

pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
EPOCHS = 3


def _study(name: str, **search: Any) -> dict[str, Any]:
    pack = search.pop("pack", "auto")
    space = search.pop("space", {"n_neurons": {"int": [4, 16]},
                                 "learning_rate": {"float": [0.005, 0.05], "log": True}})
    return {"name": name, "data": {"source": "sklearn:iris", "split": {"valid": 0.25, "test": 0.2, "seed": 0}},
            "model": {"builder": "mlp", "fixed": {"optimizer": "adam", "n_hidden": 1}}, "space": space,
            "train": {"epochs": EPOCHS, "batch_size": 16, "pack": pack},
            "search": {"engine": "optuna", "sampler": "random", "pruner": "none", "n_trials": 8, "seed": 0, **search}}


def _run(d: dict[str, Any], url: str, tmp_path) -> tuple[Any, Recorder, Any]:
    rec = Recorder()
    res = run_study(parse_study_config(d), storage=url, artifacts=str(tmp_path / "art"), observer=rec)
    return optuna.load_study(study_name=d["name"], storage=url), rec, res


def _states(study: Any) -> dict[str, int]:
    out: dict[str, int] = {}
    for t in study.get_trials():
        out[t.state.name] = out.get(t.state.name, 0) + 1
    return out


def _own(study: Any) -> list[Any]:
    """The study's trials that it trained (not the copies of a warm start)."""
    return [t for t in study.get_trials() if TRIAL.COPIED_FROM not in t.user_attrs]


@pytest.mark.parametrize("pack", [8, 1], ids=["packed", "unpacked"])
@pytest.mark.parametrize("pruner", ["hyperband", "sha"])
def test_hyperband_and_sha_prune_the_trials_that_cannot_learn(pruner, pack, sqlite_url, tmp_path):
    """Plain SGD over learning rates 1e-6 .. 0.5: the lower half barely moves in 3 epochs. The pruner
    decides at its rung (epoch 2 of 3), packed (each member asked on its own) or not."""
    space = {"n_neurons": {"int": [8, 16]}, "learning_rate": {"float": [1e-6, 0.5], "log": True}}
    d = _study(f"prune-{pruner}-{pack}", pruner=pruner, pack=pack, space=space)
    d["model"]["fixed"]["optimizer"] = "sgd"
    study, _, _ = _run(d, sqlite_url, tmp_path)
    trials = study.get_trials()
    states = _states(study)
    assert states.get("PRUNED", 0) > 0 and states.get("COMPLETE", 0) > 0, states
    assert states["PRUNED"] + states["COMPLETE"] == 8 == len(trials)  # the exact budget, nothing failed
    assert {t.user_attrs.get(TRIAL.PACK_SIZE) for t in trials} == ({8} if pack == 8 else {None})
    best = study.best_trial
    for t in trials:
        if t.state.name != "PRUNED":
            continue
        at = t.user_attrs[TRIAL.PRUNED_AT]
        assert at < EPOCHS - 1 and t.user_attrs[TRIAL.EPOCHS] == at + 1 == len(t.intermediate_values)
        assert t.intermediate_values[at] <= best.intermediate_values[at]  # pruned below the best at its rung
    assert best.params["learning_rate"] > 1e-3  # a trial that can learn leads


def test_timeout_stops_refilling_a_pack_and_its_members_train_out(sqlite_url, tmp_path):
    study, rec, res = _run(_study("p-timeout", pack=8, n_trials=24, timeout=1), sqlite_url, tmp_path)
    own, states = _own(study), _states(study)
    assert set(states) == {"COMPLETE"}, states  # nothing left running, waiting or failed
    assert 8 <= len(own) < 24 and {t.user_attrs[TRIAL.PACK_SIZE] for t in own} == {8}
    assert study.user_attrs[STUDY.STOP_REASON].startswith("timeout: ") and res.stopped_by.startswith("timeout: ")
    assert sum(m.startswith("hpsearch: stopping the search: timeout: ") for m in rec.messages) == 1


def test_patience_stops_a_packed_study(sqlite_url, tmp_path):
    study, _, res = _run(_study("p-patience", pack=8, n_trials=24, patience=2), sqlite_url, tmp_path)
    states = _states(study)
    assert set(states) == {"COMPLETE"} and states["COMPLETE"] < 24, states
    reason = study.user_attrs[STUDY.STOP_REASON]
    assert reason.startswith("patience: ") and reason.endswith("search.patience = 2)") and res.stopped_by == reason
    assert {t.user_attrs[TRIAL.PACK_SIZE] for t in study.get_trials()} == {8}


def test_target_stops_a_packed_study_and_names_the_trial(sqlite_url, tmp_path):
    study, rec, res = _run(_study("p-target", pack=8, n_trials=24, target=0.7), sqlite_url, tmp_path)
    states = _states(study)
    assert set(states) == {"COMPLETE"} and states["COMPLETE"] < 24, states
    reason = study.user_attrs[STUDY.STOP_REASON]
    assert reason.startswith("target: trial ") and " reached accuracy " in reason and res.stopped_by == reason
    hit = study.trials[int(reason.split()[2])]
    assert hit.value >= 0.7 and hit.user_attrs[TRIAL.PACK_SIZE] == 8
    assert sum(m == f"hpsearch: stopping the search: {reason}" for m in rec.messages) == 1


def test_max_params_is_checked_per_pack_member_and_latency_is_refused_in_one_line(sqlite_url, tmp_path):
    """iris, one hidden layer of n units: 8n + 3 weights, so max_params 80 allows n <= 9. A member's
    size is known from its shape: one over the limit is stored PRUNED before it is placed, never
    trained; the others train as one pack with their constraint values."""
    study, rec, _ = _run(_study("p-constraints", constraints={"max_params": 80}), sqlite_url, tmp_path)
    assert any(m.startswith("hpsearch: train.pack auto -> 8: ") for m in rec.messages), rec.messages
    trials = study.get_trials()
    feasible = [t for t in trials if 8 * t.params["n_neurons"] + 3 <= 80]
    assert len(trials) == 8 and 2 <= len(feasible) < 8, [t.params for t in trials]
    for t in trials:
        n_params = 8 * t.params["n_neurons"] + 3
        assert t.constraints["max_params"] == t.user_attrs[TRIAL.CONSTRAINTS][0] == n_params - 80
        if t in feasible:
            assert t.state.name == "COMPLETE" and t.user_attrs[TRIAL.PACK_SIZE] == len(feasible)
            assert t.user_attrs[TRIAL.N_PARAMS] == n_params and TRIAL.INFEASIBLE not in t.user_attrs
        else:
            assert t.state.name == "PRUNED" and TRIAL.EPOCHS not in t.user_attrs and not t.intermediate_values
            assert t.user_attrs[TRIAL.INFEASIBLE].startswith(f"infeasible: n_params {n_params} > max_params 80")
    assert 8 * study.best_trial.params["n_neurons"] + 3 <= 80
    # a latency is measured on a built model of its own: such a study trains one trial per model
    d = _study("p-latency", pack=8, n_trials=2, constraints={"max_latency_ms": 1000.0})
    study, rec, _ = _run(d, sqlite_url, tmp_path)
    note = "hpsearch: train.pack 8 -> 1: search.constraints max_latency_ms is not packed yet (one trial per model)"
    assert rec.messages.count(note) == 1, rec.messages
    assert all(TRIAL.PACK_SIZE not in t.user_attrs and TRIAL.LATENCY_MS in t.user_attrs for t in study.get_trials())


def test_enqueue_and_warm_start_on_a_packed_study(sqlite_url, tmp_path):
    """Copies come first (no model, not in the budget), then the enqueued sets as the first trials
    the pack trains, then sampled ones: all 8 in one pack."""
    src, _, _ = _run(_study("p-source", pack=1, n_trials=2), sqlite_url, tmp_path)
    queued = [{"n_neurons": 5, "learning_rate": 0.01}, {"n_neurons": 7, "learning_rate": 0.02}]
    study, rec, _ = _run(_study("p-warm", warm_start={"study": "p-source"}, enqueue=queued), sqlite_url, tmp_path)
    trials = study.get_trials()
    copies = [t for t in trials if TRIAL.COPIED_FROM in t.user_attrs]
    assert [t.user_attrs[TRIAL.COPIED_FROM] for t in copies] == ["p-source#0", "p-source#1"]
    assert [t.number for t in copies] == [0, 1] and [t.value for t in copies] == [t.value for t in src.trials]
    own = _own(study)
    assert len(own) == 8 and {t.state.name for t in own} == {"COMPLETE"}  # the budget, copies aside
    assert [own[0].params, own[1].params] == queued  # the enqueued sets run first, in order
    assert {t.user_attrs[TRIAL.PACK_SIZE] for t in own} == {8}
    assert rec.messages.count("hpsearch: warm start: copied 2 trials of study p-source;"
                              " queued 2 parameter sets to run first") == 1, rec.messages
    assert study.user_attrs[STUDY.WARM_START]["copied"] == 2
