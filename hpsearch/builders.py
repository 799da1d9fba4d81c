"""Model builders: the configurable MLP and the registry of user builders.

A builder is a plain function ``f(**params) -> keras.Model`` (optionally also taking ``meta``, the
scikeras-style description of the task). Builders never see sklearn or Optuna. ``build_mlp``
covers the usual MLP knobs; users plug in their own with ``model.builder: "pkg.module:function"``.

Only ``keras.*`` APIs are used here, so every Keras 3 backend (tensorflow, jax, torch) works.
Keras is imported lazily (inside functions) so that config validation stays fast.

Keras log names (``history.history`` keys, callback ``logs``) of the default metrics are fixed:

* binary classification: ``loss, accuracy, auc`` (+ ``val_loss, val_accuracy, val_auc``)
* multiclass / multilabel classification: ``loss, accuracy`` (+ ``val_*``)
* regression: ``loss, mse, mae`` (+ ``val_loss, val_mse, val_mae``)

``metrics=[...]`` picks from ``METRIC_NAMES``; each is logged under exactly that name.
"""

from __future__ import annotations

import importlib
import inspect
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping

from hpsearch.errors import ConfigError
from hpsearch.space import coerce_value

if TYPE_CHECKING:  # pragma: no cover
    import keras

__all__ = [
    "ACTIVATIONS",
    "INITIALIZERS",
    "OPTIMIZERS",
    "LR_SCHEDULES",
    "REGRESSION_LOSSES",
    "METRIC_NAMES",
    "COMPILE_PARAMS",
    "META_PARAMS",
    "build_mlp",
    "compile_for_task",
    "make_optimizer",
    "task_of",
    "default_metric_names",
    "resolve_builder",
    "builder_name",
    "builder_accepts",
    "check_params",
    "call_builder",
    "count_params",
]

ACTIVATIONS = ("relu", "leaky_relu", "elu", "selu", "gelu", "swish", "tanh")
INITIALIZERS = ("glorot_uniform", "glorot_normal", "he_uniform", "he_normal", "lecun_normal")
OPTIMIZERS = (
    "sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam", "adamax", "nadam", "adamw",
)
LR_SCHEDULES = ("exponential", "cosine", "piecewise")
REGRESSION_LOSSES = ("mse", "mae", "huber")
CLASSIFICATION_LOSSES = ("binary_crossentropy", "sparse_categorical_crossentropy",
                         "categorical_crossentropy")
METRIC_NAMES = ("accuracy", "auc", "mse", "mae", "rmse")

_RELU_FAMILY = {"relu", "leaky_relu", "elu", "gelu", "swish"}

#: Parameters that only matter when compiling; ``call_builder`` uses them to compile an
#: uncompiled user model even when the user's function does not accept them.
COMPILE_PARAMS = frozenset({
    "optimizer", "learning_rate", "momentum", "weight_decay", "clipnorm", "clipvalue",
    "lr_schedule", "lr_decay_steps", "lr_decay_rate", "loss", "metrics",
    "steps_per_execution", "jit_compile",
})

#: Names a builder may declare to receive extra context instead of hyperparameters.
META_PARAMS = frozenset({"meta", "compile_kwargs", "params"})


def _choice(field: str, value: Any, allowed: Iterable[str]) -> str:
    allowed = tuple(allowed)
    if not isinstance(value, str) or value.lower() not in allowed:
        raise ConfigError(
            f"{field}: unknown value {value!r}; use one of {', '.join(allowed)}"
        )
    return value.lower()


# --------------------------------------------------------------------------------------------
# task / output / loss / metrics
# --------------------------------------------------------------------------------------------

