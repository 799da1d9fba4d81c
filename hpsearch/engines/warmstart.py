"""Warm starts: ``search.enqueue`` (every engine) and ``search.warm_start`` (the Optuna engine).

* ``search.enqueue: [{n_neurons: 64, ...}, ...]``: known-good parameter sets are queued (Optuna's
  ``enqueue_trial(skip_if_exists=True)``) and run before anything is sampled;
* ``search.warm_start: {study: NAME}``: the completed trials of an earlier study in the same storage
  are copied in (``optuna.trial.create_trial`` + ``add_trials``) before sampling, so the sampler
  starts from what that study learnt. A trial is copied when the earlier study has the same metric,
  direction and data, and each of its parameters is in this space with a value the space can take.
  Copied trials carry ``TRIAL.COPIED_FROM``, no model (their models belong to the other study) and
  do not count toward ``search.n_trials``; a copied trial that stays the best is trained once at the
  end (:func:`train_params`).

The scikit-learn engines put enqueued sets first in their own candidate list (:func:`enqueued_first`)
and refuse ``warm_start`` (:func:`refuse_warm_start`).

In the Optuna engine both happen once per study, even with many workers: under the study lock, and only while the
study attribute ``STUDY.WARM_START`` (the summary: copied, skipped and why, enqueued) is unset.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any

from hpsearch.errors import ConfigError, UserError
from hpsearch.execution.budget import study_lock
from hpsearch.records import STUDY, TRIAL, clean_attr
from hpsearch.trials.context import Refit, RunContext

if TYPE_CHECKING:  # pragma: no cover
    from hpsearch.spec.config import StudyConfig
    from hpsearch.spec.space import SearchSpace

__all__ = ["check_warm_start", "check_warm_start_source", "enqueued_first", "refuse_warm_start",
           "warm_start", "copy_trials", "train_params"]

#: trial attributes not copied: the models and curves belong to the other study's artifact store
_NOT_COPIED = (TRIAL.MODEL_ARTIFACT, TRIAL.PREPROCESS_ARTIFACT, TRIAL.CURVE_ARTIFACT)


def refuse_warm_start(cfg: StudyConfig, engine: str, space: SearchSpace) -> None:
    """The scikit-learn engines take ``enqueue`` (checked here, placed by :func:`enqueued_first`) but
    not ``warm_start`` (one line): they draw or list their candidates without learning from earlier
    trials, so copied trials would guide nothing."""
    if cfg.search.warm_start is not None:
        raise ConfigError(f"search.warm_start: engine {engine} draws its candidates without learning from earlier"
                          " trials, so copies would guide nothing; use search.engine: optuna, or put the earlier"
                          " study's best parameters (`hpsearch best NAME`) in search.enqueue")
    check_warm_start(cfg, space)


def enqueued_first(cfg: StudyConfig, candidates: list[dict[str, Any]], grid: bool) -> list[dict[str, Any]]:
    """``candidates`` of a scikit-learn engine with ``search.enqueue`` first.

    Random / halving: the i-th enqueued set replaces the values it names in the i-th drawn candidate
    (the others stay drawn), so the budget (``n_trials``) is unchanged. Grid: every grid point runs
    anyway, so each enqueued set moves the first grid point it matches to the front (in enqueue order);
    a set that matches no grid point is a one-line error.
    """
    enqueue = [dict(e) for e in cfg.search.enqueue]
    if not enqueue:
        return candidates
    if not grid:
        if len(enqueue) > len(candidates):
            raise ConfigError(f"search.enqueue: {len(enqueue)} parameter sets, more than the {len(candidates)}"
                              f" candidates of engine {cfg.search.engine}; raise search.n_trials or enqueue fewer")
        return [{**c, **e} for c, e in zip(candidates, enqueue)] + candidates[len(enqueue):]
    front: list[int] = []
    for i, e in enumerate(enqueue):
        match = next((j for j, c in enumerate(candidates) if all(k in c and c[k] == v for k, v in e.items())), None)
        if match is None:
            raise ConfigError(f"search.enqueue[{i}]: {e} is no point of the grid; engine grid runs every grid point"
                              " and enqueue only puts points first: use values of the grid")
        if match not in front:
            front.append(match)
    return [candidates[j] for j in front] + [c for j, c in enumerate(candidates) if j not in front]


def check_warm_start(cfg: StudyConfig, space: SearchSpace) -> None:
    """Every enqueued value is one the space can take; a study does not warm-start from itself."""
    for i, params in enumerate(cfg.search.enqueue):
        for name, value in params.items():
            param = space.param_for(str(name))
            if param is None:
                raise ConfigError(f"search.enqueue[{i}].{name}: not a parameter of space; use one of"
                                  f" {', '.join(space.to_optuna_distributions())}")
            if not param.contains(value):
                raise ConfigError(f"search.enqueue[{i}].{name}: {value!r} is not a value space.{name} can take;"
                                  " change it or widen the space")
    ws = cfg.search.warm_start
    if ws is not None and ws.study == cfg.name:
        raise ConfigError("search.warm_start.study: is this study itself; name an earlier study")


def _study_problem(ctx: RunContext, source: Any) -> str | None:
    """Why no trial of ``source`` fits this study (metric, direction, data), or None."""
    attrs = source.user_attrs
    if ctx.several or len(source.directions) != 1:
        return "warm starts copy trials of one objective between studies of one objective"
    if source.direction.name.lower() != ctx.direction:
        return f"its direction is not {ctx.direction}"
    if attrs.get(STUDY.METRIC) not in (None, ctx.metric):
        return f"its metric {attrs.get(STUDY.METRIC)} is not {ctx.metric}"
    summary = attrs.get(STUDY.DATA_SUMMARY)
    mine = clean_attr(ctx.data.summary)
    # what the source recorded must match (a study stored before a key was added is compared on its own keys)
    if summary is not None and (set(summary) - set(mine) or any(mine[k] != v for k, v in summary.items())):
        return "its data differs (rows, features or classes)"
    return None


def _trial_problem(ctx: RunContext, t: Any) -> str | None:
    """Why one trial cannot be copied, or None."""
    if t.state.name != "COMPLETE" or t.value is None:
        return f"{t.state.name.lower()}, not complete"
    for name, value in t.params.items():
        param = ctx.space.param_for(name)
        if param is None:
            return f"{name} is not searched here"
        if not param.contains(value):
            return f"{name} outside this space"
    return None


def _no_source(name: str) -> UserError:
    return UserError(f"search.warm_start.study: no study {name!r} in this storage; name an existing study"
                     " (`hpsearch status` lists them)")


def check_warm_start_source(cfg: StudyConfig, url: str, storage: Any = None) -> None:
    """``search.warm_start``'s study is in the storage, checked before a run writes anything: without
    ``storage``, an SQLite file that does not exist yet holds no study (refused before it is created);
    with the opened storage, before this run's study is created in it."""
    ws = cfg.search.warm_start
    if ws is None:
        return
    if storage is None:
        from hpsearch.storage.urls import is_sqlite, sqlite_path

        path = sqlite_path(url) if is_sqlite(url) else None
        if path is not None and not path.exists():
            raise _no_source(ws.study)
        return
    try:
        storage.get_study_id_from_name(ws.study)
    except KeyError:
        raise _no_source(ws.study) from None


