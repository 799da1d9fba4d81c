"""Data snapshots (hpsearch.data.snapshot): the rows a study trains on round-trip through the snapshot
file exactly (text columns and gaps included, nothing pickled), the fingerprint changes with one value
or one file, and an image folder is recorded as its file list with sizes and hashes."""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from data_fixtures import write_image_folder

from hpsearch.data.prepare import prepare_data
from hpsearch.data.snapshot import fingerprint, load_raw, pack, unpack
from hpsearch.errors import UserError
from hpsearch.records import STUDY
from hpsearch.spec.config import schema_from_mapping
from hpsearch.study.snapshot import check_snapshot


def _cfg(tmp: Path, source: str, **data: object) -> object:
    spec = {"name": "snap", "data": {"source": source, "split": {"valid": 0.2, "test": 0.2, "seed": 0}, **data},
            "model": {"builder": "mlp"}, "space": {"n_neurons": {"int": [4, 8]}},
            "search": {"engine": "optuna", "n_trials": 1, "seed": 0}}
    return schema_from_mapping(spec, where="t", base_dir=str(tmp))


def _table(path: Path, first: str = "red") -> None:
    rows = ["x,colour,y"] + [f"{i * 0.5},{first if i == 0 else ('blue' if i % 2 else 'red')},{i % 2}"
                             for i in range(40)]
    rows[3] = "1.0,,1"  # a gap in the text column
    path.write_text("\n".join(rows) + "\n")


def test_a_table_with_text_and_gaps_round_trips_exactly(tmp_path):
    _table(tmp_path / "t.csv")
    _table(tmp_path / "test.csv")
    cfg = _cfg(tmp_path, "t.csv", target="y", test="test.csv")
    raws = load_raw(cfg)  # type: ignore[arg-type]
    assert raws is not None and raws["source"].X.dtype.kind == "O"
    fp = fingerprint(cfg, raws)  # type: ignore[arg-type]
    back, manifests, sha = unpack(pack(fp))
    assert sha == fp.sha256 and manifests == {} and set(back) == {"source", "test"}
    assert fingerprint(cfg, back).sha256 == fp.sha256  # type: ignore[arg-type]
    for name in back:
        assert back[name].feature_names == raws[name].feature_names and back[name].where == raws[name].where
        for a, b in zip(back[name].X.ravel(), raws[name].X.ravel()):
            assert a == b or (isinstance(a, float) and math.isnan(a) and math.isnan(b))
    here, there = prepare_data(cfg, 1), prepare_data(cfg, 1, back)  # type: ignore[arg-type]
    np.testing.assert_array_equal(here.X_train, there.X_train)
    np.testing.assert_array_equal(here.y_test, there.y_test)

    _table(tmp_path / "t.csv", first="green")  # one cell differs
    other = fingerprint(cfg, load_raw(cfg))  # type: ignore[arg-type]
    assert other.sha256 != fp.sha256 and other.parts["test"] == fp.parts["test"]
    study = SimpleNamespace(study_name="snap", user_attrs={STUDY.DATA_SNAPSHOT: {"sha256": fp.sha256,
                                                                                "parts": fp.parts}})
    check_snapshot(study, fp)  # the same data: nothing said
    with pytest.raises(UserError) as exc:
        check_snapshot(study, other)
    assert "data.source: 40 rows" in str(exc.value) and "data.test" not in str(exc.value)


def test_an_image_folder_is_recorded_as_its_files(tmp_path):
    write_image_folder(tmp_path / "imgs", classes=("a", "b"), per_class=4, size=(8, 8))
    cfg = _cfg(tmp_path, "imgs/", image_size=[8, 8], skip_bad_files=True, in_memory=False)
    assert load_raw(cfg) is None  # type: ignore[arg-type]  # streamed: read from its path by every worker
    fp = fingerprint(cfg, None)  # type: ignore[arg-type]
    part = fp.parts["source"]
    files = sorted(p for p in (tmp_path / "imgs").rglob("*") if p.is_file())
    assert part["kind"] == "files" and part["files"] == len(files) and part["path"] == str(tmp_path / "imgs")
    assert part["bytes"] == sum(p.stat().st_size for p in files)
    assert unpack(pack(fp))[1]["source"] == fp.manifests["source"]
    in_memory = _cfg(tmp_path, "imgs/", image_size=[8, 8], skip_bad_files=True, in_memory=True)
    raws = load_raw(in_memory)  # type: ignore[arg-type]
    assert raws is not None and fingerprint(in_memory, raws).sha256 == fp.sha256  # type: ignore[arg-type]
    snapshot_rows = unpack(pack(fingerprint(in_memory, raws)))[0]  # type: ignore[arg-type]
    assert snapshot_rows == {}  # the images are read from the folder, not copied
    np.testing.assert_array_equal(prepare_data(in_memory, 1, snapshot_rows).X_train,  # type: ignore[arg-type]
                                  prepare_data(in_memory, 1).X_train)  # type: ignore[arg-type]
    files[0].write_bytes(files[0].read_bytes() + b"\0")
    assert fingerprint(cfg, None).sha256 != fp.sha256  # type: ignore[arg-type]
