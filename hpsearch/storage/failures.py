"""Driver errors translated into one-line :class:`~hpsearch.errors.StorageError` subclasses.

Decided by exception class, PostgreSQL SQLSTATE and SQLite result code, never by message text (the
texts change between versions and server locales). One gap needs more than that: libpq reports a
failed *connection attempt* without its SQLSTATE (psycopg's ``OperationalError.sqlstate`` is None
for a wrong password, a missing database and a refused connection alike). For those,
:func:`storage_error` asks the network and libpq itself, on the error path only:

1. a TCP (or unix socket) connect to the server's address: refused, timed out, unknown host;
2. ``PQping``: did a PostgreSQL server answer at all, or is it starting up / shutting down;
3. libpq's ``PQconnectionNeedsPassword`` / ``PQconnectionUsedPassword`` on the failed connection;
4. a login to the maintenance database (``postgres``, else ``template1``) with the same user: if
   that works the credentials are right and the catalogue says whether the database is missing or
   closed to the user; if not, the login itself was refused.
"""

from __future__ import annotations

import getpass
import os
import socket
import sqlite3
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from hpsearch.errors import (
    TRANSIENT_STORAGE_ERRORS,
    StorageBusy,
    StorageError,
    StorageRejected,
    StorageUnreachable,
    StorageUnusable,
)
from hpsearch.storage.urls import STORAGE_ENV, redact_url, scrub, secrets_of

__all__ = ["PG_CONNECT_TIMEOUT", "storage_error", "is_connection_error", "is_lock_timeout", "sqlite_header_ok"]

#: Seconds a PostgreSQL connection attempt may take before the storage counts as unreachable.
PG_CONNECT_TIMEOUT = 10
#: Seconds the diagnosis waits for a TCP handshake after libpq already failed.
_PROBE_TIMEOUT = 3.0

_WHAT: dict[type[StorageError], str] = {
    StorageUnreachable: "is unreachable",
    StorageBusy: "is busy",
    StorageRejected: "rejected the login",
    StorageUnusable: "is unusable",
    StorageError: "failed",
}
_UNREACHABLE_FIX = f"start the server or fix --storage / {STORAGE_ENV}"
_RETRY_FIX = "run it again; several workers starting at once settle after a retry"


@dataclass(frozen=True)
class _Verdict:
    kind: type[StorageError]
    reason: str
    fix: str


# PostgreSQL SQLSTATEs of errors raised on an open connection (see PostgreSQL's errcodes appendix)
_SQLSTATES: dict[str, _Verdict] = {
    "42501": _Verdict(StorageUnusable, "permission denied",
                      "grant the user CREATE on schema public (or the database) or choose another database"),
    "25006": _Verdict(StorageUnusable, "the server is read-only (a standby)", "point --storage at the primary server"),
    "53100": _Verdict(StorageUnusable, "the server's disk is full", "free space on the database server"),
    "53300": _Verdict(StorageBusy, "too many connections", "stop other clients or raise max_connections"),
    "57P01": _Verdict(StorageUnreachable, "the server closed the connection (shutdown)", _UNREACHABLE_FIX),
    "57P02": _Verdict(StorageUnreachable, "the server closed the connection (crash)", _UNREACHABLE_FIX),
    "57P03": _Verdict(StorageUnreachable, "the server is starting up or shutting down", _UNREACHABLE_FIX),
    "40001": _Verdict(StorageBusy, "a concurrent write conflicted (serialization failure)", _RETRY_FIX),
    "40P01": _Verdict(StorageBusy, "a concurrent write conflicted (deadlock)", _RETRY_FIX),
    "55P03": _Verdict(StorageBusy, "a lock is held by another process", _RETRY_FIX),
    # several processes creating Optuna's tables at the same moment
    "23505": _Verdict(StorageBusy, "another process wrote the same rows at the same moment", _RETRY_FIX),
    "42P07": _Verdict(StorageBusy, "another process created the same tables at the same moment", _RETRY_FIX),
    "42710": _Verdict(StorageBusy, "another process created the same tables at the same moment", _RETRY_FIX),
}

