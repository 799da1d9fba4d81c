"""Storage URLs, engine options, heartbeat, artifact store and credential redaction.

Optuna's RDB storage is the single record of a study (DESIGN.md section 1). This module decides
*which* storage a run uses, checks that it can serve the run **before anything is written**, opens it
with the options that keep workers alive (``pool_pre_ping``, heartbeat + retry of stale trials), and
keeps passwords out of logs, error messages and process lists (DESIGN.md section 6).

Supported URLs::

    sqlite:///relative/path.db        one process only (the default: sqlite:///hpsearch.db)
    sqlite:////absolute/path.db
    postgresql+psycopg://user:pass@host:5432/db   (postgresql:// and postgres:// are normalised)

Heavy imports (optuna, SQLAlchemy) happen inside the functions so that ``hpsearch --help`` stays fast.
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from hpsearch.errors import StorageError

if TYPE_CHECKING:  # pragma: no cover
    import optuna
    from sqlalchemy.engine import URL

__all__ = [
    "DEFAULT_STORAGE",
    "STORAGE_ENV",
    "ARTIFACTS_ENV",
    "ARTIFACTS_DIRNAME",
    "POSTGRES_DRIVER",
    "resolve_storage_url",
    "normalize_storage_url",
    "is_sqlite",
    "is_postgresql",
    "redact_url",
    "child_env_and_url",
    "storage_error",
    "open_storage",
    "artifact_store_for",
    "artifact_location",
]

DEFAULT_STORAGE = "sqlite:///hpsearch.db"
STORAGE_ENV = "HPSEARCH_STORAGE"
ARTIFACTS_ENV = "HPSEARCH_ARTIFACTS"
ARTIFACTS_DIRNAME = "hpsearch-artifacts"
POSTGRES_DRIVER = "postgresql+psycopg"

#: Seconds a PostgreSQL connection attempt may take before the storage counts as unreachable.
PG_CONNECT_TIMEOUT = 10
#: Seconds an SQLite connection waits for a lock held by another connection (e.g. the dashboard).
SQLITE_TIMEOUT = 30

_FIX_URL = (
    "use sqlite:///path/to/file.db or postgresql+psycopg://user@host:5432/db "
    f"in --storage, {STORAGE_ENV} or the study file's storage:"
)
_PG_SCHEMES = {"postgresql", "postgres", "postgresql+psycopg", "postgres+psycopg"}
_QUERY_SECRET = re.compile(r"(?i)([?&](?:password|passwd|pwd)=)[^&#]*")


# --------------------------------------------------------------------------------------------------
# URLs
# --------------------------------------------------------------------------------------------------


def redact_url(url: Any) -> str:
    """The URL with its password replaced by ``***``; never raises, even on garbage.

    Works on the raw text rather than a parsed URL, so a password holding an unencoded ``@`` or
    ``:`` is still hidden completely (over-redaction is acceptable, a leak is not).
    """
    if url is None:
        return ""
    text = str(url)
    sep = text.find("://")
    if sep > 0 and not text[:sep].lower().startswith("sqlite"):
        start = sep + 3
        rest = text[start:]
        at = rest.rfind("@")
        if at >= 0:
            userinfo = rest[:at]
            colon = userinfo.find(":")
            if colon >= 0:
                text = text[:start] + userinfo[:colon] + ":***" + rest[at:]
    return _QUERY_SECRET.sub(r"\1***", text)


def _parse(url: str) -> URL:
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url)
    except (ArgumentError, ValueError, TypeError):
        raise StorageError(
            f"storage {redact_url(url)!r} is not a valid storage URL; {_FIX_URL}"
        ) from None  # the parser's text may quote the password


def normalize_storage_url(url: str) -> str:
    """Validate ``url`` and return it in canonical form (PostgreSQL on the psycopg 3 driver).

    Raises :class:`StorageError` (one line, password redacted) for anything hpsearch cannot use.
    """
    if not isinstance(url, str) or not url.strip():
        raise StorageError(f"storage URL is empty; {_FIX_URL}")
    url = url.strip()
    if "://" not in url:
        hint = ""
        if url.endswith((".db", ".sqlite", ".sqlite3")):
            hint = f" (for a file write sqlite:///{url})"
        raise StorageError(
            f"storage {redact_url(url)!r} is not a URL{hint}; {_FIX_URL}"
        )
    parsed = _parse(url)
    scheme = parsed.drivername.lower()
    if scheme == "sqlite":
        database = parsed.database
        if not database:
            raise StorageError(
                f"storage {redact_url(url)!r} names no SQLite file; write sqlite:///hpsearch.db "
                "(relative) or sqlite:////abs/path.db (absolute)"
            )
        if parsed.host or parsed.username or parsed.password:
            raise StorageError(
                f"storage {redact_url(url)!r}: an SQLite URL has three slashes and no host; "
                "write sqlite:///path/to/file.db"
            )
        return url
    if scheme in _PG_SCHEMES:
        parsed = parsed.set(drivername=POSTGRES_DRIVER)
        return parsed.render_as_string(hide_password=False)
    if scheme.startswith(("postgresql+", "postgres+")):
        raise StorageError(
            f"storage {redact_url(url)!r} uses the driver {scheme.split('+', 1)[1]!r}; hpsearch "
            f"ships psycopg 3: write {POSTGRES_DRIVER}://... (or plain postgresql://...)"
        )
    raise StorageError(
        f"storage {redact_url(url)!r} has an unsupported scheme {scheme!r}; {_FIX_URL}"
    )


def is_sqlite(url: str) -> bool:
    return str(url).strip().lower().startswith("sqlite:")


def is_postgresql(url: str) -> bool:
    return str(url).strip().lower().split("://", 1)[0] in _PG_SCHEMES


def resolve_storage_url(
    cli: str | None, config: str | None, env: Mapping[str, str] = os.environ
) -> str:
    """The storage URL for a run: ``--storage`` > ``$HPSEARCH_STORAGE`` > study file > default.

    Empty strings count as unset. The result is validated and normalised (see
    :func:`normalize_storage_url`).
    """
    for candidate in (cli, env.get(STORAGE_ENV), config):
        if candidate is not None and str(candidate).strip():
            return normalize_storage_url(str(candidate))
    return DEFAULT_STORAGE


def _split_password(url: str) -> tuple[str, str | None]:
    """(URL without password, password or None) for a normalised URL."""
    from sqlalchemy.engine import URL as _URL

    parsed = _parse(url)
    password = parsed.password
    query = dict(parsed.query)
    if password is None and "password" in query:
        password = query.pop("password")
        if isinstance(password, tuple):
            password = password[-1]
    else:
        query.pop("password", None)
    if password is None:
        return url, None
    bare = _URL.create(
        drivername=parsed.drivername,
        username=parsed.username,
        password=None,
        host=parsed.host,
        port=parsed.port,
        database=parsed.database,
        query=query,
    )
    return bare.render_as_string(hide_password=False), str(password)


def child_env_and_url(url: str) -> tuple[str, dict[str, str]]:
    """Split ``url`` for a spawned worker: (URL without password, environment additions).

    The password travels in ``PGPASSWORD`` (honoured by libpq/psycopg), so
    ``hpsearch worker --storage URL`` never shows it in the process list. SQLite URLs and URLs
    without a password come back unchanged with no additions.
    """
    url = normalize_storage_url(url)
    if not is_postgresql(url):
        return url, {}
    bare, password = _split_password(url)
    if password is None:
        return url, {}
    return bare, {"PGPASSWORD": password}


# --------------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------------


def _scrub(text: str, secrets: list[str]) -> str:
    for secret in secrets:
        if secret:
            for form in {secret, quote(secret, safe=""), quote(secret)}:
                text = text.replace(form, "***")
    return text


def _secrets_of(url: str) -> list[str]:
    secrets: list[str] = []
    try:
        from sqlalchemy.engine import make_url

        parsed = make_url(url)
        if parsed.password:
            secrets.append(str(parsed.password))
        q = parsed.query.get("password")
        if q:
            secrets.append(q if isinstance(q, str) else q[-1])
    except Exception:  # noqa: BLE001 - redaction must never fail
        pass
    env_pw = os.environ.get("PGPASSWORD")
    if env_pw:
        secrets.append(env_pw)
    return secrets


def _classify(message: str) -> tuple[str, str, str]:
    """(what happened, short reason, fix) from a driver error message."""
    low = message.lower()
    unreachable = "start the server or fix --storage / " + STORAGE_ENV
    if "connection refused" in low:
        return "is unreachable", "connection refused", unreachable
    if "timeout expired" in low or "timed out" in low:
        return "is unreachable", "connection timed out", unreachable
    if (
        "could not translate host name" in low
        or "name or service not known" in low
        or "nodename nor servname" in low
        or "temporary failure in name resolution" in low
    ):
        return "is unreachable", "unknown host", unreachable
    if "no such file or directory" in low and "socket" in low:
        return "is unreachable", "no server on the local socket", unreachable
    m = re.search(r'password authentication failed for user "([^"]*)"', message)
    if m:
        return (
            "rejected the login",
            f'password authentication failed for user "{m.group(1)}"',
            "check the user and password in the URL or PGPASSWORD",
        )
    if "no password supplied" in low or "fe_sendauth" in low:
        return (
            "rejected the login",
            "no password supplied",
            "put the password in the URL or set PGPASSWORD",
        )
    m = re.search(r'role "([^"]*)" does not exist', message)
    if m:
        return (
            "rejected the login",
            f'role "{m.group(1)}" does not exist',
            "create the role (createuser) or fix the user in the URL",
        )
    m = re.search(r'database "([^"]*)" does not exist', message)
    if m:
        return (
            "is unusable",
            f'database "{m.group(1)}" does not exist',
            f"create it (createdb {m.group(1)}) or fix the database name in the URL",
        )
    if "permission denied" in low:
        return "is unusable", "permission denied", "grant the user access or choose another database"
    if "file is not a database" in low:
        return (
            "is unusable",
            "the file is not an SQLite database",
            "point --storage at an hpsearch/Optuna .db file or a new path",
        )
    if "unable to open database file" in low:
        return (
            "is unusable",
            "cannot open the SQLite file",
            "check that the folder exists and is writable",
        )
    if "database is locked" in low:
        return (
            "is busy",
            "the SQLite file is locked by another process",
            "stop the other process, or use PostgreSQL for several processes",
        )
    if "readonly database" in low or "read-only" in low:
        return "is unusable", "the database is read-only", "make the file/folder writable"
    first = next((ln.strip() for ln in message.splitlines() if ln.strip()), "unknown error")
    first = re.sub(r"^\(?[\w.]+\.\w+(Error|Exception)\)?\s*", "", first)
    if len(first) > 160:
        first = first[:157] + "..."
    return "failed", first, "check --storage / " + STORAGE_ENV


def storage_error(exc: BaseException, url: str) -> StorageError:
    """Translate a SQLAlchemy/psycopg/sqlite error into a one-line :class:`StorageError`.

    The message names the redacted URL, a short reason and the fix; no driver traceback text
    (which may quote connection parameters) is kept. Raise the result ``from None``.
    """
    if isinstance(exc, StorageError):
        return exc
    orig = getattr(exc, "orig", None) or exc
    message = str(orig) or type(orig).__name__
    what, reason, fix = _classify(message)
    reason = _scrub(reason, _secrets_of(url))
    return StorageError(f"storage {redact_url(url)} {what} ({reason}); {fix}")


# --------------------------------------------------------------------------------------------------
# Opening
# --------------------------------------------------------------------------------------------------


def _sqlite_path(url: str) -> Path | None:
    from sqlalchemy.engine import make_url

    database = make_url(url).database
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return Path(database)


def _engine_kwargs(url: str, password: str | None) -> dict[str, Any]:
    if is_postgresql(url):
        from sqlalchemy.engine import make_url

        given = set(make_url(url).query)  # options in the URL win over our defaults
        defaults = {"connect_timeout": PG_CONNECT_TIMEOUT, "application_name": "hpsearch"}
        connect_args: dict[str, Any] = {k: v for k, v in defaults.items() if k not in given}
        if password is not None:
            connect_args["password"] = password
        return {"pool_pre_ping": True, "connect_args": connect_args}
    return {"connect_args": {"timeout": SQLITE_TIMEOUT}}


def _check_reachable(
    url: str, engine_kwargs: dict[str, Any], shown: str, must_exist: bool = False
) -> None:
    """Connect once with a bare engine (no pool, no Optuna): raise StorageError if it fails.

    For SQLite a reachable file is switched to WAL journaling (persistent in the file), which lets
    the dashboard read while a worker writes.
    """
    import sqlalchemy
    from sqlalchemy.pool import NullPool

    kwargs = {k: v for k, v in engine_kwargs.items() if k != "pool_pre_ping"}
    try:
        engine = sqlalchemy.create_engine(url, poolclass=NullPool, **kwargs)
    except Exception as exc:  # noqa: BLE001 - bad driver options end up here
        raise storage_error(exc, shown) from None
    try:
        with engine.connect() as conn:
            conn.execute(sqlalchemy.text("SELECT 1"))
            if must_exist and not sqlalchemy.inspect(conn).has_table("studies"):
                raise StorageError(
                    f"storage {redact_url(shown)} holds no studies yet (no Optuna tables); "
                    "run a study first or fix --storage / " + STORAGE_ENV
                )
            if is_sqlite(url) and _sqlite_path(url) is not None:
                try:
                    conn.exec_driver_sql("PRAGMA journal_mode=WAL")
                except Exception:  # noqa: BLE001 - WAL is an optimisation (fails on some FS)
                    pass
    except StorageError:
        raise
    except Exception as exc:  # noqa: BLE001 - translate every driver error
        raise storage_error(exc, shown) from None
    finally:
        engine.dispose()


def _sqlite_fast_commits(storage: Any) -> None:
    """WAL + ``synchronous=NORMAL`` on every connection: a commit no longer waits for an fsync.

    Safe with WAL (the database cannot be corrupted; a power cut may lose the last commits), and it
    makes the per-epoch intermediate-value writes of the trial runner cheap (measured in
    benchmarks/bench_digits.py). Set per connection, hence the connect hook.
    """
    import sqlalchemy

    engine = getattr(storage, "engine", None)
    if engine is None:  # pragma: no cover - Optuna internals moved
        return

    @sqlalchemy.event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        cur = dbapi_conn.cursor()
        try:
            cur.execute("PRAGMA synchronous=NORMAL")
        finally:
            cur.close()

    engine.dispose()  # connections opened while creating the tables get the pragma on reconnect


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

    Nothing is written (no SQLite file, no tables) unless every check passes: the URL is valid,
    SQLite is not asked to serve several workers, the SQLite folder exists, and the server answers.
    With ``heartbeat`` each running trial records a heartbeat every ``heartbeat_interval`` seconds;
    a trial silent for ``grace_period`` (default ``2 * heartbeat_interval``) is marked FAIL and
    re-queued as WAITING up to ``max_retry`` times (``None``: without limit).

    ``must_exist=True`` (read-only commands: status, best, report) refuses a storage that holds no
    Optuna tables instead of creating an empty one.

    A URL without a password uses ``PGPASSWORD`` (see :func:`child_env_and_url`). A password given
    in the URL is handed to the driver directly, so ``storage.url`` never holds it.
    """
    url = normalize_storage_url(url)
    if not isinstance(workers, int) or workers < 1:
        raise StorageError(f"workers must be a positive integer, got {workers!r}")
    if heartbeat and (not isinstance(heartbeat_interval, int) or heartbeat_interval < 1):
        raise StorageError(
            f"heartbeat interval must be a positive whole number of seconds, got {heartbeat_interval!r}"
        )
    if heartbeat and grace_period is not None and (
        not isinstance(grace_period, int) or grace_period < 1
    ):
        raise StorageError(
            f"heartbeat grace period must be a positive whole number of seconds, got {grace_period!r}"
        )

    password: str | None = None
    if is_sqlite(url):
        if workers > 1:
            raise StorageError(
                f"SQLite serves one process; for {workers} workers use PostgreSQL "
                f"(postgresql+psycopg://user@host/db) in --storage or {STORAGE_ENV}, "
                f"or run one worker (storage {url})"
            )
        path = _sqlite_path(url)
        if path is not None:
            folder = path.parent
            if not folder.is_dir():
                raise StorageError(
                    f"storage {url}: folder {str(folder)!r} does not exist; create it "
                    f"(mkdir -p {folder}) or choose another path"
                )
            if path.is_dir():
                raise StorageError(
                    f"storage {url}: {str(path)!r} is a folder; name a .db file inside it"
                )
            if must_exist and not path.exists():
                raise StorageError(
                    f"storage {url}: file {str(path)!r} does not exist; run a study first or "
                    f"fix --storage / {STORAGE_ENV}"
                )
        bare = url
    else:
        bare, password = _split_password(url)

    engine_kwargs = _engine_kwargs(url, password)
    _check_reachable(bare, engine_kwargs, shown=url, must_exist=must_exist)

    import optuna
    from optuna.exceptions import ExperimentalWarning

    kwargs: dict[str, Any] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)
        if heartbeat:
            kwargs = {
                "heartbeat_interval": heartbeat_interval,
                "grace_period": grace_period,
                "heartbeat_stale_trial_callback": optuna.storages.RetryHeartbeatStaleTrialCallback(
                    max_retry=max_retry
                ),
            }
        try:
            storage = optuna.storages.RDBStorage(bare, engine_kwargs=engine_kwargs, **kwargs)
            if is_sqlite(url):
                _sqlite_fast_commits(storage)
            return storage
        except RuntimeError as exc:
            if "compatible with the table schema" in str(exc):
                raise StorageError(
                    f"storage {redact_url(url)} was written by another Optuna version "
                    f"(optuna {optuna.__version__} here); run `optuna storage upgrade --storage "
                    "URL` or install the Optuna version that made it"
                ) from None
            raise storage_error(exc, url) from None
        except Exception as exc:  # noqa: BLE001 - SQLAlchemy/psycopg errors at table creation
            import sqlalchemy.exc

            if isinstance(exc, (sqlalchemy.exc.SQLAlchemyError, OSError)) or type(
                exc
            ).__module__.startswith(("psycopg", "sqlite3")):
                raise storage_error(exc, url) from None
            raise


