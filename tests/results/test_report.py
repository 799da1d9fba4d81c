"""hpsearch status / best / report, the per-trial curve PNG and the console's progress display, on
realistic stored studies."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

try:
    from tests.study_factory import make_study
except ImportError:  # pragma: no cover - tests/ is not a package
    from study_factory import make_study  # type: ignore[no-redef]

from hpsearch.cli import main
from hpsearch.console import ConsoleProgress
from hpsearch.errors import UserError
from hpsearch.plots import save_curve_png
from hpsearch.results.report import write_report
from hpsearch.storage.queries import list_studies, study_status


def assert_png(path: Path) -> tuple[int, int]:
    from PIL import Image  # a matplotlib dependency

    assert path.exists() and path.stat().st_size > 1000, path
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", path
    with Image.open(path) as im:
        im.verify()
    with Image.open(path) as im:
        im.load()
        assert im.format == "PNG"
        w, h = im.size
    assert w >= 100 and h >= 100, (path, w, h)
    return w, h


@pytest.fixture(scope="module")
def studies(tmp_path_factory):
    """Three studies in one database: multiclass, binary and regression."""
    tmp = tmp_path_factory.mktemp("report")
    made = {ds: make_study(tmp, ds) for ds in ("iris", "breast_cancer", "diabetes")}
    return tmp, made


# -------------------------------------------------------------------------------------------- status


def test_status_table_lists_every_study(studies, capsys):
    _, made = studies
    url = made["iris"].url
    assert main(["status", "--storage", url]) == 0
    out = capsys.readouterr().out
    for s in made.values():
        assert s.name in out
    for col in ("complete", "pruned", "failed", "running", "best", "elapsed"):
        assert col in out
    assert "accuracy (max)" in out and "mse (min)" in out


def test_status_json(studies, capsys):
    _, made = studies
    assert main(["status", "--storage", made["iris"].url, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data == json.loads(json.dumps(list_studies(made["iris"].url)))  # the CLI prints the query's data
    rows = {r["study"]: r for r in data["studies"]}
    assert set(rows) == {s.name for s in made.values()}
    r = rows["iris-test"]
    assert (r["complete"], r["pruned"], r["failed"], r["running"]) == (3, 1, 1, 0)
    assert r["best_trial"] == 1 and r["engine"] == "optuna" and r["metric"] == "accuracy"
    assert r["elapsed_s"] is not None and r["elapsed_s"] >= 0
    assert rows["diabetes-test"]["direction"] == "minimize"


def test_status_one_study_top_trials(studies, capsys):
    _, made = studies
    s = made["iris"]
    assert main(["status", s.name, "--storage", s.url, "--top", "3"]) == 0
    out = capsys.readouterr().out
    assert "top 3 trials" in out and "n_neurons=8" in out and "3 complete, 1 pruned, 1 failed" in out
    assert "best trial 1: accuracy" in out and "test accuracy" in out
    assert main(["status", s.name, "--storage", s.url, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [t["number"] for t in data["trials"][:3]] == [1, 4, 0]  # ranked best first
    assert data["trials"][0]["rank"] == 1
    failed = [t for t in data["trials"] if t["state"] == "FAIL"]
    assert failed and "NaN loss" in failed[0]["reason"]
    assert data["data_summary"]["features"] == 4 and data["data_summary"]["classes"] == 3


def test_status_unknown_study_lists_known(studies, capsys):
    _, made = studies
    with pytest.raises(UserError) as e:
        study_status("nope", made["iris"].url)
    msg = str(e.value)
    assert "\n" not in msg and "nope" in msg and "iris-test" in msg and "diabetes-test" in msg
    assert main(["status", "nope", "--storage", made["iris"].url]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "iris-test" in err


def test_status_missing_database_is_one_line_error(tmp_path, capsys):
    missing = tmp_path / "none.db"
    assert main(["status", "--storage", f"sqlite:///{missing}"]) == 2
    err = capsys.readouterr().err
    assert "does not exist" in err and err.count("\n") == 1
    assert not missing.exists()  # a read command creates nothing


@pytest.mark.parametrize("command", [["status"], ["best", "x"], ["report", "x"]])
def test_read_commands_create_no_tables_in_empty_postgres(command, postgres_server, tmp_path, capsys):
    """An empty PostgreSQL database is refused in one line and left empty (no Optuna tables)."""
    db = postgres_server.create_database()
    url = postgres_server.url(db)
    argv = command + (["-o", str(tmp_path / "rep")] if command[0] == "report" else []) + ["--storage", url]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no studies yet" in err, err
    assert "s3cr" not in err
    assert postgres_server.tables(db) == []


def test_status_on_non_optuna_sqlite_file_adds_no_tables(tmp_path, capsys):
    import sqlite3

    path = tmp_path / "other.db"
    with sqlite3.connect(path) as con:
        con.execute("CREATE TABLE notes (x TEXT)")
    assert main(["status", "--storage", f"sqlite:///{path}"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no studies yet" in err, err
    with sqlite3.connect(path) as con:
        names = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    assert names == ["notes"]


# ---------------------------------------------------------------------------------------------- best


def test_best_json_and_export(studies, tmp_path, capsys):
    import keras
    import numpy as np

    _, made = studies
    s = made["iris"]
    out_file = tmp_path / "best.keras"
    assert main(["best", s.name, "--storage", s.url, "--export", str(out_file), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["best_trial"] == 1 and data["model_artifact"] == s.model_artifact_id
    assert data["artifacts"] == str(s.artifacts)
    assert data["test_score"] == pytest.approx(s.extra["test"]["accuracy"])
    assert data["params"]["n_neurons"] == 8
    model = keras.models.load_model(out_file, compile=False, safe_mode=True)
    assert model.predict(np.zeros((2, 4), dtype="float32"), verbose=0).shape == (2, 3)
    assert (tmp_path / "best.preprocess.json").exists()
    assert data["exported"] == str(out_file)
    assert main(["best", s.name, "--storage", s.url]) == 0
    text = capsys.readouterr().out
    assert s.model_artifact_id in text and str(s.artifacts) in text and "test accuracy" in text


# -------------------------------------------------------------------------------------------- report


def _check_report(files: list[Path], out: Path, expected_png: set[str]) -> str:
    names = {f.name for f in files}
    assert files[-1].name == "index.html"
    assert expected_png <= names, expected_png - names
    for f in files:
        assert f.exists() and f.stat().st_size > 0, f
        assert f.parent == out
        if f.suffix == ".png":
            assert_png(f)
    html = (out / "index.html").read_text()
    for png in (f.name for f in files if f.suffix == ".png"):
        assert f"src='{png}'" in html  # relative paths: the folder can be moved / opened offline
    low = html.lower()
    assert "<script" not in low and "http://" not in low and "https://" not in low
    assert "<link" not in low
    return html


COMMON = {"optimization_history.png", "param_importances.png", "parallel_coordinates.png", "slice.png",
          "learning_curves.png"}


def test_report_multiclass(studies, tmp_path):
    _, made = studies
    s = made["iris"]
    out = tmp_path / "rep"
    files = write_report(s.name, str(out), storage=s.url)
    html = _check_report(files, out, COMMON | {"confusion_matrix.png", "per_class.png"})
    assert "iris-test" in html and "precision" in html and "recall" in html
    metrics = json.loads((out / "metrics.json").read_text())
    # the split is re-created from the stored study file: same test accuracy as recorded by the run
    assert metrics["test"]["accuracy"] == pytest.approx(s.extra["test"]["accuracy"])
    assert set(metrics["test"]["per_class"]) == {"0", "1", "2"}
    assert "roc_curve.png" not in {f.name for f in files}
    assert (out / "trials.csv").read_text().count("\n") >= 6


def test_report_binary_has_roc(studies, tmp_path):
    _, made = studies
    s = made["breast_cancer"]
    out = tmp_path / "rep"
    files = write_report(s.name, str(out), storage=s.url)
    html = _check_report(files, out, COMMON | {"confusion_matrix.png", "roc_curve.png"})
    assert "ROC AUC" in html
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["test"]["roc_auc"] == pytest.approx(s.extra["test"]["auc"], abs=1e-6)


def test_report_regression_cli(studies, tmp_path, capsys):
    _, made = studies
    s = made["diabetes"]
    out = tmp_path / "rep"
    assert main(["report", s.name, "--storage", s.url, "-o", str(out)]) == 0
    printed = capsys.readouterr().out.split()
    files = [Path(p) for p in printed]
    html = _check_report(files, out, COMMON | {"residuals.png"})
    assert "MAE" in html and "RMSE" in html and "R2" in html
    assert "confusion_matrix.png" not in {f.name for f in files}
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["test"]["rmse"] ** 2 == pytest.approx(s.extra["test"]["mse"], rel=1e-4)
    assert metrics["test"]["mae"] == pytest.approx(s.extra["test"]["mae"], rel=1e-4)


def test_report_degrades_with_notes(tmp_path):
    """One complete trial, no study file, no model: the report still writes, with notes."""
    import optuna

    url = f"sqlite:///{tmp_path / 'tiny.db'}"
    st = optuna.create_study(study_name="tiny", storage=url, direction="maximize")
    st.add_trial(optuna.trial.create_trial(params={"x": 1.0},
                                           distributions={"x": optuna.distributions.FloatDistribution(0, 2)},
                                           value=0.5))
    st.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.FAIL, params={},
                                           distributions={}, user_attrs={"failure_reason": "OOM"}))
    empty = optuna.create_study(study_name="empty", storage=url)
    out = tmp_path / "rep"
    files = write_report("tiny", str(out), storage=url)
    html = (out / "index.html").read_text()
    assert "needs at least 2 completed trials" in html
    assert "no per-epoch values stored" in html
    assert "no stored study file" in html
    assert {f.name for f in files} >= {"optimization_history.png", "slice.png", "index.html", "trials.csv"}
    for f in files:
        if f.suffix == ".png":
            assert_png(f)
    files = write_report(empty.study_name, str(tmp_path / "rep2"), storage=url)
    assert [f.name for f in files] == ["trials.csv", "index.html"]
    assert "no completed trial yet" in (tmp_path / "rep2" / "index.html").read_text()


def test_report_relative_data_path_missing_is_a_note(tmp_path, monkeypatch):
    import optuna

    text = """name: csvstudy
