"""Tiny generated data for the image-folder, Keras-dataset and messy-table tests (written to tmp dirs),
and the three-class toy arrays the packing tests train on."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pandas as pd


def write_image_folder(root: Path, classes: tuple[str, ...] = ("bottom", "top"), per_class: int = 12,
                       size: tuple[int, int] = (12, 10), corrupt: bool = True, seed: int = 0) -> Path:
    """One subfolder of PNGs per class (class i is bright in band i), plus one corrupt ``.png``."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    h, w = size
    for i, name in enumerate(classes):
        (root / name).mkdir(parents=True, exist_ok=True)
        for k in range(per_class):
            img = rng.integers(0, 60, size=(h, w, 3), dtype=np.uint8)
            band = slice(i * h // len(classes), (i + 1) * h // len(classes))
            img[band] += 180
            Image.fromarray(img, "RGB").save(root / name / f"{k:03d}.png")
    if corrupt:
        (root / classes[0] / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not an image")
    return root


def write_fashion_mnist_cache(keras_home: Path, n_train: int = 40, n_test: int = 20, seed: int = 0) -> Path:
    """The four gzip files of ``keras.datasets.fashion_mnist`` in Keras' cache layout (idx format)."""
    rng = np.random.default_rng(seed)
    folder = keras_home / "datasets" / "fashion-mnist"
    folder.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        y = (np.arange(n) % 3).astype(np.uint8)
        x = rng.integers(0, 50, size=(n, 28, 28), dtype=np.uint8)
        for i in range(n):
            x[i, y[i] * 9:(y[i] + 1) * 9] += 200
        with gzip.open(folder / f"{prefix}-labels-idx1-ubyte.gz", "wb") as f:
            f.write(b"\0" * 8 + y.tobytes())
        with gzip.open(folder / f"{prefix}-images-idx3-ubyte.gz", "wb") as f:
            f.write(b"\0" * 16 + x.tobytes())
    return folder


def messy_frame(n: int = 120, seed: int = 0) -> pd.DataFrame:
    """A table as people have them: a numeric column with gaps, a category column with gaps, a
    free-text column of many values, and a string target that depends on all three."""
    rng = np.random.default_rng(seed)
    size = rng.normal(size=n)
    color = rng.choice(["red", "green", "blue"], n).astype(object)
    city = np.asarray([f"town {i}" for i in rng.integers(0, 40, n)], dtype=object)
    score = size + 1.5 * (color == "red") + 0.02 * np.asarray([int(c.split()[1]) for c in city])
    label = np.where(score > np.median(score), "buy", "skip")
    size[rng.random(n) < 0.1] = np.nan
    color[rng.random(n) < 0.1] = None
    return pd.DataFrame({"size": size, "color": color, "city": city, "label": label})


def toy_classes(n: int = 96, n_train: int = 64, seed: int = 0) -> tuple[np.ndarray, ...]:
    """(X_train, y_train, X_valid, y_valid): ``n`` rows of 8 normal features, three classes from
    the first three, the first ``n_train`` rows for training."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 8)).astype("float32")
    y = (X[:, 0] + X[:, 1] > 0).astype("int64") + (X[:, 2] > 1).astype("int64")
    return X[:n_train], y[:n_train], X[n_train:], y[n_train:]
