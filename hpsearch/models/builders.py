"""Model builders: the protocol, the registry, parameter routing and the shared compile step.

A builder is a plain function ``f(**params) -> keras.Model`` that may also take ``meta`` (the
scikeras-style description of the task). It never sees sklearn or Optuna: only a dict of Python
scalars. Built-in builders are named in :data:`hpsearch.registry.BUILDERS` (``"mlp"`` ->
:func:`hpsearch.models.mlp.build_mlp`); user builders are referenced as ``"package.module:function"``.

A builder may carry a ``check_params`` attribute (set with :func:`with_param_check`): it checks the
named choices of its parameters (activation, optimizer, ...) before anything runs, so that a typo
in a study file is one line instead of every trial failing. Adding a built-in builder (e.g. a CNN)
is one module that builds a model, calls :func:`compile_for_task`, and declares its check, plus its
line in the registry.

Keras log names (``history.history`` keys, callback ``logs``) of the default metrics are fixed:

* binary classification: ``loss, accuracy, auc`` (+ ``val_loss, val_accuracy, val_auc``)
* multiclass / multilabel classification: ``loss, accuracy`` (+ ``val_*``)
* regression: ``loss, mse, mae`` (+ ``val_loss, val_mse, val_mae``)

``metrics=[...]`` picks from ``METRIC_NAMES``; each is logged under exactly that name. Only
``keras.*`` APIs are used, so every Keras 3 backend works; Keras is imported inside the functions
that need it, so that validating a study file stays fast.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from hpsearch.errors import ConfigError
from hpsearch.models.paramspec import ParamValues, Spec, check_choices, check_specs, named_choice
from hpsearch.models.schedules import LR_SCHEDULES, ScheduleSpec, attach, make_spec, needs_epochs, optimizer_rate
from hpsearch.registry import BUILDERS
from hpsearch.spec.space import CategoricalParam, FloatParam, SearchSpace, coerce_value

if TYPE_CHECKING:  # pragma: no cover
    import keras

__all__ = [
    "OPTIMIZERS", "LR_SCHEDULES", "REGRESSION_LOSSES", "METRIC_NAMES", "COMPILE_PARAMS", "META_PARAMS",
    "ParamValues", "ParamCheck", "named_choice", "check_choices", "check_compile_params", "with_param_check",
    "COMPILE_SPECS", "task_of", "output_spec", "resolve_loss", "compile_for_task",
    "resolve_builder", "builder_name", "builder_accepts", "builder_defaults", "check_builder_params",
    "call_builder", "count_params",
]

OPTIMIZERS = (
    "sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam", "adamax", "nadam", "adamw",
)
REGRESSION_LOSSES = ("mse", "mae", "huber")
METRIC_NAMES = ("accuracy", "auc", "mse", "mae", "rmse")

#: The one loss that fits each classification task (anything else is refused).
_CLASSIFICATION_LOSS = {
    "binary": "binary_crossentropy",
    "multilabel": "binary_crossentropy",
    "multiclass": "sparse_categorical_crossentropy",
    "multiclass-onehot": "categorical_crossentropy",
}

#: Names a builder may declare to receive extra context instead of hyperparameters.
META_PARAMS = frozenset({"meta", "compile_kwargs", "params"})

#: A builder's own value check: raises a one-line :class:`ConfigError` naming the field.
ParamCheck = Callable[[ParamValues], None]

_F = TypeVar("_F", bound=Callable[..., Any])


# --------------------------------------------------------------------------------------------
# the type and range of parameters (named choices and the rest: hpsearch.models.paramspec)
# --------------------------------------------------------------------------------------------

#: The type and range of each compile knob, checked over every value a study gives it.
COMPILE_SPECS: Mapping[str, Spec] = {
    "optimizer": Spec.one_of(OPTIMIZERS), "lr_schedule": Spec.one_of(LR_SCHEDULES, null=True),
    "loss": Spec.one_of((*REGRESSION_LOSSES, *_CLASSIFICATION_LOSS.values()), null=True,
                        shown=f"{', '.join(REGRESSION_LOSSES)} (regression) or leave it out for classification"),
    "metrics": Spec.one_of(METRIC_NAMES, null=True, many=True), "jit_compile": Spec.literal("auto", True, False),
    "learning_rate": Spec.number(0, low_open=True), "momentum": Spec.number(0, 1, high_open=True),
    "weight_decay": Spec.number(0, null=True), "lr_decay_rate": Spec.number(0, 1),
    "clipnorm": Spec.number(0, low_open=True, null=True), "clipvalue": Spec.number(0, low_open=True, null=True),
    "lr_decay_steps": Spec.integer(1), "steps_per_execution": Spec.integer(1),
}


def check_compile_params(values: ParamValues) -> None:
    """The type and range of the compile knobs that every built-in builder shares."""
    check_specs(values, COMPILE_SPECS)


def with_param_check(check: ParamCheck) -> Callable[[_F], _F]:
    """Decorator: attach ``check`` to a builder as its ``check_params`` (see the module docs)."""
    def attach(fn: _F) -> _F:
        setattr(fn, "check_params", check)  # noqa: B010  (a plain assignment would need a type: ignore)
        return fn

    return attach


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


def output_spec(meta: Mapping[str, Any] | None) -> tuple[int, str]:
    """(units, activation) of the output layer that fits the task in ``meta``."""
    task = task_of(meta)
    meta = meta or {}
    if task == "binary":
        return 1, "sigmoid"
    if task in ("multiclass", "multiclass-onehot"):
        return int(meta["n_classes_"]), "softmax"
    if task == "multilabel":
        return int(meta["n_classes_"]), "sigmoid"
    return int(meta.get("n_outputs_", 1) or 1), "linear"


def resolve_loss(meta: Mapping[str, Any] | None, loss: Any) -> Any:
    """The loss for the task: a regression loss by name, the one fitting classification loss, or
    a Keras loss object unchanged. Builders call it before building to fail early."""
    task = task_of(meta)
    if loss is not None and not isinstance(loss, str):
        return loss  # a keras Loss object or callable: the user knows best
    if task == "regression":
        return named_choice("model.loss", loss or "mse", REGRESSION_LOSSES)
    expected = _CLASSIFICATION_LOSS[task]
    if loss is not None and loss != expected:
        raise ConfigError(
            f"model.loss: {loss!r} does not fit a {task} target; use {expected} (or leave it unset)"
        )
    return expected


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
    """Keras metric objects: the task's defaults for None, else each named one (or object)."""
    task = task_of(meta)
    if metrics is None:
        metrics = {"binary": ["accuracy", "auc"], "regression": ["mse", "mae"]}.get(task, ["accuracy"])
    elif isinstance(metrics, str):
        metrics = [metrics]
    return [_make_metric(named_choice("model.metrics", m, METRIC_NAMES), task) if isinstance(m, str) else m
            for m in metrics]


