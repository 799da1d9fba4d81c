"""Data sources: where a study's raw rows come from, picked by scheme or file suffix.

``data.source`` is either ``SCHEME:NAME`` (``sklearn:digits``) or a file path whose suffix names
its format (``.csv``, ``.parquet``, ``.npz``). :func:`source_for` finds the source through
:data:`hpsearch.registry.SOURCES` (keys: schemes like ``sklearn``, suffixes like ``.csv``); no
other module compares source names or suffixes; a path ending in ``/`` is an image folder
(:mod:`hpsearch.imagefolder`), ``keras:NAME`` a Keras dataset (:mod:`hpsearch.kerasdata`).

Every source answers four questions about a validated study:

* ``check(cfg)``: is the study's ``data:`` section usable by this source? (no loading)
* ``load(cfg)``: the raw features, target, feature names and a ``where`` for messages
* ``locate(cfg)``: the file a worker must be able to read (absolute), or None
* ``redacted(cfg)``: what may be shown and stored for the source
"""

from __future__ import annotations

import os
import re
from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from hpsearch.errors import ConfigError, DataError
from hpsearch.registry import SOURCES

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from hpsearch.config import StudyConfig

__all__ = [
    "LocalSource",
    "SKLEARN_DATASETS",
    "CsvSource",
    "DataSource",
    "FileSource",
    "NpzSource",
    "ParquetSource",
    "RawData",
    "SklearnSource",
    "TableFileSource",
    "source_for",
]

#: scikit-learn's bundled datasets: name -> (loader function in sklearn.datasets, task)
SKLEARN_DATASETS: dict[str, tuple[str, str]] = {
    "digits": ("load_digits", "classification"),
    "breast_cancer": ("load_breast_cancer", "classification"),
    "wine": ("load_wine", "classification"),
    "iris": ("load_iris", "classification"),
    "diabetes": ("load_diabetes", "regression"),
}

# ``name:`` at the start, not a Windows drive (``C:\``) nor a URL (``s3://``)
_SCHEME_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]+):(?![/\\])")


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

    def redacted(self, cfg: StudyConfig) -> str:
        """The source as shown and stored; a source whose spec can hold a secret hides it here."""
        return cfg.data.source


class SklearnSource(DataSource):
    """``sklearn:NAME``: one of scikit-learn's bundled datasets (no download)."""

    @staticmethod
    def _name(cfg: StudyConfig) -> str:
        return cfg.data.source.split(":", 1)[1]

    def check(self, cfg: StudyConfig) -> None:
        name = self._name(cfg)
        if name not in SKLEARN_DATASETS:
            raise ConfigError(f"data.source: unknown dataset {name!r}; use one of "
                              + ", ".join("sklearn:" + k for k in SKLEARN_DATASETS))

    def load(self, cfg: StudyConfig) -> RawData:
        import sklearn.datasets

        self.check(cfg)
        bunch = getattr(sklearn.datasets, SKLEARN_DATASETS[self._name(cfg)][0])()
        names = [str(n) for n in getattr(bunch, "feature_names", [])] or None
        return RawData(np.asarray(bunch.data), np.asarray(bunch.target), names, cfg.data.source)


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


class FileSource(LocalSource):
    """A local file, read by the subclass for its format."""

    def check(self, cfg: StudyConfig) -> None:
        """A file source needs nothing beyond the path by default."""

    def load(self, cfg: StudyConfig) -> RawData:
        self.check(cfg)
        path = self._path(cfg)
        where = f"data.source {path}"
        if not path.exists():
            raise DataError(f"{where}: file not found; check the path (relative paths start at the study file)")
        return self._read(cfg, path, where)

    @abstractmethod
    def _read(self, cfg: StudyConfig, path: Path, where: str) -> RawData:
        """Read an existing file (``where`` prefixes every message)."""


def _unreadable(where: str, path: Path, exc: Exception) -> DataError:
    first = (str(exc).splitlines() or [""])[0][:120]
    return DataError(f"{where}: cannot read it ({exc.__class__.__name__}: {first});"
                     f" check that it is a valid {path.suffix.lower()} file")


