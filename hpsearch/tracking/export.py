"""``hpsearch export-tracking STUDY --mlflow URI / --tensorboard DIR``: write a stored study to a
tracker after the fact, or fill in what a run could not write while the tracker was down. MLflow:
trials that already have a run under the study's parent are left as they are; TensorBoard: every
finished trial's folder is written again."""

from __future__ import annotations

import importlib.util
from typing import Any

from hpsearch.errors import UserError
from hpsearch.records import STUDY, TRIAL
from hpsearch.storage.artifacts import artifact_store_for
from hpsearch.storage.queries import open_study_for_reading
from hpsearch.tracking.hooks import EXTRA

__all__ = ["export_tracking"]


def _need(module: str, flag: str) -> None:
    if importlib.util.find_spec(module) is None:
        raise UserError(f"{flag}: the {module} package is not installed; {EXTRA}")


def export_tracking(study_name: str, storage: str | None = None, *, mlflow: str | None = None,
                    tensorboard: str | None = None, log_models: bool = False,
                    artifacts: str | None = None) -> dict[str, Any]:
    """Write every finished trial of a stored study; returns what was written per tracker.
    ``log_models``: each stored trial model too (``artifacts``: the store, default the study's), also
    into the runs already there that have none."""
    if not mlflow and not tensorboard:
        raise UserError("export-tracking: give --mlflow URI and/or --tensorboard DIR")
    if log_models and not mlflow:
        raise UserError("export-tracking: --log-models logs the models to MLflow; give --mlflow URI too")
    if mlflow:
        _need("mlflow", "--mlflow")
    if tensorboard:
        _need("tensorboard", "--tensorboard")
    url, _, study = open_study_for_reading(study_name, storage)
    trials = [t for t in study.get_trials(deepcopy=False) if t.state.is_finished()]
    out: dict[str, Any] = {"study": study_name, "finished_trials": len(trials)}
    if mlflow:
        from hpsearch.tracking.mlflowlog import TAG_MODEL, MlflowTracker

        errors: list[str] = []
        store = artifact_store_for(url, artifacts or study.user_attrs.get(STUDY.ARTIFACTS)) if log_models else None
        tracker = MlflowTracker(mlflow, study, errors.append, announce=False, models=store)
        if errors:  # nothing can be written: the one line says why
            raise UserError(f"--mlflow: {errors[0].removeprefix('hpsearch: tracking: ').split('; `')[0]}")
        done = tracker.logged()
        new = [t for t in trials if t.number not in done]
        for t in new:
            tracker.log_trial(study, t)
        models = sum(tracker.log_model(done[t.number].info.run_id, t.user_attrs.get(TRIAL.MODEL_ARTIFACT),
                                       t.user_attrs.get(TRIAL.PREPROCESS_ARTIFACT))
                     for t in trials if log_models and t.number in done and t.state.name == "COMPLETE"
                     and TAG_MODEL not in done[t.number].data.tags)
        tracker.end_study(study)
        out["mlflow"] = {"uri": tracker.shown, "experiment": tracker.experiment, "parent_run": tracker.parent,
                         "logged": len(new), "already_there": len(trials) - len(new),
                         "models_added_to_runs_already_there": models}
    if tensorboard:
        from hpsearch.tracking.tblog import TensorBoardTracker

        tb = TensorBoardTracker(tensorboard, study, _StoredSpace(trials), _metric(study), lambda _: None)
        for t in trials:
            tb.log_trial(study, t)
        out["tensorboard"] = {"folder": str(tb.folder), "logged": len(trials)}
    return out


def _metric(study: Any) -> str:
    return str(study.user_attrs.get(STUDY.METRIC) or "value")


class _StoredSpace:
    """The search space as the HParams experiment needs it: each parameter's distribution as stored."""

    def __init__(self, trials: list[Any]) -> None:
        self.dists: dict[str, Any] = {}
        for t in trials:
            for k, d in t.distributions.items():
                self.dists.setdefault(k, d)

    def to_optuna_distributions(self) -> dict[str, Any]:
        return self.dists
