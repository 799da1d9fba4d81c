"""A trained model scored on data: its raw outputs (:func:`predict_raw`) and the figures a finished
study records on the held-out test split (:func:`test_scores`: the study metric plus accuracy, or
mse / mae / r2). Used when a study finishes and by the read side (:mod:`hpsearch.results`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from hpsearch.metrics import score_predictions

if TYPE_CHECKING:  # pragma: no cover
    from hpsearch.data.prepare import PreparedData

__all__ = ["EXTRA_TEST_METRICS", "predict_raw", "test_scores"]


#: recorded on the test split besides the study metric, per task
EXTRA_TEST_METRICS: dict[str, tuple[str, ...]] = {"classification": ("accuracy",),
                                                   "regression": ("mse", "mae", "r2")}


def predict_raw(model: Any, X: Any) -> np.ndarray:
    """The Keras model's raw outputs (probabilities or values) for already preprocessed rows
    (or a streamed image folder's files, decoded batch by batch)."""
    from hpsearch.data.stream import ImageBatches, ImageFiles

    if isinstance(X, ImageFiles):
        return np.asarray(model.predict(ImageBatches(X, None, 256, workers=2), verbose=0))
    return np.asarray(model.predict(X, batch_size=1024, verbose=0))


def test_scores(model: Any, data: PreparedData, metric: str) -> dict[str, float]:
    """The study metric and the task's usual metrics on the test split; {} without a test split."""
    if not len(data.y_test):
        return {}
    raw = predict_raw(model, data.X_test)
    scores = {metric: score_predictions(metric, data.task, data.y_test, raw)}
    for m in EXTRA_TEST_METRICS[data.task]:
        if m not in scores:
            scores[m] = score_predictions(m, data.task, data.y_test, raw)
    return scores


test_scores.__test__ = False  # type: ignore[attr-defined]  # a library function, not a pytest test
