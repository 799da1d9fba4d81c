"""Storage round trips of a pack (issue 23 item 4): one transaction per pack epoch for every member's
intermediate value, not one per member; each member's whole curve is still stored; heartbeats of a
pack's trials in one transaction (:class:`hpsearch.execution.control.PackHeartbeat`)."""

from __future__ import annotations

import itertools
import threading
import time
from typing import Any

import optuna
import pytest
import sqlalchemy

from hpsearch.execution.control import Control, PackHeartbeat
from hpsearch.packing import pack as packed
from hpsearch.records import TRIAL
from hpsearch.study.run import run_study
from hpsearch.study.validate import parse_study_config

pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
K, EPOCHS = 8, 4


def _study(name: str) -> dict[str, Any]:
    return {"name": name, "data": {"source": "sklearn:iris", "split": {"valid": 0.25, "test": 0.2, "seed": 0}},
            "model": {"builder": "mlp", "fixed": {"optimizer": "adam", "n_hidden": 1}},
            "space": {"n_neurons": {"int": [4, 16]}, "learning_rate": {"float": [0.005, 0.05], "log": True}},
            "train": {"epochs": EPOCHS, "batch_size": 16, "pack": K, "early_stopping": {"patience": EPOCHS}},
            "search": {"engine": "optuna", "sampler": "random", "pruner": "none", "n_trials": K, "seed": 0,
                       "keep_models": 1}}


def test_a_pack_epoch_is_one_commit_whatever_k_and_every_curve_is_stored(sqlite_url, tmp_path, monkeypatch):
    """Between two epoch ends of a pack of 8 (no member ends there) the storage sees at most 2
    commits (one transaction for the 8 members' values; before: 8), and every member's values are
    stored at every epoch (what optuna-dashboard draws)."""
    commits: list[str] = []
    at_epoch: list[int] = []
    call = packed.Reports.__call__

    def counted(self: Any, values: dict[int, tuple[int, float]]) -> set[int]:
        out = call(self, values)
        self.flush()  # this epoch's transaction done: the count below is the epoch's
        at_epoch.append(len(commits))
        return out

    monkeypatch.setattr(packed.Reports, "__call__", counted)
    on_commit = lambda conn: commits.append(threading.current_thread().name)  # noqa: E731
    sqlalchemy.event.listen(sqlalchemy.engine.Engine, "commit", on_commit)
    try:
        res = run_study(parse_study_config(_study("writes")), storage=sqlite_url, artifacts=str(tmp_path / "art"))
    finally:
        sqlalchemy.event.remove(sqlalchemy.engine.Engine, "commit", on_commit)
    assert res.n_complete == K and len(at_epoch) == EPOCHS
    per_epoch = [b - a for a, b in itertools.pairwise(at_epoch)]
    assert per_epoch and max(per_epoch) <= 2, per_epoch  # one per member (8) before batching
    assert sum(name.startswith("hpsearch-pack-report") for name in commits) == EPOCHS  # one per epoch
    trials = optuna.load_study(study_name="writes", storage=sqlite_url).get_trials()
    assert len(trials) == K
    for t in trials:
        assert t.user_attrs[TRIAL.PACK_SIZE] == K
        assert sorted(t.intermediate_values) == list(range(EPOCHS))
        assert t.intermediate_values == dict(enumerate(t.user_attrs[TRIAL.HISTORY]["val_accuracy"]))


