"""``hpsearch dashboard``: optuna-dashboard serves hpsearch studies (HTTP API + a real headless Chromium)."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import urllib.request
from pathlib import Path

import pytest

try:
    from tests import syspkgs
    from tests.study_factory import make_study
except ImportError:  # pragma: no cover - tests/ is not a package
    import syspkgs  # type: ignore[no-redef]
    from study_factory import make_study  # type: ignore[no-redef]

from hpsearch.cli import main
from hpsearch.results import dashboard as dash
from hpsearch.storage.artifacts import CURVE_FILE


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url: str, timeout: float = 20) -> tuple[int, bytes, str]:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.status, r.read(), r.headers.get("Content-Type", "")


def get_json(url: str) -> dict:
    status, body, _ = get(url)
    assert status == 200
    return json.loads(body)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A factory study behind a running ``python -m hpsearch dashboard`` child process."""
    tmp = tmp_path_factory.mktemp("dash")
    study = make_study(tmp, "iris")
    port = free_port()
    log = tmp / "dashboard.log"
    proc = dash.start_dashboard_process(study.url, None, "127.0.0.1", port, log=log)  # artifacts: from the study
    base = f"http://127.0.0.1:{port}"
    try:
        dash.wait_until_ready(base + "/api/meta", timeout=60, proc=proc, log=log)
        yield study, base, proc, log
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:  # pragma: no cover
            proc.kill()
            proc.wait()


def _study_id(base: str, name: str) -> int:
    studies = get_json(base + "/api/studies")["study_summaries"]
    ids = [s["study_id"] for s in studies if s["study_name"] == name]
    assert ids, studies
    return ids[0]


def test_dashboard_prints_loopback_url(served):
    study, base, _, log = served
    first = "".join(log.read_text().splitlines(keepends=True)[:2])
    assert "optuna-dashboard for sqlite:///" in first
    assert f"open {base}/dashboard/" in first
    assert str(study.artifacts) in first
    meta = get_json(base + "/api/meta")
    assert meta["artifact_is_available"] is True


def test_dashboard_api_serves_study_trials_and_artifacts(served, tmp_path):
    import keras
    import numpy as np

    study, base, _, _ = served
    sid = _study_id(base, study.name)
    detail = get_json(f"{base}/api/studies/{sid}")
    assert detail["name"] == study.name
    trials = {t["number"]: t for t in detail["trials"]}
    assert [trials[n]["state"] for n in range(5)] == ["Complete", "Complete", "Pruned", "Fail", "Complete"]
    assert detail["best_trials"][0]["number"] == study.best_number
    assert detail["has_intermediate_values"] is True
    best = trials[study.best_number]
    assert {p["name"] for p in best["params"]} == {"n_hidden", "n_neurons", "learning_rate"}
    assert len(best["values"]) == 1
    # learning curve: the validation metric per epoch
    curve = [iv["value"] for iv in sorted(best["intermediate_values"], key=lambda iv: iv["step"])]
    assert curve == pytest.approx(study.extra["history"]["val_accuracy"])
    attrs = {a["key"]: a["value"] for a in best["user_attrs"]}
    for key in ("engine", "fold_scores", "epochs_trained", "fit_time", "n_params", "model_artifact_id"):
        assert key in attrs, key
    fail_attrs = {a["key"]: a["value"] for a in trials[3]["user_attrs"]}
    assert "NaN loss" in fail_attrs["failure_reason"]
    study_attrs = {a["key"]: a["value"] for a in detail["user_attrs"]}
    for key in ("study_config", "data_summary", "test_score", "engine", "metric"):
        assert key in study_attrs, key
    assert "sklearn:iris" in study_attrs["study_config"]
    # artifacts: model file and training-curve PNG, downloadable through the dashboard
    arts = {a["filename"]: a for a in best["artifacts"]}
    assert {"model.keras", "preprocess.json", CURVE_FILE} <= set(arts)
    tid = best["trial_id"]
    status, png, ctype = get(f"{base}/artifacts/{sid}/{tid}/{arts[CURVE_FILE]['artifact_id']}")
    assert status == 200 and ctype == "image/png" and png[:8] == b"\x89PNG\r\n\x1a\n"
    status, body, _ = get(f"{base}/artifacts/{sid}/{tid}/{arts['model.keras']['artifact_id']}")
    assert status == 200 and body[:2] == b"PK"  # a .keras file is a zip archive
    path = tmp_path / "served.keras"
    path.write_bytes(body)
    model = keras.models.load_model(path, compile=False, safe_mode=True)
    assert model.predict(np.zeros((3, 4), dtype="float32"), verbose=0).shape == (3, 3)
    status, pre, _ = get(f"{base}/artifacts/{sid}/{tid}/{arts['preprocess.json']['artifact_id']}")
    assert json.loads(pre)["n_features"] == 4


