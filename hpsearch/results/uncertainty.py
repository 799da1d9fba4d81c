"""Monte Carlo dropout: the spread of a trained network's predictions with dropout left on.

Gal & Ghahramani (2016): averaging ``samples`` stochastic forward passes gives a better-calibrated
prediction and, through its standard deviation, an estimate of the model's uncertainty. Only the
dropout layers are switched on: the model is cloned with each dropout layer replaced by a subclass
that always drops, so batch normalisation keeps its inference statistics. A model without dropout
would give the same answer every pass; it is refused with a one-line error.

:class:`MCDropoutMixin` adds ``predict_uncertainty`` to the fitted estimators of
:func:`hpsearch.load_best` (and to any scikeras-style estimator with ``model_``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from hpsearch.errors import UserError

__all__ = ["Uncertainty", "MCDropoutMixin", "mc_dropout", "dropout_layers"]

#: rows per forward pass: samples are stacked along the batch axis up to this many rows
_MAX_ROWS = 65_536


@dataclass
class Uncertainty:
    """``mean``: the mean prediction (class probabilities for a classifier, one column per class);
    ``std``: its standard deviation over the samples (same shape); ``entropy``: the predictive
    entropy of ``mean`` in nats (classifiers; None for regression)."""

    mean: np.ndarray
    std: np.ndarray
    entropy: np.ndarray | None
    samples: int


def _dropout_classes() -> tuple[type, ...]:
    import keras

    layers = keras.layers
    return tuple(c for c in (getattr(layers, n, None) for n in ("Dropout", "AlphaDropout", "GaussianDropout",
                                                                   "SpatialDropout1D", "SpatialDropout2D",
                                                                   "SpatialDropout3D"))
                 if isinstance(c, type))


def dropout_layers(model: Any) -> list[Any]:
    """The dropout layers of ``model`` (nested models included) with a rate above zero."""
    kinds = _dropout_classes()
    found = []
    for layer in getattr(model, "_flatten_layers", lambda: model.layers)():
        if isinstance(layer, kinds) and float(getattr(layer, "rate", 0.0)) > 0:
            found.append(layer)
    return found


def _always_on(layer: Any) -> Any:
    """A copy of a dropout layer that drops also at inference; any other layer is copied as is."""
    cls: Any = type(layer)
    config = layer.get_config()
    if not isinstance(layer, _dropout_classes()):
        return cls.from_config(config)

    def call(self: Any, inputs: Any, training: Any = None) -> Any:
        return cls.call(self, inputs, training=True)

    always: Any = type(f"MC{cls.__name__}", (cls,), {"call": call})
    return always.from_config(config)


def _mc_model(model: Any) -> Any:
    import keras

    mc = keras.models.clone_model(model, clone_function=_always_on)
    mc.set_weights(model.get_weights())
    return mc


def mc_dropout(model: Any, features: np.ndarray, *, classifier: bool, samples: int = 50,
               seed: int | None = None) -> Uncertainty:
    """``samples`` forward passes of ``features`` (already preprocessed) with dropout on."""
    import keras

    if not isinstance(samples, int) or isinstance(samples, bool) or samples < 2:
        raise UserError(f"samples: must be an integer >= 2, got {samples!r}")
    if not dropout_layers(model):
        raise UserError("predict_uncertainty: the model has no dropout layer, so every pass gives the same"
                        " answer; search or fix a dropout rate > 0 (e.g. model.fixed.dropout: 0.2)")
    if seed is not None:
        keras.utils.set_random_seed(seed)
    mc = _mc_model(model)
    x = np.asarray(features)
    n = len(x)
    per_pass = max(1, _MAX_ROWS // max(1, n))
    outs: list[np.ndarray] = []
    done = 0
    while done < samples:
        k = min(per_pass, samples - done)
        stacked = np.concatenate([x] * k, axis=0)
        pred = np.asarray(mc.predict(stacked, batch_size=min(len(stacked), 4096), verbose=0))
        outs.append(pred.reshape(k, n, *pred.shape[1:]))
        done += k
    draws = np.concatenate(outs, axis=0)
    if draws.ndim == 3 and draws.shape[-1] == 1:
        draws = draws[..., 0]
    if classifier and draws.ndim == 2:  # one sigmoid unit: the two class columns, as predict_proba
        draws = np.stack([1.0 - draws, draws], axis=-1)
    mean, std = draws.mean(axis=0), draws.std(axis=0)
    entropy = None
    if classifier:
        entropy = -np.sum(mean * np.log(np.clip(mean, 1e-12, 1.0)), axis=-1)
    return Uncertainty(mean=mean, std=std, entropy=entropy, samples=samples)


class MCDropoutMixin:
    """Adds :meth:`predict_uncertainty` to an estimator with a Keras ``model_`` and either a
    ``preprocessor`` (hpsearch's fitted models) or a scikeras ``feature_encoder_``."""

    def predict_uncertainty(self, X: Any, samples: int = 50, seed: int | None = None) -> Uncertainty:
        """Mean prediction, its standard deviation and (classifiers) the predictive entropy over
        ``samples`` passes with dropout active; raw features, as for ``predict``."""
        from sklearn.base import is_classifier

        # a mixin: the host class defines these (getattr keeps mypy from requiring them here)
        pre = getattr(self, "preprocessor_", None)
        encoder = pre if pre is not None else getattr(self, "feature_encoder_")  # noqa: B009
        model = getattr(self, "model_")  # noqa: B009
        return mc_dropout(model, encoder.transform(X), classifier=is_classifier(self), samples=samples, seed=seed)
