"""The scikit-learn engines: grid, random and successive-halving search over hpsearch's Keras
estimators, each candidate k-fold cross-validated and stored as an Optuna trial as it finishes.

What a candidate is trained as: a :class:`FoldPipeline` of the study's preprocessing
(``PreparedData.scaler()``) and a scikeras estimator, fitted on each fold's raw training rows, so
every fold's scaling is fitted on that fold's rows only; the validation rows that early stopping
watches go through the same fold-fitted steps.

How folds run: :func:`hpsearch.engines.folds.fit_fold` fits and scores one fold into a
:class:`~hpsearch.engines.folds.FoldResult` (score, epochs, validation curve, failure reason),
through joblib (``search.n_jobs``), or packed with other candidates (halving: a rung's;
:mod:`hpsearch.packing.cv`). A fold fails on any ``Exception`` or a NaN score.

Which candidates: scikit-learn's own. ``ParameterGrid`` (grid), ``ParameterSampler`` (random, and
halving's first rung, as ``RandomizedSearchCV`` / ``HalvingRandomSearchCV`` draw them), folds from
``check_cv`` (stratified for classifiers), scorers from ``get_scorer``; halving's rungs and its
top-k rule are ``HalvingRandomSearchCV``'s (:func:`halving_rungs`, :func:`top_k`). Only public scikit-learn APIs
are used (not ``_run_search``). Resume: a stored candidate key (params and rung) is not trained again.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from abc import abstractmethod
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
from sklearn.pipeline import Pipeline

from hpsearch.engines.base import Engine, min_resource, unused_search_fields
from hpsearch.engines.folds import MODEL, FoldResult, FoldSpec, fit_callbacks, fit_fold
from hpsearch.engines.halving import Rung, halving_rungs, run_rungs, rung_reached
from hpsearch.engines.multiscore import scoring_for
from hpsearch.engines.warmstart import enqueued_first, refuse_warm_start
from hpsearch.errors import ConfigError, StudyFailedError
from hpsearch.execution.callbacks import run_trial_callbacks
from hpsearch.execution.stoprules import FailureStreak, StopRules, StopSearch
from hpsearch.models.builders import builder_defaults
from hpsearch.packing.cv import FoldPacks, fold_packs, rung_packs
from hpsearch.packing.train import Pace
from hpsearch.records import STUDY, TRIAL
from hpsearch.spec.space import coerce_params
from hpsearch.trials.context import Candidate, Refit, RunContext, record_candidate
from hpsearch.trials.stopping import StopRule, stop_rule

if TYPE_CHECKING:  # pragma: no cover
    from hpsearch.spec.config import StudyConfig
    from hpsearch.spec.space import SearchSpace

__all__ = [
    "RandomEngine", "GridEngine", "HalvingEngine", "SklearnEngine", "CandidateSearch",
    "FoldPipeline", "sklearn_stop_rule", "keras_estimator", "make_pipeline",
    "candidate_key",
]

#: halving's resource: the Keras estimator's ``epochs``
RESOURCE = "epochs"


def candidate_key(params: dict[str, Any], n_resources: int | None = None) -> str:
    """A candidate's identity in storage (params, and the rung's epochs under halving): resume skips it."""
    key = json.dumps(coerce_params(params), sort_keys=True, default=str)
    return key if n_resources is None else f"{key}@{n_resources}"


# -- the estimator searched ----------------------------------------------------------------------
class FoldPipeline(Pipeline):
    """Preprocessing steps and a Keras estimator, fitted together on one fold's raw training rows.

    Unlike a plain Pipeline, ``fit(X, y, model__validation_data=(Xv, yv))`` sends the validation
    rows (early stopping) through the preprocessing just fitted on ``X``, so the model watches rows
    scaled like the ones it trains on. (Pipeline's own ``transform_input`` would need metadata
    routing switched on for the whole process.)
    """

    def fit(self, X: Any, y: Any = None, **params: Any) -> FoldPipeline:
        name, last = self.steps[-1]
        prefix = f"{name}__"
        valid = params.pop(f"{prefix}validation_data", None)
        if valid is None:
            super().fit(X, y, **params)
            return self
        if any(not k.startswith(prefix) for k in params):
            raise TypeError(f"FoldPipeline.fit with validation_data takes only {prefix}* parameters,"
                            f" got {sorted(params)}")
        head = Pipeline(self.steps[:-1])  # the same step objects: fitted in place
        Xt = head.fit_transform(X, y)
        X_valid, y_valid = valid
        last.fit(Xt, y, validation_data=(head.transform(X_valid), y_valid),
                 **{k[len(prefix):]: v for k, v in params.items()})
        return self


def keras_estimator(ctx: RunContext) -> Any:
    """The scikeras estimator of this study: builder, fixed params, epochs, batch size, seed."""
    from hpsearch.models.estimators import wrapper_named_defaults
    from hpsearch.models.study_estimators import study_estimator_class

    cfg = ctx.cfg
    if cfg.model.init_from is not None and cfg.model.init_from.freeze_epochs:
        raise ConfigError("model.init_from.freeze_epochs: the scikit-learn engines train each candidate in one"
                          " fit, so layers cannot thaw midway; use search.engine: optuna or freeze_epochs: 0")
    classification = ctx.data.task == "classification"
    kw: dict[str, Any] = {
        "model": ctx.builder, "epochs": cfg.train.epochs, "batch_size": cfg.train.batch_size,
        "verbose": cfg.train.verbose, "random_state": cfg.search.seed,
        "optimizer": None,  # not scikeras' rmsprop: the builder's default or compile_for_task's, as in every engine
    }
    if classification and cfg.train.class_weight:
        kw["class_weight"] = cfg.train.class_weight
    # fixed params (and the searched ones' defaults) are estimator params, so set_params takes them;
    # a searched one the builder takes only through **params is declared here (each candidate sets it);
    # builder arguments named like a wrapper parameter (optimizer, loss, ...) keep the builder's
    # defaults, not scikeras' (optimizer="rmsprop"), as in the other engines
    declared = builder_defaults(ctx.builder)
    params = {**{n: None for n in ctx.space.params if n not in declared}, **wrapper_named_defaults(ctx.builder),
              **ctx.space.fixed, **ctx.builder_extra}
    return study_estimator_class(classification)(**{**kw, **params})


def make_pipeline(ctx: RunContext) -> FoldPipeline:
    """The estimator the search fits per fold: the study's (unfitted) preprocessing, then Keras."""
    return FoldPipeline([("preprocess", ctx.data.scaler()), (MODEL, keras_estimator(ctx))])


