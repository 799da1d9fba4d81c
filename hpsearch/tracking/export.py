"""``hpsearch export-tracking STUDY --mlflow URI / --tensorboard DIR``: write a stored study to a
tracker after the fact, or fill in what a run could not write while the tracker was down. MLflow:
trials that already have a run under the study's parent are left as they are; TensorBoard: every
finished trial's folder is written again."""

from __future__ import annotations

import importlib.util
from typing import Any

from hpsearch.errors import UserError
from hpsearch.storage.queries import open_study_for_reading
from hpsearch.tracking.hooks import EXTRA

__all__ = ["export_tracking"]


def _need(module: str, flag: str) -> None:
    if importlib.util.find_spec(module) is None:
        raise UserError(f"{flag}: the {module} package is not installed; {EXTRA}")


def export_tracking(study_name: str, storage: str | None = None, *, mlflow: str | None = None,
                    tensorboard: str | None = None) -> dict[str, Any]:
    """Write every finished trial of a stored study; returns what was written per tracker."""
    if not mlflow and not tensorboard:
        raise UserError("export-tracking: give --mlflow URI and/or --tensorboard DIR")
    if mlflow:
        _need("mlflow", "--mlflow")
    if tensorboard:
        _need("tensorboard", "--tensorboard")
    _, _, study = open_study_for_reading(study_name, storage)
    trials = [t for t in study.get_trials(deepcopy=False) if t.state.is_finished()]
    out: dict[str, Any] = {"study": study_name, "finished_trials": len(trials)}
    if mlflow:
        from hpsearch.tracking.mlflowlog import MlflowTracker

        errors: list[str] = []
        tracker = MlflowTracker(mlflow, study, errors.append, announce=False)
        if errors:  # nothing can be written: the one line says why
            raise UserError(f"--mlflow: {errors[0].removeprefix('hpsearch: tracking: ').split('; `')[0]}")
        done = tracker.logged()
        new = [t for t in trials if t.number not in done]
        for t in new:
            tracker.log_trial(study, t)
        tracker.end_study(study)
        out["mlflow"] = {"uri": tracker.shown, "experiment": tracker.experiment, "parent_run": tracker.parent,
                         "logged": len(new), "already_there": len(trials) - len(new)}
    if tensorboard:
        from hpsearch.tracking.tblog import TensorBoardTracker

        tb = TensorBoardTracker(tensorboard, study, _StoredSpace(trials), _metric(study), lambda _: None)
        for t in trials:
            tb.log_trial(study, t)
        out["tensorboard"] = {"folder": str(tb.folder), "logged": len(trials)}
    return out


def _metric(study: Any) -> str:
    from hpsearch.records import STUDY

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
