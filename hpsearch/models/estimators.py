"""scikit-learn estimators around Keras models: scikeras' wrappers, fixed for hpsearch.

``KerasClassifier`` / ``KerasRegressor`` are drop-ins for ``scikeras.wrappers``' classes (0.13):
the same parameters and defaults (``optimizer="rmsprop"``), the same routing (``model__``,
``optimizer__``, ``loss__``, ``metrics__``, ``compile__``, ``fit__``, ``predict__``), the same
``meta`` / ``compile_kwargs`` / ``params`` for builders that ask for them, ``build_fn`` and
``_keras_build_fn``, uncompiled models compiled from the wrapper's ``loss`` / ``optimizer`` /
``metrics`` in Keras' own vocabulary, ``history_`` named as scikeras names it. What they add:

* **Correct sklearn tags** (``__sklearn_tags__``). On scikit-learn >= 1.6 scikeras' classifier
  is not ``is_classifier`` (its tags come from the removed ``_more_tags``), so ``cv=3`` silently
  meant KFold instead of StratifiedKFold.
* **A default model**: with no ``model``, ``build_fn`` or ``_keras_build_fn``, the built-in MLP
  (:func:`hpsearch.models.mlp.build_mlp`). ``model`` may also name a builder (``"mlp"``,
  ``"package.module:function"``).
* **The builder's arguments are estimator parameters.** The named arguments of the build
  function that have a default appear in ``get_params`` (without being set in ``__init__``), so
  ``set_params(n_hidden=2)``, ``clone`` and ``RandomizedSearchCV`` work without listing them in
  the constructor (plain scikeras raises for those). A builder argument named like a wrapper
  parameter (``optimizer``, ``loss``, ``metrics``, ``epochs``, ...) receives that parameter's
  value when it is not None (``optimizer``: the optimizer object when ``optimizer__*`` is given).
* Builds: ``keras.backend.clear_session()`` first, numpy scalars coerced to Python (Keras 3
  rejects ``Dense(np.int64(8))``); a seeded build leaves no random state behind.
* An uncompiled model with ``loss=None`` gets the loss that fits the task, unless its builder
  takes ``compile_kwargs`` (it then owns compilation, as in scikeras).
* ``fit(..., callbacks=[...])`` is honoured (scikeras 0.13 drops callbacks given to ``fit``) and
  ``fit(..., validation_data=(Xv, yv))`` is encoded like the training data (scikeras passes it
  to Keras raw, which is wrong for class labels that are not 0..k-1).
* ``n_epochs_trained_``: epochs actually run (early stopping included). ``verbose=0`` by default.
"""

from __future__ import annotations

import contextlib
import inspect
import random
import warnings
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import keras
import numpy as np
from scikeras._utils import route_params
from scikeras.utils.random_state import tf_disable_op_determinism, tf_enable_op_determinism, tf_get_seed, tf_set_seed
from scikeras.utils.transformers import _is_categorical_crossentropy
from scikeras.wrappers import BaseWrapper
from scikeras.wrappers import KerasClassifier as _ScikerasClassifier
from scikeras.wrappers import KerasRegressor as _ScikerasRegressor
from sklearn.exceptions import NotFittedError
from sklearn.utils import ClassifierTags, RegressorTags

from hpsearch.models.builders import builder_accepts, builder_defaults, resolve_builder, resolve_loss
from hpsearch.models.mlp import build_mlp
from hpsearch.registry import BUILDERS
from hpsearch.spec.space import coerce_value

__all__ = ["KerasClassifier", "KerasRegressor", "wrapper_named_defaults"]

# scikeras' BaseWrapper defines ``_more_tags`` but not ``__sklearn_tags__``, which
# ``sklearn.utils.estimator_checks.check_estimator_tags_renamed`` rejects for every subclass. The
# method added here only makes the inherited behaviour explicit (BaseEstimator's tags).
if "__sklearn_tags__" not in vars(BaseWrapper):

    def _basewrapper_sklearn_tags(self: Any) -> Any:
        return super(BaseWrapper, self).__sklearn_tags__()

    BaseWrapper.__sklearn_tags__ = _basewrapper_sklearn_tags

