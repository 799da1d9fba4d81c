"""The one trial record format shared by every engine (DESIGN.md: Optuna storage is the record).

Engines, the CLI, the report and ``load_best`` read and write trials only through these names, so a
study made by the scikit-learn engine and one made by the Optuna engine look the same everywhere.
This module also holds the few rules every reader and writer shares: which of two values is better
(:func:`is_better`), how trials are counted by state (:func:`state_counts`), how they are ranked
(:func:`trial_rows`) and how a value becomes JSON-storable (:func:`clean_attr`).

Study user attributes (``study.user_attrs``): see :class:`STUDY`.
Trial user attributes (``trial.user_attrs``): see :class:`TRIAL`.
Intermediate values: the validation metric after each epoch (fold mean under CV).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

__all__ = ["STUDY", "TRIAL", "clean_attr", "is_better", "best_of", "state_counts", "rank_key", "ranked",
           "outranks", "best_ranked", "trial_rows", "DONE_STATES", "counts_toward_budget", "primary_value",
           "tally"]


class STUDY:
    """Study user attribute names."""

    VERSION = "hpsearch_version"
    ENGINE = "engine"
    METRIC = "metric"  # the first objective's metric
    DIRECTION = "direction"  # the first objective's direction
    OBJECTIVES = "objectives"  # a study of several objectives: their names, in order
    TASK = "task"
    CONFIG = "study_config"  # the study file as YAML text
    DATA_SUMMARY = "data_summary"  # rows per split, features, classes
    SPACE = "space"  # parameter -> description
    BUILDER = "builder"
    BUILDER_FILE = "builder_file"  # a user builder (module:function): the file its module came from
    ARTIFACTS = "artifacts"  # where trained models go (folder or s3://...)
    BASE_DIR = "base_dir"  # the study file's folder: relative data paths start there
    #: the data every worker trains on: {"sha256", "id" (artifact), "file", "bytes", "artifacts" (the
    #: store's location), "parts": {name: {"kind": "arrays" | "files", "sha256", ...}}}
    DATA_SNAPSHOT = "data_snapshot"
    TEST_SCORE = "test_score"  # the best model on the held-out test split, once
    TEST_METRIC = "test_metric"
    TEST_METRICS = "test_metrics"  # dict: metric -> test score
    #: how many trials score within one standard error of the best, and with search.ensemble the best
    #: K averaged on test (hpsearch.study.selection)
    SELECTION = "selection"
    BEST_TRIAL = "best_trial_number"
    COMPLETE = "complete"  # the search ended by itself (halving)
    BEST_MODEL_ARTIFACT = "best_model_artifact_id"
    BEST_PREPROCESS_ARTIFACT = "best_preprocess_artifact_id"
    REFIT_TIME = "refit_time"
    REFIT_EPOCHS = "refit_epochs"
    REMOVED_ARTIFACTS = "removed_artifacts"  # ids of models dropped by keep_models
    STOP_REASON = "stop_reason"  # the stop rule (timeout, patience, target) that last ended a run
    DECISIONS = "decisions"  # every automatic decision: {key: {"value": ..., "line": the line the run said}}
    DEADLINE_PLAN = "deadline_plan"  # packs planned from search.timeout: one line per decision
    #: {"shrunk", "built", "reused", "last"}: packs whose live members moved to a smaller model, its models
    PACK_SHRINK = "pack_shrink"
    #: {"built", "reused", "note"}: packs that built a compiled model / reused one (every process added up)
    PACK_MODELS = "pack_models"
    WARM_START = "warm_start"  # what search.warm_start copied and search.enqueue queued (set once)
    ENSEMBLE_MODELS = "ensemble_models"  # sklearn engines: trial number -> [model id, preprocessing id]
    PYTHON_SEARCH = "python_search"  # a search started from Python: its class and what it decided
    MLFLOW_RUN = "mlflow_run_id"  # tracking.mlflow: the study's parent run (every worker nests under it)
    MLFLOW_EXPERIMENT = "mlflow_experiment_id"  # tracking.mlflow: the experiment named after the study
    SAMPLING = "sampling"  # packed studies: how the pack's proposals are made (one fit per pack or one ask per trial)
    SAMPLING_HISTORY = "sampling_history"  # the bounded history TPE fits on, once it applies
    TRIAL_CREATION = "trial_creation"  # packed studies: new trials drafted whole (one transaction) or asked one by one


class TRIAL:
    """Trial user attribute names."""

    ENGINE = "engine"
    FOLD_SCORES = "fold_scores"
    STD_SCORE = "std_score"
    FIT_TIME = "fit_time"  # seconds of training
    SCORE_TIME = "score_time"
    SAMPLE_TIME = "sample_time"
    REPORT_TIME = "report_time"  # seconds the training thread waited on per-epoch storage writes
    OVERHEAD_TIME = "overhead_time"  # storage, sampling and model saving around the training
    EPOCHS = "epochs_trained"
    EPOCHS_PER_FOLD = "epochs_per_fold"
    PRUNED_AT = "pruned_at_epoch"
    N_PARAMS = "n_params"
    FAILURE = "failure_reason"
    CANDIDATE = "candidate"  # index in the scikit-learn candidate list
    CANDIDATE_KEY = "candidate_key"  # params (and resource) as JSON: resume skips stored ones
    N_RESOURCES = "n_resources"  # halving: epochs of this rung
    HALVING_ITER = "halving_iter"
    #: halving stopped before its last rung: this COMPLETE trial is the result of the PRUNED trial of
    #: that number (the highest rung reached competes; :func:`hpsearch.engines.halving.rung_reached`)
    RESULT_OF = "halving_result_of"
    RUNG_VALUES = "rung_values"  # halving, several objectives: each objective's fold mean at this rung
    MODEL_ARTIFACT = "model_artifact_id"
    PREPROCESS_ARTIFACT = "preprocess_artifact_id"
    CURVE_ARTIFACT = "curve_artifact_id"
    WORKER = "worker"  # host:pid that ran the trial
    CONSTRAINTS = "constraints"  # search.constraints: measured minus limit per limit (> 0: violated)
    LATENCY_MS = "latency_ms"  # prediction time per row on the machine that ran the trial
    INFEASIBLE = "infeasible"  # why a trial over a limit was not trained
    COPIED_FROM = "copied_from"  # "STUDY#NUMBER": copied by search.warm_start (not in the trial budget)
    PACK_SIZE = "pack_size"  # trials trained together in one compiled model (hpsearch.packing.model)
    PACK_SLOT = "pack_slot"  # this trial's place in its pack (both as it started: a shrink may move it later)
    #: every Keras metric of every epoch: {"loss": [...], "val_loss": [...], ...} (a packed member:
    #: its validation metric; a scikit-learn candidate: the fold mean of each)
    HISTORY = "history"
    DEADLINE_STOP = "deadline_stopped_at_epoch"  # a pack member ended there (0-based) by search.timeout


def clean_attr(value: Any) -> Any:
    """Make a value JSON-storable as an Optuna attribute (numpy scalars/arrays to Python, NaN to None)."""
    if isinstance(value, dict):
        return {str(k): clean_attr(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean_attr(v) for v in value]
    tolist = getattr(value, "tolist", None)  # numpy arrays and scalars, without importing numpy
    if tolist is not None and type(value).__module__ == "numpy":
        return clean_attr(tolist())
    if isinstance(value, float) and value != value:  # NaN is not valid JSON
        return None
    return value


def is_better(value: float | None, than: float | None, direction: str, min_delta: float = 0.0) -> bool:
    """Is ``value`` better than ``than`` by more than ``min_delta`` for ``direction``?

    ``None`` and NaN are never better; anything finite is better than ``None``.
    """
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return False
    if than is None or (isinstance(than, float) and math.isnan(than)):
        return True
    if direction == "maximize":
        return value > than + min_delta
    return value < than - min_delta


def best_of(values: Iterable[float | None], direction: str) -> tuple[float | None, int]:
    """(best finite value, its 0-based index); ties go to the earlier one; (None, -1) if none."""
    best: float | None = None
    index = -1
    for i, v in enumerate(values):
        if v is not None and math.isfinite(v) and is_better(v, best, direction):
            best, index = float(v), i
    return best, index


#: the states that count toward a study's budget (completed work)
DONE_STATES = ("COMPLETE", "PRUNED")


def not_own_work(trial: Any) -> bool:
    """A trial whose work is another's: copied in by a warm start, or a stopped halving search's
    result (its work is its PRUNED trial's). Never counted toward the budget."""
    ua = trial.user_attrs
    return bool(ua.get(TRIAL.COPIED_FROM)) or TRIAL.RESULT_OF in ua


def counts_toward_budget(trial: Any) -> bool:
    """Completed work of this study: a DONE_STATES trial that is not another's work (:func:`not_own_work`)."""
    return trial.state.name in DONE_STATES and not not_own_work(trial)


def tally(trials: list[Any]) -> tuple[int, int, int]:
    """(done: :func:`~hpsearch.records.counts_toward_budget`, running, waiting) among ``trials`` in one
    pass over their states (a state's ``name`` read once per state, not once per trial: at 10,000
    trials each reservation counted in ~12 ms, ~2 ms so)."""
    names = {state.name: n for state, n in Counter(t.state for t in trials).items()}
    others = [t for t in trials if not_own_work(t)]  # warm start's copies, halving's result records (few)
    # a DONE_STATES trial counts unless it is another's work: the rule decides for those alone
    done = sum(names.get(name, 0) for name in DONE_STATES)
    done -= sum(1 for t in others if t.state.name in DONE_STATES and not counts_toward_budget(t))
    return done, names.get("RUNNING", 0), names.get("WAITING", 0)


def state_counts(trials: Iterable[Any]) -> dict[str, int]:
    """Trials per state name, lower case, every state present: complete, pruned, fail, running, waiting."""
    counts = {"complete": 0, "pruned": 0, "fail": 0, "running": 0, "waiting": 0}
    for t in trials:
        name = t.state.name.lower()
        counts[name] = counts.get(name, 0) + 1
    return counts


def primary_value(trial: Any) -> float | None:
    """A trial's value on its study's first objective (its only one, in a single-objective study);
    None when it has none. ``FrozenTrial.value`` raises for a trial of several objectives."""
    values = trial.values
    return None if not values else values[0]


def rank_key(direction: str) -> Callable[[Any], tuple[int, float, int]]:
    """Sort key of trials, best first: COMPLETE trials with a value by value, then the others by
    number. **The one ranking of hpsearch**: ties go to the lower trial number, whatever order the
    trials finished in (packed members, several workers), so the best trial of a study is the same
    for every reader (run table, ``status``, ``best``, ``load_best``, ensembles, the keep rule)."""
    sign = -1.0 if direction == "maximize" else 1.0

    def key(t: Any) -> tuple[int, float, int]:
        value = primary_value(t)
        if t.state.name == "COMPLETE" and value is not None:
            return (0, sign * value, t.number)
        return (1, float(t.number), t.number)

    return key


def ranked(trials: Iterable[Any], direction: str) -> list[Any]:
    """COMPLETE trials with a value, best first on the first objective (see :func:`rank_key`)."""
    return sorted((t for t in trials if t.state.name == "COMPLETE" and primary_value(t) is not None),
                  key=rank_key(direction))


def outranks(value: float | None, number: int, than_value: float | None, than_number: int, direction: str) -> bool:
    """Does a trial (``value``, ``number``) rank before another in :func:`rank_key`'s order? A
    trial that has not been told yet (a finishing pack member) is placed by this rule."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return False
    if than_value is None or (isinstance(than_value, float) and math.isnan(than_value)):
        return True
    if value == than_value:
        return number < than_number
    return is_better(value, than_value, direction)


def best_ranked(trials: Iterable[Any], direction: str) -> Any | None:
    """The first trial of :func:`ranked` (the study's best), None when no trial completed."""
    done = ranked(trials, direction)
    return done[0] if done else None


def trial_rows(trials: Iterable[Any], direction: str, limit: int | None = None) -> list[dict[str, Any]]:
    """Finished trials ranked best first (ties: earlier trial): rank, number, state, value (the first
    objective's), values (every objective's, in a study of several, else None), std,
    params, fit time, epochs, failure reason. Unranked (pruned, failed) trials follow by number."""
    finished = [t for t in trials if t.state.is_finished()]
    rows = []
    for rank, t in enumerate(sorted(finished, key=rank_key(direction)), start=1):
        ua = t.user_attrs
        fit_time = ua.get(TRIAL.FIT_TIME)
        if fit_time is None and t.datetime_start and t.datetime_complete:
            fit_time = (t.datetime_complete - t.datetime_start).total_seconds()
        rows.append({
            "rank": rank if t.state.name == "COMPLETE" else None,
            "number": t.number, "state": t.state.name, "value": primary_value(t),
            "values": list(t.values) if t.values and len(t.values) > 1 else None,
            "std": ua.get(TRIAL.STD_SCORE), "params": dict(t.params), "fit_time": fit_time,
            "epochs": ua.get(TRIAL.EPOCHS), "reason": ua.get(TRIAL.FAILURE),
        })
    return rows[:limit] if limit else rows
