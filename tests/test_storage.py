"""The storage contract, run on SQLite and on a real PostgreSQL server (tests/pg.py)."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
import traceback
from pathlib import Path
from urllib.parse import quote

import optuna
import pytest
from optuna.distributions import FloatDistribution, IntDistribution
from optuna.trial import TrialState, create_trial

from hpsearch.errors import StorageError, UserError
from hpsearch.storage import (
    ARTIFACTS_ENV,
    DEFAULT_STORAGE,
    STORAGE_ENV,
    artifact_location,
    artifact_store_for,
    child_env_and_url,
    normalize_storage_url,
    open_storage,
    redact_url,
    resolve_storage_url,
)

pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")

REPO = Path(__file__).resolve().parents[1]
optuna.logging.set_verbosity(optuna.logging.WARNING)


def _child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PGPASSWORD", None)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.update(extra or {})
    return env


def _no_secret(exc: BaseException, secret: str, encoded: str) -> None:
    text = "".join(traceback.format_exception(exc)) + repr(exc)
    assert secret not in text and encoded not in text


# --------------------------------------------------------------------------------------------------
# URLs: redaction, precedence, normalisation
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgresql+psycopg://u:pw@h:5432/db", "postgresql+psycopg://u:***@h:5432/db"),
        ("postgresql://u:p%40ss%3Aw@h/db", "postgresql://u:***@h/db"),
        ("postgresql://u:p@ss:w@h/db", "postgresql://u:***@h/db"),  # unencoded @ and :
        ("postgresql://u@h/db", "postgresql://u@h/db"),
        ("postgresql://u@h/db?password=x&sslmode=require", "postgresql://u@h/db?password=***&sslmode=require"),
        ("sqlite:///a:b@c.db", "sqlite:///a:b@c.db"),
        ("garbage", "garbage"),
        (None, ""),
    ],
)
def test_redact_url(url, expected):
    assert redact_url(url) == expected


def test_resolve_precedence():
    env = {STORAGE_ENV: "sqlite:///env.db"}
    assert resolve_storage_url("sqlite:///cli.db", "sqlite:///cfg.db", env=env) == "sqlite:///cli.db"
    assert resolve_storage_url(None, "sqlite:///cfg.db", env=env) == "sqlite:///env.db"
    assert resolve_storage_url(None, "sqlite:///cfg.db", env={}) == "sqlite:///cfg.db"
    assert resolve_storage_url("", "  ", env={STORAGE_ENV: ""}) == DEFAULT_STORAGE
    assert resolve_storage_url(None, None, env={}) == DEFAULT_STORAGE


@pytest.mark.parametrize("scheme", ["postgresql", "postgres", "postgresql+psycopg"])
def test_postgres_urls_normalised_to_psycopg3(scheme):
    url = resolve_storage_url(f"{scheme}://u:s3cr%3At%40pw@h:5433/db", None, env={})
    assert url == "postgresql+psycopg://u:s3cr%3At%40pw@h:5433/db"


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("garbage", "is not a URL"),
        ("hpsearch.db", "sqlite:///hpsearch.db"),
        ("mysql://u:hunter2@h/db", "unsupported scheme 'mysql'"),
        ("http://example.com", "unsupported scheme 'http'"),
        ("sqlite://", "names no SQLite file"),
        ("postgresql+psycopg2://u:hunter2@h/db", "psycopg 3"),
    ],
)
def test_bad_urls_are_one_line_user_errors(url, fragment):
    with pytest.raises(StorageError) as info:
        resolve_storage_url(url, None, env={})
    msg = str(info.value)
    assert isinstance(info.value, UserError)
    assert fragment in msg and "\n" not in msg
    assert "hunter2" not in msg
    _no_secret(info.value, "hunter2", "hunter2")


def test_child_env_and_url_moves_password_to_pgpassword():
    url, env = child_env_and_url("postgresql://hps:s3cr%3At%40pw@127.0.0.1:5432/db")
    assert url == "postgresql+psycopg://hps@127.0.0.1:5432/db"
    assert env == {"PGPASSWORD": "s3cr:t@pw"}
    assert child_env_and_url("postgresql+psycopg://hps@h/db") == ("postgresql+psycopg://hps@h/db", {})
    assert child_env_and_url("sqlite:///x.db") == ("sqlite:///x.db", {})
    url, env = child_env_and_url("postgres://hps@h/db?password=p%26w&sslmode=require")
    assert (url, env) == ("postgresql+psycopg://hps@h/db?sslmode=require", {"PGPASSWORD": "p&w"})


# --------------------------------------------------------------------------------------------------
# Refusals: nothing written
# --------------------------------------------------------------------------------------------------


def test_sqlite_refuses_several_workers_and_writes_nothing(tmp_path):
    db = tmp_path / "x.db"
    with pytest.raises(StorageError, match=r"^SQLite serves one process; for 4 workers use PostgreSQL"):
        open_storage(f"sqlite:///{db}", workers=4)
    assert list(tmp_path.iterdir()) == []


def test_sqlite_missing_folder_names_the_path(tmp_path):
    missing = tmp_path / "nope" / "deeper"
    with pytest.raises(StorageError) as info:
        open_storage(f"sqlite:///{missing}/x.db")
    assert str(missing) in str(info.value) and "does not exist" in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_must_exist_refuses_empty_storage(storage_url, tmp_path):
    with pytest.raises(StorageError, match="does not exist|holds no studies"):
        open_storage(storage_url, must_exist=True)
    assert list(tmp_path.iterdir()) == []
    optuna.create_study(study_name="s", storage=open_storage(storage_url))
    assert optuna.load_study(study_name="s", storage=open_storage(storage_url, must_exist=True))


def test_sqlite_file_that_is_not_a_database(tmp_path):
    bad = tmp_path / "notes.db"
    bad.write_text("just text, not sqlite " * 100)
    with pytest.raises(StorageError, match="not an SQLite database"):
        open_storage(f"sqlite:///{bad}")


def test_unreachable_postgres_is_a_clear_error_without_password():
    url = "postgresql://u:s3cr%3At%40pw@127.0.0.1:1/db"
    t0 = time.monotonic()
    with pytest.raises(StorageError) as info:
        open_storage(url)
    assert time.monotonic() - t0 < 15
    assert str(info.value) == (
        "storage postgresql+psycopg://u:***@127.0.0.1:1/db is unreachable (connection refused); "
        "start the server or fix --storage / HPSEARCH_STORAGE"
    )
    _no_secret(info.value, "s3cr:t@pw", "s3cr%3At%40pw")


def test_wrong_password_rejected_and_no_tables_created(postgres_server):
    db = postgres_server.create_database()
    url = f"postgresql://hps:wr%40ngpw@127.0.0.1:{postgres_server.port}/{db}"
    with pytest.raises(StorageError) as info:
        open_storage(url)
    assert 'rejected the login (password authentication failed for user "hps")' in str(info.value)
    _no_secret(info.value, "wr@ngpw", "wr%40ngpw")
    assert postgres_server.tables(db) == []


def test_missing_database_is_named(postgres_server):
    url = postgres_server.url("no_such_db")
    with pytest.raises(StorageError, match='database "no_such_db" does not exist'):
        open_storage(url)
    with pytest.raises(StorageError) as info:
        open_storage(url)
    _no_secret(info.value, postgres_server.password, quote(postgres_server.password, safe=""))


# --------------------------------------------------------------------------------------------------
# The contract on both backends
# --------------------------------------------------------------------------------------------------


def test_study_and_trials_round_trip(storage_url):
    storage = open_storage(storage_url)
    assert "***" not in storage.url and ":s3cr" not in storage.url  # password kept out of .url
    study = optuna.create_study(study_name="s", storage=storage, direction="maximize")
    study.set_user_attr("engine", "sklearn")
    dists = {"n": IntDistribution(1, 9), "lr": FloatDistribution(1e-4, 1e-1, log=True)}
    for i in range(3):
        study.add_trial(
            create_trial(
                params={"n": i + 1, "lr": 10 ** -(i + 1)},
                distributions=dists,
                value=0.5 + i / 10,
                user_attrs={"fold_scores": [0.5, 0.6 + i / 10], "fit_time": 1.5},
                intermediate_values={0: 0.1, 1: 0.2 + i},
            )
        )
    study.add_trial(create_trial(state=TrialState.FAIL, user_attrs={"failure_reason": "nan loss"}))

    again = optuna.load_study(study_name="s", storage=open_storage(storage_url))
    trials = again.get_trials(deepcopy=False)
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 3 + [TrialState.FAIL]
    assert again.user_attrs == {"engine": "sklearn"}
    assert again.best_trial.number == 2 and again.best_value == pytest.approx(0.7)
    assert trials[1].params == {"n": 2, "lr": pytest.approx(0.01)}
    assert trials[1].user_attrs == {"fold_scores": [0.5, pytest.approx(0.7)], "fit_time": 1.5}
    assert trials[2].intermediate_values == {0: 0.1, 1: 2.2}
    assert trials[3].user_attrs["failure_reason"] == "nan loss"


def test_sqlite_uses_wal(sqlite_url):
    open_storage(sqlite_url)
    path = sqlite_url[len("sqlite:///"):]
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_password_from_pgpassword(postgres_url, monkeypatch):
    bare, extra = child_env_and_url(postgres_url)
    assert "@" in bare and ":" not in bare.split("//")[1].split("@")[0]
    monkeypatch.setenv("PGPASSWORD", extra["PGPASSWORD"])
    storage = open_storage(bare)
    optuna.create_study(study_name="pgpass", storage=storage)
    monkeypatch.delenv("PGPASSWORD")
    with pytest.raises(StorageError, match="rejected the login"):
        open_storage(bare)


_WORKER = textwrap.dedent(
    """
    import sys, optuna
    from optuna.distributions import FloatDistribution
    from hpsearch.storage import open_storage
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    url, tag = sys.argv[1], sys.argv[2]
    study = optuna.load_study(study_name="shared", storage=open_storage(url, workers=2))
    for i in range(10):
        study.add_trial(optuna.trial.create_trial(
            params={"x": float(i)}, distributions={"x": FloatDistribution(-10, 10)},
            value=float(i), user_attrs={"worker": tag}))
    study.optimize(lambda t: t.suggest_float("x", -10, 10) ** 2, n_trials=10)
    """
)


def test_two_processes_share_a_postgres_study(postgres_url, tmp_path):
    optuna.create_study(study_name="shared", storage=open_storage(postgres_url, workers=2))
    script = tmp_path / "worker.py"
    script.write_text(_WORKER)
    url, extra = child_env_and_url(postgres_url)
    procs = []
    for tag in ("a", "b"):
        cmd = [sys.executable, str(script), url, tag]
        assert not any("s3cr" in part or "%3A" in part for part in cmd)  # no password in argv
        procs.append(subprocess.Popen(cmd, env=_child_env(extra), stderr=subprocess.PIPE, text=True))
    for p in procs:
        _, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
    trials = optuna.load_study(study_name="shared", storage=open_storage(postgres_url)).trials
    assert len(trials) == 40
    assert sorted(t.number for t in trials) == list(range(40))
    assert all(t.state == TrialState.COMPLETE for t in trials)
    assert sorted(t.user_attrs.get("worker") for t in trials if t.user_attrs) == ["a"] * 10 + ["b"] * 10


_HANGING_WORKER = textwrap.dedent(
    """
    import sys, time, optuna
    from hpsearch.storage import open_storage
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = open_storage(sys.argv[1], heartbeat=True, heartbeat_interval=1, grace_period=2)
    study = optuna.load_study(study_name="hb", storage=storage)
    def objective(trial):
        trial.suggest_int("n", 1, 5)
        trial.report(0.5, step=0)
        print("RUNNING", flush=True)
        time.sleep(120)
        return 1.0
    study.optimize(objective, n_trials=1)
    """
)


def test_killed_worker_trial_fails_and_is_requeued(storage_url, tmp_path):
    optuna.create_study(study_name="hb", storage=open_storage(storage_url))
    script = tmp_path / "hang.py"
    script.write_text(_HANGING_WORKER)
    url, extra = child_env_and_url(storage_url)
    proc = subprocess.Popen(
        [sys.executable, str(script), url], env=_child_env(extra), stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout.readline().strip() == "RUNNING"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)

    storage = open_storage(storage_url, heartbeat=True, heartbeat_interval=1, grace_period=2)
    study = optuna.load_study(study_name="hb", storage=storage)
    assert study.trials[0].state == TrialState.RUNNING
    deadline = time.monotonic() + 20
    while study.trials[0].state == TrialState.RUNNING:
        assert time.monotonic() < deadline, "stale trial was never failed"
        time.sleep(0.5)
        optuna.storages.fail_stale_trials(study)
    first, retry = study.trials
    assert first.state == TrialState.FAIL
    assert retry.state == TrialState.WAITING
    assert retry.params == first.params
    assert optuna.storages.RetryHeartbeatStaleTrialCallback.retried_trial_number(retry) == 0

    study.optimize(lambda t: float(t.suggest_int("n", 1, 5)), n_trials=1)  # picks the WAITING one
    assert study.trials[1].state == TrialState.COMPLETE and len(study.trials) == 2


def test_postgres_restart_is_survived(postgres_server, postgres_url):
    storage = open_storage(postgres_url)
    study = optuna.create_study(study_name="r", storage=storage)
    study.add_trial(create_trial(value=1.0))
    postgres_server.restart()
    study.add_trial(create_trial(value=2.0))  # pool_pre_ping replaces the dead connection
    assert [t.value for t in study.trials] == [1.0, 2.0]


# --------------------------------------------------------------------------------------------------
# Artifacts
# --------------------------------------------------------------------------------------------------


def test_artifact_locations(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    sub = tmp_path / "runs"
    assert artifact_location(f"sqlite:///{sub}/s.db", env={}) == str(sub / "hpsearch-artifacts")
    assert artifact_location("sqlite:///s.db", env={}) == str(tmp_path / "hpsearch-artifacts")
    pg = "postgresql+psycopg://u@h/db"
    assert artifact_location(pg, env={}) == str(tmp_path / "hpsearch-artifacts")
    assert artifact_location(pg, env={ARTIFACTS_ENV: "/data/art"}) == "/data/art"
    assert artifact_location(pg, "rel/art", env={ARTIFACTS_ENV: "/data/art"}) == str(tmp_path / "rel/art")
    assert artifact_location(pg, "s3://bucket/a/b/", env={}) == "s3://bucket/a/b"
    with pytest.raises(StorageError, match="unsupported scheme 'ftp'"):
        artifact_location(pg, "ftp://x/y", env={})
    assert not (tmp_path / "hpsearch-artifacts").exists()


def test_s3_artifact_store(monkeypatch):
    import boto3  # noqa: F401  (an optional dependency of hpsearch, a test dependency: no skip)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    store = artifact_store_for("sqlite:///x.db", "s3://bucket/pre/fix", env={})
    assert store.prefix == "pre/fix" and store.inner.bucket == "bucket"
    monkeypatch.setitem(sys.modules, "boto3", None)
    with pytest.raises(StorageError, match="needs boto3: pip install boto3"):
        artifact_store_for("sqlite:///x.db", "s3://bucket/p", env={})


def test_artifact_round_trip(storage_url, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    storage = open_storage(storage_url)
    store = artifact_store_for(storage_url, env={})
    folder = Path(artifact_location(storage_url, env={}))
    assert not folder.exists()  # created on demand only
    study = optuna.create_study(storage=storage)
    trial = study.ask()
    src = tmp_path / "model.keras"
    src.write_bytes(b"\x00weights\xff" * 100)
    artifact_id = optuna.artifacts.upload_artifact(
        artifact_store=store, file_path=str(src), study_or_trial=trial, storage=storage
    )
    study.tell(trial, 1.0)
    assert folder.is_dir() and folder == tmp_path / "hpsearch-artifacts"
    metas = optuna.artifacts.get_all_artifact_meta(study.trials[0], storage=storage)
    assert [m.artifact_id for m in metas] == [artifact_id]
    out = tmp_path / "back.keras"
    optuna.artifacts.download_artifact(artifact_store=store, file_path=str(out), artifact_id=artifact_id)
    assert out.read_bytes() == src.read_bytes()


def test_normalize_keeps_sqlite_paths():
    assert normalize_storage_url("sqlite:////abs/x.db") == "sqlite:////abs/x.db"
    assert normalize_storage_url(" sqlite:///rel/x.db ") == "sqlite:///rel/x.db"
