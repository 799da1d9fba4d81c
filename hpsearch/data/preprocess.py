"""Fitted preprocessing kept with every model, as JSON (never pickled): table encoding, imputation,
N-D reshaping and rescaling, standardisation, label decoding.

One :class:`Preprocessor` turns raw rows (what a data source gives, and what a user hands to
``load_best(...).predict``) into the float32 array a model takes:

1. tables whose columns hold text, categories or missing values (``columns`` is set): each raw
   column is encoded by a spec fitted on training rows: numbers imputed with the training median
   (plus a 0/1 missing-indicator column when training rows had gaps), text/category columns
   one-hot (``data.max_categories`` values or fewer) or an integer lookup (1.. by frequency);
   a missing or unseen value is all zeros / code 0;
2. N-D inputs (``input_shape`` is set): samples of that shape, or flat rows reshaped to it;
3. ``rescale`` divides, then ``mean`` / ``scale`` standardise along the last axis: per feature for
   tables, per channel for images, per feature for sequences.

Why JSON and not Keras preprocessing layers in the saved model: the same fitted object serves the
scikit-learn engines (a Pipeline step per fold), the Optuna engine and ``load_best``; user
builders stay free of it; and the stored file is plain data anyone can read.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from hpsearch.errors import DataError

__all__ = ["Preprocessor", "fit_preprocessor", "is_missing"]


def _py(v: Any) -> Any:
    return v.item() if isinstance(v, np.generic) else v


def is_missing(col: np.ndarray) -> np.ndarray:
    """True where a raw value is missing (None, NaN, NaT, pandas NA)."""
    import pandas as pd

    out: np.ndarray = np.asarray(pd.isna(col), dtype=bool)
    return out


def _as_numbers(col: np.ndarray) -> np.ndarray | None:
    """The column as float64 (NaN where missing), or None when a present value is not a number."""
    import pandas as pd

    if col.dtype.kind in "iufb":
        return col.astype(np.float64)
    nums = np.asarray(pd.to_numeric(pd.Series(col, dtype=object), errors="coerce"), dtype=np.float64)
    if np.any(np.isnan(nums) & ~is_missing(col)):
        return None
    return nums


def _fit_column(name: str, col: np.ndarray, max_categories: int) -> dict[str, Any]:
    """The encoding spec of one raw column, from its training values."""
    nums = _as_numbers(col)
    if nums is not None:
        present = nums[~np.isnan(nums)]
        fill = float(np.median(present)) if present.size else 0.0
        return {"name": name, "kind": "number", "fill": fill, "indicator": bool(present.size < nums.size)}
    miss = is_missing(col)
    values, counts = np.unique(col[~miss].astype(str), return_counts=True)
    order = np.lexsort((values, -counts))  # most frequent first, ties by value: stable across runs
    vocab = [str(values[i]) for i in order]
    kind = "onehot" if len(vocab) <= max_categories else "lookup"
    return {"name": name, "kind": kind, "values": vocab}


def _refit_column(spec: dict[str, Any], col: np.ndarray) -> dict[str, Any]:
    """``spec`` with its statistics refitted on ``col`` and its layout kept (the same model columns):
    a fold's model has the input width of the study's, so the vocabulary and the indicator columns
    stay those of the training split while medians (and later mean / std) are the fold's own."""
    if spec["kind"] != "number":
        return dict(spec)
    nums = _as_numbers(col)
    present = nums[~np.isnan(nums)] if nums is not None else np.zeros(0)
    return {**spec, "fill": float(np.median(present)) if present.size else spec["fill"]}


def _encode_column(spec: dict[str, Any], col: np.ndarray) -> list[np.ndarray]:
    """The model columns of one raw column (float32)."""
    if spec["kind"] == "number":
        nums = _as_numbers(col)
        if nums is None:
            raise DataError(f"column {spec['name']!r} holds text but the model was trained on numbers there;"
                            " give numbers (or leave the cell empty)")
        miss = np.isnan(nums)
        out = [np.where(miss, spec["fill"], nums).astype(np.float32)]
        if spec["indicator"]:
            out.append(miss.astype(np.float32))
        return out
    miss = is_missing(col)
    text = np.where(miss, "", col.astype(str))
    lookup = {v: i for i, v in enumerate(spec["values"])}
    codes = np.asarray([-1 if m else lookup.get(t, -1) for t, m in zip(text, miss)], dtype=np.int64)
    if spec["kind"] == "lookup":
        return [(codes + 1).astype(np.float32)]  # 0: missing or unseen
    onehot = np.zeros((len(col), len(spec["values"])), dtype=np.float32)
    seen = codes >= 0
    onehot[np.flatnonzero(seen), codes[seen]] = 1.0
    return list(onehot.T)


