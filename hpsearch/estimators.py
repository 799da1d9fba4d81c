"""scikit-learn estimators around Keras models: scikeras' wrappers, fixed for hpsearch.

What these classes add to ``scikeras.wrappers.KerasClassifier`` / ``KerasRegressor`` (0.13):

* **Correct sklearn tags** (``__sklearn_tags__``). On scikit-learn >= 1.6 scikeras' classifier
  is not ``is_classifier`` (its tags come from the removed ``_more_tags``), so ``cv=3`` silently
  meant KFold instead of StratifiedKFold.
* **The builder's arguments are estimator parameters.** The named arguments of ``model`` (the
  build function; default :func:`hpsearch.mlp.build_mlp`) appear in ``get_params`` with the
  function's defaults, so ``set_params(n_hidden=2)``, ``clone`` and ``RandomizedSearchCV`` work
  without listing them in the constructor (plain scikeras raises for those). Arguments whose
  name is also a wrapper parameter (``optimizer``, ``loss``, ``metrics``, ...) take the wrapper
  parameter's value when it is not None (``None`` = the builder's default).
* Builds go through :func:`hpsearch.builders.call_builder`: ``keras.backend.clear_session()``
  first, numpy scalars coerced to Python (Keras 3 rejects ``Dense(np.int64(8))``), ``meta`` only
  for builders that ask for it, an uncompiled model compiled for the task.
* ``fit(..., callbacks=[...])`` is honoured (scikeras 0.13 drops callbacks given to ``fit``) and
  ``fit(..., validation_data=(Xv, yv))`` is encoded like the training data (scikeras passes it
  to Keras raw, which is wrong for class labels that are not 0..k-1).
* ``history_`` keeps the Keras log names (scikeras renames training keys, ``mse`` ->
  ``mean_squared_error``, ``auc`` -> ``a_u_c``, but not the ``val_`` ones).
* ``n_epochs_trained_``: epochs actually run (early stopping included).
* ``verbose=0`` by default.
"""

from __future__ import annotations

import inspect
import random
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import keras
import numpy as np
from scikeras.wrappers import BaseWrapper
from scikeras.wrappers import KerasClassifier as _ScikerasClassifier
from scikeras.wrappers import KerasRegressor as _ScikerasRegressor
from sklearn.exceptions import NotFittedError
from sklearn.utils import ClassifierTags, RegressorTags

from hpsearch.builders import builder_defaults, call_builder, resolve_builder
from hpsearch.errors import ConfigError
from hpsearch.mlp import build_mlp

__all__ = ["KerasClassifier", "KerasRegressor"]

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


def _builder_of(model: Any) -> Callable[..., Any] | None:
    """The build function behind a ``model`` parameter (None for a Keras Model / None)."""
    if model is None or isinstance(model, keras.Model):
        return None
    return resolve_builder(model, field="model")


