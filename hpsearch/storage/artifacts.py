"""The artifact store: trained models, their preprocessing and training curves, beside the study.

Optuna's storage holds the record; the files it points at (``model.keras``, ``preprocess.json``,
a training-curve PNG) are Optuna artifacts in a folder or an S3 bucket. This module decides where
they go (:func:`artifact_location`), opens the store (:func:`artifact_store_for`), saves and loads
a model with its preprocessing, (the keep-best-K rule is :mod:`hpsearch.storage.keep`).

Models load with Keras ``safe_mode=True`` and preprocessing is JSON: nothing is unpickled.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Protocol

from hpsearch import plots
from hpsearch.data.prepare import Preprocessor
from hpsearch.errors import StorageError, UserError
from hpsearch.storage import is_sqlite, redact_url, sqlite_path

if TYPE_CHECKING:
    import optuna

__all__ = [
    "ARTIFACTS_ENV",
    "ARTIFACTS_DIRNAME",
    "MODEL_FILE",
    "PREPROCESS_FILE",
    "CURVE_FILE",
    "ArtifactStore",
    "LazyFileStore",
    "PrefixedStore",
    "artifact_location",
    "artifact_store_for",
    "check_store_writable",
    "save_model_artifacts",
    "load_model_artifacts",
    "save_curve_artifact",
]

ARTIFACTS_ENV = "HPSEARCH_ARTIFACTS"
ARTIFACTS_DIRNAME = "hpsearch-artifacts"
MODEL_FILE = "model.keras"
PREPROCESS_FILE = "preprocess.json"
CURVE_FILE = "training-curve.png"


class ArtifactStore(Protocol):
    """What Optuna's ``upload_artifact`` / ``download_artifact`` and optuna-dashboard need of a store."""

    def open_reader(self, artifact_id: str) -> BinaryIO: ...

    def write(self, artifact_id: str, content_body: BinaryIO) -> None: ...

    def remove(self, artifact_id: str) -> None: ...


# --------------------------------------------------------------------------------------------------
# Where and which store
# --------------------------------------------------------------------------------------------------


def _artifact_target(storage_url: Any, artifacts: str | None, env: Mapping[str, str]) -> Path | tuple[str, str]:
    """A folder, or (bucket, prefix) for S3."""
    spec = artifacts if artifacts is not None and str(artifacts).strip() else env.get(ARTIFACTS_ENV)
    if spec is not None and str(spec).strip():
        spec = str(spec).strip()
        if spec.lower().startswith("s3://"):
            bucket, _, prefix = spec[5:].partition("/")
            if not bucket:
                raise StorageError(f"artifact store {spec!r} names no bucket; write s3://bucket/prefix")
            return bucket, prefix.strip("/")
        if "://" in spec:
            scheme = spec.split("://", 1)[0]
            raise StorageError(
                f"artifact store {redact_url(spec)!r} has an unsupported scheme {scheme!r}; "
                f"give a folder path or s3://bucket/prefix (--artifacts or {ARTIFACTS_ENV})"
            )
        return Path(spec).expanduser().resolve()
    url = str(getattr(storage_url, "url", storage_url) or "")  # an RDBStorage is fine too
    path = sqlite_path(url) if url and is_sqlite(url) else None
    if path is not None:
        return path.expanduser().resolve().parent / ARTIFACTS_DIRNAME
    return (Path.cwd() / ARTIFACTS_DIRNAME).resolve()


def artifact_location(storage_url: Any, artifacts: str | None = None, env: Mapping[str, str] = os.environ) -> str:
    """Where trained models go, for humans: an absolute folder or ``s3://bucket/prefix``.

    Precedence: ``artifacts`` (``--artifacts`` / study file) > ``$HPSEARCH_ARTIFACTS`` > default
    (a ``hpsearch-artifacts`` folder beside the SQLite file, or ``./hpsearch-artifacts``).
    """
    target = _artifact_target(storage_url, artifacts, env)
    if isinstance(target, Path):
        return str(target)
    bucket, prefix = target
    return f"s3://{bucket}/{prefix}" if prefix else f"s3://{bucket}"


