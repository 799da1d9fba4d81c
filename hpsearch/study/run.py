"""Running a study end to end: validate, open storage, run the engine, store the best model and its
test score. Engines are found through the registry; nothing here names one.

Order matters for "nothing half-written": the study file, the data, the artifact store and the
storage URL are all checked before the first write to the database.
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hpsearch.data.prepare import check_input_rank, prepare_data
from hpsearch.data.snapshot import RawParts, fingerprint, load_raw
from hpsearch.engines.base import get_engine
from hpsearch.engines.ensemble_refit import refit_ensemble
from hpsearch.engines.warmstart import check_warm_start_source
from hpsearch.errors import ConfigError, StudyFailedError, UserError
from hpsearch.execution.control import Control, LoopSettings, heartbeat_settings, install_signals
from hpsearch.execution.loop import hard_stop
from hpsearch.execution.stoprules import closing_reason
from hpsearch.metrics import default_metric, direction_of
from hpsearch.models.builders import builder_accepts, resolve_builder
from hpsearch.models.scoring import test_scores
from hpsearch.models.transfer import check_inputs, load_source, transfer_builder
from hpsearch.pareto import chosen_trial, front_rows
from hpsearch.records import STUDY, TRIAL, clean_attr, primary_value, state_counts, trial_rows
from hpsearch.spec.config import StudyConfig
from hpsearch.storage import open_storage, redact_url, resolve_storage_url
from hpsearch.storage.artifacts import (
    artifact_location,
    artifact_store_for,
    check_store_writable,
    load_model_artifacts,
    save_model_artifacts,
)
from hpsearch.storage.keep import keep_best_models
from hpsearch.study.batchfind import resolve_batch_size
from hpsearch.study.decisions import announce_decisions
from hpsearch.study.lrfind import resolve_auto
from hpsearch.study.selection import note_selection
from hpsearch.study.snapshot import builder_file, check_snapshot, record_snapshot
from hpsearch.study.validate import apply_overrides, load_study_config
from hpsearch.tracking.hooks import attach_callbacks, end_trackers
from hpsearch.trials.context import NullObserver, Observer, RunContext

__all__ = ["StudyResult", "run_study", "run_engine", "prepare_context", "finalize", "make_result", "load_config"]


@dataclass
class StudyResult:
    study_name: str
    storage: str  # redacted
    engine: str
    metric: str
    direction: str
    best_params: dict[str, Any]
    best_value: float | None
    best_trial: int | None
    test_score: float | None
    test_metrics: dict[str, float]
    n_complete: int
    n_failed: int
    n_pruned: int
    wall_time: float
    already_complete: bool
    rows: list[dict[str, Any]]
    model_artifact: str | None = None
    artifacts: str = ""
    stopped_by: str = ""  # the rule that ended the search: budget, timeout, patience or target
    objectives: list[str] | None = None  # several objectives: their names (best_* is the default pick)
    front: list[dict[str, Any]] | None = None  # several objectives: the Pareto front (pareto.front_rows)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = clean_attr(self.__dict__)
        return out


def load_config(config: str | os.PathLike[str] | StudyConfig, n_trials: int | None = None,
                epochs: int | None = None) -> StudyConfig:
    """A validated study config from a file or a StudyConfig, with the budget overrides applied."""
    given = {"search.n_trials": n_trials, "train.epochs": epochs}
    overrides = {k: v for k, v in given.items() if v is not None}  # None: not given
    if isinstance(config, StudyConfig):
        return apply_overrides(config, overrides)  # validated, unlike setattr
    return load_study_config(config, overrides)


def objectives_for(cfg: StudyConfig, task: str) -> list[tuple[str, str]]:
    """(name, direction) of each objective: ``search.metric`` (default: the task's metric), each in
    its own direction unless ``search.direction`` says otherwise."""
    names = cfg.search.metrics or [default_metric(task)]
    given = cfg.search.direction
    dirs = [given] if isinstance(given, str) else given or [direction_of(n) for n in names]
    return list(zip(names, dirs))


def _check_existing(existing: Any, cfg: StudyConfig, objectives: list[tuple[str, str]]) -> None:
    """A stored study of the same name must have been made by the same engine, metrics and directions."""
    metric = ", ".join(n for n, _ in objectives)
    direction = ", ".join(d for _, d in objectives)
    prev_engine = existing.user_attrs.get(STUDY.ENGINE)
    if prev_engine and prev_engine != cfg.search.engine:
        raise UserError(
            f"study {cfg.name!r} already exists in the storage with engine {prev_engine}; "
            f"use another name (or delete it: hpsearch delete {cfg.name} --storage URL --yes)"
        )
    prev_metric = ", ".join(existing.user_attrs.get(STUDY.OBJECTIVES) or [existing.user_attrs.get(STUDY.METRIC) or ""])
    if prev_metric and prev_metric != metric:
        raise UserError(
            f"study {cfg.name!r} exists with metric {prev_metric}; its trial values cannot mix with {metric}:"
            " give the study a new name"
        )
    prev_dir = ", ".join(d.name.lower() for d in existing.directions)
    if prev_dir != direction:
        raise UserError(f"study {cfg.name!r} exists with direction {prev_dir}; it cannot change to {direction}")


def _open_study(cfg: StudyConfig, st: Any, objectives: list[tuple[str, str]], create: bool,
                options: dict[str, Any]) -> tuple[Any, bool]:
    """(the study, whether it is new to hpsearch)."""
    import optuna
    from optuna.study import StudyDirection

    try:
        existing = optuna.load_study(study_name=cfg.name, storage=st)
    except KeyError:
        existing = None
    if existing is not None:
        _check_existing(existing, cfg, objectives)
    elif not create:
        raise UserError(f"study {cfg.name!r} does not exist in the storage yet; start it with `hpsearch run FILE`")
    study = optuna.create_study(storage=st, study_name=cfg.name, load_if_exists=True,
                                directions=[StudyDirection[d.upper()] for _, d in objectives], **options)
    return study, existing is None or STUDY.ENGINE not in existing.user_attrs


def _version() -> str:
    from hpsearch import __version__

    return __version__


def _record_new(study: Any, cfg: StudyConfig, data: Any, space: Any, objectives: list[tuple[str, str]],
                artifacts: str) -> None:
    """The attributes of a study new to hpsearch: what made it, and where its files go."""
    (metric, direction), names = objectives[0], [n for n, _ in objectives]
    attrs: dict[str, Any] = {
        STUDY.VERSION: _version(), STUDY.ENGINE: cfg.search.engine, STUDY.METRIC: metric,
        STUDY.DIRECTION: direction, STUDY.TASK: data.task, STUDY.CONFIG: cfg.to_yaml(),
        STUDY.DATA_SUMMARY: data.summary, STUDY.SPACE: _space_record(space),
        STUDY.BUILDER: cfg.model.builder, STUDY.BUILDER_FILE: builder_file(cfg.model.builder),
        STUDY.ARTIFACTS: artifacts, STUDY.BASE_DIR: cfg.base_dir,
    }
    if len(objectives) > 1:
        attrs[STUDY.OBJECTIVES] = names
    for k, v in attrs.items():
        study.set_user_attr(k, clean_attr(v))
    with warnings.catch_warnings():  # experimental in Optuna, stable in practice since 3.2
        warnings.simplefilter("ignore")
        study.set_metric_names(names)  # the dashboard labels its axes with them


def _space_record(space: Any) -> dict[str, str]:
    """The space as the study records it (``STUDY.SPACE``) and a later run compares it."""
    return {k: repr(v) for k, v in space.params.items()}


def _check_stored_space(study: Any, space: Any) -> None:
    """A parameter the study stored with another kind of distribution than this space gives it (an
    int range made a list of choices, other choices, log scale switched) is refused in one line.
    Optuna's storage refuses it at each new trial (every trial failed, or a traceback on --resume);
    a range changed within its kind is allowed, as Optuna allows it. Read only when the space differs
    from the one the study recorded."""
    from optuna.distributions import check_distribution_compatibility

    if study.user_attrs.get(STUDY.SPACE) == _space_record(space):
        return
    new, seen = space.to_optuna_distributions(), set()
    for trial in study.get_trials(deepcopy=False):
        for name, old in trial.distributions.items():
            if name in new and name not in seen:
                seen.add(name)
                try:
                    check_distribution_compatibility(old, new[name])
                except ValueError as e:
                    raise ConfigError(f"space: parameter {name!r} was stored by study {study.study_name!r} as"
                                      f" {old}, this file gives {new[name]} ({str(e).rstrip('.')}); keep what it"
                                      " was, or give the study a new name") from None
        if len(seen) == len(new):
            return


def prepare_context(
    config: str | os.PathLike[str] | StudyConfig,
    *,
    storage: str | None = None,
    artifacts: str | None = None,
    n_trials: int | None = None,
    epochs: int | None = None,
    observer: Observer | None = None,
    workers: int = 1,
    create: bool = True,
    worker_index: int | None = 0,
    callbacks: list[Callable[[Any, Any], None]] | None = None,
    keras_callbacks: list[Any] | None = None,
    claim: Callable[[Any, Any, str, Observer], int | None] | None = None,
    raws: RawParts | None = None,
) -> RunContext:
    """Validate everything, then open (or create) the study. Nothing is written before the checks pass.

    ``worker_index``: 0 for one process (the sampler keeps ``search.seed``), the index under
    ``run --workers``, None for a worker started by hand (fresh entropy). ``callbacks`` and
    ``keras_callbacks``: see :func:`run_study`.
    ``claim(study, storage, url, observer)``: called once the study is open, before anything trains;
    returns this process's launch number (a worker's GPU slot, :mod:`hpsearch.workers.slots`).
    ``raws``: the data's rows already read (a worker that joined by name: the study's snapshot); by
    default they are read from the study's sources. The data is fingerprinted and must match the
    study's snapshot, which the first process writes."""
    cfg = load_config(config, n_trials, epochs)
    engine = get_engine(cfg.search.engine)
    space = cfg.search_space()
    url = resolve_storage_url(storage, cfg.storage)
    raws = raws if raws is not None else load_raw(cfg)  # None: a folder streamed from disk
    data = prepare_data(cfg, engine.cv_folds(cfg), raws)  # raises DataError before anything is written
    fp = fingerprint(cfg, raws)  # what the study's snapshot records (folders: each file's hash)
    objectives = objectives_for(cfg, data.task)  # metric vs task: checked by prepare_data
    metric, direction = objectives[0]
    builder = resolve_builder(cfg.model.builder)
    check_input_rank(builder, data)  # images to a builder of table rows: refused before any write
    if cfg.model.init_from is not None:  # reuse trained layers: loaded once, checked before any write
        builder = with_transfer(cfg, builder, data, storage)
    accepted = builder_accepts(builder)
    extra: dict[str, Any] = {}
    if cfg.train.steps_per_execution > 1 and (accepted is None or "steps_per_execution" in accepted):
        extra["steps_per_execution"] = cfg.train.steps_per_execution
    art_loc = artifacts or cfg.artifacts
    store = artifact_store_for(url, art_loc)  # may refuse (bad path, s3 without boto3): before any write
    check_store_writable(store)
    interval, grace = heartbeat_settings()
    check_warm_start_source(cfg, url)  # a missing source: refused before the SQLite file is created
    st = open_storage(url, workers=workers, heartbeat=engine.supports_workers, heartbeat_interval=interval,
                      grace_period=grace)  # raises StorageError if unreachable
    check_warm_start_source(cfg, url, st)  # ... and before this run's study is created
    options = engine.study_options(cfg, space, worker_index)
    study, new = _open_study(cfg, st, objectives, create, options)
    check_snapshot(study, fp)  # other data than the study's: refused before anything is written
    if not new:
        _check_stored_space(study, space)  # a parameter of another kind: refused before anything is written
    launch = claim(study, st, url, observer or NullObserver()) if claim is not None else None
    auto_batch = cfg.train.batch_size == "auto"
    auto_ranges = [n for n, p in space.params.items() if getattr(p, "auto", False)]
    cfg = resolve_batch_size(cfg, space, data, builder, study)  # `batch_size: auto`: found once per study
    space = resolve_auto(cfg, space, data, builder, study, store)  # `float: auto`: a range test, once per study
    if new:
        _record_new(study, cfg, data, space, objectives, artifact_location(url, art_loc))
    ctx = RunContext(cfg=cfg, space=space, data=data, study=study, storage=st, storage_url=url,
                     artifact_store=store, builder=builder, builder_extra=extra, metric=metric,
                     direction=direction, engine=engine, observer=observer or NullObserver(), artifacts=art_loc,
                     worker_index=worker_index, objectives=objectives, launch=launch)
    record_snapshot(ctx, fp)  # the first process writes the data snapshot once: one line and an attribute
    attach_callbacks(ctx, callbacks, keras_callbacks)  # tracking:, search.callbacks, then these
    ctx.observer.total, ctx.observer.label, ctx.observer.direction = engine.plan(ctx), cfg.name, direction
    announce_decisions(ctx, auto_batch, auto_ranges)  # no silent choices: one line and an attribute each
    return ctx