data: {source: data/train.csv, target: y}
space: {n_neurons: {int: [1, 4]}}
search: {engine: optuna, n_trials: 2}
"""
    url = f"sqlite:///{tmp_path / 'c.db'}"
    st = optuna.create_study(study_name="csvstudy", storage=url, direction="maximize")
    st.set_user_attr("study_config", text)
    for v in (0.1, 0.2):
        st.add_trial(optuna.trial.create_trial(params={"n_neurons": int(v * 10)}, value=v,
                                               distributions={"n_neurons": optuna.distributions.IntDistribution(1, 4)},
                                               intermediate_values={0: v / 2, 1: v}))
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "rep"
    files = write_report("csvstudy", str(out), storage=url)
    html = (out / "index.html").read_text()
    assert "not found" in html and "train.csv" in html
    assert "learning_curves.png" in {f.name for f in files}


# ---------------------------------------------------------------------------------------- curve PNG


def test_save_curve_png_is_small_and_fast(tmp_path):
    hist = {"loss": [1.0, 0.7, 0.5, 0.4], "val_loss": [1.1, 0.8, 0.6, 0.55],
            "accuracy": [0.5, 0.7, 0.8, 0.85], "val_accuracy": [0.45, 0.65, 0.75, 0.8]}
    p = tmp_path / "c.png"
    save_curve_png(hist, str(p), title="trial 3")  # warm-up: imports
    times = []
    for i in range(3):  # CPU time of this process: what the drawing costs, not the machine's load
        t0 = time.process_time()
        save_curve_png(hist, str(tmp_path / f"c{i}.png"), title="trial 3")
        times.append(time.process_time() - t0)
    assert min(times) < 0.25, times  # ~40-80 ms on an idle core
    w, h = assert_png(p)
    assert w <= 800 and h <= 300
    assert p.stat().st_size < 60_000
    # odd input still gives a picture
    save_curve_png({"loss": [float("nan"), 1.0], "lr": [0.1, 0.1]}, str(tmp_path / "d.png"))
    save_curve_png({}, str(tmp_path / "e.png"))
    assert_png(tmp_path / "d.png")


# ----------------------------------------------------------------------------------- progress display


def test_console_progress_lines_for_logs(capsys):
    """Not a terminal: one line per finished trial on stderr, best by the study's direction."""
    p = ConsoleProgress("demo", direction="minimize", total=4)
    p.begin(1, 0.5)
    p.trial_done(1, "COMPLETE", 0.7)
    p.trial_done(2, "COMPLETE", 0.25, "")
    p.trial_done(3, "FAIL", None, "(NaN loss)")
    p.message("hpsearch worker 7: storage connection lost; retrying")
    p.end()
    out, err = capsys.readouterr()
    lines = err.splitlines()
    assert out == "" and len(lines) == 4
    assert lines[0].startswith("[demo] trial 1 COMPLETE value=0.7000 (2/4 done, best 0.5000, ")
    assert lines[1].startswith("[demo] trial 2 COMPLETE value=0.2500 (3/4 done, best 0.2500, ")
    # a failed trial frees its slot in the budget (it is run again): not done
    assert lines[2].startswith("[demo] trial 3 FAIL value=- (3/4 done, best 0.2500, ") and lines[2].endswith(
        " (NaN loss)")
    assert lines[3] == "hpsearch worker 7: storage connection lost; retrying"


def test_console_progress_disabled_still_shows_messages(capsys):
    p = ConsoleProgress("demo", enabled=False)
    p.begin(0, None)
    p.trial_done(0, "COMPLETE", 0.9)
    p.message("hpsearch: worker 1 exited with 1; the others finished the budget")
    p.end()
    out, err = capsys.readouterr()
    assert out == "" and err == "hpsearch: worker 1 exited with 1; the others finished the budget\n"