def task_of(meta: Mapping[str, Any] | None) -> str:
    """The task as one of ``binary``, ``multiclass``, ``multiclass-onehot``, ``multilabel``,
    ``regression``, from scikeras-style ``meta``.

    A ``task`` key (``"classification"``/``"regression"``) wins; otherwise a target is a
    classification target when meta carries ``n_classes_`` (scikeras' KerasRegressor never sets
    it, even for integer-valued targets that ``type_of_target`` calls "multiclass").
    """
    meta = meta or {}
    ttype = str(meta.get("target_type_", "continuous"))
    task = meta.get("task")
    n_classes = meta.get("n_classes_")
    if task == "regression" or (task is None and (n_classes is None or ttype.startswith("continuous"))):
        return "regression"
    if ttype == "multiclass-onehot":
        return "multiclass-onehot"
    if ttype == "multilabel-indicator":
        return "multilabel"
    if ttype == "binary" or (n_classes is not None and int(n_classes) <= 2):
        return "binary"
    if ttype == "multiclass" or n_classes is not None:
        return "multiclass"
    raise ConfigError(f"data: target type {ttype!r} is not supported by the built-in model")


def _output_spec(meta: Mapping[str, Any] | None) -> tuple[int, str]:
    """(units, activation) of the output layer."""
    task = task_of(meta)
    meta = meta or {}
    if task == "binary":
        return 1, "sigmoid"
    if task in ("multiclass", "multiclass-onehot"):
        return int(meta["n_classes_"]), "softmax"
    if task == "multilabel":
        return int(meta["n_classes_"]), "sigmoid"
    return int(meta.get("n_outputs_", 1) or 1), "linear"


def _resolve_loss(meta: Mapping[str, Any] | None, loss: Any) -> Any:
    task = task_of(meta)
    if loss is not None and not isinstance(loss, str):
        return loss  # a keras Loss object or callable: the user knows best
    if task == "regression":
        return _choice("model.loss", loss or "mse", REGRESSION_LOSSES)
    expected = {
        "binary": "binary_crossentropy",
        "multilabel": "binary_crossentropy",
        "multiclass": "sparse_categorical_crossentropy",
        "multiclass-onehot": "categorical_crossentropy",
    }[task]
    if loss is not None and loss != expected:
        raise ConfigError(
            f"model.loss: {loss!r} does not fit a {task} target; use {expected} (or leave it unset)"
        )
    return expected


def default_metric_names(meta: Mapping[str, Any] | None) -> list[str]:
    """Metric names logged by default for this task (the ``val_`` prefix is added by Keras)."""
    task = task_of(meta)
    if task == "binary":
        return ["accuracy", "auc"]
    if task == "regression":
        return ["mse", "mae"]
    return ["accuracy"]


def _make_metric(name: str, task: str) -> Any:
    import keras

    if name == "accuracy":
        if task == "regression":
            raise ConfigError("model.metrics: 'accuracy' needs a classification target")
        cls = {
            "binary": keras.metrics.BinaryAccuracy,
            "multilabel": keras.metrics.BinaryAccuracy,
            "multiclass": keras.metrics.SparseCategoricalAccuracy,
            "multiclass-onehot": keras.metrics.CategoricalAccuracy,
        }[task]
        return cls(name="accuracy")
    if name == "auc":
        if task not in ("binary", "multilabel"):
            raise ConfigError("model.metrics: 'auc' needs a binary or multilabel target")
        return keras.metrics.AUC(name="auc", multi_label=task == "multilabel")
    if name == "mse":
        return keras.metrics.MeanSquaredError(name="mse")
    if name == "mae":
        return keras.metrics.MeanAbsoluteError(name="mae")
    return keras.metrics.RootMeanSquaredError(name="rmse")


def _resolve_metrics(meta: Mapping[str, Any] | None, metrics: Any) -> list[Any]:
    task = task_of(meta)
    if metrics is None:
        metrics = default_metric_names(meta)
    elif isinstance(metrics, str):
        metrics = [metrics]
    out = []
    for m in metrics:
        if isinstance(m, str):
            out.append(_make_metric(_choice("model.metrics", m, METRIC_NAMES), task))
        else:
            out.append(m)  # a keras Metric object
    return out


# --------------------------------------------------------------------------------------------
# optimizer
# --------------------------------------------------------------------------------------------