def test_pack_heartbeat_beats_every_trial_in_one_transaction_and_sees_a_lost_one(sqlite_url):
    from hpsearch.storage import open_storage

    storage = open_storage(sqlite_url)
    study = optuna.create_study(study_name="beats", storage=storage)
    trials = [study.ask() for _ in range(4)]
    ids = [t._trial_id for t in trials]
    commits: list[int] = []
    on_commit = lambda conn: commits.append(1)  # noqa: E731
    ctl = Control()
    beat = PackHeartbeat(storage, 0.05, ctl)
    sqlalchemy.event.listen(storage.engine, "commit", on_commit)
    try:
        for tid in ids:
            beat.add(tid)
        time.sleep(0.3)
        with storage.engine.connect() as conn:
            beats = conn.execute(sqlalchemy.text("SELECT trial_id FROM trial_heartbeats")).scalars().all()
        assert sorted(beats) == ids
        rounds = len(commits)
        assert rounds >= 2 and not ctl.lost
        beat.discard(ids[0])  # recorded by its loop: leaving first, its state is no loss
        study.tell(trials[0], 1.0)
        time.sleep(0.2)
        assert not ctl.lost
        storage.set_trial_state_values(ids[1], optuna.trial.TrialState.FAIL)  # another worker failed it
        deadline = time.monotonic() + 5
        while not ctl.lost and time.monotonic() < deadline:
            time.sleep(0.02)
        assert ctl.lost
    finally:
        beat.stop()
        sqlalchemy.event.remove(storage.engine, "commit", on_commit)
    n_beats = len(commits)
    assert n_beats <= rounds + 15  # one commit per round for all 4 (a round every 0.05 s), not 4


def test_a_batch_with_a_finished_trial_writes_nothing(sqlite_url):
    """One transaction: all of an epoch's values or none (a crash loses at most that epoch)."""
    import math

    from hpsearch.storage import open_storage
    from hpsearch.storage.batch import write_intermediate_values

    storage = open_storage(sqlite_url)
    study = optuna.create_study(study_name="atomic", storage=storage)
    a, b = study.ask(), study.ask()
    write_intermediate_values(storage, [(a._trial_id, 0, 0.5), (b._trial_id, 0, math.inf)])
    study.tell(b, 1.0)
    with pytest.raises(optuna.exceptions.UpdateFinishedTrialError):
        write_intermediate_values(storage, [(a._trial_id, 1, 0.7), (b._trial_id, 1, 0.8)])
    assert storage.get_trial(a._trial_id).intermediate_values == {0: 0.5}
    assert storage.get_trial(b._trial_id).intermediate_values == {0: math.inf}


def test_a_trials_recorded_attributes_are_one_commit(sqlite_url):
    """record_candidate with the RDB storage writes a trial's attributes in one transaction; told
    trial by trial (Trial.set_user_attr) they are one commit each."""
    from hpsearch.storage import open_storage
    from hpsearch.trials.context import Candidate, record_candidate

    storage = open_storage(sqlite_url)
    study = optuna.create_study(study_name="attrs", storage=storage)
    attrs = {TRIAL.EPOCHS: 3, TRIAL.FIT_TIME: 0.5, TRIAL.WORKER: "w", TRIAL.HISTORY: {"val_accuracy": [0.1, 0.2]}}
    commits: list[int] = []
    on_commit = lambda conn: commits.append(1)  # noqa: E731
    counts = []
    sqlalchemy.event.listen(storage.engine, "commit", on_commit)
    try:
        for batched in (True, False):
            trial = study.ask()
            trial.set_user_attr(TRIAL.WORKER, "before")  # a stored key is overwritten
            before = len(commits)
            cand = Candidate(params={}, state="COMPLETE", value=0.2, user_attrs=dict(attrs))
            where = {"storage": storage, "trial_id": trial._trial_id} if batched else {}
            frozen = record_candidate(study, cand, engine="optuna", trial=trial, **where)
            counts.append(len(commits) - before)
            assert frozen.state.name == "COMPLETE" and frozen.value == 0.2
            assert {k: frozen.user_attrs[k] for k in attrs} == attrs and frozen.user_attrs[TRIAL.ENGINE] == "optuna"
    finally:
        sqlalchemy.event.remove(storage.engine, "commit", on_commit)
    batched_n, per_key_n = counts
    assert per_key_n - batched_n == len(attrs)  # len(attrs) + 1 commits (the engine's name too) -> 1