# --------------------------------------------------------------------------------------------------
# Artifacts
# --------------------------------------------------------------------------------------------------


def _artifact_target(
    storage_url: Any, artifacts: str | None, env: Mapping[str, str]
) -> tuple[str, Path | tuple[str, str]]:
    """("fs", folder) or ("s3", (bucket, prefix))."""
    spec = artifacts if artifacts is not None and str(artifacts).strip() else env.get(ARTIFACTS_ENV)
    if spec is not None and str(spec).strip():
        spec = str(spec).strip()
        if spec.lower().startswith("s3://"):
            rest = spec[5:]
            bucket, _, prefix = rest.partition("/")
            if not bucket:
                raise StorageError(
                    f"artifact store {spec!r} names no bucket; write s3://bucket/prefix"
                )
            return "s3", (bucket, prefix.strip("/"))
        if "://" in spec:
            scheme = spec.split("://", 1)[0]
            raise StorageError(
                f"artifact store {redact_url(spec)!r} has an unsupported scheme {scheme!r}; "
                f"give a folder path or s3://bucket/prefix (--artifacts or {ARTIFACTS_ENV})"
            )
        return "fs", Path(spec).expanduser().resolve()
    url = getattr(storage_url, "url", storage_url)  # an RDBStorage is fine too
    if url and is_sqlite(str(url)):
        path = _sqlite_path(str(url))
        if path is not None:
            return "fs", (path.expanduser().resolve().parent / ARTIFACTS_DIRNAME)
    return "fs", (Path.cwd() / ARTIFACTS_DIRNAME).resolve()


