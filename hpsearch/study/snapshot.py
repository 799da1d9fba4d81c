"""The data snapshot a study records (DESIGN.md section 6; the file format is :mod:`hpsearch.data.snapshot`).

At a study's start its data is written once to the artifact store (``data-<sha256>.npz``, an Optuna
artifact of the study, so ``hpsearch delete`` removes it with the rest) and recorded as
``STUDY.DATA_SNAPSHOT`` together with the store's location: one automatic decision, said and stored.
Every later process that opens the study with data of its own (``hpsearch worker FILE``, ``hpsearch
run FILE`` again) compares fingerprints before it writes anything and refuses in one line when they
differ; a worker that joins by name alone reads the rows back (:func:`read_snapshot`).
"""

from __future__ import annotations

import inspect
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from hpsearch.data.cache import CACHE_ENV
from hpsearch.data.snapshot import Fingerprint, RawParts, pack, unpack
from hpsearch.errors import DataError, UserError
from hpsearch.models.builders import resolve_builder
from hpsearch.records import STUDY, clean_attr
from hpsearch.registry import BUILDERS
from hpsearch.storage.artifacts import ARTIFACTS_ENV, ArtifactStore, artifact_location
from hpsearch.trials.context import RunContext

__all__ = ["check_snapshot", "record_snapshot", "read_snapshot", "builder_file", "snapshot_file"]


def snapshot_file(sha256: str) -> str:
    """The snapshot's file name in the artifact store: its content hash."""
    return f"data-{sha256[:16]}.npz"


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"  # pragma: no cover


def check_snapshot(study: Any, fp: Fingerprint) -> None:
    """Refuse data that differ from the study's snapshot (before anything is written)."""
    stored = study.user_attrs.get(STUDY.DATA_SNAPSHOT)
    if not stored or stored.get("sha256") == fp.sha256:
        return
    name = study.study_name
    raise UserError(f"study {name!r} was started on other data ({fp.differences(stored.get('parts') or {})});"
                    f" give data.source the data the study was started with (or give the study a new name);"
                    f" a worker joins with no study file: hpsearch worker --study {name} --storage URL")


def _parts_line(fp: Fingerprint) -> str:
    out = []
    for name, p in fp.parts.items():
        if p["kind"] == "files":
            out.append(f"data.{name} {p['files']} files ({_size(p['bytes'])}, listed with their hashes; read from"
                       f" {p['path']} by every worker)")
        else:
            out.append(f"data.{name} {p['rows']} rows")
    return ", ".join(out)


def _folder_line(name: str, part: dict[str, Any], got: dict[str, Any]) -> str:
    """How this process read a folder part: fetched from S3 into the cache (or not), files hashed or
    taken from the hash index."""
    fetched = got.get("fetched")
    head = f"data.{name} {part['path']}: "
    if fetched:
        kept = fetched["objects"] - fetched["downloaded"]
        head += (f"{fetched['objects']} objects listed at {fetched['endpoint']}, {fetched['downloaded']} downloaded"
                 f" ({_size(fetched['bytes'])}) into the cache {fetched['cache']} ({CACHE_ENV} moves it), {kept}"
                 f" already there, {fetched['removed']} removed; ")
    unsaved = "" if got["saved"] else " (the index cannot be written: every start hashes them again)"
    return (head + f"{got['hashed']} files hashed, {got['reused']} unchanged since the hash index"
            f" {got['index']}{unsaved}")


def record_snapshot(ctx: RunContext, fp: Fingerprint) -> None:
    """Write the study's snapshot once (the first process to open it) and record it; a process that
    joins with the same data says so in one line. Each folder part read says how this process read
    it (fetched from S3, hashed or not): one line and a decision each."""
    from optuna.artifacts import upload_artifact

    study = ctx.study
    for name, got in fp.folders.items():
        value = {k: got[k] for k in ("fetched", "hashed", "reused", "index")}
        ctx.decide(f"data.{name}.files", value, _folder_line(name, fp.parts[name], got))
    if study.user_attrs.get(STUDY.DATA_SNAPSHOT):
        ctx.observer.message(f"hpsearch: data: the same as the study's snapshot (sha256 {fp.sha256[:12]})")
        return
    payload = pack(fp)
    file = snapshot_file(fp.sha256)
    tmp = tempfile.mkdtemp(prefix="hpsearch-snapshot-")
    try:
        path = os.path.join(tmp, file)
        Path(path).write_bytes(payload)
        aid = upload_artifact(artifact_store=ctx.artifact_store, file_path=path, study_or_trial=study,
                              mimetype="application/octet-stream")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    where = artifact_location(ctx.storage_url, ctx.artifacts)
    record = {"sha256": fp.sha256, "id": aid, "file": file, "bytes": len(payload), "artifacts": where,
              "parts": fp.parts}
    study.set_user_attr(STUDY.DATA_SNAPSHOT, clean_attr(record))
    ctx.decide("data.snapshot", {"sha256": fp.sha256, "id": aid, "bytes": len(payload)},
               f"data snapshot: {_parts_line(fp)} written once to the artifact store {where} as {file}"
               f" ({_size(len(payload))}, sha256 {fp.sha256[:12]}); workers join with:"
               f" hpsearch worker --study {study.study_name} --storage URL")


def read_snapshot(store: ArtifactStore, record: dict[str, Any], study_name: str,
                  where: str) -> tuple[RawParts, dict[str, list[list[Any]]]]:
    """The array parts and folder file lists of a study's recorded snapshot, from ``store``."""
    from optuna.artifacts import download_artifact
    from optuna.artifacts.exceptions import ArtifactNotFound

    file = str(record.get("file") or snapshot_file(str(record.get("sha256"))))
    tmp = tempfile.mkdtemp(prefix="hpsearch-snapshot-")
    try:
        path = os.path.join(tmp, file)
        try:
            download_artifact(artifact_store=store, file_path=path, artifact_id=str(record["id"]))
        except (ArtifactNotFound, OSError) as exc:
            raise UserError(f"study {study_name!r}: its data snapshot {file} cannot be read from the artifact store"
                            f" {where} ({type(exc).__name__}); give the study's store with --artifacts DIR (or"
                            f" s3://bucket/prefix, or {ARTIFACTS_ENV})") from None
        raws, manifests, sha = unpack(Path(path).read_bytes())
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if sha != record.get("sha256"):
        raise DataError(f"study {study_name!r}: the data snapshot {file} in {where} has sha256 {sha[:12]}, the study"
                        f" records {str(record.get('sha256'))[:12]}; give the study's store with --artifacts DIR")
    return raws, manifests


def builder_file(ref: Any) -> str | None:
    """The file of a user builder's module (``model.builder: module:function``), recorded on the
    study so that a worker that cannot import it is told which file it needs; None for a built-in."""
    if not isinstance(ref, str) or ref in BUILDERS:
        return None
    try:
        return inspect.getsourcefile(resolve_builder(ref))
    except (TypeError, UserError):  # a builder without a source file (a C extension)
        return None
