"""Tables and arrays: scikit-learn's bundled datasets (``sklearn:NAME``), CSV and Parquet tables
(``data.target`` / ``data.features`` columns) and NPZ arrays, each registered in
:data:`hpsearch.registry.SOURCES` by scheme or suffix."""

from __future__ import annotations

from abc import abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from hpsearch.data.sources.base import DataSource, LocalSource, RawData
from hpsearch.errors import ConfigError, DataError

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from hpsearch.spec.config import StudyConfig

__all__ = ["SKLEARN_DATASETS", "SklearnSource", "FileSource", "TableFileSource", "CsvSource", "ParquetSource",
           "NpzSource"]

#: scikit-learn's bundled datasets: name -> (loader function in sklearn.datasets, task)
SKLEARN_DATASETS: dict[str, tuple[str, str]] = {
    "digits": ("load_digits", "classification"),
    "breast_cancer": ("load_breast_cancer", "classification"),
    "wine": ("load_wine", "classification"),
    "iris": ("load_iris", "classification"),
    "diabetes": ("load_diabetes", "regression"),
}

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
