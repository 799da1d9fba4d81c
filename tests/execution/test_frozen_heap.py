"""Trials run with the objects alive at their start left out of Python's full garbage collections
(``gc.freeze``, issue 26: each full collection scanned TensorFlow's and Keras' ~600,000 module
objects), packed and unpacked, and the process is as before once the loop ends, also after an
error."""

from __future__ import annotations

import gc

import pytest

from hpsearch.study.run import run_study
from hpsearch.study.validate import parse_study_config


def _cfg(pack: int, name: str):
    return parse_study_config({
        "name": name, "data": {"source": "sklearn:iris", "split": {"valid": 0.2, "test": 0.2, "seed": 0}},
        "space": {"n_neurons": {"int": [4, 16]}, "learning_rate": {"float": [1e-3, 1e-1], "log": True}},
        "train": {"epochs": 2, "batch_size": 16, "pack": pack}, "search": {"n_trials": 4, "seed": 0}})


@pytest.mark.parametrize("pack", [4, 1])
def test_trials_run_on_a_frozen_heap_and_the_process_is_unfrozen_after(tmp_path, pack):
    assert gc.get_freeze_count() == 0
    during: list[int] = []
    run_study(_cfg(pack, f"frz{pack}"), storage=f"sqlite:///{tmp_path}/s.db", artifacts=str(tmp_path / "art"),
              callbacks=[lambda study, trial: during.append(gc.get_freeze_count())])
    assert len(during) == 4 and min(during) > 100_000  # the modules, at least
    assert gc.get_freeze_count() == 0

    def boom(study, trial):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_study(_cfg(pack, f"frz{pack}b"), storage=f"sqlite:///{tmp_path}/s.db", artifacts=str(tmp_path / "art"),
                  callbacks=[boom])
    assert gc.get_freeze_count() == 0


@pytest.mark.parametrize("pack", [4, 1])
def test_the_loop_ends_with_one_read_of_the_study_with_the_collector_paused(tmp_path, monkeypatch, pack):
    """After its last trial the loop reads the study once through Optuna with automatic collection
    off (Optuna's cache, behind after a packed loop, loads every trial told since without full
    collections), and collection is on again after, as it was before."""
    import optuna

    from hpsearch.execution import loop

    reads: list[bool] = []
    real = optuna.Study.get_trials
    monkeypatch.setattr(optuna.Study, "get_trials", lambda self, *a, **k: (reads.append(gc.isenabled()),
                                                                              real(self, *a, **k))[1])
    ended: list[int] = []
    real_catch_up = loop._catch_up
    monkeypatch.setattr(loop, "_catch_up", lambda study: (ended.append(len(reads)), real_catch_up(study)))
    run_study(_cfg(pack, f"cu{pack}"), storage=f"sqlite:///{tmp_path}/s.db", artifacts=str(tmp_path / "art"))
    assert ended and reads[ended[0]] is False and reads.count(False) == 1  # that read, and only it
    assert gc.isenabled()
    gc.disable()  # a process that runs with collection off keeps it off
    try:
        loop._catch_up(optuna.load_study(study_name=f"cu{pack}", storage=f"sqlite:///{tmp_path}/s.db"))
        assert not gc.isenabled()
    finally:
        gc.enable()
