"""Opening Optuna's RDB storage: every check passes before anything is written.

The URL is valid, SQLite is not asked to serve several workers, the SQLite folder exists and the file
(if any) is an SQLite database, the server answers, and the schema is the one this Optuna writes.
The storage is opened with the options that keep workers alive (``pool_pre_ping``, heartbeat +
retry of stale trials) and, on PostgreSQL, within the connection budget (one pooled connection per
process, see :data:`PG_POOL_SIZE`); a password given in the URL goes to the driver, never into ``storage.url``.
"""

from __future__ import annotations

import contextlib
import random
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hpsearch.errors import StorageBusy, StorageError, StorageUnusable
from hpsearch.storage.failures import NOT_SQLITE, PG_CONNECT_TIMEOUT, sqlite_header_ok, storage_error
from hpsearch.storage.urls import (
    POSTGRES_DRIVER,
    STORAGE_ENV,
    is_postgresql,
    is_sqlite,
    normalize_storage_url,
    redact_url,
    split_password,
    sqlite_path,
)

if TYPE_CHECKING:
    import optuna

__all__ = ["SQLITE_TIMEOUT", "open_storage"]

#: Seconds an SQLite connection waits for a lock held by another connection (e.g. the dashboard).
SQLITE_TIMEOUT = 30
#: PostgreSQL connections a process keeps open between storage calls (the connection budget: at most
#: one per worker). Threads that need the storage at the same moment (the heartbeat, the report
#: thread, Optuna's ``ask`` inside the study lock) open up to ``PG_MAX_OVERFLOW`` more, closed as soon
#: as they are returned. Server-side prepared statements are off (``prepare_threshold=None``), so the
#: same URL works directly and through PgBouncer in transaction-pooling mode (README "Connections").
PG_POOL_SIZE = 1
PG_MAX_OVERFLOW = 8
#: Seconds a PostgreSQL session of hpsearch may sit idle inside a transaction before the server ends it
#: (``idle_in_transaction_session_timeout``). No hpsearch transaction waits on the client that long;
#: a process stuck mid-transaction (seen once in CI after a server restart: a worker waited for ever
#: on a COMMIT the server never received, holding the study lock) gets an error it retries, and the
#: lock it held is released, instead of stopping every worker of the study.
PG_IDLE_IN_TRANSACTION = 60
#: Seconds an idle session may stay open (``idle_session_timeout``, PostgreSQL 14+): the same bound for
#: a client waiting on an answer to a statement the server has finished with; a pooled connection
#: closed this way is replaced at its next checkout (``pool_pre_ping``).
PG_IDLE_SESSION = 120
#: Tries at creating Optuna's tables while other workers create them at the same moment.
_CREATE_ATTEMPTS = 5


def open_storage(
    url: str,
    *,
    heartbeat: bool = False,
    heartbeat_interval: int = 10,
    grace_period: int | None = None,
    max_retry: int | None = 3,
    workers: int = 1,
    must_exist: bool = False,
) -> optuna.storages.RDBStorage:
    """Open Optuna RDB storage at ``url`` after checking it can serve ``workers`` processes.

    Nothing is written (no SQLite file, no tables) unless every check passes. With ``heartbeat``
    each running trial records a heartbeat every ``heartbeat_interval`` seconds; a trial silent for
    ``grace_period`` (default ``2 * heartbeat_interval``) is marked FAIL and re-queued as WAITING
    up to ``max_retry`` times (``None``: without limit).

    ``must_exist=True`` (read-only commands: status, best, report) refuses a storage that holds no
    Optuna tables instead of creating an empty one.

    A URL without a password uses ``PGPASSWORD`` (see :func:`~hpsearch.storage.child_env_and_url`).
    Raises a :class:`StorageError` subclass with a one-line message, password redacted.
    """
    url = normalize_storage_url(url)
    _check_options(workers, heartbeat, heartbeat_interval, grace_period)
    password: str | None = None
    if is_sqlite(url):
        _check_sqlite(url, workers, must_exist)
        bare = url
    else:
        bare, password = split_password(url)
    engine_kwargs = _engine_kwargs(url, password)
    _check_reachable(bare, engine_kwargs, shown=url, must_exist=must_exist)
    return _open_rdb(bare, engine_kwargs, shown=url, heartbeat=heartbeat, heartbeat_interval=heartbeat_interval,
                     grace_period=grace_period, max_retry=max_retry)


