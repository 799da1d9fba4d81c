"""The built-in ``cnn`` builder: a configurable convolutional network for images and sequences.

Registered as ``model.builder: cnn`` in :data:`hpsearch.registry.BUILDERS`. It reads the input
shape from ``meta["X_shape_"]`` (rows first) and picks its convolutions by rank: Conv2D for images
``(rows, h, w, c)`` and ``(rows, h, w)`` (a channel axis is added inside the model, so the saved
model takes the raw arrays), Conv1D for sequences ``(rows, steps, features)`` with ``conv: 1d``.
A 2-D table is refused with the fix (``data.reshape`` for flat images, or the ``mlp`` builder).

The compile knobs (optimizer, learning rate, schedule, clipping, loss, metrics, speed levers) are
not repeated here: they are the keyword arguments of :func:`hpsearch.models.builders.compile_for_task`,
which :func:`build_cnn`'s signature takes over, so a knob added there reaches this builder too.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from hpsearch.errors import ConfigError
from hpsearch.models.builders import (
    COMPILE_PARAMS,
    ParamValues,
    check_compile_params,
    compile_for_task,
    named_choice,
    output_spec,
    resolve_loss,
    with_param_check,
)
from hpsearch.models.mlp import ACTIVATIONS, INITIALIZERS
from hpsearch.spec.space import coerce_value

if TYPE_CHECKING:  # pragma: no cover
    import keras

__all__ = ["CONV_KINDS", "FLIPS", "GLOBAL_POOLINGS", "POOLINGS", "build_cnn", "check_cnn_input", "check_cnn_params"]

CONV_KINDS = ("auto", "1d", "2d")
POOLINGS = ("max", "average", "none")
GLOBAL_POOLINGS = ("average", "max", "none")
FLIPS = ("none", "horizontal", "vertical", "horizontal_and_vertical")

_CHOICES: dict[str, tuple[str, ...]] = {
    "conv": CONV_KINDS, "pooling": POOLINGS, "global_pooling": GLOBAL_POOLINGS, "flip": FLIPS,
    "activation": ACTIVATIONS, "kernel_initializer": INITIALIZERS,
}
_AUGMENT = ("flip", "rotation", "zoom", "translation")
_RELU_FAMILY = frozenset({"relu", "leaky_relu", "elu", "gelu", "swish"})


def _int_at_least(low: int) -> Callable[[Any], str | None]:
    def check(v: Any) -> str | None:
        ok = isinstance(v, int) and not isinstance(v, bool) and v >= low
        return None if ok else f"must be an integer >= {low}"
    return check


def _number_in(low: float, high: float, high_open: bool = True) -> Callable[[Any], str | None]:
    def check(v: Any) -> str | None:
        ok = isinstance(v, (int, float)) and not isinstance(v, bool) and low <= v and (
            v < high if high_open else v <= high)
        return None if ok else f"must be a number in [{low:g}, {high:g}{')' if high_open else ']'}"
    return check


def _positive(v: Any) -> str | None:
    ok = isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0
    return None if ok else "must be a number > 0"


#: Range checks of the numeric architecture knobs, used before a study runs and at build time.
_RANGES: dict[str, Callable[[Any], str | None]] = {
    "n_blocks": _int_at_least(1), "convs_per_block": _int_at_least(1), "filters": _int_at_least(1),
    "filter_growth": _positive, "kernel_size": _int_at_least(1), "dense_layers": _int_at_least(0),
    "dense_units": _int_at_least(1), "dropout": _number_in(0, 1), "head_dropout": _number_in(0, 1),
    "rotation": _number_in(0, 0.5, high_open=False), "zoom": _number_in(0, 1),
    "translation": _number_in(0, 1),
}


def _checked(field: str, name: str, value: Any) -> Any:
    """``value`` (numpy scalars coerced, named choices lower-cased) or a one-line ConfigError."""
    value = coerce_value(value)
    if name in _CHOICES:
        if value is None and name == "kernel_initializer":
            return None
        return named_choice(field, value, _CHOICES[name])
    if name in _RANGES:
        problem = _RANGES[name](value)
        if problem:
            raise ConfigError(f"{field}: {problem}, got {value!r}")
    return value


def check_cnn_params(values: ParamValues) -> None:
    """The CNN's values given in a study (fixed ones and the choices of categorical parameters),
    checked before anything runs; ranges of int/float parameters are checked at build time."""
    for name, pairs in values.items():
        for field, value in pairs:
            _checked(field, name, value)
    check_compile_params(values)


def check_cnn_input(meta: Mapping[str, Any] | None, conv: str = "auto") -> tuple[int, ...]:
    """The per-row input shape (rows axis dropped) that the CNN can take, or a one-line ConfigError
    naming the fix (for direct use, e.g. ``hpsearch.KerasClassifier`` on a 2-D array)."""
    meta = meta or {}
    shape = meta.get("X_shape_")
    if shape is None and meta.get("n_features_in_") is not None:
        shape = (0, int(meta["n_features_in_"]))
    if shape is None:
        raise ConfigError("model.builder: cnn needs the input shape (meta['X_shape_']); build it through"
                          " hpsearch (a study or hpsearch.KerasClassifier), not with meta=None")
    row = tuple(int(d) for d in tuple(shape)[1:])
    if len(row) == 1:
        raise ConfigError(
            f"model.builder: cnn needs images (rows, h, w[, c]) or sequences (rows, steps, features), got a"
            f" 2-D table of {row[0]} features; set data.reshape (e.g. [8, 8, 1] for sklearn:digits) or use"
            " builder: mlp")
    if len(row) > 3:
        raise ConfigError(f"model.builder: cnn takes 3-D or 4-D inputs, got {len(row) + 1}-D rows of shape {row};"
                          " reshape the data to (rows, h, w, c) or (rows, steps, features)")
    if conv == "1d" and len(row) != 2:
        raise ConfigError(f"model.conv: 1d needs sequences (rows, steps, features), got rows of shape {row};"
                          " use conv: 2d (or auto) for images")
    return row


def _default_initializer(activation: str) -> str:
    return ("lecun_normal" if activation == "selu" else "he_normal" if activation in _RELU_FAMILY
            else "glorot_uniform")


def _architecture(given: Mapping[str, Any], compile_knobs: Mapping[str, Any], meta: Mapping[str, Any] | None
                  ) -> tuple[dict[str, Any], tuple[int, ...], int]:
    """(checked architecture values, per-row input shape, 1 or 2 dimensions): one-line ConfigErrors."""
    unknown = sorted(set(compile_knobs) - COMPILE_PARAMS)
    if unknown:
        raise ConfigError(f"model.{unknown[0]}: unknown parameter for builder cnn; remove it or check the spelling")
    arch = {name: _checked(f"model.{name}", name, value) for name, value in given.items()}
    row = check_cnn_input(meta, arch["conv"])
    dims = 1 if arch["conv"] == "1d" else 2
    if dims == 1 and (arch["flip"] != "none" or any(float(arch[k]) > 0 for k in _AUGMENT[1:])):
        raise ConfigError("model.flip/rotation/zoom/translation: augmentation is for images only; leave it"
                          " unset for sequences (conv: 1d)")
    return arch, row, dims


def _augmentation(flip: str, rotation: float, zoom: float, translation: float) -> list[Any]:
    """Keras' random image layers: they change the images in training only (identity at inference)."""
    import keras

    layers: list[Any] = []
    if flip != "none":
        layers.append(keras.layers.RandomFlip(flip, name="flip"))
    if rotation > 0:
        layers.append(keras.layers.RandomRotation(rotation, fill_mode="constant", name="rotation"))
    if zoom > 0:
        layers.append(keras.layers.RandomZoom(zoom, fill_mode="constant", name="zoom"))
    if translation > 0:
        layers.append(keras.layers.RandomTranslation(translation, translation, fill_mode="constant",
                                                     name="translation"))
    return layers


