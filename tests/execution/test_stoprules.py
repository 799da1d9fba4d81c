"""Stop rules for every engine: search.timeout, search.patience, search.target, train.trial_timeout,
and the closing line that says which rule ended the study."""

from __future__ import annotations

import datetime
from pathlib import Path
from types import SimpleNamespace

import optuna
import pytest

from hpsearch.errors import StudyFailedError
from hpsearch.execution.stoprules import StopRules
from hpsearch.records import STUDY, TRIAL
from hpsearch.study.run import run_study
from hpsearch.study.validate import parse_study_config

HERE = Path(__file__).resolve().parents[1]  # tests/: the helper modules
T0 = datetime.datetime(2026, 1, 1)


def _trials(*values):
    """Fake finished trials in order; None is a pruned trial."""
    return [SimpleNamespace(number=i, value=v, values=None if v is None else [v],
                            state=SimpleNamespace(name="PRUNED" if v is None else "COMPLETE"),
                            datetime_complete=T0 + datetime.timedelta(seconds=i)) for i, v in enumerate(values)]


def _rules(**kw):
    base = {"timeout": None, "patience": None, "target": None, "direction": "maximize", "metric": "accuracy"}
    return StopRules(**{**base, **kw})


def test_patience_counts_finished_trials_after_the_best():
    assert _rules(patience=2).check(_trials(0.5, 0.7, 0.6)) is None
    reason = _rules(patience=2).check(_trials(0.5, 0.7, 0.6, None))
    assert reason is not None and reason.startswith("patience: 2 finished trials without improving on trial 1")
    # an equal value is no improvement; minimizing, lower is better
    assert _rules(patience=1).check(_trials(0.7, 0.7)) is not None
    assert _rules(patience=1, direction="minimize").check(_trials(0.7, 0.6)) is None
    # no completed trial yet: nothing to be patient about
    assert _rules(patience=1).check(_trials(None, None)) is None


def test_target_and_timeout():
    assert _rules(target=0.9).check(_trials(0.5, 0.8)) is None
    assert _rules(target=0.9).check(_trials(0.5, 0.95)).startswith("target: trial 1 reached accuracy 0.95")
    assert _rules(target=0.3, direction="minimize").check(_trials(0.5, 0.3)) is not None
    rules = _rules(timeout=5.0)
    assert rules.check([]) is None
    rules.start -= 6
    assert rules.check([]).startswith("timeout: 6 s of searching (search.timeout = 5 s)")


def _cfg(name: str, engine: str = "optuna", **search):
    return parse_study_config({
        "name": name, "data": {"source": "sklearn:iris", "split": {"valid": 0.25, "test": 0.2, "seed": 0}},
        "model": {"builder": "mlp", "fixed": {"optimizer": "adam", "n_hidden": 1}},
        "space": {"n_neurons": {"int": [4, 16]}, "learning_rate": {"float": [0.005, 0.05], "log": True}},
        "train": {"epochs": 1, "batch_size": 32, "early_stopping": None},
        "search": {"engine": engine, "seed": 0, **({"sampler": "random", "pruner": "none"} if engine == "optuna"
                                                   else {"cv": 2}), **search},
    })