def test_a_packs_trials_are_created_together_and_told_together(sqlite_url, tmp_path):
    """A pack of 8 drafted trials (random sampler) that end at the same epoch: their rows are
    created in one transaction (with their params and first heartbeats) and their ends (attributes,
    values, states) written in one more; before, one of each per trial. Stored as Optuna stores
    them: every trial COMPLETE with its value, params, attributes and whole curve."""
    tagged: list[set[str]] = [set()]

    def statement(conn: Any, cur: Any, stmt: str, *a: Any) -> None:
        head = " ".join(stmt.split()[:3]).upper()
        if head in ("INSERT INTO TRIALS", "UPDATE TRIALS SET"):
            tagged[-1].add(head)

    def commit(conn: Any) -> None:
        tagged.append(set())

    sqlalchemy.event.listen(sqlalchemy.engine.Engine, "before_cursor_execute", statement)
    sqlalchemy.event.listen(sqlalchemy.engine.Engine, "commit", commit)
    try:
        res = run_study(parse_study_config(_study("together")), storage=sqlite_url, artifacts=str(tmp_path / "a"))
    finally:
        sqlalchemy.event.remove(sqlalchemy.engine.Engine, "before_cursor_execute", statement)
        sqlalchemy.event.remove(sqlalchemy.engine.Engine, "commit", commit)
    assert res.n_complete == K
    creates = [t for t in tagged if any(h.startswith("INSERT INTO TRIALS") for h in t)]
    ends = [t for t in tagged if any(h.startswith("UPDATE TRIALS SET") for h in t)]
    assert len(creates) == 1 and len(ends) == 1, (creates, ends)  # 8 and 8 (at least) before
    study = optuna.load_study(study_name="together", storage=sqlite_url)
    for t in study.get_trials():
        assert (t.state.name == "COMPLETE" and t.value == t.user_attrs[TRIAL.HISTORY]["val_accuracy"][
            t.user_attrs[TRIAL.EPOCHS] - 1]) or t.value == max(t.user_attrs[TRIAL.HISTORY]["val_accuracy"])
        assert t.user_attrs[TRIAL.ENGINE] == "optuna" and set(t.params) == {"n_neurons", "learning_rate"}
        assert sorted(t.intermediate_values) == list(range(EPOCHS)) and t.datetime_complete >= t.datetime_start


def test_told_together_a_trial_failed_as_stale_meanwhile_is_left_as_it_is(sqlite_url):
    """finish_trials ends the running trials of a batch and leaves one another worker failed as stale
    (its copy runs elsewhere): its state, attributes and values stay as that worker wrote them."""
    from optuna.trial import TrialState

    from hpsearch.storage import open_storage
    from hpsearch.storage.batch import Finish, finish_trials

    storage = open_storage(sqlite_url)
    study = optuna.create_study(study_name="stale", storage=storage)
    a, b = study.ask(), study.ask()
    storage.set_trial_user_attr(b._trial_id, TRIAL.FAILURE, "heartbeat lost")
    storage.set_trial_state_values(b._trial_id, TrialState.FAIL)
    done = finish_trials(storage, [Finish(a._trial_id, "COMPLETE", [0.5], {"x": 1}),
                                   Finish(b._trial_id, "COMPLETE", [0.7], {"x": 2})], 1)
    assert done == {a._trial_id: "COMPLETE"}
    ta, tb = storage.get_trial(a._trial_id), storage.get_trial(b._trial_id)
    assert (ta.state, ta.values, ta.user_attrs) == (TrialState.COMPLETE, [0.5], {"x": 1})
    assert (tb.state, tb.values, tb.user_attrs) == (TrialState.FAIL, None, {TRIAL.FAILURE: "heartbeat lost"})
    assert finish_trials(storage, [Finish(a._trial_id, "COMPLETE", [0.9], {"x": 3})], 1) == {}  # a retry: unchanged
    assert storage.get_trial(a._trial_id).values == [0.5]


