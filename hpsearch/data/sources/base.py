"""Data sources: where a study's raw rows come from, picked by scheme or file suffix.

``data.source`` is either ``SCHEME:NAME`` (``sklearn:digits``) or a file path whose suffix names
its format (``.csv``, ``.parquet``, ``.npz``). :func:`source_for` finds the source through
:data:`hpsearch.registry.SOURCES` (keys: schemes like ``sklearn``, suffixes like ``.csv``); no
other module compares source names or suffixes; a path ending in ``/`` is an image folder
(:mod:`hpsearch.data.sources.images`), ``s3://bucket/prefix/`` an image folder in S3 fetched into the
local cache (:mod:`hpsearch.data.sources.s3folder`; URL keys end in ``://``), ``keras:NAME`` a Keras
dataset (:mod:`hpsearch.data.sources.kerasdata`), ``memory:KEY`` arrays handed over in this process
by a search started from Python (:mod:`hpsearch.data.sources.memory`).

Every source answers four questions about a validated study:

* ``check(cfg)``: is the study's ``data:`` section usable by this source? (no loading)
* ``load(cfg)``: the raw features, target, feature names and a ``where`` for messages
* ``locate(cfg)``: the file a worker must be able to read (absolute), or None
* ``streams(cfg)``: does it stream from disk rather than load into memory?
* ``redacted(cfg)``: what may be shown and stored for the source
* ``adopt(spec, raw)``: take rows from a study's data snapshot (a source that lives in one process)
* ``fetched(cfg)``: what this process copied to read a remote source (None for a local one)
"""

from __future__ import annotations

import os
import re
from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from hpsearch.errors import ConfigError
from hpsearch.registry import SOURCES

if TYPE_CHECKING:  # pragma: no cover

    from hpsearch.spec.config import StudyConfig

__all__ = ["DataSource", "LocalSource", "RawData", "source_for"]

# ``name:`` at the start, not a Windows drive (``C:\``) nor a URL (``s3://``)
_SCHEME_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]+):(?![/\\])")
# a URL: its source is registered under ``scheme://``
_URL_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]+://)")


class RawData(NamedTuple):
    """Rows as a source gives them: not yet validated, split or scaled."""

    X: np.ndarray
    y: np.ndarray
    feature_names: list[str] | None
    where: str  # how messages name the data, e.g. "data.source /data/d.csv"
    info: dict[str, Any] | None = None  # figures for the data summary, e.g. {"skipped_files": 1}


class DataSource(ABC):
    """One kind of data source; instances hold no state (the study's ``data:`` section has it)."""

    @abstractmethod
    def check(self, cfg: StudyConfig) -> None:
        """Refuse a ``data:`` section this source cannot use: ConfigError ``data.field: problem; fix``.

        Nothing is read here (the file may live on another machine than the one validating)."""

    @abstractmethod
    def load(self, cfg: StudyConfig) -> RawData:
        """The raw rows; DataError (one line starting with the ``where``) when they cannot be read."""

    def locate(self, cfg: StudyConfig) -> Path | None:
        """The absolute path of the file a worker reads, None when the source is not a file."""
        return None

    def worker_source(self, cfg: StudyConfig) -> str | None:
        """``data.source`` as the workers this process launches are given it: the absolute path
        (:meth:`locate`: they read their study file from a temp folder, where a relative path would
        not resolve), or None to give it as written (a dataset name, a URL each worker reads itself)."""
        path = self.locate(cfg)
        return None if path is None else str(Path(path).absolute())

    def streams(self, cfg: StudyConfig) -> bool:
        """Does this source stream its rows from :meth:`locate`'s path batch by batch (not loaded
        into memory)? Each source decides for itself; only image folders stream today."""
        return False

    def redacted(self, cfg: StudyConfig) -> str:
        """The source as shown and stored; a source whose spec can hold a secret hides it here."""
        return cfg.data.source

    def adopt(self, spec: str, raw: RawData) -> None:
        """Take ``raw`` (this part's rows from the study's data snapshot, see
        :mod:`hpsearch.data.snapshot`) as what ``spec`` names in this process. Only a source whose
        rows live in one process (``memory:``) needs them; the others read their own."""
        del spec, raw  # nothing to take: this source reads its own rows

    def fetched(self, cfg: StudyConfig) -> dict[str, Any] | None:
        """What this process copied to read the source (a remote folder fetched into the local cache:
        its URL, the cache folder, objects listed, downloaded, bytes); None for a local source."""
        return None


class LocalSource(DataSource):
    """A local path (file or folder); a relative path starts at the study file's folder."""

    @staticmethod
    def _path(cfg: StudyConfig) -> Path:
        p = Path(os.path.expanduser(cfg.data.source))
        if not p.is_absolute() and cfg.base_dir:
            p = Path(cfg.base_dir) / p
        return p

    def locate(self, cfg: StudyConfig) -> Path | None:
        return self._path(cfg).absolute()


def _either(items: list[str]) -> str:
    return ", ".join(items[:-1]) + " or " + items[-1] if len(items) > 1 else "".join(items)


def _accepted() -> str:
    """The accepted forms of ``data.source``, for the message of an unknown one."""
    suffixes = [k for k in SOURCES.names() if k.startswith(".")]
    schemes = [f"{k}bucket/prefix/" if k.endswith("://") else f"{k}:NAME" for k in SOURCES.names() if k[0].isalpha()]
    folder = ", nor a folder path ending in /" if "/" in SOURCES else ""
    return f"{_either(suffixes)}, nor {_either(schemes)}{folder}"


def source_for(spec: str) -> DataSource:
    """The source of a ``data.source`` value: by its registered scheme, else by its file suffix.

    A ConfigError naming ``data.source`` and the accepted forms when neither is registered.
    """
    m = _SCHEME_RE.match(spec)
    url = _URL_RE.match(spec)
    key = m.group(1) if m and m.group(1) in SOURCES else Path(spec).suffix.lower()
    if spec.endswith(("/", os.sep)):
        key = "/"  # a folder: images in one subfolder per class
    if url and url.group(1) in SOURCES:
        key = url.group(1)  # the URL's source says which of its values it reads
    if not key or key not in SOURCES:
        raise ConfigError(f"data.source: {spec!r} is not {_accepted()}; convert the file or use one of those")
    source: DataSource = SOURCES.get(key)()
    return source
