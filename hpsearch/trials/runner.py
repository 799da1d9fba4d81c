"""Fit one asked trial: build, train (holdout or k folds in lockstep), report each epoch for pruning
and early stopping, store the model when it ranks in the best K, and hand back a finished
:class:`~hpsearch.engines.base.Candidate`. The runner never chooses parameters (the sampler does)
and never tells the storage (the trial loop does).

DESIGN.md's performance rules: data is prepared once per process (the runner holds padded,
fixed-shape arrays), every trial clears the Keras session, the training set is padded to a whole
number of batches (no recompile for a partial last batch) and the validation set is evaluated as
one batch. Storage writes are one row per epoch (off the training thread) and the model files once
per finished trial, only when it ranks in the best K.
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hpsearch.models.builders import call_builder, count_params
from hpsearch.pareto import dominates, is_feasible
from hpsearch.records import TRIAL, is_better
from hpsearch.storage.artifacts import save_curve_artifact, save_model_artifacts
from hpsearch.storage.batch import write_intermediate_values
from hpsearch.storage.keep import KeepBar
from hpsearch.trials.constraints import MEASURED, TrialInfeasible, apply_limits, infeasible_attrs, measure
from hpsearch.trials.context import Candidate, RunContext
from hpsearch.trials.rungs import ParetoRungs
from hpsearch.trials.seeds import seed_keras, trial_seeds
from hpsearch.trials.stopping import stop_rule

__all__ = ["TrialRunner", "Fitted", "TrialDiverged", "TrialTimedOut", "pad_to_batches"]

MAX_SINGLE_VALID_BATCH = 32768


class TrialDiverged(RuntimeError):
    """Training produced a NaN/inf loss or validation value."""


class TrialTimedOut(RuntimeError):
    """Training ran past ``train.trial_timeout`` and was stopped."""


def pad_to_batches(X: np.ndarray, y: np.ndarray, batch_size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Pad with randomly repeated rows to a whole number of batches: one compiled shape per epoch."""
    n = len(y)
    rem = n % batch_size
    if rem == 0 or n < batch_size:
        return X, y
    extra = np.random.default_rng(seed).choice(n, batch_size - rem, replace=batch_size - rem > n)
    return np.concatenate([X, X[extra]]), np.concatenate([y, y[extra]])


@dataclass
class Fitted:
    """What training one candidate produced (the packed runner hands its members' results to
    :meth:`TrialRunner.store_model` as this type)."""

    value: float | None
    epochs: int
    model: Any = None
    pruned_at: int | None = None
    history: dict[str, list[float]] = field(default_factory=dict)
    fold_scores: list[float] | None = None
    best_epoch: int = 0
    report_time: float = 0.0


