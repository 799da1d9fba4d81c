"""Trial callbacks: ``run_study(callbacks=..., keras_callbacks=...)``, ``search.callbacks``, Optuna's own
callbacks (``MaxTrialsCallback`` stops the search through ``study.stop()``), the packing fallback
for Keras callbacks, and the full per-epoch history of every trial (``TRIAL.HISTORY``,
``load_best(...).history_``, ``hpsearch status STUDY --trial N``)."""

from __future__ import annotations

import json

import keras
import optuna
import pytest
from trk_user_callbacks import Messages

from hpsearch.errors import ConfigError
from hpsearch.records import STUDY, TRIAL
from hpsearch.study.run import run_study

KERAS_KEYS = {"loss", "val_loss", "accuracy", "val_accuracy"}


class EpochCounter(keras.callbacks.Callback):
    epochs = 0

    def on_epoch_end(self, epoch, logs=None) -> None:
        EpochCounter.epochs += 1


@pytest.fixture(scope="module")
def stopped(tmp_path_factory):
    """A study asked for 6 trials, packed by request, with a Keras callback and Optuna's
    MaxTrialsCallback(3): it trains unpacked and stops after 3 trials."""
    from hpsearch.study.validate import parse_study_config

    tmp = tmp_path_factory.mktemp("cb")
    cfg = parse_study_config({
        "name": "cb", "data": {"source": "sklearn:iris", "split": {"valid": 0.2, "test": 0.2, "seed": 0}},
        "space": {"n_neurons": {"int": [4, 16]}, "learning_rate": {"float": [1e-3, 1e-1], "log": True}},
        "train": {"epochs": 2, "batch_size": 16, "pack": 4}, "search": {"n_trials": 6, "seed": 0}})
    seen: list[optuna.trial.FrozenTrial] = []

    def boom(study, trial):
        raise RuntimeError("boom")

    obs = Messages()
    url = f"sqlite:///{tmp}/s.db"
    result = run_study(cfg, storage=url, artifacts=str(tmp / "art"), observer=obs,
                       callbacks=[lambda s, t: seen.append(t), boom,
                                  optuna.study.MaxTrialsCallback(3, states=None)],
                       keras_callbacks=[EpochCounter()])
    return result, seen, obs, url, tmp


def test_callbacks_see_each_stored_trial_and_stop_the_search(stopped):
    result, seen, obs, url, _ = stopped
    assert [t.number for t in seen] == [0, 1, 2]
    assert all(t.state.is_finished() for t in seen)
    study = optuna.load_study(study_name="cb", storage=url)
    assert len(study.trials) == 3
    assert result.stopped_by == "callback: MaxTrialsCallback called study.stop()"
    assert study.user_attrs[STUDY.STOP_REASON] == result.stopped_by
    assert any(line == f"hpsearch: stopping the search: {result.stopped_by}" for line in obs.lines)
    boom = [line for line in obs.lines if "failed on trial" in line]
    assert len(boom) == 3 and "(RuntimeError: boom); the study goes on" in boom[0]


def test_keras_callbacks_unpack_and_run_in_every_fit(stopped):
    _, seen, obs, _, _ = stopped
    assert any("train.pack 4 -> 1: keras_callbacks" in line for line in obs.lines)
    assert all(TRIAL.PACK_SIZE not in t.user_attrs for t in seen)
    assert EpochCounter.epochs == sum(t.user_attrs[TRIAL.EPOCHS] for t in seen) == 6


def test_every_keras_metric_of_every_epoch_is_kept(stopped, capsys):
    from hpsearch.cli import main
    from hpsearch.results.best import load_best

    result, seen, _, url, tmp = stopped
    for t in seen:
        history = t.user_attrs[TRIAL.HISTORY]
        assert set(history) >= KERAS_KEYS and all(len(history[k]) == 2 for k in KERAS_KEYS)
    best = load_best("cb", storage=url, artifacts=str(tmp / "art"))
    assert best.history_ == seen[result.best_trial].user_attrs[TRIAL.HISTORY]
    capsys.readouterr()
    assert main(["status", "cb", "--storage", url, "--trial", "1", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["number"] == 1 and shown["history"] == seen[1].user_attrs[TRIAL.HISTORY]
    assert main(["status", "cb", "--storage", url, "--trial", "9"]) == 2
    assert "--trial 9: study 'cb' has no trial 9" in capsys.readouterr().err


def test_search_callbacks_run_under_a_scikit_learn_engine(iris_study, tmp_path):
    import trk_user_callbacks

    trk_user_callbacks.SEEN.clear()
    cfg = iris_study("cb-sk", search={"engine": "random", "n_trials": 2, "cv": 2,
                                      "callbacks": ["trk_user_callbacks:record"]})
    run_study(cfg, storage=f"sqlite:///{tmp_path}/s.db", artifacts=str(tmp_path / "art"))
    assert [(n, s) for n, s, _ in trk_user_callbacks.SEEN] == [(0, "COMPLETE"), (1, "COMPLETE")]
    history = trk_user_callbacks.SEEN[0][2]  # each metric's fold mean per epoch
    assert set(history) >= KERAS_KEYS and all(len(history[k]) == 2 for k in KERAS_KEYS)


@pytest.mark.parametrize(("ref", "says"), [
    ("no_such_module_xyz:f", "search.callbacks: cannot import 'no_such_module_xyz'"),
    ("trk_user_callbacks:nothing", "search.callbacks: 'trk_user_callbacks:nothing' is not a function"),
    ("just-a-name", "search.callbacks: 'just-a-name' is not of the form 'package.module:function'"),
])
def test_a_bad_callback_reference_is_one_line(iris_study, ref, says):
    with pytest.raises(ConfigError) as e:
        iris_study("cb-bad", search={"callbacks": [ref]})
    assert says in str(e.value) and "\n" not in str(e.value)
