"""Running a study end to end: validate, open storage, run an engine, store the best model and its
test score. Both engines share everything here; only the search itself differs.

Order matters for "nothing half-written": the study file, the data and the storage URL are all
checked before the first write to the database.
"""

from __future__ import annotations

import os
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Union

from hpsearch.config import StudyConfig, load_study_config
from hpsearch.data import PreparedData, prepare_data
from hpsearch.errors import StudyFailedError, UserError
from hpsearch.progress import SearchProgress
from hpsearch.records import STUDY, TRIAL, clean_attr
from hpsearch.space import SearchSpace

__all__ = ["StudyContext", "StudyResult", "run_study", "prepare_context", "trial_rows"]



@dataclass
class StudyContext:
    cfg: StudyConfig
    space: SearchSpace
    data: PreparedData
    study: Any
    storage: Any
    storage_url: str
    artifact_store: Any
    builder: Callable[..., Any]
    builder_extra: dict[str, Any]
    metric: str
    direction: str
    progress: SearchProgress
    artifacts: Optional[str] = None  # the artifact location given (--artifacts / study file), if any
    engine_info: dict[str, Any] = field(default_factory=dict)


@dataclass
class StudyResult:
    study_name: str
    storage: str  # redacted
    engine: str
    metric: str
    direction: str
    best_params: dict[str, Any]
    best_value: Optional[float]
    best_trial: Optional[int]
    test_score: Optional[float]
    test_metrics: dict[str, float]
    n_complete: int
    n_failed: int
    n_pruned: int
    wall_time: float
    already_complete: bool
    rows: list[dict[str, Any]]
    model_artifact: Optional[str] = None
    artifacts: str = ""

    def to_dict(self) -> dict[str, Any]:
        return clean_attr(self.__dict__)


def _budget_overrides(n_trials: Optional[int], epochs: Optional[int]) -> dict[str, Any]:
    return {"search.n_trials": n_trials, "train.epochs": epochs}


def _load_cfg(config: Union[str, os.PathLike[str], StudyConfig], overrides: dict[str, Any]) -> StudyConfig:
    if isinstance(config, StudyConfig):
        from hpsearch.config import apply_overrides

        return apply_overrides(config, overrides)  # validated, unlike setattr
    return load_study_config(config, overrides)


def prepare_context(
    config: Union[str, os.PathLike[str], StudyConfig],
    *,
    storage: Optional[str] = None,
    artifacts: Optional[str] = None,
    n_trials: Optional[int] = None,
    epochs: Optional[int] = None,
    progress: bool = True,
    workers: int = 1,
    heartbeat: bool = False,
    create: bool = True,
) -> StudyContext:
    """Validate everything, then open (or create) the study. Nothing is written before the checks pass."""
    import optuna

    from hpsearch.builders import builder_accepts, resolve_builder
    from hpsearch.metrics import default_metric, direction_of
    from hpsearch.storage import artifact_location, artifact_store_for, open_storage, resolve_storage_url

    cfg = _load_cfg(config, _budget_overrides(n_trials, epochs))
    space = cfg.search_space()
    url = resolve_storage_url(storage, cfg.storage)
    data = prepare_data(cfg)  # raises DataError before anything is written
    metric = cfg.search.metric or default_metric(data.task)  # metric vs task: checked by prepare_data
    direction = cfg.search.direction or direction_of(metric)
    builder = resolve_builder(cfg.model.builder)
    accepted = builder_accepts(builder)
    extra: dict[str, Any] = {}
    if cfg.train.steps_per_execution > 1 and (accepted is None or "steps_per_execution" in accepted):
        extra["steps_per_execution"] = cfg.train.steps_per_execution
    art_loc = artifacts or cfg.artifacts
    store = artifact_store_for(url, art_loc)  # may refuse (bad path, s3 without boto3): before any write
    st = open_storage(url, heartbeat=heartbeat, workers=workers)  # raises StorageError if unreachable

    existing = None
    try:
        existing = optuna.load_study(study_name=cfg.name, storage=st)
    except KeyError:
        existing = None
    if existing is not None:
        prev_engine = existing.user_attrs.get(STUDY.ENGINE)
        if prev_engine and prev_engine != cfg.search.engine:
            raise UserError(
                f"study {cfg.name!r} already exists in the storage with engine {prev_engine}; "
                f"use another name: (or delete it: optuna delete-study --study-name {cfg.name} --storage URL)"
            )
        prev_metric = existing.user_attrs.get(STUDY.METRIC)
        if prev_metric and prev_metric != metric:
            raise UserError(
                f"study {cfg.name!r} exists with metric {prev_metric}; its trial values cannot mix with {metric}:"
                " give the study a new name"
            )
        prev_dir = existing.direction.name.lower()
        if prev_dir != direction:
            raise UserError(f"study {cfg.name!r} exists with direction {prev_dir}; it cannot change to {direction}")
    elif not create:
        raise UserError(f"study {cfg.name!r} does not exist in the storage yet; start it with `hpsearch run FILE`")

    sampler = pruner = None
    if cfg.search.engine == "optuna":
        from hpsearch.optuna_search import make_pruner, make_sampler

        sampler = make_sampler(cfg, space)
        pruner = make_pruner(cfg)
    study = optuna.create_study(storage=st, study_name=cfg.name, direction=direction, load_if_exists=True,
                                sampler=sampler, pruner=pruner)
    if existing is None or STUDY.ENGINE not in existing.user_attrs:  # new, or created outside hpsearch
        attrs = {
            STUDY.VERSION: _version(), STUDY.ENGINE: cfg.search.engine, STUDY.METRIC: metric,
            STUDY.DIRECTION: direction, STUDY.TASK: data.task, STUDY.CONFIG: cfg.to_yaml(),
            STUDY.DATA_SUMMARY: data.summary, STUDY.SPACE: {k: repr(v) for k, v in space.params.items()},
            "builder": cfg.model.builder, "artifacts": artifact_location(url, art_loc), "base_dir": cfg.base_dir,
        }
        for k, v in attrs.items():
            study.set_user_attr(k, clean_attr(v))
        with warnings.catch_warnings():  # experimental in Optuna, stable in practice since 3.2
            warnings.simplefilter("ignore")
            study.set_metric_names([metric])  # the dashboard labels its axes with it
    prog = SearchProgress(cfg.search.n_trials, cfg.name, enabled=progress, direction=direction)
    ctx = StudyContext(cfg=cfg, space=space, data=data, study=study, storage=st, storage_url=url,
                       artifact_store=store, builder=builder, builder_extra=extra, metric=metric,
                       direction=direction, progress=prog, artifacts=art_loc)
    if cfg.search.engine in ("grid", "random"):
        from hpsearch.sklearn_search import planned_candidates

        prog.total = planned_candidates(ctx)  # the grid's size; random capped at it
    return ctx


