"""The Optuna engine: samplers, pruners and the trial runner.

The runner follows DESIGN.md's performance rules: data is prepared once per process (the
``TrialRunner`` holds padded, fixed-shape arrays), every trial clears the Keras session, the
training set is padded to a whole number of batches (no recompile for a partial last batch) and
the validation set is evaluated as one batch. Storage writes are one row per epoch (the
intermediate value) and the model files once per finished trial, only when it ranks in the best K.
"""

from __future__ import annotations

import math
import os
import socket
import time
from typing import TYPE_CHECKING, Any, Optional

import numpy as np

from hpsearch.errors import StudyFailedError
from hpsearch.records import TRIAL, clean_attr

if TYPE_CHECKING:  # pragma: no cover
    from hpsearch.config import StudyConfig
    from hpsearch.space import SearchSpace
    from hpsearch.study import StudyContext

__all__ = ["make_sampler", "make_pruner", "TrialRunner", "run_optuna_search", "TrialDiverged"]

MAX_SINGLE_VALID_BATCH = 32768


class TrialDiverged(RuntimeError):
    """Training produced a NaN/inf loss."""


def make_sampler(cfg: "StudyConfig", space: "SearchSpace") -> Any:
    import optuna

    s = cfg.search
    seed = s.seed
    if s.sampler == "tpe":
        return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=False,
                                          n_startup_trials=min(10, max(3, (s.n_trials or 30) // 5)))
    if s.sampler == "cmaes":
        return optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False)
    if s.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if s.sampler == "qmc":
        return optuna.samplers.QMCSampler(seed=seed, warn_independent_sampling=False)
    return optuna.samplers.GridSampler(space.to_optuna_grid(), seed=seed)


def _min_resource(cfg: "StudyConfig") -> int:
    epochs = cfg.train.epochs
    return cfg.search.min_resource or max(1, min(epochs, max(1, epochs // 20)))


def pruning_steps(cfg: "StudyConfig") -> Optional[set[int]]:
    """The reported steps at which the configured pruner can prune (None: any step).

    Successive halving and Hyperband decide only at rung steps ``min_resource * factor**k`` (every
    Hyperband bracket's rungs are among them); between rungs ``should_prune()`` is always False, so
    the trial runner does not ask (each ask reads the trial back from storage).
    """
    s = cfg.search
    if s.pruner == "none":
        return set()
    if s.pruner == "median":
        return None
    steps, r = set(), _min_resource(cfg)
    while r < cfg.train.epochs:
        steps.add(r)
        r *= s.factor
    return steps


def make_pruner(cfg: "StudyConfig") -> Any:
    import optuna

    s = cfg.search
    epochs = cfg.train.epochs
    min_res = _min_resource(cfg)
    if s.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=min_res, max_resource=epochs, reduction_factor=s.factor)
    if s.pruner == "sha":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=min_res, reduction_factor=s.factor)
    if s.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=min_res)
    return optuna.pruners.NopPruner()


def _pad_to_batches(X: np.ndarray, y: np.ndarray, batch_size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Pad with randomly repeated rows to a whole number of batches: one compiled shape per epoch."""
    n = len(y)
    rem = n % batch_size
    if rem == 0 or n < batch_size:
        return X, y
    extra = np.random.default_rng(seed).choice(n, batch_size - rem, replace=False if batch_size - rem <= n else True)
    return np.concatenate([X, X[extra]]), np.concatenate([y, y[extra]])


class TrialRunner:
    """The objective: one instance per process, reused across trials (data prepared once)."""

    def __init__(self, ctx: "StudyContext") -> None:
        self.ctx = ctx
        cfg, data = ctx.cfg, ctx.data
        self.batch_size = min(cfg.train.batch_size, len(data.y_train))
        self.X_train, self.y_train = _pad_to_batches(data.X_train, data.y_train, self.batch_size, cfg.data.split.seed)
        self.valid_batch = len(data.y_valid) if len(data.y_valid) <= MAX_SINGLE_VALID_BATCH else 4096
        self.y_valid_var = float(np.var(data.y_valid)) if data.task == "regression" else None
        self.worker = f"{socket.gethostname()}:{os.getpid()}"
        self.check_steps = pruning_steps(cfg)
        self.class_weight = None
        if data.task == "classification" and cfg.train.class_weight == "balanced":
            counts = np.bincount(data.y_train, minlength=data.n_classes)
            self.class_weight = {i: len(data.y_train) / (data.n_classes * c) for i, c in enumerate(counts) if c}
        self.folds = None
        if cfg.search.cv:
            from sklearn.model_selection import KFold, StratifiedKFold

            splitter = (StratifiedKFold if data.task == "classification" else KFold)(
                n_splits=cfg.search.cv, shuffle=True, random_state=cfg.data.split.seed)
            self.folds = []
            for tr, va in splitter.split(data.X_train, data.y_train):
                Xt, yt = _pad_to_batches(data.X_train[tr], data.y_train[tr], self.batch_size, cfg.data.split.seed)
                self.folds.append((Xt, yt, data.X_train[va], data.y_train[va]))

    # ---------------------------------------------------------------------------------------
    def _monitor(self) -> tuple[str, str]:
        """Keras log key and mode that early stopping watches for the study metric."""
        m = self.ctx.metric
        if m in ("rmse", "r2"):
            return "val_mse", "min"
        return f"val_{m}", "max" if self.ctx.direction == "maximize" else "min"

    def _callbacks(self, trial: Any, with_pruning: bool) -> tuple[list[Any], Any, Any]:
        import keras

        from hpsearch.callbacks import EpochValues, NaNGuard, PruningReporter

        es_cfg = self.ctx.cfg.train.early_stopping
        guard = NaNGuard()
        reporter = (PruningReporter(trial, self.ctx.metric, self.y_valid_var, check_steps=self.check_steps)
                    if with_pruning
                    else EpochValues(self.ctx.metric, self.y_valid_var))
        cbs: list[Any] = [guard, reporter]
        monitor, mode = self._monitor()
        epochs = self.ctx.cfg.train.epochs
        # Without early stopping the callback still runs (patience = all epochs) so that the best
        # epoch's weights are restored: the stored model is the one the trial value describes.
        cbs.append(keras.callbacks.EarlyStopping(
            monitor=monitor, mode=mode, patience=es_cfg.patience if es_cfg is not None else epochs,
            min_delta=es_cfg.min_delta if es_cfg is not None else 0.0,
            restore_best_weights=es_cfg.restore_best_weights if es_cfg is not None else True))
        return cbs, guard, reporter

    def _build(self, params: dict[str, Any]) -> Any:
        from hpsearch.builders import call_builder

        return call_builder(self.ctx.builder, params, self.ctx.data.meta())

    def _fit(self, model: Any, X: np.ndarray, y: np.ndarray, Xv: np.ndarray, yv: np.ndarray,
             epochs: int, callbacks: list[Any], initial_epoch: int = 0) -> Any:
        return model.fit(
            X, y, batch_size=self.batch_size, epochs=epochs, initial_epoch=initial_epoch,
            validation_data=(Xv, yv), validation_batch_size=min(self.valid_batch, len(yv)),
            callbacks=callbacks, verbose=self.ctx.cfg.train.verbose, shuffle=True,
            class_weight=self.class_weight,
        )

    def _best(self, values: list[Optional[float]]) -> tuple[Optional[float], int]:
        finite = [(v, i) for i, v in enumerate(values) if v is not None and math.isfinite(v)]
        if not finite:
            return None, 0
        pick = max if self.ctx.direction == "maximize" else min
        v, i = pick(finite, key=lambda t: t[0])
        return float(v), i + 1

    # ---------------------------------------------------------------------------------------
    def __call__(self, trial: Any) -> float:
        import optuna

        ctx = self.ctx
        t_start = time.monotonic()
        trial.set_user_attr(TRIAL.ENGINE, "optuna")
        trial.set_user_attr(TRIAL.WORKER, self.worker)
        try:
            params = ctx.space.full_params(ctx.space.suggest(trial))
            params.update(ctx.builder_extra)
            t_sampled = time.monotonic()
            if self.folds is None:
                value, model, epochs, pruned_at, history = self._holdout(trial, params)
                fold_scores = None
            else:
                value, model, epochs, pruned_at, history, fold_scores = self._cv(trial, params)
        except TrialDiverged as e:
            trial.set_user_attr(TRIAL.FAILURE, str(e))
            raise
        except Exception as e:  # an exception in one trial is recorded; the study goes on
            trial.set_user_attr(TRIAL.FAILURE, f"{e.__class__.__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}")
            raise
        t_fit = time.monotonic()
        report_time = getattr(self, "_report_time", 0.0)
        attrs: dict[str, Any] = {TRIAL.EPOCHS: epochs, TRIAL.FIT_TIME: t_fit - t_sampled - report_time,
                                 "report_time": report_time, "sample_time": t_sampled - t_start}
        if model is not None:
            from hpsearch.builders import count_params

            attrs[TRIAL.N_PARAMS] = count_params(model)
        if fold_scores is not None:
            attrs[TRIAL.FOLD_SCORES] = fold_scores
            attrs["std_score"] = float(np.std(fold_scores))
        if pruned_at is not None:
            attrs["pruned_at_epoch"] = pruned_at
            for k, v in attrs.items():
                trial.set_user_attr(k, clean_attr(v))
            trial.set_user_attr("overhead_time", (t_sampled - t_start) + report_time + (time.monotonic() - t_fit))
            raise optuna.TrialPruned(f"pruned at epoch {pruned_at}")
        if value is None:
            trial.set_user_attr(TRIAL.FAILURE, "no finite validation value was logged")
            raise TrialDiverged("no finite validation value was logged")
        for k, v in attrs.items():
            trial.set_user_attr(k, clean_attr(v))
        in_top, best_so_far = self._rank(value)
        if in_top:
            if self.folds is not None:  # CV fold models saw part of the data: refit once on all of it,
                model = self._refit(params, self._best_epoch)  # for the epochs of the best fold mean
            # the curve PNG (~80 ms of matplotlib) only for trials that lead the study when they
            # finish; every trial's curve is in its intermediate values anyway
            self._save(trial, model, history, with_curve=best_so_far)
        # storage, sampling and model saving: what hpsearch adds around the training itself
        trial.set_user_attr("overhead_time", (t_sampled - t_start) + report_time + (time.monotonic() - t_fit))
        return value

    def _holdout(self, trial: Any, params: dict[str, Any]) -> tuple[Any, ...]:
        from hpsearch.callbacks import PruningReporter

        data = self.ctx.data
        self._report_time = 0.0
        model = self._build(params)
        cbs, guard, reporter = self._callbacks(trial, with_pruning=True)
        try:
            hist = self._fit(model, self.X_train, self.y_train, data.X_valid, data.y_valid,
                             self.ctx.cfg.train.epochs, cbs)
        finally:
            if isinstance(reporter, PruningReporter):
                reporter.close()
        if guard.diverged_at is not None:
            raise TrialDiverged(f"training diverged: loss became {guard.loss} at epoch {guard.diverged_at}")
        value, _best_epoch = self._best(reporter.values)
        self._report_time = reporter.storage_time
        return value, model, len(reporter.values), reporter.pruned_at, dict(hist.history)

    def _cv(self, trial: Any, params: dict[str, Any]) -> tuple[Any, ...]:
        """k folds trained in lockstep, one epoch at a time, reporting the fold mean each epoch."""
        self._report_time = 0.0
        from hpsearch.builders import call_builder
        from hpsearch.callbacks import EpochValues, NaNGuard

        cfg = self.ctx.cfg
        es = cfg.train.early_stopping
        direction = self.ctx.direction
        meta = self.ctx.data.meta()
        import keras

        keras.backend.clear_session()  # once per trial: the k fold models live side by side
        models = [call_builder(self.ctx.builder, params, meta, clear_session=False) for _ in self.folds]  # type: ignore[union-attr]
        guards = [NaNGuard() for _ in models]
        trackers = [EpochValues(self.ctx.metric, self.y_valid_var) for _ in models]
        means: list[float] = []
        best_mean, best_epoch, wait = None, 0, 0
        history: dict[str, list[float]] = {"val_metric_mean": []}
        pruned_at = None
        for epoch in range(cfg.train.epochs):
            for (Xt, yt, Xv, yv), model, g, tr in zip(self.folds, models, guards, trackers):  # type: ignore[arg-type]
                self._fit(model, Xt, yt, Xv, yv, epoch + 1, [g, tr], initial_epoch=epoch)
                if g.diverged_at is not None:
                    raise TrialDiverged(f"training diverged: loss became {g.loss} at epoch {epoch + 1}")
            vals = [tr.values[-1] for tr in trackers]
            if any(v is None or not math.isfinite(v) for v in vals):
                raise TrialDiverged(f"validation metric is not finite at epoch {epoch + 1}")
            mean = float(np.mean(vals))
            means.append(mean)
            history["val_metric_mean"].append(mean)
            t0 = time.monotonic()
            trial.report(mean, epoch)
            prune = (self.check_steps is None or epoch in self.check_steps) and trial.should_prune()
            self._report_time += time.monotonic() - t0
            delta = es.min_delta if es is not None else 0.0
            better = best_mean is None or (mean > best_mean + delta if direction == "maximize"
                                           else mean < best_mean - delta)
            if better:
                best_mean, best_epoch, wait = mean, epoch + 1, 0
            else:
                wait += 1
            if prune:
                pruned_at = epoch
                break
            if es is not None and wait >= es.patience:  # as keras.callbacks.EarlyStopping
                break
        fold_scores = [float(tr.values[best_epoch - 1]) for tr in trackers] if best_epoch else None
        self._best_epoch = best_epoch
        return best_mean, None, len(means), pruned_at, history, fold_scores

    def _refit(self, params: dict[str, Any], epochs: int) -> Any:
        data = self.ctx.data
        model = self._build(params)
        self._fit(model, self.X_train, self.y_train, data.X_valid, data.y_valid, max(1, epochs), [])
        return model

    # ---------------------------------------------------------------------------------------
    def _rank(self, value: float) -> tuple[bool, bool]:
        """(among the best K stored models?, the best so far?): saves the I/O of models we'd delete."""
        from optuna.trial import TrialState

        k = self.ctx.cfg.search.keep_models
        maximize = self.ctx.direction == "maximize"
        complete = self.ctx.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        done = [t.value for t in complete if t.value is not None]
        best = not done or (value > max(done) if maximize else value < min(done))
        vals = sorted((t.value for t in complete if t.value is not None and t.user_attrs.get(TRIAL.MODEL_ARTIFACT)),
                      reverse=maximize)
        if len(vals) < k:
            return True, best
        kth = vals[k - 1]
        return (value > kth if maximize else value < kth), best

    def _save(self, trial: Any, model: Any, history: dict[str, list[float]], with_curve: bool = True) -> None:
        from hpsearch.best import save_model_artifacts

        mid, pid = save_model_artifacts(self.ctx.artifact_store, trial, model, self.ctx.data.preprocessor)
        trial.set_user_attr(TRIAL.MODEL_ARTIFACT, mid)
        trial.set_user_attr(TRIAL.PREPROCESS_ARTIFACT, pid)
        if not with_curve:
            return
        try:
            cid = _save_curve(self.ctx.artifact_store, trial, history, f"trial {trial.number}")
            if cid:
                trial.set_user_attr(TRIAL.CURVE_ARTIFACT, cid)
        except Exception:  # a plot must never fail a trained trial
            pass


def _save_curve(store: Any, trial: Any, history: dict[str, list[float]], title: str) -> Optional[str]:
    import shutil
    import tempfile

    from optuna.artifacts import upload_artifact

    try:
        from hpsearch.report import save_curve_png
    except ImportError:
        return None
    tmp = tempfile.mkdtemp(prefix="hpsearch-curve-")
    try:
        path = os.path.join(tmp, "training-curve.png")
        save_curve_png(history, path, title=title)
        return upload_artifact(artifact_store=store, file_path=path, study_or_trial=trial)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def prune_stored_models(ctx: "StudyContext") -> int:
    """Delete model artifacts of trials outside the best K (disk stays bounded). Returns how many."""
    from optuna.trial import TrialState

    from hpsearch.records import STUDY

    k = ctx.cfg.search.keep_models
    keep_ids = {ctx.study.user_attrs.get(STUDY.BEST_MODEL_ARTIFACT)}
    with_models = [t for t in ctx.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
                   if t.user_attrs.get(TRIAL.MODEL_ARTIFACT) and t.value is not None]
    # ties go to the earlier trial, as in Optuna's best_trial: the kept model is the best trial's
    sign = -1.0 if ctx.direction == "maximize" else 1.0
    with_models.sort(key=lambda t: (sign * t.value, t.number))
    removed = 0
    gone = set(ctx.study.user_attrs.get("removed_artifacts", []))
    for t in with_models[k:]:
        for key in (TRIAL.MODEL_ARTIFACT, TRIAL.PREPROCESS_ARTIFACT, TRIAL.CURVE_ARTIFACT):
            aid = t.user_attrs.get(key)
            if aid and aid not in keep_ids and aid not in gone:
                try:
                    ctx.artifact_store.remove(aid)
                except Exception:
                    pass  # already removed by another worker
                gone.add(aid)
                removed += 1
    if removed:
        ctx.study.set_user_attr("removed_artifacts", sorted(gone))
    return removed


class _FailureStreak:
    """Stops the study after ``limit`` failed trials in a row (in this process)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.streak = 0
        self.last_reason: Optional[str] = None
        self.tripped = False

    def __call__(self, study: Any, trial: Any) -> None:
        from optuna.trial import TrialState

        if trial.state == TrialState.FAIL:
            self.streak += 1
            self.last_reason = trial.user_attrs.get(TRIAL.FAILURE)
            if self.streak >= self.limit:
                self.tripped = True
                study.stop()
        else:
            self.streak = 0


def run_optuna_search(ctx: "StudyContext", runner: Optional[TrialRunner] = None) -> None:
    """Optimize until the study's budget (counted in storage) or timeout is reached."""
    import logging

    import optuna
    from optuna.study import MaxTrialsCallback
    from optuna.trial import TrialState

    cfg = ctx.cfg
    runner = runner or TrialRunner(ctx)
    streak = _FailureStreak(cfg.search.max_failures_in_row)

    def progress_cb(study: Any, trial: Any) -> None:
        detail = trial.user_attrs.get(TRIAL.FAILURE) or ""
        if trial.state == TrialState.PRUNED:
            detail = f"at epoch {trial.user_attrs.get('pruned_at_epoch')}"
        ctx.progress.trial_done(trial.number, trial.state.name, trial.value, detail)
        if trial.state == TrialState.COMPLETE and trial.user_attrs.get(TRIAL.MODEL_ARTIFACT):
            prune_stored_models(ctx)

    callbacks: list[Any] = [streak, progress_cb]
    if cfg.search.n_trials is not None:
        callbacks.insert(0, MaxTrialsCallback(cfg.search.n_trials, states=(TrialState.COMPLETE, TrialState.PRUNED)))
    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(logging.WARNING if cfg.train.verbose == 0 else level)
    try:
        # the budget is MaxTrialsCallback's (counted in storage), not a per-process n_trials
        ctx.study.optimize(runner, timeout=cfg.search.timeout, catch=(Exception,), callbacks=callbacks)
    finally:
        optuna.logging.set_verbosity(level)
    if streak.tripped:
        raise StudyFailedError(
            f"study {ctx.study.study_name!r} stopped: {streak.streak} trials failed in a row"
            f" (last: {streak.last_reason}); check the space ranges and the data"
            f" (search.max_failures_in_row = {cfg.search.max_failures_in_row})"
        )
