"""The storage contract, run on SQLite and on a real PostgreSQL server (tests/pg.py)."""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
import traceback
import uuid
from pathlib import Path
from urllib.parse import quote

import optuna
import pytest
from optuna.distributions import FloatDistribution, IntDistribution
from optuna.trial import TrialState, create_trial

from hpsearch.errors import (
    StorageBusy,
    StorageError,
    StorageRejected,
    StorageUnreachable,
    StorageUnusable,
    UserError,
)
from hpsearch.storage import (
    DEFAULT_STORAGE,
    STORAGE_ENV,
    child_env_and_url,
    is_connection_error,
    normalize_storage_url,
    open_storage,
    redact_url,
    resolve_storage_url,
    scrub,
    secrets_of,
    storage_error,
)

pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")

REPO = Path(__file__).resolve().parents[2]
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
    with pytest.raises(StorageUnusable, match="not an SQLite database"):
        open_storage(f"sqlite:///{bad}")
    bad.write_bytes(b"SQLite format 3\x00" + b"\xff" * 4000)  # the right header, garbage after it
    with pytest.raises(StorageUnusable, match=r"is unusable \(the file is not an SQLite database\)"):
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
    assert isinstance(info.value, StorageUnreachable) and is_connection_error(info.value)
    _no_secret(info.value, "s3cr:t@pw", "s3cr%3At%40pw")


def test_wrong_password_rejected_and_no_tables_created(postgres_server):
    db = postgres_server.create_database()
    url = f"postgresql://hps:wr%40ngpw@127.0.0.1:{postgres_server.port}/{db}"
    with pytest.raises(StorageError) as info:
        open_storage(url)
    assert 'rejected the login (password authentication failed for user "hps")' in str(info.value)
    assert isinstance(info.value, StorageRejected) and not is_connection_error(info.value)
    _no_secret(info.value, "wr@ngpw", "wr%40ngpw")
    assert postgres_server.tables(db) == []


def test_missing_database_is_named(postgres_server):
    url = postgres_server.url("no_such_db")
    with pytest.raises(StorageError, match='database "no_such_db" does not exist'):
        open_storage(url)
    with pytest.raises(StorageUnusable) as info:
        open_storage(url)
    _no_secret(info.value, postgres_server.password, quote(postgres_server.password, safe=""))


def _role(server, *, login_password: str) -> str:
    """A new login role (roles are cluster-wide: a fresh name per test)."""
    from psycopg import sql

    name = f"r_{uuid.uuid4().hex[:8]}"
    with server.admin() as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
            sql.Identifier(name), sql.Literal(login_password)))
    return name


def test_unknown_role_is_rejected(postgres_server):
    db = postgres_server.create_database()
    with pytest.raises(StorageRejected, match='password authentication failed for user "nobody_here"'):
        open_storage(f"postgresql://nobody_here:pw@127.0.0.1:{postgres_server.port}/{db}")


def test_database_closed_to_the_user_is_named(postgres_server):
    db = postgres_server.create_database()
    role = _role(postgres_server, login_password="x1")
    with postgres_server.admin() as conn:
        conn.execute(f'REVOKE CONNECT ON DATABASE "{db}" FROM PUBLIC')
    with pytest.raises(StorageUnusable, match=f'permission denied for database "{db}"'):
        open_storage(f"postgresql://{role}:x1@127.0.0.1:{postgres_server.port}/{db}")


def test_no_create_permission_is_unusable_and_writes_nothing(postgres_server):
    db = postgres_server.create_database()  # owned by hps: since PostgreSQL 15 others may not CREATE in public
    role = _role(postgres_server, login_password="x2")
    with pytest.raises(StorageUnusable, match=r"is unusable \(permission denied\); grant the user CREATE"):
        open_storage(f"postgresql://{role}:x2@127.0.0.1:{postgres_server.port}/{db}")
    assert postgres_server.tables(db) == []


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("postgresql://u:pw@no-such-host.invalid/db", "unknown host"),
        ("postgresql://u@/db?host=/nonexistent-socket-dir", "no server on the local socket"),
    ],
)
def test_unreachable_reasons(url, reason):
    with pytest.raises(StorageUnreachable, match=rf"is unreachable \({reason}\); start the server"):
        open_storage(url)