def sklearn_stop_rule(ctx: RunContext) -> StopRule:
    """The study's early-stopping rule (:mod:`hpsearch.trials.stopping`) as the scikit-learn engines
    apply it: without ``train.early_stopping`` a fit keeps its last epoch's weights."""
    cfg = ctx.cfg
    return stop_rule(cfg.train.early_stopping, cfg.train.epochs, ctx.metric, ctx.direction, best_weights_when_off=False)


def _mean_curve(curves: Sequence[Sequence[float | None]]) -> dict[int, float]:
    """Per-epoch mean over the folds that trained that long (early stopping ends folds unevenly)."""
    out: dict[int, float] = {}
    for i in range(max((len(c) for c in curves), default=0)):
        vals = [v for c in curves if i < len(c) and (v := c[i]) is not None and math.isfinite(v)]
        if vals:
            out[i] = float(np.mean(vals))
    return out


# -- one run of a search -------------------------------------------------------------------------
class CandidateSearch:
    """One run of a scikit-learn engine: cross-validates candidates and records each as it finishes.

    Built once per run: the pipeline, the folds (``check_cv``: stratified for classification, the
    same splits for every candidate), the scorer and what earlier runs stored (for resume).
    """

    def __init__(self, ctx: RunContext, engine: SklearnEngine) -> None:
        from sklearn.base import is_classifier
        from sklearn.model_selection import check_cv

        data, cfg = ctx.data, ctx.cfg
        self.ctx = ctx
        self.engine = engine.name
        self.estimator = make_pipeline(ctx)
        self.X, self.y = data.X_train_raw, data.y_train
        self.valid = (data.X_valid_raw, data.y_valid)
        cv = check_cv(engine.cv_folds(cfg), self.y, classifier=is_classifier(self.estimator))
        self.splits = list(cv.split(self.X, self.y))
        scoring, self.signs = scoring_for(ctx)  # several objectives: scikit-learn multi-metric scoring
        self.sign = self.signs[0]
        y_valid_var = float(np.var(data.y_valid)) if data.task == "regression" else None
        self.spec = FoldSpec(scoring, ctx.metric, y_valid_var, sklearn_stop_rule(ctx), cfg.train.trial_timeout)
        self.rules = StopRules.of(ctx)  # search.timeout, patience, target
        self.distributions = ctx.space.to_optuna_distributions()
        trials = ctx.study.get_trials(deepcopy=False)
        self.stored = {t.user_attrs[TRIAL.CANDIDATE_KEY]: t for t in trials
                       if t.state.is_finished() and t.user_attrs.get(TRIAL.CANDIDATE_KEY)}
        self.next_number = len(trials)  # one process per study: numbers follow without a read per trial
        self.streak = FailureStreak(cfg.search.max_failures_in_row)
        self.n_ok = 0
        self.packs: FoldPacks | None = None  # train.pack: candidates trained a fold at a time in packs
        self.pace = Pace()  # how fast the last pack trained (kept across halving's rungs)

    @property
    def deadline(self) -> float | None:
        """When ``search.timeout`` trips: packs plan from it and end before it."""
        return self.rules.deadline()

    def note(self, line: str) -> None:
        self.rules.note(self.ctx, line)

    def evaluate(self, params: dict[str, Any], index: int, rung: Rung | None = None) -> float:
        """Cross-validate one candidate and record it (unless stored before); its mean score
        (greater is better, NaN when a fold failed)."""
        # halving: the rung's epochs are one of the params fitted (and of the key, as stored since 0.1)
        fit_params = dict(params) if rung is None else {**params, RESOURCE: rung.epochs}
        key = candidate_key(fit_params, None if rung is None else rung.epochs)
        if key in self.stored:
            return self._stored_score(self.stored[key])
        builder_params = self.ctx.space.builder_params(fit_params)  # per-layer values as one list
        params_in = {f"{MODEL}__{k}": v for k, v in builder_params.items()}
        # a candidate its pack trained already is recorded even past a stop rule: its work is done
        if not (self.packs is not None and self.packs.trained(params_in)) and (
                self.rules.tripped(self.ctx) or self._no_pack_fits()):
            raise StopSearch(self.rules.reason)
        folds = self._run_folds(params_in)
        self._record(self._candidate(params, key, index, folds, rung))
        return float(np.mean([r.score for r in folds]))

    def _no_pack_fits(self) -> bool:
        """No new pack can train its epochs before ``search.timeout`` (at the last pack's pace): the
        search stops now, the rule's reason saying why."""
        if self.packs is None or self.packs.fits() != 0:
            return False
        return self.rules.no_pack_fits(self.ctx, self.packs.epochs)

    def _run_folds(self, params: dict[str, Any]) -> list[FoldResult]:
        from sklearn.utils.parallel import Parallel, delayed

        packed = self.packs.folds(params) if self.packs is not None else None
        if packed is not None:
            return [FoldResult(**vars(f)) for f in packed]
        limit = self.spec.trial_timeout
        deadline = None if limit is None else time.time() + limit
        jobs = (delayed(fit_fold)(self.estimator, params, self.X, self.y, train, test, self.valid, self.spec,
                                  deadline) for train, test in self.splits)
        results: list[FoldResult] = Parallel(n_jobs=self.ctx.cfg.search.n_jobs)(jobs)
        return results

    def _stored_score(self, trial: Any) -> float:
        """A stored candidate's mean score in the scorer's orientation (NaN if a fold failed)."""
        folds = trial.user_attrs.get(TRIAL.FOLD_SCORES) or [None]
        return float(np.mean([math.nan if v is None else v * self.sign for v in folds]))

    def _candidate(self, params: dict[str, Any], key: str, index: int, folds: list[FoldResult],
                   rung: Rung | None) -> Candidate:
        values = [r.score * self.sign for r in folds]  # the study's orientation (e.g. mse > 0)
        finite = [v for v in values if math.isfinite(v)]
        attrs: dict[str, Any] = {
            TRIAL.CANDIDATE: index, TRIAL.CANDIDATE_KEY: key, TRIAL.FOLD_SCORES: values,
            TRIAL.FIT_TIME: sum(r.fit_time for r in folds), TRIAL.SCORE_TIME: sum(r.score_time for r in folds),
        }
        if finite:
            attrs[TRIAL.STD_SCORE] = float(np.std(finite))
        epochs = [r.epochs for r in folds]
        if max(epochs) > 0:
            attrs[TRIAL.EPOCHS], attrs[TRIAL.EPOCHS_PER_FOLD] = max(epochs), epochs
        if rung is not None:
            attrs[TRIAL.N_RESOURCES], attrs[TRIAL.HALVING_ITER] = rung.epochs, rung.index
        if stops := [r.deadline_stop for r in folds if r.deadline_stop is not None]:
            attrs[TRIAL.DEADLINE_STOP] = max(stops)
        curve = _mean_curve([r.curve for r in folds])
        if keys := [k for k in folds[0].history if all(k in r.history for r in folds)]:  # fold means
            attrs[TRIAL.HISTORY] = {k: list(_mean_curve([r.history[k] for r in folds]).values()) for k in keys}
        duration = attrs[TRIAL.FIT_TIME] + attrs[TRIAL.SCORE_TIME]
        common: dict[str, Any] = {"params": coerce_params(params), "user_attrs": attrs, "duration": duration}
        if len(finite) < len(values):
            reason = next((r.failure for r in folds if r.failure), None) or "a fold failed (score is NaN)"
            return Candidate(state="FAIL", intermediate_values=curve, failure=reason, **common)
        mean = float(np.mean(values))
        if rung is not None and not rung.last:
            # stopped at this rung's epochs (promoted or not, its final word is a later trial): only
            # the last rung competes for the best, as in scikit-learn
            curve[rung.epochs - 1] = mean
            if (several := self._values(mean, folds)) is not None:  # should the search stop at this rung
                common["user_attrs"][TRIAL.RUNG_VALUES] = several
            return Candidate(state="PRUNED", intermediate_values=curve, **common)
        return Candidate(state="COMPLETE", value=mean, intermediate_values=curve, values=self._values(mean, folds),
                         **common)

    def _values(self, mean: float, folds: list[FoldResult]) -> list[float] | None:
        """Every objective's fold mean (several objectives), in the study's orientation."""
        if len(self.signs) == 1:
            return None
        return [mean, *(float(np.mean([r.extra[i] for r in folds])) * s for i, s in enumerate(self.signs[1:]))]

    def _record(self, candidate: Candidate) -> None:
        record_candidate(self.ctx.study, candidate, engine=self.engine, distributions=self.distributions)
        number, self.next_number = self.next_number, self.next_number + 1
        run_trial_callbacks(self.ctx, number, self.rules)
        reason = candidate.failure
        self.ctx.observer.trial_done(number, candidate.state, candidate.value,
                                     "" if reason is None else f"({reason[:80]})")
        if candidate.state != "FAIL":
            self.n_ok += 1
        if self.streak.update(candidate.state, reason):
            raise self.streak.error(self.ctx.study.study_name, what="candidates")

    def record_rung_reached(self, n_rungs: int) -> None:
        """A stop before halving's last rung: the candidates of the highest rung reached are the
        search's result, each recorded again as a COMPLETE trial with its rung's scores and
        ``TRIAL.RESULT_OF`` (the PRUNED trial it completes); one line says so."""
        reached = rung_reached(self.ctx.study.get_trials(deepcopy=False))
        if not reached:
            return
        first, rung = self.next_number, int(reached[0].user_attrs[TRIAL.HALVING_ITER])
        for t in reached:
            attrs = {k: v for k, v in t.user_attrs.items() if k not in (TRIAL.ENGINE, TRIAL.FAILURE)}
            attrs[TRIAL.RESULT_OF] = t.number
            values = attrs.pop(TRIAL.RUNG_VALUES, None)
            mean = float(np.mean(attrs[TRIAL.FOLD_SCORES]))
            self._record(Candidate(params=dict(t.params), state="COMPLETE", value=mean, values=values, user_attrs=attrs,
                                   intermediate_values=dict(t.intermediate_values), duration=0.0))
        last = self.next_number - 1
        self.ctx.decide("halving_result", {"rung": rung, "trials": [first, last]},
                        f"the search stopped at halving rung {rung + 1} of {n_rungs} ({self.rules.reason}): its"
                        f" {len(reached)} candidates at {reached[0].user_attrs.get(TRIAL.N_RESOURCES)} epochs are its"
                        f" result, recorded as COMPLETE trials {first}-{last} (attribute {TRIAL.RESULT_OF});"
                        " --resume goes on to the next rungs")

    def finish(self) -> None:
        """Refuse a run where nothing worked (rather than a study without a best trial)."""
        if self.n_ok == 0 and not self.stored and self.rules.reason:
            raise StudyFailedError(f"study {self.ctx.study.study_name!r} stopped before any candidate finished"
                                   f" ({self.rules.reason}); relax that rule")
        if self.n_ok == 0 and not self.stored:
            raise StudyFailedError(
                f"study {self.ctx.study.study_name!r}: every candidate failed; see failure_reason of its trials"
                " (`hpsearch status STUDY`) and check the space and data"
            )