# SQLite primary result codes (stable C API constants; the low byte of an extended code)
_SQLITE_CODES: dict[int, _Verdict] = {
    5: _Verdict(StorageBusy, "the SQLite file is locked by another process",
                "stop the other process, or use PostgreSQL for several processes"),  # SQLITE_BUSY
    6: _Verdict(StorageBusy, "the SQLite file is locked by another connection",
                "stop the other process, or use PostgreSQL for several processes"),  # SQLITE_LOCKED
    8: _Verdict(StorageUnusable, "the database is read-only", "make the file/folder writable"),  # SQLITE_READONLY
    10: _Verdict(StorageUnusable, "a disk I/O error", "check the disk and the file"),  # SQLITE_IOERR
    11: _Verdict(StorageUnusable, "the SQLite file is damaged", "restore it or choose a new path"),  # SQLITE_CORRUPT
    13: _Verdict(StorageUnusable, "the disk is full", "free space or choose another path"),  # SQLITE_FULL
    14: _Verdict(StorageUnusable, "cannot open the SQLite file",
                 "check that the folder exists and is writable"),  # SQLITE_CANTOPEN
    26: _Verdict(StorageUnusable, "the file is not an SQLite database",
                 "point --storage at an hpsearch/Optuna .db file or a new path"),  # SQLITE_NOTADB
}
NOT_SQLITE = _SQLITE_CODES[26]
_SQLITE_MAGIC = b"SQLite format 3\x00"


def sqlite_header_ok(head: bytes) -> bool:
    """Do the first bytes of a file look like an SQLite database (an empty file counts as new)?"""
    return not head or head.startswith(_SQLITE_MAGIC[: len(head)])


def storage_error(exc: BaseException, url: str, *, connecting: bool = False) -> StorageError:
    """Translate a SQLAlchemy / psycopg / sqlite3 error into a one-line :class:`StorageError`.

    The message names the redacted URL, what happened, a short reason and the fix; no driver text
    that may quote connection parameters is kept. ``connecting``: the error came from a first
    connection attempt (enables the login / database diagnosis). Raise the result ``from None``.
    """
    if isinstance(exc, StorageError):
        return exc
    verdict = _classify(exc, url, connecting)
    reason = scrub(verdict.reason, secrets_of(url))
    return verdict.kind(f"storage {redact_url(url)} {_WHAT[verdict.kind]} ({reason}); {verdict.fix}")


def is_connection_error(exc: BaseException) -> bool:
    """A lost, refused or momentarily blocked database connection: worth retrying, not a bug.

    Optuna wraps some driver errors (``StorageInternalError``), so the causes are searched too. An
    already translated :data:`~hpsearch.errors.TRANSIENT_STORAGE_ERRORS` error counts as well.
    """
    sa_exc = sys.modules.get("sqlalchemy.exc")  # not imported yet: no SQLAlchemy error can exist
    for cur in _chain(exc):
        if isinstance(cur, StorageError):  # already translated: its class is the verdict
            return isinstance(cur, TRANSIENT_STORAGE_ERRORS)
        if isinstance(cur, ConnectionError):
            return True
        if sa_exc is not None and (
            isinstance(cur, sa_exc.DisconnectionError)
            or (isinstance(cur, sa_exc.DBAPIError) and cur.connection_invalidated)
        ):
            return True
        if isinstance(cur, _drivers()):
            verdict = _driver_verdict(cur)
            return verdict.kind in TRANSIENT_STORAGE_ERRORS if verdict else _no_server_error(cur)
    return False


