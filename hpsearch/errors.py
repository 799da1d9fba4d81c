"""The hpsearch exception tree.

Every user mistake is raised as a :class:`UserError` subclass whose message is one line naming the
field or file and the fix; the CLI prints it on stderr and exits with code 2 (no traceback)::

    HPSearchError
    ├── UserError                   exit 2, one line
    │   ├── ConfigError             the study file (or a Python-side search space); a ValueError
    │   ├── DataError               the data: missing file, NaN, one class, too few rows
    │   └── StorageError            a storage URL or artifact store hpsearch cannot use
    │       ├── StorageUnreachable  no answer: refused, timed out, unknown host, connection lost
    │       ├── StorageBusy         locked or a concurrent write: the same call may pass later
    │       ├── StorageRejected     the server refused the login (user, password, pg_hba.conf)
    │       └── StorageUnusable     it answered but cannot serve: no database, no permission,
    │                               not an SQLite file, read-only, another Optuna schema
    └── StudyFailedError            exit 1: every candidate failed, or too many in a row

Callers decide by class, never by the message: a worker retries :data:`TRANSIENT_STORAGE_ERRORS`
and stops on any other :class:`StorageError`.
"""

from __future__ import annotations

__all__ = [
    "HPSearchError",
    "UserError",
    "ConfigError",
    "DataError",
    "StorageError",
    "StorageUnreachable",
    "StorageBusy",
    "StorageRejected",
    "StorageUnusable",
    "TRANSIENT_STORAGE_ERRORS",
    "StudyFailedError",
]


class HPSearchError(Exception):
    """Base of all hpsearch errors."""


class UserError(HPSearchError):
    """A mistake the user can fix: bad study file, bad data, bad storage URL, bad flag."""

    exit_code = 2


class ConfigError(UserError, ValueError):
    """The study file (or a Python-side search space) is invalid.

    Also a ``ValueError``: the estimators raise it where scikeras raised ``ValueError`` (an
    unknown builder, a bad builder argument), so ``except ValueError`` keeps working."""


class DataError(UserError):
    """The data cannot be used: missing file, empty, NaN/inf, one class, too few rows."""


class StorageError(UserError):
    """The storage URL is invalid or unreachable, or it cannot serve the requested use."""


class StorageUnreachable(StorageError):
    """No database answered (refused, timed out, unknown host) or the connection was lost."""


class StorageBusy(StorageError):
    """The database answered but is momentarily blocked: an SQLite lock, a concurrent write."""


class StorageRejected(StorageError):
    """The database server refused the login: wrong password, unknown role, no pg_hba.conf entry."""


class StorageUnusable(StorageError):
    """The database answered but cannot serve this use (missing, no permission, wrong format)."""


#: the storage errors worth retrying for a while (a restarting server, a lock held by another writer)
TRANSIENT_STORAGE_ERRORS: tuple[type[StorageError], ...] = (StorageUnreachable, StorageBusy)


class StudyFailedError(HPSearchError):
    """The study stopped because every candidate failed or too many failed in a row."""

    exit_code = 1