# -- the engines ---------------------------------------------------------------------------------
class SklearnEngine(Engine):
    """What grid, random and halving share: k-fold CV (default 3), one process, resume by flag, and
    a refit of the best candidate on the whole training split (fold models are not kept)."""

    default_cv: ClassVar[int | None] = 3
    supports_workers: ClassVar[bool] = False
    needs_resume_flag: ClassVar[bool] = True
    refits_ensemble: ClassVar[bool] = True

    def n_trials(self, cfg: StudyConfig) -> int | None:
        return _n_candidates(cfg)

    def check(self, cfg: StudyConfig, space: SearchSpace) -> None:
        refuse_warm_start(cfg, self.name, space)
        if cfg.search.enqueue:
            self.candidates(cfg, space)  # search.enqueue's errors (too many sets, not a grid point) now
        if cfg.search.constraints is not None:
            raise ConfigError(f"search.constraints: engine {self.name} does not check limits before training;"
                              " use search.engine: optuna, or remove it")

    def is_complete(self, ctx: RunContext) -> bool:
        """Every planned candidate index has a finished (complete or failed) trial."""
        planned = self.plan(ctx)
        finished = {t.user_attrs.get(TRIAL.CANDIDATE) for t in ctx.study.get_trials(deepcopy=False)
                    if t.state.name in ("COMPLETE", "FAIL")}
        finished.discard(None)
        return planned is not None and len(finished) >= planned

    @abstractmethod
    def candidates(self, cfg: StudyConfig, space: SearchSpace) -> list[dict[str, Any]]:
        """The candidates (halving: of its first rung), as scikit-learn's search class draws them."""

    def search(self, ctx: RunContext, search: CandidateSearch) -> None:
        """Evaluate the candidates in order (halving: rung by rung)."""
        for index, params in enumerate(self.candidates(ctx.cfg, ctx.space)):
            search.evaluate(params, index)

    def run(self, ctx: RunContext) -> None:
        if note := unused_search_fields(ctx.cfg, self.name):
            ctx.decide("search.sampler", None, note.removeprefix("hpsearch: "))
        search = CandidateSearch(ctx, self)
        todo = [p for p in self.candidates(ctx.cfg, ctx.space) if candidate_key(p) not in search.stored]
        search.packs = fold_packs(ctx, search, self.name, todo)
        with contextlib.suppress(StopSearch):  # a stop rule tripped: what finished is stored
            self.search(ctx, search)
        search.finish()

    def refit(self, ctx: RunContext, params: dict[str, Any], trial: Any) -> Refit:
        """The best candidate trained on the whole training split, its preprocessing fitted on those
        rows (early stopping on the validation split, scaled alike). A halving candidate trains for
        its rung's epochs, and one that ``search.timeout`` stopped in its pack the epochs its folds
        trained (its score's), said in one line (``STUDY.REFIT_EPOCHS`` records them)."""
        data = ctx.data
        params = ctx.space.builder_params(params)
        if trial.user_attrs.get(TRIAL.N_RESOURCES):
            params[RESOURCE] = int(trial.user_attrs[TRIAL.N_RESOURCES])
        if trial.user_attrs.get(TRIAL.DEADLINE_STOP) is not None:
            params[RESOURCE] = int(trial.user_attrs[TRIAL.EPOCHS])
            ctx.observer.message(f"hpsearch: search.timeout ended trial {trial.number}'s folds after"
                                 f" {params[RESOURCE]} epochs: its refit trains at most {params[RESOURCE]}, not"
                                 f" {ctx.cfg.train.epochs}")
        est = keras_estimator(ctx).set_params(**params)
        pre = data.fit_preprocessor(data.X_train_raw)
        est.fit(pre.transform(data.X_train_raw), data.y_train,
                validation_data=(pre.transform(data.X_valid_raw), data.y_valid),
                callbacks=fit_callbacks(sklearn_stop_rule(ctx)))
        return Refit(est.model_, pre, int(est.n_epochs_trained_))


