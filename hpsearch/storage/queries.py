"""The read side: open a stored study without changing anything, and describe it as plain data.

``status``, ``best``, ``report``, ``load_best`` and the dashboard all open studies through
:func:`open_storage_for_reading` / :func:`open_study_for_reading`, so they share one set of
one-line errors and one rule: a read command never creates anything (no SQLite file, no tables).
Everything here returns dicts of JSON-able values; :mod:`hpsearch.console` renders them.
Only Optuna's storage is read (DESIGN.md: the storage is the single record), so this works the same
for studies of every engine and while workers are still writing.
"""

from __future__ import annotations

import datetime as _dt
import warnings
from typing import Any

from hpsearch.errors import UserError
from hpsearch.pareto import DEFAULT_PICK, chosen_trial, front_rows, objectives_of, pareto_front
from hpsearch.records import STUDY, TRIAL, best_of, primary_value, ranked, state_counts, trial_rows
from hpsearch.storage import open_storage, redact_url, resolve_storage_url
from hpsearch.storage.artifacts import artifact_location

__all__ = [
    "best_artifact_ids",
    "best_info",
    "list_studies",
    "load_study",
    "open_storage_for_reading",
    "open_study_for_reading",
    "study_direction",
    "study_status",
    "trial_detail",
    "study_summary",
    "stored_model_ids",
    "top_models",
]

#: how many study names a "study not found" message lists
_NAMES_SHOWN = 20


def _quiet_optuna() -> None:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


def open_storage_for_reading(storage: str | None) -> tuple[str, Any]:
    """(URL, RDBStorage) for a read command.

    ``must_exist=True``: a missing SQLite file, an empty PostgreSQL database or a database without
    Optuna's tables is a one-line StorageError; nothing is created (no file, no tables).
    """
    _quiet_optuna()
    url = resolve_storage_url(storage, None)
    return url, open_storage(url, must_exist=True)


def load_study(name: str, storage: Any) -> Any:
    """The study ``name`` of an open storage; a one-line UserError naming the studies that exist."""
    import optuna

    try:
        return optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        names = [s.study_name for s in optuna.get_all_study_summaries(storage, include_best_trial=False)]
        hint = f"; studies there: {', '.join(names[:_NAMES_SHOWN])}" if names else "; the storage has no studies"
        raise UserError(f"study {name!r} not found in the storage{hint}") from None


def open_study_for_reading(name: str, storage: str | None) -> tuple[str, Any, Any]:
    """(URL, RDBStorage, optuna.Study) of an existing study; nothing is created."""
    url, st = open_storage_for_reading(storage)
    return url, st, load_study(name, st)


def study_direction(user_attrs: dict[str, Any], directions: list[Any]) -> str:
    """``maximize`` / ``minimize``: as hpsearch stored it, else Optuna's first direction."""
    d = user_attrs.get(STUDY.DIRECTION)
    if d:
        return str(d)
    return str(directions[0].name.lower()) if directions else "minimize"


def _now() -> _dt.datetime:
    return _dt.datetime.now()  # Optuna stores naive local datetimes


def _elapsed(trials: list[Any], running: int, now: _dt.datetime | None) -> float | None:
    """First start to last end (to ``now`` while trials run)."""
    starts = [t.datetime_start for t in trials if t.datetime_start]
    if not starts:
        return None
    ends = [t.datetime_complete for t in trials if t.datetime_complete]
    last = max(ends) if ends else None
    if running and now is not None:
        last = max(last, now) if last else now
    return None if last is None else max(0.0, (last - min(starts)).total_seconds())


def study_summary(name: str, directions: list[Any], user_attrs: dict[str, Any], trials: list[Any],
                  now: _dt.datetime | None = None) -> dict[str, Any]:
    """One row of ``hpsearch status``: trial counts by state, best value, elapsed time."""
    direction = study_direction(user_attrs, directions)
    counts = state_counts(trials)
    best_t = None
    if len(directions) <= 1:
        done = [t for t in trials if t.state.name == "COMPLETE" and t.value is not None]
        _, i = best_of([t.value for t in done], direction)
        best_t = done[i] if i >= 0 else None
    else:  # several objectives: the default pick, the front's best on the first objective
        front = pareto_front(trials, [d.name.lower() for d in directions])
        best_t = front[0] if front else None
    starts = [t.datetime_start for t in trials if t.datetime_start]
    return {
        "study": name,
        "engine": user_attrs.get(STUDY.ENGINE),
        "metric": user_attrs.get(STUDY.METRIC),
        "direction": direction,
        "task": user_attrs.get(STUDY.TASK),
        "n_trials": len(trials),
        "complete": counts["complete"],
        "pruned": counts["pruned"],
        "failed": counts["fail"],
        "running": counts["running"],
        "waiting": counts["waiting"],
        "best_value": primary_value(best_t) if best_t is not None else None,
        "best_trial": best_t.number if best_t is not None else None,
        "test_score": user_attrs.get(STUDY.TEST_SCORE),
        "started": min(starts).isoformat(timespec="seconds") if starts else None,
        "elapsed_s": _elapsed(trials, counts["running"], now),
    }