def _learning_rate(learning_rate: float, lr_schedule: str | None, lr_decay_steps: int,
                   lr_decay_rate: float) -> Any:
    import keras

    learning_rate = float(learning_rate)
    if not learning_rate > 0:
        raise ConfigError(f"model.learning_rate: must be > 0, got {learning_rate!r}")
    if lr_schedule is None or lr_schedule == "none":
        return learning_rate
    schedule = _choice("model.lr_schedule", lr_schedule, LR_SCHEDULES)
    if int(lr_decay_steps) < 1:
        raise ConfigError(f"model.lr_decay_steps: must be >= 1, got {lr_decay_steps!r}")
    if not 0 <= float(lr_decay_rate) <= 1:
        raise ConfigError(f"model.lr_decay_rate: must be in [0, 1], got {lr_decay_rate!r}")
    steps, rate = int(lr_decay_steps), float(lr_decay_rate)
    sch = keras.optimizers.schedules
    if schedule == "exponential":
        return sch.ExponentialDecay(learning_rate, decay_steps=steps, decay_rate=rate)
    if schedule == "cosine":
        return sch.CosineDecay(learning_rate, decay_steps=steps, alpha=rate)
    # Keras keeps the first value while step <= boundary: drop from step ``steps`` on
    return sch.PiecewiseConstantDecay([steps - 1], [learning_rate, learning_rate * rate])


def make_optimizer(
    optimizer: Any = "sgd",
    learning_rate: float = 3e-3,
    momentum: float = 0.9,
    weight_decay: float | None = None,
    clipnorm: float | None = None,
    clipvalue: float | None = None,
    lr_schedule: str | None = None,
    lr_decay_steps: int = 1000,
    lr_decay_rate: float = 0.1,
) -> Any:
    """A Keras optimizer from names (see :func:`build_mlp` for the meaning of each knob).

    A ``keras.optimizers.Optimizer`` instance is returned unchanged.
    """
    import keras

    if not isinstance(optimizer, str):
        if isinstance(optimizer, keras.optimizers.Optimizer):
            return optimizer
        if isinstance(optimizer, type) and issubclass(optimizer, keras.optimizers.Optimizer):
            return optimizer(learning_rate=float(learning_rate))
    name = _choice("model.optimizer", optimizer, OPTIMIZERS)
    lr = _learning_rate(learning_rate, lr_schedule, lr_decay_steps, lr_decay_rate)
    common: dict[str, Any] = {"learning_rate": lr}
    if clipnorm is not None:
        common["clipnorm"] = float(clipnorm)
    if clipvalue is not None:
        common["clipvalue"] = float(clipvalue)
    if weight_decay is not None and name != "adamw":
        common["weight_decay"] = float(weight_decay)
    opt = keras.optimizers
    if name == "sgd":
        return opt.SGD(**common)
    if name in ("momentum", "nesterov"):
        if not 0 <= float(momentum) < 1:
            raise ConfigError(f"model.momentum: must be in [0, 1), got {momentum!r}")
        return opt.SGD(momentum=float(momentum), nesterov=name == "nesterov", **common)
    if name == "adamw":
        wd = 0.004 if weight_decay is None else float(weight_decay)
        return opt.AdamW(weight_decay=wd, **common)
    cls = {"adagrad": opt.Adagrad, "rmsprop": opt.RMSprop, "adam": opt.Adam,
           "adamax": opt.Adamax, "nadam": opt.Nadam}[name]
    return cls(**common)


def compile_for_task(
    model: "keras.Model",
    meta: Mapping[str, Any] | None = None,
    *,
    optimizer: Any = "sgd",
    learning_rate: float = 3e-3,
    momentum: float = 0.9,
    weight_decay: float | None = None,
    clipnorm: float | None = None,
    clipvalue: float | None = None,
    lr_schedule: str | None = None,
    lr_decay_steps: int = 1000,
    lr_decay_rate: float = 0.1,
    loss: Any = None,
    metrics: Any = None,
    steps_per_execution: int = 1,
    jit_compile: Any = "auto",
) -> "keras.Model":
    """Compile ``model`` with the loss and metrics that fit the task in ``meta``.

    Used by :func:`build_mlp` and for user builders that return an uncompiled model.
    """
    steps = coerce_value(steps_per_execution)
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise ConfigError(f"model.steps_per_execution: must be an integer >= 1, got {steps!r}")
    if jit_compile not in ("auto", True, False):
        raise ConfigError(f"model.jit_compile: unknown value {jit_compile!r}; use one of auto, true, false")
    import keras

    if steps > 1 and keras.backend.backend() == "torch":
        steps = 1  # Keras' PyTorch trainer runs one step per call (it raises otherwise); a speed knob only
    model.compile(
        optimizer=make_optimizer(optimizer, learning_rate, momentum, weight_decay, clipnorm,
                                 clipvalue, lr_schedule, lr_decay_steps, lr_decay_rate),
        loss=_resolve_loss(meta, loss),
        metrics=_resolve_metrics(meta, metrics),
        steps_per_execution=steps,
        jit_compile=jit_compile,
    )
    return model


