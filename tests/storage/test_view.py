"""hpsearch.storage.view: a reservation's read of the study, kept up to date with this process's own
writes, is what a fresh read returns; another process's change makes it read again."""

from __future__ import annotations

from typing import Any

import numpy as np
import optuna
import pytest

from hpsearch.storage.view import Snapshot, StudyView, snapshot_of
from hpsearch.study.run import run_study
from hpsearch.study.validate import parse_study_config

pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")

#: what a reservation reads of a finished trial (its count, TPE's fit, the pruned trials' curves) ...
FIELDS = ("number", "state", "values", "params", "distributions", "intermediate_values", "user_attrs",
          "datetime_start", "datetime_complete")
#: ... and of a running one (the count, TPE's liars: the curve it is writing is not read)
RUNNING_FIELDS = ("number", "state", "params", "distributions")


def _fresh(url: str, name: str) -> list[Any]:
    """The study's trials read by a new storage object (no cache of this process)."""
    return optuna.load_study(study_name=name, storage=optuna.storages.RDBStorage(url)).get_trials(deepcopy=False)


@pytest.mark.parametrize(("pruner", "backend"), [("hyperband", "sqlite"), ("none", "sqlite"),
                                                 ("hyperband", "postgresql")])
def test_every_reservation_sees_what_a_fresh_read_returns(request: Any, tmp_path: Any, monkeypatch: Any,
                                                          pruner: str, backend: str) -> None:
    """A packed study on the defaults (TPE, pack refills; Hyperband and no pruner): at every
    reservation the view's trials, reused or read, equal a fresh read field for field, and its
    count and columns (the snapshot) equal those computed from the fresh read; most
    reservations reuse it (no other process writes). A running trial's curve and attributes, written
    as it trains, are not followed (nothing the reservation reads). On PostgreSQL the count runs in the
    study lock's transaction."""
    url = request.getfixturevalue("sqlite_url" if backend == "sqlite" else "postgres_url")
    name = f"view-{pruner}"
    real = StudyView.trials
    calls: list[bool] = []

    def checked(self: StudyView, conn: Any = None) -> list[Any]:
        reads = self.reads
        got = real(self, conn)
        calls.append(self.reads == reads)
        fresh = _fresh(url, name)
        assert [t.number for t in got] == [t.number for t in fresh]
        for a, b in zip(got, fresh):
            for f in RUNNING_FIELDS if b.state.name == "RUNNING" else FIELDS:
                assert getattr(a, f) == getattr(b, f), (len(calls), a.number, f, getattr(a, f), getattr(b, f))
        return got

    real_snapshot = StudyView.snapshot
    snaps: list[int] = []

    def checked_snapshot(self: StudyView, conn: Any = None) -> Snapshot:
        got = real_snapshot(self, conn)
        want = snapshot_of(_fresh(url, name))
        assert got.done == want.done and got.running == want.running and got.waiting == want.waiting
        assert np.array_equal(got.states, want.states) and np.array_equal(got.values, want.values, equal_nan=True)
        snaps.append(len(got.trials))
        return got

    monkeypatch.setattr(StudyView, "trials", checked)
    monkeypatch.setattr(StudyView, "snapshot", checked_snapshot)
    cfg = parse_study_config({
        "name": name, "data": {"source": "sklearn:iris", "split": {"valid": 0.25, "test": 0.2, "seed": 0}},
        "model": {"builder": "mlp", "fixed": {"optimizer": "adam"}},
        "space": {"n_hidden": {"int": [1, 2]}, "n_neurons": {"int": [2, 16]},
                  "learning_rate": {"float": [1e-3, 0.1], "log": True}},
        "train": {"epochs": 6, "batch_size": 32, "pack": 8, "early_stopping": {"patience": 2}},
        "search": {"engine": "optuna", "n_trials": 48, "seed": 0, "pruner": pruner, "keep_models": 1},
    })
    res = run_study(cfg, storage=url, artifacts=str(tmp_path / "art"))
    assert res.n_complete + res.n_pruned == 48
    assert len(calls) >= 4 and sum(calls) >= len(calls) // 2, calls  # reused at most reservations
    assert len(snaps) >= 4 and snaps[-1] > snaps[0]  # the count and the columns too, followed as the study grew


def test_another_process_change_is_read_and_this_process_writes_are_not(storage_url: str) -> None:
    """Trials another storage object creates, ends or fails make the next use read the study; the
    trials this process creates and ends (told to the view) do not."""
    storage = optuna.storages.RDBStorage(storage_url)
    study = optuna.create_study(study_name="v", storage=storage)
    other = optuna.load_study(study_name="v", storage=optuna.storages.RDBStorage(storage_url))
    view = StudyView(study, storage, study._study_id)
    assert view.trials() == [] and view.reads == 1
    mine = study.ask()
    view.created([storage.get_trial(mine._trial_id)])
    assert [t.number for t in view.trials()] == [0] and view.reads == 1  # reused
    study.tell(mine, 1.0)
    view.ended(storage.get_trial(mine._trial_id))
    assert view.trials()[0].values == [1.0] and view.reads == 1
    theirs = other.ask()  # another process creates a trial
    assert [t.number for t in view.trials()] == [0, 1] and view.reads == 2
    other.tell(theirs, 2.0)  # and ends it
    assert view.trials()[1].values == [2.0] and view.reads == 3
    assert view.trials()[1].values == [2.0] and view.reads == 3
    mine = study.ask()
    view.created([storage.get_trial(mine._trial_id)])
    assert view.trials()[2].state.name == "RUNNING" and view.reads == 3
    other._storage.set_trial_state_values(mine._trial_id, optuna.trial.TrialState.FAIL)  # failed as stale
    assert view.trials()[2].state.name == "FAIL" and view.reads == 4