def test_told_together_attributes_stored_before_are_rewritten_only_where_they_changed(storage_url):
    """finish_trials over trials whose attributes were partly stored before (the worker, set at
    creation): a changed one is rewritten, an unchanged one stays (on PostgreSQL its row version is
    the same), a new one is added, per trial; no statement per attribute: on PostgreSQL one upsert
    through the table's unique index (no read of the stored values), on SQLite a read, one UPDATE
    executemany and one INSERT."""
    import sqlalchemy

    from hpsearch.storage import open_storage
    from hpsearch.storage.batch import Finish, finish_trials

    storage = open_storage(storage_url)
    study = optuna.create_study(study_name="rewrite", storage=storage)
    a, b = study.ask(), study.ask()
    for t in (a, b):
        storage.set_trial_user_attr(t._trial_id, "worker", "w1")
        storage.set_trial_user_attr(t._trial_id, "note", "old")
    pg = storage_url.startswith("postgresql")

    def version() -> Any:  # the row version of b's unchanged "note" (PostgreSQL: a rewrite moves it)
        with storage.engine.connect() as conn:
            return conn.execute(sqlalchemy.text("SELECT ctid FROM trial_user_attributes WHERE trial_id = :t "
                                                "AND key = 'note'"), {"t": b._trial_id}).scalar_one()

    before = version() if pg else None
    writes: list[str] = []
    sqlalchemy.event.listen(storage.engine, "before_cursor_execute",
                            lambda *args: writes.append(args[2]) if "trial_user_attributes" in args[2] else None)
    finish_trials(storage, [Finish(a._trial_id, "COMPLETE", [0.5], {"worker": "w1", "note": "new", "x": 1}),
                            Finish(b._trial_id, "COMPLETE", [0.7], {"worker": "w2", "note": "old", "x": 2})], 1)
    if pg:  # one upsert through the unique index
        assert len(writes) == 1 and "ON CONFLICT" in writes[0].upper(), writes
    else:  # the stored values read, one UPDATE executemany for the changed, one INSERT for the new
        assert [w.lstrip().split()[0].upper() for w in writes] == ["SELECT", "UPDATE", "INSERT"], writes
    assert storage.get_trial(a._trial_id).user_attrs == {"worker": "w1", "note": "new", "x": 1}
    assert storage.get_trial(b._trial_id).user_attrs == {"worker": "w2", "note": "old", "x": 2}
    if pg:
        assert version() == before  # unchanged: not rewritten


def test_a_pack_end_reads_the_study_once_and_its_trials_are_told_as_stored(sqlite_url, tmp_path, monkeypatch):
    """Members of a pack of 8 drafted trials that end together: such an end reads the study's trials
    once (the keep rule's ranking), not twice (before: all read again after the tell); only a member
    that stored its model is read back (by itself: the upload wrote its system attributes); an end
    with no member ending reads nothing (the clean-up of models that fell out of the best K is not
    counted). The trials handed on after the tell (the run's lines, trial callbacks) are the stored
    ones, field for field."""
    from hpsearch.execution import loop

    ends: list[list[str]] = []
    where = [""]
    told: list[tuple[int, Any]] = []
    cached = optuna.storages._CachedStorage
    real_read, real_get = cached.get_all_trials, optuna.storages.RDBStorage.get_trial
    real_end, real_told, real_clean = packed.Pack._end, loop.TrialLoop.told, loop.keep_best_models

    def counted(kind: str, real: Any) -> Any:
        def call(*a: Any, **k: Any) -> Any:
            if where[0] == "end":
                ends[-1].append(kind)
            return real(*a, **k)
        return call

    def within(name: str, real: Any) -> Any:
        def run(*a: Any, **k: Any) -> Any:
            before, where[0] = where[0], name
            if name == "end":
                ends.append([])
            try:
                return real(*a, **k)
            finally:
                where[0] = before
        return run

    monkeypatch.setattr(cached, "get_all_trials", counted("study", real_read))
    monkeypatch.setattr(optuna.storages.RDBStorage, "get_trial", counted("trial", real_get))
    monkeypatch.setattr(packed.Pack, "_end", within("end", real_end))
    monkeypatch.setattr(loop, "keep_best_models", within("clean-up", real_clean))
    monkeypatch.setattr(loop.TrialLoop, "told", lambda self, frozen, streak=True: told.append(
        (len(ends) - 1, frozen)) or real_told(self, frozen, streak))
    res = run_study(parse_study_config(_study("once")), storage=sqlite_url, artifacts=str(tmp_path / "a"))
    assert res.n_complete == K
    for n, reads in enumerate(ends):
        members = [f for e, f in told if e == n]
        kept = sum(bool(f.user_attrs.get(TRIAL.MODEL_ARTIFACT)) for f in members)
        # before: 2 reads of the study (and one with no member ending)
        assert reads.count("study") == (1 if members else 0) and reads.count("trial") == kept, (n, reads, kept)
    stored = {t.number: t for t in optuna.load_study(study_name="once", storage=sqlite_url).get_trials()}
    assert sorted(t.number for _, t in told) == sorted(stored)
    for _, frozen in told:
        other = vars(stored[frozen.number])
        assert frozen == stored[frozen.number], {k: (v, other.get(k)) for k, v in vars(frozen).items()
                                                 if v != other.get(k)}


