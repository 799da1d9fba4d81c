"""Shared pytest fixtures. Each owner keeps their fixtures in their own marked section."""

from __future__ import annotations

import sys

import pytest

# ==================================================================================================
# System packages (owner: scaleout; see tests/syspkgs.py): every Debian package the suite needs is
# installed once, by the xdist controller (or the only process without xdist), in ONE apt-get call,
# before any worker starts. Fixtures keep a fallback (tests/syspkgs.ensure) that then finds nothing
# to do. Add a package to tests/syspkgs.PACKAGES, never an apt-get call in a test.
# ==================================================================================================

try:
    from tests import syspkgs
except ImportError:  # pragma: no cover - rootdir not on sys.path
    import syspkgs  # type: ignore[no-redef]


def pytest_configure(config):
    if hasattr(config, "workerinput"):  # an xdist worker: the controller installed everything
        return
    try:
        installed = syspkgs.ensure()
    except syspkgs.AptFailed as exc:  # the tests that need a package fail with their own message
        print(f"hpsearch tests: could not install system packages: {exc}", file=sys.stderr)
        return
    if installed:
        print(f"hpsearch tests: installed {' '.join(installed)}", file=sys.stderr)


# ==================================================================================================
# Storage fixtures (owner: storage; see tests/pg.py)
#   postgres_server  session-wide real PostgreSQL server (FAILS, never skips, when unavailable)
#   postgres_url     a fresh, empty database per test: postgresql+psycopg://hps:<pw>@127.0.0.1:P/t_x
#   sqlite_url       sqlite:///<tmp_path>/hpsearch.db (file not created)
#   storage_url      parametrized over ["sqlite", "postgresql"]: run one contract on both backends
# ==================================================================================================

try:  # tests/ may or may not become a package
    from tests.pg import PostgresServer, PostgresUnavailable
except ImportError:  # pragma: no cover - rootdir not on sys.path
    from pg import PostgresServer, PostgresUnavailable  # type: ignore[no-redef]


@pytest.fixture(scope="session")
def postgres_server():
    """A PostgreSQL server for the whole session (stopped with -m immediate and deleted after)."""
    try:
        server = PostgresServer().start()
    except PostgresUnavailable as exc:
        pytest.fail(f"PostgreSQL is required for this test and could not be started: {exc}")
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def postgres_url(postgres_server) -> str:
    """URL of a new empty database owned by role ``hps`` (password in the URL, URL-encoded)."""
    return postgres_server.url(postgres_server.create_database())


@pytest.fixture
def sqlite_url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'hpsearch.db'}"


@pytest.fixture(params=["sqlite", "postgresql"])
def storage_url(request) -> str:
    """Each storage backend in turn; PostgreSQL starts only when such a test is selected."""
    if request.param == "sqlite":
        return request.getfixturevalue("sqlite_url")
    return request.getfixturevalue("postgres_url")


# ==================================================================================================
# End of storage fixtures
# ==================================================================================================
