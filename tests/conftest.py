"""Shared pytest fixtures. Each owner keeps their fixtures in their own marked section."""

from __future__ import annotations

import os
import sys
from pathlib import Path

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
# Test order (owner: CI): xdist (--dist loadfile) hands files to its workers in collection order, so
# the heaviest files, collected last alphabetically (tests/workers), made a tail of one busy worker;
# they go first (longest first, as measured in CI's --durations), the rest keep their order.
# ==================================================================================================

HEAVY_FIRST = (
    "tests/workers/test_faults.py", "tests/study/test_combinations_sklearn.py", "tests/packing/test_packing_cv.py",
    "tests/workers/test_scaleout.py", "tests/packing/test_packing_backends.py", "tests/study/test_batchfind.py",
    "tests/packing/test_pack_shrink.py", "tests/packing/test_reproducible.py", "tests/workers/", "tests/deploy/",
    "tests/packing/", "tests/study/", "tests/search/", "tests/test_architecture.py",
)


def _heaviness(item: pytest.Item) -> int:
    path = item.nodeid.split("::")[0]
    return next((i for i, prefix in enumerate(HEAVY_FIRST) if path.startswith(prefix)), len(HEAVY_FIRST))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    items.sort(key=_heaviness)  # stable: a file's tests keep their order


# ==================================================================================================
# Child processes (owner: workers): what every test that starts hpsearch workers sets for them
# ==================================================================================================

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def worker_process_env(monkeypatch):
    """Environment of the worker processes a test starts: this tree's hpsearch on PYTHONPATH, quiet
    TensorFlow, no storage or password taken from the caller's environment."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "3")
    for name in ("HPSEARCH_STORAGE", "PGPASSWORD"):
        monkeypatch.delenv(name, raising=False)


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


# ==================================================================================================
# Cache and S3 fixtures (owner: s3folders)
#   (autouse, session) HPSEARCH_CACHE points to a session tmp folder: no test writes ~/.cache/hpsearch
#   s3_server   session-wide S3-compatible server (moto's server mode on 127.0.0.1, a free port)
#   s3_bucket   a fresh bucket per test, with AWS_ENDPOINT_URL / credentials set for this process and
#               its children, and a fresh HPSEARCH_CACHE; yields (boto3 client, bucket name)
# ==================================================================================================


@pytest.fixture(scope="session", autouse=True)
def _hpsearch_cache(tmp_path_factory):
    import os

    old = os.environ.get("HPSEARCH_CACHE")
    os.environ["HPSEARCH_CACHE"] = str(tmp_path_factory.mktemp("hpsearch-cache"))
    yield
    if old is None:
        os.environ.pop("HPSEARCH_CACHE", None)
    else:
        os.environ["HPSEARCH_CACHE"] = old


@pytest.fixture(scope="session")
def s3_server():
    """moto's S3 server in a thread of this process; its URL (http://127.0.0.1:PORT)."""
    import logging
    import socket

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # not one log line per request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture
def s3_bucket(s3_server, monkeypatch, tmp_path, request):
    import re

    import boto3

    for key, value in {"AWS_ENDPOINT_URL": s3_server, "AWS_ACCESS_KEY_ID": "testing",
                       "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
                       "HPSEARCH_CACHE": str(tmp_path / "cache")}.items():
        monkeypatch.setenv(key, value)
    for key in ("AWS_PROFILE", "AWS_ENDPOINT_URL_S3", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(key, raising=False)
    client = boto3.client("s3")
    name = re.sub(r"[^a-z0-9-]", "-", request.node.name.lower())[:50].strip("-") + "-b"
    client.create_bucket(Bucket=name)
    return client, name


# ==================================================================================================
# End of cache and S3 fixtures
# ==================================================================================================
