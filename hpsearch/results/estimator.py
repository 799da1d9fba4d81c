"""The estimator :func:`hpsearch.load_best` returns: a scikit-learn estimator whose parameters are the
best trial's hyperparameters, fitted with the trial's trained network.

scikit-learn's contract: ``__init__`` stores the hyperparameters verbatim (the builder, its searched and
fixed arguments, the training and preprocessing settings), so ``clone`` gives an unfitted estimator with
the same ones and ``fit(X, y)`` retrains it: the study's preprocessing fitted on ``X`` (scaling, table
encoding, ``data.reshape``), then a model built and trained as the study's engines build theirs
(:class:`hpsearch.models.study_estimators.StudyKerasClassifier`: the same builder call and compile rule).
Fitted state ends in ``_``: ``model_`` (the Keras model), ``preprocessor_``, ``history_``,
``n_features_in_``, ``feature_names_in_`` (when the data had column names), ``classes_``. Pickling
round-trips (Keras pickles its models as an in-memory model file); ``export_best`` / ``hpsearch best
--export`` write the safe-mode ``.keras`` file and its preprocessing for serving.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin

from hpsearch.data.prepare import Preprocessor, class_list, preprocessor_template
from hpsearch.data.preprocess import fit_preprocessor
from hpsearch.errors import ConfigError
from hpsearch.results.uncertainty import MCDropoutMixin

__all__ = ["HPSearchClassifierModel", "HPSearchRegressorModel", "fitted_estimator"]


class _StudyModel(MCDropoutMixin, BaseEstimator):
    """A study's model as a scikit-learn estimator: hyperparameters in, a trained Keras model out.

    ``builder``: the builder reference (``"mlp"``, ``"pkg.module:function"``); ``**params``: its
    arguments (searched and fixed, compile knobs included), each an estimator parameter
    (``get_params`` / ``set_params`` / ``clone``). ``epochs`` / ``batch_size`` / ``class_weight``:
    training; ``scale`` (``"standard"`` or ``"none"``), ``rescale``, ``input_shape`` (``data.reshape``)
    and ``max_categories``: the preprocessing, fitted on the rows ``fit`` gets. ``random_state``: the
    seed of the weights' initial values.
    """

    model_: Any
    preprocessor_: Preprocessor
    history_: dict[str, list[float]]

    def __init__(self, builder: str = "mlp", *, epochs: int = 1, batch_size: int = 32, scale: str = "standard",
                 rescale: float | None = None, input_shape: list[int] | None = None, max_categories: int = 20,
                 class_weight: str | None = None, random_state: int | None = None, verbose: int = 0,
                 **params: Any) -> None:
        self.builder, self.epochs, self.batch_size = builder, epochs, batch_size
        self.scale, self.rescale, self.input_shape, self.max_categories = scale, rescale, input_shape, max_categories
        self.class_weight, self.random_state, self.verbose = class_weight, random_state, verbose
        for name, value in params.items():
            if name.startswith("_") or name.endswith("_") or hasattr(type(self), name):
                raise ConfigError(f"hyperparameter {name!r} is a name of the estimator itself; rename the builder's"
                                  " argument")
            setattr(self, name, value)
        self._hyperparameters = tuple(params)

    # -- parameters: the constructor's, plus the builder's arguments ------------------------------
    def get_params(self, deep: bool = True) -> dict[str, Any]:
        out: dict[str, Any] = super().get_params(deep=deep)
        out.update({name: getattr(self, name) for name in self._hyperparameters})
        return out

    def hyperparameters(self) -> dict[str, Any]:
        """The builder's arguments (searched and fixed), as the study gave them."""
        return {name: getattr(self, name) for name in self._hyperparameters}

    def __sklearn_is_fitted__(self) -> bool:
        return hasattr(self, "model_")

    # -- fitting -----------------------------------------------------------------------------------
    def _rows(self, X: Any) -> tuple[np.ndarray, list[str] | None]:
        names = [str(c) for c in X.columns] if hasattr(X, "columns") else None
        arr = np.asarray(X.to_numpy() if hasattr(X, "to_numpy") else X)
        if self.input_shape is not None and arr.ndim == 2:
            arr = arr.reshape((arr.shape[0], *self.input_shape))
        if arr.ndim == 2 and arr.dtype.kind in "iub":
            arr = arr.astype(np.float64)
        return arr, names

    def fit(self, X: Any, y: Any, **fit_params: Any) -> _StudyModel:
        """Fit the preprocessing on ``X`` and train a new model on it (``fit_params`` go to Keras' fit,
        e.g. ``validation_data``, ``callbacks``), as the study's engines do."""
        from hpsearch.models.study_estimators import study_estimator_class

        arr, names = self._rows(X)
        y_arr = np.asarray(y.to_numpy() if hasattr(y, "to_numpy") else y).ravel()
        classifier = isinstance(self, ClassifierMixin)
        task = "classification" if classifier else "regression"
        template = preprocessor_template(arr, task, class_list(y_arr) if classifier else None, names,
                                         rescale=self.rescale, max_categories=self.max_categories)
        pre = fit_preprocessor(arr, self.scale, template)
        wrapper_kw: dict[str, Any] = {"model": self.builder, "epochs": self.epochs, "batch_size": self.batch_size,
                                      "random_state": self.random_state, "verbose": self.verbose, "optimizer": None}
        if classifier and self.class_weight is not None:
            wrapper_kw["class_weight"] = self.class_weight
        wrapper = study_estimator_class(classifier)(**{**wrapper_kw, **self.hyperparameters()})
        if fit_params.get("validation_data") is not None:
            Xv, yv = fit_params["validation_data"]
            fit_params["validation_data"] = (pre.transform(self._rows(Xv)[0]), pre.encode_labels(yv))
        wrapper.fit(pre.transform(arr), pre.encode_labels(y_arr), **fit_params)
        self.model_, self.preprocessor_ = wrapper.model_, pre
        self.history_ = {k: [float(v) for v in vs] for k, vs in wrapper.history_.items()}
        self._set_fitted(pre)
        return self

    def _set_fitted(self, pre: Preprocessor) -> None:
        """``n_features_in_`` and ``feature_names_in_`` (only when the data had column names)."""
        self.n_features_in_ = int(pre.n_features)
        if pre.feature_names is not None:
            self.feature_names_in_ = np.asarray(pre.feature_names, dtype=object)
        elif hasattr(self, "feature_names_in_"):
            del self.feature_names_in_

    def _raw(self, X: Any) -> np.ndarray:
        Xs = self.preprocessor_.transform(X)
        return np.asarray(self.model_.predict(Xs, batch_size=1024, verbose=0))