# --------------------------------------------------------------------------------------------
# the MLP
# --------------------------------------------------------------------------------------------

def _hidden_widths(n_hidden: int, n_neurons: int, funnel: float | None) -> list[int]:
    widths = []
    width = float(n_neurons)
    for _ in range(n_hidden):
        widths.append(max(1, int(round(width))))
        if funnel is not None:
            width *= funnel
    return widths


def build_mlp(
    n_hidden: int = 1,
    n_neurons: int = 30,
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
) -> "keras.Model":
    """Build and compile a multilayer perceptron for the task described by ``meta``.

    Every argument except ``meta`` is a study-file key (``model.fixed`` / ``space``).

    Architecture
        n_hidden: number of hidden Dense layers (0 = a linear/logistic model).
        n_neurons: units of the first hidden layer (>= 1).
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
    Optimization
        optimizer: sgd (plain), momentum (SGD + ``momentum``), nesterov (SGD + Nesterov
            ``momentum``), adagrad, rmsprop, adam, adamax, nadam, adamw.
        learning_rate: initial learning rate (> 0).
        momentum: used by ``momentum`` and ``nesterov`` only; in [0, 1).
        weight_decay: decoupled weight decay (any optimizer; adamw defaults to 0.004).
        clipnorm, clipvalue: gradient clipping (None = off).
        lr_schedule: None, exponential, cosine or piecewise. All three reach
            ``learning_rate * lr_decay_rate`` after ``lr_decay_steps`` optimizer steps
            (batches, not epochs): exponential keeps decaying after that, cosine stays at that
            floor, piecewise is a single step drop.
        loss: regression: mse (default), mae, huber. Classification: leave unset (binary ->
            binary_crossentropy, multiclass -> sparse_categorical_crossentropy).
        metrics: None = the task's defaults (binary: accuracy, auc; multiclass: accuracy;
            regression: mse, mae) or a list from accuracy, auc, mse, mae, rmse. Keras logs each
            under exactly that name, and ``val_<name>`` on validation data.
        steps_per_execution: batches per compiled call (a speed lever for small models).
        jit_compile: "auto", True or False (XLA where the backend supports it).
    Task
        meta: scikeras-style dict: ``n_features_in_``, ``target_type_``, ``n_classes_``,
            ``n_outputs_`` (optional ``task``: classification/regression). None = regression
            with one output and the input size taken from the first batch.
    """
    import keras

    n_hidden = coerce_value(n_hidden)
    n_neurons = coerce_value(n_neurons)
    funnel = coerce_value(funnel)
    dropout = float(coerce_value(dropout))
    if not isinstance(n_hidden, int) or isinstance(n_hidden, bool) or n_hidden < 0:
        raise ConfigError(f"model.n_hidden: must be an integer >= 0, got {n_hidden!r}")
    if not isinstance(n_neurons, int) or isinstance(n_neurons, bool) or n_neurons < 1:
        raise ConfigError(f"model.n_neurons: must be an integer >= 1, got {n_neurons!r}")
    if funnel is not None and not (isinstance(funnel, (int, float)) and funnel > 0):
        raise ConfigError(f"model.funnel: must be a number > 0 or null, got {funnel!r}")
    if not 0.0 <= dropout < 1.0:
        raise ConfigError(f"model.dropout: must be in [0, 1), got {dropout!r}")
    for name, value in (("l1", l1), ("l2", l2)):
        if float(value) < 0:
            raise ConfigError(f"model.{name}: must be >= 0, got {value!r}")
    if max_norm is not None and not float(max_norm) > 0:
        raise ConfigError(f"model.max_norm: must be > 0 or null, got {max_norm!r}")
    activation = _choice("model.activation", activation, ACTIVATIONS)
    if kernel_initializer is None:
        kernel_initializer = ("lecun_normal" if activation == "selu"
                              else "he_normal" if activation in _RELU_FAMILY
                              else "glorot_uniform")
    kernel_initializer = _choice("model.kernel_initializer", kernel_initializer, INITIALIZERS)
    # validate the compile knobs before building anything
    _resolve_loss(meta, loss)
    units_out, act_out = _output_spec(meta)

    regularizer = (keras.regularizers.L1L2(l1=float(l1), l2=float(l2))
                   if float(l1) > 0 or float(l2) > 0 else None)
    constraint = keras.constraints.MaxNorm(float(max_norm)) if max_norm is not None else None

    layers: list[Any] = []
    n_features = (meta or {}).get("n_features_in_")
    if n_features is not None:
        layers.append(keras.Input(shape=(int(n_features),)))
    for i, width in enumerate(_hidden_widths(n_hidden, n_neurons, funnel)):
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
    layers.append(keras.layers.Dense(units_out, activation=act_out, name="output"))
    model = keras.Sequential(layers, name="mlp")
    return compile_for_task(
        model, meta, optimizer=optimizer, learning_rate=learning_rate, momentum=momentum,
        weight_decay=weight_decay, clipnorm=clipnorm, clipvalue=clipvalue,
        lr_schedule=lr_schedule, lr_decay_steps=lr_decay_steps, lr_decay_rate=lr_decay_rate,
        loss=loss, metrics=metrics, steps_per_execution=steps_per_execution,
        jit_compile=jit_compile,
    )


