"""The built-in ``mlp`` builder: a configurable multilayer perceptron for tables of features.

Registered as ``model.builder: mlp`` in :data:`hpsearch.registry.BUILDERS`. The architecture knobs
live here; the compile knobs (optimizer, learning rate, schedule, loss, metrics, speed levers) are
the ones every built-in builder shares, documented and applied by
:func:`hpsearch.models.builders.compile_for_task`. Keras is imported inside :func:`build_mlp` so that
checking a study file does not load it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from hpsearch.errors import ConfigError
from hpsearch.models.builders import (
    ParamValues,
    check_compile_params,
    compile_for_task,
    named_choice,
    output_spec,
    resolve_loss,
    with_param_check,
)
from hpsearch.models.paramspec import Spec, check_specs, check_value, value_bounds
from hpsearch.spec.space import coerce_value

if TYPE_CHECKING:  # pragma: no cover
    import keras

__all__ = ["ACTIVATIONS", "INITIALIZERS", "MAX_UNITS", "MAX_LAYERS", "MLP_SPECS", "build_mlp", "check_mlp_params"]

ACTIVATIONS = ("relu", "leaky_relu", "elu", "selu", "gelu", "swish", "tanh", "softplus", "prelu")
INITIALIZERS = ("glorot_uniform", "glorot_normal", "he_uniform", "he_normal", "lecun_normal")

_RELU_FAMILY = frozenset({"relu", "leaky_relu", "elu", "gelu", "swish", "prelu"})

#: the widest hidden layer and the deepest stack a study may ask for: beyond them a typo (an extra
#: zero or three) would build a model no machine holds, in every trial
MAX_UNITS = 65_536
MAX_LAYERS = 1_000

#: The type and range of each architecture parameter (the compile knobs: builders.COMPILE_SPECS).
MLP_SPECS = {
    "n_hidden": Spec.integer(0, MAX_LAYERS), "n_neurons": Spec.integer(1, MAX_UNITS),
    "funnel": Spec.number(0, low_open=True, null=True), "activation": Spec.one_of(ACTIVATIONS),
    "kernel_initializer": Spec.one_of(INITIALIZERS, null=True), "batch_norm": Spec.flag(),
    "dropout": Spec.number(0, 1, high_open=True), "l1": Spec.number(0), "l2": Spec.number(0),
    "max_norm": Spec.number(0, low_open=True, null=True),
}


def check_mlp_params(values: ParamValues) -> None:
    """Every value a study gives the MLP's parameters (its own and the shared compile knobs),
    checked before anything runs: a bad one would otherwise fail every trial at build time."""
    check_specs(values, MLP_SPECS)
    check_compile_params(values)
    funnel, where = value_bounds(values, "funnel", 1.0)
    if funnel > 1:  # a widening funnel: the last hidden layer is the widest
        units, _ = value_bounds(values, "n_neurons", 30)
        layers, _ = value_bounds(values, "n_hidden", 1)
        if math.log(units) + (layers - 1) * math.log(funnel) > math.log(MAX_UNITS):
            raise ConfigError(f"{where}: funnel {funnel:g} widens {units:g} units over {layers:g} hidden layers"
                              f" beyond {MAX_UNITS} units; lower funnel, n_neurons or n_hidden")


def _hidden_widths(n_hidden: int, n_neurons: int | list[int], funnel: float | None) -> list[int]:
    if isinstance(n_neurons, list):  # one width per layer (space: `per_layer: n_hidden`)
        return n_neurons
    widths = []
    width = float(n_neurons)
    for _ in range(n_hidden):
        widths.append(max(1, round(width)))
        if funnel is not None:
            width *= funnel
    return widths


def _check_architecture(**values: Any) -> None:
    """One-line ConfigErrors for architecture values of the wrong type or out of range (numpy
    scalars already coerced): the same specs as the study-file check."""
    n_neurons = values.pop("n_neurons")
    for width in n_neurons if isinstance(n_neurons, list) else [n_neurons]:  # a list: one per layer
        check_value("model.n_neurons", width, MLP_SPECS["n_neurons"])
    for name, value in values.items():
        check_value(f"model.{name}", value, MLP_SPECS[name])
    if isinstance(n_neurons, list) and len(n_neurons) != values["n_hidden"]:
        raise ConfigError(f"model.n_neurons: {len(n_neurons)} per-layer widths for n_hidden {values['n_hidden']};"
                          " give one per hidden layer")


def _activation_layer(activation: str, name: str) -> Any:
    """``prelu`` has weights (a layer of its own); every other activation is a named function."""
    import keras

    if activation == "prelu":
        return keras.layers.PReLU(name=name)
    return keras.layers.Activation(activation, name=name)


def _hidden_layers(widths: list[int], activation: str, kernel_initializer: str, batch_norm: bool,
                   dropout: float, l1: float, l2: float, max_norm: float | None,
                   alpha_dropout: bool = False) -> list[Any]:
    """The hidden layers: Dense (-> BatchNormalization) (-> Activation) (-> Dropout) per width."""
    import keras

    separate = batch_norm or activation == "prelu"
    drop = keras.layers.AlphaDropout if alpha_dropout else keras.layers.Dropout

    regularizer = keras.regularizers.L1L2(l1=l1, l2=l2) if l1 > 0 or l2 > 0 else None
    constraint = keras.constraints.MaxNorm(float(max_norm)) if max_norm is not None else None
    layers: list[Any] = []
    for i, width in enumerate(widths):
        layers.append(keras.layers.Dense(
            width,
            activation=None if separate else activation,
            use_bias=not batch_norm,
            kernel_initializer=kernel_initializer,
            kernel_regularizer=regularizer,
            kernel_constraint=constraint,
            name=f"hidden_{i}",
        ))
        if batch_norm:
            layers.append(keras.layers.BatchNormalization(name=f"bn_{i}"))
        if separate:
            layers.append(_activation_layer(activation, f"act_{i}"))
        if dropout > 0:
            layers.append(drop(dropout, name=f"dropout_{i}"))
    return layers


def _input_layers(meta: Mapping[str, Any] | None) -> list[Any]:
    """Rows of ``n_features_in_``; N-D samples (``X_shape_``: images, sequences) flattened first,
    as in Keras' classic MLP recipe; nothing when meta does not say (sized by the first batch)."""
    import keras

    shape = (meta or {}).get("X_shape_")
    if shape is not None and len(shape) > 2:
        return [keras.Input(shape=tuple(int(d) for d in shape[1:])), keras.layers.Flatten()]
    n_features = (meta or {}).get("n_features_in_")
    return [] if n_features is None else [keras.Input(shape=(int(n_features),))]