class TableFileSource(FileSource):
    """A table with a header: ``data.target`` names the target column, ``data.features`` the inputs."""

    def check(self, cfg: StudyConfig) -> None:
        if not cfg.data.target:
            raise ConfigError(f"data.target: required for {self._path(cfg).suffix} files; name the target column")

    @abstractmethod
    def _frame(self, path: Path) -> pd.DataFrame:
        """The file as a DataFrame (parse errors propagate)."""

    def _read(self, cfg: StudyConfig, path: Path, where: str) -> RawData:
        import pandas as pd

        try:
            df = self._frame(path)
        except pd.errors.EmptyDataError:
            raise DataError(f"{where}: the file is empty; give a file with a header and rows") from None
        except Exception as e:  # noqa: BLE001 - pandas / pyarrow parse errors of many classes: the user's file
            raise _unreadable(where, path, e) from None
        return _table_columns(df, cfg, where)


def _table_columns(df: pd.DataFrame, cfg: StudyConfig, where: str) -> RawData:
    """Target and numeric feature columns of ``df`` as chosen by ``data.target`` / ``data.features``."""
    import pandas as pd

    if len(df) == 0:
        raise DataError(f"{where}: no data rows (only a header); give a file with a header and rows")
    target = cfg.data.target
    columns = list(map(str, df.columns))[:20]
    if target not in df.columns:
        raise DataError(f"{where}: target column {target!r} not found; set data.target to one of the columns"
                        f" {columns}")
    if cfg.data.features and target in cfg.data.features:
        raise DataError(f"{where}: data.features lists the target column {target!r}; remove it from data.features")
    feats = cfg.data.features or [c for c in df.columns if c != target]
    for c in feats:
        if c not in df.columns:
            raise DataError(f"{where}: feature column {c!r} not found; fix data.features (columns are {columns})")
    y = df[target].to_numpy()
    plain = all(pd.api.types.is_numeric_dtype(df[c]) for c in feats)
    if plain and not df[feats].isna().to_numpy().any():
        return RawData(df[feats].to_numpy(dtype=np.float64), y, [str(c) for c in feats], where)
    # text, categories or gaps: raw values (object) that the preprocessor encodes and imputes
    return RawData(df[feats].to_numpy(dtype=object), y, [str(c) for c in feats], where)


class CsvSource(TableFileSource):
    """A comma-separated table with a header row."""

    def _frame(self, path: Path) -> pd.DataFrame:
        import pandas as pd

        return pd.read_csv(path)


class ParquetSource(TableFileSource):
    """An Apache Parquet table."""

    def _frame(self, path: Path) -> pd.DataFrame:
        import pandas as pd

        return pd.read_parquet(path)


class NpzSource(FileSource):
    """``np.savez(path, X=..., y=...)``: features ``X`` (or ``x``), target ``y`` or ``data.target``."""

    def _read(self, cfg: StudyConfig, path: Path, where: str) -> RawData:
        try:
            with np.load(path, allow_pickle=False) as z:
                keys = list(z.keys())
                xkey = "X" if "X" in keys else ("x" if "x" in keys else None)
                ykey = cfg.data.target or ("y" if "y" in keys else None)
                if xkey is None or ykey not in keys:
                    raise DataError(f"{where}: needs arrays 'X' and '{ykey or 'y'}' (has {keys});"
                                    " save with np.savez(path, X=..., y=...)")
                return RawData(np.asarray(z[xkey]), np.asarray(z[ykey]), None, where)
        except DataError:
            raise
        except Exception as e:  # noqa: BLE001 - not a zip, a truncated file, a pickled array: the user's file
            raise _unreadable(where, path, e) from None


def _either(items: list[str]) -> str:
    return ", ".join(items[:-1]) + " or " + items[-1] if len(items) > 1 else "".join(items)


def _accepted() -> str:
    """The accepted forms of ``data.source``, for the message of an unknown one."""
    suffixes = [k for k in SOURCES.names() if k.startswith(".")]
    schemes = [f"{k}:NAME" for k in SOURCES.names() if k[0].isalpha()]
    folder = ", nor a folder path ending in /" if "/" in SOURCES else ""
    return f"{_either(suffixes)}, nor {_either(schemes)}{folder}"


def source_for(spec: str) -> DataSource:
    """The source of a ``data.source`` value: by its registered scheme, else by its file suffix.

    A ConfigError naming ``data.source`` and the accepted forms when neither is registered.
    """
    m = _SCHEME_RE.match(spec)
    key = m.group(1) if m and m.group(1) in SOURCES else Path(spec).suffix.lower()
    if spec.endswith(("/", os.sep)):
        key = "/"  # a folder: images in one subfolder per class
    if not key or key not in SOURCES:
        raise ConfigError(f"data.source: {spec!r} is not {_accepted()}; convert the file or use one of those")
    source: DataSource = SOURCES.get(key)()
    return source
