"""The scikit-learn estimators the engines fit: they build each model as every engine does.

``hpsearch.KerasClassifier`` / ``KerasRegressor`` are drop-ins for scikeras' classes, so used directly
they keep scikeras' build contract (a ``**kwargs`` builder also gets ``compile_kwargs`` and ``params``;
an uncompiled model is compiled with the wrapper's ``optimizer="rmsprop"``). Inside a study (the
scikit-learn engines, the Python searches) a builder must see the same call under every engine, so
these subclasses build through :func:`hpsearch.models.builders.call_builder`, the one rule:

* the builder gets its hyperparameters by name (or through ``**params``) and ``meta`` when it names
  it or takes ``**kwargs``; nothing else (no ``compile_kwargs`` / ``params``);
* an uncompiled model is compiled by :func:`hpsearch.models.builders.compile_for_task` with the study's
  compile knobs (``optimizer``, ``learning_rate``, ...) over its defaults (``optimizer="sgd"``), the
  loss and the metrics of the task.

The engines give ``optimizer=None`` (and ``loss`` / ``metrics`` None) unless the study sets one: None
means "the study gives none", so the builder's own default or :func:`compile_for_task`'s applies,
never scikeras' ``"rmsprop"``.
"""

from __future__ import annotations

import contextlib

import keras
from scikeras._utils import route_params

from hpsearch.models.builders import call_builder
from hpsearch.models.estimators import (
    KerasClassifier,
    KerasRegressor,
    _is_param_name,
    _named_args,
    _seed_of,
    _seeded,
)

__all__ = ["StudyKerasClassifier", "StudyKerasRegressor", "study_estimator_class"]

#: wrapper parameters that are compile knobs of a study (given to the builder or compiled with)
_COMPILE_WRAPPER_PARAMS = ("optimizer", "loss", "metrics")


class _StudyBuildMixin:
    """``_build_keras_model`` through :func:`call_builder` (before the wrapper classes in the MRO)."""

    def _build_keras_model(self) -> keras.Model:
        fn = self._check_model_param()  # type: ignore[attr-defined]
        params = self.get_params()  # type: ignore[attr-defined]
        names = set(getattr(self, "_user_params", ())) | {n for n in _named_args(fn) if _is_param_name(n)}
        hyper = route_params(params, destination="model", pass_filter=names, strict=True)
        hyper.update({k: params[k] for k in _COMPILE_WRAPPER_PARAMS if params.get(k) is not None})
        meta = self._builder_meta(fn)  # type: ignore[attr-defined]
        keras.backend.clear_session()
        seed = _seed_of(self.random_state)  # type: ignore[attr-defined]
        with _seeded(seed) if seed is not None else contextlib.nullcontext():
            return call_builder(fn, hyper, meta, clear_session=False)


class StudyKerasClassifier(_StudyBuildMixin, KerasClassifier):
    """:class:`~hpsearch.models.estimators.KerasClassifier` building as the study's other engines do."""


class StudyKerasRegressor(_StudyBuildMixin, KerasRegressor):
    """:class:`~hpsearch.models.estimators.KerasRegressor` building as the study's other engines do."""


def study_estimator_class(classification: bool) -> type[KerasClassifier] | type[KerasRegressor]:
    """The engines' estimator class of a task."""
    return StudyKerasClassifier if classification else StudyKerasRegressor