def with_transfer(cfg: StudyConfig, builder: Any, data: Any, storage: str | None) -> Any:
    """The builder whose models start from ``model.init_from``'s stored layers."""
    spec = cfg.model.init_from
    assert spec is not None
    source = load_source(cfg, storage)
    check_inputs(source, tuple(data.X_train.shape[1:]), spec.study)
    return transfer_builder(builder, source, spec.layers, spec.freeze_epochs, spec.study)


def _best_value(study: Any) -> float | None:
    """The chosen trial's value on the first objective (None before any trial completed)."""
    try:
        return primary_value(chosen_trial(study))
    except ValueError:
        return None


def run_engine(ctx: RunContext, *, handle_signals: bool = False) -> None:
    """Run the engine once; with ``handle_signals`` the first SIGINT/SIGTERM stops it gracefully
    (the running trial is failed and re-queued) and a second one, or the deadline, at once."""
    ctl = ctx.control = Control()
    undo: Callable[[], None] = lambda: None  # noqa: E731
    if handle_signals and ctx.engine.stops_gracefully:
        deadline = LoopSettings.from_env().deadline
        undo = install_signals(ctl, hard_stop(ctl, lambda: ctx, deadline, 130), deadline)
    try:
        ctx.engine.run(ctx)
    finally:
        ctl.exited = True
        undo()