def test_workers_creating_the_tables_at_once_all_succeed(postgres_url):
    errors: list[BaseException] = []

    def open_one() -> None:
        try:
            open_storage(postgres_url, workers=8)
        except BaseException as exc:  # noqa: BLE001 - collected for the assertion
            errors.append(exc)

    threads = [threading.Thread(target=open_one) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


def test_lost_server_is_a_connection_error(postgres_server, postgres_url):
    storage = open_storage(postgres_url)
    study = optuna.create_study(study_name="lost", storage=storage)
    postgres_server.stop()
    try:
        with pytest.raises(Exception) as info:
            study.add_trial(create_trial(value=1.0))
        assert is_connection_error(info.value)
        error = storage_error(info.value, postgres_url)
        assert isinstance(error, StorageUnreachable), error
        assert "(connection refused)" in str(error) and postgres_server.password not in str(error)
    finally:
        postgres_server.start()


@pytest.mark.parametrize(("version", "fix"), [("v3.0.0.a", "optuna storage upgrade"), ("v99.0.0", "newer Optuna")])
def test_tables_of_another_optuna_version_are_refused(storage_url, version, fix):
    import sqlalchemy

    storage = open_storage(storage_url)
    with storage.engine.begin() as conn:  # what an older (or newer) Optuna would have left
        conn.execute(sqlalchemy.text("UPDATE alembic_version SET version_num = :v"), {"v": version})
    storage.engine.dispose()
    with pytest.raises(StorageUnusable, match=f"was written by another Optuna version .*{fix}"):
        open_storage(storage_url)


def test_sqlite_result_codes_are_classified(tmp_path):
    path = tmp_path / "x.db"
    url = f"sqlite:///{path}"
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("CREATE TABLE t (x)")
    holder.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(sqlite3.OperationalError) as locked:
            sqlite3.connect(path, timeout=0).execute("SELECT * FROM t")
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    error = storage_error(locked.value, url)
    assert isinstance(error, StorageBusy) and is_connection_error(locked.value)
    assert str(error).startswith(f"storage {url} is busy (the SQLite file is locked by another process)")
    with pytest.raises(sqlite3.OperationalError) as readonly:
        sqlite3.connect(f"file:{path}?mode=ro", uri=True).execute("INSERT INTO t VALUES (1)")
    error = storage_error(readonly.value, url)
    assert isinstance(error, StorageUnusable) and "(the database is read-only)" in str(error)
    assert not is_connection_error(readonly.value)


def test_is_connection_error_searches_the_causes():
    import psycopg
    import sqlalchemy.exc

    lost = sqlalchemy.exc.OperationalError("SELECT 1", {}, psycopg.OperationalError("gone"))
    try:
        try:
            raise lost
        except sqlalchemy.exc.OperationalError as exc:
            raise RuntimeError("wrapped by Optuna") from exc
    except RuntimeError as wrapped:
        assert is_connection_error(wrapped)
    try:
        try:
            try:
                raise lost
            except sqlalchemy.exc.OperationalError as exc:
                raise RuntimeError("Optuna") from exc  # its context is the driver error too
        except RuntimeError as exc:
            raise exc.with_traceback(None) from None  # as Keras re-raises a callback's error
    except RuntimeError as hidden:
        assert hidden.__cause__ is None and is_connection_error(hidden)
    unique = sqlalchemy.exc.IntegrityError("INSERT", {}, psycopg.errors.UniqueViolation())
    assert is_connection_error(unique) and isinstance(storage_error(unique, "sqlite:///x.db"), StorageBusy)
    denied = sqlalchemy.exc.ProgrammingError("CREATE", {}, psycopg.errors.InsufficientPrivilege())
    assert not is_connection_error(denied) and isinstance(storage_error(denied, "sqlite:///x.db"), StorageUnusable)
    assert is_connection_error(ConnectionRefusedError())
    assert is_connection_error(StorageUnreachable("x")) and is_connection_error(StorageBusy("x"))
    assert not is_connection_error(StorageRejected("x")) and not is_connection_error(ValueError("x"))


def test_unknown_driver_error_keeps_a_scrubbed_first_line():
    import sqlalchemy.exc

    url = "postgresql+psycopg://u:hunter2@h/db"
    exc = sqlalchemy.exc.DatabaseError("SELECT", {}, RuntimeError("odd failure near hunter2\nsecond line"))
    error = storage_error(exc, url)
    assert type(error) is StorageError
    assert str(error) == (
        "storage postgresql+psycopg://u:***@h/db failed (odd failure near ***); check --storage / HPSEARCH_STORAGE"
    )


def test_scrub_and_secrets_of():
    url = "postgresql+psycopg://u:s3cr%3At%40pw@h/db?password=other"
    assert secrets_of(url, env={"PGPASSWORD": "envpw"}) == ["s3cr:t@pw", "other", "envpw"]
    assert secrets_of("not a url", env={}) == []
    text = "a s3cr:t@pw b s3cr%3At%40pw c envpw d"
    assert scrub(text, ["s3cr:t@pw", "envpw", ""]) == "a *** b *** c *** d"


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
    with pytest.raises(StorageRejected, match=r"rejected the login \(no password supplied\)"):
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


def test_normalize_keeps_sqlite_paths():
    assert normalize_storage_url("sqlite:////abs/x.db") == "sqlite:////abs/x.db"
    assert normalize_storage_url(" sqlite:///rel/x.db ") == "sqlite:///rel/x.db"


def test_a_session_stuck_inside_a_transaction_is_ended_by_the_server_and_retried(postgres_url, monkeypatch):
    """Every PostgreSQL connection of hpsearch has ``idle_in_transaction_session_timeout``: a client
    that stops talking mid-transaction (holding the study lock, say) is cut off by the server, its
    next call fails with an error the loops retry, and the advisory lock it held is free again."""
    import sqlalchemy

    from hpsearch.storage import rdb

    monkeypatch.setattr(rdb, "PG_IDLE_IN_TRANSACTION", 1)
    storage = open_storage(postgres_url)
    with storage.engine.connect() as conn:
        assert conn.exec_driver_sql("SHOW idle_in_transaction_session_timeout").scalar() == "1s"
        assert conn.exec_driver_sql("SHOW idle_session_timeout").scalar() == "2min"
    conn = storage.engine.connect()
    trans = conn.begin()
    conn.exec_driver_sql("SELECT pg_advisory_xact_lock(1, 2)")
    time.sleep(2.5)
    with pytest.raises(sqlalchemy.exc.DBAPIError) as err:
        conn.exec_driver_sql("SELECT 1")
    assert is_connection_error(err.value)
    with contextlib.suppress(sqlalchemy.exc.SQLAlchemyError):
        trans.rollback()
    conn.close()
    with storage.engine.connect() as other, other.begin():  # the lock was released with the session
        assert other.exec_driver_sql("SELECT pg_try_advisory_xact_lock(1, 2)").scalar() is True
