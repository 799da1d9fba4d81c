"""Image folders streamed from disk (``data.in_memory``, ``data.workers``): the Optuna engine trains from
a PyDataset of decoded batches; the split and scaling match loading into memory; the scikit-learn
engines refuse in one line; ``auto`` streams above the size rule."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import optuna
import pytest
import yaml
from data_fixtures import write_image_folder

import hpsearch
from hpsearch.cli import main
from hpsearch.data.prepare import prepare_data
from hpsearch.data.sources.images import STREAM_ABOVE_BYTES, decoded_bytes, read_image, streams
from hpsearch.spec.config import schema_from_mapping

pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")

CLASSES = ("bottom", "middle", "top")


def _study(tmp: Path, **data: object) -> dict[str, object]:
    write_image_folder(tmp / "imgs", classes=CLASSES, per_class=10, size=(16, 16))  # 30 PNGs + 1 corrupt
    return {
        "name": "streamed",
        "data": {"source": "imgs/", "image_size": [16, 16], "rescale": 255, "skip_bad_files": True,
                 "split": {"valid": 0.2, "test": 0.2, "seed": 0}, **data},
        "model": {"builder": "mlp", "fixed": {"activation": "relu", "optimizer": "adam"}},
        "space": {"n_neurons": {"int": [8, 16]}, "learning_rate": {"float": [1e-3, 1e-2], "log": True}},
        "train": {"epochs": 2, "batch_size": 8, "class_weight": "balanced"},  # weights: per-row in the stream
        "search": {"engine": "optuna", "sampler": "random", "pruner": "none", "n_trials": 1, "seed": 0},
    }


def _cfg(study: dict[str, object], tmp: Path, **data: object) -> object:
    spec = {**study, "data": {**study["data"], **data}}  # type: ignore[dict-item]
    return schema_from_mapping(spec, where="t", base_dir=str(tmp))


def test_streamed_study_runs_end_to_end_and_load_best_predicts(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(_study(tmp_path, in_memory=False, workers=2)))
    url = f"sqlite:///{tmp_path / 'hps.db'}"
    rc = main(["run", str(path), "--storage", url, "--no-progress"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert "test accuracy" in out
    study = optuna.load_study(study_name="streamed", storage=url)
    summary = study.user_attrs["data_summary"]
    assert summary["streamed"] is True and summary["skipped_files"] == 1 and summary["rows"] == 30
    assert study.user_attrs["test_metrics"]["accuracy"] is not None
    model = hpsearch.load_best("streamed", storage=url)
    raw = np.stack([read_image(f, "rgb", (16, 16)) for f in sorted((tmp_path / "imgs" / "top").glob("0*.png"))[:4]])
    assert set(model.predict(raw)) <= set(CLASSES)  # raw uint8 pixels in, labels out


def test_streamed_and_in_memory_give_the_same_split_and_scaling(tmp_path):
    study = _study(tmp_path)
    mem = prepare_data(_cfg(study, tmp_path, in_memory=True), 1)  # type: ignore[arg-type]
    st = prepare_data(_cfg(study, tmp_path, in_memory=False), 1)  # type: ignore[arg-type]
    assert st.streamed and not mem.streamed
    for part in ("y_train", "y_valid", "y_test"):
        np.testing.assert_array_equal(getattr(st, part), getattr(mem, part))
    np.testing.assert_allclose(st.preprocessor.mean, mem.preprocessor.mean, rtol=1e-6)
    np.testing.assert_allclose(st.preprocessor.scale, mem.preprocessor.scale, rtol=1e-6)
    np.testing.assert_allclose(st.X_valid[:], mem.X_valid, rtol=1e-5, atol=1e-6)  # same files, same order
    assert st.X_train.shape == mem.X_train.shape


@pytest.mark.parametrize("engine", ["random", "halving"])
def test_sklearn_engines_refuse_a_streamed_folder_in_one_line(engine, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    study = _study(tmp_path, in_memory=False)
    study["search"] = {"engine": engine, "n_trials": 2}
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(study))
    rc = main(["run", str(tmp_path / "s.yaml"), "--storage", f"sqlite:///{tmp_path / 'hps.db'}", "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert len(err.splitlines()) == 1 and "data.in_memory" in err and "search.engine: optuna" in err
    assert not (tmp_path / "hps.db").exists()


def test_auto_streams_above_the_decoded_size_rule():
    assert decoded_bytes(3000, (96, 96), 3) == 3000 * 96 * 96 * 3 * 4
    assert not streams("auto", 3000, (96, 96), 3)  # ~316 MiB decoded: in memory
    assert streams("auto", 10_000, (128, 128), 3)  # ~1.8 GiB: streamed
    assert streams("auto", 2, (8, 8), 1, limit=511) and not streams("auto", 2, (8, 8), 1, limit=512)
    assert STREAM_ABOVE_BYTES == 1 << 30
    assert streams(False, 1, (1, 1), 1) and not streams(True, 10**9, (512, 512), 3)
