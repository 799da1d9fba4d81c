"""Storage URLs: validation, precedence, and keeping passwords out of every text hpsearch shows.

Supported URLs::

    sqlite:///relative/path.db        one process only (the default: sqlite:///hpsearch.db)
    sqlite:////absolute/path.db
    postgresql+psycopg://user:pass@host:5432/db   (postgresql:// and postgres:// are normalised)

The one password scrubber lives here (:func:`secrets_of` + :func:`scrub`): error messages, worker
log lines and anything else that may quote a connection string go through it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

from hpsearch.errors import StorageError

if TYPE_CHECKING:
    from sqlalchemy.engine import URL

__all__ = [
    "DEFAULT_STORAGE",
    "STORAGE_ENV",
    "POSTGRES_DRIVER",
    "resolve_storage_url",
    "normalize_storage_url",
    "is_sqlite",
    "is_postgresql",
    "redact_url",
    "scrub",
    "secrets_of",
    "split_password",
    "child_env_and_url",
    "sqlite_path",
]

DEFAULT_STORAGE = "sqlite:///hpsearch.db"
STORAGE_ENV = "HPSEARCH_STORAGE"
POSTGRES_DRIVER = "postgresql+psycopg"

FIX_URL = (
    "use sqlite:///path/to/file.db or postgresql+psycopg://user@host:5432/db "
    f"in --storage, {STORAGE_ENV} or the study file's storage:"
)
_PG_SCHEMES = {"postgresql", "postgres", "postgresql+psycopg", "postgres+psycopg"}
_QUERY_SECRET = re.compile(r"(?i)([?&](?:password|passwd|pwd)=)[^&#]*")


def redact_url(url: object) -> str:
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


def scrub(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every secret replaced by ``***``, raw and URL-encoded (longest form first)."""
    forms = {form for s in secrets if s for form in (s, quote(s, safe=""), quote(s))}
    for form in sorted(forms, key=len, reverse=True):
        text = text.replace(form, "***")
    return text


def secrets_of(url: str, env: Mapping[str, str] = os.environ) -> list[str]:
    """The passwords that may show up in texts about ``url``: its own and ``$PGPASSWORD``.

    Never raises: a URL that cannot be parsed yields only what the environment holds.
    """
    secrets: list[str] = []
    try:
        parsed = _parse(url)
    except StorageError:
        parsed = None
    if parsed is not None:
        if parsed.password:
            secrets.append(str(parsed.password))
        given = parsed.query.get("password")
        if given:
            secrets.append(given if isinstance(given, str) else given[-1])
    if env.get("PGPASSWORD"):
        secrets.append(env["PGPASSWORD"])
    return secrets


def _parse(url: str) -> URL:
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url)
    except (ArgumentError, ValueError, TypeError):
        raise StorageError(
            f"storage {redact_url(url)!r} is not a valid storage URL; {FIX_URL}"
        ) from None  # the parser's text may quote the password


def normalize_storage_url(url: str) -> str:
    """Validate ``url`` and return it in canonical form (PostgreSQL on the psycopg 3 driver).

    Raises :class:`StorageError` (one line, password redacted) for anything hpsearch cannot use.
    """
    if not isinstance(url, str) or not url.strip():
        raise StorageError(f"storage URL is empty; {FIX_URL}")
    url = url.strip()
    if "://" not in url:
        hint = f" (for a file write sqlite:///{url})" if url.endswith((".db", ".sqlite", ".sqlite3")) else ""
        raise StorageError(f"storage {redact_url(url)!r} is not a URL{hint}; {FIX_URL}")
    parsed = _parse(url)
    scheme = parsed.drivername.lower()
    if scheme == "sqlite":
        if not parsed.database:
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
        return parsed.set(drivername=POSTGRES_DRIVER).render_as_string(hide_password=False)
    if scheme.startswith(("postgresql+", "postgres+")):
        raise StorageError(
            f"storage {redact_url(url)!r} uses the driver {scheme.split('+', 1)[1]!r}; hpsearch "
            f"ships psycopg 3: write {POSTGRES_DRIVER}://... (or plain postgresql://...)"
        )
    raise StorageError(f"storage {redact_url(url)!r} has an unsupported scheme {scheme!r}; {FIX_URL}")


def is_sqlite(url: str) -> bool:
    return str(url).strip().lower().startswith("sqlite:")


def is_postgresql(url: str) -> bool:
    return str(url).strip().lower().split("://", 1)[0] in _PG_SCHEMES


def resolve_storage_url(cli: str | None, config: str | None, env: Mapping[str, str] = os.environ) -> str:
    """The storage URL for a run: ``--storage`` > ``$HPSEARCH_STORAGE`` > study file > default.

    Empty strings count as unset. The result is validated and normalised (see
    :func:`normalize_storage_url`).
    """
    for candidate in (cli, env.get(STORAGE_ENV), config):
        if candidate is not None and str(candidate).strip():
            return normalize_storage_url(str(candidate))
    return DEFAULT_STORAGE


def split_password(url: str) -> tuple[str, str | None]:
    """(URL without password, password or None) for a normalised URL (``?password=`` counts too)."""
    from sqlalchemy.engine import URL as _URL

    parsed = _parse(url)
    password: str | None = parsed.password if parsed.password is None else str(parsed.password)
    query = dict(parsed.query)
    given = query.pop("password", None)
    if password is None and given is not None:
        password = given if isinstance(given, str) else given[-1]
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
    return bare.render_as_string(hide_password=False), password


def child_env_and_url(url: str) -> tuple[str, dict[str, str]]:
    """Split ``url`` for a spawned worker: (URL without password, environment additions).

    The password travels in ``PGPASSWORD`` (honoured by libpq/psycopg), so
    ``hpsearch worker --storage URL`` never shows it in the process list. SQLite URLs and URLs
    without a password come back unchanged with no additions.
    """
    url = normalize_storage_url(url)
    if not is_postgresql(url):
        return url, {}
    bare, password = split_password(url)
    if password is None:
        return url, {}
    return bare, {"PGPASSWORD": password}


def sqlite_path(url: str) -> Path | None:
    """The file of an SQLite URL (None: in-memory or a ``file:`` URI)."""
    database = _parse(url).database
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return Path(database)
