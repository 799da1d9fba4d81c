"""From a Python search's arguments to a study: the estimator, the parameter distributions and the
fit parameters become the sections of a :class:`~hpsearch.spec.config.StudyConfig` mapping, which
then runs like a study file (same validation, engines, packing, storage).

Every choice made here for the user is returned as a line (``Study.decisions``): the search keeps
them in ``messages_``, says them through its observer and stores them on the study.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from hpsearch.errors import ConfigError
from hpsearch.metrics import sklearn_scoring
from hpsearch.models.builders import builder_defaults, resolve_builder
from hpsearch.registry import BUILDERS
from hpsearch.spec.space import CategoricalParam, FloatParam, IntParam, SearchSpace

__all__ = ["Study", "space_section", "estimator_sections", "early_stopping_section", "metric_of", "builder_ref",
           "FIT_PARAMS", "Unwrapped", "unwrap_estimator", "study_param"]

#: what ``fit(X, y, **fit_params)`` takes, as scikeras' ``fit`` does
FIT_PARAMS = frozenset({"epochs", "batch_size", "verbose", "validation_data", "callbacks"})

#: scikit-learn scorer name -> hpsearch metric (the inverse of :func:`hpsearch.metrics.sklearn_scoring`)
_SCORERS = {sklearn_scoring(m, "regression")[0]: m for m in ("accuracy", "auc", "mse", "mae", "rmse", "r2")}

#: wrapper parameters a search translates (the rest must keep their defaults)
_TRANSLATED = {"model", "build_fn", "epochs", "batch_size", "verbose", "random_state", "callbacks", "optimizer",
               "loss", "metrics", "class_weight"}


@dataclass
class Study:
    """The study mapping being built, and the lines saying what was decided for the user."""

    mapping: dict[str, Any] = field(default_factory=dict)
    decisions: list[str] = field(default_factory=list)
    #: decisions also recorded in the study's ``STUDY.DECISIONS`` (key -> value), as a run's own are
    keyed: dict[str, tuple[Any, str]] = field(default_factory=dict)

    def decide(self, key: str, value: Any, line: str) -> None:
        """Say ``line`` with the search's other decisions and record it under ``key`` on the study."""
        self.decisions.append(f"hpsearch: {line}")
        self.keyed[key] = (value, line)


def _param_yaml(name: str, spec: Any) -> dict[str, Any]:
    """One parameter as a study file writes it: from a list, a scipy distribution (``reciprocal`` /
    ``loguniform`` is a log range) or an Optuna distribution."""
    import optuna.distributions as od

    if isinstance(spec, od.FloatDistribution):
        return {"float": [spec.low, spec.high], **({"log": True} if spec.log else {})}
    if isinstance(spec, od.IntDistribution):
        out: dict[str, Any] = {"int": [spec.low, spec.high]}
        if spec.log:
            out["log"] = True
        elif spec.step != 1:
            out["step"] = spec.step
        return out
    if isinstance(spec, od.CategoricalDistribution):
        return {"choice": list(spec.choices)}
    param = SearchSpace.from_dict({name: spec}).params[name]  # lists, ranges, scipy distributions
    if isinstance(param, CategoricalParam):
        return {"choice": list(param.choices)}
    if isinstance(param, IntParam):
        return {"int": [param.low, param.high], **({"step": param.step} if param.step != 1 else {}),
                **({"log": True} if param.log else {})}
    assert isinstance(param, FloatParam)
    return {"float": [param.low, param.high], **({"log": True} if param.log else {})}


@dataclass
class Unwrapped:
    """The hpsearch Keras estimator a search trains, and what a ``Pipeline`` around it adds: the
    prefix of its parameters (``kerasclassifier__``) and the study's ``data.scale``."""

    keras: Any
    prefix: str = ""
    scale: str = "none"


def unwrap_estimator(est: Any, study: Study) -> Unwrapped:
    """The Keras estimator of ``est``: itself, or the last step of a ``Pipeline`` whose other steps are
    ``StandardScaler()`` (the study's ``data.scale: standard``, fitted per fold) or ``"passthrough"``."""
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    from hpsearch.models.estimators import KerasClassifier, KerasRegressor

    if not isinstance(est, Pipeline):
        return Unwrapped(est)
    *head, (last, keras_est) = est.steps
    if not isinstance(keras_est, (KerasClassifier, KerasRegressor)):
        raise ConfigError(f"estimator: the Pipeline ends in {type(keras_est).__name__}; end it in"
                          " hpsearch.KerasClassifier or hpsearch.KerasRegressor")
    scale = "none"
    for name, step in head:
        if step is None or step == "passthrough":
            continue
        if type(step) is StandardScaler and step.get_params() == StandardScaler().get_params() and scale == "none":
            scale = "standard"
            continue
        raise ConfigError(f"estimator: Pipeline step {name!r} ({type(step).__name__}) cannot be stored with the"
                          " study (workers and load_best must rebuild it); hpsearch fits StandardScaler() itself"
                          " per fold: keep that as the only step, move this step into the build function, or use"
                          " scikit-learn's own search class")
    if scale == "standard":
        study.decide("data.scale", "standard", "the Pipeline's StandardScaler is the study's data.scale: standard,"
                     " fitted per fold on each candidate's training rows and stored with the model;"
                     f" {last!r} is the Keras step")
    return Unwrapped(keras_est, prefix=f"{last}__", scale=scale)