# --------------------------------------------------------------------------------------------
# registry of builders
# --------------------------------------------------------------------------------------------

_BUILTIN: dict[str, str] = {"mlp": "build_mlp"}


def resolve_builder(ref: str | Callable[..., Any], field: str = "model.builder") -> Callable[..., Any]:
    """``"mlp"`` -> :func:`build_mlp`; ``"package.module:function"`` -> that function.

    A callable is returned unchanged. Errors are :class:`ConfigError` naming ``field``.
    """
    if callable(ref):
        return ref
    if not isinstance(ref, str) or not ref.strip():
        raise ConfigError(f"{field}: expected 'mlp' or 'package.module:function', got {ref!r}")
    ref = ref.strip()
    if ref in _BUILTIN:
        return globals()[_BUILTIN[ref]]
    module_name, sep, func_name = ref.partition(":")
    if not sep or not module_name or not func_name or ":" in func_name:
        raise ConfigError(
            f"{field}: {ref!r} is neither a built-in builder ({', '.join(_BUILTIN)}) "
            "nor of the form 'package.module:function'"
        )
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # ImportError, or an error raised by the module itself
        raise ConfigError(f"{field}: cannot import {module_name!r} ({type(exc).__name__}: {exc})") from exc
    fn = getattr(module, func_name, None)
    if fn is None:
        raise ConfigError(f"{field}: module {module_name!r} has no function {func_name!r}")
    if not callable(fn):
        raise ConfigError(f"{field}: {ref!r} is not callable")
    return fn


def builder_name(fn: Callable[..., Any]) -> str:
    """A short name for messages: ``mlp`` for the built-in, else ``module:function``."""
    if fn is build_mlp:
        return "mlp"
    return f"{getattr(fn, '__module__', '?')}:{getattr(fn, '__qualname__', repr(fn))}"


def _signature(fn: Callable[..., Any]) -> inspect.Signature | None:
    try:
        return inspect.signature(fn)
    except (TypeError, ValueError):
        return None


def builder_accepts(fn: Callable[..., Any]) -> set[str] | None:
    """Names of the hyperparameters ``fn`` takes (``meta`` & co. excluded); None if it takes
    ``**kwargs`` (or its signature cannot be read), i.e. it accepts anything."""
    sig = _signature(fn)
    if sig is None:
        return None
    names = set()
    for p in sig.parameters.values():
        if p.kind is inspect.Parameter.VAR_KEYWORD:
            return None
        if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY):
            names.add(p.name)
    return names - META_PARAMS