def test_dashboard_api_answers_the_pareto_front_of_a_study_of_two_objectives(served):
    """A study of several objectives, stored as hpsearch stores one (record_candidate, an infeasible
    trial PRUNED with its constraint values): the dashboard's front is hpsearch's."""
    import optuna

    from hpsearch.pareto import front_rows
    from hpsearch.records import STUDY, TRIAL
    from hpsearch.trials.context import Candidate, record_candidate

    study, base, _, _ = served
    mo = optuna.create_study(storage=study.url, study_name="two-objectives", directions=["maximize", "minimize"])
    mo.set_user_attr(STUDY.OBJECTIVES, ["accuracy", "n_params"])
    with pytest.warns(optuna.exceptions.ExperimentalWarning):
        mo.set_metric_names(["accuracy", "n_params"])
    dist = {"n_neurons": optuna.distributions.IntDistribution(2, 64)}
    for n, acc, size in [(4, 0.80, 43.0), (16, 0.95, 139.0), (8, 0.78, 67.0), (24, 0.96, 195.0)]:
        record_candidate(mo, Candidate(params={"n_neurons": n}, state="COMPLETE", value=acc, values=[acc, size],
                                       user_attrs={TRIAL.CONSTRAINTS: [size - 200.0]}), engine="optuna",
                         distributions=dist)
    record_candidate(mo, Candidate(params={"n_neurons": 64}, state="PRUNED", user_attrs={TRIAL.CONSTRAINTS: [315.0]}),
                     engine="optuna", distributions=dist)
    ours = sorted(r["number"] for r in front_rows(mo))
    assert ours == [0, 1, 3]  # 2 is dominated by 0; 4, over the limit, is stored PRUNED
    sid = _study_id(base, "two-objectives")
    detail = get_json(f"{base}/api/studies/{sid}")
    assert detail["directions"] == ["maximize", "minimize"]
    # the dashboard's Pareto front (its UI plots it in the browser from these trials)
    assert sorted(t["number"] for t in detail["best_trials"]) == ours
    assert all(len(t["values"]) == 2 for t in detail["best_trials"])


# ------------------------------------------------------------------------------- in-process behaviour


class _StopAtOnce:
    """Stands in for the HTTP server: Ctrl-C as soon as it starts serving."""

    closed = False

    def serve_forever(self, poll_interval: float = 0.5) -> None:
        raise KeyboardInterrupt

    def server_close(self) -> None:
        _StopAtOnce.closed = True


def test_non_loopback_host_warns_and_ctrl_c_exits_0(served, monkeypatch, capsys):
    study, _, _, _ = served
    seen = {}

    def fake_server(app, host, port):
        seen.update(host=host, port=port, app=app)
        return _StopAtOnce()

    monkeypatch.setattr(dash, "_make_server", fake_server)
    assert main(["dashboard", study.url, "--host", "0.0.0.0", "--port", "8765"]) == 0
    cap = capsys.readouterr()
    assert "no authentication" in cap.err
    assert seen["host"] == "0.0.0.0" and seen["port"] == 8765 and callable(seen["app"])
    assert _StopAtOnce.closed
    assert main(["dashboard", "--storage", study.url]) == 0  # default: loopback, no warning
    cap = capsys.readouterr()
    assert "no authentication" not in cap.err
    assert seen["host"] == "127.0.0.1" and seen["port"] == 8080
    assert "http://127.0.0.1:8080/dashboard/" in cap.out