def artifact_store_for(
    storage_url: Any, artifacts: str | None = None, env: Mapping[str, str] = os.environ
) -> ArtifactStore:
    """The Optuna artifact store for a storage (see :func:`artifact_location` for the rules).

    A folder store creates its folder on the first write, so read-only commands leave no trace.
    ``s3://bucket/prefix`` gives Optuna's ``Boto3ArtifactStore`` (boto3 is imported only then)
    whose keys start with ``prefix/``.
    """
    target = _artifact_target(storage_url, artifacts, env)
    if isinstance(target, Path):
        if target.exists() and not target.is_dir():
            raise StorageError(
                f"artifact store {str(target)!r} is a file, not a folder; give a folder path in "
                f"--artifacts / {ARTIFACTS_ENV}"
            )
        return LazyFileStore(target)
    bucket, prefix = target
    try:
        import boto3  # noqa: F401  (only to refuse early: Optuna imports it itself)
    except ImportError:
        raise StorageError(
            f"artifact store s3://{bucket}/{prefix} needs boto3: pip install boto3 "
            f"(or give a folder path in --artifacts / {ARTIFACTS_ENV})"
        ) from None
    from optuna.artifacts import Boto3ArtifactStore

    store = Boto3ArtifactStore(bucket)
    return PrefixedStore(store, prefix) if prefix else store


def check_store_writable(store: ArtifactStore) -> None:
    """Refuse a folder store that cannot be written, before the database is touched (a run would
    otherwise create its study and fail every trial's model). Leaves nothing behind: the folder is
    not created; a probe file in it (or in its nearest existing parent) is removed at once. An S3
    store's bucket is asked for once (``HeadBucket``): no credentials, a bucket that is missing or
    not the user's, or an endpoint that does not answer is one line, not the first upload's traceback."""
    if isinstance(store, LazyFileStore):
        store.check_writable()
        return
    inner = store.inner if isinstance(store, PrefixedStore) else store
    client, bucket = getattr(inner, "client", None), getattr(inner, "bucket", None)
    if client is not None and isinstance(bucket, str):
        _check_bucket(client, bucket)


def _check_bucket(client: Any, bucket: str) -> None:
    from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

    other = f"or give a folder path in --artifacts / {ARTIFACTS_ENV}"
    try:
        client.head_bucket(Bucket=bucket)
    except NoCredentialsError:
        raise StorageError(f"artifact store s3://{bucket}: no AWS credentials found (AWS_ACCESS_KEY_ID,"
                           f" ~/.aws/credentials or a role); set them, {other}") from None
    except ClientError as e:
        code = e.response.get("Error", {}).get("Code", "?")
        raise StorageError(f"artifact store s3://{bucket}: the bucket cannot be used (S3 says {code}: it does not"
                           f" exist or these credentials may not use it); check its name and the credentials,"
                           f" {other}") from None
    except BotoCoreError as e:
        raise StorageError(f"artifact store s3://{bucket}: {type(e).__name__}; check AWS_ENDPOINT_URL and the"
                           f" network, {other}") from None


class LazyFileStore:
    """Optuna's ``FileSystemArtifactStore`` on ``folder``, which it creates on the first write."""

    def __init__(self, folder: Path) -> None:
        from optuna.artifacts import FileSystemArtifactStore

        self.folder = Path(folder)
        self._inner = FileSystemArtifactStore(self.folder)

    def open_reader(self, artifact_id: str) -> BinaryIO:
        return self._inner.open_reader(artifact_id)

    def write(self, artifact_id: str, content_body: BinaryIO) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        self._inner.write(artifact_id, content_body)

    def remove(self, artifact_id: str) -> None:
        self._inner.remove(artifact_id)

    def check_writable(self) -> None:
        """See :func:`check_store_writable`."""
        place = self.folder
        while not place.exists() and place != place.parent:
            place = place.parent
        fix = f"give a folder you can write to in --artifacts / {ARTIFACTS_ENV} (or artifacts: in the study file)"
        if not place.is_dir():
            raise StorageError(f"artifact store {str(self.folder)!r}: {str(place)!r} is not a folder; {fix}")
        try:
            fd, probe = tempfile.mkstemp(prefix=".hpsearch-probe-", dir=place)
        except OSError as e:
            reason = e.strerror or type(e).__name__
            raise StorageError(f"artifact store {str(self.folder)!r} is not writable ({reason}); {fix}") from None
        os.close(fd)
        os.unlink(probe)

    def __repr__(self) -> str:
        return f"LazyFileStore({str(self.folder)!r})"