def study_param(name: str, prefix: str = "") -> str:
    """The study's name of a search parameter: ``[PIPELINE_STEP__][model__]NAME`` is ``NAME``."""
    return name.removeprefix(prefix).removeprefix("model__")


def space_section(distributions: Mapping[str, Any] | list[Mapping[str, Any]], what: str,
                  prefix: str = "") -> dict[str, Any]:
    """``space:`` of a search's ``param_distributions`` / ``param_grid`` (``model__NAME`` is NAME; in a
    Pipeline, ``PREFIX`` (the Keras step's ``name__``) comes first)."""
    if isinstance(distributions, list):
        if len(distributions) != 1:
            raise ConfigError(f"{what}: a list of {len(distributions)} grids; hpsearch searches one space:"
                              " give one dict (a conditional space is a study file's `when:`)")
        distributions = distributions[0]
    if not isinstance(distributions, Mapping) or not distributions:
        raise ConfigError(f"{what}: give a non-empty dict of parameter name -> values or distribution")
    out: dict[str, Any] = {}
    for raw, spec in distributions.items():
        name = str(raw)
        if prefix and not name.startswith(prefix):
            raise ConfigError(f"{what}: {raw!r} is not a parameter of the Pipeline's Keras step; search its"
                              f" builder's arguments ({prefix}NAME)")
        name = study_param(name, prefix)
        if "__" in name:
            raise ConfigError(f"{what}: {raw!r} routes to a sub-object; search the builder's own arguments"
                              f" ({prefix}model__NAME or {prefix}NAME)")
        try:
            out[name] = _param_yaml(name, spec)
        except ConfigError as exc:
            raise ConfigError(f"{what}: {exc}") from None
    return out


def builder_ref(fn: Any, decisions: list[str]) -> str:
    """``model.builder`` for the estimator's build function: its ``module:function`` when that path
    imports it back (other processes can), else a name registered for this process."""
    if isinstance(fn, str):
        return fn
    if fn is None:
        return "mlp"
    if not callable(fn) or isinstance(fn, type):
        raise ConfigError(f"estimator.model: {type(fn).__name__} is not a build function; give a function that"
                          " returns a Keras model (a built model cannot be searched)")
    for name in BUILDERS.names():
        if BUILDERS.get(name) is fn:
            return name
    module, qual = getattr(fn, "__module__", ""), getattr(fn, "__qualname__", "")
    ref = f"{module}:{qual}"
    if module and module != "__main__" and "<" not in qual and "." not in qual:
        try:
            if resolve_builder(ref) is fn:
                return ref
        except ConfigError:
            pass
    name = f"python:{module}.{qual}"
    BUILDERS.register_object(name, fn)
    decisions.append(f"hpsearch: builder {ref} is not importable by that module path, so it is registered for"
                     f" this process only as {name!r} (workers and `hpsearch report` cannot rebuild it)")
    return name


def early_stopping_section(callbacks: list[Any] | None, decisions: list[str]) -> dict[str, Any] | None:
    """``train.early_stopping`` from the fit's Keras callbacks: an ``EarlyStopping`` on ``val_loss``
    is taken as it is; no callback means no early stopping; any other callback is refused."""
    import keras

    found: dict[str, Any] | None = None
    for cb in callbacks or []:
        if not isinstance(cb, keras.callbacks.EarlyStopping):
            raise ConfigError(f"callbacks: {type(cb).__name__} cannot run inside an hpsearch search (each trial"
                              " gets its own callbacks: NaN stop, early stopping, pruning); remove it, or give"
                              " only keras.callbacks.EarlyStopping")
        if cb.monitor != "val_loss" or cb.baseline is not None or cb.start_from_epoch:
            raise ConfigError(f"callbacks: EarlyStopping(monitor={cb.monitor!r}, baseline={cb.baseline!r},"
                              f" start_from_epoch={cb.start_from_epoch}): hpsearch stops on val_loss only;"
                              " give EarlyStopping(monitor='val_loss') with patience / min_delta /"
                              " restore_best_weights")
        if found is not None:
            raise ConfigError("callbacks: two EarlyStopping callbacks; give one")
        found = {"patience": int(cb.patience), "min_delta": float(abs(cb.min_delta)),
                 "restore_best_weights": bool(cb.restore_best_weights)}
    if found is None:
        decisions.append("hpsearch: no EarlyStopping callback given, so candidates train every epoch"
                         " (train.early_stopping: null)")
    return found