def builder_defaults(fn: Callable[..., Any]) -> dict[str, Any]:
    """Hyperparameters of ``fn`` that have a default, with that default."""
    sig = _signature(fn)
    if sig is None:
        return {}
    return {
        p.name: p.default
        for p in sig.parameters.values()
        if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
        and p.default is not inspect.Parameter.empty
        and p.name not in META_PARAMS
    }


def _wants(fn: Callable[..., Any], name: str) -> bool:
    sig = _signature(fn)
    if sig is None:
        return False
    return any(p.name == name or p.kind is inspect.Parameter.VAR_KEYWORD
               for p in sig.parameters.values())


def check_params(fn: Callable[..., Any], names: Iterable[str], field: str = "model",
                 allow_compile_params: bool = True) -> None:
    """Raise :class:`ConfigError` for a parameter ``fn`` does not take.

    Compile parameters (``COMPILE_PARAMS``: optimizer, learning_rate, loss, ...) are allowed by
    default even when ``fn`` does not take them: they compile a model the builder returns
    uncompiled (``call_builder`` refuses them if the model comes back compiled).
    """
    accepted = builder_accepts(fn)
    if accepted is None:
        return
    for name in names:
        if name in accepted or (allow_compile_params and name in COMPILE_PARAMS):
            continue
        raise ConfigError(
            f"{field}.{name}: unknown parameter for builder {builder_name(fn)}; "
            f"known: {', '.join(sorted(accepted)) or '(none)'}"
        )


def call_builder(
    fn: Callable[..., Any],
    params: Mapping[str, Any],
    meta: Mapping[str, Any] | None = None,
    compile_defaults: Mapping[str, Any] | None = None,
    field: str = "model",
    clear_session: bool = True,
    context: Mapping[str, Any] | None = None,
) -> "keras.Model":
    """Build one model: clear the Keras session, coerce numpy values, call ``fn``.

    ``meta`` is passed only if ``fn`` declares it (or takes ``**kwargs``). Parameters ``fn``
    does not take must be compile parameters; they (over ``compile_defaults``) compile the model
    if ``fn`` returns it uncompiled, with the loss and metrics of the task in ``meta``.
    ``context`` entries (e.g. scikeras' ``compile_kwargs``/``params``) are passed only to a
    builder that names them. ``clear_session=False`` is for callers that cleared the session
    already (e.g. before seeding the random generators).
    """
    import keras

    if clear_session:
        keras.backend.clear_session()
    params = {str(k): coerce_value(v) for k, v in params.items()}
    accepted = builder_accepts(fn)
    check_params(fn, params, field=field)
    if accepted is None:
        call_kwargs, leftover = dict(params), {}
    else:
        call_kwargs = {k: v for k, v in params.items() if k in accepted}
        leftover = {k: v for k, v in params.items() if k not in accepted}
    if _wants(fn, "meta"):
        call_kwargs["meta"] = dict(meta) if meta is not None else None
    sig = _signature(fn)
    for name, value in (context or {}).items():
        if sig is not None and name in sig.parameters:
            call_kwargs[name] = value
    model = fn(**call_kwargs)
    if not isinstance(model, keras.Model):
        raise ConfigError(
            f"{field}.builder: {builder_name(fn)} returned {type(model).__name__}, not a keras.Model"
        )
    if not getattr(model, "compiled", False):
        knobs = {k: v for k, v in (compile_defaults or {}).items() if v is not None}
        knobs.update({k: v for k, v in params.items() if k in COMPILE_PARAMS})
        compile_for_task(model, meta, **knobs)
    elif leftover:
        name = sorted(leftover)[0]
        raise ConfigError(
            f"{field}.{name}: builder {builder_name(fn)} compiles its own model, so this "
            "parameter would have no effect; accept it as an argument or return an uncompiled model"
        )
    return model


def count_params(model: "keras.Model") -> int:
    """Number of weights (trainable and not) of a built model; 0 if it is not built yet."""
    try:
        return int(model.count_params())
    except ValueError:  # not built: no weights yet
        return 0
