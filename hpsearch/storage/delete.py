"""Removing a study: its trials (Optuna's ``delete_study``) and every artifact it stored (models,
preprocessing, curves, plots), found through Optuna's artifact records, not by a folder listing.

A study that live workers hold (RUNNING or WAITING trials) is refused in one line: stop the
workers first. ``force`` deletes anyway (trials left RUNNING by a crashed run).
"""

from __future__ import annotations

import contextlib
from typing import Any

from hpsearch.errors import UserError
from hpsearch.records import STUDY
from hpsearch.storage.artifacts import artifact_store_for
from hpsearch.storage.queries import open_study_for_reading

__all__ = ["delete_study"]


def _artifact_ids(study: Any, storage: Any) -> list[str]:
    """Every artifact the study and its trials recorded (Optuna's metadata: the store's own ids)."""
    from optuna.artifacts import get_all_artifact_meta

    ids = [m.artifact_id for m in get_all_artifact_meta(study)]
    for t in study.get_trials(deepcopy=False):
        ids += [m.artifact_id for m in get_all_artifact_meta(t, storage=storage)]
    return sorted(set(ids))


def delete_study(study_name: str, storage: str | None = None, artifacts: str | None = None, *, yes: bool = False,
                 force: bool = False) -> dict[str, Any]:
    """Delete the study and its artifacts; what was deleted (``deleted`` False: a dry run, without ``yes``)."""
    import optuna
    from optuna.artifacts.exceptions import ArtifactNotFound

    url, st, study = open_study_for_reading(study_name, storage)
    trials = study.get_trials(deepcopy=False)
    live = [t.number for t in trials if t.state.name in ("RUNNING", "WAITING")]
    if live and not force:
        raise UserError(f"study {study_name!r} has {len(live)} running or waiting trials (live workers?): stop its"
                        " workers first, or pass --force for trials left running by a crashed run")
    ids = _artifact_ids(study, st)
    out = {"study": study_name, "trials": len(trials), "artifacts": len(ids), "deleted": False}
    if not yes:
        return out
    store = artifact_store_for(url, artifacts or study.user_attrs.get(STUDY.ARTIFACTS))
    for aid in ids:
        with contextlib.suppress(ArtifactNotFound):  # removed earlier (keep_models) or by hand: gone all the same
            store.remove(aid)
    optuna.delete_study(study_name=study_name, storage=st)
    out["deleted"] = True
    return out
