"""Image folders in S3: ``data.source: s3://bucket/prefix/`` (and ``data.valid`` / ``data.test``), one
"subfolder" of images per class under the prefix, as for a local folder.

The prefix is listed with boto3 (endpoint, region and credentials from the standard AWS settings:
``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY``, ``AWS_PROFILE``, ...), and its
objects are fetched into hpsearch's cache folder, ``CACHE/s3/BUCKET/PREFIX/``
(:func:`hpsearch.data.cache.cache_dir`: ``$HPSEARCH_CACHE``, else ``~/.cache/hpsearch``), where the
image source reads them. The copy mirrors the prefix: an object whose ETag, size or local file
changed is fetched again, a file whose object is gone is removed, the others are kept (a second
start downloads nothing). Each file is written through a temporary file and a rename, so a failed
fetch leaves no half-written image. Keys with a hidden part (``.DS_Store``) are left out, as they are
from a folder's file list.

The copy is then fingerprinted like any folder (each file's size and SHA-256) and checked against
the study's recorded file list: a worker whose copy differs refuses in one line. One process lists
and fetches a prefix once (:func:`fetch_prefix` keeps the result).
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hpsearch.data.cache import CACHE_ENV, cache_dir, write_atomic
from hpsearch.data.sources.images import ImageFolderSource
from hpsearch.errors import ConfigError, DataError

if TYPE_CHECKING:  # pragma: no cover
    from hpsearch.spec.config import StudyConfig

__all__ = ["Fetched", "S3ImageFolderSource", "fetch_prefix", "forget_fetches", "parse_s3_url"]

_INDEX = ".hpsearch-objects.json"  # rel -> [etag, size, mtime_ns] of the files fetched (hidden: not data)
_THREADS = 16


@dataclass
class Fetched:
    """One prefix fetched into the cache by this process: what was listed, downloaded and removed."""

    url: str
    endpoint: str
    cache: str
    objects: int
    downloaded: int
    bytes: int  # downloaded
    removed: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


#: (url, AWS_ENDPOINT_URL) -> what this process fetched: a prefix is listed once per process
_DONE: dict[tuple[str, str], Fetched] = {}


def forget_fetches() -> None:
    """Forget what this process fetched: the next use of a prefix lists it again (a long-lived
    Python process that wants the bucket's current objects)."""
    _DONE.clear()


def parse_s3_url(url: str, field: str = "data.source") -> tuple[str, str]:
    """(bucket, prefix ending in ``/`` or empty) of ``s3://bucket/prefix/``; ConfigError otherwise."""
    rest = url[len("s3://"):] if url.startswith("s3://") else ""
    bucket, _, prefix = rest.partition("/")
    if not bucket:
        raise ConfigError(f"{field}: {url!r} names no bucket; give s3://BUCKET/PREFIX/ (a folder of class subfolders)")
    if not url.endswith("/"):
        raise ConfigError(f"{field}: {url!r} names one object; only image folders are read from S3: end the value"
                          " with / (s3://BUCKET/PREFIX/, one subfolder of images per class)")
    return bucket, prefix


def _client() -> Any:
    try:
        import boto3
        from botocore.config import Config
    except ImportError:
        raise DataError("data.source: an s3:// folder needs boto3: pip install 'hpsearch[s3]' (or boto3)") from None
    # 3 attempts unless the AWS settings say otherwise (AWS_MAX_ATTEMPTS / AWS_RETRY_MODE)
    retries = {} if os.environ.get("AWS_MAX_ATTEMPTS") else {"retries": {"max_attempts": 3, "mode": "standard"}}
    config = Config(connect_timeout=10, read_timeout=60, max_pool_connections=_THREADS, **retries)
    return boto3.client("s3", config=config)


def _refusal(exc: Exception, url: str, bucket: str, endpoint: str, client: Any) -> DataError:
    """The one-line message for a failed listing or download, by the exception's class."""
    from botocore.exceptions import (
        BotoCoreError,
        ClientError,
        ConnectionError,
        HTTPClientError,
        NoCredentialsError,
        PartialCredentialsError,
    )

    where = f"data.source {url}"
    if isinstance(exc, (NoCredentialsError, PartialCredentialsError)):
        return DataError(f"{where}: no AWS credentials ({type(exc).__name__}); set AWS_ACCESS_KEY_ID and"
                         " AWS_SECRET_ACCESS_KEY (or AWS_PROFILE) for every worker")
    if isinstance(exc, (ConnectionError, HTTPClientError)):
        return DataError(f"{where}: the S3 endpoint {endpoint} cannot be reached ({type(exc).__name__}); check"
                         " AWS_ENDPOINT_URL and the network of this machine")
    if isinstance(exc, client.exceptions.NoSuchBucket):
        return DataError(f"{where}: the bucket {bucket!r} does not exist at {endpoint}; check the bucket name (and"
                         " AWS_ENDPOINT_URL)")
    if isinstance(exc, ClientError):
        code = exc.response.get("Error", {}).get("Code", "?")
        return DataError(f"{where}: S3 at {endpoint} refused the request ({code}); check the bucket, the prefix and"
                         " the credentials' rights (s3:ListBucket, s3:GetObject)")
    assert isinstance(exc, BotoCoreError)
    return DataError(f"{where}: S3 at {endpoint} failed ({type(exc).__name__}); check the AWS settings"
                     " (AWS_ENDPOINT_URL, AWS_REGION, credentials)")


def _list(client: Any, bucket: str, prefix: str) -> dict[str, dict[str, Any]]:
    """rel path -> {"key", "etag", "size", "mtime_ns"} of the objects under ``prefix`` (hidden parts,
    empty parts and folder markers left out)."""
    out: dict[str, dict[str, Any]] = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            rel = obj["Key"][len(prefix):]
            parts = rel.split("/")
            if not rel or any(not p or p.startswith(".") for p in parts):
                continue
            out[rel] = {"key": obj["Key"], "etag": str(obj.get("ETag", "")), "size": int(obj["Size"]),
                        "mtime_ns": int(obj["LastModified"].timestamp() * 1_000_000_000)}
    return out


def _read_index(path: Path) -> dict[str, list[Any]]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _fresh(root: Path, rel: str, obj: dict[str, Any], index: dict[str, list[Any]]) -> bool:
    """Is the cached copy of ``rel`` the listed object (same ETag as fetched, file untouched since)?"""
    entry = index.get(rel)
    if not entry or entry[0] != obj["etag"]:
        return False
    try:
        st = (root / rel).stat()
    except OSError:
        return False
    return [st.st_size, st.st_mtime_ns] == [entry[1], entry[2]] == [obj["size"], obj["mtime_ns"]]


def _prune(root: Path, listed: dict[str, dict[str, Any]]) -> int:
    """Remove the cached files whose object is gone (and folders left empty); hidden files stay."""
    removed = 0
    for path in sorted(root.rglob("*"), reverse=True):
        rel = path.relative_to(root)
        if any(p.startswith(".") for p in rel.parts):
            continue
        if path.is_file() and rel.as_posix() not in listed:
            path.unlink(missing_ok=True)
            removed += 1
        elif path.is_dir() and not any(path.iterdir()):
            path.rmdir()
    return removed


def fetch_prefix(url: str) -> Fetched:
    """List ``url`` (``s3://bucket/prefix/``) and bring the cache's copy up to date (once per process)."""
    bucket, prefix = parse_s3_url(url)
    key = (url, os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or "")
    if key in _DONE:
        return _DONE[key]
    client = _client()
    endpoint = str(client.meta.endpoint_url)
    from botocore.exceptions import BotoCoreError, ClientError

    root = cache_dir() / "s3" / bucket / prefix
    try:
        listed = _list(client, bucket, prefix)
        if not listed:
            raise DataError(f"data.source {url}: no objects under this prefix at {endpoint}; check the prefix (a"
                            " folder of class subfolders, ending in /) or upload the images")
        index = _read_index(root / _INDEX)
        stale = {rel: obj for rel, obj in listed.items() if not _fresh(root, rel, obj, index)}

        def get(rel: str) -> None:
            obj = stale[rel]
            body = client.get_object(Bucket=bucket, Key=obj["key"])["Body"].read()
            write_atomic(root / rel, body, obj["mtime_ns"])

        with ThreadPoolExecutor(min(_THREADS, max(1, len(stale)))) as pool:
            list(pool.map(get, sorted(stale)))
        removed = _prune(root, listed)
        index = {rel: [obj["etag"], obj["size"], obj["mtime_ns"]] for rel, obj in listed.items()}
        write_atomic(root / _INDEX, json.dumps(index).encode())
    except (BotoCoreError, ClientError) as exc:
        raise _refusal(exc, url, bucket, endpoint, client) from None
    except OSError as exc:
        raise DataError(f"data.source {url}: cannot write the cache folder {root} ({type(exc).__name__}); set"
                        f" {CACHE_ENV} to a writable folder") from None
    done = _DONE[key] = Fetched(url, endpoint, str(root), len(listed), len(stale),
                                 sum(o["size"] for o in stale.values()), removed)
    return done


class S3ImageFolderSource(ImageFolderSource):
    """An image folder under an S3 prefix, read from its copy in the local cache."""

    def check(self, cfg: StudyConfig) -> None:
        parse_s3_url(cfg.data.source)

    def folder(self, cfg: StudyConfig) -> Path:
        return Path(fetch_prefix(cfg.data.source).cache)

    def where(self, cfg: StudyConfig, root: Path) -> str:
        return f"data.source {cfg.data.source}"

    def locate(self, cfg: StudyConfig) -> Path | None:
        return self.folder(cfg)

    def worker_source(self, cfg: StudyConfig) -> str | None:
        return None  # the s3:// URL: each worker checks its own copy of the prefix (its fetch line)

    def fetched(self, cfg: StudyConfig) -> dict[str, Any] | None:
        return fetch_prefix(cfg.data.source).as_dict()

