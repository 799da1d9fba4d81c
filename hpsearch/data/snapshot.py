"""Data snapshots: the exact input data of a study, fingerprinted, so that every process that joins a
study trains on byte-identical data or refuses (DESIGN.md section 6).

A study's data is one or more parts: ``source`` (``data.source``), and ``valid`` / ``test`` when
``data.valid`` / ``data.test`` name their own sets. Each part is one of two kinds:

* ``arrays``: the raw rows a source gives (tables, ``.npz`` arrays, scikit-learn and Keras datasets,
  arrays handed over from Python), before the seeded split and the scaling, which every process
  recomputes the same way. They travel as one ``.npz`` (:func:`pack` / :func:`unpack`); text columns
  (object arrays) are stored as JSON text, so nothing is pickled.
* ``files``: a folder source (images) is read from its path, or from its copy in the local cache
  for an ``s3://`` prefix, by every process; its fingerprint is the list of its files with their
  sizes and SHA-256 (:func:`folder_manifest`; unchanged files are not re-hashed at each start, see
  :mod:`hpsearch.data.cache`). A worker that joins by name checks its copy file by file against the
  list the snapshot recorded (:func:`check_folders`).

The fingerprint of a part is the SHA-256 of its feature names, shapes, dtypes and bytes (or of its
file list); the study's is the SHA-256 of its parts' (:attr:`Fingerprint.sha256`).
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from hpsearch.data.cache import hashed_files
from hpsearch.data.fixed import PARTS as FIXED_PARTS
from hpsearch.data.fixed import load_part, part_config
from hpsearch.data.sources.base import RawData, source_for
from hpsearch.errors import DataError

if TYPE_CHECKING:  # pragma: no cover
    from hpsearch.spec.config import StudyConfig

__all__ = ["Fingerprint", "RawParts", "part_specs", "load_raw", "fingerprint", "folder_manifest", "check_folders",
           "pack", "unpack", "adopt"]

#: part name ("source", "valid", "test") -> the raw rows its source gave
RawParts = dict[str, RawData]


def part_specs(data: Any) -> dict[str, str]:
    """Part name -> its ``data:`` value, for a study's ``data`` section (a model or a mapping)."""
    get = data.get if isinstance(data, dict) else lambda k: getattr(data, k, None)
    out = {"source": str(get("source"))}
    for name in FIXED_PARTS:
        if get(name) is not None:
            out[name] = str(get(name))
    return out


def _part_cfg(cfg: StudyConfig, name: str, spec: str) -> StudyConfig:
    return cfg if name == "source" else part_config(cfg, spec)


def _folder(cfg: StudyConfig, name: str, spec: str) -> tuple[Path | None, dict[str, Any] | None]:
    """The folder a folder part reads (None for a part of rows), and what this process fetched to
    read it (None for a local folder)."""
    source, part = source_for(spec), _part_cfg(cfg, name, spec)
    path = source.locate(part)
    if path is None or not path.is_dir():
        return None, None
    return path, source.fetched(part)


def load_raw(cfg: StudyConfig) -> RawParts | None:
    """Every part's raw rows, read from its source; None when ``data.source`` streams from disk."""
    source = source_for(cfg.data.source)
    if source.streams(cfg):
        return None
    out: RawParts = {"source": source.load(cfg)}
    for name, spec in part_specs(cfg.data).items():
        if name != "source":
            out[name] = load_part(cfg, name, spec)
    return out


def _json_bytes(a: np.ndarray) -> bytes:
    """An object array (text columns, gaps) as JSON text: numpy scalars as Python ones, NaN kept."""
    def plain(v: Any) -> Any:
        return v.item() if isinstance(v, np.generic) else str(v)

    return json.dumps(a.tolist(), default=plain, allow_nan=True, separators=(",", ":")).encode()


def _hash_array(h: Any, a: np.ndarray) -> None:
    h.update(f"{a.shape}|{a.dtype.str}|".encode())
    h.update(_json_bytes(a) if a.dtype.kind == "O" else np.ascontiguousarray(a).tobytes())


def _part_digest(raw: RawData) -> str:
    h = hashlib.sha256(json.dumps(raw.feature_names).encode())
    for a in (np.asarray(raw.X), np.asarray(raw.y)):
        _hash_array(h, a)
    return h.hexdigest()


def folder_manifest(root: Path) -> list[list[Any]]:
    """Every file under ``root`` (hidden names left out), sorted: [relative path, size, sha256]."""
    return hashed_files(root)[0]


def _manifest_diff(mine: list[list[Any]], theirs: list[list[Any]]) -> str:
    """The files of two file lists that differ, for a one-line message (the first three named)."""
    a = {str(f[0]): (f[1], f[2]) for f in mine}
    b = {str(f[0]): (f[1], f[2]) for f in theirs}
    out = [f"{k} missing here" for k in sorted(b.keys() - a.keys())]
    out += [f"{k} not in the study's list" for k in sorted(a.keys() - b.keys())]
    for k in sorted(a.keys() & b.keys()):
        if a[k] != b[k]:
            out.append(f"{k} is {a[k][0]} bytes, sha256 {str(a[k][1])[:12]} here, {b[k][0]} bytes,"
                       f" sha256 {str(b[k][1])[:12]} in the study")
    more = f" and {len(out) - 3} more" if len(out) > 3 else ""
    return f"{len(out)} of {len(b)} files differ: " + "; ".join(out[:3]) + more