def run_study(
    config: str | os.PathLike[str] | StudyConfig,
    *,
    storage: str | None = None,
    artifacts: str | None = None,
    resume: bool = False,
    n_trials: int | None = None,
    epochs: int | None = None,
    observer: Observer | None = None,
    handle_signals: bool = False,
    callbacks: list[Callable[[Any, Any], None]] | None = None,
    keras_callbacks: list[Any] | None = None,
) -> StudyResult:
    """Run a study file (or a :class:`StudyConfig`) to its budget in this process and return the result.

    Engines that need it refuse to silently restart an interrupted study: pass ``resume=True`` to
    continue it (stored candidates are skipped). The Optuna engine always continues up to its
    budget. A study that already reached its budget is not run again. A graceful stop (SIGINT with
    ``handle_signals``) raises KeyboardInterrupt after the running trial is re-queued.

    ``callbacks``: ``f(study, frozen_trial)`` after each finished trial (Optuna's callback signature;
    ``study.stop()`` ends the search). ``keras_callbacks``: added to every trial's fit (trials then
    train one at a time: a pack runs no per-member Keras callback).
    """
    start = time.monotonic()
    ctx = prepare_context(config, storage=storage, artifacts=artifacts, n_trials=n_trials, epochs=epochs,
                          observer=observer, callbacks=callbacks, keras_callbacks=keras_callbacks)
    already = ctx.engine.is_complete(ctx)
    counts = state_counts(ctx.study.get_trials(deepcopy=False))
    n_done = counts["complete"] + counts["pruned"] + counts["fail"]
    if not already and n_done and ctx.engine.needs_resume_flag and not resume:
        raise UserError(
            f"study {ctx.cfg.name!r} was interrupted with {n_done} candidates stored; pass --resume to continue it"
            " (stored candidates are skipped), or give the study a new name"
        )
    if not already:
        ctx.observer.begin(n_done, _best_value(ctx.study))
        try:
            run_engine(ctx, handle_signals=handle_signals)
        finally:
            ctx.observer.end()
        if ctx.control is not None and ctx.control.stopping:
            raise KeyboardInterrupt(ctx.control.stop_reason)
    finalize(ctx)
    refit_ensemble(ctx)  # search.ensemble with a scikit-learn engine: the top K's models
    return make_result(ctx, time.monotonic() - start, already)