@with_param_check(check_mlp_params)
def build_mlp(
    n_hidden: int = 1,
    n_neurons: int | list[int] = 30,
    funnel: float | None = None,
    activation: str = "relu",
    kernel_initializer: str | None = None,
    batch_norm: bool = False,
    dropout: float = 0.0,
    alpha_dropout: bool = False,
    l1: float = 0.0,
    l2: float = 0.0,
    max_norm: float | None = None,
    optimizer: str = "sgd",
    learning_rate: float = 3e-3,
    momentum: float = 0.9,
    weight_decay: float | None = None,
    clipnorm: float | None = None,
    clipvalue: float | None = None,
    lr_schedule: str | None = None,
    lr_decay_steps: int = 1000,
    lr_decay_rate: float = 0.1,
    lr_decay_epochs: int = 10,
    lr_power: float = 1.0,
    lr_patience: int = 5,
    lr_warmup_epochs: int = 0,
    loss: str | None = None,
    metrics: list[str] | None = None,
    steps_per_execution: int = 1,
    jit_compile: bool | str = "auto",
    meta: Mapping[str, Any] | None = None,
) -> keras.Model:
    """Build and compile a multilayer perceptron for the task described by ``meta``.

    Every argument except ``meta`` is a study-file key (``model.fixed`` / ``space``).
    Long: one keyword per study-file knob; the signature is the builder's documented interface.

    Architecture
        n_hidden: number of hidden Dense layers (0 = a linear/logistic model).
        n_neurons: units of the first hidden layer (>= 1), or a list with one width per hidden
            layer (a space's ``per_layer: n_hidden`` parameter).
        funnel: None = every hidden layer has ``n_neurons`` units; a float in (0, 1] (or > 1 to
            widen) = each hidden layer has ``funnel`` times the units of the previous one,
            rounded, at least 1 (``n_neurons=64, funnel=0.5, n_hidden=3`` -> 64, 32, 16).
        activation: relu, leaky_relu, elu, selu, gelu, swish, tanh, softplus, prelu (a learned
            slope per unit).
        kernel_initializer: glorot_uniform, glorot_normal, he_uniform, he_normal, lecun_normal;
            default he_normal for the relu family (relu, leaky_relu, elu, gelu, swish),
            lecun_normal for selu, glorot_uniform for tanh.
        batch_norm: Dense (no bias) -> BatchNormalization -> activation in each hidden layer.
        dropout: Dropout rate in [0, 1) after each hidden layer's activation.
        alpha_dropout: use AlphaDropout (keeps selu's self-normalisation) instead of Dropout.
        l1, l2: kernel regularization factors of the hidden layers (0 = off).
        max_norm: max-norm constraint on hidden kernels (None = off).
    Compilation (shared by every built-in builder: :func:`hpsearch.models.builders.compile_for_task`)
        optimizer, learning_rate, momentum, weight_decay, clipnorm, clipvalue, lr_schedule,
        lr_decay_steps, lr_decay_rate, lr_decay_epochs, lr_power, lr_patience, lr_warmup_epochs, loss,
        metrics, steps_per_execution, jit_compile.
    Task
        meta: scikeras-style dict: ``n_features_in_``, ``X_shape_``, ``target_type_``, ``n_classes_``,
            ``n_outputs_`` (optional ``task``: classification/regression). None = regression
            with one output and the input size taken from the first batch. N-D samples
            (``X_shape_`` of rank > 2: images, sequences) are flattened by the first layer.
    """
    import keras

    n_hidden, n_neurons, funnel = coerce_value(n_hidden), coerce_value(n_neurons), coerce_value(funnel)
    dropout, l1, l2, max_norm = (coerce_value(v) for v in (dropout, l1, l2, max_norm))
    _check_architecture(n_hidden=n_hidden, n_neurons=n_neurons, funnel=funnel, dropout=dropout, l1=l1, l2=l2,
                        max_norm=max_norm, batch_norm=coerce_value(batch_norm))
    activation = named_choice("model.activation", activation, ACTIVATIONS)
    if kernel_initializer is None:
        kernel_initializer = ("lecun_normal" if activation == "selu"
                              else "he_normal" if activation in _RELU_FAMILY
                              else "glorot_uniform")
    kernel_initializer = named_choice("model.kernel_initializer", kernel_initializer, INITIALIZERS)
    resolve_loss(meta, loss)  # refuse a loss that does not fit the task before building anything
    units_out, act_out = output_spec(meta)

    layers: list[Any] = _input_layers(meta)
    layers += _hidden_layers(_hidden_widths(n_hidden, n_neurons, funnel), activation, kernel_initializer,
                             bool(batch_norm), dropout, float(l1), float(l2), max_norm, bool(alpha_dropout))
    layers.append(keras.layers.Dense(units_out, activation=act_out, name="output"))
    model = keras.Sequential(layers, name="mlp")
    return compile_for_task(model, meta, optimizer=optimizer, learning_rate=learning_rate, momentum=momentum,
                            weight_decay=weight_decay, clipnorm=clipnorm, clipvalue=clipvalue, lr_schedule=lr_schedule,
                            lr_decay_steps=lr_decay_steps, lr_decay_rate=lr_decay_rate, lr_decay_epochs=lr_decay_epochs,
                            lr_power=lr_power, lr_patience=lr_patience, lr_warmup_epochs=lr_warmup_epochs,
                            loss=loss, metrics=metrics,
                            steps_per_execution=steps_per_execution, jit_compile=jit_compile)
