"""Fixed validation and test sets: ``data.valid`` / ``data.test`` naming their own file (or
``memory:KEY`` arrays) instead of a fraction of ``data.source``, so a canonical split (a published
train / test pair, a 4000 / 1000 benchmark split) is used as it is.

A part is read by the source its own value names (a ``.csv`` test set beside a ``.parquet`` training
table works), with the study's ``data.target`` / ``data.features``, and must give samples of the
training rows' shape (and, for tables, the same feature columns). Its rows are never shuffled,
subsampled (``data.max_rows``) or used to fit preprocessing.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from hpsearch.data.sources.base import RawData, source_for
from hpsearch.errors import DataError

if TYPE_CHECKING:  # pragma: no cover
    from hpsearch.spec.config import StudyConfig

__all__ = ["FixedPart", "PARTS", "part_config", "check_fixed_parts", "load_part", "load_fixed_parts"]

#: the parts that may be given as their own set, in the order they are read
PARTS = ("valid", "test")


class FixedPart(NamedTuple):
    X: np.ndarray
    y: np.ndarray
    where: str


def part_config(cfg: StudyConfig, spec: str) -> StudyConfig:
    """The study with ``data.source`` set to a part's own value (what its source reads)."""
    data = cfg.data.model_copy(update={"source": spec, "valid": None, "test": None, "max_rows": None})
    return cfg.model_copy(update={"data": data})


def check_fixed_parts(cfg: StudyConfig) -> None:
    """Each given part is a source that accepts the study's ``data:`` section (nothing is read)."""
    from hpsearch.errors import ConfigError

    for name in PARTS:
        spec = getattr(cfg.data, name)
        if spec is None:
            continue
        try:
            part = part_config(cfg, spec)
            source_for(spec).check(part)
        except ConfigError as exc:
            raise ConfigError(_as_part(str(exc), name)) from None


def _as_part(text: str, name: str) -> str:
    """A source's message (it names what it reads ``data.source``) as ``data.<name>``'s."""
    return text.replace("data.source", f"data.{name}", 1)


def load_part(cfg: StudyConfig, name: str, spec: str) -> RawData:
    """The rows of ``data.<name>`` (valid, test) read from their source; its errors name that field
    (a source names what it reads ``data.source``)."""
    try:
        return source_for(spec).load(part_config(cfg, spec))
    except DataError as exc:
        raise DataError(_as_part(str(exc), name)) from None


def _like(X: np.ndarray, main: np.ndarray) -> np.ndarray:
    """A part's features in the main rows' dtype family (float64 tables, object tables, N-D as given)."""
    if main.dtype.kind == "O":
        return X.astype(object)
    if X.ndim == 2 and X.dtype.kind != "O":
        return X.astype(np.float64)
    return X


def _check_rows(X: np.ndarray, y: np.ndarray, task: str, where: str) -> None:
    """What a held-out set needs (one class or a constant target is fine here): rows, matching
    lengths, numeric finite features, a finite target (numeric for regression)."""
    if len(X) == 0:
        raise DataError(f"{where}: no rows; give a file with a header and rows")
    if y.ndim != 1 or len(y) != len(X):
        raise DataError(f"{where}: {len(X)} feature rows but target of shape {y.shape}; give one target per row")
    if X.dtype.kind not in "iufbO":
        raise DataError(f"{where}: features must be numeric, got {X.dtype}; encode categorical columns first")
    if X.dtype.kind == "f" and not np.all(np.isfinite(X)):
        raise DataError(f"{where}: features contain NaN or inf; impute or drop those rows")
    if task == "regression" and y.dtype.kind not in "iuf":
        raise DataError(f"{where}: task regression needs a numeric target, got {y.dtype}; check data.target")
    if y.dtype.kind == "f" and not np.all(np.isfinite(y)):
        raise DataError(f"{where}: target contains NaN or inf; drop those rows")


def load_fixed_parts(cfg: StudyConfig, X_main: np.ndarray, names: list[str] | None, task: str,
                     raws: Mapping[str, RawData] | None = None) -> dict[str, FixedPart]:
    """The given parts, read (or taken from ``raws``: a data snapshot's rows) and checked against the
    main rows (same sample shape and columns)."""
    out: dict[str, FixedPart] = {}
    for name in PARTS:
        spec = getattr(cfg.data, name)
        if spec is None:
            continue
        raw = raws[name] if raws is not None and name in raws else load_part(cfg, name, spec)
        where = _as_part(raw.where, name)
        X, y = np.asarray(raw.X), np.asarray(raw.y)
        if y.ndim == 2 and y.shape[1] == 1:
            y = y.ravel()
        shape = cfg.data.reshape
        if shape is not None and X.ndim >= 2 and X.dtype.kind != "O" and math.prod(X.shape[1:]) == math.prod(shape):
            X = X.reshape((X.shape[0], *shape))  # data.reshape, as for the main rows
        if X.ndim < 2 or X.shape[1:] != X_main.shape[1:]:
            raise DataError(f"{where}: samples of shape {X.shape[1:]}, but data.source gives {X_main.shape[1:]};"
                            f" give the {name} set the same columns as the training rows")
        if names is not None and raw.feature_names is not None and list(raw.feature_names) != list(names):
            raise DataError(f"{where}: columns {raw.feature_names[:10]} differ from data.source's {names[:10]};"
                            f" give the {name} set the same feature columns in the same order")
        _check_rows(X, y, task, where)
        out[name] = FixedPart(_like(X, X_main), y, where)
    return out