def _stored_model(ctx: RunContext, best: Any, force: bool) -> tuple[Any, str | None, str | None]:
    """(model, model id, preprocessing id) of the best trial's stored model; (None, None, None) when
    it has none, or (``force``: a repair) when its file cannot be read any more."""
    mid, pid = best.user_attrs.get(TRIAL.MODEL_ARTIFACT), best.user_attrs.get(TRIAL.PREPROCESS_ARTIFACT)
    if not (mid and pid) or mid in set(ctx.study.user_attrs.get(STUDY.REMOVED_ARTIFACTS) or []):
        return None, None, None  # none kept, or removed on purpose (keep_models) before it was named best
    try:
        model, _pre = load_model_artifacts(ctx.artifact_store, mid, pid)
    except UserError:
        if not force:
            raise
        return None, None, None
    return model, mid, pid


def finalize(ctx: RunContext, force: bool = False) -> None:
    """Make sure the best trial's model is stored, and score it once on the held-out test split.

    A best trial without a stored model (the scikit-learn engines keep no fold model; a study
    written by an older release, a deleted artifact, a crash) is trained once more and stored:
    running the study again repairs it. ``force`` (``hpsearch best STUDY --refit``) redoes it even
    when a model was recorded, and retrains when that model's file cannot be read."""
    study = ctx.study
    try:
        best = chosen_trial(study)  # several objectives: the default pick of the Pareto front
    except ValueError:
        raise StudyFailedError(f"study {study.study_name!r} has no completed trial; see `hpsearch status`") from None
    attrs = study.user_attrs
    if not force and attrs.get(STUDY.BEST_TRIAL) == best.number and attrs.get(STUDY.BEST_MODEL_ARTIFACT):
        return  # already done by an earlier run (or another worker)
    model, mid, pid = _stored_model(ctx, best, force)
    if model is None:  # no model kept for it: train the best candidate once
        if force or not ctx.engine.refits_ensemble:  # an engine that keeps a model per trial lost one
            ctx.observer.message(f"hpsearch: the best trial {best.number} has no stored model: training its"
                                 " configuration once more to store it and score it on test")
        t0 = time.monotonic()
        refit = ctx.engine.refit(ctx, dict(best.params), best)
        model = refit.model
        mid, pid = save_model_artifacts(ctx.artifact_store, study, model, refit.preprocessor)
        study.set_user_attr(STUDY.REFIT_TIME, time.monotonic() - t0)
        study.set_user_attr(STUDY.REFIT_EPOCHS, refit.epochs)
    test = test_scores(model, ctx.data, ctx.metric) if len(ctx.data.y_test) else {}
    for k, v in {
        STUDY.BEST_TRIAL: best.number, STUDY.BEST_MODEL_ARTIFACT: mid, STUDY.BEST_PREPROCESS_ARTIFACT: pid,
        STUDY.TEST_SCORE: test.get(ctx.metric), STUDY.TEST_METRIC: ctx.metric, STUDY.TEST_METRICS: test,
    }.items():
        study.set_user_attr(k, clean_attr(v))
    note_selection(ctx, test.get(ctx.metric))  # several trials within noise of the best: said, once
    # the previous best was protected while it was the study's best; now it may go (a store that
    # refuses a removal must not fail a finished study: it is said, and the next run tries again)
    try:
        keep_best_models(study, ctx.artifact_store, ctx.direction, ctx.cfg.search.keep_models)
    except Exception as exc:  # noqa: BLE001 - disk hygiene only
        ctx.observer.message(f"hpsearch: old models were not removed ({type(exc).__name__}: {exc})")
    end_trackers(ctx)  # the trackers' record of the study: its best trial and test scores


