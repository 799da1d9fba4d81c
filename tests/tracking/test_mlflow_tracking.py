"""``tracking: {mlflow: URI}``: one MLflow run per trial nested under one parent run per study,
against a SQLite tracking URI and a real ``mlflow server`` on 127.0.0.1; a second run of the study
(another process, or a worker) nests under the same parent; a tracker that is down fails nothing and
``hpsearch export-tracking`` fills in what it lost."""

from __future__ import annotations

import json
from pathlib import Path

import keras
import optuna
import pytest
from mlflow import MlflowClient
from trk_user_callbacks import Messages, free_port

from hpsearch.cli import main
from hpsearch.errors import ConfigError
from hpsearch.records import STUDY, TRIAL
from hpsearch.storage.artifacts import artifact_store_for
from hpsearch.study.run import run_study


def runs_of(uri: str, name: str) -> tuple[object, list[object]]:
    """(the study's parent run, its child runs by trial number)."""
    c = MlflowClient(uri)
    exp = c.get_experiment_by_name(name)
    runs = c.search_runs([exp.experiment_id], max_results=1000)
    parents = [r for r in runs if r.data.tags.get("hpsearch.kind") == "study"]
    assert len(parents) == 1
    kids = sorted((r for r in runs if r.data.tags.get("hpsearch.kind") == "trial"),
                  key=lambda r: int(r.data.tags["hpsearch.trial_number"]))
    assert all(k.data.tags["mlflow.parentRunId"] == parents[0].info.run_id for k in kids)
    return parents[0], kids


def model_paths(c: MlflowClient, run_id: str) -> list[str]:
    return sorted(a.path for a in c.list_artifacts(run_id, "model"))


def check_trial_runs(uri: str, name: str, n: int, models: bool = False) -> None:
    """``n`` whole trial runs under one finished parent; ``models``: each has its model (else none has)."""
    parent, kids = runs_of(uri, name)
    c = MlflowClient(uri)
    assert [int(k.data.tags["hpsearch.trial_number"]) for k in kids] == list(range(n))
    for k in kids:
        assert model_paths(c, k.info.run_id) == (["model/model.keras", "model/preprocess.json"] if models else [])
        assert k.data.tags.get("hpsearch.model") == ("model/model.keras" if models else None)
        assert k.info.run_name == f"trial-{k.data.tags['hpsearch.trial_number']}"
        assert set(k.data.params) == {"n_neurons", "learning_rate"}
        assert k.data.tags["hpsearch.study"] == name and k.data.tags["hpsearch.state"] == "COMPLETE"
        assert k.info.status == "FINISHED"
        for key in ("loss", "val_loss", "accuracy", "val_accuracy"):
            assert [m.step for m in c.get_metric_history(k.info.run_id, key)] == [0, 1]
        assert k.data.metrics["value"] == pytest.approx(k.data.metrics["val_accuracy"], abs=1e-6) or \
            k.data.metrics["value"] >= k.data.metrics["val_accuracy"]
    assert parent.info.status == "FINISHED" and "test_accuracy" in parent.data.metrics
    best = [k for k in kids if k.data.tags.get("hpsearch.best") == "true"]
    assert len(best) == 1 and best[0].data.metrics["test_accuracy"] == parent.data.metrics["test_accuracy"]


