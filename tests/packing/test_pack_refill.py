"""Refill batches (issue 26, :data:`hpsearch.packing.pack.REFILL_SHARE`): a freed slot of a pack of K
waits until K // 8 slots are free before a refill reserves trials, so reservations (and the tells of
the trials they start, which end together) are shared by several trials; not when no member is live
or at the budget's end. The rule is said in one line and recorded on the study."""

from __future__ import annotations

import optuna
import pytest
from optuna.trial import TrialState

from hpsearch.execution import packed_loop
from hpsearch.packing.pack import refill_batch
from hpsearch.records import STUDY, TRIAL
from hpsearch.study.run import run_study
from hpsearch.study.validate import parse_study_config
from tests.observers import Lines


def _study(name: str, n_trials: int = 48) -> object:
    return parse_study_config({
        "name": name,
        "data": {"source": "sklearn:iris", "split": {"valid": 0.25, "test": 0.2, "seed": 0}},
        "model": {"builder": "mlp", "fixed": {"optimizer": "adam", "n_hidden": 1, "n_neurons": 8}},
        "space": {"learning_rate": {"float": [1e-3, 0.3], "log": True}},  # every new trial fits every slot
        # early stopping (patience 1) ends members at different epochs: without the rule, single slots refill
        "train": {"epochs": 8, "batch_size": 16, "pack": 16, "early_stopping": {"patience": 1}},
        "search": {"engine": "optuna", "n_trials": n_trials, "seed": 3, "sampler": "tpe", "pruner": "none",
                   "keep_models": 1},
    })


def test_refills_reserve_at_least_k_over_8_trials_while_members_train(sqlite_url, tmp_path, monkeypatch):
    asked: list[tuple[int, int, int]] = []  # (slots asked for, trials live or waiting, budget left)
    real = packed_loop._PackLoop._more

    def more(self, n):
        stored = self.ctx.study.get_trials(deepcopy=False)
        left = self.ctx.cfg.search.n_trials - sum(t.state != TrialState.FAIL for t in stored)
        asked.append((n, len(self.live), left))
        return real(self, n)

    monkeypatch.setattr(packed_loop._PackLoop, "_more", more)
    res = run_study(_study("refill-batch"), storage=sqlite_url, artifacts=str(tmp_path / "art"))
    assert res.n_complete == 48
    k = refill_batch(16)
    assert k == 2
    mid_study = [(n, live, left) for n, live, left in asked if live and left > n]
    assert mid_study, "the study refilled no slot while members trained"
    assert all(n >= k for n, _, _ in mid_study), asked  # no single-slot reservation while members train
    decisions = optuna.load_study(study_name="refill-batch", storage=sqlite_url).user_attrs[STUDY.DECISIONS]
    assert decisions["pack_refill"]["value"] == 2
    assert "waits until 2 of the pack's 16 slots are free" in decisions["pack_refill"]["line"]


@pytest.mark.usefixtures("worker_process_env")
def test_two_workers_that_refill_in_batches_meet_the_exact_budget_on_postgresql(postgres_url, tmp_path):
    """The rule in two ``hpsearch worker`` processes on one PostgreSQL study (packs of 16, members
    ending at different epochs, a budget of 56 beyond both first packs' 32: refills): each says the
    rule, and every trial of the budget ends once, COMPLETE; none lost or left waiting (a worker's waiting
    slots never hold the budget's last trials: with no live member, or at the budget's end, it reserves)."""
    from hpsearch.workers.launcher import run_workers

    obs, pids = Lines(), []
    run_workers(_study("refill-workers", 56), storage=postgres_url, artifacts=str(tmp_path / "art"), n_workers=2,
                observer=obs, on_spawn=pids.extend)
    trials = optuna.load_study(study_name="refill-workers", storage=postgres_url).get_trials()
    assert sorted(t.number for t in trials) == list(range(56))
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 56
    said = [line for line in obs.lines if "pack refills: a freed slot waits until 2 of the pack's 16" in line]
    assert {line.split("]")[0] for line in said} == {"[worker 0", "[worker 1"}, obs.lines
    per_worker = [sum(t.user_attrs[TRIAL.WORKER].endswith(f":{p}") for t in trials) for p in pids]
    assert sum(per_worker) == 56 and all(per_worker), per_worker  # both trained: the rule ran in each