@dataclass
class Preprocessor:
    """Fitted preprocessing kept with each model (JSON-safe: :meth:`to_json` stores every field).

    Older stored files lack the later fields; their defaults keep those models working.
    """

    task: str
    n_features: int  # raw columns of a table; values per sample (prod of input_shape) for N-D inputs
    mean: list[float] | None = None
    scale: list[float] | None = None
    classes: list[Any] | None = None
    feature_names: list[str] | None = None
    input_shape: list[int] | None = None  # one sample's shape for N-D inputs, None for table rows
    rescale: float | None = None  # raw values are divided by it before standardisation
    columns: list[dict[str, Any]] | None = None  # table encoding, one spec per raw column ([]: not fitted yet)
    max_categories: int = 20

    def _raw(self, X: Any) -> np.ndarray:
        """The raw input as an array with this model's column order or sample shape."""
        if hasattr(X, "columns") and self.feature_names:
            missing = [n for n in self.feature_names if n not in X.columns]
            if missing:
                raise DataError(f"X lacks feature column {missing[0]!r}")
            X = X[self.feature_names]
        arr = np.asarray(X)
        if self.input_shape is not None:
            shape = tuple(self.input_shape)
            if arr.shape[1:] == shape:
                return arr
            if arr.ndim == 2 and arr.shape[1] == self.n_features:
                return arr.reshape((arr.shape[0], *shape))
            raise DataError(f"X has samples of shape {arr.shape[1:]}; the model expects {shape}"
                            f" (or flat rows of {self.n_features} values)")
        if arr.ndim != 2 or arr.shape[1] != self.n_features:
            raise DataError(f"X has {arr.shape[-1] if arr.ndim else 0} features; the model expects {self.n_features}")
        return arr

    def encode(self, X: Any) -> np.ndarray:
        """Raw rows -> numbers, before rescaling and standardisation."""
        arr = self._raw(X)
        if self.columns:
            parts = [p for j, spec in enumerate(self.columns) for p in _encode_column(spec, arr[:, j])]
            return np.stack(parts, axis=1)
        if arr.dtype.kind not in "iufb":
            raise DataError(f"X holds {arr.dtype} values; the model expects numbers")
        return arr.astype(np.float32, copy=False)

    def transform(self, X: Any) -> np.ndarray:
        """Raw rows -> the float32 array the model takes."""
        out = self.encode(X)
        if self.rescale is not None:
            out = out / np.float32(self.rescale)
        if self.mean is not None and self.scale is not None:
            out = (out - np.asarray(self.mean, dtype=np.float32)) / np.asarray(self.scale, dtype=np.float32)
        return out.astype(np.float32, copy=False)

    def encode_labels(self, y: Any) -> np.ndarray:
        y = np.asarray(y).ravel()
        if self.classes is None:
            out: np.ndarray = y.astype(np.float32)
            return out
        lookup = {c: i for i, c in enumerate(self.classes)}
        try:
            return np.asarray([lookup[_py(v)] for v in y], dtype=np.int64)
        except KeyError as e:
            raise DataError(f"label {e.args[0]!r} was not seen in training; known classes: {self.classes}") from None

    def decode_labels(self, idx: np.ndarray) -> np.ndarray:
        if self.classes is None:
            return idx
        labels = np.asarray(self.classes, dtype=object if any(isinstance(c, str) for c in self.classes) else None)
        out: np.ndarray = labels[idx]
        return out

    def to_json(self) -> str:
        return json.dumps(self.__dict__)

    @classmethod
    def from_json(cls, text: str) -> Preprocessor:
        return cls(**json.loads(text))


def fit_preprocessor(X_raw: np.ndarray, scaling: str, like: Preprocessor) -> Preprocessor:
    """``like`` (task, classes, names, shape, rescale) refitted on exactly ``X_raw``: the table
    encoding (all of it when ``like.columns == []``; only its statistics when ``like`` is already
    fitted, see :func:`_refit_column`) and the mean / std (ddof 0) along the last axis; a constant
    feature or channel stays unscaled, as scikit-learn's StandardScaler does."""
    fitted = Preprocessor(**{**like.__dict__, "mean": None, "scale": None})
    if like.columns == []:
        names = like.feature_names or [f"x{j}" for j in range(X_raw.shape[1])]
        fitted.columns = [_fit_column(n, X_raw[:, j], like.max_categories) for j, n in enumerate(names)]
    elif like.columns:
        fitted.columns = [_refit_column(spec, X_raw[:, j]) for j, spec in enumerate(like.columns)]
    if scaling == "standard":
        X = fitted.transform(X_raw)
        axes = tuple(range(X.ndim - 1))
        mean_a = X.mean(axis=axes, dtype=np.float64)
        scale_a = X.std(axis=axes, dtype=np.float64)
        scale_a[~(scale_a > 0) | ~np.isfinite(scale_a)] = 1.0
        fitted.mean, fitted.scale = mean_a.tolist(), scale_a.tolist()
        if not all(math.isfinite(m) for m in fitted.mean):
            raise DataError("features contain NaN or inf after encoding; impute or drop those rows")
    return fitted