class RawClassifierOutputs(ClassifierMixin):
    """A classifier's outputs from its model's raw output (``_raw``) and ``classes_``: ``predict_proba``
    one column per class (a single sigmoid column made two), ``predict`` the original labels. Shared
    by the study's estimator and the ensembles (:mod:`hpsearch.results.ensemble`)."""

    classes_: np.ndarray
    _raw: Callable[[Any], np.ndarray]  # the model's raw output, or the members' mean: the mixing class's

    def predict_proba(self, X: Any) -> np.ndarray:
        raw = self._raw(X)
        if raw.ndim == 1 or raw.shape[1] == 1:
            p1 = raw.reshape(-1)
            return np.column_stack([1.0 - p1, p1])
        return raw

    def predict(self, X: Any) -> np.ndarray:
        return np.asarray(self.classes_[self.predict_proba(X).argmax(axis=1)])


class RawRegressorOutputs(RegressorMixin):
    """A regressor's ``predict`` from its model's raw output (``_raw``): one value per row; ``score`` R²."""

    _raw: Callable[[Any], np.ndarray]

    def predict(self, X: Any) -> np.ndarray:
        return self._raw(X).reshape(-1)


class HPSearchClassifierModel(RawClassifierOutputs, _StudyModel):
    """A study's classifier: ``predict`` returns the original labels, ``predict_proba`` one column per class."""

    @property
    def classes_(self) -> np.ndarray:  # type: ignore[override]
        return np.asarray(self.preprocessor_.classes)


class HPSearchRegressorModel(RawRegressorOutputs, _StudyModel):
    """A study's regressor: ``predict`` returns one value per row; ``score`` is R²."""


def fitted_estimator(model: Any, preprocessor: Preprocessor, builder: str = "mlp",
                     **settings: Any) -> _StudyModel:
    """The estimator of the preprocessing's task with ``settings`` as its parameters (the constructor's
    and the builder's arguments), fitted with the trained ``model``."""
    cls = HPSearchClassifierModel if preprocessor.task == "classification" else HPSearchRegressorModel
    est = cls(builder=builder, **settings)
    est.model_, est.preprocessor_, est.history_ = model, preprocessor, {}
    est._set_fitted(preprocessor)
    return est