def list_studies(storage: str | None) -> dict[str, Any]:
    """``hpsearch status``: {"storage": redacted URL, "studies": one summary per study}."""
    import optuna

    url, st = open_storage_for_reading(storage)
    rows = []
    for s in optuna.get_all_study_summaries(st, include_best_trial=False):
        trials = st.get_all_trials(st.get_study_id_from_name(s.study_name), deepcopy=False)
        rows.append(study_summary(s.study_name, list(s.directions), dict(s.user_attrs), trials, _now()))
    return {"storage": redact_url(url), "studies": rows}


def missing_best_model(study: Any, best: Any) -> bool:
    """Has the study's best trial no usable stored model (none recorded for it, or one removed)?"""
    attrs = study.user_attrs
    gone = set(attrs.get(STUDY.REMOVED_ARTIFACTS) or [])
    if attrs.get(STUDY.BEST_TRIAL) == best.number and attrs.get(STUDY.BEST_MODEL_ARTIFACT) not in (None, *gone):
        return False
    mid = best.user_attrs.get(TRIAL.MODEL_ARTIFACT)
    return not mid or mid in gone


def study_status(name: str, storage: str | None, top: int | None = 10) -> dict[str, Any]:
    """``hpsearch status NAME``: the study's summary, data summary, test scores and top trials."""
    url, _, s = open_study_for_reading(name, storage)
    trials = s.get_trials(deepcopy=False)
    summary = study_summary(s.study_name, list(s.directions), dict(s.user_attrs), trials, _now())
    rows = trial_rows(trials, summary["direction"], limit=top if top and top > 0 else None)
    try:
        best = chosen_trial(s)
    except ValueError:
        best = None
    idle = not any(t.state.name in ("RUNNING", "WAITING") for t in trials)
    missing = best is not None and idle and missing_best_model(s, best)
    return dict(summary, storage=redact_url(url), data_summary=s.user_attrs.get(STUDY.DATA_SUMMARY),
                test_metric=s.user_attrs.get(STUDY.TEST_METRIC), test_metrics=s.user_attrs.get(STUDY.TEST_METRICS),
                stop_reason=s.user_attrs.get(STUDY.STOP_REASON), trials=rows, model_missing=missing,
                decisions=s.user_attrs.get(STUDY.DECISIONS) or {},
                **_front(s, trials))


def trial_detail(name: str, storage: str | None, number: int) -> dict[str, Any]:
    """``hpsearch status NAME --trial N``: one trial's state, value(s), params, attributes and its full
    per-epoch Keras history (``TRIAL.HISTORY``; its intermediate values when it has none)."""
    url, st, s = open_study_for_reading(name, storage)
    try:
        t = st.get_trial(st.get_trial_id_from_study_id_trial_number(st.get_study_id_from_name(name), number))
    except KeyError:
        raise UserError(f"--trial {number}: study {name!r} has no trial {number}; see `hpsearch status {name}`"
                        ) from None
    attrs = dict(t.user_attrs)
    history = attrs.pop(TRIAL.HISTORY, None) or (
        {"intermediate_value": [t.intermediate_values[k] for k in sorted(t.intermediate_values)]}
        if t.intermediate_values else {})
    return {"study": s.study_name, "storage": redact_url(url), "number": t.number, "state": t.state.name,
            "values": t.values, "params": dict(t.params), "user_attrs": attrs, "history": history,
            "datetime_start": str(t.datetime_start or ""), "datetime_complete": str(t.datetime_complete or "")}


def _front(study: Any, trials: list[Any] | None = None) -> dict[str, Any]:
    """``objectives`` ((name, direction) pairs) and ``front`` (:func:`hpsearch.pareto.front_rows`) of a
    study of several objectives; nothing for one objective."""
    objectives = objectives_of(study)
    if len(objectives) == 1:
        return {}
    return {"objectives": objectives, "front": front_rows(study, trials)}


