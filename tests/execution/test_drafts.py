"""A pack's trials drafted whole (hpsearch.execution.drafts): the same proposals as one ``ask`` and
``suggest_*`` per trial, stored as ordinary RUNNING trials with their params at creation, each with a
heartbeat before the reservation returns, queued trials popped first with their fixed params, the
budget exact; and far fewer commits per trial than asking."""

from __future__ import annotations

import optuna
import pytest
import sqlalchemy
from optuna.trial import TrialState

from hpsearch.engines.packsampling import HISTORY, PackTPESampler
from hpsearch.execution.budget import Budget
from hpsearch.execution.drafts import draft_trial
from hpsearch.storage import open_storage
from hpsearch.storage.batch import running_without_heartbeat

K = 6


def suggest(trial) -> None:
    """A define-by-run space with a conditional parameter (drawn by sample_independent)."""
    n = trial.suggest_int("n_hidden", 1, 2)
    trial.suggest_int("n_neurons", 4, 32)
    trial.suggest_float("learning_rate", 1e-3, 0.1, log=True)
    if n == 2:
        trial.suggest_categorical("act", ["relu", "tanh"])
    trial.suggest_int("fixed_width", 3, 3)  # a single-valued range: its one value


def _study(url: str, name: str, sampler: str, pruner=None) -> tuple[object, optuna.Study, Budget]:
    storage = open_storage(url)
    if sampler == "tpe":
        tpe = optuna.samplers.TPESampler(seed=0, multivariate=True, constant_liar=True, n_startup_trials=4)
        chosen = PackTPESampler(tpe, K, HISTORY)
    else:
        chosen = optuna.samplers.RandomSampler(seed=0)
    study = optuna.create_study(study_name=name, storage=storage, sampler=chosen, pruner=pruner,
                                direction="maximize")
    return storage, study, Budget(study, storage, url, study._study_id, 3 * K + 2)


def _packs(study: optuna.Study, budget: Budget, drafted: bool) -> list[dict]:
    """Three packs reserved, suggested and told; the params of every trial in order."""
    if drafted:
        budget.draft = lambda number: draft_trial(study, number, suggest, {"worker": "w"})
    out = []
    for _ in range(3):
        trials, finished = budget.reserve_many(K)
        assert len(trials) == K and not finished
        for t in trials:
            suggest(t)
        for t in trials:
            out.append(dict(t.params))
            study.tell(t, t.params["learning_rate"] * (1 + t.params["n_hidden"]))
    return out


@pytest.mark.parametrize("sampler", ["tpe", "random"])
def test_drafted_packs_propose_what_asking_proposes(tmp_path, sampler):
    """Seeded alike, drafting and asking give the same trials (random startup, then one TPE fit per
    pack with its constant-liar spread), under Hyperband too. One difference, by design: a pack's
    drafts are stored together at the end of its reservation, so TPE's ``sample_independent`` (here
    the conditional ``act``, after the startup trials) does not see the same reservation's earlier
    drafts as running trials; asked one by one, it does. Every other parameter is identical."""
    runs = {}
    for drafted in (False, True):
        pruner = optuna.pruners.HyperbandPruner(min_resource=1, max_resource=9, reduction_factor=3)
        _, study, budget = _study(f"sqlite:///{tmp_path}/{drafted}.db", "s", sampler, pruner)
        runs[drafted] = _packs(study, budget, drafted)
    assert len(runs[True]) == len(runs[False]) == 3 * K
    if sampler == "random":
        assert runs[True] == pytest.approx(runs[False])
    for drafted, asked in zip(runs[True], runs[False]):
        assert drafted.keys() == asked.keys()
        assert {k: v for k, v in drafted.items() if k != "act"} == pytest.approx(
            {k: v for k, v in asked.items() if k != "act"})
    assert runs[True][:K] == pytest.approx(runs[False][:K])  # the random startup pack: conditional included
    assert any("act" in p for p in runs[True])  # the conditional parameter was drafted