def metric_of(scoring: Any, classifier: bool) -> str:
    """``search.metric`` for ``scoring`` (None: the estimator's own ``score``: accuracy or r2)."""
    if scoring is None:
        return "accuracy" if classifier else "r2"
    if isinstance(scoring, str) and scoring in _SCORERS:
        return _SCORERS[scoring]
    raise ConfigError(f"scoring: {scoring!r} is not one hpsearch scores per epoch; use one of"
                      f" {', '.join(_SCORERS)} (or None: the estimator's score)")


def _yaml_scalar(name: str, value: Any) -> Any:
    """A value a study file can hold (numbers, strings, booleans, lists of them)."""
    from hpsearch.spec.space import coerce_value

    value = coerce_value(value)
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)) and all(isinstance(coerce_value(v), (bool, int, float, str)) for v in value):
        return [coerce_value(v) for v in value]
    raise ConfigError(f"estimator.{name}: {type(value).__name__} value cannot be stored with the study; give a"
                      " number, string or list of them (e.g. optimizer='adam' rather than an optimizer object)")


def _wrapper_defaults(est: Any) -> dict[str, Any]:
    return {k: p.default for k, p in inspect.signature(type(est).__init__).parameters.items()
            if p.default is not inspect.Parameter.empty}


def estimator_sections(est: Any, searched: set[str], fit: Mapping[str, Any], decisions: list[str]
                       ) -> tuple[dict[str, Any], dict[str, Any], Callable[..., Any]]:
    """(``model:``, ``train:`` and the builder) of an hpsearch Keras estimator and the fit parameters."""
    from hpsearch.models.estimators import KerasClassifier, KerasRegressor

    if not isinstance(est, (KerasClassifier, KerasRegressor)):
        raise ConfigError(f"estimator: {type(est).__name__} is not hpsearch.KerasClassifier or"
                          " hpsearch.KerasRegressor (or a Pipeline ending in one); wrap the build function in one"
                          " of them (another estimator runs with scikit-learn's own search class)")
    params = est.get_params(deep=False)
    defaults = _wrapper_defaults(est)
    ref = builder_ref(params.get("model") or params.get("build_fn"), decisions)
    builder = resolve_builder(ref)
    own = builder_defaults(builder)
    fixed: dict[str, Any] = {}
    for name, value in params.items():
        if name in searched or name in ("model", "build_fn"):
            continue
        if name in ("optimizer", "loss", "metrics"):
            if value != defaults.get(name):
                fixed[name] = _yaml_scalar(name, value)
        elif name in _TRANSLATED:
            continue
        elif name in defaults:
            if value != defaults[name]:
                raise ConfigError(f"estimator.{name}={value!r}: not supported by hpsearch searches; leave it at"
                                  f" its default {defaults[name]!r}")
        elif "__" in name:
            raise ConfigError(f"estimator.{name}: routed parameters are not supported by hpsearch searches; give"
                              " the builder's own argument")
        elif name not in own or value != own[name]:
            fixed[name] = _yaml_scalar(name, value)
    seen = {**params, **{k: v for k, v in fit.items() if k in ("epochs", "batch_size", "verbose")}}
    epochs = seen.get("epochs") or 1
    if "epochs" not in fit and params.get("epochs") == defaults.get("epochs"):
        decisions.append(f"hpsearch: epochs not given to fit() nor the estimator: {epochs} (scikeras' default)")
    train: dict[str, Any] = {"epochs": int(epochs), "batch_size": int(seen.get("batch_size") or 32),
                             "verbose": min(2, max(0, int(seen.get("verbose") or 0)))}
    class_weight = params.get("class_weight")
    if class_weight is not None:
        if class_weight != "balanced":
            raise ConfigError("estimator.class_weight: only 'balanced' (or None) is supported by hpsearch searches")
        train["class_weight"] = "balanced"
    callbacks = [*(params.get("callbacks") or []), *(fit.get("callbacks") or [])]
    train["early_stopping"] = early_stopping_section(callbacks, decisions)
    return {"builder": ref, "fixed": fixed}, train, builder