def is_lock_timeout(exc: BaseException) -> bool:
    """PostgreSQL gave up waiting for a lock (``lock_timeout``): SQLSTATE 55P03 lock_not_available,
    told by psycopg's exception class, not by the message."""
    psycopg = sys.modules.get("psycopg")
    if psycopg is None:
        return False
    return any(isinstance(cur, psycopg.errors.LockNotAvailable) for cur in _chain(exc))


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and the exceptions behind it (driver error, cause, else context), at most 8 deep."""
    cur: BaseException | None = exc
    for _ in range(8):
        if cur is None:
            return
        yield cur
        orig = getattr(cur, "orig", None)  # SQLAlchemy's DBAPIError: the driver's exception
        if isinstance(orig, BaseException) and orig is not cur.__cause__:
            yield orig
        # the context too, even when suppressed: Keras re-raises callback errors `from None`
        cur = cur.__cause__ or cur.__context__


def _drivers() -> tuple[type[BaseException], ...]:
    psycopg = sys.modules.get("psycopg")
    return (sqlite3.Error, psycopg.Error) if psycopg is not None else (sqlite3.Error,)


def _driver_verdict(orig: BaseException) -> _Verdict | None:
    """What a driver error says by itself (SQLSTATE, SQLite result code); None when it says nothing."""
    if isinstance(orig, sqlite3.Error):
        code = getattr(orig, "sqlite_errorcode", None)  # Python 3.11+
        return _SQLITE_CODES.get(code & 0xFF) if code is not None else None
    state: str | None = getattr(orig, "sqlstate", None)  # a psycopg error
    if state is None:
        return None
    if state in _SQLSTATES:
        return _SQLSTATES[state]
    if state.startswith("08"):  # connection exception class
        return _Verdict(StorageUnreachable, "the connection failed", _UNREACHABLE_FIX)
    return None


def _no_server_error(orig: BaseException) -> bool:
    """A driver error with no server verdict behind it: libpq could not connect or lost the line
    (psycopg without SQLSTATE); on Python 3.10, any SQLite OperationalError (no result codes)."""
    psycopg = sys.modules.get("psycopg")
    if psycopg is not None and isinstance(orig, psycopg.Error):
        return orig.sqlstate is None and isinstance(orig, (psycopg.OperationalError, psycopg.InterfaceError))
    return isinstance(orig, sqlite3.OperationalError) and getattr(orig, "sqlite_errorcode", None) is None


def _classify(exc: BaseException, url: str, connecting: bool) -> _Verdict:
    drivers = _drivers()
    wrapped = getattr(exc, "orig", None)  # what SQLAlchemy wrapped, driver error or not
    fallback = wrapped if isinstance(wrapped, BaseException) else exc
    orig = next((e for e in _chain(exc) if isinstance(e, drivers)), fallback)
    verdict = _driver_verdict(orig) if isinstance(orig, drivers) else None
    if verdict is not None:
        return verdict
    psycopg = sys.modules.get("psycopg")
    if psycopg is not None and isinstance(orig, psycopg.OperationalError) and orig.sqlstate is None:
        return _diagnose_pg(orig, url, connecting)
    if is_connection_error(exc):
        return _Verdict(StorageUnreachable, "connection lost", _UNREACHABLE_FIX)
    return _Verdict(StorageError, _first_line(orig), f"check --storage / {STORAGE_ENV}")


def _first_line(exc: BaseException) -> str:
    """The driver's first line, for an error no rule knows: shown (scrubbed), never matched."""
    text = next((ln.strip() for ln in str(exc).splitlines() if ln.strip()), "") or type(exc).__name__
    return text if len(text) <= 160 else text[:157] + "..."


# --------------------------------------------------------------------------------------------------
# PostgreSQL: why did the connection attempt fail?
# --------------------------------------------------------------------------------------------------


