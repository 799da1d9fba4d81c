"""Joining a study by name: ``hpsearch worker --study NAME --storage URL``, with no study file and
no data of its own (DESIGN.md section 6).

The configuration is the study file stored on the study (``STUDY.CONFIG``); the data is the study's
snapshot (``STUDY.DATA_SNAPSHOT``), read from the artifact store the study records (or the one
``--artifacts`` names). A folder part (images) is read from its recorded path, or fetched from its
``s3://`` prefix into the local cache, and its files are checked one by one against the snapshot's
list before anything else: a worker whose files differ refuses in one line naming them. A user
builder (``model.builder: module:function``) must be importable here; when it is not, the worker
says which file the study was started with.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hpsearch.data.snapshot import RawParts, adopt, check_folders, part_specs
from hpsearch.errors import ConfigError, UserError
from hpsearch.models.builders import resolve_builder
from hpsearch.records import STUDY
from hpsearch.registry import BUILDERS
from hpsearch.spec.config import StudyConfig
from hpsearch.storage import redact_url
from hpsearch.storage.artifacts import artifact_location, artifact_store_for
from hpsearch.storage.queries import open_storage_for_reading
from hpsearch.study.snapshot import read_snapshot
from hpsearch.study.validate import parse_study_config

__all__ = ["Joined", "join_study"]


@dataclass
class Joined:
    """What a worker that joins by name runs with."""

    cfg: StudyConfig
    raws: RawParts
    storage: str  # the storage URL
    artifacts: str  # the artifact store: --artifacts, else the one the study records


def _load(name: str, st: Any, url: str) -> Any:
    import optuna

    try:
        return optuna.load_study(study_name=name, storage=st)
    except KeyError:
        raise UserError(f"study {name!r} does not exist in the storage {redact_url(url)}; list its studies with:"
                        f" hpsearch status --storage URL (or start the study: hpsearch run FILE)") from None


def _check_builder(name: str, ref: Any, attrs: dict[str, Any]) -> None:
    """A user builder must be importable here: else one line naming the file the study used."""
    if not isinstance(ref, str) or ref in BUILDERS:
        return
    base = attrs.get(STUDY.BASE_DIR)
    if base and Path(base).is_dir() and str(Path(base).resolve()) not in sys.path:
        sys.path.append(str(Path(base).resolve()))  # as the study file's folder is for `hpsearch run`
    try:
        resolve_builder(ref)
    except ConfigError as exc:
        file = attrs.get(STUDY.BUILDER_FILE)
        module = ref.partition(":")[0]
        need = (f"the study was started with {file}: copy it to this machine and put its folder on PYTHONPATH"
                if file else f"install the package of {module!r} or put its folder on PYTHONPATH")
        why = type(exc.__cause__).__name__ if exc.__cause__ is not None else "no such function"
        raise ConfigError(f"model.builder: study {name!r} builds its models with {ref}, which this worker cannot"
                          f" import ({why}); {need}") from None


def join_study(name: str, storage: str | None, artifacts: str | None = None) -> Joined:
    """The stored configuration and data snapshot of the study ``name`` (one-line UserErrors)."""
    import yaml

    url, st = open_storage_for_reading(storage)
    try:
        attrs = _load(name, st, url).user_attrs
    finally:
        st.engine.dispose()  # the worker opens its own storage: no connection kept from here
    text, record = attrs.get(STUDY.CONFIG), attrs.get(STUDY.DATA_SNAPSHOT)
    if not text or not record:
        missing = "configuration" if not text else "data snapshot"
        raise UserError(f"study {name!r} records no {missing} (it was started by an older hpsearch); join it with"
                        f" its study file: hpsearch worker FILE --storage URL")
    where = artifacts or str(record.get("artifacts") or attrs.get(STUDY.ARTIFACTS) or "")
    store = artifact_store_for(url, where or None)
    raws, manifests = read_snapshot(store, record, name, artifact_location(url, where or None))
    mapping = yaml.safe_load(text)
    adopt(part_specs(mapping.get("data") or {}), raws)  # memory: arrays of a search started from Python
    _check_builder(name, (mapping.get("model") or {}).get("builder"), attrs)
    cfg = parse_study_config(mapping, where=f"study {name!r} (its stored configuration)",
                             base_dir=attrs.get(STUDY.BASE_DIR), source_text=text)
    check_folders(cfg, manifests, name)  # an image folder (or its s3:// copy) the study was not started with
    return Joined(cfg, raws, url, artifact_location(url, where or None))
