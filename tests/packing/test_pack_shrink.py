"""Pack shrink (issue 25 item 2, :mod:`hpsearch.packing.shrink`): once no refill can come and few
members still train, they move at an epoch boundary to a smaller compiled model and train on exactly
as they would have in the big one (weights, optimizer moments and step count, batch order); the
Pack's slot-keyed records follow them, the move is one line and a study attribute. Builds and
traces are counted, never timed."""

from __future__ import annotations

import numpy as np
import optuna
import pytest

from hpsearch.models.mlp import build_mlp
from hpsearch.packing import shrink as shrinking
from hpsearch.packing.model import PackedModel, member_spec
from hpsearch.packing.shrink import load_states, member_states, shrink_due
from hpsearch.packing.train import MemberResult, PackSettings, train_pack
from hpsearch.records import STUDY, TRIAL
from hpsearch.study.run import run_study
from hpsearch.study.validate import parse_study_config
from tests.data_fixtures import toy_classes
from tests.observers import Lines

META = {"n_features_in_": 8, "target_type_": "multiclass", "n_classes_": 3, "n_outputs_": 1}
EPOCHS = 6
LIVE = [  # the members still training when the others are pruned: Adam, momentum, Nesterov, SGD + l2
    {"n_hidden": 1, "n_neurons": 5, "optimizer": "adam", "learning_rate": 0.01, "batch_norm": True},
    {"n_hidden": 1, "n_neurons": 3, "optimizer": "momentum", "learning_rate": 0.05, "batch_norm": True},
    {"n_hidden": 2, "n_neurons": 4, "optimizer": "nesterov", "learning_rate": 0.03},
]
PRUNED = [  # wider members (the small model is narrower), dropout, more groups: pruned at epoch 2
    {"n_hidden": 1, "n_neurons": 10, "optimizer": "adam", "learning_rate": 0.02, "dropout": 0.2, "batch_norm": True},
    {"n_hidden": 2, "n_neurons": 9, "optimizer": "sgd", "learning_rate": 0.1},
    {"n_hidden": 2, "n_neurons": 6, "optimizer": "adam", "learning_rate": 0.003},
    {"n_hidden": 3, "n_neurons": 5, "optimizer": "momentum", "learning_rate": 0.02},
    {"n_hidden": 1, "n_neurons": 8, "optimizer": "sgd", "learning_rate": 0.05},
    {"n_hidden": 2, "n_neurons": 7, "optimizer": "nesterov", "learning_rate": 0.01},
    {"n_hidden": 1, "n_neurons": 7, "optimizer": "adam", "learning_rate": 0.001, "batch_norm": True},
    {"n_hidden": 3, "n_neurons": 3, "optimizer": "sgd", "learning_rate": 0.2},
]
SLOTS = [PRUNED[0], LIVE[0], PRUNED[1], PRUNED[2], LIVE[1], PRUNED[3], PRUNED[4], {**LIVE[2], "l2": 1e-3},
         PRUNED[5], PRUNED[6], PRUNED[7], {"n_hidden": 2, "n_neurons": 2, "optimizer": "sgd", "learning_rate": 0.1,
                                            "l2": 1e-3}]
KEEP = {1, 4, 7, 11}  # 4 of 12 slots live after epoch 2 (the rule is made to fire: one live in three)


def _data() -> tuple[np.ndarray, ...]:
    return toy_classes(120, 88)


def _settings() -> PackSettings:
    return PackSettings(epochs=EPOCHS, batch_size=16, valid_batch=32, metric="accuracy", direction="maximize",
                        patience=EPOCHS, restore_best=False)


def _prune(live: dict[int, tuple[int, float]]) -> set[int]:
    return {i for i, (epoch, _) in live.items() if epoch == 1 and i not in KEEP}


class _Mover:
    """The Pack's shrinker reduced to the move itself: a new build of the running members."""

    def __init__(self) -> None:
        self.moves: list[dict[int, int]] = []

    def due(self, pm: PackedModel, res: list[MemberResult]) -> bool:
        return shrink_due(pm, res, EPOCHS)

    def move(self, pm: PackedModel, res: list[MemberResult]) -> tuple[PackedModel, dict[int, int], PackSettings]:
        live = [i for i, r in enumerate(res) if r.state == "RUNNING"]
        states = member_states(pm, live)
        new = PackedModel([pm.specs[i] for i in live], META, seed=pm.seed)
        new.init_weights(list(range(len(live))))  # overwritten by the moved state
        load_states(new, list(range(len(live))), states)
        self.moves.append(dict(enumerate(live)))
        return new, dict(enumerate(live)), _settings()


