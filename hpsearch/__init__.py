"""hpsearch: hyperparameter search for Keras neural networks.

Importing the package is cheap: Keras/TensorFlow load only when an estimator, builder or engine is
first used (attribute access goes through ``__getattr__``).
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "KerasClassifier": "hpsearch.estimators",
    "KerasRegressor": "hpsearch.estimators",
    "build_mlp": "hpsearch.mlp",
    "SearchSpace": "hpsearch.space",
    "run_study": "hpsearch.study",
    "load_study_config": "hpsearch.validate",
    "load_best": "hpsearch.best",
    "lr_find": "hpsearch.lrfind",
    "find_batch_size": "hpsearch.batchfind",
    "HPSearchError": "hpsearch.errors",
    "UserError": "hpsearch.errors",
}

__all__ = [*sorted(_LAZY), "__version__"]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'hpsearch' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
