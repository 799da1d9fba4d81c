"""An image study read from an ``s3://`` prefix (a real S3-compatible server: moto's server mode,
tests/conftest.py ``s3_bucket``): the snapshot records the fetched folder's file list, a worker that
joins by name from an empty folder (and an empty cache) fetches the prefix and finishes the budget,
and once an object changes in the bucket a joining worker refuses in one line naming the file."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from data_fixtures import write_image_folder

from hpsearch.cli import main
from hpsearch.data.cache import cache_dir
from hpsearch.data.snapshot import folder_manifest
from hpsearch.data.sources.s3folder import forget_fetches
from hpsearch.records import STUDY
from hpsearch.storage import child_env_and_url, open_storage
from hpsearch.study.run import prepare_context

pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning", "ignore::UserWarning")

REPO = Path(__file__).resolve().parents[2]


def _worker(url: str, name: str, cwd: Path, art: str) -> subprocess.CompletedProcess[str]:
    """``python -m hpsearch worker --study NAME --storage URL`` in ``cwd`` (the AWS settings inherited)."""
    bare, env_extra = child_env_and_url(url)
    env = {**os.environ, **env_extra, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "3"}
    cmd = [sys.executable, "-m", "hpsearch", "worker", "--study", name, "--storage", bare, "--artifacts", art,
           "--no-progress"]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def _study(folder: Path, name: str, url: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.yaml"
    path.write_text(f"""name: {name}
data:
  source: "{url}"
  image_size: [8, 8]
  rescale: 255
  split: {{valid: 0.25, test: 0.25, seed: 0}}
model: {{builder: mlp}}
space:
  n_neurons: {{int: [4, 8]}}
train: {{epochs: 1, batch_size: 8, pack: 1}}
search: {{engine: optuna, sampler: random, pruner: none, n_trials: 2, metric: accuracy, seed: 0}}
""")
    return path


def test_an_s3_image_study_is_joined_from_an_empty_folder_and_refused_once_an_object_changes(
        tmp_path, s3_bucket, postgres_url, monkeypatch, capsys):
    client, bucket = s3_bucket
    local = write_image_folder(tmp_path / "imgs", per_class=12, size=(8, 8), corrupt=False)
    for p in sorted(local.rglob("*.png")):
        client.upload_file(str(p), bucket, "stripes/" + p.relative_to(local).as_posix())
    url = f"s3://{bucket}/stripes/"
    forget_fetches()
    path = _study(tmp_path / "start", "s3-stripes", url)
    art = str(tmp_path / "art")

    ctx = prepare_context(path, storage=postgres_url, artifacts=art)  # the study, no trial yet
    ctx.storage.remove_session()

    attrs = ctx.study.user_attrs
    part = attrs[STUDY.DATA_SNAPSHOT]["parts"]["source"]
    assert part["kind"] == "files" and part["path"] == url and part["files"] == 24
    assert folder_manifest(cache_dir() / "s3" / bucket / "stripes") == folder_manifest(local)
    fetched = attrs[STUDY.DECISIONS]["data.source.files"]
    assert fetched["value"]["fetched"]["downloaded"] == 24 and fetched["value"]["hashed"] == 24
    assert f"data.source {url}: 24 objects listed at" in fetched["line"] and "24 downloaded" in fetched["line"]
    path.unlink()  # the worker has neither the study file nor the images
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("HPSEARCH_CACHE", str(tmp_path / "worker-cache"))

    done = _worker(postgres_url, "s3-stripes", empty, art)

    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout + done.stderr
    assert "24 objects listed at" in out and "24 downloaded" in out and "the same as the study's snapshot" in out
    study = optuna.load_study(study_name="s3-stripes", storage=open_storage(postgres_url))
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 2  # the exact budget, by the worker
    assert sorted(p.name for p in empty.iterdir()) == []
    assert len(list((tmp_path / "worker-cache" / "s3" / bucket / "stripes").rglob("*.png"))) == 24

    client.put_object(Bucket=bucket, Key="stripes/top/003.png", Body=b"not the same image")
    monkeypatch.setenv("HPSEARCH_CACHE", str(tmp_path / "third-cache"))
    forget_fetches()
    capsys.readouterr()

    assert main(["worker", "--study", "s3-stripes", "--storage", postgres_url, "--artifacts", art]) == 2

    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert f"data.source {url}: not the files study 's3-stripes' was started with" in err[0]
    assert "1 of 24 files differ: top/003.png is 18 bytes" in err[0] and "restore them" in err[0]
    study = optuna.load_study(study_name="s3-stripes", storage=open_storage(postgres_url))
    assert len(study.trials) == 2  # nothing written