def make_result(ctx: RunContext, wall: float, already: bool) -> StudyResult:
    study = ctx.study
    trials = study.get_trials(deepcopy=False)
    counts = state_counts(trials)
    attrs = study.user_attrs
    try:
        best = chosen_trial(study)
        best_params, best_value, best_number = dict(best.params), primary_value(best), best.number
    except ValueError:
        best_params, best_value, best_number = {}, None, None
    return StudyResult(
        study_name=study.study_name, storage=redact_url(ctx.storage_url), engine=ctx.engine.name,
        metric=ctx.metric, direction=ctx.direction, best_params=best_params, best_value=best_value,
        best_trial=best_number, test_score=attrs.get(STUDY.TEST_SCORE), test_metrics=attrs.get(STUDY.TEST_METRICS, {}),
        n_complete=counts["complete"], n_failed=counts["fail"], n_pruned=counts["pruned"], wall_time=wall,
        already_complete=already, rows=trial_rows(trials, ctx.direction),
        model_artifact=attrs.get(STUDY.BEST_MODEL_ARTIFACT),
        artifacts=artifact_location(ctx.storage_url, ctx.artifacts), stopped_by=closing_reason(ctx, already),
        objectives=[n for n, _ in ctx.objectives] if ctx.several else None,
        front=front_rows(study, trials) if ctx.several else None,
    )

