"""The scikit-learn engine: GridSearchCV / RandomizedSearchCV / HalvingRandomSearchCV over
hpsearch's scikeras estimators, each candidate recorded as an Optuna trial as soon as it finishes.

How recording works: the search classes' own ``_run_search`` hook is overridden so that
``evaluate_candidates`` is called one candidate at a time (the results are the same as one batched
call: sklearn accumulates them). After each call the new row of ``cv_results_`` is written to the
study. This also gives resume for free: candidates already stored are not evaluated again.
"""

from __future__ import annotations

import datetime
import json
import time
import warnings
from typing import TYPE_CHECKING, Any, Callable, Iterable, Optional

import numpy as np

from hpsearch.errors import StudyFailedError
from hpsearch.records import TRIAL, clean_attr
from hpsearch.space import coerce_params

if TYPE_CHECKING:  # pragma: no cover
    from hpsearch.study import StudyContext

__all__ = ["run_sklearn_search", "candidate_key", "make_estimator", "fit_kwargs"]


def candidate_key(params: dict[str, Any], n_resources: Optional[int] = None) -> str:
    key = json.dumps(coerce_params(params), sort_keys=True, default=str)
    return key if n_resources is None else f"{key}@{n_resources}"


class _EpochLog:
    """Side channel filled by the scorer: epochs trained and divergence per fold (in-process)."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []

    def drain(self) -> list[dict[str, Any]]:
        rows, self.rows = self.rows, []
        return rows


def _make_scorer(metric: str, task: str, log: _EpochLog, y_valid_var: Optional[float] = None) -> Callable[..., float]:
    from sklearn.metrics import get_scorer

    from hpsearch.metrics import sklearn_scoring, value_from_logs

    name, _sign = sklearn_scoring(metric, task)
    base = get_scorer(name)

    def score(est: Any, X: Any, y: Any) -> float:
        hist = getattr(est, "history_", None) or {}
        losses = hist.get("loss", [])
        epochs = len(losses)
        if losses and not np.isfinite(losses[-1]):
            log.rows.append({"epochs": epochs, "diverged": True})
            raise FloatingPointError(f"training diverged: loss became {losses[-1]} at epoch {epochs}")
        # the validation metric per epoch: the learning curve stored as intermediate values
        curve = [value_from_logs(metric, {k: v[i] for k, v in hist.items() if i < len(v)}, y_valid_var)
                 for i in range(epochs)]
        log.rows.append({"epochs": epochs, "diverged": False, "curve": curve})
        return float(base(est, X, y))

    return score


def make_estimator(ctx: "StudyContext") -> Any:
    """The scikeras estimator for this study: builder, fixed params, epochs and batch size."""
    from hpsearch.estimators import KerasClassifier, KerasRegressor

    cfg = ctx.cfg
    cls = KerasClassifier if ctx.data.task == "classification" else KerasRegressor
    params = dict(ctx.space.fixed)
    params.update(ctx.builder_extra)
    kw: dict[str, Any] = dict(
        model=ctx.builder, epochs=cfg.train.epochs, batch_size=cfg.train.batch_size, verbose=cfg.train.verbose,
        random_state=cfg.search.seed,
    )
    if ctx.data.task == "classification" and cfg.train.class_weight:
        kw["class_weight"] = cfg.train.class_weight
    # defaults for searched params so they are estimator params (set_params needs them)
    return cls(**kw, **params)


def fit_kwargs(ctx: "StudyContext") -> dict[str, Any]:
    import keras

    cbs: list[Any] = [keras.callbacks.TerminateOnNaN()]
    es = ctx.cfg.train.early_stopping
    if es is not None:
        cbs.append(keras.callbacks.EarlyStopping(
            monitor="val_loss", patience=es.patience, min_delta=es.min_delta,
            restore_best_weights=es.restore_best_weights,
        ))
    return {"validation_data": (ctx.data.X_valid, ctx.data.y_valid), "callbacks": cbs}


def _search_class(engine: str) -> type:
    from sklearn.model_selection import GridSearchCV, RandomizedSearchCV

    if engine == "halving":
        from sklearn.experimental import enable_halving_search_cv  # noqa: F401
        from sklearn.model_selection import HalvingRandomSearchCV

        return HalvingRandomSearchCV
    return GridSearchCV if engine == "grid" else RandomizedSearchCV


def _failure_reason(exc_or_text: Any) -> str:
    text = str(exc_or_text)
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("-" * 10)]
    for ln in reversed(lines):  # the last "XxxError: message" line of a traceback
        if "Error" in ln.split(":", 1)[0] or "Exception" in ln.split(":", 1)[0]:
            return ln[:500]
    return (lines[-1] if lines else "unknown error")[:500]


def run_sklearn_search(ctx: "StudyContext") -> None:
    """Run the configured sklearn search on the training split, recording every candidate."""
    import optuna
    from optuna.trial import TrialState

    from hpsearch.metrics import sklearn_scoring

    cfg, data, study, space = ctx.cfg, ctx.data, ctx.study, ctx.space
    engine = cfg.search.engine
    _name, sign = sklearn_scoring(ctx.metric, data.task)
    log = _EpochLog()
    scorer = _make_scorer(ctx.metric, data.task, log,
                          float(np.var(data.y_valid)) if data.task == "regression" else None)
    distributions = space.to_optuna_distributions()
    n_splits = cfg.search.cv or 3

    done: dict[str, Any] = {}
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.FAIL, TrialState.PRUNED)):
        k = t.user_attrs.get("candidate_key")
        if k:
            done[k] = t
    failures_in_row = 0
    max_fail = cfg.search.max_failures_in_row
    progress = ctx.progress

    def record(params: dict[str, Any], index: int, row: Optional[dict[str, Any]], reason: Optional[str],
               epochs: list[int], more: dict[str, Any], curves: list[list[Optional[float]]]) -> None:
        nonlocal failures_in_row
        user_attrs: dict[str, Any] = {
            TRIAL.ENGINE: engine, TRIAL.CANDIDATE: index,
            "candidate_key": candidate_key(params, more.get("n_resources")),
        }
        if more:
            user_attrs[TRIAL.N_RESOURCES] = more.get("n_resources")
            user_attrs[TRIAL.HALVING_ITER] = more.get("iter")
        if epochs:
            user_attrs[TRIAL.EPOCHS] = int(max(epochs))
            user_attrs["epochs_per_fold"] = [int(e) for e in epochs]
        value = None
        state = TrialState.FAIL
        intermediate: dict[int, float] = {}
        if row is not None:
            folds = [float(row[f"split{i}_test_score"]) * sign for i in range(n_splits)]
            user_attrs[TRIAL.FOLD_SCORES] = folds
            user_attrs[TRIAL.FIT_TIME] = float(row["mean_fit_time"]) * n_splits
            user_attrs["score_time"] = float(row["mean_score_time"]) * n_splits
            user_attrs["std_score"] = float(np.nanstd(folds))
            if all(np.isfinite(folds)) and more.get("iter", 0) < halving["last_iter"]:
                # a halving rung before the last: the candidate was stopped at n_resources epochs
                # (promoted or not, its final word is a later trial); sklearn's best comes from the
                # last rung, and so does the study's (only COMPLETE trials compete)
                state = TrialState.PRUNED
                intermediate = {int(more["n_resources"]) - 1: float(np.mean(folds))}
            elif all(np.isfinite(folds)):
                value = float(np.mean(folds))
                state = TrialState.COMPLETE
            else:
                reason = reason or "a fold failed (score is NaN)"
        if state == TrialState.FAIL:
            user_attrs[TRIAL.FAILURE] = reason or "unknown failure"
            failures_in_row += 1
        else:
            failures_in_row = 0
        # halving adds its resource (epochs) to the candidate's params: it is stored as n_resources
        p = {k: v for k, v in coerce_params(params).items() if k in distributions}
        curve = _mean_curve(curves)
        if intermediate:
            curve.update(intermediate)
        trial = optuna.trial.create_trial(
            state=state, value=value, params=p,
            distributions={k: distributions[k] for k in p}, user_attrs=clean_attr(user_attrs),
            intermediate_values=curve,
        )
        if row is not None and trial.datetime_complete is not None:  # the real span, for timelines
            span = float(row["mean_fit_time"] + row["mean_score_time"]) * n_splits
            trial.datetime_start = trial.datetime_complete - datetime.timedelta(seconds=span)
        study.add_trial(trial)
        number = counter["next"]
        counter["next"] += 1
        progress.trial_done(number, state.name, value, "" if reason is None else f"({reason[:80]})")
        if failures_in_row >= max_fail:
            raise StudyFailedError(
                f"study {study.study_name!r} stopped: {failures_in_row} candidates failed in a row"
                f" (last: {user_attrs[TRIAL.FAILURE]}); check the space ranges and the data"
                f" (search.max_failures_in_row = {max_fail})"
            )

    Base = _search_class(engine)
    state = {"ok": 0, "index": 0}
    counter = {"next": len(study.get_trials(deepcopy=False))}  # trial numbers: one read, not one per trial
    halving = {"last_iter": 0}  # set from the search once sklearn has planned its rungs

    def one_by_one(evaluate_candidates: Callable[..., Any], candidates: Iterable[dict[str, Any]],
                   more_results: Optional[dict[str, list[Any]]] = None, cv: Any = None,
                   extra: Optional[dict[str, Any]] = None) -> Any:
        candidates = list(candidates)
        results = None
        for i, params in enumerate(candidates):
            more = {k: v[i] for k, v in (more_results or {}).items()}
            index = state["index"]
            state["index"] += 1
            key = candidate_key(params, more.get("n_resources"))
            if key in done and engine != "halving":
                continue  # stored by an earlier run: not evaluated again
            # halving needs every score of a rung to pick the next one, so a resumed halving
            # search evaluates stored candidates again but does not store them twice
            record_it = key not in done
            log.drain()
            reason: Optional[str] = None
            row: Optional[dict[str, Any]] = None
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                try:
                    kw: dict[str, Any] = {"cv": cv} if cv is not None else {}
                    kw.update(extra or {})
                    if more_results is not None:
                        kw["more_results"] = {k: [v] for k, v in more.items()}
                    results = evaluate_candidates([params], **kw)
                    row = {k: v[-1] for k, v in results.items() if k.startswith(("split", "mean_", "std_"))}
                except ValueError as e:  # "All the N fits failed" for this one candidate
                    if "fits failed" not in str(e):
                        raise
                    reason = _failure_reason(str(e))
            for w in caught:
                if reason is None and ("fits failed" in str(w.message) or "Scoring failed" in str(w.message)):
                    reason = _failure_reason(str(w.message))
            rows = log.drain()
            epochs = [r["epochs"] for r in rows]
            if record_it:
                record(params, index, row, reason, epochs, more, [r["curve"] for r in rows if "curve" in r])
            if row is not None and np.all(np.isfinite([row[f"split{j}_test_score"] for j in range(n_splits)])):
                state["ok"] += 1
        return results

    import inspect

    base_takes_ctx = "callback_ctx" in inspect.signature(Base._run_search).parameters

    class _Recording(Base):  # type: ignore[misc, valid-type]
        def _run_search(self, evaluate_candidates: Callable[..., Any], callback_ctx: Any = None) -> None:
            if engine == "halving":
                search = self

                def wrapped(candidate_params: Any, cv: Any = None, more_results: Any = None,
                            callback_ctx: Any = None) -> Any:
                    candidate_params = list(candidate_params)
                    if (more_results or {}).get("iter", [None])[0] == 0:
                        # how many rungs sklearn will run (its own formula, known only after the
                        # loop as n_iterations_): needed now to tell the last rung from the others
                        from math import floor, log

                        n_required = 1 + floor(log(len(candidate_params), search.factor))
                        n_possible = 1 + floor(log(search.max_resources_ // search.min_resources_, search.factor))
                        halving["last_iter"] = min(n_required, n_possible) - 1
                    # sklearn's callback contexts allow one evaluation per task id: the per-candidate
                    # calls go without one (callbacks are an optional, experimental sklearn feature)
                    return one_by_one(evaluate_candidates, candidate_params, more_results, cv)

                if base_takes_ctx:
                    super()._run_search(wrapped, callback_ctx=callback_ctx)
                else:
                    super()._run_search(wrapped)
            elif engine == "grid":
                from sklearn.model_selection import ParameterGrid

                one_by_one(evaluate_candidates, ParameterGrid(self.param_grid))
            else:
                from sklearn.model_selection import ParameterSampler

                one_by_one(evaluate_candidates, ParameterSampler(
                    self.param_distributions, self.n_iter, random_state=self.random_state))
            if state["ok"] == 0 and not done:
                raise StudyFailedError(
                    f"study {study.study_name!r}: every candidate failed; see failure_reason of its trials"
                    " (`hpsearch status STUDY`) and check the space and data"
                )
            if state["ok"] == 0:  # everything left was already stored: make sklearn's bookkeeping happy
                raise _NothingLeft()

    est = make_estimator(ctx)
    common: dict[str, Any] = dict(scoring=scorer, cv=n_splits, refit=False, error_score=np.nan,
                                  n_jobs=cfg.search.n_jobs, verbose=0)
    if engine == "grid":
        search = _Recording(est, space.to_sklearn_grid(), **common)
    elif engine == "random":
        search = _Recording(est, space.to_sklearn_distributions(), n_iter=cfg.search.n_trials,
                            random_state=cfg.search.seed, **common)
    else:
        max_epochs = cfg.train.epochs
        min_res = cfg.search.min_resource or max(1, max_epochs // (cfg.search.factor ** 3))
        search = _Recording(
            est, space.to_sklearn_distributions(), n_candidates=cfg.search.n_trials, resource="epochs",
            max_resources=max_epochs, min_resources=min_res, factor=cfg.search.factor,
            random_state=cfg.search.seed, **common,
        )
    start = time.monotonic()
    try:
        search.fit(data.X_train, data.y_train, **fit_kwargs(ctx))
    except _NothingLeft:
        pass
    ctx.engine_info["search_seconds"] = time.monotonic() - start
    if engine == "halving":
        ctx.engine_info["halving"] = {"n_resources": list(map(int, getattr(search, "n_resources_", []))),
                                      "n_candidates": list(map(int, getattr(search, "n_candidates_", [])))}


def _mean_curve(curves: list[list[Optional[float]]]) -> dict[int, float]:
    """Per-epoch mean over the folds that trained that long (early stopping ends folds unevenly)."""
    out: dict[int, float] = {}
    for i in range(max((len(c) for c in curves), default=0)):
        vals = [c[i] for c in curves if i < len(c) and c[i] is not None and np.isfinite(c[i])]
        if vals:
            out[i] = float(np.mean(vals))
    return out


class _NothingLeft(Exception):
    pass


def planned_candidates(ctx: "StudyContext") -> Optional[int]:
    """How many candidates the search evaluates in all (None for halving: it depends on the data)."""
    cfg = ctx.cfg
    if cfg.search.engine == "grid":
        from sklearn.model_selection import ParameterGrid

        return len(ParameterGrid(ctx.space.to_sklearn_grid()))
    if cfg.search.engine == "random":
        dists = ctx.space.to_sklearn_distributions()
        if all(isinstance(d, list) for d in dists.values()):  # ParameterSampler caps at the grid size
            from sklearn.model_selection import ParameterGrid

            return min(cfg.search.n_trials or 10, len(ParameterGrid(dists)))
        return cfg.search.n_trials
    return None


def refit_best(ctx: "StudyContext", params: dict[str, Any]) -> Any:
    """Fit the best candidate on the whole training split (early stopping on the validation split)."""
    est = make_estimator(ctx)
    est.set_params(**params)
    est.fit(ctx.data.X_train, ctx.data.y_train, **fit_kwargs(ctx))
    return est
