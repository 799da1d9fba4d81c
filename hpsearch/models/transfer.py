"""Reuse trained layers: ``model.init_from: {study: NAME, layers: K, freeze_epochs: E}`` starts each
trial from the lower K layers (those with weights, counted from the input) of NAME's best stored
model, frozen for E epochs and then trained (the transfer-learning recipe, Géron ch. 11).

:func:`transfer_builder` wraps the study's builder: it builds the model as usual, copies the
source's weights into its lower K weighted layers and freezes them (:mod:`hpsearch.models.freeze`). The
source is loaded once per process. Input shapes and layer shapes must match: a one-line
:class:`~hpsearch.errors.ConfigError` names ``model.init_from`` otherwise.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any

from hpsearch.errors import ConfigError, UserError
from hpsearch.models.freeze import freeze
from hpsearch.records import STUDY
from hpsearch.spec.config import StudyConfig
from hpsearch.storage.artifacts import artifact_store_for, load_model_artifacts
from hpsearch.storage.queries import best_artifact_ids, open_study_for_reading

__all__ = ["check_inputs", "load_source", "transfer_builder", "weighted_layers", "copy_lower_layers"]


def weighted_layers(model: Any) -> list[Any]:
    """The layers of ``model`` that hold weights, from the input up."""
    return [layer for layer in model.layers if layer.weights]


def load_source(cfg: StudyConfig, storage: str | None) -> Any:
    """The best stored Keras model of ``cfg.model.init_from.study`` (same storage unless it names one)."""
    spec = cfg.model.init_from
    assert spec is not None
    try:
        url, _, study = open_study_for_reading(spec.study, spec.storage or storage)
    except UserError as exc:
        raise ConfigError(f"model.init_from.study: {exc}") from None
    store = artifact_store_for(url, study.user_attrs.get(STUDY.ARTIFACTS))
    try:
        mid, pid, _ = best_artifact_ids(study)
    except UserError as exc:
        raise ConfigError(f"model.init_from.study: {exc}") from None
    model, _ = load_model_artifacts(store, mid, pid)
    return model


def _shape(model: Any) -> tuple[Any, ...]:
    return tuple(model.inputs[0].shape[1:]) if getattr(model, "inputs", None) else ()


def check_inputs(source: Any, shape: tuple[int, ...], study: str) -> None:
    """Refuse, before anything runs, a source model whose inputs differ from this study's rows."""
    if _shape(source) != tuple(shape):
        raise ConfigError(f"model.init_from: study {study!r} takes inputs of shape {_shape(source)}, this study's"
                          f" data has {tuple(shape)}; reuse a study trained on the same features")


def copy_lower_layers(source: Any, target: Any, k: int, study: str) -> list[Any]:
    """Copy the weights of ``source``'s lower ``k`` weighted layers into ``target``'s; returns them."""
    check_inputs(source, _shape(target), study)
    src, dst = weighted_layers(source), weighted_layers(target)
    if k > min(len(src), len(dst)):
        raise ConfigError(f"model.init_from.layers: {k} > the weighted layers of the source ({len(src)}) or of"
                          f" this model ({len(dst)}); lower layers")
    for i, (a, b) in enumerate(zip(src[:k], dst[:k])):
        wa, wb = a.get_weights(), b.get_weights()
        if type(a) is not type(b) or [w.shape for w in wa] != [w.shape for w in wb]:
            raise ConfigError(f"model.init_from.layers: layer {i + 1} is {type(b).__name__}"
                              f" {[w.shape for w in wb]} here but {type(a).__name__} {[w.shape for w in wa]} in"
                              f" study {study!r}; fix the architecture (e.g. n_neurons) or lower layers")
        b.set_weights(wa)
    return dst[:k]


def transfer_builder(builder: Callable[..., Any], source: Any, k: int, freeze_epochs: int,
                     study: str) -> Callable[..., Any]:
    """``builder`` whose models start from ``source``'s lower ``k`` layers, frozen ``freeze_epochs``."""

    @functools.wraps(builder)
    def build(*args: Any, **kwargs: Mapping[str, Any]) -> Any:
        model = builder(*args, **kwargs)
        freeze(model, copy_lower_layers(source, model, k, study), freeze_epochs)
        return model

    return build
