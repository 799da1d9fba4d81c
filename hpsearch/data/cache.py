"""hpsearch's local cache folder, and the hash index that spares re-hashing an image folder's files.

The cache folder is ``$HPSEARCH_CACHE``, else ``$XDG_CACHE_HOME/hpsearch``, else ``~/.cache/hpsearch``.
It holds

* ``s3/BUCKET/PREFIX/``: the objects of an ``s3://`` image folder, fetched there to be read
  (:mod:`hpsearch.data.sources.s3folder`);
* ``hashes/KEY.json``: one hash index per folder (local or fetched), keyed by the folder's absolute
  path: relative path -> (size, mtime_ns, SHA-256). Like git's index, a file whose size and
  modification time are those recorded is not read again; any other file is hashed and recorded.
  A file modified less than :data:`RACY_NS` before it was hashed is not recorded (its timestamp
  could hide a later write in the same tick), so it is hashed again next time.

Deleting the cache folder is always safe: it is rebuilt (re-fetched, re-hashed) on the next start.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["CACHE_ENV", "RACY_NS", "HashStats", "cache_dir", "hashed_files", "write_atomic"]

#: the environment variable that places hpsearch's cache folder
CACHE_ENV = "HPSEARCH_CACHE"
#: files modified this recently before hashing are not recorded in the hash index (2 s)
RACY_NS = 2_000_000_000
_VERSION = 1


def cache_dir() -> Path:
    """The cache folder (not created here)."""
    if os.environ.get(CACHE_ENV):
        return Path(os.path.expanduser(os.environ[CACHE_ENV]))
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "hpsearch"


def write_atomic(path: Path, payload: bytes, mtime_ns: int | None = None) -> None:
    """Write ``path`` through a hidden temporary file in its folder and a rename: a reader sees the
    old file or the whole new one, never a half-written one (several workers may share the cache)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".hpsearch-tmp-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
        if mtime_ns is not None:
            os.utime(tmp, ns=(mtime_ns, mtime_ns))
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


@dataclass
class HashStats:
    """How a folder's file list was made: files hashed now, files taken from the hash index."""

    hashed: int
    reused: int
    index: Path
    saved: bool = True  # False: the index could not be written (a read-only cache), so the next start hashes again


def _index_path(root: Path) -> Path:
    key = hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:24]
    return cache_dir() / "hashes" / f"{key}.json"


def _read_index(path: Path, root: Path) -> dict[str, list[Any]]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):  # none yet, or unreadable: every file is hashed (and the index rewritten)
        return {}
    if not isinstance(data, dict) or data.get("version") != _VERSION or data.get("root") != str(root.resolve()):
        return {}
    files = data.get("files")
    return files if isinstance(files, dict) else {}


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _walk(root: Path) -> list[tuple[list[str], str]]:
    """(relative path's parts, absolute path) of every file under ``root``, hidden names left out
    (and not entered), sorted by parts as :class:`pathlib.Path` sorts them; one ``scandir`` a folder."""
    out: list[tuple[list[str], str]] = []
    todo: list[tuple[list[str], str]] = [([], str(root))]
    while todo:
        parts, folder = todo.pop()
        with os.scandir(folder) as it:
            for entry in it:
                if entry.name.startswith("."):
                    continue
                if entry.is_dir():
                    todo.append(([*parts, entry.name], entry.path))
                elif entry.is_file():
                    out.append(([*parts, entry.name], entry.path))
    out.sort(key=lambda item: item[0])
    return out


def hashed_files(root: Path) -> tuple[list[list[Any]], HashStats]:
    """Every file under ``root`` (hidden names left out), sorted: [relative path, size, sha256];
    unchanged files (same size and mtime_ns as in the folder's hash index) are not read again."""
    index_path = _index_path(root)
    old = _read_index(index_path, root)
    new: dict[str, list[Any]] = {}
    out: list[list[Any]] = []
    hashed = 0
    for parts, path in _walk(root):
        key = "/".join(parts)
        st = os.stat(path)
        entry = old.get(key)
        if entry and entry[0] == st.st_size and entry[1] == st.st_mtime_ns:
            sha = str(entry[2])
        else:
            started = time.time_ns()
            sha = _sha256(Path(path))
            hashed += 1
            if st.st_mtime_ns > started - RACY_NS:  # racy: a write in the same tick would not show
                out.append([key, st.st_size, sha])
                continue
        new[key] = [st.st_size, st.st_mtime_ns, sha]
        out.append([key, st.st_size, sha])
    saved = True
    if new != old:
        payload = json.dumps({"version": _VERSION, "root": str(root.resolve()), "files": new}).encode()
        try:
            write_atomic(index_path, payload)
        except OSError:  # a read-only cache costs the hashing next time; the caller says so
            saved = False
    return out, HashStats(hashed, len(out) - hashed, index_path, saved)
