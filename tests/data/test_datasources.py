"""Data sources: picked by scheme or suffix through the registry; check, load, locate, redacted."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from hpsearch.data.sources.base import DataSource, RawData, source_for
from hpsearch.data.sources.images import ImageFolderSource
from hpsearch.data.sources.kerasdata import KerasSource
from hpsearch.data.sources.memory import MemorySource
from hpsearch.data.sources.s3folder import S3ImageFolderSource
from hpsearch.data.sources.tables import SKLEARN_DATASETS, CsvSource, NpzSource, ParquetSource, SklearnSource
from hpsearch.errors import ConfigError, DataError
from hpsearch.registry import SOURCES
from hpsearch.spec.config import StudyConfig, schema_from_mapping


def cfg_of(source: str, base: Path | None = None, **data: Any) -> StudyConfig:
    return schema_from_mapping({"name": "t", "data": {"source": source, **data}, "space": {"a": {"int": [1, 2]}}},
                               where="t.yaml", base_dir=str(base) if base else None)


def frame() -> pd.DataFrame:
    return pd.DataFrame({"a": [1.0, 2.0, 3.0, 4.0], "b": [0, 1, 0, 1], "label": ["x", "y", "x", "y"]})


@pytest.mark.parametrize("spec,cls", [
    ("sklearn:iris", SklearnSource), ("d.csv", CsvSource), ("sub/D.CSV", CsvSource), ("d.parquet", ParquetSource),
    ("d.pq", ParquetSource), ("/abs/d.npz", NpzSource), ("data:v1.csv", CsvSource), ("C:/x/d.csv", CsvSource),
    ("imgs/", ImageFolderSource), ("keras:mnist", KerasSource), ("memory:0123abcd", MemorySource),
    ("s3://bucket/imgs/", S3ImageFolderSource), ("s3://bucket/d.xlsx", S3ImageFolderSource),  # check() refuses it
])
def test_source_for_picks_by_scheme_then_suffix(spec, cls):
    assert type(source_for(spec)) is cls


@pytest.mark.parametrize("spec", ["d.txt", "d.xlsx", "sklearn", "gs://bucket/d.xlsx", "folder"])
def test_unknown_sources_name_the_accepted_forms(spec):
    with pytest.raises(ConfigError) as ei:
        source_for(spec)
    assert str(ei.value) == (f"data.source: {spec!r} is not .csv, .parquet, .pq or .npz, nor sklearn:NAME,"
                             " s3://bucket/prefix/, keras:NAME or memory:NAME, nor a folder path ending in /;"
                             " convert the file or use one of those")


class TsvSource(CsvSource):
    """A source added through the registry alone (the seam the next data sources use)."""

    def _frame(self, path: Path) -> pd.DataFrame:
        return pd.read_csv(path, sep="\t")


def test_a_new_source_is_one_class_and_one_registry_line(tmp_path, monkeypatch):
    monkeypatch.setattr(SOURCES, "_targets", dict(SOURCES._targets))  # restored after the test
    SOURCES.register(".tsv", "test_datasources:TsvSource")
    frame().to_csv(tmp_path / "d.tsv", sep="\t", index=False)
    cfg = cfg_of("d.tsv", tmp_path, target="label")
    raw = source_for("d.tsv").load(cfg)
    assert raw.X.shape == (4, 2) and list(raw.y) == ["x", "y", "x", "y"] and raw.feature_names == ["a", "b"]
    with pytest.raises(ConfigError, match=r"\.npz or \.tsv, nor"):  # and the message lists it
        source_for("d.txt")


def test_locate_relative_paths_start_at_the_study_file(tmp_path, monkeypatch):
    cfg = cfg_of("sub/d.csv", tmp_path, target="y")
    assert source_for(cfg.data.source).locate(cfg) == tmp_path / "sub" / "d.csv"
    cfg = cfg_of("/abs/d.npz", tmp_path)
    assert source_for(cfg.data.source).locate(cfg) == Path("/abs/d.npz")
    monkeypatch.chdir(tmp_path)
    cfg = cfg_of("d.npz")  # a study given in Python: the current folder
    assert source_for(cfg.data.source).locate(cfg) == tmp_path / "d.npz"
    monkeypatch.setenv("HOME", str(tmp_path))
    cfg = cfg_of("~/d.npz", Path("/elsewhere"))
    assert source_for(cfg.data.source).locate(cfg) == tmp_path / "d.npz"
    cfg = cfg_of("sklearn:iris")
    assert source_for(cfg.data.source).locate(cfg) is None


def test_redacted_is_the_source_as_written(tmp_path):
    for spec, extra in (("sklearn:wine", {}), ("sub/d.csv", {"target": "y"})):
        cfg = cfg_of(spec, tmp_path, **extra)
        assert source_for(spec).redacted(cfg) == spec


def test_check_reads_nothing(tmp_path):
    SklearnSource().check(cfg_of("sklearn:digits"))
    CsvSource().check(cfg_of("missing.csv", tmp_path, target="y"))  # the file may live elsewhere
    NpzSource().check(cfg_of("missing.npz", tmp_path))
    with pytest.raises(ConfigError, match=r"^data.source: unknown dataset 'mnist'; use one of sklearn:digits"):
        SklearnSource().check(cfg_of("sklearn:mnist"))
    for spec in ("d.csv", "d.parquet", "d.pq"):
        with pytest.raises(ConfigError, match=rf"^data.target: required for {Path(spec).suffix} files"):
            source_for(spec).check(cfg_of(spec, tmp_path))


@pytest.mark.parametrize("name", sorted(SKLEARN_DATASETS))
def test_sklearn_load(name):
    raw = source_for(f"sklearn:{name}").load(cfg_of(f"sklearn:{name}"))
    assert isinstance(raw, RawData) and raw.X.shape[0] == len(raw.y) and raw.where == f"sklearn:{name}"
    assert raw.feature_names and len(raw.feature_names) == raw.X.shape[1]


def test_tables_and_npz_load(tmp_path):
    df = frame()
    df.to_csv(tmp_path / "d.csv", index=False)
    df.to_parquet(tmp_path / "d.pq")
    for spec in ("d.csv", "d.pq"):
        raw = source_for(spec).load(cfg_of(spec, tmp_path, target="label", features=["b", "a"]))
        assert raw.feature_names == ["b", "a"] and raw.X.dtype == np.float64
        np.testing.assert_array_equal(raw.X[:, 1], df["a"].to_numpy())
        assert raw.where == f"data.source {tmp_path / spec}"
    np.savez(tmp_path / "d.npz", x=np.ones((3, 2)), price=np.arange(3.0))
    raw = source_for("d.npz").load(cfg_of("d.npz", tmp_path, target="price"))
    assert raw.X.shape == (3, 2) and list(raw.y) == [0.0, 1.0, 2.0] and raw.feature_names is None


def _write(tmp_path: Path, name: str, content: Any) -> None:
    if isinstance(content, pd.DataFrame):
        content.to_csv(tmp_path / name, index=False)
    elif isinstance(content, dict):
        np.savez(tmp_path / name, **content)
    else:
        (tmp_path / name).write_bytes(content)


@pytest.mark.parametrize("name,content,extra,fragment", [
    ("nope.csv", None, {"target": "y"}, "file not found; check the path"),
    ("e.csv", b"", {"target": "y"}, "the file is empty"),
    ("h.csv", b"a,y\n", {"target": "y"}, "no data rows (only a header)"),
    ("t.csv", frame(), {"target": "y"}, "target column 'y' not found; set data.target"),
    ("f.csv", frame(), {"target": "label", "features": ["a", "label"]}, "data.features lists the target column"),
    ("m.csv", frame(), {"target": "label", "features": ["zz"]}, "feature column 'zz' not found"),
    ("p.parquet", b"not parquet", {"target": "y"}, "cannot read it ("),
    ("n.npz", {"X": np.ones((2, 2))}, {}, "needs arrays 'X' and 'y'"),
    ("z.npz", b"garbage", {}, "check that it is a valid .npz file"),
])
def test_load_errors_are_one_line_data_errors(tmp_path, name, content, extra, fragment):
    if content is not None:
        _write(tmp_path, name, content)
    with pytest.raises(DataError) as ei:
        source_for(name).load(cfg_of(name, tmp_path, **extra))
    msg = str(ei.value)
    assert msg.startswith(f"data.source {tmp_path / name}: ") and fragment in msg and "\n" not in msg


def test_every_registered_source_is_a_data_source():
    for key in SOURCES.names():
        assert issubclass(SOURCES.get(key), DataSource)