# --------------------------------------------------------------------------------------------
# optimizer and compile: the knobs every built-in builder shares
# --------------------------------------------------------------------------------------------

def _make_optimizer(optimizer: Any, learning_rate: float, momentum: float, weight_decay: float | None,
                    clipnorm: float | None, clipvalue: float | None, spec: ScheduleSpec) -> Any:
    """A Keras optimizer from names; an ``Optimizer`` instance is returned unchanged."""
    import keras

    if not isinstance(optimizer, str):
        if isinstance(optimizer, keras.optimizers.Optimizer):
            return optimizer
        if isinstance(optimizer, type) and issubclass(optimizer, keras.optimizers.Optimizer):
            return optimizer(learning_rate=float(learning_rate))
    name = named_choice("model.optimizer", optimizer, OPTIMIZERS)
    lr = optimizer_rate(spec)
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
    model: keras.Model,
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
    lr_decay_epochs: int = 10,
    lr_power: float = 1.0,
    lr_patience: int = 5,
    lr_warmup_epochs: int = 0,
    loss: Any = None,
    metrics: Any = None,
    steps_per_execution: int = 1,
    jit_compile: Any = "auto",
) -> keras.Model:
    """Compile ``model`` with the loss and metrics that fit the task in ``meta``.

    Its keyword arguments are the compile knobs of every built-in builder (:data:`COMPILE_PARAMS`)
    and compile the uncompiled model a user builder returns.

    optimizer: sgd (plain), momentum (SGD + ``momentum``), nesterov (SGD + Nesterov ``momentum``),
        adagrad, rmsprop, adam, adamax, nadam, adamw (or a Keras optimizer object).
    learning_rate: initial learning rate (> 0). momentum: for ``momentum``/``nesterov``, in [0, 1).
    weight_decay: decoupled weight decay (any optimizer; adamw defaults to 0.004).
    clipnorm, clipvalue: gradient clipping (None = off).
    lr_schedule: None, exponential, cosine or piecewise. All three reach ``learning_rate *
        lr_decay_rate`` after ``lr_decay_steps`` optimizer steps (batches, not epochs): exponential
        keeps decaying after that, cosine stays at that floor, piecewise is a single step drop.
        Per epoch (:mod:`hpsearch.models.schedules`): power (``lr_decay_epochs``, ``lr_power``),
        performance (reduce-on-plateau of val_loss: ``lr_patience``, factor ``lr_decay_rate``),
        onecycle (cycle of ``lr_decay_epochs`` peaking at ``learning_rate``).
    lr_warmup_epochs: linear warm-up before any schedule (0 = none).
    loss: regression: mse (default), mae, huber. Classification: leave unset (binary ->
        binary_crossentropy, multiclass -> sparse_categorical_crossentropy).
    metrics: None = the task's defaults (binary: accuracy, auc; multiclass: accuracy; regression:
        mse, mae) or a list from accuracy, auc, mse, mae, rmse, logged under exactly that name.
    steps_per_execution: batches per compiled call (a speed lever for small models).
    jit_compile: "auto", True or False (XLA where the backend supports it).
    """
    steps = coerce_value(steps_per_execution)
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise ConfigError(f"model.steps_per_execution: must be an integer >= 1, got {steps!r}")
    if jit_compile not in ("auto", True, False):
        raise ConfigError(f"model.jit_compile: unknown value {jit_compile!r}; use one of auto, true, false")
    import keras

    if steps > 1 and keras.backend.backend() == "torch":
        steps = 1  # Keras' PyTorch trainer runs one step per call (it raises otherwise); a speed knob only
    spec = make_spec(learning_rate, lr_schedule, lr_decay_steps, lr_decay_rate, lr_decay_epochs, lr_power,
                     lr_patience, lr_warmup_epochs)
    model.compile(
        optimizer=_make_optimizer(optimizer, learning_rate, momentum, weight_decay, clipnorm, clipvalue, spec),
        loss=resolve_loss(meta, loss),
        metrics=_resolve_metrics(meta, metrics),
        steps_per_execution=steps,
        jit_compile=jit_compile,
    )
    if needs_epochs(spec) and isinstance(optimizer, str):
        attach(model, spec)
    return model