def _n_candidates(cfg: StudyConfig) -> int:
    """Candidates random and halving draw: ``search.n_trials``, 10 when it is not set."""
    return cfg.search.n_trials or 10


def _sampled(cfg: StudyConfig, space: SearchSpace) -> list[dict[str, Any]]:
    """The candidates as ``RandomizedSearchCV`` draws them; a space of lists only gives at most its
    grid's size (the same draws as scikit-learn's, without its warning); ``search.enqueue`` first."""
    from sklearn.model_selection import ParameterGrid, ParameterSampler

    dists = space.to_sklearn_distributions()
    n = _n_candidates(cfg)
    grids = dists if isinstance(dists, list) else [dists]  # a conditional space: one dict per branch
    if all(not hasattr(d, "rvs") for g in grids for d in g.values()):
        n = min(n, len(ParameterGrid(dists)))
    return enqueued_first(cfg, list(ParameterSampler(dists, n, random_state=cfg.search.seed)), grid=False)


class GridEngine(SklearnEngine):
    """Every point of the grid, in ``GridSearchCV``'s order; float ranges need ``grid: N`` points."""

    name: ClassVar[str] = "grid"

    def check(self, cfg: StudyConfig, space: SearchSpace) -> None:
        super().check(cfg, space)
        space.to_sklearn_grid()  # ConfigError naming the parameter that is not a finite set

    def n_trials(self, cfg: StudyConfig) -> int | None:
        """None: the grid's size is the budget (see :meth:`plan`)."""
        return None

    def plan(self, ctx: RunContext) -> int | None:
        from sklearn.model_selection import ParameterGrid

        return len(ParameterGrid(ctx.space.to_sklearn_grid()))

    def candidates(self, cfg: StudyConfig, space: SearchSpace) -> list[dict[str, Any]]:
        from sklearn.model_selection import ParameterGrid

        return enqueued_first(cfg, list(ParameterGrid(space.to_sklearn_grid())), grid=True)