def _with_builder_defaults(model: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
    """``kwargs`` plus the defaults of the builder's other named arguments: scikeras makes every
    ``__init__`` keyword an estimator parameter, so ``set_params`` and ``clone`` see them."""
    try:
        fn = _builder_of(model)
    except ConfigError:
        return kwargs  # reported by fit (validation happens in fit)
    if fn is None:
        return kwargs
    defaults = {name: default for name, default in builder_defaults(fn).items()
                if name not in _WRAPPER_PARAMS and not name.startswith("_") and not name.endswith("_")}
    return {**defaults, **kwargs}


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


class _HPSearchWrapperMixin:
    """The shared fixes; must come before the scikeras class in the MRO."""

    if TYPE_CHECKING:  # what the mixin uses of the scikeras class it comes before
        model: Any
        build_fn: Any
        random_state: Any
        model_: keras.Model
        history_: dict[str, list[Any]]
        feature_encoder_: Any
        target_encoder_: Any
        _fit_callbacks: list[Any]

        def get_params(self, deep: bool = True) -> dict[str, Any]: ...

        def _get_compile_kwargs(self) -> dict[str, Any]: ...

    # -- building ------------------------------------------------------------------------
    def _builder_params(self, fn: Callable[..., Any]) -> dict[str, Any]:
        sig = inspect.signature(fn)
        named = {
            p.name for p in sig.parameters.values()
            if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
        }
        params: dict[str, Any] = {}
        for key, value in vars(self).items():
            if key.startswith("_") or key.endswith("_") or "__" in key:
                continue
            if key in _WRAPPER_PARAMS or key == "class_weight":
                if key in named and value is not None:
                    params[key] = value
                continue
            params[key] = value
        for key, value in vars(self).items():
            if key.startswith("model__") and "__" not in key[len("model__"):]:
                params[key[len("model__"):]] = value
        return params

    def _get_metadata(self) -> dict[str, Any]:
        meta = super()._get_metadata()  # type: ignore[misc]
        meta["task"] = "classification" if isinstance(self, _ScikerasClassifier) else "regression"
        return meta

    def _build_keras_model(self) -> keras.Model:
        model = self.model if self.model is not None else self.build_fn
        if model is None or isinstance(model, keras.Model):
            return super()._build_keras_model()  # type: ignore[misc]
        fn = resolve_builder(model, field="model")
        params = self._builder_params(fn)
        compile_defaults = {
            k: getattr(self, k) for k in ("optimizer", "loss", "metrics") if getattr(self, k) is not None
        }
        context: dict[str, Any] = {}
        sig = inspect.signature(fn)
        if "compile_kwargs" in sig.parameters:
            context["compile_kwargs"] = self._get_compile_kwargs()
        if "params" in sig.parameters:
            context["params"] = self.get_params()
        meta = self._get_metadata()
        keras.backend.clear_session()
        seed = _seed_of(self.random_state)
        if seed is None:
            return call_builder(fn, params, meta, compile_defaults=compile_defaults,
                                clear_session=False, context=context)
        # seed the weight initialisers without leaving the global RNGs reseeded
        py_state, np_state = random.getstate(), np.random.get_state()
        try:
            keras.utils.set_random_seed(seed)
            return call_builder(fn, params, meta, compile_defaults=compile_defaults,
                                clear_session=False, context=context)
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)

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
        from scikeras.utils import metric_name

        extra = kwargs.pop("callbacks", None)
        if kwargs.get("validation_data") is not None:
            kwargs["validation_data"] = self._encode_validation_data(kwargs["validation_data"])
        saved = self._fit_callbacks
        if extra is not None:
            extra = list(extra) if isinstance(extra, (list, tuple)) else [extra]
            self._fit_callbacks = list(saved) + extra
        try:
            super()._fit_keras_model(  # type: ignore[misc]
                X, y, sample_weight=sample_weight, warm_start=warm_start, epochs=epochs,
                initial_epoch=initial_epoch, **kwargs,
            )
        finally:
            self._fit_callbacks = saved
        # undo scikeras' renaming of training metrics so history_ uses Keras' log names
        logged = getattr(getattr(self.model_, "history", None), "history", {}) or {}
        for key in logged:
            if key == "loss" or key.startswith("val_"):
                continue
            try:
                renamed = metric_name(key)
            except (ValueError, TypeError):
                continue
            if renamed != key and renamed not in logged and renamed in self.history_:
                self.history_[key] += self.history_.pop(renamed)

    @property
    def n_epochs_trained_(self) -> int:
        """Epochs run by the last ``fit`` (fewer than ``epochs`` after early stopping)."""
        history = getattr(self, "history_", None)
        if history is None:
            raise NotFittedError(f"{type(self).__name__} is not fitted yet; call fit first")
        return len(history.get("loss", []))


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

    ``model`` is a build function (default :func:`hpsearch.mlp.build_mlp`), a builder
    reference (``"mlp"``, ``"pkg.module:function"``) or a Keras model. Its named arguments are
    estimator parameters; anything else goes through ``**kwargs`` as in scikeras.
    """

    def __init__(
        self,
        model: Any = build_mlp,
        *,
        build_fn: Any = None,
        warm_start: bool = False,
        random_state: Any = None,
        optimizer: Any = None,
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
            epochs=epochs, class_weight=class_weight, **_with_builder_defaults(model, kwargs),
        )

    def _get_metadata(self) -> dict[str, Any]:
        meta = super()._get_metadata()
        from scikeras.utils.transformers import _is_categorical_crossentropy

        if meta.get("target_type_") == "multiclass" and _is_categorical_crossentropy(self.loss):
            meta["target_type_"] = "multiclass-onehot"  # the target encoder one-hot encodes y
        return meta

    def __sklearn_tags__(self) -> Any:
        tags = _tags_common(super().__sklearn_tags__())
        tags.estimator_type = "classifier"
        tags.regressor_tags = None
        tags.classifier_tags = ClassifierTags(poor_score=True, multi_class=True, multi_label=True)
        return tags


class KerasRegressor(_HPSearchWrapperMixin, _ScikerasRegressor):
    """scikeras' KerasRegressor with correct tags and builder arguments as parameters.

    ``model`` is a build function (default :func:`hpsearch.mlp.build_mlp`), a builder
    reference (``"mlp"``, ``"pkg.module:function"``) or a Keras model. Its named arguments are
    estimator parameters; anything else goes through ``**kwargs`` as in scikeras.
    """

    def __init__(
        self,
        model: Any = build_mlp,
        *,
        build_fn: Any = None,
        warm_start: bool = False,
        random_state: Any = None,
        optimizer: Any = None,
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
            epochs=epochs, **_with_builder_defaults(model, kwargs),
        )

    def __sklearn_tags__(self) -> Any:
        tags = _tags_common(super().__sklearn_tags__())
        tags.estimator_type = "regressor"
        tags.classifier_tags = None
        tags.regressor_tags = RegressorTags(poor_score=True)
        return tags