def _pg_params(url: str) -> dict[str, Any]:
    """libpq keyword arguments for ``url`` (the password as given; else libpq reads PGPASSWORD)."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    params: dict[str, Any] = {
        k: (v if isinstance(v, str) else v[-1]) for k, v in parsed.query.items()
    }
    for key, value in (("host", parsed.host), ("port", parsed.port), ("user", parsed.username),
                       ("password", parsed.password), ("dbname", parsed.database)):
        if value is not None:
            params[key] = str(value)
    params.setdefault("connect_timeout", str(PG_CONNECT_TIMEOUT))
    return params


def _diagnose_pg(orig: Any, url: str, connecting: bool) -> _Verdict:
    import psycopg
    from psycopg.conninfo import make_conninfo

    params = _pg_params(url)
    unreachable = _network_reason(params, os.environ)
    if unreachable is not None:
        return _Verdict(StorageUnreachable, unreachable, _UNREACHABLE_FIX)
    ping = psycopg.pq.PGconn.ping(make_conninfo("", **params).encode())
    if ping == psycopg.pq.Ping.REJECT:
        return _Verdict(StorageUnreachable, "the server is starting up or shutting down", _UNREACHABLE_FIX)
    if ping != psycopg.pq.Ping.OK:
        where = f"{params.get('host', 'the local socket')}:{params.get('port', 5432)}"
        return _Verdict(StorageUnreachable, f"no PostgreSQL server answered at {where}", _UNREACHABLE_FIX)
    if not connecting:
        return _Verdict(StorageUnreachable, "connection lost", _UNREACHABLE_FIX)
    return _diagnose_login(getattr(orig, "pgconn", None), params)


def _network_reason(params: Mapping[str, Any], env: Mapping[str, str]) -> str | None:
    """Why the server's address cannot be reached, from the socket error class; None if it can."""
    given = params.get("host") or env.get("PGHOST")
    if not given:  # libpq's built-in default socket folder: left to PQping
        return None
    host = str(given).split(",")[0]
    port = int(str(params.get("port") or env.get("PGPORT") or 5432).split(",")[0])
    try:
        if host.startswith("/"):
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(_PROBE_TIMEOUT)
                try:
                    sock.connect(f"{host}/.s.PGSQL.{port}")
                except FileNotFoundError:
                    return "no server on the local socket"
        else:
            socket.create_connection((host, port), timeout=_PROBE_TIMEOUT).close()
    except socket.gaierror:
        return "unknown host"
    except ConnectionRefusedError:
        return "connection refused"
    except TimeoutError:
        return "connection timed out"
    except OSError as exc:
        return os.strerror(exc.errno).lower() if exc.errno else type(exc).__name__
    return None


def _diagnose_login(pgconn: Any, params: dict[str, Any]) -> _Verdict:
    """The server answered and refused: the login (user, password) or the database?"""
    import psycopg

    if pgconn is not None and pgconn.needs_password:
        return _Verdict(StorageRejected, "no password supplied", "put the password in the URL or set PGPASSWORD")
    user = params.get("user") or os.environ.get("PGUSER") or getpass.getuser()
    dbname = params.get("dbname") or os.environ.get("PGDATABASE") or user
    for maintenance in ("postgres", "template1"):
        if maintenance == dbname:
            continue
        try:
            with psycopg.connect(**{**params, "dbname": maintenance}) as conn:
                row = conn.execute(
                    "SELECT has_database_privilege(datname, 'CONNECT') FROM pg_database WHERE datname = %s",
                    [dbname],
                ).fetchone()
        except psycopg.Error:
            continue
        if row is None:
            return _Verdict(StorageUnusable, f'database "{dbname}" does not exist',
                            f"create it (createdb {dbname}) or fix the database name in the URL")
        if not row[0]:
            return _Verdict(StorageUnusable, f'permission denied for database "{dbname}"',
                            f'grant it (GRANT CONNECT ON DATABASE "{dbname}" TO "{user}") or choose another database')
        return _Verdict(StorageUnusable, f'the server refused a connection to database "{dbname}"',
                        "check pg_hba.conf and the database's connection limit")
    if pgconn is not None and pgconn.used_password:
        return _Verdict(StorageRejected, f'password authentication failed for user "{user}"',
                        "check the user and password in the URL or PGPASSWORD")
    return _Verdict(StorageRejected, f'no login for user "{user}": no such role, or pg_hba.conf refuses it',
                    "create the role (createuser) or fix the user in the URL")
