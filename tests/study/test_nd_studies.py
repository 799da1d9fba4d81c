"""End to end on images and messy tables through the real CLI: the image-folder study (with its
corrupt file), the messy CSV study with ``load_best`` on raw rows (an unseen category, NaNs),
``keras:fashion_mnist`` against a tiny file in Keras' cache format, a user builder on N-D data,
and the bad-input cases of issue 9: one line on stderr, exit 2, nothing written."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pandas as pd
import pytest
from cli_helpers import assert_user_error, run_cli, set_, snapshot, write_study
from data_fixtures import write_fashion_mnist_cache, write_image_folder

import hpsearch
from hpsearch.cli import main
from hpsearch.data.sources.images import read_image

pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("HPSEARCH_STORAGE", raising=False)
    monkeypatch.delenv("HPSEARCH_ARTIFACTS", raising=False)
    return tmp_path


def _copy_study(name: str, into: Path) -> Path:
    """A study of studies/ with its data folder, copied so that nothing is written into the repo."""
    shutil.copytree(REPO / "studies" / "data", into / "data")
    return Path(shutil.copy(REPO / "studies" / f"{name}.yaml", into))


@pytest.mark.slow
def test_image_folder_study_runs_and_predicts_raw_images(workdir, capsys):
    study = _copy_study("stripes-images", workdir)
    url = f"sqlite:///{workdir / 'hps.db'}"
    rc = main(["run", str(study), "--storage", url, "--n-trials", "1", "--epochs", "2", "--no-progress"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert "test accuracy" in out
    summary = optuna.load_study(study_name="stripes-images", storage=url).user_attrs["data_summary"]
    assert summary["skipped_files"] == 1 and summary["input_shape"] == [16, 16, 3] and summary["rows"] == 60
    model = hpsearch.load_best("stripes-images", storage=url)
    files = sorted((workdir / "data" / "stripes" / "top").glob("0*.png"))[:4]
    raw = np.stack([read_image(f, "rgb", (16, 16)) for f in files])  # raw uint8 pixels in, labels out
    assert set(model.predict(raw)) <= {"bottom", "middle", "top"}
    assert model.predict_proba(raw).shape == (4, 3)
    assert main(["report", "stripes-images", "--storage", url, "--output", str(workdir / "rep")]) == 0
    capsys.readouterr()


@pytest.mark.slow
def test_messy_table_study_predicts_raw_rows(workdir, capsys):
    study = _copy_study("shoppers-table", workdir)
    url = f"sqlite:///{workdir / 'hps.db'}"
    rc = main(["run", str(study), "--storage", url, "--n-trials", "1", "--epochs", "2", "--no-progress"])
    _, err = capsys.readouterr()
    assert rc == 0, err
    model = hpsearch.load_best("shoppers-table", storage=url)
    rows = pd.DataFrame({"size": [np.nan, 1.2, -0.4], "color": ["purple", None, "red"],
                         "city": ["town 3", "atlantis", None]})
    assert set(model.predict(rows)) <= {"buy", "skip"}
    proba = model.predict_proba(rows)
    assert proba.shape == (3, 2) and np.isfinite(proba).all()
    table = pd.read_csv(workdir / "data" / "shoppers.csv")
    assert model.score(table.drop(columns="label"), table["label"]) > 0.5


def _hpsearch(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "hpsearch", *args], cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO), **env}, timeout=600)


@pytest.mark.slow
def test_fashion_mnist_study_against_a_tiny_keras_cache(tmp_path):
    write_fashion_mnist_cache(tmp_path / "keras")
    env = {"KERAS_HOME": str(tmp_path / "keras")}
    study = str(REPO / "studies" / "fashion-mnist.yaml")
    done = _hpsearch(["validate", study], tmp_path, **env)
    assert done.returncode == 0, done.stderr
    assert "ok (study fashion-mnist" in done.stdout
    done = _hpsearch(["run", study, "--storage", f"sqlite:///{tmp_path / 'f.db'}", "--n-trials", "1",
                      "--epochs", "1", "--no-progress", "--json"], tmp_path, **env)
    assert done.returncode == 0, done.stderr


def test_missing_keras_cache_offline_is_one_line(tmp_path):
    (tmp_path / "keras").mkdir()
    before = snapshot(tmp_path)
    dead = "http://127.0.0.1:9"  # nothing listens there: the download fails at once, as offline
    done = _hpsearch(["run", str(REPO / "studies" / "fashion-mnist.yaml"), "--storage",
                      f"sqlite:///{tmp_path / 'f.db'}", "--no-progress"], tmp_path,
                     KERAS_HOME=str(tmp_path / "keras"), https_proxy=dead, HTTPS_PROXY=dead)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert lines[-1].startswith("hpsearch: error: data.source keras:fashion_mnist: not in Keras' cache"
                                f" {tmp_path / 'keras' / 'datasets'}")
    assert not [ln for ln in lines if ln.startswith("hpsearch:")][:-1]
    after = snapshot(tmp_path) - before
    assert not [p for p in after if not p.startswith("keras")], after  # Keras may make its cache folder


def test_user_builder_gets_the_input_shape(workdir, capsys):
    """A user's Conv2D builder on digits as 8x8x1 images: meta carries X_shape_ (rows first) and classes."""
    study = write_study(workdir, lambda c: (
        set_(c, "data", {"source": "sklearn:digits", "reshape": [8, 8, 1], "rescale": 16, "max_rows": 200}),
        set_(c, "model", {"builder": "hps_user_builders:build_image_only"}),
        set_(c, "space", {"width": {"int": [2, 4]}}), set_(c, "search.n_trials", 1)))
    rc = main(["run", str(study), "--storage", f"sqlite:///{workdir / 'u.db'}", "--epochs", "1", "--no-progress"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert "1 complete" in out


def _images(t: Path, edit: Any = None, **data: Any) -> Path:
    return write_study(t, lambda c: set_(c, "data", {"source": "imgs/", **data}))


def _mixed(t: Path) -> Path:
    from PIL import Image

    write_image_folder(t / "imgs", corrupt=False)
    Image.fromarray(np.zeros((5, 5, 3), dtype=np.uint8)).save(t / "imgs" / "top" / "small.png")
    return _images(t)


CASES = [
    ("wrong-rank-for-builder", lambda t: write_study(t, lambda c: (
        set_(c, "model", {"builder": "hps_user_builders:build_image_only"}),
        set_(c, "space", {"width": {"int": [2, 4]}}))),
     ["model.builder", "build_image_only", "images", "(4,)", "data.reshape"]),
    ("images-mixed-sizes", _mixed, ["imgs", "different sizes", "data.image_size"]),
    ("image-class-folder-empty", lambda t: write_image_folder(t / "imgs", corrupt=False) and (
        (t / "imgs" / "zebra").mkdir() or _images(t)), ["imgs", "'zebra'", "no images"]),
    ("image-folder-one-class", lambda t: write_image_folder(t / "imgs", classes=("only",), corrupt=False)
     and _images(t), ["imgs", "two classes"]),
    ("image-corrupt-file", lambda t: write_image_folder(t / "imgs") and _images(t),
     ["broken.png", "data.skip_bad_files"]),
    ("npz-labels-not-matching-images", lambda t: np.savez(t / "i.npz", X=np.zeros((30, 4, 4, 1)), y=np.arange(29) % 2)
     or write_study(t, lambda c: set_(c, "data", {"source": "i.npz"})), ["i.npz", "30 feature rows but 29"]),
    ("reshape-wrong-size", lambda t: write_study(t, lambda c: set_(c, "data.reshape", [2, 3])),
     ["data.reshape", "[2, 3]"]),
]


@pytest.mark.parametrize("kind", ["run", "validate"])
@pytest.mark.parametrize("make,names", [pytest.param(m, n, id=i) for i, m, n in CASES])
def test_bad_nd_input_one_line_exit_2_nothing_written(kind, make, names, workdir, capsys):
    study = make(workdir)
    before = snapshot(workdir)
    rc, db = run_cli(kind, study, workdir)
    assert_user_error(rc, capsys, names, folder=workdir, before=before, db=db)