def artifact_location(
    storage_url: Any, artifacts: str | None = None, env: Mapping[str, str] = os.environ
) -> str:
    """Where trained models go, for humans: an absolute folder or ``s3://bucket/prefix``.

    Precedence: ``artifacts`` (``--artifacts`` / study file) > ``$HPSEARCH_ARTIFACTS`` > default
    (a ``hpsearch-artifacts`` folder beside the SQLite file, or ``./hpsearch-artifacts``).
    """
    kind, target = _artifact_target(storage_url, artifacts, env)
    if kind == "s3":
        bucket, prefix = target  # type: ignore[misc]
        return f"s3://{bucket}/{prefix}" if prefix else f"s3://{bucket}"
    return str(target)


def artifact_store_for(
    storage_url: Any, artifacts: str | None = None, env: Mapping[str, str] = os.environ
) -> Any:
    """The Optuna artifact store for a storage (see :func:`artifact_location` for the rules).

    A file store creates its folder on the first write, so read-only commands leave no trace.
    ``s3://bucket/prefix`` gives a :class:`optuna.artifacts.Boto3ArtifactStore` (boto3 is imported
    only then) whose keys start with ``prefix/``.
    """
    kind, target = _artifact_target(storage_url, artifacts, env)
    if kind == "s3":
        bucket, prefix = target  # type: ignore[misc]
        try:
            import boto3  # noqa: F401
        except ImportError:
            raise StorageError(
                f"artifact store s3://{bucket}/{prefix} needs boto3: pip install boto3 "
                f"(or give a folder path in --artifacts / {ARTIFACTS_ENV})"
            ) from None
        from optuna.artifacts import Boto3ArtifactStore

        store = Boto3ArtifactStore(bucket)
        return _PrefixedArtifactStore(store, prefix) if prefix else store
    folder: Path = target  # type: ignore[assignment]
    if folder.exists() and not folder.is_dir():
        raise StorageError(
            f"artifact store {str(folder)!r} is a file, not a folder; give a folder path in "
            f"--artifacts / {ARTIFACTS_ENV}"
        )
    return _lazy_fs_store(folder)