# Parameters of the scikeras wrappers themselves (never builder hyperparameters).
_WRAPPER_PARAMS = frozenset(
    p for p in inspect.signature(_ScikerasClassifier.__init__).parameters if p not in ("self", "kwargs")
)


def _named_args(fn: Callable[..., Any]) -> list[str]:
    """The arguments ``fn`` takes by name (``meta`` & co. included), in order."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return []
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return [p.name for p in params if p.kind in kinds]


def _takes_kwargs(fn: Callable[..., Any]) -> bool:
    return builder_accepts(fn) is None


def _is_param_name(name: str) -> bool:
    return name not in _WRAPPER_PARAMS and not name.startswith("_") and not name.endswith("_") and "__" not in name


def wrapper_named_defaults(fn: Callable[..., Any]) -> dict[str, Any]:
    """The defaults of ``fn``'s arguments named like a wrapper parameter (``optimizer``, ``loss``,
    ...): pass them to the estimator to build with the builder's own defaults, not the wrapper's."""
    return {k: v for k, v in builder_defaults(fn).items() if k in _WRAPPER_PARAMS}


class _HPSearchWrapperMixin:
    """The shared fixes; must come before the scikeras class in the MRO."""

    if TYPE_CHECKING:  # what the mixin uses of the scikeras class it comes before
        model: Any
        build_fn: Any
        loss: Any
        random_state: Any
        model_: keras.Model
        history_: dict[str, list[Any]]
        feature_encoder_: Any
        target_encoder_: Any
        _fit_callbacks: list[Any]

        def _get_metadata(self) -> dict[str, Any]: ...

        def _get_compile_kwargs(self) -> dict[str, Any]: ...

    # -- parameters ----------------------------------------------------------------------
    def _check_model_param(self) -> Callable[..., Any]:
        """scikeras' choice of the build function, plus the default MLP and builder names."""
        model = self.model if self.model is not None else self.build_fn
        if model is None and not hasattr(self, "_keras_build_fn"):
            return build_mlp
        if isinstance(model, str):
            return resolve_builder(model, field="model")
        fn: Callable[..., Any] = super()._check_model_param()  # type: ignore[misc]
        return fn

    def _quiet_build_fn(self) -> Callable[..., Any]:
        """``_check_model_param`` without build_fn's deprecation warning (the build warns once)."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return self._check_model_param()

    def _builder_param_defaults(self) -> dict[str, Any]:
        """Defaults of the build function's hyperparameters (none if it cannot be resolved yet:
        fit reports that)."""
        try:
            fn = self._quiet_build_fn()
        except (ValueError, TypeError):
            return {}
        return {k: v for k, v in builder_defaults(fn).items() if _is_param_name(k)}

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """scikeras' parameters; with ``deep`` (what ``set_params`` checks names against) also
        the builder's hyperparameters not set yet, at their default. ``clone`` reads the shallow
        ones, so a clone sets no attribute its original did not."""
        params: dict[str, Any] = super().get_params(deep=deep)  # type: ignore[misc]
        if not deep:
            return params
        for name, default in self._builder_param_defaults().items():
            if name not in params and f"model__{name}" not in params:
                params[name] = default
        return params

    # -- building ------------------------------------------------------------------------
    def _build_params(self, fn: Callable[..., Any]) -> dict[str, Any]:
        """What scikeras passes to the build function (its own routing), then the builder
        arguments named like a wrapper parameter, numpy scalars made Python ones."""
        params = self.get_params()
        named = _named_args(fn)
        user = set(getattr(self, "_user_params", ())) | {n for n in named if _is_param_name(n)}
        build = route_params(params, destination="model", pass_filter=user, strict=True)
        for name in named:
            if name in _WRAPPER_PARAMS and name not in build and params.get(name) is not None:
                build[name] = params[name]
                if name == "optimizer" and any(k.startswith("optimizer__") for k in params):
                    build[name] = self._get_compile_kwargs()["optimizer"]  # with optimizer__* applied
        build = {k: coerce_value(v) for k, v in build.items()}
        takes_all = _takes_kwargs(fn)
        if "meta" in named or takes_all:
            build["meta"] = self._builder_meta(fn)
        if "compile_kwargs" in named or takes_all:
            build["compile_kwargs"] = self._get_compile_kwargs()
        if "params" in named or takes_all:
            build["params"] = params
        return build

    def _builder_meta(self, fn: Callable[..., Any]) -> dict[str, Any]:
        """scikeras' ``meta``; for a built-in builder, a one-hot encoded multiclass target says so
        (``multiclass-onehot``): the built-ins pick their output and loss from it."""
        meta: dict[str, Any] = self._get_metadata()
        builtin = any(BUILDERS.get(name) is fn for name in BUILDERS.names())
        if (builtin and isinstance(self, _ScikerasClassifier) and meta.get("target_type_") == "multiclass"
                and _is_categorical_crossentropy(self.loss)):
            meta = {**meta, "target_type_": "multiclass-onehot"}
        return meta

    def _build_keras_model(self) -> keras.Model:
        fn = self._check_model_param()
        build = self._build_params(fn)
        keras.backend.clear_session()
        seed = _seed_of(self.random_state)
        if seed is None:
            return fn(**build)
        with _seeded(seed):  # restores Python's, NumPy's and TensorFlow's state
            return fn(**build)

    def _ensure_compiled_model(self) -> None:
        fn = self._quiet_build_fn()
        if not self.model_.compiled and self.loss is None and "compile_kwargs" not in _named_args(fn):
            kwargs = self._get_compile_kwargs()
            kwargs["loss"] = resolve_loss(self._get_metadata(), None)
            self.model_.compile(**kwargs)
        super()._ensure_compiled_model()  # type: ignore[misc]

    # -- fitting -------------------------------------------------------------------------
    def _encode_validation_data(self, data: Any) -> Any:
        if not isinstance(data, (tuple, list)) or len(data) not in (2, 3):
            return data  # a tf.data.Dataset or similar: the user's business
        Xv, yv, *rest = data
        Xv = self.feature_encoder_.transform(np.asarray(Xv))
        yv = self.target_encoder_.transform(np.asarray(yv))
        return (Xv, yv, *rest)

    def _fit_keras_model(self, X: Any, y: Any, sample_weight: Any, warm_start: bool,
                         epochs: int, initial_epoch: int, **kwargs: Any) -> None:
        extra = kwargs.pop("callbacks", None)
        if kwargs.get("validation_data") is not None:
            kwargs["validation_data"] = self._encode_validation_data(kwargs["validation_data"])
        saved = self._fit_callbacks
        if extra is not None:
            extra = list(extra) if isinstance(extra, (list, tuple)) else [extra]
            self._fit_callbacks = list(saved) + extra
        try:
            with _determinism_kept():
                super()._fit_keras_model(  # type: ignore[misc]
                    X, y, sample_weight=sample_weight, warm_start=warm_start, epochs=epochs,
                    initial_epoch=initial_epoch, **kwargs,
                )
        finally:
            self._fit_callbacks = saved

    @property
    def n_epochs_trained_(self) -> int:
        """Epochs run by the last ``fit`` (fewer than ``epochs`` after early stopping)."""
        history = getattr(self, "history_", None)
        if history is None:
            raise NotFittedError(f"{type(self).__name__} is not fitted yet; call fit first")
        return len(history.get("loss", []))


@contextlib.contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """Python's, NumPy's and TensorFlow's random state seeded for one build, restored after it.

    Not scikeras' ``tensorflow_random_state``: it also turns TensorFlow's op determinism on, which
    (measured with TF 2.21) can stay on after it, so later unseeded random ops of the process fail.
    A build only needs the seeds (the weights' initial values); op determinism is the user's choice.
    """
    py_state, np_state, tf_seed = random.getstate(), np.random.get_state(), tf_get_seed()
    try:
        random.seed(seed)
        np.random.seed(seed)
        tf_set_seed(seed)
        yield
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
        tf_set_seed(tf_seed)


@contextlib.contextmanager
def _determinism_kept() -> Iterator[None]:
    """TensorFlow's op determinism as it was before: scikeras' seeded fit turns it on and leaves it
    on, and then every unseeded random op of the process fails ("Random ops require a seed")."""
    was_on = tf_enable_op_determinism()  # scikeras' helper: returns the state before
    if not was_on:
        tf_disable_op_determinism()
    try:
        yield
    finally:
        if not was_on:
            tf_disable_op_determinism()


def _seed_of(random_state: Any) -> int | None:
    """An integer seed for the weight initialisers from ``random_state`` (a RandomState is not
    advanced: the same estimator builds the same weights each time)."""
    if random_state is None:
        return None
    if isinstance(random_state, np.random.RandomState):
        rng = np.random.RandomState()
        rng.set_state(random_state.get_state())
        return int(rng.randint(2**31 - 1))
    return int(random_state)


def _tags_common(tags: Any) -> Any:
    tags.target_tags.required = True
    tags.target_tags.single_output = True
    tags.target_tags.multi_output = True
    tags.input_tags.two_d_array = True
    tags.input_tags.sparse = False
    tags.input_tags.allow_nan = False
    tags.non_deterministic = True
    return tags


class KerasClassifier(_HPSearchWrapperMixin, _ScikerasClassifier):
    """scikeras' KerasClassifier with correct tags and builder arguments as parameters.

    ``model`` is a build function, a builder reference (``"mlp"``, ``"pkg.module:function"``)
    or a Keras model; with neither it nor ``build_fn`` nor ``_keras_build_fn``, the built-in MLP
    (:func:`hpsearch.models.mlp.build_mlp`). The build function's named arguments with a default are
    estimator parameters; anything else goes through ``**kwargs`` as in scikeras.
    """

    def __init__(
        self,
        model: Any = None,
        *,
        build_fn: Any = None,
        warm_start: bool = False,
        random_state: Any = None,
        optimizer: Any = "rmsprop",
        loss: Any = None,
        metrics: Any = None,
        batch_size: int | None = None,
        validation_batch_size: int | None = None,
        verbose: int = 0,
        callbacks: Any = None,
        validation_split: float = 0.0,
        shuffle: bool = True,
        run_eagerly: bool = False,
        epochs: int = 1,
        class_weight: Any = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            model=model, build_fn=build_fn, warm_start=warm_start, random_state=random_state,
            optimizer=optimizer, loss=loss, metrics=metrics, batch_size=batch_size,
            validation_batch_size=validation_batch_size, verbose=verbose, callbacks=callbacks,
            validation_split=validation_split, shuffle=shuffle, run_eagerly=run_eagerly,
            epochs=epochs, class_weight=class_weight, **kwargs,
        )

    def __sklearn_tags__(self) -> Any:
        tags = _tags_common(super().__sklearn_tags__())
        tags.estimator_type = "classifier"
        tags.regressor_tags = None
        tags.classifier_tags = ClassifierTags(poor_score=True, multi_class=True, multi_label=True)
        return tags


class KerasRegressor(_HPSearchWrapperMixin, _ScikerasRegressor):
    """scikeras' KerasRegressor with correct tags and builder arguments as parameters.

    ``model`` is a build function, a builder reference (``"mlp"``, ``"pkg.module:function"``)
    or a Keras model; with neither it nor ``build_fn`` nor ``_keras_build_fn``, the built-in MLP
    (:func:`hpsearch.models.mlp.build_mlp`). The build function's named arguments with a default are
    estimator parameters; anything else goes through ``**kwargs`` as in scikeras.
    """

    def __init__(
        self,
        model: Any = None,
        *,
        build_fn: Any = None,
        warm_start: bool = False,
        random_state: Any = None,
        optimizer: Any = "rmsprop",
        loss: Any = None,
        metrics: Any = None,
        batch_size: int | None = None,
        validation_batch_size: int | None = None,
        verbose: int = 0,
        callbacks: Any = None,
        validation_split: float = 0.0,
        shuffle: bool = True,
        run_eagerly: bool = False,
        epochs: int = 1,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            model=model, build_fn=build_fn, warm_start=warm_start, random_state=random_state,
            optimizer=optimizer, loss=loss, metrics=metrics, batch_size=batch_size,
            validation_batch_size=validation_batch_size, verbose=verbose, callbacks=callbacks,
            validation_split=validation_split, shuffle=shuffle, run_eagerly=run_eagerly,
            epochs=epochs, **kwargs,
        )

    def __sklearn_tags__(self) -> Any:
        tags = _tags_common(super().__sklearn_tags__())
        tags.estimator_type = "regressor"
        tags.classifier_tags = None
        tags.regressor_tags = RegressorTags(poor_score=True)
        return tags