class PrefixedStore:
    """Wrap an artifact store so that every artifact id is stored under ``prefix/``."""

    def __init__(self, inner: ArtifactStore, prefix: str) -> None:
        self.inner = inner
        self.prefix = prefix.strip("/")

    def _key(self, artifact_id: str) -> str:
        return f"{self.prefix}/{artifact_id}"

    def open_reader(self, artifact_id: str) -> BinaryIO:
        return self.inner.open_reader(self._key(artifact_id))

    def write(self, artifact_id: str, content_body: BinaryIO) -> None:
        self.inner.write(self._key(artifact_id), content_body)

    def remove(self, artifact_id: str) -> None:
        self.inner.remove(self._key(artifact_id))

    def __repr__(self) -> str:
        return f"PrefixedStore({self.inner!r}, {self.prefix!r})"


# --------------------------------------------------------------------------------------------------
# Models, preprocessing, curves
# --------------------------------------------------------------------------------------------------


def save_model_artifacts(
    store: ArtifactStore, target: optuna.Trial | optuna.Study, model: Any, preprocessor: Preprocessor
) -> tuple[str, str]:
    """Upload ``model.keras`` and ``preprocess.json`` to ``target`` (a running trial or a study).

    Returns (model artifact id, preprocessing artifact id).
    """
    from optuna.artifacts import upload_artifact

    tmp = tempfile.mkdtemp(prefix="hpsearch-model-")
    try:
        mpath = os.path.join(tmp, MODEL_FILE)
        model.save(mpath)
        ppath = os.path.join(tmp, PREPROCESS_FILE)
        Path(ppath).write_text(preprocessor.to_json(), encoding="utf-8")
        mid = upload_artifact(artifact_store=store, file_path=mpath, study_or_trial=target)
        pid = upload_artifact(artifact_store=store, file_path=ppath, study_or_trial=target,
                              mimetype="application/json")
        return mid, pid
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def load_model_artifacts(store: ArtifactStore, model_id: str, preprocess_id: str) -> tuple[Any, Preprocessor]:
    """Download and load a stored model (Keras safe mode, not compiled) and its preprocessing."""
    import keras
    from optuna.artifacts import download_artifact
    from optuna.artifacts.exceptions import ArtifactNotFound

    tmp = tempfile.mkdtemp(prefix="hpsearch-load-")
    try:
        mpath = os.path.join(tmp, MODEL_FILE)
        ppath = os.path.join(tmp, PREPROCESS_FILE)
        try:
            download_artifact(artifact_store=store, file_path=mpath, artifact_id=model_id)
            download_artifact(artifact_store=store, file_path=ppath, artifact_id=preprocess_id)
        except (ArtifactNotFound, OSError) as exc:
            raise UserError(
                f"the stored model {model_id} cannot be read from the artifact store ({type(exc).__name__});"
                f" check --artifacts / {ARTIFACTS_ENV} points at the study's artifact folder"
            ) from None
        model = keras.models.load_model(mpath, compile=False, safe_mode=True)
        return model, Preprocessor.from_json(Path(ppath).read_text(encoding="utf-8"))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def save_curve_artifact(
    store: ArtifactStore, trial: optuna.Trial, history: Mapping[str, list[float]], title: str
) -> str | None:
    """Upload a training-curve PNG of ``history`` to ``trial``; its artifact id, or None.

    Best effort: a figure is never worth a trained trial, so any failure (no matplotlib, a full
    disk, a store that refuses) gives None.
    """
    from optuna.artifacts import upload_artifact

    tmp = tempfile.mkdtemp(prefix="hpsearch-curve-")
    try:
        path = os.path.join(tmp, CURVE_FILE)
        plots.save_curve_png(dict(history), path, title)
        return upload_artifact(artifact_store=store, file_path=path, study_or_trial=trial, mimetype="image/png")
    except Exception:  # noqa: BLE001 - see the docstring: the trial must not fail for its plot
        return None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
