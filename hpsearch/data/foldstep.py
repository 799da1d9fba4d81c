"""The study's :class:`~hpsearch.data.preprocess.Preprocessor` as a scikit-learn transformer, so that the
scikit-learn engines refit the table encoding, reshape and scaling inside each CV fold (a Pipeline
step) exactly as the Optuna engine does with ``PreparedData.fold_arrays``.

Imported only when such a step is built (it loads scikit-learn).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin

from hpsearch.data.preprocess import Preprocessor, fit_preprocessor

__all__ = ["FittedPreprocessing"]


class FittedPreprocessing(TransformerMixin, BaseEstimator):
    """Fit: a copy of ``like`` refitted on the fold's raw training rows; transform: raw -> model input."""

    def __init__(self, like: Preprocessor | None = None, scaling: str = "standard") -> None:
        self.like = like
        self.scaling = scaling

    def fit(self, X: Any, y: Any = None) -> FittedPreprocessing:
        if self.like is None:
            raise ValueError("FittedPreprocessing needs like=Preprocessor(...)")
        self.pre_ = fit_preprocessor(np.asarray(X), self.scaling, self.like)
        return self

    def transform(self, X: Any) -> np.ndarray:
        return self.pre_.transform(X)