#: The compile knobs (the keyword arguments of :func:`compile_for_task`): ``call_builder`` uses
#: them to compile an uncompiled user model even when the user's function does not take them.
COMPILE_PARAMS = frozenset(inspect.signature(compile_for_task).parameters) - {"model", "meta"}


# --------------------------------------------------------------------------------------------
# the registry and the builder's signature
# --------------------------------------------------------------------------------------------

def _forms() -> str:
    return f"{' or '.join(repr(n) for n in BUILDERS.names())} or 'package.module:function'"


def resolve_builder(ref: str | Callable[..., Any], field: str = "model.builder") -> Callable[..., Any]:
    """A built-in name (``"mlp"``) or ``"package.module:function"`` -> that function.

    A callable is returned unchanged. Errors are one-line :class:`ConfigError` naming ``field``.
    """
    if callable(ref):
        return ref
    if not isinstance(ref, str) or not ref.strip():
        raise ConfigError(f"{field}: expected {_forms()}, got {ref!r}")
    ref = ref.strip()
    if ref in BUILDERS:
        builtin: Callable[..., Any] = BUILDERS.get(ref)
        return builtin
    fix = f"; use {' or '.join(BUILDERS.names())} or 'package.module:function' importable from where hpsearch runs"
    module_name, sep, func_name = ref.partition(":")
    if not sep or not module_name or not func_name or ":" in func_name:
        raise ConfigError(f"{field}: {ref!r} is neither a built-in builder ({', '.join(BUILDERS.names())})"
                          f" nor of the form 'package.module:function'{fix}")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # ImportError, or any error raised by the module itself
        reason = " ".join(f"{type(exc).__name__}: {exc}".split())
        raise ConfigError(f"{field}: cannot import {module_name!r} ({reason}){fix}") from exc
    found = getattr(module, func_name, None)
    if found is None:
        raise ConfigError(f"{field}: module {module_name!r} has no function {func_name!r}{fix}")
    if not callable(found):
        raise ConfigError(f"{field}: {ref!r} is not callable{fix}")
    fn: Callable[..., Any] = found
    return fn


def builder_name(fn: Callable[..., Any]) -> str:
    """A short name for messages: the registered name of a built-in, else ``module:function``."""
    for name in BUILDERS.names():
        if BUILDERS.get(name) is fn:
            return name
    return f"{getattr(fn, '__module__', '?')}:{getattr(fn, '__qualname__', repr(fn))}"


def _parameters(fn: Callable[..., Any]) -> list[inspect.Parameter] | None:
    """The parameters of ``fn``; None if its signature cannot be read."""
    try:
        return list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return None


def _by_name(p: inspect.Parameter) -> bool:
    return p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)


def builder_accepts(fn: Callable[..., Any]) -> set[str] | None:
    """Names of the hyperparameters ``fn`` takes (``meta`` & co. excluded); None if it takes
    ``**kwargs`` (or its signature cannot be read), i.e. it accepts anything."""
    params = _parameters(fn)
    if params is None or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return None
    return {p.name for p in params if _by_name(p)} - META_PARAMS


def builder_defaults(fn: Callable[..., Any]) -> dict[str, Any]:
    """Hyperparameters of ``fn`` that have a default, with that default."""
    return {p.name: p.default for p in _parameters(fn) or ()
            if _by_name(p) and p.default is not inspect.Parameter.empty and p.name not in META_PARAMS}


