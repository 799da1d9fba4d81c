"""One TPE fit per pack (hpsearch.engines.packsampling): K distinct proposals inside the space from
one fit, a packed study that runs to its exact budget with it, and the bounded history."""

from __future__ import annotations

import math

import numpy as np
import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.study import StudyDirection
from optuna.trial import TrialState, create_trial

from hpsearch.engines import packsampling
from hpsearch.engines.packsampling import HistoryCap, PackPlan, PackTPESampler, bounded_history
from hpsearch.records import STUDY

SPACE = {
    "units": IntDistribution(8, 512, log=True),
    "layers": IntDistribution(1, 3),
    "lr": FloatDistribution(1e-5, 0.1, log=True),
    "opt": CategoricalDistribution(["adam", "sgd", "rmsprop", "nadam"]),
}


def _value(p: dict) -> float:
    return (math.log10(p["lr"]) + 2.5) ** 2 + (math.log2(p["units"]) - 6) ** 2 / 4 + 0.3 * (p["opt"] != "adam") \
        + 0.1 * p["layers"]


def _study(n: int, seed: int = 0) -> optuna.Study:
    """An in-memory study with ``n`` seeded random COMPLETE trials on SPACE."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    rng = np.random.default_rng(seed)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    trials = []
    for _ in range(n):
        p = {"units": round(math.exp(rng.uniform(math.log(8), math.log(512)))), "layers": int(rng.integers(1, 4)),
             "lr": float(10 ** rng.uniform(-5, -1)), "opt": str(rng.choice(SPACE["opt"].choices))}
        trials.append(create_trial(params=p, distributions=SPACE, value=_value(p)))
    study.add_trials(trials)
    return study


def _within(p: dict) -> bool:
    return (8 <= p["units"] <= 512 and isinstance(p["units"], int) and p["layers"] in (1, 2, 3)
            and 1e-5 <= p["lr"] <= 0.1 and p["opt"] in SPACE["opt"].choices)


def test_k_proposals_from_one_fit_are_distinct_and_within_the_space():
    study = _study(60)
    tpe = optuna.samplers.TPESampler(seed=1, multivariate=True, constant_liar=True, n_startup_trials=10)
    plan = PackPlan(tpe, study, SPACE, 16, study.get_trials(deepcopy=False))
    pack = [plan.next() for _ in range(16)]
    assert all(_within(p) for p in pack)
    assert len({tuple(sorted(p.items())) for p in pack}) == 16
    assert len({p["opt"] for p in pack}) >= 2  # the liar kernels spread the pack (without: one mode)
    # and through study.ask(): one fit for a pack of 16 asks, ordinary trials
    sampler = PackTPESampler(tpe, 16)
    study.sampler = sampler
    asked = [study.ask(SPACE) for _ in range(16)]
    assert sampler.fits == 1 and all(_within(t.params) for t in asked)
    assert len({tuple(sorted(t.params.items())) for t in asked}) == 16
    study.tell(asked[0], 1.0)
    study.ask(SPACE)
    assert sampler.fits == 2  # a tell: the next ask refits


def test_bounded_history_keeps_best_n_recent_m_and_running():
    study = _study(30)
    for _ in range(3):
        study.ask(SPACE)  # RUNNING: the liars are always kept
    trials = study.get_trials(deepcopy=False)
    trials[5].state = TrialState.PRUNED  # a pruned trial counts as recent, not as best
    kept = bounded_history(trials, [StudyDirection.MINIMIZE], n_best=4, n_recent=5)
    done = [t for t in trials if t.state == TrialState.COMPLETE]
    best = {t.number for t in sorted(done, key=lambda t: t.value)[:4]}
    recent = {t.number for t in trials[:30][-5:]}
    running = {30, 31, 32}
    assert {t.number for t in kept} == best | recent | running
    assert [t.number for t in kept] == sorted(t.number for t in kept)
    worst = {t.number for t in sorted(done, key=lambda t: -t.value)[:4]}
    assert {t.number for t in bounded_history(trials, [StudyDirection.MAXIMIZE], 4, 0)} == worst | running


def test_bounded_history_is_the_plain_rule_on_ties_and_every_state():
    """The one-pass history (values sorted alone) against the rule written plainly: a stable sort
    of the complete trials by value (ties: the earlier trial), the last finished, the unfinished;
    seeded studies with tied values, PRUNED, FAIL and RUNNING trials."""
    import random

    from optuna.distributions import FloatDistribution
    from optuna.trial import create_trial

    def plain(trials, direction, n_best, n_recent):
        done = [t for t in trials if t.state == TrialState.COMPLETE]
        sign = -1.0 if direction == StudyDirection.MAXIMIZE else 1.0
        keep = {t.number for t in sorted(done, key=lambda t: sign * t.value)[:n_best]}
        finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
        keep |= {t.number for t in (finished[-n_recent:] if n_recent else [])}
        return [t.number for t in trials if t.number in keep or t.state == TrialState.RUNNING]

    rnd = random.Random(0)
    for _ in range(100):
        trials = []
        for number in range(rnd.randint(0, 200)):
            state = rnd.choice([TrialState.COMPLETE] * 5 + [TrialState.PRUNED, TrialState.RUNNING, TrialState.FAIL])
            trial = create_trial(state=state, value=round(rnd.random(), 1) if state == TrialState.COMPLETE else None,
                                 params={"x": 0.5}, distributions={"x": FloatDistribution(0, 1)})
            trial.number = number
            trials.append(trial)
        direction, n_best, n_recent = rnd.choice(list(StudyDirection)[1:]), rnd.randint(0, 40), rnd.randint(0, 40)
        got = [t.number for t in bounded_history(trials, [direction], n_best, n_recent)]
        assert got == plain(trials, direction, n_best, n_recent)


@pytest.mark.parametrize("cap", [HistoryCap(n_best=6, n_recent=4, above=12), HistoryCap(6, 4, above=10_000), None])
def test_a_fit_on_the_reservations_snapshot_takes_the_trials_a_read_takes(cap):
    """The fit's history from a reservation's snapshot (every state, columns: NumPy) is the trials
    the fit reads from the study itself (fit states: COMPLETE, PRUNED, RUNNING), capped or not;
    seeded studies with tied values, PRUNED, FAIL, WAITING and RUNNING trials."""
    import random

    from hpsearch.storage.view import snapshot_of

    rnd = random.Random(1)
    states = [TrialState.COMPLETE] * 4 + [TrialState.PRUNED, TrialState.RUNNING, TrialState.FAIL, TrialState.WAITING]
    for n in [0, 1, 5, 20, 40, 60] * 5:
        study = optuna.create_study(direction=rnd.choice(["minimize", "maximize"]))
        for _ in range(n):
            state = rnd.choice(states)
            study.add_trial(create_trial(state=state, params={"lr": 0.01}, distributions={"lr": SPACE["lr"]},
                                         value=round(rnd.random(), 1) if state == TrialState.COMPLETE else None))
        sampler = PackTPESampler(optuna.samplers.TPESampler(seed=0), 4, cap)
        read = [t.number for t in sampler._fit_trials(study)]
        sampler.expect(4, snapshot_of(study.get_trials(deepcopy=False)))
        assert [t.number for t in sampler._fit_trials(study)] == read, (n, cap)


def test_the_cap_applies_above_its_threshold_and_says_so_once():
    study = _study(40)
    said: list[str] = []
    tpe = optuna.samplers.TPESampler(seed=0, multivariate=True, constant_liar=True, n_startup_trials=5)
    sampler = PackTPESampler(tpe, 4, HistoryCap(n_best=10, n_recent=5, above=30), say=said.append)
    assert len(sampler._fit_trials(study)) == 15 and len(sampler._fit_trials(study)) == 15
    assert said == [HistoryCap(10, 5, 30).line()]
    assert len(PackTPESampler(tpe, 4, HistoryCap(10, 5, above=40))._fit_trials(study)) == 40


@pytest.fixture
def counted(monkeypatch):
    """Counts the fits (PackPlan) and the proposals (PackPlan.next) of the study's packed sampler."""
    log = {"fits": 0, "proposals": 0}

    class Counted(PackPlan):
        def __init__(self, *a, **k):
            log["fits"] += 1
            super().__init__(*a, **k)

        def next(self):
            log["proposals"] += 1
            return super().next()

    monkeypatch.setattr(packsampling, "PackPlan", Counted)
    return log


