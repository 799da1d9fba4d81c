"""Arrays handed over in this process (``memory:KEY``): the data of a search started from Python.

:func:`hold` keeps ``(X, y)`` under a key made of their content hash (SHA-256 of shapes, dtypes and
bytes), so the same arrays always get the same key and a study records exactly which rows it was
given. The arrays live only in the process that handed them over, and in the study's data snapshot
(:mod:`hpsearch.data.snapshot`): a worker that joins the study by name adopts them from there; any
other process that meets a ``memory:`` source (``hpsearch report``) is refused in one line naming
the way out.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any

import numpy as np

from hpsearch.data.sources.base import DataSource, RawData
from hpsearch.errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    from hpsearch.spec.config import StudyConfig

__all__ = ["MemorySource", "SCHEME", "hold", "content_key"]

#: the scheme of ``data.source`` (and ``data.valid`` / ``data.test``) for arrays held in this process
SCHEME = "memory"

#: key -> (X, y, feature names): what this process was handed
_HELD: dict[str, tuple[np.ndarray, np.ndarray, list[str] | None]] = {}


def content_key(X: np.ndarray, y: np.ndarray) -> str:
    """The first 16 hex digits of the SHA-256 of both arrays' shapes, dtypes and bytes."""
    h = hashlib.sha256()
    for a in (X, y):
        h.update(f"{a.shape}{a.dtype.str}".encode())
        h.update(np.ascontiguousarray(a).tobytes() if a.dtype.kind != "O" else repr(a.tolist()).encode())
    return h.hexdigest()[:16]


def _as_arrays(X: Any, y: Any) -> tuple[np.ndarray, np.ndarray, list[str] | None]:
    names = [str(c) for c in X.columns] if hasattr(X, "columns") else None  # a pandas DataFrame
    X_arr = np.asarray(X.to_numpy() if hasattr(X, "to_numpy") else X)
    y_arr = np.asarray(y.to_numpy() if hasattr(y, "to_numpy") else y)
    return X_arr, y_arr, names


def hold(X: Any, y: Any, names: list[str] | None = None) -> str:
    """Keep ``X`` / ``y`` (arrays, lists or pandas objects) in this process; their ``data.source``
    value, ``memory:KEY``. ``names``: the feature names (default: a DataFrame's columns)."""
    X_arr, y_arr, columns = _as_arrays(X, y)
    names = columns if names is None else names
    key = content_key(X_arr, y_arr)
    _HELD[key] = (X_arr, y_arr, names)
    return f"{SCHEME}:{key}"


class MemorySource(DataSource):
    """``memory:KEY``: arrays given to :func:`hold` in this process."""

    @staticmethod
    def _key(spec: str) -> str:
        return spec.split(":", 1)[1]

    def check(self, cfg: StudyConfig) -> None:
        spec = cfg.data.source
        if self._key(spec) not in _HELD:
            raise ConfigError(
                f"data.source: {spec} names arrays handed over in another process (a search started from Python);"
                " they cannot be read here: run the search from Python again, or save the arrays"
                " (np.savez(path, X=..., y=...)) and name that file")

    def load(self, cfg: StudyConfig) -> RawData:
        self.check(cfg)
        X, y, names = _HELD[self._key(cfg.data.source)]
        return RawData(X, y, names, f"data.source {cfg.data.source} (arrays given in Python)")

    def adopt(self, spec: str, raw: RawData) -> None:
        """A worker that joined a search started from Python holds the study's snapshot rows under
        the same key (the key is their content hash): ``spec`` then names them in this process too."""
        key = hold(raw.X, raw.y, raw.feature_names)
        if key != spec:
            raise ConfigError(f"data.source: the study's data snapshot holds arrays {key}, not {spec};"
                              " the snapshot does not belong to this study: check --artifacts")