def _pack() -> PackedModel:
    pm = PackedModel([member_spec(build_mlp, p) for p in SLOTS], META, seed=3)
    pm.init_weights(list(range(len(SLOTS))))
    return pm


@pytest.fixture
def shrink_on(monkeypatch) -> None:
    monkeypatch.setattr(shrinking, "SHRINK_SHARE", 3)
    monkeypatch.setattr(shrinking, "SHRINK_MIN_SLOT_EPOCHS", 1)


def test_moved_members_train_on_exactly_as_in_the_big_pack(shrink_on, monkeypatch):
    Xt, yt, Xv, yv = _data()
    mover = _Mover()
    moved = train_pack(_pack(), Xt, yt, Xv, yv, _settings(), hook=_prune, shrink=mover)
    assert mover.moves == [{0: 1, 1: 4, 2: 7, 3: 11}]  # after epoch 2, mid-chunk (all 6 epochs are one chunk)
    monkeypatch.setattr(shrinking, "SHRINK", False)
    stayed = train_pack(_pack(), Xt, yt, Xv, yv, _settings(), hook=_prune, shrink=_Mover())
    assert len(moved) == 4 and all(stayed[i].state == "PRUNED" for i in range(12) if i not in KEEP)
    for new, old in mover.moves[0].items():
        a, b = moved[new], stayed[old]
        assert a.state == b.state == "COMPLETE" and a.epochs == b.epochs == EPOCHS
        np.testing.assert_allclose(a.values, b.values, atol=1e-5)
        for got, want in zip(a.weights, b.weights, strict=True):  # batch norm's moving statistics too
            np.testing.assert_allclose(got, want, atol=1e-5)


def test_the_rule_counts_slots_and_epochs_and_never_moves_dropout(monkeypatch):
    pm = _pack()
    res = [MemberResult(state="RUNNING" if i in KEEP else "COMPLETE", values=[0.5] * 2) for i in range(12)]
    monkeypatch.setattr(shrinking, "SHRINK_MIN_SLOT_EPOCHS", 8 * 4)
    assert not shrink_due(pm, res, EPOCHS)  # 4 live in 12 slots: more than one in four
    monkeypatch.setattr(shrinking, "SHRINK_SHARE", 3)
    assert shrink_due(pm, res, EPOCHS)  # 8 slots saved x 4 epochs left = 32
    assert not shrink_due(pm, res, EPOCHS - 1)  # 8 x 3 = 24: does not pay
    res[0].state = "RUNNING"
    res[1].state = "COMPLETE"
    assert not shrink_due(pm, res, EPOCHS)  # slot 0 has dropout: its masks follow the pack's shape
    monkeypatch.setattr(shrinking, "SHRINK", False)
    res[0].state, res[1].state = "COMPLETE", "RUNNING"
    assert not shrink_due(pm, res, EPOCHS)


def _study(name: str) -> object:
    return parse_study_config({
        "name": name,
        "data": {"source": "sklearn:iris", "split": {"valid": 0.25, "test": 0.2, "seed": 0}},
        "model": {"builder": "mlp", "fixed": {"n_hidden": 1}},
        "space": {"n_neurons": {"int": [2, 12]}, "learning_rate": {"float": [1e-3, 0.3], "log": True},
                  "optimizer": {"choice": ["adam", "momentum"]}},
        "train": {"epochs": 8, "batch_size": 16, "pack": 8, "early_stopping": {"patience": 1}},
        "search": {"engine": "optuna", "n_trials": 8, "seed": 3, "sampler": "random", "pruner": "none",
                   "keep_models": 2},
    })


def _trials(sqlite_url: str, tmp_path, name: str) -> tuple[optuna.Study, list[str]]:
    obs = Lines()
    run_study(_study(name), storage=sqlite_url, artifacts=str(tmp_path / name), observer=obs)
    return optuna.load_study(study_name=name, storage=sqlite_url), obs.lines