def _version() -> str:
    from hpsearch import __version__

    return __version__


def _counts(study: Any) -> tuple[int, int, int, int]:
    from optuna.trial import TrialState

    c = {s: 0 for s in TrialState}
    for t in study.get_trials(deepcopy=False):
        c[t.state] += 1
    return c[TrialState.COMPLETE], c[TrialState.FAIL], c[TrialState.PRUNED], c[TrialState.RUNNING]


def _is_complete(ctx: StudyContext) -> bool:
    """Has the search reached its budget (counted in storage, so across workers and runs)?"""
    from optuna.trial import TrialState

    cfg = ctx.cfg
    trials = ctx.study.get_trials(deepcopy=False)
    if cfg.search.engine in ("grid", "random"):
        from hpsearch.sklearn_search import planned_candidates

        planned = planned_candidates(ctx)
        finished = {t.user_attrs.get(TRIAL.CANDIDATE) for t in trials
                    if t.state in (TrialState.COMPLETE, TrialState.FAIL)}
        return planned is not None and len(finished) >= planned
    if cfg.search.engine == "halving":
        return bool(ctx.study.user_attrs.get(STUDY.COMPLETE))
    done = sum(1 for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED))
    return cfg.search.n_trials is not None and done >= cfg.search.n_trials


def run_study(
    config: Union[str, os.PathLike[str], StudyConfig],
    *,
    storage: Optional[str] = None,
    artifacts: Optional[str] = None,
    resume: bool = False,
    n_trials: Optional[int] = None,
    epochs: Optional[int] = None,
    progress: bool = True,
) -> StudyResult:
    """Run a study file (or a :class:`StudyConfig`) to its budget and return the result.

    The scikit-learn engines refuse to silently restart an interrupted study: pass ``resume=True``
    to continue it (stored candidates are skipped). The Optuna engine always continues up to its
    budget. A study that already reached its budget is not run again.
    """
    start = time.monotonic()
    ctx = prepare_context(config, storage=storage, artifacts=artifacts, n_trials=n_trials, epochs=epochs,
                          progress=progress)
    cfg, study = ctx.cfg, ctx.study
    already = _is_complete(ctx)
    n_done = sum(_counts(study)[:3])
    if not already and n_done and cfg.search.engine != "optuna" and not resume:
        raise UserError(
            f"study {cfg.name!r} was interrupted with {n_done} candidates stored; pass --resume to continue it"
            " (stored candidates are skipped), or give the study a new name"
        )
    if not already:
        ctx.progress.skip(n_done, _best_value(study))
        with ctx.progress:
            if cfg.search.engine == "optuna":
                from hpsearch.optuna_search import run_optuna_search

                run_optuna_search(ctx)
            else:
                from hpsearch.sklearn_search import run_sklearn_search

                run_sklearn_search(ctx)
        if cfg.search.engine == "halving":
            study.set_user_attr(STUDY.COMPLETE, True)
    finalize(ctx)
    return make_result(ctx, time.monotonic() - start, already)


def _best_value(study: Any) -> Optional[float]:
    try:
        return float(study.best_value)
    except ValueError:
        return None