class TrialRunner:
    """The objective: one instance per process, reused across trials (data prepared once)."""

    def __init__(self, ctx: RunContext, extra_callbacks: list[Any] | None = None,
                 check_steps: set[int] | None = None, rungs: ParetoRungs | None = None) -> None:
        """``check_steps``: the epochs (0-based) at which the engine's pruner decides (None: every
        epoch); the engine hands them over, the runner only reports and asks there. ``rungs``: the
        rule that prunes a study of several objectives (Optuna's pruners take one value)."""
        self.ctx = ctx
        self.rungs = rungs
        cfg, data = ctx.cfg, ctx.data
        self.extra_callbacks = [*(extra_callbacks or []), *ctx.keras_callbacks]  # the user's: every fit
        self.batch_size = min(int(cfg.train.batch_size), len(data.y_train))  # auto: resolved by then
        seed = cfg.data.split.seed
        self.X_train, self.y_train = data.X_train, data.y_train  # streamed batches wrap around instead
        if not data.streamed:
            self.X_train, self.y_train = pad_to_batches(data.X_train, data.y_train, self.batch_size, seed)
        self.valid_batch = len(data.y_valid) if len(data.y_valid) <= MAX_SINGLE_VALID_BATCH else 4096
        self.y_valid_var = float(np.var(data.y_valid)) if data.task == "regression" else None
        self.worker = f"{socket.gethostname()}:{os.getpid()}"
        self.check_steps = check_steps
        self.class_weight = None
        if data.task == "classification" and cfg.train.class_weight == "balanced":
            counts = np.bincount(data.y_train, minlength=data.n_classes)
            self.class_weight = {i: len(data.y_train) / (data.n_classes * c) for i, c in enumerate(counts) if c}
        self.folds = None
        self.timer: Any = None  # the running trial's TrialTimer (train.trial_timeout)
        self.limits: dict[str, Any] = {}  # the running trial's search.constraints values
        self.measured: dict[str, float] = {}  # the running trial's measured objectives (n_params, latency_ms)
        self.keep_bar = KeepBar(ctx.direction, cfg.search.keep_models)  # the keep rule, this process's reads
        self.seed: int | None = None  # the running trial's seed (hpsearch.trials.seeds); None: unseeded
        self.rule = stop_rule(cfg.train.early_stopping, cfg.train.epochs, ctx.metric, ctx.direction,
                              best_weights_when_off=True)
        if cfg.search.cv:  # each fold scaled by a preprocessor fitted on its own training rows
            self.folds = [(*pad_to_batches(Xt, yt, self.batch_size, seed), Xv, yv)
                          for Xt, yt, Xv, yv in data.fold_arrays(cfg.search.cv, seed)]

    # -- training ------------------------------------------------------------------------------
    def _callbacks(self, trial: Any) -> tuple[list[Any], Any, Any, Any]:
        from hpsearch.trials.callbacks import NaNGuard, PruningReporter

        guard = NaNGuard()
        report, ask = self._reporting(trial)
        reporter = PruningReporter(trial, self.ctx.metric, self.y_valid_var, check_steps=self.check_steps,
                                   report=report, ask=ask)
        # Without early stopping the rule's callback still runs (patience = all epochs) so that the best
        # epoch's weights are restored: the stored model is the one the trial value describes.
        stop = self.rule.keras_callbacks()
        return [guard, reporter, *stop], guard, reporter, (stop[0] if stop else None)

    def _reporting(self, trial: Any) -> tuple[Any, Any]:
        """(report, ask) for a study of several objectives: each epoch's value written to the storage
        (Optuna's ``report`` refuses several objectives; the dashboard draws the curves) and the rung
        rule asked (:mod:`hpsearch.trials.rungs`); (None, None): the Optuna trial's own."""
        if not self.ctx.several:
            return None, None
        storage = self.ctx.storage

        def report(value: float, step: int) -> None:
            # compat.PRIVATE_HOOKS: the trial's storage id
            write_intermediate_values(storage, [(trial._trial_id, step, value)])

        def ask(step: int, value: float) -> bool:
            if self.rungs is None:
                return False
            known = [self.measured[n] for n in self.rungs.known]
            return trial.number in self.rungs.prune(self.ctx.study, step, {trial.number: (value, known)})

        return report, ask

    def _timer(self) -> Any:
        """A fresh :class:`~hpsearch.trials.callbacks.TrialTimer` when ``train.trial_timeout`` is set."""
        limit = self.ctx.cfg.train.trial_timeout
        if limit is None:
            return None
        from hpsearch.trials.callbacks import TrialTimer

        return TrialTimer(limit)

    def _check_limits(self, trial: Any, model: Any) -> None:
        """``search.constraints`` on the built model, before any epoch (raises TrialInfeasible); then
        the objectives measured rather than trained (``n_params``, ``latency_ms``), once."""
        if self.ctx.cfg.search.constraints is not None:
            self.limits = apply_limits(self.ctx.cfg, trial, model, self.ctx.data.X_valid)
        names = [n for n, _ in self.ctx.objectives]
        timed = TRIAL.LATENCY_MS in self.limits  # measured for the limit already: not twice
        keys = [k for k, m in MEASURED.items() if m in names and not (m == "latency_ms" and timed)]
        self.measured = measure(model, self.ctx.data.X_valid, keys) if keys else {}
        if "latency_ms" in names and timed:
            self.measured["latency_ms"] = float(self.limits[TRIAL.LATENCY_MS])

    def _build(self, params: dict[str, Any], clear_session: bool = True) -> Any:
        """The trial's model; with ``clear_session`` the session is cleared and Keras seeded with
        the trial's seed first (:mod:`hpsearch.trials.seeds`), so a rerun builds and trains the same."""
        if clear_session:
            self._fresh_session()
        return call_builder(self.ctx.builder, params, self.ctx.data.meta(), clear_session=False)

    def _fresh_session(self) -> None:
        import keras

        keras.backend.clear_session()
        seed_keras(self.seed)

    def _fit(self, model: Any, X: np.ndarray, y: np.ndarray, Xv: np.ndarray, yv: np.ndarray,
             epochs: int, callbacks: list[Any], initial_epoch: int = 0) -> Any:
        from hpsearch.data.stream import fit_inputs
        from hpsearch.trials.callbacks import EpochLR, trial_timeout_reason

        cfg = self.ctx.cfg
        timer = [self.timer] if self.timer is not None else []
        hist = model.fit(
            **fit_inputs(X, y, Xv, yv, self.batch_size, min(self.valid_batch, len(yv)), self.class_weight,
                         cfg.data.split.seed + initial_epoch, cfg.data.workers),
            epochs=epochs, initial_epoch=initial_epoch,
            callbacks=[*callbacks, *self.extra_callbacks, *timer, EpochLR()], verbose=cfg.train.verbose,
        )
        if self.timer is not None and self.timer.elapsed is not None:
            raise TrialTimedOut(trial_timeout_reason(self.timer.limit, self.timer.elapsed))
        return hist

    def _fit_thawing(self, model: Any, X: np.ndarray, y: np.ndarray, Xv: np.ndarray, yv: np.ndarray,
                     epochs: int, callbacks: list[Any]) -> Any:
        """``_fit``; a model with reused layers frozen (model.init_from) trains in two fits:
        the frozen epochs, then all layers (recompiled). Returns the joined history."""
        from hpsearch.models.freeze import frozen, unfreeze

        spec = frozen(model)
        if spec is None or spec.epochs >= epochs:
            return self._fit(model, X, y, Xv, yv, epochs, callbacks)
        first = self._fit(model, X, y, Xv, yv, spec.epochs, callbacks)
        if model.stop_training:  # pruned, diverged or stopped early while frozen
            return first
        unfreeze(model)
        second = self._fit(model, X, y, Xv, yv, epochs, callbacks, initial_epoch=spec.epochs)
        for key, values in second.history.items():
            first.history.setdefault(key, []).extend(values)
        return first

    def _holdout(self, trial: Any, params: dict[str, Any]) -> Fitted:
        data = self.ctx.data
        model = self._build(params)
        self._check_limits(trial, model)
        cbs, guard, reporter, stop = self._callbacks(trial)
        try:
            hist = self._fit_thawing(model, self.X_train, self.y_train, data.X_valid, data.y_valid,
                                     self.ctx.cfg.train.epochs, cbs)
        finally:
            reporter.close()
        if guard.diverged_at is not None:
            raise TrialDiverged(f"training diverged: loss became {guard.loss} at epoch {guard.diverged_at}")
        kept = int(getattr(stop, "best_epoch", -1)) + 1 if stop is not None else 0  # Keras': 0-based
        value, best = self.rule.trial_value(reporter.values, kept, self.ctx.direction)
        return Fitted(value=value, epochs=len(reporter.values), model=model, pruned_at=reporter.pruned_at,
                       history=dict(hist.history), best_epoch=best + 1, report_time=reporter.storage_time)

    def _cv(self, trial: Any, params: dict[str, Any]) -> Fitted:
        """k folds trained in lockstep, one epoch at a time, reporting the fold mean each epoch
        (so pruning and early stopping act on the CV estimate, as with one model)."""
        import math

        from hpsearch.trials.callbacks import EpochValues, NaNGuard

        cfg, rule = self.ctx.cfg, self.rule
        folds = self.folds or []
        self._fresh_session()  # once per trial: the k fold models live side by side
        models = [self._build(params, clear_session=False) for _ in folds]
        self._check_limits(trial, models[0])
        guards = [NaNGuard() for _ in models]
        trackers = [EpochValues(self.ctx.metric, self.y_valid_var, watch=None if rule.on_metric else rule.key)
                    for _ in models]
        out = Fitted(value=None, epochs=0, history={"val_metric_mean": []})
        # the rule (hpsearch.trials.stopping) on the fold mean: of the study metric, in the study's
        # direction, or of val_loss
        direction = self.ctx.direction if rule.on_metric else rule.direction
        wait, best = 0, None
        for epoch in range(cfg.train.epochs):
            for (Xt, yt, Xv, yv), model, g, tr in zip(folds, models, guards, trackers):
                _thaw_at(model, epoch)
                self._fit(model, Xt, yt, Xv, yv, epoch + 1, [g, tr], initial_epoch=epoch)
                if g.diverged_at is not None:
                    raise TrialDiverged(f"training diverged: loss became {g.loss} at epoch {epoch + 1}")
            vals = [v for v in (tr.values[-1] for tr in trackers) if v is not None and math.isfinite(v)]
            if len(vals) < len(trackers):
                raise TrialDiverged(f"validation metric is not finite at epoch {epoch + 1}")
            mean = float(np.mean(vals))
            watched = mean if rule.on_metric else float(np.mean([tr.watched[-1] for tr in trackers]))
            out.epochs += 1
            out.history["val_metric_mean"].append(mean)
            t0 = time.monotonic()
            report, ask = self._reporting(trial)
            (report or trial.report)(mean, epoch)
            prune = (self.check_steps is None or epoch in self.check_steps) and (
                ask(epoch, mean) if ask is not None else trial.should_prune())
            out.report_time += time.monotonic() - t0
            wait += 1
            improved = is_better(watched, best, direction, rule.min_delta)
            if improved:
                best, out.value, out.best_epoch, wait = watched, mean, epoch + 1, 0
            if prune:
                out.pruned_at = epoch
                break
            if not improved and rule.enabled and rule.exhausted(wait, epoch):  # as keras.callbacks.EarlyStopping
                break
        if out.best_epoch:
            out.fold_scores = [float(tr.values[out.best_epoch - 1] or 0.0) for tr in trackers]  # finite: checked
        return out

    def _refit(self, params: dict[str, Any], epochs: int) -> Any:
        """CV fold models saw part of the data: refit once on the training split for the epochs of
        the best fold mean (its preprocessing was fitted on the same rows)."""
        data = self.ctx.data
        model = self._build(params)
        self._fit_thawing(model, self.X_train, self.y_train, data.X_valid, data.y_valid, max(1, epochs), [])
        return model

    # -- one trial -----------------------------------------------------------------------------
    def __call__(self, trial: Any) -> Candidate:
        ctx = self.ctx
        t_start = time.monotonic()
        trial.set_user_attr(TRIAL.WORKER, self.worker)  # early: a killed trial still says where it ran
        params = ctx.space.full_params(ctx.space.suggest(trial))
        params.update(ctx.builder_extra)
        t_sampled = time.monotonic()
        self.timer, self.limits, self.measured = self._timer(), {}, {}
        self.seed = trial_seeds(ctx.cfg.search.seed, [trial.number])[0] if ctx.cfg.search.seed is not None else None
        try:
            fit = self._holdout(trial, params) if self.folds is None else self._cv(trial, params)
        except (TrialDiverged, TrialTimedOut) as e:
            return Candidate(params=dict(trial.params), state="FAIL", failure=str(e))
        except TrialInfeasible as e:  # over a limit: stored with its constraint values, never trained
            return Candidate(params=dict(trial.params), state="PRUNED", user_attrs=infeasible_attrs(e))
        finally:
            self.timer = None  # the refit of a CV trial is not limited
        t_fit = time.monotonic()
        attrs: dict[str, Any] = {TRIAL.EPOCHS: fit.epochs, TRIAL.FIT_TIME: t_fit - t_sampled - fit.report_time,
                                 TRIAL.REPORT_TIME: fit.report_time, TRIAL.SAMPLE_TIME: t_sampled - t_start,
                                 TRIAL.WORKER: self.worker}
        if fit.model is not None:
            attrs[TRIAL.N_PARAMS] = count_params(fit.model)
        if fit.history:
            attrs[TRIAL.HISTORY] = fit.history
        attrs.update(self.limits)
        attrs.update({k: int(v) if k == TRIAL.N_PARAMS else v for k, v in self.measured.items()})
        if fit.fold_scores is not None:
            attrs[TRIAL.FOLD_SCORES] = fit.fold_scores
            attrs[TRIAL.STD_SCORE] = float(np.std(fit.fold_scores))
        candidate = Candidate(params=dict(trial.params), state="COMPLETE", value=fit.value, user_attrs=attrs)
        if fit.pruned_at is not None:
            attrs[TRIAL.PRUNED_AT] = fit.pruned_at
            candidate.state, candidate.value = "PRUNED", None
        elif fit.value is None:
            candidate.state, candidate.failure = "FAIL", "no finite validation value was logged"
        elif ctx.several and (missing := self._values(fit, candidate)):
            candidate.state, candidate.failure = "FAIL", f"no finite validation value of {missing} was logged"
        else:
            self._keep_model(trial, params, fit, attrs, candidate.values)
        # storage, sampling and model saving: what hpsearch adds around the training itself
        attrs[TRIAL.OVERHEAD_TIME] = (t_sampled - t_start) + fit.report_time + (time.monotonic() - t_fit)
        return candidate

    def _values(self, fit: Fitted, candidate: Candidate) -> str | None:
        """Set ``candidate.values``, every objective's value (several objectives): the first is the
        trial value, a trained metric is read at the best epoch, a measured one was measured once
        built. Returns the name of an objective without a finite value, if any."""
        from hpsearch.metrics import value_from_logs

        i = fit.best_epoch - 1
        values: list[float] = []
        for k, (name, _) in enumerate(self.ctx.objectives):
            logs = {key: v[i] for key, v in fit.history.items() if 0 <= i < len(v)}
            v = fit.value if k == 0 else self.measured.get(name, value_from_logs(name, logs, self.y_valid_var))
            if v is None or not np.isfinite(v):
                return name
            values.append(float(v))
        candidate.values = values
        return None

    def _keep_model(self, trial: Any, params: dict[str, Any], fit: Fitted, attrs: dict[str, Any],
                    values: list[float] | None = None) -> None:
        """Store the model when it ranks in the best K or, with several objectives, is on the Pareto
        front so far (saves the I/O of models we would delete); the curve PNG (~80 ms of matplotlib)
        only for a trial that leads the study."""
        assert fit.value is not None
        in_top, best_so_far = self._rank(fit.value, trial.number)
        if values is not None:
            in_top = in_top or self.on_front(values)
        if in_top:
            self.store_model(trial, params, fit, attrs, best_so_far)

    def store_model(self, trial: Any, params: dict[str, Any], fit: Fitted, attrs: dict[str, Any],
                     curve: bool) -> None:
        """Save the trial's model and preprocessing (and its curve PNG when ``curve``)."""
        model = fit.model if self.folds is None else self._refit(params, fit.best_epoch)
        store = self.ctx.artifact_store
        attrs[TRIAL.MODEL_ARTIFACT], attrs[TRIAL.PREPROCESS_ARTIFACT] = save_model_artifacts(
            store, trial, model, self.ctx.data.preprocessor)
        if curve:
            cid = save_curve_artifact(store, trial, fit.history, f"trial {trial.number}")
            if cid:
                attrs[TRIAL.CURVE_ARTIFACT] = cid

    def _rank(self, value: float, number: int) -> tuple[bool, bool]:
        """(among the best K stored models?, the best so far?): :func:`hpsearch.storage.keep.finishing_keepers`
        (by :class:`~hpsearch.storage.keep.KeepBar`: no read of the study for a trial under its bar)
        for this one trial (ties: the lower trial number, whatever order trials finish in)."""
        keep, lead = self.keep_bar.keepers(lambda: self.ctx.study.get_trials(deepcopy=False), [(value, number)])
        return bool(keep), lead == 0

    def on_front(self, values: list[float]) -> bool:
        """Does no finished feasible trial dominate ``values`` (so its model may be picked later)?"""
        directions = [d for _, d in self.ctx.objectives]
        return not any(dominates(t.values, values, directions) for t in self.ctx.study.get_trials(deepcopy=False)
                       if t.state.name == "COMPLETE" and t.values and is_feasible(t))


def _thaw_at(model: Any, epoch: int) -> None:
    """Under CV (one fit per epoch): unfreeze reused layers when their frozen epochs are over."""
    from hpsearch.models.freeze import frozen, unfreeze

    spec = frozen(model)
    if spec is not None and epoch >= spec.epochs:
        unfreeze(model)