def _lazy_fs_store(folder: Path) -> Any:
    from optuna.artifacts import FileSystemArtifactStore

    class LazyFileSystemArtifactStore(FileSystemArtifactStore):
        """FileSystemArtifactStore that creates its folder on the first write."""

        def write(self, artifact_id: str, content_body: Any) -> None:
            os.makedirs(self._base_path, exist_ok=True)
            super().write(artifact_id, content_body)

        def __repr__(self) -> str:
            return f"FileSystemArtifactStore({str(self._base_path)!r})"

    return LazyFileSystemArtifactStore(folder)


class _PrefixedArtifactStore:
    """Wrap an artifact store so that every artifact id is stored under ``prefix/``."""

    def __init__(self, inner: Any, prefix: str) -> None:
        self.inner = inner
        self.prefix = prefix.strip("/")

    def _key(self, artifact_id: str) -> str:
        return f"{self.prefix}/{artifact_id}"

    def open_reader(self, artifact_id: str) -> Any:
        return self.inner.open_reader(self._key(artifact_id))

    def write(self, artifact_id: str, content_body: Any) -> None:
        self.inner.write(self._key(artifact_id), content_body)

    def remove(self, artifact_id: str) -> None:
        self.inner.remove(self._key(artifact_id))

    def __repr__(self) -> str:
        return f"PrefixedArtifactStore({self.inner!r}, {self.prefix!r})"