def _check_names(fn: Callable[..., Any], names: Iterable[str], section: str, compile_ok: bool) -> None:
    """Refuse a parameter ``fn`` does not take (compile knobs pass when ``compile_ok``)."""
    accepted = builder_accepts(fn)
    if accepted is None:
        return
    for name in names:
        if name in accepted or (compile_ok and name in COMPILE_PARAMS):
            continue
        raise ConfigError(
            f"{section}.{name}: unknown parameter for builder {builder_name(fn)}; "
            f"remove it or check the spelling (known: {', '.join(sorted(accepted)) or '(none)'})"
        )


def check_builder_params(fn: Callable[..., Any], space: SearchSpace) -> None:
    """Refuse, before anything runs, a ``space`` / ``model.fixed`` parameter ``fn`` does not take
    and a value its own ``check_params`` rejects. One-line ConfigError without a file prefix.

    Compile knobs (``optimizer``, ``learning_rate``, ...) that ``fn`` does not take pass, their values
    checked: an uncompiled model is compiled with them; a builder that compiles its own model and
    leaves one unused is refused when it is built (:func:`call_builder`)."""
    _check_names(fn, space.params, "space", compile_ok=True)
    _check_names(fn, space.fixed, "model.fixed", compile_ok=True)
    values: dict[str, list[tuple[str, Any]]] = {}
    for name, value in space.fixed.items():
        values.setdefault(name, []).append((f"model.fixed.{name}", value))
    for name, param in space.params.items():  # a range lies in an interval when its two ends do
        ends = param.choices if isinstance(param, CategoricalParam) else (
            param.low, param.high if isinstance(param, FloatParam) else param.top)
        values.setdefault(name, []).extend((f"space.{name}", c) for c in ends)
    accepted = builder_accepts(fn)
    if accepted is not None:  # the knobs only the compile step takes
        check_compile_params({k: v for k, v in values.items() if k in COMPILE_PARAMS and k not in accepted})
    check = getattr(fn, "check_params", None)
    if callable(check):
        check(values)


# --------------------------------------------------------------------------------------------
# building one model
# --------------------------------------------------------------------------------------------

def call_builder(
    fn: Callable[..., Any],
    params: Mapping[str, Any],
    meta: Mapping[str, Any] | None = None,
    *,
    clear_session: bool = True,
    compile_defaults: Mapping[str, Any] | None = None,
    context: Mapping[str, Any] | None = None,
) -> keras.Model:
    """Build one model: clear the Keras session, coerce numpy values, call ``fn``.

    ``meta`` is passed only if ``fn`` declares it (or takes ``**kwargs``). Parameters ``fn``
    does not take must be compile knobs; they (over ``compile_defaults``) compile the model if
    ``fn`` returns it uncompiled, with the loss and metrics of the task in ``meta``.
    ``context`` entries (scikeras' ``compile_kwargs`` / ``params``) go only to a builder that
    names them. ``clear_session=False`` is for callers that cleared the session already (e.g.
    before seeding the random generators, or to keep k fold models side by side).
    """
    import keras

    if clear_session:
        keras.backend.clear_session()
    params = {str(k): coerce_value(v) for k, v in params.items()}
    _check_names(fn, params, "model", compile_ok=True)
    accepted = builder_accepts(fn)
    call_kwargs = dict(params) if accepted is None else {k: v for k, v in params.items() if k in accepted}
    declared = {p.name for p in _parameters(fn) or () if _by_name(p)}  # not **params: the builder's own
    if "meta" in declared or (accepted is None and _parameters(fn)):
        call_kwargs["meta"] = dict(meta) if meta is not None else None
    call_kwargs.update({k: v for k, v in (context or {}).items() if k in declared})
    model = fn(**call_kwargs)
    if not isinstance(model, keras.Model):
        raise ConfigError(
            f"model.builder: {builder_name(fn)} returned {type(model).__name__}, not a keras.Model"
        )
    leftover = sorted(set(params) - set(call_kwargs))
    if not getattr(model, "compiled", False):
        knobs = {k: v for k, v in (compile_defaults or {}).items() if v is not None}
        knobs.update({k: v for k, v in params.items() if k in COMPILE_PARAMS})
        compile_for_task(model, meta, **knobs)
    elif leftover:
        raise ConfigError(
            f"model.{leftover[0]}: builder {builder_name(fn)} compiles its own model, so this "
            "parameter would have no effect; accept it as an argument or return an uncompiled model"
        )
    return model


def count_params(model: keras.Model) -> int:
    """Number of weights (trainable and not) of a built model; 0 if it is not built yet."""
    try:
        return int(model.count_params())
    except ValueError:  # not built: no weights yet
        return 0