def finalize(ctx: StudyContext) -> None:
    """Make sure the best trial's model is stored, and score it once on the held-out test split."""
    import numpy as np

    from hpsearch.best import load_model_artifacts, save_model_artifacts
    from hpsearch.metrics import score_predictions

    study = ctx.study
    try:
        best = study.best_trial
    except ValueError:
        raise StudyFailedError(f"study {study.study_name!r} has no completed trial; see `hpsearch status`") from None
    attrs = study.user_attrs
    if attrs.get(STUDY.BEST_TRIAL) == best.number and attrs.get(STUDY.BEST_MODEL_ARTIFACT):
        return  # already done by an earlier run (or another worker)
    model = None
    mid, pid = best.user_attrs.get(TRIAL.MODEL_ARTIFACT), best.user_attrs.get(TRIAL.PREPROCESS_ARTIFACT)
    if mid and pid:
        model, _pre = load_model_artifacts(ctx.artifact_store, mid, pid)
    else:
        # scikit-learn engines: CV fold models are not kept; refit the best candidate once
        from hpsearch.sklearn_search import refit_best

        params = {k: v for k, v in best.params.items()}
        if best.user_attrs.get(TRIAL.N_RESOURCES):  # halving: the best was trained for its rung's epochs
            params["epochs"] = int(best.user_attrs[TRIAL.N_RESOURCES])
        t0 = time.monotonic()
        est = refit_best(ctx, params)
        model = est.model_
        mid, pid = save_model_artifacts(ctx.artifact_store, study, model, ctx.data.preprocessor)
        study.set_user_attr("refit_time", time.monotonic() - t0)
        study.set_user_attr("refit_epochs", int(len(est.history_.get("loss", []))))
    test: dict[str, float] = {}
    if len(ctx.data.y_test):
        raw = np.asarray(model.predict(ctx.data.X_test, batch_size=1024, verbose=0))
        test[ctx.metric] = score_predictions(ctx.metric, ctx.data.task, ctx.data.y_test, raw)
        extra = ["accuracy"] if ctx.data.task == "classification" else ["mse", "mae", "r2"]
        for m in extra:
            if m not in test:
                test[m] = score_predictions(m, ctx.data.task, ctx.data.y_test, raw)
    for k, v in {
        STUDY.BEST_TRIAL: best.number, STUDY.BEST_MODEL_ARTIFACT: mid, STUDY.BEST_PREPROCESS_ARTIFACT: pid,
        STUDY.TEST_SCORE: test.get(ctx.metric), STUDY.TEST_METRIC: ctx.metric, "test_metrics": test,
    }.items():
        study.set_user_attr(k, clean_attr(v))
    if ctx.cfg.search.engine == "optuna":
        # the previous best was protected while it was the study's best; now it may go
        from hpsearch.optuna_search import prune_stored_models

        prune_stored_models(ctx)


def trial_rows(study: Any, direction: str, limit: Optional[int] = None) -> list[dict[str, Any]]:
    """Finished trials ranked best first: rank, number, state, value, std, params, fit time, epochs."""
    from optuna.trial import TrialState

    trials = [t for t in study.get_trials(deepcopy=False) if t.state.is_finished()]
    sign = -1.0 if direction == "maximize" else 1.0

    def key(t: Any) -> tuple[int, float]:
        if t.state == TrialState.COMPLETE and t.value is not None:
            return (0, sign * t.value)
        return (1, float(t.number))

    rows = []
    for rank, t in enumerate(sorted(trials, key=key), start=1):
        ua = t.user_attrs
        fit_time = ua.get(TRIAL.FIT_TIME)
        if fit_time is None and t.datetime_start and t.datetime_complete:
            fit_time = (t.datetime_complete - t.datetime_start).total_seconds()
        rows.append({
            "rank": rank if t.state == TrialState.COMPLETE else None,
            "number": t.number, "state": t.state.name, "value": t.value,
            "std": ua.get("std_score"), "params": dict(t.params), "fit_time": fit_time,
            "epochs": ua.get(TRIAL.EPOCHS), "reason": ua.get(TRIAL.FAILURE),
        })
    return rows[:limit] if limit else rows


def make_result(ctx: StudyContext, wall: float, already: bool) -> StudyResult:
    from hpsearch.storage import artifact_location, redact_url

    study = ctx.study
    n_c, n_f, n_p, _ = _counts(study)
    attrs = study.user_attrs
    try:
        best = study.best_trial
        best_params, best_value, best_number = dict(best.params), float(best.value), best.number
    except ValueError:
        best_params, best_value, best_number = {}, None, None
    return StudyResult(
        study_name=study.study_name, storage=redact_url(ctx.storage_url), engine=ctx.cfg.search.engine,
        metric=ctx.metric, direction=ctx.direction, best_params=best_params, best_value=best_value,
        best_trial=best_number, test_score=attrs.get(STUDY.TEST_SCORE), test_metrics=attrs.get("test_metrics", {}),
        n_complete=n_c, n_failed=n_f, n_pruned=n_p, wall_time=wall, already_complete=already,
        rows=trial_rows(study, ctx.direction), model_artifact=attrs.get(STUDY.BEST_MODEL_ARTIFACT),
        artifacts=artifact_location(ctx.storage_url, ctx.artifacts),
    )