def test_a_study_that_shrinks_records_it_and_its_trials_are_as_without(sqlite_url, tmp_path, monkeypatch):
    from hpsearch.packing import runner as packed

    builds: list[int] = []
    real = packed.PackedModel
    monkeypatch.setattr(packed, "PackedModel", lambda specs, *a, **k: builds.append(len(specs)) or real(specs, *a, **k))
    monkeypatch.setattr(shrinking, "SHRINK_SHARE", 2)
    monkeypatch.setattr(shrinking, "SHRINK_MIN_SLOT_EPOCHS", 1)
    study, lines = _trials(sqlite_url, tmp_path, "shrunk")
    said = [line for line in lines if "pack shrink:" in line]
    # counted, not timed: the pack's build, then one smaller build per shrink (8 -> 4 -> 2: one live in two)
    assert said and builds == [8, *(int(line.split(" moved to a pack of ")[1].split()[0]) for line in said)]
    assert builds == sorted(builds, reverse=True) and builds[-1] <= 4
    record = study.user_attrs[STUDY.PACK_SHRINK]
    assert record == {"shrunk": len(said), "built": len(said), "reused": 0, "last": said[-1].removeprefix("hpsearch: ")}

    monkeypatch.setattr(shrinking, "SHRINK", False)
    plain, plain_lines = _trials(sqlite_url, tmp_path, "plain")
    assert not any("pack shrink:" in line for line in plain_lines) and len(builds) == len(said) + 2
    trials, others = study.get_trials(), plain.get_trials()
    assert [t.state.name for t in trials] == [t.state.name for t in others] == ["COMPLETE"] * 8
    for t, o in zip(trials, others, strict=True):
        assert t.params == o.params and (t.user_attrs[TRIAL.PACK_SIZE], t.user_attrs[TRIAL.PACK_SLOT]) == (8, t.number)
        assert sorted(t.intermediate_values) == sorted(o.intermediate_values) == list(range(t.user_attrs[TRIAL.EPOCHS]))
        np.testing.assert_allclose([t.intermediate_values[e] for e in sorted(t.intermediate_values)],
                                   [o.intermediate_values[e] for e in sorted(o.intermediate_values)], atol=1e-5)
        assert t.value == pytest.approx(o.value, abs=1e-5)
        assert (TRIAL.MODEL_ARTIFACT in t.user_attrs) == (TRIAL.MODEL_ARTIFACT in o.user_attrs)
    assert sum(TRIAL.MODEL_ARTIFACT in t.user_attrs for t in trials) >= 2  # the best ones' models kept


def test_a_pruned_study_on_postgresql_shrinks_and_meets_its_exact_budget(postgres_url, tmp_path, monkeypatch):
    """Beside the defaults it meets: Hyperband prunes members at its rungs, the storage is
    PostgreSQL, and the pack still shrinks; every trial ends once (the exact budget, none RUNNING)."""
    monkeypatch.setattr(shrinking, "SHRINK_SHARE", 2)
    monkeypatch.setattr(shrinking, "SHRINK_MIN_SLOT_EPOCHS", 1)
    cfg = _study("p8").model_dump()  # Hyperband's brackets follow the study name: this one prunes
    cfg["search"]["pruner"] = "hyperband"
    cfg["train"]["early_stopping"] = {"patience": 8}  # the pruner, not early stopping, ends the members
    obs = Lines()
    run_study(parse_study_config(cfg), storage=postgres_url, artifacts=str(tmp_path / "a"), observer=obs)
    study = optuna.load_study(study_name="p8", storage=postgres_url)
    trials = study.get_trials()
    said = [line for line in obs.lines if "pack shrink:" in line]
    assert said and study.user_attrs[STUDY.PACK_SHRINK]["shrunk"] == len(said)
    assert len(trials) == 8 and all(t.state.is_finished() for t in trials)
    assert any(t.state.name == "PRUNED" for t in trials) and study.best_trial.state.name == "COMPLETE"


