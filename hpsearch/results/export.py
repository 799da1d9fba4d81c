"""Serving formats for ``hpsearch best STUDY --export DIR --format keras|saved_model|onnx``.

The stored model takes preprocessed features; a serving artefact should take raw ones. So the
export wraps the stored model in a small Keras model whose first layers are the study's fitted
preprocessing (:class:`hpsearch.data.preprocess.Preprocessor`) with its numbers fixed:

* numeric table columns with training gaps: the median fill and 0/1 missing-indicator columns
  (:func:`impute_layer`, registered with Keras);
* ``rescale``: a ``Rescaling(1 / rescale)`` layer;
* ``mean`` / ``scale``: a ``Rescaling(1 / scale, offset=-mean / scale)`` layer (a ``Normalization``
  layer's fixed mean and variance would become inputs of the ONNX graph).

Text / category columns (one-hot, lookup) are not expressed in the graph: such studies are refused
in one line, never exported as a model that silently needs outside preprocessing. The artefact is
built in a temporary folder beside ``DIR`` and renamed into place, so a failure leaves nothing.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any

from hpsearch.data.preprocess import Preprocessor
from hpsearch.errors import UserError
from hpsearch.storage.artifacts import load_model_artifacts
from hpsearch.storage.queries import best_artifact_ids

__all__ = ["FORMATS", "custom_objects", "export_serving", "impute_layer", "serving_model"]

FORMATS = ("keras", "saved_model", "onnx")
# what each format writes in DIR (besides hpsearch.json, which says what the outputs are)
_FILES = {"keras": "model.keras", "saved_model": "saved_model", "onnx": "model.onnx"}


@functools.cache
def impute_layer() -> Any:
    """The imputation layer class, defined (and registered with Keras as ``hpsearch>ImputeColumns``)
    on first use, so that importing this module loads no Keras."""
    import keras

    @keras.saving.register_keras_serializable(package="hpsearch", name="ImputeColumns")
    class _ImputeColumns(keras.layers.Layer):
        """Raw numeric columns -> model columns: a missing value (NaN) becomes the training median,
        and each column in ``indicator`` gains a 0/1 missing column right after it (the layout of
        :func:`hpsearch.data.preprocess._encode_column`)."""

        def __init__(self, fill: list[float], indicator: list[bool], **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.fill = [float(v) for v in fill]
            self.indicator = [bool(v) for v in indicator]
            n = len(self.fill)
            self._order = [k for j, ind in enumerate(self.indicator) for k in ((j, n + j) if ind else (j,))]

        def call(self, inputs: Any) -> Any:
            from keras import ops

            x = ops.cast(inputs, "float32")
            miss = ops.isnan(x)
            filled = ops.where(miss, ops.convert_to_tensor(self.fill, dtype="float32"), x)
            both = ops.concatenate([filled, ops.cast(miss, "float32")], axis=-1)
            return ops.take(both, ops.convert_to_tensor(self._order, dtype="int32"), axis=-1)

        def compute_output_shape(self, input_shape: Any) -> Any:
            return (*input_shape[:-1], len(self._order))

        def get_config(self) -> dict[str, Any]:
            return {**super().get_config(), "fill": self.fill, "indicator": self.indicator}

    return _ImputeColumns


def custom_objects() -> dict[str, Any]:
    """What ``keras.models.load_model`` needs for an exported ``model.keras`` with an imputation layer."""
    return {"hpsearch>ImputeColumns": impute_layer()}


def _refusal(pre: Preprocessor, fmt: str) -> str | None:
    """Why ``pre`` cannot go inside an exported graph, or None."""
    kinds = {spec["kind"] for spec in pre.columns or []}
    if kinds - {"number"}:
        return (f"--format {fmt}: the study's table has text/category columns, whose encoding cannot go inside"
                " the exported model; use --export PATH.keras without --format (the model plus its preprocessing"
                " JSON, read by hpsearch.load_best) and serve through load_best")
    return None


def serving_model(model: Any, pre: Preprocessor) -> Any:
    """``model`` behind ``pre``'s fitted preprocessing as Keras layers: it takes raw features."""
    import keras
    import numpy as np

    raw_shape = tuple(pre.input_shape) if pre.input_shape is not None else (pre.n_features,)
    inputs = keras.Input(raw_shape, dtype="float32", name="features")
    x = inputs
    if pre.columns:
        x = impute_layer()(fill=[s["fill"] for s in pre.columns], indicator=[s["indicator"] for s in pre.columns],
                          name="impute")(x)
    if pre.rescale is not None:
        x = keras.layers.Rescaling(1.0 / float(pre.rescale), name="rescale")(x)
    if pre.mean is not None and pre.scale is not None:
        # (x - mean) / scale as x * (1 / scale) + (-mean / scale): a Rescaling keeps its numbers as graph
        # constants, where Normalization's fixed mean / variance become ONNX graph inputs under tf2onnx
        scale = np.asarray(pre.scale, dtype=np.float64)
        x = keras.layers.Rescaling(scale=(1.0 / scale).tolist(),
                                   offset=(-np.asarray(pre.mean, dtype=np.float64) / scale).tolist(),
                                   name="standardize")(x)
    return keras.Model(inputs, model(x), name="hpsearch_serving")