def _check_options(workers: int, heartbeat: bool, interval: int, grace: int | None) -> None:
    if not isinstance(workers, int) or workers < 1:
        raise StorageError(f"workers must be a positive integer, got {workers!r}")
    if heartbeat and (not isinstance(interval, int) or interval < 1):
        raise StorageError(f"heartbeat interval must be a positive whole number of seconds, got {interval!r}")
    if heartbeat and grace is not None and (not isinstance(grace, int) or grace < 1):
        raise StorageError(f"heartbeat grace period must be a positive whole number of seconds, got {grace!r}")


def _check_sqlite(url: str, workers: int, must_exist: bool) -> None:
    if workers > 1:
        raise StorageError(
            f"SQLite serves one process; for {workers} workers use PostgreSQL "
            f"({POSTGRES_DRIVER}://user@host/db) in --storage or {STORAGE_ENV}, "
            f"or run one worker (storage {url})"
        )
    path = sqlite_path(url)
    if path is None:
        return
    if not path.parent.is_dir():
        raise StorageError(
            f"storage {url}: folder {str(path.parent)!r} does not exist; create it "
            f"(mkdir -p {path.parent}) or choose another path"
        )
    if path.is_dir():
        raise StorageError(f"storage {url}: {str(path)!r} is a folder; name a .db file inside it")
    if must_exist and not path.exists():
        raise StorageError(
            f"storage {url}: file {str(path)!r} does not exist; run a study first or fix --storage / {STORAGE_ENV}"
        )
    if path.is_file() and not sqlite_header_ok(_head(path)):
        raise StorageUnusable(f"storage {url} is unusable ({NOT_SQLITE.reason}); {NOT_SQLITE.fix}")


def _head(path: Path) -> bytes:
    """The first 16 bytes of a file (an unreadable file: empty; opening it reports why)."""
    try:
        with path.open("rb") as f:
            return f.read(16)
    except OSError:
        return b""


def _engine_kwargs(url: str, password: str | None) -> dict[str, Any]:
    if is_postgresql(url):
        from sqlalchemy.engine import make_url

        given = set(make_url(url).query)  # options in the URL win over our defaults
        # keepalives and tcp_user_timeout (libpq): a connection whose server went away without closing
        # it (a restart at the wrong moment) fails within ~30 s and is retried, instead of blocking a
        # worker, and with it the study, forever
        defaults = {"connect_timeout": PG_CONNECT_TIMEOUT, "application_name": "hpsearch", "keepalives": 1,
                    "keepalives_idle": 10, "keepalives_interval": 5, "keepalives_count": 3,
                    "tcp_user_timeout": 30_000}
        connect_args: dict[str, Any] = {k: v for k, v in defaults.items() if k not in given}
        if password is not None:
            connect_args["password"] = password
        connect_args["prepare_threshold"] = None  # no server-side prepared statements: any pooler works
        return {"pool_pre_ping": True, "pool_size": PG_POOL_SIZE, "max_overflow": PG_MAX_OVERFLOW,
                "connect_args": connect_args}
    return {"connect_args": {"timeout": SQLITE_TIMEOUT}}


def _check_reachable(url: str, engine_kwargs: dict[str, Any], shown: str, must_exist: bool = False) -> None:
    """Connect once with a bare engine (no pool, no Optuna): raise a StorageError if it fails.

    For SQLite a reachable file is switched to WAL journaling (persistent in the file), which lets
    the dashboard read while a worker writes.
    """
    import sqlalchemy
    from sqlalchemy.pool import NullPool

    kwargs = {k: v for k, v in engine_kwargs.items() if k not in ("pool_pre_ping", "pool_size", "max_overflow")}
    try:
        engine = sqlalchemy.create_engine(url, poolclass=NullPool, **kwargs)
    except sqlalchemy.exc.SQLAlchemyError as exc:  # bad driver options end up here
        raise storage_error(exc, shown) from None
    try:
        with engine.connect() as conn:
            conn.execute(sqlalchemy.text("SELECT 1"))
            if must_exist and not sqlalchemy.inspect(conn).has_table("studies"):
                raise StorageError(
                    f"storage {redact_url(shown)} holds no studies yet (no Optuna tables); "
                    f"run a study first or fix --storage / {STORAGE_ENV}"
                )
            if is_sqlite(url) and sqlite_path(url) is not None:
                with contextlib.suppress(sqlalchemy.exc.DBAPIError):  # WAL is an optimisation (fails on some FS)
                    conn.exec_driver_sql("PRAGMA journal_mode=WAL")
    except sqlalchemy.exc.SQLAlchemyError as exc:  # every driver error arrives wrapped
        raise storage_error(exc, shown, connecting=True) from None
    finally:
        engine.dispose()


