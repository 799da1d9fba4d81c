"""Image folders streamed from disk: ``data.in_memory: false``, or ``auto`` above a size.

Rule (``auto``): a folder streams when its images, decoded to the float32 arrays a model takes,
would exceed :data:`STREAM_ABOVE_BYTES` (1 GiB): ``files x height x width x channels x 4 bytes``,
with ``data.image_size`` or else the first image's size. An in-memory study holds about that
much (plus the uint8 originals), which is what streaming avoids.

Streaming keeps only the file list in memory: :class:`ImageFiles` is an array-like of shape
(rows, h, w, c) whose indexing reads and decodes those files (Pillow, as in-memory loading does),
through the fitted :class:`~hpsearch.data.preprocess.Preprocessor` when it has one. :class:`ImageBatches`
feeds it to Keras as a ``PyDataset`` read by ``data.workers`` threads (Pillow releases the GIL
while decoding, so threads overlap), reshuffled every epoch from a seed.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import keras
import numpy as np

from hpsearch.data.sources.images import image_size_of, list_images, read_image
from hpsearch.errors import DataError

if TYPE_CHECKING:  # pragma: no cover
    from hpsearch.data.preprocess import Preprocessor
    from hpsearch.spec.config import StudyConfig

__all__ = ["ImageBatches", "ImageFiles", "fit_inputs", "scan"]

def scan(cfg: StudyConfig, root: Path, where: str) -> tuple[list[Path], np.ndarray, tuple[int, ...], dict[str, Any]]:
    """The readable files (headers only: nothing decoded), their class names, one image's shape
    (h, w, c) and the summary figures; the same one-line errors as loading into memory."""
    classes, files = list_images(root, where)
    want = tuple(cfg.data.image_size) if cfg.data.image_size else None
    paths: list[Path] = []
    labels: list[str] = []
    skipped = 0
    first: tuple[Path, tuple[int, int]] | None = None
    for path, label in files:
        size = image_size_of(path)
        if size is None:
            if cfg.data.skip_bad_files:
                skipped += 1
                continue
            raise DataError(f"{where}: cannot read image {path}; fix or remove it, or set data.skip_bad_files: true")
        if first is None:
            first = (path, size)
        elif want is None and size != first[1]:
            raise DataError(f"{where}: images of different sizes ({path} is {size[1]}x{size[0]}, {first[0]}"
                            f" {first[1][1]}x{first[1][0]}); set data.image_size: [height, width] to resize them all")
        paths.append(path)
        labels.append(classes[label])
    if first is None:
        raise DataError(f"{where}: no readable image; check the files")
    h, w = want or first[1]
    info: dict[str, Any] = {"images": len(paths), "streamed": True}
    if skipped:
        info["skipped_files"] = skipped
    return paths, np.asarray(labels), (int(h), int(w), 1 if cfg.data.color == "grayscale" else 3), info


class ImageFiles:
    """Image files as a lazy array of shape (rows, h, w, c): indexing decodes the selected files
    (uint8; float32 through ``pre``, the study's fitted preprocessing)."""

    ndim = 4

    def __init__(self, paths: list[Path], color: str, sample_shape: tuple[int, ...],
                 pre: Preprocessor | None = None) -> None:
        self.paths, self.color, self.sample_shape, self.pre = paths, color, tuple(sample_shape), pre

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self.paths), *self.sample_shape)

    @property
    def dtype(self) -> np.dtype[Any]:
        return np.dtype(np.uint8 if self.pre is None else np.float32)

    def __len__(self) -> int:
        return len(self.paths)

    def take(self, idx: np.ndarray) -> ImageFiles:
        """The files at ``idx`` (no decoding)."""
        return ImageFiles([self.paths[int(i)] for i in idx], self.color, self.sample_shape, self.pre)

    def with_preprocessor(self, pre: Preprocessor | None) -> ImageFiles:
        return ImageFiles(self.paths, self.color, self.sample_shape, pre)

    def __getitem__(self, key: Any) -> np.ndarray:
        if isinstance(key, (int, np.integer)):
            return self[[int(key)]][0]
        chosen = self.paths[key] if isinstance(key, slice) else [self.paths[int(i)] for i in np.asarray(key)]
        size = self.sample_shape[:2]
        X = (np.stack([read_image(p, self.color, size) for p in chosen]) if chosen  # type: ignore[arg-type]
             else np.zeros((0, *self.sample_shape), np.uint8))
        return X if self.pre is None else self.pre.transform(X)

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        """All of it decoded (what a report of a few test images falls back to)."""
        X = self[:]
        return X if dtype is None else X.astype(dtype)


class ImageBatches(keras.utils.PyDataset):
    """Batches of decoded files for ``model.fit`` / ``predict``, read by ``workers`` threads.

    With a ``seed`` the order is shuffled and reshuffled at every epoch's end, and the last batch
    wraps around to a whole batch (one compiled shape per epoch, as the in-memory path pads)."""

    def __init__(self, files: ImageFiles, y: np.ndarray | None, batch_size: int, *, seed: int | None = None,
                 workers: int = 1, weights: np.ndarray | None = None) -> None:
        super().__init__(workers=workers, use_multiprocessing=False)
        self.files, self.y, self.batch_size, self.weights = files, y, batch_size, weights
        self.rng = None if seed is None else np.random.default_rng(seed)
        self.order = np.arange(len(files)) if self.rng is None else self.rng.permutation(len(files))

    def __len__(self) -> int:
        return math.ceil(len(self.files) / self.batch_size)

    def __getitem__(self, i: int) -> Any:
        n, b = len(self.files), self.batch_size
        if self.rng is not None and n >= b:
            idx = self.order[(i * b + np.arange(b)) % n]
        else:
            idx = self.order[i * b:(i + 1) * b]
        X = self.files[idx]
        if self.y is None:
            return (X,)
        if self.weights is None:
            return X, self.y[idx]
        return X, self.y[idx], self.weights[idx]

    def on_epoch_end(self) -> None:
        if self.rng is not None:
            self.order = self.rng.permutation(len(self.files))


def fit_inputs(X: Any, y: np.ndarray, Xv: Any, yv: np.ndarray, batch_size: int, valid_batch: int,
               class_weight: dict[int, float] | None, seed: int, workers: int) -> dict[str, Any]:
    """``model.fit`` keyword arguments for the data: arrays as they are, streamed files as
    ``PyDataset`` s (class weights become per-row sample weights: Keras takes no class_weight there)."""
    if not isinstance(X, ImageFiles):
        return {"x": X, "y": y, "batch_size": batch_size, "validation_data": (Xv, yv),
                "validation_batch_size": valid_batch, "shuffle": True, "class_weight": class_weight}
    weights = None if class_weight is None else np.asarray([class_weight.get(int(c), 1.0) for c in y], np.float32)
    return {"x": ImageBatches(X, y, batch_size, seed=seed, workers=workers, weights=weights),
            "validation_data": ImageBatches(Xv, yv, batch_size, workers=workers)}  # bounded memory