def best_info(study: Any, url: str, artifacts: str | None = None) -> dict[str, Any]:
    """``hpsearch best``: the best trial's params, validation and test scores, and where its model is.
    Several objectives: the Pareto front too, and "best" is its default pick (:data:`DEFAULT_PICK`)."""
    try:
        best = chosen_trial(study)
    except ValueError:
        name = study.study_name
        raise UserError(f"study {name!r} has no completed trial yet; see `hpsearch status {name}`") from None
    attrs = study.user_attrs
    stored = attrs.get(STUDY.BEST_MODEL_ARTIFACT)
    return {
        "study": study.study_name, "storage": redact_url(url), "engine": attrs.get(STUDY.ENGINE),
        "metric": attrs.get(STUDY.METRIC) or "value",
        "direction": study_direction(attrs, list(study.directions)), "best_trial": best.number,
        "value": primary_value(best), "params": dict(best.params),
        "fold_scores": best.user_attrs.get(TRIAL.FOLD_SCORES),
        "epochs": best.user_attrs.get(TRIAL.EPOCHS), "n_params": best.user_attrs.get(TRIAL.N_PARAMS),
        "test_metric": attrs.get(STUDY.TEST_METRIC), "test_score": attrs.get(STUDY.TEST_SCORE),
        "test_metrics": attrs.get(STUDY.TEST_METRICS) or {},
        "test_rows": (attrs.get(STUDY.DATA_SUMMARY) or {}).get("test_rows"),  # 0: the study has no test split
        "model_trial": attrs.get(STUDY.BEST_TRIAL, best.number) if stored else best.number,
        "model_artifact": stored or best.user_attrs.get(TRIAL.MODEL_ARTIFACT),
        "preprocess_artifact": attrs.get(STUDY.BEST_PREPROCESS_ARTIFACT)
        or best.user_attrs.get(TRIAL.PREPROCESS_ARTIFACT),
        "artifacts": artifact_location(url, artifacts or attrs.get(STUDY.ARTIFACTS)),
        "exported": None, **_front(study), **({"pick": DEFAULT_PICK} if len(study.directions) > 1 else {}),
        "model_missing": not any(t.state.name in ("RUNNING", "WAITING") for t in study.get_trials(deepcopy=False))
        and missing_best_model(study, best),
    }


def best_artifact_ids(study: Any, pick: str | None = None) -> tuple[str, str, int | None]:
    """(model id, preprocessing id, trial number) of the study's best stored model.

    The one ``finalize`` recorded; else the best trial's own model (a study still running).
    ``pick``: a rule that chooses a trial of the Pareto front (:mod:`hpsearch.pareto`) instead.
    """
    attrs = study.user_attrs
    mid, pid = attrs.get(STUDY.BEST_MODEL_ARTIFACT), attrs.get(STUDY.BEST_PREPROCESS_ARTIFACT)
    if mid and pid and pick is None:
        return str(mid), str(pid), attrs.get(STUDY.BEST_TRIAL)
    try:
        best = chosen_trial(study, pick)
    except ValueError:
        raise UserError(f"study {study.study_name!r} has no completed trial yet; run it first") from None
    if mid and pid and attrs.get(STUDY.BEST_TRIAL) == best.number:  # the model finalize stored (a refit)
        return str(mid), str(pid), best.number
    mid, pid = best.user_attrs.get(TRIAL.MODEL_ARTIFACT), best.user_attrs.get(TRIAL.PREPROCESS_ARTIFACT)
    if mid in set(attrs.get(STUDY.REMOVED_ARTIFACTS) or []):
        mid = pid = None  # removed on purpose (keep_models) before the trial was named best
    if not (mid and pid) and pick is not None:
        raise UserError(f"pick: {pick!r} chooses trial {best.number}, which has no stored model (the scikit-learn"
                        " engines keep only the refit of the default pick); use the default pick or engine optuna")
    if not (mid and pid):
        raise UserError(
            f"study {study.study_name!r} has no stored model for its best trial {best.number}; repair it with"
            f" `hpsearch best {study.study_name} --refit` (or `hpsearch run FILE --resume`)"
        )
    return str(mid), str(pid), best.number


def top_models(study: Any, k: int) -> list[tuple[int, str, str]]:
    """(trial number, model id, preprocessing id) of the ``k`` best trials with a stored model, best
    first; a one-line UserError when the study keeps fewer."""
    if k < 1:
        raise UserError(f"an ensemble needs at least 1 model, got {k}; give --ensemble / top_k >= 1")
    attrs = study.user_attrs
    gone = set(attrs.get(STUDY.REMOVED_ARTIFACTS, []))
    direction = study_direction(attrs, list(study.directions))
    out = []
    for t in ranked(study.get_trials(deepcopy=False), direction):
        ids = stored_model_ids(t, attrs)
        if ids is not None and ids[0] not in gone:
            out.append((t.number, *ids))
    if len(out) < k:
        raise UserError(
            f"study {study.study_name!r} keeps {len(out)} trained models, fewer than the {k} asked for;"
            f" ask for at most {len(out)}, or set search.ensemble: {k} and run the study again")
    return out[:k]


def stored_model_ids(trial: Any, attrs: dict[str, Any]) -> tuple[str, str] | None:
    """(model id, preprocessing id) of a trial's model: its own, else one stored against the study
    (the refitted best, or a scikit-learn engine's ensemble member, see
    :mod:`hpsearch.engines.ensemble_refit`)."""
    mid, pid = trial.user_attrs.get(TRIAL.MODEL_ARTIFACT), trial.user_attrs.get(TRIAL.PREPROCESS_ARTIFACT)
    if mid and pid:
        return str(mid), str(pid)
    if attrs.get(STUDY.BEST_TRIAL) == trial.number and attrs.get(STUDY.BEST_MODEL_ARTIFACT):
        return str(attrs[STUDY.BEST_MODEL_ARTIFACT]), str(attrs[STUDY.BEST_PREPROCESS_ARTIFACT])
    member = (attrs.get(STUDY.ENSEMBLE_MODELS) or {}).get(str(trial.number))
    return (str(member[0]), str(member[1])) if member else None