def test_a_packed_study_with_one_fit_per_pack_runs_to_its_exact_budget(sqlite_url, tmp_path, counted):
    from hpsearch.study.run import run_study
    from hpsearch.study.validate import parse_study_config

    cfg = parse_study_config({
        "name": "batched",
        "data": {"source": "sklearn:iris", "split": {"valid": 0.25, "test": 0.2, "seed": 0}},
        "model": {"builder": "mlp", "fixed": {"optimizer": "adam", "n_hidden": 1}},
        "space": {"n_neurons": {"int": [4, 16]}, "learning_rate": {"float": [0.005, 0.05], "log": True}},
        "train": {"epochs": 2, "batch_size": 32, "pack": 4},
        "search": {"engine": "optuna", "n_trials": 14, "seed": 0, "sampler": "tpe", "pruner": "none"},
    })
    res = run_study(cfg, storage=sqlite_url, artifacts=str(tmp_path / "art"))
    study = optuna.load_study(study_name="batched", storage=sqlite_url)
    trials = study.get_trials()
    assert len(trials) == 14 and res.n_complete == 14
    assert "one fit per pack of 4" in study.user_attrs[STUDY.SAMPLING]
    assert counted["proposals"] >= 8 and counted["fits"] < counted["proposals"]  # startup trials: random