def _write(wrapped: Any, fmt: str, target: Path) -> None:
    """Write ``wrapped`` in format ``fmt`` to ``target`` (ONNX: Keras's own export, tf2onnx underneath)."""
    import keras

    if fmt == "keras":
        wrapped.save(target)
        return
    # a dynamic batch size; the model was never called, so Keras cannot infer the signature itself
    signature = [keras.InputSpec(shape=(None, *wrapped.input_shape[1:]), dtype="float32", name="features")]
    with warnings.catch_warnings():  # Keras's numpy-2 patch of tf2onnx probes np.object: not the user's concern
        warnings.filterwarnings("ignore", category=FutureWarning, module=r"keras\.src\.export\.tf2onnx_lib")
        wrapped.export(str(target), format="tf_saved_model" if fmt == "saved_model" else "onnx", verbose=False,
                       input_signature=signature)


def _check_target(out: Path, fmt: str) -> None:
    if fmt not in FORMATS:
        raise UserError(f"--format {fmt}: unknown; choose one of {', '.join(FORMATS)}")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"--export {out}: already exists and is not an empty folder; remove it or choose another")
    if not out.parent.exists():
        raise UserError(f"--export {out}: folder {out.parent} does not exist; create it first")
    if fmt == "onnx" and importlib.util.find_spec("tf2onnx") is None:
        raise UserError("--format onnx needs tf2onnx and onnx; install them with pip install 'hpsearch[export]'")


def export_serving(study: Any, store: Any, path: str, fmt: str) -> Path:
    """Write the study's best model with its preprocessing inside to folder ``path`` in format ``fmt``:
    ``model.keras``, ``saved_model/`` (serving endpoint ``serve``) or ``model.onnx``, plus
    ``hpsearch.json`` (task, input shape, feature names, class order of the outputs)."""
    out = Path(path)
    _check_target(out, fmt)
    mid, pid, number = best_artifact_ids(study)
    model, pre = load_model_artifacts(store, mid, pid)
    why = _refusal(pre, fmt)
    if why:
        raise UserError(why)
    wrapped = serving_model(model, pre)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        _write(wrapped, fmt, tmp / _FILES[fmt])
        meta = {"study": study.study_name, "trial": number, "format": fmt, "file": _FILES[fmt], "task": pre.task,
                "input": "raw features, float32", "input_shape": list(wrapped.input_shape[1:]),
                "feature_names": pre.feature_names, "classes": pre.classes,
                "outputs": ("class probabilities in the order of classes (one column: P(classes[1]))"
                            if pre.classes is not None else "predicted values")}
        (tmp / "hpsearch.json").write_text(json.dumps(meta, indent=2), encoding="utf-8")
        if out.exists():
            out.rmdir()  # empty (checked above): rename replaces it
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out / _FILES[fmt]
