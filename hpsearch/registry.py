"""Registries: every variation point of hpsearch is a name mapped to a lazily imported object.

One registry per variation point (engines, Optuna samplers and pruners, data sources, built-in
model builders). A name maps to ``"module:attribute"``; the module is imported only when the
name is used, so the study-file schema can list and check names without loading TensorFlow,
scikit-learn or Optuna. Adding an engine, sampler, pruner, source or builder touches its own file,
its line below and the docs; nothing else compares these names.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__all__ = ["Registry", "ENGINES", "SAMPLERS", "PRUNERS", "SOURCES", "BUILDERS"]


class Registry:
    """Names mapped to ``"module:attribute"`` targets, imported on first use."""

    def __init__(self, kind: str, field: str, targets: dict[str, str]) -> None:
        self.kind = kind  # e.g. "engine"
        self.field = field  # the study-file key that names one, e.g. "search.engine"
        self._targets = dict(targets)
        self._loaded: dict[str, Any] = {}

    def names(self) -> tuple[str, ...]:
        return tuple(self._targets)

    def __contains__(self, name: object) -> bool:
        return name in self._targets

    def register(self, name: str, target: str) -> None:
        """Add (or replace) ``name`` -> ``"module:attribute"``."""
        self._targets[name] = target
        self._loaded.pop(name, None)

    def unknown(self, name: object) -> str:
        """The one-line message for a name that is not registered (field, value, the fix)."""
        return f"{self.field}: unknown {self.kind} {name!r}; use one of {', '.join(self._targets)}"

    def register_object(self, name: str, obj: Any) -> None:
        """Add (or replace) ``name`` -> an object given in this process (a Python search's builder
        function that no module path reaches); other processes do not see it."""
        self._targets[name] = f"<given in process {id(obj):#x}>"
        self._loaded[name] = obj

    def get(self, name: str) -> Any:
        """The registered object; ``KeyError`` with :meth:`unknown`'s message for other names."""
        if name not in self._targets:
            raise KeyError(self.unknown(name))
        if name not in self._loaded:
            module, _, attr = self._targets[name].partition(":")
            self._loaded[name] = getattr(import_module(module), attr)
        return self._loaded[name]


ENGINES = Registry("engine", "search.engine", {
    "random": "hpsearch.engines.sklearn:RandomEngine",
    "grid": "hpsearch.engines.sklearn:GridEngine",
    "halving": "hpsearch.engines.sklearn:HalvingEngine",
    "optuna": "hpsearch.engines.optuna:OptunaEngine",
})

SAMPLERS = Registry("sampler", "search.sampler", {
    "tpe": "hpsearch.engines.samplers:tpe",
    "cmaes": "hpsearch.engines.samplers:cmaes",
    "random": "hpsearch.engines.samplers:random",
    "grid": "hpsearch.engines.samplers:grid",
    "qmc": "hpsearch.engines.samplers:qmc",
    "gp": "hpsearch.engines.samplers:gp",
    "nsga2": "hpsearch.engines.samplers:nsga2",
    "nsga3": "hpsearch.engines.samplers:nsga3",
})

PRUNERS = Registry("pruner", "search.pruner", {
    "hyperband": "hpsearch.engines.samplers:hyperband",
    "sha": "hpsearch.engines.samplers:sha",
    "median": "hpsearch.engines.samplers:median",
    "none": "hpsearch.engines.samplers:nop",
})

# keys: a scheme (``sklearn`` for ``sklearn:NAME``), a URL scheme (``s3://``) or a file suffix with its dot (``.csv``)
SOURCES = Registry("data source", "data.source", {
    "sklearn": "hpsearch.data.sources.tables:SklearnSource",
    ".csv": "hpsearch.data.sources.tables:CsvSource",
    ".parquet": "hpsearch.data.sources.tables:ParquetSource",
    ".pq": "hpsearch.data.sources.tables:ParquetSource",
    ".npz": "hpsearch.data.sources.tables:NpzSource",
    "/": "hpsearch.data.sources.images:ImageFolderSource",
    "s3://": "hpsearch.data.sources.s3folder:S3ImageFolderSource",
    "keras": "hpsearch.data.sources.kerasdata:KerasSource",
    "memory": "hpsearch.data.sources.memory:MemorySource",
})

BUILDERS = Registry("builder", "model.builder", {
    "mlp": "hpsearch.models.mlp:build_mlp",
    "cnn": "hpsearch.models.cnn:build_cnn",
})
