"""Storage URLs, opening Optuna's RDB storage, error translation and credential redaction.

Optuna's RDB storage is the single record of a study (DESIGN.md section 1). This package decides
*which* storage a run uses, checks that it can serve the run **before anything is written**, opens it
with the options that keep workers alive, translates driver errors into the
:class:`~hpsearch.errors.StorageError` tree by class / SQLSTATE, and keeps passwords out of logs,
error messages and process lists (DESIGN.md section 5).

- :mod:`hpsearch.storage.urls`: URLs, precedence, ``redact_url``, ``scrub`` / ``secrets_of``.
- :mod:`hpsearch.storage.failures`: ``storage_error``, ``is_connection_error``.
- :mod:`hpsearch.storage.rdb`: ``open_storage``.
- :mod:`hpsearch.storage.pooler`: ``behind_pooler`` (is a pooler such as PgBouncer in front).

- :mod:`hpsearch.storage.artifacts`: the artifact store (trained models, curves).
- :mod:`hpsearch.storage.keep`: the keep-best-K rule (which finishing trial stores its model, which
  models are deleted).
- :mod:`hpsearch.storage.queries`: the read side of a stored study.

Heavy imports (optuna, SQLAlchemy, psycopg) happen inside the functions so that ``hpsearch --help``
stays fast.

May import: the kernel, :mod:`hpsearch.spec`, :mod:`hpsearch.data` (the fitted preprocessing saved
beside a model).
"""

from __future__ import annotations

from hpsearch.storage.failures import PG_CONNECT_TIMEOUT, is_connection_error, is_lock_timeout, storage_error
from hpsearch.storage.pooler import behind_pooler
from hpsearch.storage.rdb import SQLITE_TIMEOUT, open_storage
from hpsearch.storage.urls import (
    DEFAULT_STORAGE,
    POSTGRES_DRIVER,
    STORAGE_ENV,
    child_env_and_url,
    is_postgresql,
    is_sqlite,
    normalize_storage_url,
    redact_url,
    resolve_storage_url,
    scrub,
    secrets_of,
    split_password,
    sqlite_path,
)

__all__ = [
    "DEFAULT_STORAGE",
    "STORAGE_ENV",
    "POSTGRES_DRIVER",
    "PG_CONNECT_TIMEOUT",
    "SQLITE_TIMEOUT",
    "resolve_storage_url",
    "normalize_storage_url",
    "is_sqlite",
    "is_postgresql",
    "redact_url",
    "scrub",
    "secrets_of",
    "split_password",
    "sqlite_path",
    "child_env_and_url",
    "storage_error",
    "is_connection_error",
    "is_lock_timeout",
    "open_storage",
    "behind_pooler",
]
