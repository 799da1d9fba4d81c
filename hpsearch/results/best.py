"""The study's best model back as a fitted scikit-learn estimator (``load_best``, no retraining; its
class is in :mod:`hpsearch.results.estimator`), its description for ``hpsearch best``, and
``export_best`` to copy it out of the artifact store.

Models are stored as ``.keras`` files (loaded with ``safe_mode=True``) and preprocessing as JSON by
:mod:`hpsearch.storage.artifacts`: nothing is pickled.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hpsearch.errors import UserError
from hpsearch.records import STUDY, TRIAL
from hpsearch.results.ensemble import ensemble_scores, load_ensemble
from hpsearch.results.estimator import HPSearchClassifierModel, HPSearchRegressorModel, fitted_estimator
from hpsearch.results.export import export_serving
from hpsearch.storage.artifacts import ARTIFACTS_ENV, artifact_store_for, load_model_artifacts
from hpsearch.storage.queries import best_artifact_ids, best_info, open_study_for_reading

__all__ = [
    "HPSearchClassifierModel",
    "HPSearchRegressorModel",
    "describe_best",
    "export_best",
    "fitted_estimator",
    "load_best",
]


def _open(study_name: str, storage: str | None, artifacts: str | None) -> tuple[str, Any, Any]:
    """(URL, study, artifact store) of an existing study."""
    url, _, study = open_study_for_reading(study_name, storage)
    return url, study, artifact_store_for(url, artifacts or study.user_attrs.get(STUDY.ARTIFACTS))


def load_best(study_name: str, storage: str | None = None, artifacts: str | None = None,
              top_k: int | None = None, pick: str | None = None) -> Any:
    """The study's best model as a fitted sklearn estimator (``predict``, ``predict_proba``, ``score``).

    ``predict`` takes raw features: the fitted scaling and label encoding are applied inside.
    Works for studies of every engine. Its ``history_`` holds every Keras metric of every epoch
    of the model's trial (``{"loss": [...], "val_loss": [...], ...}``). ``top_k=K`` (K > 1): the
    stored models of the K best trials averaged (:mod:`hpsearch.results.ensemble`; probabilities for a classifier).

    ``pick``: for a study of several objectives, a rule that chooses one trial of the Pareto front,
    e.g. ``"smallest n_params within 0.005 of the best accuracy"``, ``"smallest within 1% of the best
    accuracy"``, ``"best latency_ms"``. Grammar: ``[best|smallest|largest [OBJECTIVE]] [within D[%]
    of the best OBJECTIVE]``; an omitted objective is the first one the ``within`` part does not
    name. Default (None or ``"best"``): the front's best trial on the first objective, the one
    ``hpsearch best`` shows and scored on the test split. A bad rule is a one-line UserError.
    """
    _, study, store = _open(study_name, storage, artifacts)
    if top_k is not None and top_k != 1:
        return load_ensemble(study, store, top_k)
    mid, pid, number = best_artifact_ids(study, pick)
    model, pre = load_model_artifacts(store, mid, pid)
    trial = next((t for t in study.get_trials(deepcopy=False) if t.number == number), None)
    builder, settings = _settings(study, trial)
    est = fitted_estimator(model, pre, builder, **settings)
    est.history_ = dict(trial.user_attrs.get(TRIAL.HISTORY) or {}) if trial is not None else {}
    return est


def _settings(study: Any, trial: Any) -> tuple[str, dict[str, Any]]:
    """(builder, the estimator's parameters) of ``trial``: its params over the study's fixed ones, the
    epochs it trained, and the study's training and preprocessing settings, from its stored study file."""
    import yaml

    from hpsearch.spec.config import schema_from_mapping
    from hpsearch.study.batchfind import BATCH_FIND_ATTR

    attrs = study.user_attrs
    params = dict(trial.params) if trial is not None else {}
    epochs = trial.user_attrs.get(TRIAL.EPOCHS) if trial is not None else None
    text = attrs.get(STUDY.CONFIG)
    if not text:  # a study stored before study files were kept with it: what its trial says
        return str(attrs.get(STUDY.BUILDER) or "mlp"), {**params, **({"epochs": int(epochs)} if epochs else {})}
    # the schema alone: the data (memory: arrays of another process, a moved file) need not be here
    cfg = schema_from_mapping(yaml.safe_load(text), where="stored study file")
    train, data = cfg.train, cfg.data
    batch = train.batch_size if isinstance(train.batch_size, int) else \
        int((attrs.get(BATCH_FIND_ATTR) or {}).get("batch_size") or 32)
    settings: dict[str, Any] = {
        "epochs": int(epochs or train.epochs), "batch_size": batch, "scale": data.scale, "rescale": data.rescale,
        "input_shape": data.reshape, "max_categories": data.max_categories, "class_weight": train.class_weight,
        "random_state": cfg.search.seed, **cfg.model.fixed, **params,
    }
    return cfg.model.builder, settings


def _export(study: Any, store: Any, path: str) -> Path:
    from optuna.artifacts import download_artifact
    from optuna.artifacts.exceptions import ArtifactNotFound

    mid, pid, _ = best_artifact_ids(study)
    out = Path(path)
    if out.suffix != ".keras":
        raise UserError(f"--export {path}: the file name must end in .keras")
    if not out.parent.exists():
        raise UserError(f"--export {path}: folder {out.parent} does not exist; create it first")
    pre_path = out.with_suffix(".preprocess.json")
    for target in (out, pre_path):
        if target.exists():
            raise UserError(f"--export {path}: {target} already exists; remove it or choose another path")
    try:
        download_artifact(artifact_store=store, file_path=str(out), artifact_id=mid)
        download_artifact(artifact_store=store, file_path=str(pre_path), artifact_id=pid)
    except (ArtifactNotFound, OSError) as e:
        raise UserError(
            f"the stored model {mid} cannot be read from the artifact store ({e.__class__.__name__});"
            f" check --artifacts / {ARTIFACTS_ENV} points at the study's artifact folder"
        ) from None
    json.loads(pre_path.read_text())  # a readable JSON file, or fail loudly
    return out


def export_best(study_name: str, path: str, storage: str | None = None, artifacts: str | None = None) -> Path:
    """Write the best model to ``path`` (a ``.keras`` file) and its preprocessing beside it (``.json``)."""
    _, study, store = _open(study_name, storage, artifacts)
    return _export(study, store, path)


def describe_best(study_name: str, storage: str | None = None, artifacts: str | None = None,
                  export: str | None = None, ensemble: int | None = None, fmt: str | None = None) -> dict[str, Any]:
    """``hpsearch best``: :func:`hpsearch.storage.queries.best_info`, after exporting the model to ``export``
    (with ``fmt``, a serving folder of :mod:`hpsearch.results.export`); with ``ensemble=K``, the top-K
    ensemble's scores next to the single best model's."""
    if fmt is not None and not export:
        raise UserError(f"--format {fmt}: give the folder to write with --export DIR")
    url, _, study = open_study_for_reading(study_name, storage)
    info = best_info(study, url, artifacts)
    if ensemble is not None:
        store = artifact_store_for(url, artifacts or study.user_attrs.get(STUDY.ARTIFACTS))
        info["ensemble"] = ensemble_scores(study, store, ensemble)
    if export:
        store = artifact_store_for(url, artifacts or study.user_attrs.get(STUDY.ARTIFACTS))
        written = _export(study, store, export) if fmt is None else export_serving(study, store, export, fmt)
        info["exported"], info["export_format"] = str(written), fmt
    return info