def test_drafted_trials_are_ordinary_beaten_and_cheap(storage_url):
    """A queued trial popped with drafted ones: on PostgreSQL the drafts are created in the study lock's
    transaction, the popped one's heartbeat written before (after, its new row would wait on the
    drafts' uncommitted ones: a deadlock through the client)."""
    url = storage_url
    storage, study, budget = _study(url, "d", "tpe")
    study.enqueue_trial({"n_hidden": 2, "n_neurons": 7, "learning_rate": 0.01, "act": "tanh", "fixed_width": 3})
    budget.draft = lambda number: draft_trial(study, number, suggest, {"worker": "w"})
    budget.beat_within = 3600.0  # no early heartbeat (a slow reservation beats early: see the next test)
    wrote, commits, writes = [False], [], []

    def statement(conn, cur, stmt, *a):
        wrote[0] = wrote[0] or not stmt.lstrip().startswith(("SELECT", "BEGIN", "COMMIT", "SET"))  # SET: the lock's

    def commit(conn):
        commits.append(wrote[0])
        wrote[0] = False

    sqlalchemy.event.listen(storage.engine, "before_cursor_execute", statement)
    sqlalchemy.event.listen(storage.engine, "commit", commit)
    trials, _ = budget.reserve_many(K)
    # the popped one's (its state), one for all K - 1 drafted trials with their first heartbeats, and
    # the popped one's heartbeat
    assert sum(commits) == 1 + 1 + 1
    assert [t.number for t in trials] == list(range(K))
    fixed = {"n_hidden": 2, "n_neurons": 7, "learning_rate": 0.01, "act": "tanh", "fixed_width": 3}
    queued = storage.get_trial(budget.trial_id(trials[0]))
    assert queued.system_attrs["fixed_params"] == fixed  # the queued trial first, with its fixed params
    assert not running_without_heartbeat(storage, study._study_id)  # every one has its heartbeat
    for t in trials[1:]:  # drafted: stored RUNNING with every parameter, distribution and the worker at once
        frozen = storage.get_trial(budget.trial_id(t))
        assert frozen.state == TrialState.RUNNING and frozen.user_attrs == {"worker": "w"}
        assert set(frozen.params) >= {"n_hidden", "n_neurons", "learning_rate", "fixed_width"}
        assert frozen.params == t.params and frozen.distributions == t.distributions
    sqlalchemy.event.listen(storage.engine, "before_cursor_execute",
                            lambda conn, cur, stmt, *a: writes.append(stmt) if not stmt.lstrip().startswith(
                                ("SELECT", "BEGIN", "COMMIT")) else None)
    for t in trials[1:]:
        suggest(t)  # reads the stored values: no write
    assert writes == []
    suggest(trials[0])
    assert trials[0].params == fixed
    for t in trials:
        study.tell(t, 0.5)
    assert [t.state for t in study.get_trials()] == [TrialState.COMPLETE] * K


def test_drafted_reservation_keeps_the_budget_exact_and_a_failed_call_stores_nothing(storage_url, monkeypatch):
    """On PostgreSQL the count and the creation run in the study lock's transaction (one connection
    checked out per reservation): a failure anywhere in it stores nothing there either."""
    storage, study, budget = _study(storage_url, "b", "random")
    budget.n_trials = 5
    calls = []

    def flaky(number):  # the sampler fails at the third draft
        calls.append(number)
        if len(calls) == 3:
            raise ConnectionError("dropped")
        return draft_trial(study, number, suggest, {})

    budget.draft = flaky
    with pytest.raises(ConnectionError):
        budget.reserve_many(4)
    assert study.get_trials() == []  # a reservation's drafts are stored together: none of a failed one
    import optuna.distributions

    real, made = optuna.distributions.distribution_to_json, []

    def breaks(dist):  # the creating transaction fails after its trials' rows went in: rolled back whole
        made.append(1)
        if len(made) == 3:
            raise ConnectionError("dropped")
        return real(dist)

    monkeypatch.setattr(optuna.distributions, "distribution_to_json", breaks)
    with pytest.raises(ConnectionError):
        budget.reserve_many(4)
    assert study.get_trials() == [] and not running_without_heartbeat(storage, study._study_id)
    monkeypatch.setattr(optuna.distributions, "distribution_to_json", real)
    budget.draft = lambda number: draft_trial(study, number, suggest, {})
    checkouts: list[int] = []

    def checked_out(*_: object) -> None:
        checkouts.append(1)

    sqlalchemy.event.listen(storage.engine, "checkout", checked_out)
    again, _ = budget.reserve_many(4)
    sqlalchemy.event.remove(storage.engine, "checkout", checked_out)
    if storage_url.startswith("postgresql"):  # the lock's connection: the count and the creation in it
        assert len(checkouts) == 1, checkouts
    assert [t.number for t in again] == [0, 1, 2, 3] and len(study.get_trials()) == 4
    assert not running_without_heartbeat(storage, study._study_id)  # created with their heartbeats
    more, _ = budget.reserve_many(4)
    assert [t.number for t in more] == [4]  # 5 - 4 running: nothing beyond the budget
    assert budget.reserve_many(4) == ([], False)
    for t in [*again, *more]:
        study.tell(t, 1.0)
    assert budget.reserve_many(4) == ([], True)


