"""``tracking: {mlflow: URI}``: one MLflow run per trial nested under one parent run per study,
against a SQLite tracking URI and a real ``mlflow server`` on 127.0.0.1; a second run of the study
(another process, or a worker) nests under the same parent; a tracker that is down fails nothing and
``hpsearch export-tracking`` fills in what it lost."""

from __future__ import annotations

import json

import pytest
from mlflow import MlflowClient
from trk_user_callbacks import Messages, free_port

from hpsearch.cli import main
from hpsearch.errors import ConfigError
from hpsearch.records import STUDY
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


def check_trial_runs(uri: str, name: str, n: int) -> None:
    parent, kids = runs_of(uri, name)
    c = MlflowClient(uri)
    assert [int(k.data.tags["hpsearch.trial_number"]) for k in kids] == list(range(n))
    for k in kids:
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
    check_trial_runs(other, "mlf", 4)


def test_a_study_finishes_while_the_server_is_down_and_export_fills_it_in(iris_study, tmp_path, mlflow_server,
                                                                          capsys, monkeypatch):
    import optuna

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
