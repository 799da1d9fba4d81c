"""The built-in ``mlp`` builder: a configurable multilayer perceptron for tables of features.

Registered as ``model.builder: mlp`` in :data:`hpsearch.registry.BUILDERS`. The architecture knobs
live here; the compile knobs (optimizer, learning rate, schedule, loss, metrics, speed levers) are
the ones every built-in builder shares, documented and applied by
:func:`hpsearch.builders.compile_for_task`. Keras is imported inside :func:`build_mlp` so that
checking a study file does not load it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from hpsearch.builders import (
    ParamValues,
    check_choices,
    check_compile_params,
    compile_for_task,
    named_choice,
    output_spec,
    resolve_loss,
    with_param_check,
)
from hpsearch.errors import ConfigError
from hpsearch.space import coerce_value

if TYPE_CHECKING:  # pragma: no cover
    import keras

__all__ = ["ACTIVATIONS", "INITIALIZERS", "build_mlp", "check_mlp_params"]

ACTIVATIONS = ("relu", "leaky_relu", "elu", "selu", "gelu", "swish", "tanh")
INITIALIZERS = ("glorot_uniform", "glorot_normal", "he_uniform", "he_normal", "lecun_normal")

_RELU_FAMILY = frozenset({"relu", "leaky_relu", "elu", "gelu", "swish"})


def check_mlp_params(values: ParamValues) -> None:
    """The MLP's named choices (its own and the shared compile knobs), checked before anything
    runs: a typo would otherwise fail every trial at build time."""
    check_choices(values, {"activation": ACTIVATIONS, "kernel_initializer": INITIALIZERS},
                  optional=("kernel_initializer",))
    check_compile_params(values)


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


def _check_architecture(n_hidden: Any, n_neurons: Any, funnel: Any, dropout: float, l1: Any, l2: Any,
                        max_norm: Any) -> None:
    """One-line ConfigErrors for architecture values out of range (numpy scalars already coerced)."""
    if not isinstance(n_hidden, int) or isinstance(n_hidden, bool) or n_hidden < 0:
        raise ConfigError(f"model.n_hidden: must be an integer >= 0, got {n_hidden!r}")
    widths = n_neurons if isinstance(n_neurons, list) else [n_neurons]
    if any(not isinstance(w, int) or isinstance(w, bool) or w < 1 for w in widths):
        raise ConfigError(f"model.n_neurons: must be an integer >= 1 (or one per layer), got {n_neurons!r}")
    if isinstance(n_neurons, list) and len(n_neurons) != n_hidden:
        raise ConfigError(f"model.n_neurons: {len(n_neurons)} per-layer widths for n_hidden {n_hidden};"
                          " give one per hidden layer")
    if funnel is not None and not (isinstance(funnel, (int, float)) and funnel > 0):
        raise ConfigError(f"model.funnel: must be a number > 0 or null, got {funnel!r}")
    if not 0.0 <= dropout < 1.0:
        raise ConfigError(f"model.dropout: must be in [0, 1), got {dropout!r}")
    for name, value in (("l1", l1), ("l2", l2)):
        if float(value) < 0:
            raise ConfigError(f"model.{name}: must be >= 0, got {value!r}")
    if max_norm is not None and not float(max_norm) > 0:
        raise ConfigError(f"model.max_norm: must be > 0 or null, got {max_norm!r}")


def _hidden_layers(widths: list[int], activation: str, kernel_initializer: str, batch_norm: bool,
                   dropout: float, l1: float, l2: float, max_norm: float | None) -> list[Any]:
    """The hidden layers: Dense (-> BatchNormalization -> Activation) (-> Dropout) per width."""
    import keras

    regularizer = keras.regularizers.L1L2(l1=l1, l2=l2) if l1 > 0 or l2 > 0 else None
    constraint = keras.constraints.MaxNorm(float(max_norm)) if max_norm is not None else None
    layers: list[Any] = []
    for i, width in enumerate(widths):
        layers.append(keras.layers.Dense(
            width,
            activation=None if batch_norm else activation,
            use_bias=not batch_norm,
            kernel_initializer=kernel_initializer,
            kernel_regularizer=regularizer,
            kernel_constraint=constraint,
            name=f"hidden_{i}",
        ))
        if batch_norm:
            layers.append(keras.layers.BatchNormalization(name=f"bn_{i}"))
            layers.append(keras.layers.Activation(activation, name=f"act_{i}"))
        if dropout > 0:
            layers.append(keras.layers.Dropout(dropout, name=f"dropout_{i}"))
    return layers


@with_param_check(check_mlp_params)
def build_mlp(
    n_hidden: int = 1,
    n_neurons: int | list[int] = 30,
    funnel: float | None = None,
    activation: str = "relu",
    kernel_initializer: str | None = None,
    batch_norm: bool = False,
    dropout: float = 0.0,
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
    loss: str | None = None,
    metrics: list[str] | None = None,
    steps_per_execution: int = 1,
    jit_compile: bool | str = "auto",
    meta: Mapping[str, Any] | None = None,
) -> keras.Model:
    """Build and compile a multilayer perceptron for the task described by ``meta``.

    Every argument except ``meta`` is a study-file key (``model.fixed`` / ``space``).

    Architecture
        n_hidden: number of hidden Dense layers (0 = a linear/logistic model).
        n_neurons: units of the first hidden layer (>= 1), or a list with one width per hidden
            layer (a space's ``per_layer: n_hidden`` parameter).
        funnel: None = every hidden layer has ``n_neurons`` units; a float in (0, 1] (or > 1 to
            widen) = each hidden layer has ``funnel`` times the units of the previous one,
            rounded, at least 1 (``n_neurons=64, funnel=0.5, n_hidden=3`` -> 64, 32, 16).
        activation: relu, leaky_relu, elu, selu, gelu, swish, tanh.
        kernel_initializer: glorot_uniform, glorot_normal, he_uniform, he_normal, lecun_normal;
            default he_normal for the relu family (relu, leaky_relu, elu, gelu, swish),
            lecun_normal for selu, glorot_uniform for tanh.
        batch_norm: Dense (no bias) -> BatchNormalization -> activation in each hidden layer.
        dropout: Dropout rate in [0, 1) after each hidden layer's activation.
        l1, l2: kernel regularization factors of the hidden layers (0 = off).
        max_norm: max-norm constraint on hidden kernels (None = off).
    Compilation (shared by every built-in builder: :func:`hpsearch.builders.compile_for_task`)
        optimizer, learning_rate, momentum, weight_decay, clipnorm, clipvalue, lr_schedule,
        lr_decay_steps, lr_decay_rate, loss, metrics, steps_per_execution, jit_compile.
    Task
        meta: scikeras-style dict: ``n_features_in_``, ``target_type_``, ``n_classes_``,
            ``n_outputs_`` (optional ``task``: classification/regression). None = regression
            with one output and the input size taken from the first batch.
    """
    import keras

    n_hidden, n_neurons, funnel = coerce_value(n_hidden), coerce_value(n_neurons), coerce_value(funnel)
    dropout = float(coerce_value(dropout))
    _check_architecture(n_hidden, n_neurons, funnel, dropout, l1, l2, max_norm)
    activation = named_choice("model.activation", activation, ACTIVATIONS)
    if kernel_initializer is None:
        kernel_initializer = ("lecun_normal" if activation == "selu"
                              else "he_normal" if activation in _RELU_FAMILY
                              else "glorot_uniform")
    kernel_initializer = named_choice("model.kernel_initializer", kernel_initializer, INITIALIZERS)
    resolve_loss(meta, loss)  # refuse a loss that does not fit the task before building anything
    units_out, act_out = output_spec(meta)

    layers: list[Any] = []
    n_features = (meta or {}).get("n_features_in_")
    if n_features is not None:
        layers.append(keras.Input(shape=(int(n_features),)))
    layers += _hidden_layers(_hidden_widths(n_hidden, n_neurons, funnel), activation, kernel_initializer,
                             bool(batch_norm), dropout, float(l1), float(l2), max_norm)
    layers.append(keras.layers.Dense(units_out, activation=act_out, name="output"))
    model = keras.Sequential(layers, name="mlp")
    return compile_for_task(model, meta, optimizer=optimizer, learning_rate=learning_rate, momentum=momentum,
                            weight_decay=weight_decay, clipnorm=clipnorm, clipvalue=clipvalue, lr_schedule=lr_schedule,
                            lr_decay_steps=lr_decay_steps, lr_decay_rate=lr_decay_rate, loss=loss, metrics=metrics,
                            steps_per_execution=steps_per_execution, jit_compile=jit_compile)