def _conv_blocks(dims: int, arch: Mapping[str, Any], activation: str, initializer: str) -> list[Any]:
    """``n_blocks`` x (``convs_per_block`` x Conv (-> BatchNorm -> Activation), pooling, dropout)."""
    import keras

    conv = keras.layers.Conv1D if dims == 1 else keras.layers.Conv2D
    pool = {"max": keras.layers.MaxPooling1D if dims == 1 else keras.layers.MaxPooling2D,
            "average": keras.layers.AveragePooling1D if dims == 1 else keras.layers.AveragePooling2D
            }.get(arch["pooling"])
    batch_norm = bool(arch["batch_norm"])
    layers: list[Any] = []
    for b in range(arch["n_blocks"]):
        filters = max(1, round(arch["filters"] * float(arch["filter_growth"]) ** b))
        for c in range(arch["convs_per_block"]):
            layers.append(conv(filters, arch["kernel_size"], padding="same", activation=None if batch_norm
                               else activation, use_bias=not batch_norm, kernel_initializer=initializer,
                               name=f"conv_{b}_{c}"))
            if batch_norm:
                layers.append(keras.layers.BatchNormalization(name=f"bn_{b}_{c}"))
                layers.append(keras.layers.Activation(activation, name=f"act_{b}_{c}"))
        if pool is not None:  # "same" padding: a 1-pixel map stays 1 pixel instead of vanishing
            layers.append(pool(2, padding="same", name=f"pool_{b}"))
        if arch["dropout"] > 0:
            layers.append(keras.layers.Dropout(arch["dropout"], name=f"dropout_{b}"))
    return layers


def _head(dims: int, arch: Mapping[str, Any], activation: str, initializer: str) -> list[Any]:
    """Global pooling (or Flatten), then ``dense_layers`` Dense layers with ``head_dropout``."""
    import keras

    glob = {"average": keras.layers.GlobalAveragePooling1D if dims == 1 else keras.layers.GlobalAveragePooling2D,
            "max": keras.layers.GlobalMaxPooling1D if dims == 1 else keras.layers.GlobalMaxPooling2D,
            }.get(arch["global_pooling"], keras.layers.Flatten)
    layers: list[Any] = [glob(name="global_pool" if arch["global_pooling"] != "none" else "flatten")]
    for i in range(arch["dense_layers"]):
        layers.append(keras.layers.Dense(arch["dense_units"], activation=activation, kernel_initializer=initializer,
                                         name=f"dense_{i}"))
        if arch["head_dropout"] > 0:
            layers.append(keras.layers.Dropout(arch["head_dropout"], name=f"head_dropout_{i}"))
    return layers