def _open_rdb(bare: str, engine_kwargs: dict[str, Any], *, shown: str, heartbeat: bool, heartbeat_interval: int,
              grace_period: int | None, max_retry: int | None) -> optuna.storages.RDBStorage:
    """Optuna's RDBStorage (creates the tables), refused when another Optuna's schema is there.

    Workers that start together race to create the tables; the losers get a concurrent-write error
    (:class:`StorageBusy`) and simply try again, a few times, after a short pause.
    """
    import optuna
    import sqlalchemy.exc
    from optuna.exceptions import ExperimentalWarning

    kwargs: dict[str, Any] = {}
    for attempt in range(_CREATE_ATTEMPTS):
        try:
            with warnings.catch_warnings():  # the heartbeat is "experimental" since Optuna 2.8
                warnings.simplefilter("ignore", ExperimentalWarning)
                if heartbeat:
                    kwargs = {
                        "heartbeat_interval": heartbeat_interval,
                        "grace_period": grace_period,
                        "heartbeat_stale_trial_callback": optuna.storages.RetryHeartbeatStaleTrialCallback(
                            max_retry=max_retry
                        ),
                    }
                storage = optuna.storages.RDBStorage(
                    bare, engine_kwargs=engine_kwargs, skip_compatibility_check=True, **kwargs
                )
            _check_schema(storage, shown)
            break
        except (sqlalchemy.exc.SQLAlchemyError, OSError, optuna.exceptions.StorageInternalError) as exc:
            # at table creation or the version check (Optuna wraps a lost connection in StorageInternalError)
            error = storage_error(exc, shown)
            if not isinstance(error, StorageBusy) or attempt == _CREATE_ATTEMPTS - 1:
                raise error from None
            time.sleep(0.1 * (attempt + 1) + random.random() / 10)
    if is_sqlite(bare):
        _sqlite_fast_commits(storage)
    elif is_postgresql(bare):
        _pg_session_limits(storage)
    return storage


def _check_schema(storage: optuna.storages.RDBStorage, shown: str) -> None:
    """Refuse tables made by another Optuna version (public API: current vs head schema version)."""
    import optuna

    current, head = storage.get_current_version(), storage.get_head_version()
    if current == head:
        return
    fix = ("run `optuna storage upgrade --storage URL` (back it up first)" if current in storage.get_all_versions()
           else "install the newer Optuna version that made it")
    raise StorageUnusable(
        f"storage {redact_url(shown)} was written by another Optuna version (optuna {optuna.__version__} here); {fix}"
    )


def _sqlite_fast_commits(storage: optuna.storages.RDBStorage) -> None:
    """WAL + ``synchronous=NORMAL`` on every connection: a commit no longer waits for an fsync.

    Safe with WAL (the database cannot be corrupted; a power cut may lose the last commits), and it
    makes the per-epoch intermediate-value writes of the trial runner cheap (measured in
    benchmarks/bench_digits.py). Set per connection, hence the connect hook.
    """
    import sqlalchemy

    @sqlalchemy.event.listens_for(storage.engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        cur = dbapi_conn.cursor()
        try:
            cur.execute("PRAGMA synchronous=NORMAL")
        finally:
            cur.close()

    storage.engine.dispose()  # connections opened while creating the tables get the pragma on reconnect


def _pg_session_limits(storage: optuna.storages.RDBStorage) -> None:
    """``idle_in_transaction_session_timeout`` (:data:`PG_IDLE_IN_TRANSACTION`) and, on PostgreSQL 14 and
    later, ``idle_session_timeout`` (:data:`PG_IDLE_SESSION`) on every connection.

    Set with ``SET`` when a connection opens, not as a libpq ``options`` startup parameter, which
    PgBouncer refuses; behind PgBouncer in transaction-pooling mode the setting lands on the server
    connection that ran it and stays there (the same value for every hpsearch client).
    """
    import sqlalchemy

    @sqlalchemy.event.listens_for(storage.engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        with dbapi_conn.cursor() as cur:
            cur.execute(f"SET idle_in_transaction_session_timeout = '{PG_IDLE_IN_TRANSACTION}s'")
            if dbapi_conn.info.server_version >= 140000:
                cur.execute(f"SET idle_session_timeout = '{PG_IDLE_SESSION}s'")
        dbapi_conn.commit()

    storage.engine.dispose()  # connections opened while creating the tables get it on reconnect