def copy_trials(ctx: RunContext, source_name: str) -> tuple[int, Counter[str]]:
    """Copy the compatible completed trials of ``source_name``: (copied, skipped per reason)."""
    import optuna

    try:
        source = optuna.load_study(study_name=source_name, storage=ctx.storage)
    except KeyError:
        raise _no_source(source_name) from None
    trials = source.get_trials(deepcopy=False)
    skipped: Counter[str] = Counter()
    problem = _study_problem(ctx, source)
    if problem is not None:
        skipped[problem] = len(trials)
        return 0, skipped
    dists = ctx.space.to_optuna_distributions()
    copies = []
    for t in trials:
        why = _trial_problem(ctx, t)
        if why is not None:
            skipped[why] += 1
            continue
        attrs = {k: v for k, v in t.user_attrs.items() if k not in _NOT_COPIED}
        attrs[TRIAL.COPIED_FROM] = f"{source_name}#{t.number}"
        copies.append(optuna.trial.create_trial(
            state=optuna.trial.TrialState.COMPLETE, value=t.value, params=dict(t.params),
            distributions={k: dists[k] for k in t.params}, user_attrs=attrs,
            intermediate_values=dict(t.intermediate_values)))
    ctx.study.add_trials(copies)
    return len(copies), skipped


def _summary_line(summary: dict[str, Any]) -> str:
    parts = []
    if summary.get("source"):
        line = f"copied {summary['copied']} trials of study {summary['source']}"
        if summary["skipped"]:
            line += "; skipped " + ", ".join(f"{n} ({why})" for why, n in summary["skipped"].items())
        parts.append(line)
    if summary.get("enqueued"):
        parts.append(f"queued {summary['enqueued']} parameter sets to run first")
    return "hpsearch: warm start: " + "; ".join(parts)


def warm_start(ctx: RunContext) -> dict[str, Any] | None:
    """Copy and enqueue once per study (see the module docstring); the summary when this process did it."""
    s = ctx.cfg.search
    if not s.enqueue and s.warm_start is None:
        return None
    with study_lock(ctx.storage, ctx.storage_url, ctx.study_id, ctx.study.study_name):
        if ctx.study.user_attrs.get(STUDY.WARM_START) is not None:
            return None  # done by an earlier run or another worker
        summary: dict[str, Any] = {"source": None, "copied": 0, "skipped": {}, "enqueued": 0}
        if s.warm_start is not None:
            copied, skipped = copy_trials(ctx, s.warm_start.study)
            summary.update(source=s.warm_start.study, copied=copied, skipped=dict(skipped))
        before = len(ctx.study.get_trials(deepcopy=False))
        for params in s.enqueue:
            ctx.study.enqueue_trial(dict(params), skip_if_exists=True)
        summary["enqueued"] = len(ctx.study.get_trials(deepcopy=False)) - before
        ctx.study.set_user_attr(STUDY.WARM_START, clean_attr(summary))
    ctx.observer.message(_summary_line(summary))
    return summary


def train_params(ctx: RunContext, params: dict[str, Any], seed: int | None = None) -> Refit:
    """Train one parameter set on the training split (early stopping on the validation split): the
    model of a best trial that has none stored (a copied trial, or a study being repaired);
    ``seed`` seeds Keras' random state first (initial weights, shuffling, dropout)."""
    import keras

    from hpsearch.models.builders import call_builder
    from hpsearch.trials.stopping import stop_rule

    if seed is not None:
        keras.utils.set_random_seed(int(seed))
    cfg, data = ctx.cfg, ctx.data
    full = {**ctx.space.full_params(params), **ctx.builder_extra}
    model = call_builder(ctx.builder, full, data.meta())
    callbacks = stop_rule(cfg.train.early_stopping, cfg.train.epochs, ctx.metric, ctx.direction,
                          best_weights_when_off=False).keras_callbacks()
    hist = model.fit(data.X_train, data.y_train, validation_data=(data.X_valid, data.y_valid), epochs=cfg.train.epochs,
                     batch_size=min(cfg.train.batch_size, len(data.y_train)), callbacks=callbacks, verbose=0)
    return Refit(model, data.preprocessor, len(hist.history.get("loss", [])))