def test_sqlite_runs_nest_under_one_parent_across_runs_and_export(iris_study, tmp_path, capsys):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    cfg = iris_study("mlf", search={"n_trials": 2}, tracking={"mlflow": uri})
    storage = f"sqlite:///{tmp_path}/s.db"
    obs = Messages()
    run_study(cfg, storage=storage, artifacts=str(tmp_path / "art"), observer=obs)
    first = run_study(cfg, storage=storage, artifacts=str(tmp_path / "art"), n_trials=4)  # continues it
    assert first.n_complete == 4
    assert any(line.startswith(f"hpsearch: tracking: MLflow {uri}, experiment 'mlf', parent run")
               for line in obs.lines)
    check_trial_runs(uri, "mlf", 4)
    assert (tmp_path / "art").exists() and not (tmp_path / "mlruns").exists()

    other = f"sqlite:///{tmp_path}/other.db"  # after the fact, into another store: written once
    for written in (4, 0, 1):
        if written == 1:  # a run left half-written (the tracker went down while writing it) is written again
            MlflowClient(other).update_run(runs_of(other, "mlf")[1][2].info.run_id, status="RUNNING")
        capsys.readouterr()
        assert main(["export-tracking", "mlf", "--storage", storage, "--mlflow", other, "--json"]) == 0
        out = json.loads(capsys.readouterr().out)["mlflow"]
        assert (out["logged"], out["already_there"]) == (written, 4 - written)
    check_trial_runs(other, "mlf", 4)  # models are off by default

    # --log-models adds each stored model to the runs already there (not the one keep_models deleted)
    capsys.readouterr()
    study = optuna.load_study(study_name="mlf", storage=storage)
    removed = set(study.user_attrs[STUDY.REMOVED_ARTIFACTS])
    stored = {t.number for t in study.trials if t.user_attrs.get(TRIAL.MODEL_ARTIFACT) not in removed | {None}}
    assert len(stored) == 3  # search.keep_models: 3 of the 4
    assert main(["export-tracking", "mlf", "--storage", storage, "--mlflow", other, "--log-models", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)["mlflow"]
    assert (out["logged"], out["models_added_to_runs_already_there"]) == (0, 3)
    c = MlflowClient(other)
    for k in runs_of(other, "mlf")[1]:
        has = int(k.data.tags["hpsearch.trial_number"]) in stored
        assert model_paths(c, k.info.run_id) == (["model/model.keras", "model/preprocess.json"] if has else [])


def test_a_study_finishes_while_the_server_is_down_and_export_fills_it_in(iris_study, tmp_path, mlflow_server,
                                                                          capsys, monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # a refused connection at once (test time)
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    cfg = iris_study("mlf-down", tracking={"mlflow": dead})
    storage = f"sqlite:///{tmp_path}/s.db"
    obs = Messages()
    result = run_study(cfg, storage=storage, artifacts=str(tmp_path / "art"), observer=obs)
    assert result.n_complete == 3
    lost = [line for line in obs.lines if "not logged" in line]
    assert len(lost) == 1 + 3 + 1  # the parent at the start, each trial, the study's result
    assert all("not logged (MlflowException: API request to" in line for line in lost)
    assert all(line.endswith("`hpsearch export-tracking mlf-down --mlflow URI` fills it in later") for line in lost)
    assert STUDY.MLFLOW_RUN not in optuna.load_study(study_name="mlf-down", storage=storage).user_attrs

    capsys.readouterr()
    assert main(["export-tracking", "mlf-down", "--storage", storage, "--mlflow", mlflow_server]) == 0
    assert "3 trial runs written, 0" in " ".join(capsys.readouterr().out.split())
    check_trial_runs(mlflow_server, "mlf-down", 3)


def test_log_models_copies_each_kept_model_into_its_run_packed_members_too(iris_study, tmp_path):
    from optuna.artifacts import download_artifact

    from hpsearch.tracking.mlflowlog import MlflowTracker

    uri, storage = f"sqlite:///{tmp_path}/mlflow.db", f"sqlite:///{tmp_path}/s.db"
    cfg = iris_study("mlf-models", train={"pack": 2}, search={"n_trials": 4, "keep_models": 2},
                     tracking={"mlflow": uri, "log_models": True})
    obs = Messages()
    run_study(cfg, storage=storage, artifacts=str(tmp_path / "art"), observer=obs)
    assert any(line.endswith("; each kept trial model as an artifact of its run (tracking.log_models)")
               for line in obs.lines)
    study = optuna.load_study(study_name="mlf-models", storage=storage)
    store = artifact_store_for(storage, str(tmp_path / "art"))
    removed = set(study.user_attrs[STUDY.REMOVED_ARTIFACTS])
    stored = {t.number: t.user_attrs[TRIAL.MODEL_ARTIFACT] for t in study.trials
              if t.user_attrs.get(TRIAL.MODEL_ARTIFACT)}
    assert len(stored) == 3 and len(set(stored.values()) & removed) == 1  # kept when it ended, one deleted since
    c = MlflowClient(uri)
    _, kids = runs_of(uri, "mlf-models")
    for k in kids:
        n = int(k.data.tags["hpsearch.trial_number"])
        assert k.data.tags["hpsearch.pack_size"] == "2"
        assert model_paths(c, k.info.run_id) == (["model/model.keras", "model/preprocess.json"] if n in stored else [])
        if n not in stored:
            continue
        got = c.download_artifacts(k.info.run_id, "model/model.keras", str(tmp_path / f"dl{n}"))
        assert keras.models.load_model(got, compile=False).output_shape == (None, 3)
        if stored[n] not in removed:  # the same file as hpsearch's store (a deleted one stays in MLflow)
            download_artifact(artifact_store=store, file_path=str(tmp_path / f"own{n}.keras"), artifact_id=stored[n])
            assert (tmp_path / f"own{n}.keras").read_bytes() == Path(got).read_bytes()

    # the study's best model goes to the best run when that run has none (a scikit-learn engine keeps
    # no model per trial): shown by taking the best run's model away
    best = next(k for k in kids if k.data.tags.get("hpsearch.best") == "true")
    c.delete_tag(best.info.run_id, "hpsearch.model")
    for f in (tmp_path / "mlartifacts" / "mlf-models" / best.info.run_id / "artifacts" / "model").iterdir():
        f.unlink()
    assert model_paths(c, best.info.run_id) == []
    MlflowTracker(uri, study, obs.lines.append, announce=False, models=store).end_study(study)
    assert model_paths(c, best.info.run_id) == ["model/model.keras", "model/preprocess.json"]
    assert c.get_run(best.info.run_id).data.tags["hpsearch.model"] == "model/model.keras"


def test_log_models_needs_mlflow(iris_study):
    with pytest.raises(ConfigError, match=r"tracking\.log_models: the models are logged to MLflow; give "
                                          r"tracking\.mlflow: URI too"):
        iris_study("mlf-y", tracking={"log_models": True})


def test_a_study_finishes_while_the_server_is_stopped_mid_run(iris_study, tmp_path, mlflow_server_control, capsys,
                                                              monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # a refused connection at once (test time)
    start, stop = mlflow_server_control.start, mlflow_server_control.stop
    url = start()
    cfg = iris_study("mlf-stop", tracking={"mlflow": url, "log_models": True})
    storage = f"sqlite:///{tmp_path}/s.db"

    def stop_after_first(study, trial):  # after the tracker wrote trial 0's run
        if trial.number == 0:
            stop()

    obs = Messages()
    result = run_study(cfg, storage=storage, artifacts=str(tmp_path / "art"), observer=obs,
                       callbacks=[stop_after_first])
    assert result.n_complete == 3 and result.stopped_by == "budget: 3 trials done"
    lost = [line for line in obs.lines if "not logged" in line]
    assert [line.split(" not logged (")[0] for line in lost] == [
        f"hpsearch: tracking: MLflow {url}: {what}" for what in ("trial 1", "trial 2", "the study's result")]
    assert all(line.endswith("`hpsearch export-tracking mlf-stop --mlflow URI` fills it in later") for line in lost)

    assert start() == url  # the same server again: trial 0's run (and its model) is there, 1 and 2 are not
    parent, kids = runs_of(url, "mlf-stop")
    assert [k.data.tags["hpsearch.trial_number"] for k in kids] == ["0"] and parent.info.status == "RUNNING"
    assert model_paths(MlflowClient(url), kids[0].info.run_id) == ["model/model.keras", "model/preprocess.json"]
    capsys.readouterr()
    assert main(["export-tracking", "mlf-stop", "--storage", storage, "--mlflow", url, "--log-models", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)["mlflow"]
    assert (out["logged"], out["already_there"], out["models_added_to_runs_already_there"]) == (2, 1, 0)
    check_trial_runs(url, "mlf-stop", 3, models=True)


def test_a_live_server_gets_every_trial_as_it_ends(iris_study, tmp_path, mlflow_server, capfd):
    cfg = iris_study("mlf-live", tracking={"mlflow": mlflow_server})
    seen: list[int] = []

    def count(study, trial):  # after the tracker: the trial's run is there already
        seen.append(len(runs_of(mlflow_server, "mlf-live")[1]))

    run_study(cfg, storage=f"sqlite:///{tmp_path}/s.db", artifacts=str(tmp_path / "art"), callbacks=[count])
    assert seen == [1, 2, 3]
    assert "View run" not in capfd.readouterr().out  # MLflow's run URLs stay off the console's stdout
    check_trial_runs(mlflow_server, "mlf-live", 3)


def test_a_missing_extra_is_one_line(iris_study, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else real(name, *a))
    with pytest.raises(ConfigError, match=r"tracking\.mlflow: the mlflow package is not installed; "
                                          r"pip install 'hpsearch\[mlflow\]'"):
        iris_study("mlf-x", tracking={"mlflow": "sqlite:///x.db"})
