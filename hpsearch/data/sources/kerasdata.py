"""Keras datasets by name: ``data.source: keras:mnist`` (fashion_mnist, cifar10, cifar100, imdb,
reuters), loaded through ``keras.datasets``: downloaded once on the user's machine and cached by
Keras under ``$KERAS_HOME/datasets`` (``~/.keras/datasets`` when KERAS_HOME is unset).

Keras' own train and test parts are joined: the study's seeded ``data.split`` makes the train /
validation / test parts, like every other source. Text datasets (imdb, reuters) keep the
:data:`NUM_WORDS` most frequent words and are padded / truncated to :data:`SEQUENCE_LENGTH`
word indices per review.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from hpsearch.data.sources.base import DataSource, RawData
from hpsearch.errors import ConfigError, DataError

if TYPE_CHECKING:  # pragma: no cover
    from hpsearch.spec.config import StudyConfig

__all__ = ["KERAS_DATASETS", "NUM_WORDS", "SEQUENCE_LENGTH", "KerasSource", "keras_cache_dir"]

NUM_WORDS = 10_000
SEQUENCE_LENGTH = 200
#: name -> keyword arguments of its ``keras.datasets.NAME.load_data``
KERAS_DATASETS: dict[str, dict[str, Any]] = {
    "mnist": {}, "fashion_mnist": {}, "cifar10": {}, "cifar100": {"label_mode": "fine"},
    "imdb": {"num_words": NUM_WORDS}, "reuters": {"num_words": NUM_WORDS},
}
_TEXT = frozenset({"imdb", "reuters"})


def keras_cache_dir() -> Path:
    """Where Keras keeps downloaded datasets: ``$KERAS_HOME/datasets``, else ``~/.keras/datasets``."""
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return Path(home) / "datasets"


class KerasSource(DataSource):
    """``keras:NAME``: one of the datasets of ``keras.datasets``."""

    @staticmethod
    def _name(cfg: StudyConfig) -> str:
        return cfg.data.source.split(":", 1)[1]

    def check(self, cfg: StudyConfig) -> None:
        if self._name(cfg) not in KERAS_DATASETS:
            raise ConfigError(f"data.source: unknown Keras dataset {self._name(cfg)!r}; use one of "
                              + ", ".join("keras:" + k for k in KERAS_DATASETS))

    def load(self, cfg: StudyConfig) -> RawData:
        import importlib

        self.check(cfg)
        name = self._name(cfg)
        where = f"data.source {cfg.data.source}"
        module = importlib.import_module(f"keras.datasets.{name}")
        try:
            (x_a, y_a), (x_b, y_b) = module.load_data(**KERAS_DATASETS[name])
        except Exception as e:  # noqa: BLE001 - Keras raises a bare Exception for a failed download
            first = (str(e).splitlines() or [""])[0][:160]
            raise DataError(f"{where}: not in Keras' cache {keras_cache_dir()} and the download failed"
                            f" ({e.__class__.__name__}: {first}); run once with network access, or copy the"
                            " files there (KERAS_HOME moves the cache)") from None
        X = np.concatenate([_fixed(x_a, name), _fixed(x_b, name)])
        y = np.concatenate([np.asarray(y_a).ravel(), np.asarray(y_b).ravel()])
        return RawData(X, y, None, where)


def _fixed(x: Any, name: str) -> np.ndarray:
    """Samples of one shape: grayscale images get their channel axis (rows, h, w, 1) like every
    image source; word-index sequences are padded / truncated to SEQUENCE_LENGTH."""
    if name not in _TEXT:
        arr = np.asarray(x)
        return arr[..., None] if arr.ndim == 3 else arr
    from keras.utils import pad_sequences

    out: np.ndarray = pad_sequences(list(x), maxlen=SEQUENCE_LENGTH, padding="post", truncating="post")
    return out