def test_what_the_process_sees_of_a_pruned_packed_study_is_what_the_storage_holds(sqlite_url, tmp_path, monkeypatch):
    """At the end of a packed Hyperband study, the trials the running process's study returns (Optuna's
    cached storage, which hpsearch's batched writes feed) equal a fresh read field for field, the
    pruner's own ``completed_rung_*`` attributes included: what Optuna's pruners and samplers decide
    from is what is stored (a change that put told trials into the cache without them made Hyperband
    prune against fewer peers, 56 of 150 trials differing; reverted before it landed)."""
    from hpsearch.study import run as study_run

    seen: dict[str, list] = {}
    real = study_run.finalize

    def compare(ctx, force=False):
        seen["process"] = list(ctx.study.get_trials(deepcopy=False))
        return real(ctx, force)

    monkeypatch.setattr(study_run, "finalize", compare)
    cfg = parse_study_config({
        "name": "view", "data": {"source": "sklearn:iris", "split": {"valid": 0.25, "test": 0.2, "seed": 0}},
        "model": {"builder": "mlp", "fixed": {"optimizer": "sgd", "n_hidden": 1}},
        "space": {"n_neurons": {"int": [2, 16]}, "learning_rate": {"float": [1e-4, 0.1], "log": True}},
        "train": {"epochs": 12, "batch_size": 16, "pack": 16, "early_stopping": {"patience": 3}},
        "search": {"engine": "optuna", "n_trials": 40, "seed": 0, "pruner": "hyperband", "keep_models": 2},
    })
    run_study(cfg, storage=sqlite_url, artifacts=str(tmp_path / "art"))
    fresh = optuna.load_study(study_name="view", storage=sqlite_url).get_trials()
    process = sorted(seen["process"], key=lambda t: t.number)
    assert [t.number for t in process] == [t.number for t in fresh] == list(range(40))
    assert any(k.startswith("completed_rung_") for t in fresh for k in t.system_attrs)  # Hyperband wrote its rungs
    fields = ("state", "value", "values", "params", "distributions", "intermediate_values", "user_attrs",
              "system_attrs", "datetime_start", "datetime_complete")
    for a, b in zip(process, fresh):
        for f in fields:
            assert getattr(a, f) == getattr(b, f), (a.number, f)


def test_batched_writes_store_what_optunas_api_stores_on_each_backend(storage_url):
    """The batched create and tell (Core inserts; on PostgreSQL multi-row INSERT ... RETURNING)
    store on SQLite and PostgreSQL what Optuna's create_new_trial and tell store, trial for trial."""
    from tests.kernel.test_compat import batch_writes_store_what_optuna_stores

    batch_writes_store_what_optuna_stores(storage_url)


def test_an_attribute_key_longer_than_its_column_is_refused_whole_not_cut(postgres_url):
    """PostgreSQL's upsert sends the keys as an array of unbounded text: a key longer than Optuna's
    column (512) is refused by the insert, as Optuna's own INSERT refuses it, and the tell is rolled
    back whole; an explicit cast to VARCHAR(512)[] would have cut it silently."""
    import psycopg

    from hpsearch.storage import open_storage
    from hpsearch.storage.batch import Finish, finish_trials

    storage = open_storage(postgres_url)
    study = optuna.create_study(study_name="long-key", storage=storage)
    trial = study.ask()
    with pytest.raises(Exception) as err:
        finish_trials(storage, [Finish(trial._trial_id, "COMPLETE", [0.5], {"k" * 600: 1, "x": 2})], 1)
    assert isinstance(getattr(err.value, "orig", err.value), psycopg.errors.StringDataRightTruncation), err.value
    stored = storage.get_trial(trial._trial_id)
    assert stored.state.name == "RUNNING" and stored.user_attrs == {}