def test_password_is_redacted(served, monkeypatch, capsys):
    """Only the redacted URL is shown (a PostgreSQL URL with a password, storage opened as SQLite)."""
    from hpsearch.storage import open_storage

    study, _, _, _ = served
    secret_url = "postgresql+psycopg://hps:s3cr3t-pw@db.example:5432/hp"
    monkeypatch.setattr(dash, "open_storage_for_reading", lambda storage: (secret_url, open_storage(study.url)))
    monkeypatch.setattr(dash, "_make_server", lambda app, host, port: _StopAtOnce())
    opened = dash.open_dashboard(storage=secret_url, artifacts=str(study.artifacts))
    assert opened.storage == "postgresql+psycopg://hps:***@db.example:5432/hp" and opened.loopback
    assert main(["dashboard", "--storage", secret_url, "--artifacts", str(study.artifacts)]) == 0
    cap = capsys.readouterr()
    assert "s3cr3t" not in cap.out + cap.err
    assert "hps:***@db.example" in cap.out and "dashboard stopped" in cap.out


def test_port_in_use_is_one_line_error(served, capsys):
    study, _, _, _ = served
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        assert main(["dashboard", study.url, "--port", str(port)]) == 2
    err = capsys.readouterr().err
    assert "already in use" in err and err.count("\n") == 1


def test_missing_database_is_refused(tmp_path, capsys):
    db = tmp_path / "nothing.db"
    assert main(["dashboard", f"sqlite:///{db}"]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert not db.exists()


def test_empty_postgres_is_refused_and_left_empty(postgres_server, capsys):
    db = postgres_server.create_database()
    assert main(["dashboard", postgres_server.url(db), "--port", str(free_port())]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no studies yet" in err, err
    assert postgres_server.tables(db) == []


def test_helpers():
    assert dash.is_loopback("127.0.0.1") and dash.is_loopback("localhost") and dash.is_loopback("::1")
    assert not dash.is_loopback("0.0.0.0") and not dash.is_loopback("192.168.1.5")
    assert dash.dashboard_url("::1", 9) == "http://[::1]:9/dashboard/"
    assert dash.dashboard_url("0.0.0.0", 9) == "http://127.0.0.1:9/dashboard/"


# ------------------------------------------------------------------------------------ real browser


def _chromium() -> str:
    """The Chromium binary (Debian's ``chromium``, installed by the session hook of tests/conftest.py;
    tests/syspkgs.ensure is the fallback when this file runs on its own)."""
    syspkgs.ensure(["chromium"])
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    assert path, f"chromium is not installed (missing: {syspkgs.missing(['chromium'])})"
    return path


def _headless(binary: str, profile: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    cmd = [binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--disable-component-update", "--no-first-run", "--disable-sync", "--disable-quic",
           f"--user-data-dir={profile}", "--window-size=1400,1000", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def _visible_text(dom: str) -> str:
    dom = re.sub(r"<(style|script)[^>]*>.*?</\1>", " ", dom, flags=re.S)
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", dom))


def test_chromium_renders_study_and_trials(served, tmp_path):
    study, base, _, _ = served
    binary = _chromium()
    sid = _study_id(base, study.name)
    # 1. the study page, as a screenshot
    shot = Path(os.environ.get("HPSEARCH_SCREENSHOT_DIR", tmp_path)) / "dashboard-study.png"
    shot.parent.mkdir(parents=True, exist_ok=True)
    r = _headless(binary, tmp_path / "profile1", "--virtual-time-budget=10000", f"--screenshot={shot}",
                  f"{base}/dashboard/studies/{sid}")
    assert r.returncode == 0, r.stderr[-2000:]
    from PIL import Image

    with Image.open(shot) as im:
        im.load()
        assert im.size == (1400, 1000)
        colours = im.convert("RGB").resize((70, 50)).getcolors(70 * 50)
    assert colours is not None and len(colours) > 20, "blank screenshot"  # a rendered page, not one colour
    # 2. the trials page of the best trial, as the DOM after the app rendered it
    text = ""
    for budget in (10000, 25000):  # a loaded CI box may need more virtual time
        r = _headless(binary, tmp_path / f"profile-{budget}", f"--virtual-time-budget={budget}", "--dump-dom",
                      f"{base}/dashboard/studies/{sid}/trials?numbers={study.best_number}")
        assert r.returncode == 0, r.stderr[-2000:]
        text = _visible_text(r.stdout)
        if "Trial 4" in text and "model.keras" in text:
            break
    assert f"{study.name} (id={sid})" in text
    for n in range(5):
        assert f"Trial {n}" in text
    for word in ("Complete", "Pruned", "Fail", "Best Trial", "Intermediate Values", "epochs_trained",
                 "fold_scores", "n_params", "curve.png", "model.keras"):
        assert word in text, word