def test_patience_ends_an_optuna_study_and_the_closing_message_says_so(sqlite_url, tmp_path, monkeypatch, capsys):
    from hpsearch.cli import main

    monkeypatch.syspath_prepend(str(HERE))
    path = tmp_path / "s.yaml"
    path.write_text(
        "name: pat\ndata: {source: 'sklearn:iris'}\nmodel: {builder: 'stoprule_builders:build_constant'}\n"
        "space: {n_neurons: {int: [4, 8]}}\ntrain: {epochs: 1}\n"
        "search: {engine: optuna, sampler: random, pruner: none, n_trials: 8, patience: 2}\n"
    )
    rc = main(["run", str(path), "--storage", sqlite_url, "--artifacts", str(tmp_path / "a"), "--no-progress"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    # every trial scores the same: trial 0 is the best, trials 1 and 2 do not improve on it
    assert "ended by patience: 2 finished trials without improving on trial 0" in out
    assert "stopping the search: patience" in err
    study = optuna.load_study(study_name="pat", storage=sqlite_url)
    assert len(study.get_trials()) == 3
    assert study.user_attrs[STUDY.STOP_REASON].startswith("patience")


def test_target_ends_a_random_search(sqlite_url, tmp_path):
    """One candidate at a time (``train.pack: 1``; packed, the 4 candidates are one pack, all trained
    and recorded before the rule is checked): the search stops after the first."""
    cfg = _cfg("tgt", engine="random", n_trials=4, target=0.0).model_dump()
    cfg["train"]["pack"] = 1
    res = run_study(parse_study_config(cfg), storage=sqlite_url, artifacts=str(tmp_path / "a"))
    assert res.n_complete == 1 and res.stopped_by.startswith("target: trial 0 reached accuracy")


def test_timeout_ends_a_random_search(sqlite_url, tmp_path):
    cfg = _cfg("tmo", engine="random", n_trials=24, timeout=2.0).model_dump()
    cfg["train"]["pack"] = 12
    res = run_study(parse_study_config(cfg), storage=sqlite_url, artifacts=str(tmp_path / "a"), resume=True)
    # train.pack 12: 6 candidates x 2 folds in the first pack, which ends past the timeout (its
    # compile alone takes longer); every candidate it trained is recorded (before: the first only, 5
    # trained ones dropped), and no other candidate starts
    assert res.n_complete == 6 and res.stopped_by.startswith("timeout:")


def test_closing_reason_names_the_budget_when_it_is_met():
    from hpsearch.execution.stoprules import closing_reason

    engine = SimpleNamespace(is_complete=lambda ctx: True, plan=lambda ctx: 5)
    ctx = SimpleNamespace(stop_rule=None, engine=engine, study=SimpleNamespace(user_attrs={}))
    assert closing_reason(ctx, already=False) == "budget: 5 trials done"
    assert closing_reason(ctx, already=True) == "budget: 5 trials done (before this run)"
    ctx.stop_rule = "target: trial 0 reached accuracy 1"
    assert closing_reason(ctx, already=False) == ctx.stop_rule


@pytest.mark.parametrize("engine", ["optuna", "random"])
def test_a_trial_over_its_time_limit_is_stopped_and_failed(engine, sqlite_url, tmp_path):
    cfg = _cfg(f"slow-{engine}", engine=engine, n_trials=1)
    cfg = parse_study_config({**cfg.model_dump(), "train": {**cfg.train.model_dump(), "epochs": 50,
                                                            "batch_size": 8, "trial_timeout": 0.3}})
    with pytest.raises(StudyFailedError):  # every trial was stopped: no best trial
        run_study(cfg, storage=sqlite_url, artifacts=str(tmp_path / "a"))
    trials = optuna.load_study(study_name=cfg.name, storage=sqlite_url).get_trials()
    assert trials and all(t.state.name == "FAIL" for t in trials)
    for t in trials:
        reason = t.user_attrs[TRIAL.FAILURE]
        assert reason.startswith("trial_timeout: training stopped after") and "train.trial_timeout = 0.3 s" in reason


def test_status_says_which_rule_ended_the_study(sqlite_url, capsys):
    from hpsearch.cli import main

    study = optuna.create_study(study_name="ended", storage=sqlite_url)
    study.add_trial(optuna.trial.create_trial(value=0.5, params={}, distributions={}))
    assert main(["status", "ended", "--storage", sqlite_url]) == 0
    assert "ended by" not in capsys.readouterr().out
    study.set_user_attr(STUDY.STOP_REASON, "target: trial 0 reached value 0.5 (search.target = 0.4)")
    assert main(["status", "ended", "--storage", sqlite_url]) == 0
    assert "ended by target: trial 0 reached value 0.5" in " ".join(capsys.readouterr().out.split())
    assert main(["status", "ended", "--storage", sqlite_url, "--json"]) == 0
    assert '"stop_reason": "target: trial 0 reached value 0.5' in capsys.readouterr().out


def test_a_rule_tripped_inside_a_step_ends_the_loop_without_a_poll(sqlite_url, tmp_path, monkeypatch):
    """A packed step that finds no pack fits ``search.timeout`` any more trips the rule and runs
    nothing: the loop ends at once, not after its poll interval (2 s of a 37 s study, measured)."""
    from hpsearch.execution.control import Control, LoopSettings
    from hpsearch.execution.loop import TrialLoop
    from hpsearch.study.run import prepare_context

    cfg = parse_study_config({"name": "nopoll", "data": {"source": "sklearn:iris"}, "model": {"builder": "mlp"},
                              "space": {"n_neurons": {"int": [2, 4]}}, "train": {"epochs": 1},
                              "search": {"engine": "optuna", "timeout": 30}})
    ctx = prepare_context(cfg, storage=sqlite_url, artifacts=str(tmp_path / "art"))
    steps: list[int] = []
    sleeps: list[float] = []

    class NothingFits(TrialLoop):
        def step(self):
            steps.append(1)
            self.rules.tripped(self.ctx, reason="timeout: 1.0 s left cannot fit a pack's compile and 1 epochs")
            return False, False

    monkeypatch.setattr(Control, "sleep", lambda self, seconds: sleeps.append(seconds))
    settings = LoopSettings(interval=10, grace=60, deadline=5, retry=5, poll=2.0)
    assert NothingFits(ctx, lambda trial: None, settings, Control()).run() is False
    assert steps == [1] and sleeps == []  # before: one 2 s poll, then the rule was read again
    study = optuna.load_study(study_name="nopoll", storage=sqlite_url)
    assert study.user_attrs[STUDY.STOP_REASON].startswith("timeout: 1.0 s left")
