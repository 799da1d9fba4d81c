"""hpsearch: hyperparameter search for Keras neural networks.

Importing the package is cheap: Keras/TensorFlow load only when an estimator, builder or engine is
first used (attribute access goes through ``__getattr__``).
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "KerasClassifier": "hpsearch.models.estimators",
    "KerasRegressor": "hpsearch.models.estimators",
    "build_mlp": "hpsearch.models.mlp",
    "build_cnn": "hpsearch.models.cnn",
    "SearchSpace": "hpsearch.spec.space",
    "run_study": "hpsearch.study.run",
    "load_study_config": "hpsearch.study.validate",
    "load_best": "hpsearch.results.best",
    "load_split": "hpsearch.results.split",
    "GridSearchCV": "hpsearch.search",
    "RandomizedSearchCV": "hpsearch.search",
    "HalvingRandomSearchCV": "hpsearch.search",
    "OptunaSearchCV": "hpsearch.search",
    "lr_find": "hpsearch.study.lrfind",
    "find_batch_size": "hpsearch.study.batchfind",
    "HPSearchError": "hpsearch.errors",
    "UserError": "hpsearch.errors",
}

#: modules that earlier releases documented at the top of the package (``hpsearch.cnn.build_cnn``,
#: ``hpsearch.export.custom_objects()``), reached by attribute from their packages now
_MOVED = {
    "cnn": "hpsearch.models.cnn",
    "mlp": "hpsearch.models.mlp",
    "export": "hpsearch.results.export",
    "estimators": "hpsearch.models.estimators",
}

__all__ = [*sorted(_LAZY), "__version__"]


def __getattr__(name: str) -> Any:
    if name in _MOVED:
        return import_module(_MOVED[name])
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'hpsearch' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
