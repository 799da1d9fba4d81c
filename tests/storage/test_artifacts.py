"""The artifact store: where models go, the folder and S3 stores, models, curves and keep-best-K."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial

from hpsearch.data.prepare import Preprocessor
from hpsearch.errors import StorageError, UserError
from hpsearch.records import STUDY, TRIAL
from hpsearch.storage import open_storage
from hpsearch.storage.artifacts import (
    ARTIFACTS_ENV,
    LazyFileStore,
    artifact_location,
    artifact_store_for,
    check_store_writable,
    load_model_artifacts,
    save_curve_artifact,
    save_model_artifacts,
)
from hpsearch.storage.keep import keep_best_models

pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
optuna.logging.set_verbosity(optuna.logging.WARNING)


def test_artifact_locations(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    sub = tmp_path / "runs"
    assert artifact_location(f"sqlite:///{sub}/s.db", env={}) == str(sub / "hpsearch-artifacts")
    assert artifact_location("sqlite:///s.db", env={}) == str(tmp_path / "hpsearch-artifacts")
    pg = "postgresql+psycopg://u@h/db"
    assert artifact_location(pg, env={}) == str(tmp_path / "hpsearch-artifacts")
    assert artifact_location(pg, env={ARTIFACTS_ENV: "/data/art"}) == "/data/art"
    assert artifact_location(pg, "rel/art", env={ARTIFACTS_ENV: "/data/art"}) == str(tmp_path / "rel/art")
    assert artifact_location(pg, "s3://bucket/a/b/", env={}) == "s3://bucket/a/b"
    with pytest.raises(StorageError, match="unsupported scheme 'ftp'"):
        artifact_location(pg, "ftp://x/y", env={})
    assert not (tmp_path / "hpsearch-artifacts").exists()


def test_artifact_store_refuses_a_file(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(StorageError, match="is a file, not a folder"):
        artifact_store_for("sqlite:///x.db", str(tmp_path / "f"), env={})


def test_s3_artifact_store(monkeypatch):
    import boto3  # noqa: F401  (an optional dependency of hpsearch, a test dependency: no skip)

    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    store = artifact_store_for("sqlite:///x.db", "s3://bucket/pre/fix", env={})
    assert store.prefix == "pre/fix" and store.inner.bucket == "bucket"
    monkeypatch.setitem(sys.modules, "boto3", None)
    with pytest.raises(StorageError, match="needs boto3: pip install boto3"):
        artifact_store_for("sqlite:///x.db", "s3://bucket/p", env={})


def test_an_s3_store_that_cannot_be_used_is_one_line_before_anything_is_written(s3_bucket, monkeypatch, tmp_path):
    """No credentials, or a bucket that is not there, was a botocore traceback at the first upload
    (the data snapshot), after the study was created; now check_store_writable says it in one line."""
    _, bucket = s3_bucket
    check_store_writable(artifact_store_for("sqlite:///x.db", f"s3://{bucket}/pre", env={}))  # a usable bucket
    with pytest.raises(StorageError, match=r"s3://no-such-bucket-x: the bucket cannot be used \(S3 says"):
        check_store_writable(artifact_store_for("sqlite:///x.db", "s3://no-such-bucket-x/pre", env={}))
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    import boto3

    monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)  # its credentials, resolved above, are cached
    with pytest.raises(StorageError, match=rf"s3://{bucket}: no AWS credentials found") as ei:
        check_store_writable(artifact_store_for("sqlite:///x.db", f"s3://{bucket}", env={}))
    assert "\n" not in str(ei.value)


def test_lazy_file_store_creates_its_folder_on_the_first_write(tmp_path):
    folder = tmp_path / "a" / "b"
    store = LazyFileStore(folder)
    assert store.folder == folder and not folder.exists()
    with pytest.raises(optuna.artifacts.exceptions.ArtifactNotFound):
        store.open_reader("missing")
    assert not folder.exists()
    store.write("x", io.BytesIO(b"data"))
    assert folder.is_dir() and store.open_reader("x").read() == b"data"
    store.remove("x")
    assert list(folder.iterdir()) == []


def test_artifact_round_trip(storage_url, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    storage = open_storage(storage_url)
    store = artifact_store_for(storage_url, env={})
    folder = Path(artifact_location(storage_url, env={}))
    assert not folder.exists()  # created on demand only
    study = optuna.create_study(storage=storage)
    trial = study.ask()
    src = tmp_path / "model.keras"
    src.write_bytes(b"\x00weights\xff" * 100)
    artifact_id = optuna.artifacts.upload_artifact(
        artifact_store=store, file_path=str(src), study_or_trial=trial, storage=storage
    )
    study.tell(trial, 1.0)
    assert folder.is_dir() and folder == tmp_path / "hpsearch-artifacts"
    metas = optuna.artifacts.get_all_artifact_meta(study.trials[0], storage=storage)
    assert [m.artifact_id for m in metas] == [artifact_id]
    out = tmp_path / "back.keras"
    optuna.artifacts.download_artifact(artifact_store=store, file_path=str(out), artifact_id=artifact_id)
    assert out.read_bytes() == src.read_bytes()


def test_model_and_preprocessing_round_trip(sqlite_url, tmp_path):
    import keras
    import numpy as np

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, activation="softmax")])
    pre = Preprocessor(task="classification", n_features=3, mean=[0.0, 1.0, 2.0], scale=[1.0, 2.0, 3.0],
                       classes=["a", "b"], feature_names=["x", "y", "z"])
    storage = open_storage(sqlite_url)
    study = optuna.create_study(storage=storage)
    store = artifact_store_for(sqlite_url, str(tmp_path / "art"), env={})
    trial = study.ask()
    mid, pid = save_model_artifacts(store, trial, model, pre)
    study.tell(trial, 1.0)
    metas = optuna.artifacts.get_all_artifact_meta(study.trials[0], storage=storage)
    names = {m.artifact_id: m.filename for m in metas}
    assert names == {mid: "model.keras", pid: "preprocess.json"}
    back, back_pre = load_model_artifacts(store, mid, pid)
    assert back_pre == pre
    X = np.ones((4, 3), dtype="float32")
    np.testing.assert_allclose(back.predict(X, verbose=0), model.predict(X, verbose=0), rtol=1e-6)
    with pytest.raises(UserError, match="cannot be read from the artifact store"):
        load_model_artifacts(store, "no-such-id", pid)


def test_curve_artifact_and_its_failure(sqlite_url, tmp_path, monkeypatch):
    study = optuna.create_study(storage=open_storage(sqlite_url))
    store = artifact_store_for(sqlite_url, str(tmp_path / "art"), env={})
    trial = study.ask()
    cid = save_curve_artifact(store, trial, {"loss": [1.0, 0.5], "val_loss": [1.1, 0.7]}, "trial 0")
    assert cid is not None
    meta = optuna.artifacts.get_all_artifact_meta(trial)[0]
    assert (meta.artifact_id, meta.mimetype) == (cid, "image/png")

    import hpsearch.plots

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("no canvas")

    monkeypatch.setattr(hpsearch.plots, "save_curve_png", broken)
    assert save_curve_artifact(store, trial, {"loss": [1.0]}, "trial 0") is None


def _study_with_models(sqlite_url: str, store: LazyFileStore, values: list[float], direction: str) -> optuna.Study:
    study = optuna.create_study(storage=open_storage(sqlite_url), direction=direction)
    for number, value in enumerate(values):
        ids = {}
        for key in (TRIAL.MODEL_ARTIFACT, TRIAL.PREPROCESS_ARTIFACT, TRIAL.CURVE_ARTIFACT):
            ids[key] = f"{key}-{number}"
            store.write(ids[key], io.BytesIO(b"x"))
        study.add_trial(create_trial(params={"x": float(number)}, distributions={"x": FloatDistribution(0, 99)},
                                     value=value, user_attrs=ids))
    study.add_trial(create_trial(state=TrialState.FAIL))
    return study


@pytest.mark.parametrize("direction", ["maximize", "minimize"])
def test_keep_best_models(sqlite_url, tmp_path, direction):
    store = LazyFileStore(tmp_path / "art")
    sign = 1.0 if direction == "maximize" else -1.0
    # trial 1 and 3 tie; the earlier (1) ranks first, as in Optuna's best_trial
    values = [sign * v for v in (0.5, 0.9, 0.1, 0.9, 0.7)]
    study = _study_with_models(sqlite_url, store, values, direction)
    assert keep_best_models(study, store, direction, 2) == 9  # trials 0, 2, 4: model, preprocess, curve
    left = sorted(p.name for p in (tmp_path / "art").iterdir())
    assert left == sorted(f"{k}-{n}" for n in (1, 3)
                          for k in (TRIAL.MODEL_ARTIFACT, TRIAL.PREPROCESS_ARTIFACT, TRIAL.CURVE_ARTIFACT))
    assert len(study.user_attrs[STUDY.REMOVED_ARTIFACTS]) == 9
    assert keep_best_models(study, store, direction, 2) == 0  # nothing twice
    # the study's best model is never removed, even when it falls out of the best K
    study.set_user_attr(STUDY.BEST_MODEL_ARTIFACT, f"{TRIAL.MODEL_ARTIFACT}-3")
    assert keep_best_models(study, store, direction, 1) == 2  # trial 3: preprocess and curve only
    assert (tmp_path / "art" / f"{TRIAL.MODEL_ARTIFACT}-3").exists()
    assert not (tmp_path / "art" / f"{TRIAL.CURVE_ARTIFACT}-3").exists()


def test_keep_best_models_tolerates_files_removed_by_another_worker(sqlite_url, tmp_path):
    store = LazyFileStore(tmp_path / "art")
    study = _study_with_models(sqlite_url, store, [1.0, 2.0], "maximize")
    store.remove(f"{TRIAL.MODEL_ARTIFACT}-0")  # another worker was faster
    assert keep_best_models(study, store, "maximize", 1) == 3
    assert f"{TRIAL.MODEL_ARTIFACT}-0" in study.user_attrs[STUDY.REMOVED_ARTIFACTS]
