"""Repairing a stored study whose best trial has no model (``hpsearch best STUDY --refit``).

A study can end up with a best trial that has no stored model: it was written by an older release
(ties in a pack dropped the model of the trial later named best), an artifact was deleted by hand,
or a process died between a trial's tell and its model. ``hpsearch run FILE --resume`` repairs it
from the study file; :func:`refit_best` does the same from the study alone, with the configuration
stored on it: the best trial's configuration is trained once (seeded from ``search.seed`` and the
trial number), stored, and scored on the test split.
"""

from __future__ import annotations

from typing import Any

from hpsearch.errors import UserError
from hpsearch.records import STUDY
from hpsearch.results.evaluation import stored_config
from hpsearch.storage.queries import open_study_for_reading
from hpsearch.study.run import finalize, prepare_context
from hpsearch.trials.context import Observer

__all__ = ["refit_best"]


def refit_best(study_name: str, storage: str | None = None, artifacts: str | None = None,
               observer: Observer | None = None) -> dict[str, Any]:
    """Train the best trial's configuration once, store and score it; the study's new best-model
    attributes. A one-line UserError when the stored configuration or its data cannot be used."""
    url, _st, study = open_study_for_reading(study_name, storage)
    cfg, why = stored_config(study)
    if cfg is None:
        raise UserError(f"study {study_name!r} cannot be refitted: {why or 'it has no stored study file'};"
                        " run its study file again with `hpsearch run FILE --resume`")
    ctx = prepare_context(cfg, storage=url, artifacts=artifacts or study.user_attrs.get(STUDY.ARTIFACTS),
                          observer=observer, create=False, worker_index=None)
    finalize(ctx, force=True)
    attrs = ctx.study.user_attrs
    return {"study": study_name, "best_trial": attrs.get(STUDY.BEST_TRIAL),
            "model_artifact": attrs.get(STUDY.BEST_MODEL_ARTIFACT), "test_metric": attrs.get(STUDY.TEST_METRIC),
            "test_score": attrs.get(STUDY.TEST_SCORE), "refit_epochs": attrs.get(STUDY.REFIT_EPOCHS)}
