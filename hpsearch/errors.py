"""The hpsearch exception tree.

Every user mistake is raised as a :class:`UserError` subclass whose message is one line naming the
field or file and the fix; the CLI prints it on stderr and exits with code 2 (no traceback).
"""

from __future__ import annotations

__all__ = [
    "HPSearchError",
    "UserError",
    "ConfigError",
    "DataError",
    "StorageError",
    "StudyFailedError",
]


class HPSearchError(Exception):
    """Base of all hpsearch errors."""


class UserError(HPSearchError):
    """A mistake the user can fix: bad study file, bad data, bad storage URL, bad flag."""

    exit_code = 2


class ConfigError(UserError):
    """The study file (or a Python-side search space) is invalid."""


class DataError(UserError):
    """The data cannot be used: missing file, empty, NaN/inf, one class, too few rows."""


class StorageError(UserError):
    """The storage URL is invalid or unreachable, or it cannot serve the requested use."""


class StudyFailedError(HPSearchError):
    """The study stopped because every candidate failed or too many failed in a row."""

    exit_code = 1
