"""Whether a connection pooler (PgBouncer, pgcat, a cloud proxy) sits between hpsearch and PostgreSQL.

A pooler multiplexes its clients over fewer server sessions, so it cannot hand a client the identity
of one server session at login: PostgreSQL tells a client its session's process id in the login's
``BackendKeyData`` message (libpq ``PQbackendPID``, psycopg ``conn.info.backend_pid``), and a pooler
sends an id of its own making instead (PgBouncer: random bytes, its key for cancel requests). So the
answer is a comparison, not a guess from the URL: the process id the connection was told at login
against ``pg_backend_pid()``, the session that actually runs its statements. Directly they are the
same number; through a pooler they differ (equal by chance with odds of one in 2**32).

Asked once per engine (one round trip), then remembered for the engine's life.
"""

from __future__ import annotations

import threading
import weakref
from typing import Any

from hpsearch.storage.urls import is_postgresql

__all__ = ["behind_pooler"]

_KNOWN: weakref.WeakKeyDictionary[Any, bool] = weakref.WeakKeyDictionary()
_GUARD = threading.Lock()


def behind_pooler(storage: Any) -> bool:
    """True when the PostgreSQL sessions of ``storage`` (Optuna's ``RDBStorage``) go through a pooler
    (see the module docstring); False directly and for SQLite. Driver errors propagate (the caller's
    retry handles a lost connection); nothing is remembered until one check succeeds."""
    engine = storage.engine
    if not is_postgresql(str(engine.url)):
        return False
    with _GUARD:
        known = _KNOWN.get(engine)
    if known is not None:
        return known
    with engine.connect() as conn:
        told = conn.connection.driver_connection.info.backend_pid
        real = conn.exec_driver_sql("SELECT pg_backend_pid()").scalar()
        conn.rollback()
    pooled = int(told) != int(real)
    with _GUARD:
        _KNOWN[engine] = pooled
    return pooled
