"""Image folders: ``data.source: path/to/dir/`` with one subfolder of PNG / JPEG files per class.

The folder's class names are its subfolder names (sorted); every image is read with Pillow,
converted to ``data.color`` (grayscale: 1 channel, rgb: 3) and resized to ``data.image_size``
when it is set (otherwise all images must already share one size). Pixels stay uint8 in memory
(one byte a value); ``data.rescale`` / ``data.scale`` turn them into model inputs later, fitted on
training rows only.

An unreadable file stops the load with a one-line error naming it, unless ``data.skip_bad_files``
is true: then it is skipped and counted (``skipped_files`` in the data summary).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from hpsearch.data.sources.base import LocalSource, RawData
from hpsearch.errors import DataError

if TYPE_CHECKING:  # pragma: no cover
    from hpsearch.spec.config import StudyConfig

__all__ = ["IMAGE_SUFFIXES", "STREAM_ABOVE_BYTES", "ImageFolderSource", "decoded_bytes", "image_size_of", "list_images",
           "read_image", "streams"]

#: file suffixes read as images (others, like a README in a class folder, are ignored)
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp"})


def list_images(root: Path, where: str) -> tuple[list[str], list[tuple[Path, int]]]:
    """Class names and (file, class index) pairs of a folder; one-line errors for a bad layout."""
    if not root.is_dir():
        raise DataError(f"{where}: folder not found; give a folder with one subfolder of images per class")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(classes) < 2:
        found = f"only {classes[0]!r}" if classes else "none"
        raise DataError(f"{where}: needs one subfolder per class and at least two classes (found {found});"
                        " add a subfolder of images for each class")
    files: list[tuple[Path, int]] = []
    for i, name in enumerate(classes):
        mine = sorted(p for p in (root / name).iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if not mine:
            raise DataError(f"{where}: class folder {name!r} has no images ({', '.join(sorted(IMAGE_SUFFIXES))});"
                            " add images or remove the folder")
        files += [(p, i) for p in mine]
    return classes, files


def read_image(path: Path, color: str, size: tuple[int, int] | None) -> np.ndarray:
    """One image as uint8 (height, width, channels); Pillow's errors propagate."""
    from PIL import Image

    with Image.open(path) as img:
        img = img.convert("L" if color == "grayscale" else "RGB")
        if size is not None and img.size != (size[1], size[0]):
            img = img.resize((size[1], size[0]), Image.Resampling.BILINEAR)
        arr = np.asarray(img, dtype=np.uint8)
    return arr[..., None] if arr.ndim == 2 else arr


#: ``data.in_memory: auto`` streams a folder whose decoded float32 images exceed this
STREAM_ABOVE_BYTES = 1 << 30


def decoded_bytes(n_files: int, size: tuple[int, int], channels: int) -> int:
    """Bytes of the folder decoded to float32 model inputs: files x height x width x channels x 4."""
    return n_files * size[0] * size[1] * channels * 4


def streams(in_memory: bool | str, n_files: int, size: tuple[int, int], channels: int,
            limit: int = STREAM_ABOVE_BYTES) -> bool:
    """Whether a folder streams: ``in_memory`` false, or ``auto`` with more than ``limit`` decoded bytes."""
    if in_memory == "auto":
        return decoded_bytes(n_files, size, channels) > limit
    return not in_memory


def image_size_of(path: Path) -> tuple[int, int] | None:
    """(height, width) from the file's header, None when Pillow cannot open it."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            return img.size[1], img.size[0]
    except (UnidentifiedImageError, OSError, ValueError):
        return None


class ImageFolderSource(LocalSource):
    """A folder of class subfolders of images, loaded into memory as uint8 (rows, h, w, c)."""

    def check(self, cfg: StudyConfig) -> None:
        """Every image field has a default; the folder itself is read by ``load``."""

    def folder(self, cfg: StudyConfig) -> Path:
        """The local folder the images are read from (a remote folder's copy in the cache)."""
        return self._path(cfg)

    def where(self, cfg: StudyConfig, root: Path) -> str:
        """How messages name the folder."""
        return f"data.source {root}"

    def load(self, cfg: StudyConfig) -> RawData:
        """Long: one pass over the files that reads, checks sizes and counts skipped files together."""
        from PIL import UnidentifiedImageError

        root = self.folder(cfg)
        where = self.where(cfg, root)
        classes, files = list_images(root, where)
        size = tuple(cfg.data.image_size) if cfg.data.image_size else None
        images: list[np.ndarray] = []
        labels: list[str] = []
        skipped = 0
        first = root
        for path, label in files:
            try:
                arr = read_image(path, cfg.data.color, size)  # type: ignore[arg-type]
            except (UnidentifiedImageError, OSError, ValueError) as e:
                if cfg.data.skip_bad_files:
                    skipped += 1
                    continue
                raise DataError(f"{where}: cannot read image {path} ({e.__class__.__name__}); fix or remove it,"
                                " or set data.skip_bad_files: true") from None
            if not images:
                first = path
            elif arr.shape != images[0].shape:
                raise DataError(f"{where}: images of different sizes ({path} is {arr.shape[1]}x{arr.shape[0]},"
                                f" {first} {images[0].shape[1]}x{images[0].shape[0]}); set data.image_size:"
                                " [height, width] to resize them all")
            images.append(arr)
            labels.append(classes[label])
        if not images:
            raise DataError(f"{where}: no readable image; check the files")
        info: dict[str, Any] = {"images": len(images)}
        if skipped:
            info["skipped_files"] = skipped
        return RawData(np.stack(images), np.asarray(labels), None, where, info)

    def streams(self, cfg: StudyConfig) -> bool:
        """The ``data.in_memory`` decision for the folder (reads one header when ``auto`` needs a
        size): streamed from disk batch by batch, or loaded into memory."""
        if cfg.data.in_memory is True:
            return False
        root = self.folder(cfg)
        where = self.where(cfg, root)
        if cfg.data.in_memory is not False:
            _classes, files = list_images(root, where)
            size = tuple(cfg.data.image_size) if cfg.data.image_size else None
            for path, _ in files:
                size = size or image_size_of(path)
                if size is not None:
                    break
            channels = 1 if cfg.data.color == "grayscale" else 3
            return size is not None and streams("auto", len(files), size, channels)  # type: ignore[arg-type]
        return not cfg.data.in_memory