def test_the_shrink_record_adds_up_what_processes_add_at_once(postgres_url):
    """``STUDY.PACK_SHRINK`` is the study's count: each worker adds its new shrinks to the stored ones
    under the study lock (:func:`add_study_counts`). Two storages (as two workers) adding at once
    lose none of each other's; without the lock a read-modify-write loses some, and before it the
    last worker's own count overwrote the others' (two shrinks recorded as one)."""
    import threading

    from hpsearch.execution.packed_loop import add_study_counts
    from hpsearch.storage import open_storage

    optuna.create_study(study_name="counts", storage=open_storage(postgres_url))
    storages = [open_storage(postgres_url) for _ in range(2)]
    study_id = storages[0].get_study_id_from_name("counts")
    start = threading.Barrier(2)

    def add(k: int) -> None:
        study = optuna.load_study(study_name="counts", storage=storages[k])
        start.wait()
        for i in range(15):
            add_study_counts(study, storages[k], postgres_url, study_id, STUDY.PACK_SHRINK,
                             {"shrunk": 1, "built": k, "reused": 1 - k}, last=f"{k}:{i}")

    threads = [threading.Thread(target=add, args=(k,)) for k in range(2)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    record = storages[0].get_study_user_attrs(study_id)[STUDY.PACK_SHRINK]
    assert {k: record[k] for k in ("shrunk", "built", "reused")} == {"shrunk": 30, "built": 15, "reused": 15}
    assert record["last"] in {"0:14", "1:14"}


def _worker_study() -> dict:
    """A study whose packs of 64 shrink under the real rule (no monkeypatching reaches a worker):
    early stopping on val_loss with min_delta 0.05 and patience 1 ends the members whose learning rate
    is too small at epoch 2 and most others by epoch 8, so 16 or fewer of 64 still train with 90-odd of
    100 epochs left: 48 x 90 >= 3200 slot-epochs (one-process runs of seeds 1-3 shrank at epochs 4-6
    with 12-14 live, the last member stopped by epoch 18; the rule would hold until epoch 33)."""
    return {
        "name": "wshrink",
        "data": {"source": "sklearn:iris", "split": {"valid": 0.25, "test": 0.2, "seed": 0}},
        "model": {"builder": "mlp", "fixed": {"n_hidden": 1, "optimizer": "adam"}},
        "space": {"n_neurons": {"int": [2, 12]}, "learning_rate": {"float": [1e-4, 0.3], "log": True}},
        "train": {"epochs": 100, "batch_size": 16, "pack": 64,
                  "early_stopping": {"patience": 1, "monitor": "val_loss", "min_delta": 0.05}},
        "search": {"engine": "optuna", "n_trials": 128, "seed": 3, "sampler": "random", "pruner": "none",
                   "keep_models": 1},
    }


@pytest.mark.usefixtures("worker_process_env")
def test_packs_shrink_in_two_workers_on_postgresql_and_meet_the_exact_budget(postgres_url, tmp_path):
    """Two ``hpsearch worker`` processes on one PostgreSQL study, a pack of 64 each: their packs shrink
    by the real rule, every trial ends once, COMPLETE, and a moved member's record is as trained."""
    from hpsearch.workers.launcher import run_workers

    obs, pids = Lines(), []
    run_workers(parse_study_config(_worker_study()), storage=postgres_url, artifacts=str(tmp_path / "art"),
                n_workers=2, observer=obs, on_spawn=pids.extend)
    study = optuna.load_study(study_name="wshrink", storage=postgres_url)
    trials = study.get_trials()
    # the exact budget: 128 trials, each recorded once, none lost, failed or left RUNNING
    assert sorted(t.number for t in trials) == list(range(128))
    assert [t.state.name for t in trials] == ["COMPLETE"] * 128
    said = [line for line in obs.lines if "hpsearch: pack shrink:" in line]
    record = study.user_attrs[STUDY.PACK_SHRINK]
    # the study's record adds up every worker's shrinks (not the last writer's own count)
    assert said and record["shrunk"] == record["built"] + record["reused"] == len(said)
    assert record["last"] in {line.split("hpsearch: ", 1)[1] for line in said}
    moved = []
    for line in said:  # "[worker I] hpsearch: pack shrink: N of 64 members still training ...": after the move
        # no refill comes and every member that ended before it was told first: worker I's last N told
        index, live = int(line.split("[worker ")[1].split("]")[0]), int(line.split("pack shrink: ")[1].split()[0])
        mine = sorted((t for t in trials if t.user_attrs[TRIAL.WORKER].endswith(f":{pids[index]}")),
                      key=lambda t: t.datetime_complete)
        assert 1 <= live <= len(mine) // 4, line  # at most one live member in four slots
        moved += mine[-live:]
    per_worker = [sum(t.user_attrs[TRIAL.WORKER].endswith(f":{p}") for t in trials) for p in pids]
    print(f"\nworkers: 2, trials per worker: {per_worker}, shrinks said: {len(said)}, recorded: {record['shrunk']},"
          f" moved trials: {len(moved)}")
    for t in trials:  # every trial, the moved ones too: its epochs as trained, its value one of theirs
        epochs, history = t.user_attrs[TRIAL.EPOCHS], t.user_attrs[TRIAL.HISTORY]["val_accuracy"]
        assert 2 <= epochs <= 100 and len(history) == epochs and sorted(t.intermediate_values) == list(range(epochs))
        np.testing.assert_allclose([t.intermediate_values[e] for e in range(epochs)], history, atol=1e-6)
        assert t.value is not None and 0.0 <= t.value <= 1.0 and any(abs(t.value - v) < 1e-6 for v in history)
    # a moved member trained past the shrink, which the rule allows only with 67+ of 100 epochs left
    assert all(t.user_attrs[TRIAL.EPOCHS] > 2 for t in moved) and len({t.number for t in moved}) == len(moved)