def check_folders(cfg: StudyConfig, manifests: dict[str, list[list[Any]]], study_name: str) -> None:
    """Each folder part's files (fetched first, for an ``s3://`` prefix) against the file list the
    study's snapshot recorded: a DataError naming the files that differ."""
    for name, spec in part_specs(cfg.data).items():
        recorded = manifests.get(name)
        if recorded is None:
            continue
        folder, _fetched = _folder(cfg, name, spec)
        if folder is None:  # a local folder that is not there: the image source says so when it loads
            continue
        mine = folder_manifest(folder)
        if mine != recorded:
            raise DataError(f"data.{name} {spec}: not the files study {study_name!r} was started with"
                            f" ({_manifest_diff(mine, recorded)}); restore them (or start a new study on these)")


@dataclass
class Fingerprint:
    """A study's data as a snapshot records it: per part its kind and figures, and the one digest."""

    sha256: str
    parts: dict[str, dict[str, Any]]
    raws: RawParts = field(default_factory=dict)  # the array parts' rows (what :func:`pack` writes)
    manifests: dict[str, list[list[Any]]] = field(default_factory=dict)  # the folder parts' file lists
    #: the folder parts as this process read them: "fetched" (an s3:// copy), "hashed", "reused", "index", "saved"
    folders: dict[str, dict[str, Any]] = field(default_factory=dict)

    def differences(self, other: dict[str, dict[str, Any]]) -> str:
        """Which parts differ from a recorded snapshot's ``parts``, for a one-line message."""
        out = []
        for name, mine in self.parts.items():
            theirs = other.get(name) or {}
            if mine.get("sha256") != theirs.get("sha256"):
                figures = "files" if mine["kind"] == "files" else "rows"
                out.append(f"data.{name}: {mine.get(figures)} {figures}, sha256 {mine['sha256'][:12]} here,"
                           f" {theirs.get(figures)} {figures}, sha256 {str(theirs.get('sha256'))[:12]} in the study")
        return "; ".join(out) or "the parts differ"


def fingerprint(cfg: StudyConfig, raws: RawParts | None) -> Fingerprint:
    """The fingerprint of a study's data: the array parts from ``raws``, the folder parts read from
    their paths (hashed file by file)."""
    parts: dict[str, dict[str, Any]] = {}
    manifests: dict[str, list[list[Any]]] = {}
    folders: dict[str, dict[str, Any]] = {}
    arrays: RawParts = {}
    for name, spec in part_specs(cfg.data).items():
        folder, fetched = _folder(cfg, name, spec)
        if folder is not None:
            files, stats = hashed_files(folder)
            manifests[name] = files
            digest = hashlib.sha256(json.dumps(files).encode()).hexdigest()
            parts[name] = {"kind": "files", "path": fetched["url"] if fetched else str(folder), "files": len(files),
                           "bytes": sum(f[1] for f in files), "sha256": digest}
            folders[name] = {"path": str(folder), "fetched": fetched, "hashed": stats.hashed, "reused": stats.reused,
                             "index": str(stats.index), "saved": stats.saved}
            continue
        if raws is None or name not in raws:
            raise DataError(f"data.{name}: {spec} gave no rows to fingerprint")
        raw = arrays[name] = raws[name]
        parts[name] = {"kind": "arrays", "rows": len(raw.y), "shape": list(np.asarray(raw.X).shape[1:]),
                       "sha256": _part_digest(raw)}
    total = hashlib.sha256("".join(f"{n}:{p['sha256']};" for n, p in parts.items()).encode()).hexdigest()
    return Fingerprint(total, parts, arrays, manifests, folders)


def pack(fp: Fingerprint) -> bytes:
    """The snapshot file: the array parts as one ``.npz`` (object arrays as JSON text) and, in its
    ``meta`` entry, each part's feature names, ``where``, info, and the folder parts' file lists."""
    arrays: dict[str, np.ndarray] = {}
    meta: dict[str, Any] = {"sha256": fp.sha256, "parts": {}, "manifests": fp.manifests}
    for name, raw in fp.raws.items():
        entry: dict[str, Any] = {"names": raw.feature_names, "where": raw.where, "info": raw.info, "json": {}}
        for key, a in (("X", np.asarray(raw.X)), ("y", np.asarray(raw.y))):
            if a.dtype.kind == "O":
                entry["json"][key] = list(a.shape)
                a = np.frombuffer(_json_bytes(a), dtype=np.uint8)
            arrays[f"{name}__{key}"] = a
        meta["parts"][name] = entry
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    buf = io.BytesIO()
    np.savez(buf, **arrays)  # type: ignore[arg-type]
    return buf.getvalue()


def unpack(payload: bytes) -> tuple[RawParts, dict[str, list[list[Any]]], str]:
    """(array parts, folder parts' file lists, recorded sha256) of a snapshot file; nothing unpickled."""
    with np.load(io.BytesIO(payload), allow_pickle=False) as z:
        meta = json.loads(z["meta"].tobytes().decode())
        raws: RawParts = {}
        for name, entry in meta["parts"].items():
            got = []
            for key in ("X", "y"):
                a = z[f"{name}__{key}"]
                shape = entry["json"].get(key)
                if shape is not None:
                    a = np.array(json.loads(a.tobytes().decode()), dtype=object).reshape(shape)
                got.append(a)
            raws[name] = RawData(got[0], got[1], entry["names"], entry["where"], entry["info"])
    return raws, meta["manifests"], str(meta["sha256"])


def adopt(specs: dict[str, str], raws: RawParts) -> None:
    """Hand a snapshot's rows to the sources that live in one process (``memory:``), so the study's
    configuration validates and loads in this one too."""
    for name, raw in raws.items():
        if name in specs:
            source_for(specs[name]).adopt(specs[name], raw)