@with_param_check(check_cnn_params)
def build_cnn(
    n_blocks: int = 2,
    convs_per_block: int = 1,
    filters: int = 32,
    filter_growth: float = 2.0,
    kernel_size: int = 3,
    pooling: str = "max",
    global_pooling: str = "none",
    batch_norm: bool = False,
    dropout: float = 0.0,
    activation: str = "relu",
    kernel_initializer: str | None = None,
    dense_layers: int = 1,
    dense_units: int = 64,
    head_dropout: float = 0.0,
    flip: str = "none",
    rotation: float = 0.0,
    zoom: float = 0.0,
    translation: float = 0.0,
    conv: str = "auto",
    meta: Mapping[str, Any] | None = None,
    **compile_knobs: Any,
) -> keras.Model:
    """Build and compile a convolutional network for the inputs and task described by ``meta``.

    Every argument except ``meta`` is a study-file key (``model.fixed`` / ``space``).

    Convolutions
        n_blocks: conv blocks (>= 1); each ends with ``pooling`` and ``dropout``.
        convs_per_block: conv layers per block (>= 1), ``padding="same"``.
        filters: filters of the first block (>= 1); block b has ``filters * filter_growth**b``
            (rounded, at least 1): ``filters=32, filter_growth=2`` -> 32, 64, 128.
        kernel_size: kernel width (>= 1), square for images.
        pooling: max, average or none: a size-2 pooling after each block.
        global_pooling: average, max (global pooling before the head) or none (Flatten).
        batch_norm: Conv (no bias) -> BatchNormalization -> activation.
        dropout: Dropout rate in [0, 1) after each block.
        activation, kernel_initializer: as in the ``mlp`` builder (the default initializer
            follows the activation: he_normal, lecun_normal for selu, glorot_uniform for tanh).
        conv: auto (Conv2D: 3-D inputs are (rows, h, w) images), 2d, or 1d for sequences
            (rows, steps, features).
    Dense head
        dense_layers: Dense layers between the pooling and the output (>= 0).
        dense_units: units of each (>= 1). head_dropout: Dropout rate in [0, 1) after each.
    Augmentation (images only; random in training, identity at inference)
        flip: none, horizontal, vertical, horizontal_and_vertical.
        rotation: max rotation as a fraction of a full turn, in [0, 0.5] (0.05 = 18 degrees).
        zoom: max zoom in or out as a fraction of the size, in [0, 1).
        translation: max shift as a fraction of height and width, in [0, 1).
    Compilation: every keyword of :func:`hpsearch.models.builders.compile_for_task` (optimizer,
        learning_rate, momentum, weight_decay, clipnorm, clipvalue, lr_schedule, ...), same defaults.
    Task
        meta: scikeras-style dict with ``X_shape_`` (rows first), ``target_type_``, ``n_classes_``.
    """
    given = {k: v for k, v in locals().items() if k not in ("meta", "compile_knobs")}
    import keras

    arch, row, dims = _architecture(given, compile_knobs, meta)
    resolve_loss(meta, compile_knobs.get("loss"))  # refuse a loss that does not fit before building
    units_out, act_out = output_spec(meta)
    activation = arch["activation"]
    initializer = arch["kernel_initializer"] or _default_initializer(activation)

    layers: list[Any] = [keras.Input(shape=row)]
    if dims == 2 and len(row) == 2:
        layers.append(keras.layers.Reshape((*row, 1), name="add_channel"))
    if dims == 2:
        layers += _augmentation(arch["flip"], float(arch["rotation"]), float(arch["zoom"]), float(arch["translation"]))
    layers += _conv_blocks(dims, arch, activation, initializer)
    layers += _head(dims, arch, activation, initializer)
    layers.append(keras.layers.Dense(units_out, activation=act_out, name="output"))
    return compile_for_task(keras.Sequential(layers, name="cnn"), meta, **compile_knobs)


def _take_compile_knobs(fn: Callable[..., Any]) -> None:
    """Give ``fn`` the signature its callers read (``builder_accepts``, ``builder_defaults``,
    scikeras' ``get_params``): its own arguments, then each compile knob of :func:`compile_for_task`
    with its default, in place of ``**compile_knobs``."""
    own = [p for p in inspect.signature(fn).parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
    knobs = [p for name, p in inspect.signature(compile_for_task).parameters.items() if name in COMPILE_PARAMS]
    setattr(fn, "__signature__", inspect.Signature(own + knobs))  # noqa: B010


_take_compile_knobs(build_cnn)
#: sample ranks the cnn takes (sequences or (h, w) images, and (h, w, c) images): the data side refuses
#: other inputs before anything is written
setattr(build_cnn, "input_ranks", (2, 3))  # noqa: B010