class RandomEngine(SklearnEngine):
    """``search.n_trials`` (default 10) candidates drawn with ``search.seed``, as ``RandomizedSearchCV``."""

    name: ClassVar[str] = "random"

    def plan(self, ctx: RunContext) -> int | None:
        return len(self.candidates(ctx.cfg, ctx.space))

    def candidates(self, cfg: StudyConfig, space: SearchSpace) -> list[dict[str, Any]]:
        return _sampled(cfg, space)


class HalvingEngine(SklearnEngine):
    """Successive halving with epochs as the resource, as ``HalvingRandomSearchCV``: ``search.n_trials``
    (default 10) candidates train ``min_resource`` epochs, the best ``1/factor`` go on with ``factor``
    times more, up to ``train.epochs``. Earlier rungs are stored as pruned trials; the last competes."""

    name: ClassVar[str] = "halving"

    def check(self, cfg: StudyConfig, space: SearchSpace) -> None:
        super().check(cfg, space)
        if RESOURCE in space.params:
            raise ConfigError(f"space.{RESOURCE}: halving gives candidates more epochs rung by rung, so epochs"
                              " cannot be searched; remove it from space (train.epochs is the most a candidate gets)")

    def candidates(self, cfg: StudyConfig, space: SearchSpace) -> list[dict[str, Any]]:
        return _sampled(cfg, space)

    def rungs(self, ctx: RunContext) -> list[Rung]:
        cfg = ctx.cfg
        n = len(self.candidates(cfg, ctx.space))
        return halving_rungs(n, min_resource(cfg), cfg.train.epochs, cfg.search.factor)

    def plan(self, ctx: RunContext) -> int | None:
        """Trials in all: every rung's candidates (known before the search starts)."""
        return sum(r.n_candidates for r in self.rungs(ctx))

    def is_complete(self, ctx: RunContext) -> bool:
        """The search ran to its end (which candidates go on depends on scores: :meth:`search` marks it)."""
        return bool(ctx.study.user_attrs.get(STUDY.COMPLETE))

    def search(self, ctx: RunContext, search: CandidateSearch) -> None:
        rungs = self.rungs(ctx)
        try:
            run_rungs(self.candidates(ctx.cfg, ctx.space), rungs, search.evaluate,
                      rung_packs(ctx, search, rungs, lambda p, epochs: candidate_key({**p, RESOURCE: epochs}, epochs)))
        except StopSearch:
            search.record_rung_reached(len(rungs))
            raise
        ctx.study.set_user_attr(STUDY.COMPLETE, True)
