"""A trial left RUNNING with no heartbeat (its worker died, or lost the storage, between ``study.ask()``
writing it and its first heartbeat) is failed after a grace period, so the exact budget does not
wait for it for ever (the hang of ``test_packed_workers_postgres_restart_mid_pack`` in CI)."""

from __future__ import annotations

import optuna
import pytest
from optuna.trial import TrialState

from hpsearch.execution.requeue import HEARTBEAT_LOST, Orphans
from hpsearch.storage import open_storage
from hpsearch.study.run import run_study
from hpsearch.study.validate import parse_study_config


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_trial_without_heartbeat_is_due_after_a_whole_grace_period_of_this_process(sqlite_url):
    st = open_storage(sqlite_url, heartbeat=True, heartbeat_interval=1, grace_period=3)
    study = optuna.create_study(study_name="o", storage=st)
    sid = st.get_study_id_from_name("o")
    orphan, beating, late = study.ask(), study.ask(), study.ask()
    ids = {t.number: st.get_trial_id_from_study_id_trial_number(sid, t.number) for t in (orphan, beating, late)}
    st.record_heartbeat(ids[beating.number])
    clock = Clock()
    watch = Orphans(grace=3, clock=clock)
    assert watch.due(st, sid) == []  # first seen now
    clock.now = 2.9
    st.record_heartbeat(ids[late.number])  # its first heartbeat came: never an orphan
    assert watch.due(st, sid) == []
    clock.now = 3.0
    assert watch.due(st, sid) == [ids[orphan.number]]
    study.tell(orphan, 1.0)  # finished meanwhile: not listed any more
    assert watch.due(st, sid) == [] and watch.first_seen == {}


@pytest.mark.timeout(180)  # without the orphan check the second run waits for ever
@pytest.mark.parametrize("pack", [1, 4])
def test_a_study_with_an_orphaned_trial_reaches_its_budget(sqlite_url, tmp_path, monkeypatch, pack):
    monkeypatch.setenv("HPSEARCH_HEARTBEAT_INTERVAL", "1")  # grace 3 s
    cfg = parse_study_config({
        "name": "orph", "data": {"source": "sklearn:iris"},
        "model": {"builder": "mlp", "fixed": {"n_hidden": 1}}, "space": {"n_neurons": {"int": [4, 16]}},
        "train": {"epochs": 1, "pack": pack},
        "search": {"engine": "optuna", "seed": 0, "sampler": "random", "pruner": "none", "n_trials": 2},
    })
    run_study(cfg, storage=sqlite_url, artifacts=str(tmp_path / "a"))
    study = optuna.load_study(study_name="orph", storage=open_storage(sqlite_url))
    orphan = study.ask()  # a worker killed inside ask: RUNNING, no heartbeat, nobody's
    run_study(cfg, storage=sqlite_url, artifacts=str(tmp_path / "a"), n_trials=5)
    trials = study.get_trials(deepcopy=False)
    by_state = {s: [t for t in trials if t.state == s] for s in TrialState}
    assert len(by_state[TrialState.COMPLETE]) == 5 and not by_state[TrialState.RUNNING]
    failed = by_state[TrialState.FAIL]
    assert [t.number for t in failed] == [orphan.number]
    assert failed[0].user_attrs["failure_reason"] == HEARTBEAT_LOST
