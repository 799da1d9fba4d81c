"""``hpsearch.load_split(study)``: a study's own train / valid / test rows, as its run prepared them.

The split is made again from the stored study file (same source, same ``data.split`` seed, the same
``data.valid`` / ``data.test`` files), so a reference model (a scikit-learn baseline, a hand-written
Keras model) can be trained and scored on exactly the rows the search used. The rows are raw (before
the study's scaling and encoding) and the labels are the data's own. A run records a SHA-256 of each
part; when the study has them, the rows made again must match, or the data changed since the run and
that is said in one line instead of handing back other rows.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from hpsearch.data.sources.memory import content_key
from hpsearch.errors import DataError, UserError
from hpsearch.records import STUDY
from hpsearch.storage.queries import open_study_for_reading

__all__ = ["StudySplit", "load_split"]

_PARTS = ("train", "valid", "test")


@dataclass(frozen=True)
class StudySplit:
    """The study's rows: raw features and the data's own labels, per part. Unpacks as
    ``X_train, y_train, X_valid, y_valid, X_test, y_test = load_split(...)``."""

    X_train: Any
    y_train: np.ndarray
    X_valid: Any
    y_valid: np.ndarray
    X_test: Any
    y_test: np.ndarray
    task: str
    feature_names: list[str] | None  # the table's columns, when the data had names
    classes: list[Any] | None  # a classifier's labels, in the order of its probability columns

    def __iter__(self) -> Iterator[Any]:
        return iter((self.X_train, self.y_train, self.X_valid, self.y_valid, self.X_test, self.y_test))


def _stored_config(study: Any) -> Any:
    from hpsearch.results.evaluation import stored_config

    cfg, why = stored_config(study)
    if cfg is None:
        raise UserError(f"study {study.study_name!r}: its split cannot be made again: {why}")
    return cfg


def load_split(study_name: str, storage: str | None = None) -> StudySplit:
    """The train / valid / test rows of ``study_name`` (raw features, original labels), made again
    from its stored study file with its seed; a one-line DataError when they differ from the rows
    its run recorded (the data changed)."""
    from hpsearch.data.prepare import prepare_data
    from hpsearch.engines.base import get_engine

    _, _, study = open_study_for_reading(study_name, storage)
    cfg = _stored_config(study)
    data = prepare_data(cfg, get_engine(cfg.search.engine).cv_folds(cfg))
    if data.streamed:
        raise UserError(f"study {study_name!r} streams its images from {cfg.data.source}: load_split gives rows"
                        " held in memory; set data.in_memory: true (or read the files the split names)")
    parts = {"train": (data.X_train_raw, data.y_train), "valid": (data.X_valid_raw, data.y_valid),
             "test": (data.X_test_raw, data.y_test)}
    recorded = (study.user_attrs.get(STUDY.DATA_SUMMARY) or {}).get("split_sha256") or {}
    for name in _PARTS:
        if name in recorded and content_key(*parts[name]) != recorded[name]:
            raise DataError(f"study {study_name!r}: the {name} rows made again from {cfg.data.source} differ from"
                            " the ones its run used (the data changed since the run); restore that data to"
                            " compare on the study's split")
    pre = data.preprocessor
    return StudySplit(X_train=data.X_train_raw, y_train=pre.decode_labels(data.y_train),
                      X_valid=data.X_valid_raw, y_valid=pre.decode_labels(data.y_valid),
                      X_test=data.X_test_raw, y_test=pre.decode_labels(data.y_test),
                      task=data.task, feature_names=pre.feature_names, classes=pre.classes)