def test_reserve_many_keeps_the_budget_exact_and_hands_out_what_a_failed_call_asked(sqlite_url):
    from hpsearch.execution.budget import Budget

    storage = optuna.storages.RDBStorage(sqlite_url)
    study = optuna.create_study(study_name="reserve", storage=storage)
    budget = Budget(study, storage, sqlite_url, study._study_id, n_trials=5)
    first, finished = budget.reserve_many(3)
    assert len(first) == 3 and not finished
    second, _ = budget.reserve_many(3)
    assert len(second) == 2  # 5 - 3 running
    assert budget.reserve_many(3) == ([], False)  # the rest of the budget is running
    for trial in [*first, *second]:
        study.tell(trial, 1.0)
    assert budget.reserve_many(3) == ([], True)

    budget = Budget(study, storage, sqlite_url, study._study_id, n_trials=8)
    asks, ask = [], study.ask

    def flaky():  # the connection drops at the third ask, two trials asked
        asks.append(1)
        if len(asks) == 3:
            raise ConnectionError("dropped")
        return ask()

    study.ask = flaky
    with pytest.raises(ConnectionError):
        budget.reserve_many(3)
    again, _ = budget.reserve_many(3)  # the retried call: the two trials asked, nothing asked twice
    assert [t.number for t in again] == [5, 6] and len(study.get_trials()) == 7
    assert all(storage.get_trial(t._trial_id).state == TrialState.RUNNING for t in again)
    from hpsearch.storage.batch import running_without_heartbeat

    assert not running_without_heartbeat(storage, study._study_id)  # every handed-out trial has its heartbeat


def test_tpe_gets_one_fit_per_pack_and_cmaes_says_it_asks_once_per_trial():
    from types import SimpleNamespace

    from hpsearch.engines.packsampling import pack_sampling

    said: list[str] = []
    for name, sampler in (("tpe", optuna.samplers.TPESampler(seed=0)), ("cmaes", optuna.samplers.CmaEsSampler(seed=0))):
        study = optuna.create_study(sampler=sampler)
        ctx = SimpleNamespace(study=study, cfg=SimpleNamespace(search=SimpleNamespace(sampler=name)),
                              observer=SimpleNamespace(message=said.append),
                              decide=lambda key, value, line: said.append(f"hpsearch: {line}"))
        assert pack_sampling(ctx, 8) == (name == "tpe")  # TPE's new trials are drafted, CMA-ES's asked
        assert study.user_attrs[STUDY.SAMPLING] == said[-2]
        assert study.user_attrs[STUDY.TRIAL_CREATION] == said[-1]
        assert isinstance(study.sampler, PackTPESampler) == (name == "tpe")
    assert "one fit per pack of 8" in said[0] and "best 250 + 250 most recent" in said[0]
    assert said[1] == "hpsearch: sampler tpe: each new trial is created with its params in one transaction (drafted)"
    assert said[2] == "hpsearch: sampler cmaes: one ask per trial of the pack of 8 (no batched proposals for cmaes)"
    assert said[3].startswith("hpsearch: sampler cmaes: each new trial is asked and suggested one by one")


def test_a_reservations_proposals_are_scored_in_one_batch(monkeypatch):
    """Told how many proposals follow (``expect``: a reservation's drafts), the sampler draws and
    scores all their candidates in one evaluation of l and g (before: blocks of 1, 1, 2, 4, ...:
    one evaluation each, whose cost is mostly per distinct value of a discrete parameter); the
    proposals stay distinct and inside the space."""
    extends: list[int] = []
    real = PackPlan._extend
    monkeypatch.setattr(PackPlan, "_extend", lambda self, m: extends.append(m) or real(self, m))
    study = _study(60)
    sampler = PackTPESampler(optuna.samplers.TPESampler(seed=1, multivariate=True, constant_liar=True,
                                                        n_startup_trials=10), 64)
    study.sampler = sampler
    sampler.expect(16)
    asked = [study.ask(SPACE) for _ in range(16)]
    assert extends == [16 * 24] and sampler.fits == 1  # 16 proposals of 24 candidates: one batch
    assert all(_within(t.params) for t in asked) and len({tuple(sorted(t.params.items())) for t in asked}) == 16
    study.tell(asked[0], 1.0)
    extends.clear()
    for _ in range(8):  # no hint: 1, 1, 2, 4 blocks (a refill of one trial costs one block)
        study.ask(SPACE)
    assert extends == [24, 24, 48, 96]


def test_the_history_benchmark_runs_and_a_cap_changes_nothing_before_it_applies():
    """benchmarks/bench_history.py at a tiny size (the cap's measurement, kept runnable): the same
    seed gives the same trials with and without a cap until the cap first applies."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_history.py"
    spec = importlib.util.spec_from_file_location("bench_history", path)
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    uncapped, ms, _ = bench.history_study("surrogate", None, 96, 16, 4, seed=0)
    capped, _, _ = bench.history_study("surrogate", (10, 10, 40), 96, 16, 4, seed=0)
    assert len(uncapped) == 96 and all(m > 0 for m in ms)
    assert uncapped[:40] == capped[:40]  # no cap before 40 finished trials
    assert uncapped != capped