def test_drafted_trials_are_not_read_back_and_are_what_a_read_gives(tmp_path):
    """The Trials a drafted reservation hands out are built from their templates (numbered as
    stored), not read back one by one (before: one storage read per trial, Trial's constructor):
    each is the Trial a read gives, attribute for attribute."""
    _, study, budget = _study(f"sqlite:///{tmp_path}/r.db", "r", "tpe")
    budget.draft = lambda number: draft_trial(study, number, suggest, {"worker": "w"})
    first, _ = budget.reserve_many(K)  # the random startup pack
    for t in first:
        study.tell(t, t.params["learning_rate"])
    reads = []
    real = study._storage.get_trial
    study._storage.get_trial = lambda trial_id: reads.append(trial_id) or real(trial_id)
    try:
        trials, _ = budget.reserve_many(K)  # one TPE fit
    finally:
        del study._storage.get_trial
    assert reads == []  # K reads (one per trial) before
    assert [t.number for t in trials] == list(range(K, 2 * K))
    for t in trials:
        read = optuna.trial.Trial(study, budget.trial_id(t))
        assert set(vars(t)) == set(vars(read))
        assert all(getattr(t, name) == value for name, value in vars(read).items()), t.number
        suggest(t)  # the stored values
        assert t.params == read.params


def test_a_drafted_reservation_reads_the_study_once(tmp_path):
    """A reservation's count, the sampler's search space and its one TPE fit share one read of the
    study's trials, made under the lock (before: three reads, each re-reading every running trial).
    (A conditional parameter is drawn by TPE's own ``sample_independent``, which reads the study
    itself: not used here.)"""

    def plain(trial) -> None:
        trial.suggest_int("n_neurons", 4, 32)
        trial.suggest_float("learning_rate", 1e-3, 0.1, log=True)

    _, study, budget = _study(f"sqlite:///{tmp_path}/o.db", "o", "tpe")
    budget.draft = lambda number: draft_trial(study, number, plain, {"worker": "w"})
    for _ in range(2):  # the random startup pack, then a fitted one
        trials, _ = budget.reserve_many(K)
        for t in trials:
            study.tell(t, t.params["learning_rate"])
    reads = []
    real = study._storage.get_all_trials
    study._storage.get_all_trials = lambda *a, **k: reads.append(1) or real(*a, **k)
    try:
        before = study.sampler.fits
        trials, _ = budget.reserve_many(K)
    finally:
        del study._storage.get_all_trials
    assert study.sampler.fits == before + 1 and len(trials) == K
    assert len(reads) == 1  # 3 before


def test_a_reservation_counts_the_study_in_one_pass_by_the_budget_rule():
    """``tally`` (done, running, waiting) agrees with ``counts_toward_budget`` trial by trial: a warm
    start's copies are done but not counted, FAIL trials free their slots."""
    import random

    from optuna.trial import TrialState, create_trial

    from hpsearch.execution.budget import tally
    from hpsearch.records import TRIAL, counts_toward_budget

    rng = random.Random(1)
    trials = []
    for _ in range(600):
        state = rng.choice(list(TrialState))
        copied = {TRIAL.COPIED_FROM: "old#1"} if rng.random() < 0.2 else {}
        trials.append(create_trial(state=state, user_attrs=copied, **({"value": 0.5} if state == TrialState.COMPLETE
                                                                        else {})))
    want = (sum(counts_toward_budget(t) for t in trials), sum(t.state == TrialState.RUNNING for t in trials),
            sum(t.state == TrialState.WAITING for t in trials))
    assert tally(trials) == want and tally([]) == (0, 0, 0)
