"""The packed trial runner: K asked trials of the built-in MLP trained in one compiled model
(:mod:`hpsearch.packing`), each finished as an ordinary trial: its own params, per-epoch
intermediate values, value or pruned / failed state, user attributes (fit time apportioned by
epochs, epochs, n_params, pack size and slot) and, when it ranks in the best K, its own standalone
Keras model (the builder's model with the member's weights), stored through the usual artifact path.

:func:`pack_plan` decides ``train.pack``: ``auto`` (or a K) packs only what packs exactly and
otherwise runs one trial at a time, saying why in one line.
"""

from __future__ import annotations

import itertools
import math
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np

from hpsearch.builders import call_builder
from hpsearch.engines.base import Candidate, RunContext
from hpsearch.engines.trial_runner import TrialRunner, _Fitted
from hpsearch.packing import (
    MemberResult,
    MemberSpec,
    PackedModel,
    PackSettings,
    auto_pack_size,
    member_seeds,
    member_spec,
    pack_refusal,
    train_pack,
)
from hpsearch.records import TRIAL, best_of, is_better, ranked

__all__ = ["pack_plan", "PackedRunner"]

_AUTO_MAX = 64  # auto: each pack pays one trace and compile (seconds), so fewer, larger packs
_AUTO_MIN = 4  # auto: fewer members do not pay (measured: K=2 no faster than one trial at a time)


def _extremes(p: Any) -> list[Any]:
    choices = getattr(p, "choices", None)
    return list(choices) if choices is not None else [p.low, p.high]


def _largest_member(ctx: RunContext, base: dict[str, Any]) -> int:
    """Parameters of the largest model the space allows (what auto sizes the pack by)."""
    space = ctx.space.params
    meta = ctx.data.meta()
    try:  # a user builder's knobs may be anything: it is refused later, the size does not matter
        hidden = max(_extremes(space["n_hidden"])) if "n_hidden" in space else base.get("n_hidden", 1)
        width = max(_extremes(space["n_neurons"])) if "n_neurons" in space else base.get("n_neurons", 30)
        sizes = [int(np.prod(meta.get("n_features_in_") or 1)), *([int(width)] * int(hidden)),
                 int(meta.get("n_classes_") or meta.get("n_outputs_") or 1)]
    except (TypeError, ValueError):
        return 0
    return sum(a * b + b for a, b in itertools.pairwise(sizes))


def pack_plan(ctx: RunContext) -> tuple[int, str | None]:
    """(K, note): the pack size for this study and, when ``train.pack`` asked for packing that this
    study cannot use, the one-line reason it runs one trial at a time."""
    import keras

    cfg = ctx.cfg
    want = cfg.train.pack
    base = {**ctx.space.fixed, **ctx.builder_extra}
    if want == "auto":
        auto = auto_pack_size(_largest_member(ctx, base), int(cfg.train.batch_size))  # auto: resolved by then
        want = _auto_k(min(auto, _AUTO_MAX), cfg.search.n_trials)
    if want == 1:
        return 1, None  # auto chose 1 for a budget or model size that packing does not pay for: no note
    why = pack_refusal(ctx.builder, _task(ctx), ctx.metric, cfg.search.cv, cfg.train.class_weight,
                       keras.backend.backend()) or _study_refusal(ctx)
    spec = member_spec(ctx.builder, base) if why is None else None
    if isinstance(spec, str):
        why = f"model.fixed {spec}"
    for name, p in ctx.space.params.items() if why is None else ():
        bad = [v for v in _extremes(p) if isinstance(member_spec(ctx.builder, {**base, name: v}), str)]
        if bad:
            why = f"space.{name} = {bad[0]!r}"
            break
    if why is not None:
        return 1, f"hpsearch: train.pack {cfg.train.pack} -> 1: {why} is not packed yet (one trial per model)"
    return int(want), None


def _auto_k(k_max: int, budget: int | None) -> int:
    """``auto``'s K: the budget in as few packs of at most ``k_max`` as it takes, of equal size
    (70 trials: two packs of 35, not 64 and a 6 that pays a whole compile); 1 where a pack would
    be smaller than ``_AUTO_MIN`` or the budget is under two such packs (not worth a compile)."""
    if budget is None:
        return k_max if k_max >= _AUTO_MIN else 1
    k = math.ceil(budget / math.ceil(budget / max(1, k_max)))
    return k if k >= _AUTO_MIN and budget >= 2 * _AUTO_MIN else 1


def _study_refusal(ctx: RunContext) -> str | None:
    """Study settings a pack does not honour per member (each trial must behave as if alone)."""
    cfg = ctx.cfg
    reasons = [
        (len(ctx.data.meta().get("X_shape_", (0, 0))) > 2, "N-D input"),
        (cfg.train.trial_timeout is not None, "train.trial_timeout"),
        (cfg.search.constraints is not None, "search.constraints"),
        (cfg.model.init_from is not None, "model.init_from"),
    ]
    return next((why for bad, why in reasons if bad), None)


def _task(ctx: RunContext) -> str:
    from hpsearch.builders import task_of

    return task_of(ctx.data.meta())


class _Reports:
    """Per-epoch ``trial.report`` of every member on one writer thread (off the training thread),
    flushed before a pruner is asked: the pack's version of ``PruningReporter``."""

    def __init__(self, trials: list[Any], check_steps: set[int] | None) -> None:
        self.trials, self.check_steps = trials, check_steps
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hpsearch-pack-report")
        self.pending: list[Future[Any]] = []
        self.wait_time = 0.0

    def flush(self) -> None:
        t0 = time.monotonic()
        pending, self.pending = self.pending, []
        for fut in pending:
            fut.result()  # a storage error surfaces here, as with one trial
        self.wait_time += time.monotonic() - t0

    def __call__(self, epoch: int, values: dict[int, float]) -> set[int]:
        def write() -> None:
            for i, v in values.items():
                self.trials[i].report(v, epoch)

        self.pending.append(self.pool.submit(write))
        if self.check_steps is not None and epoch not in self.check_steps:
            return set()
        self.flush()
        t0 = time.monotonic()
        pruned = {i for i in values if self.trials[i].should_prune()}
        self.wait_time += time.monotonic() - t0
        return pruned

    def close(self) -> None:
        try:
            self.flush()
        finally:
            self.pool.shutdown(wait=True)


class PackedRunner:
    """Trains the trials it is handed as packs (those that pack exactly) or one by one."""

    def __init__(self, ctx: RunContext, pack_size: int, extra_callbacks: list[Any] | None = None) -> None:
        self.ctx, self.pack_size = ctx, pack_size
        self.single = TrialRunner(ctx, extra_callbacks)

    def __call__(self, trial: Any) -> Candidate:
        """One trial alone (a re-queued trial, or the last of the budget)."""
        return self.single(trial)

    def run_pack(self, trials: list[Any]) -> list[Candidate]:
        """Every trial of ``trials`` finished, in order."""
        ctx, worker = self.ctx, self.single.worker
        t_start = time.monotonic()
        params, specs = [], []
        for trial in trials:
            trial.set_user_attr(TRIAL.WORKER, worker)
            p = ctx.space.full_params(ctx.space.suggest(trial))
            p.update(ctx.builder_extra)
            params.append(p)
            specs.append(member_spec(ctx.builder, p))
        packed = [i for i, s in enumerate(specs) if isinstance(s, MemberSpec)]
        out: list[Candidate | None] = [None] * len(trials)
        if len(packed) > 1:
            sample_time = (time.monotonic() - t_start) / len(trials)
            for i, cand in zip(packed, self._train([trials[i] for i in packed], [params[i] for i in packed],
                                                   [specs[i] for i in packed], sample_time)):
                out[i] = cand
        return [c if c is not None else self.single(t) for c, t in zip(out, trials)]

    def _settings(self) -> PackSettings:
        cfg, r = self.ctx.cfg, self.single
        es, epochs = cfg.train.early_stopping, cfg.train.epochs
        return PackSettings(epochs=epochs, batch_size=r.batch_size, valid_batch=r.valid_batch, metric=self.ctx.metric,
                            direction=self.ctx.direction, patience=es.patience if es is not None else epochs,
                            min_delta=es.min_delta if es is not None else 0.0,
                            restore_best=es.restore_best_weights if es is not None else True,
                            y_valid_var=r.y_valid_var)

    def _train(self, trials: list[Any], params: list[dict[str, Any]], specs: list[Any],
               sample_time: float) -> list[Candidate]:
        ctx, data = self.ctx, self.ctx.data
        from hpsearch.estimators import _seeded

        seeds = member_seeds(ctx.cfg.search.seed, [t.number for t in trials])
        pm = PackedModel(specs, data.meta(), steps_per_execution=ctx.cfg.train.steps_per_execution, seed=seeds[0])
        pm.init_weights(seeds)
        reports = _Reports(trials, self.single.check_steps)
        t0 = time.monotonic()
        try:
            with _seeded(seeds[0]):  # Keras' shuffled batch order, restored after
                res = train_pack(pm, self.single.X_train, self.single.y_train, data.X_valid, data.y_valid,
                                 self._settings(), reports, callbacks=self.single.extra_callbacks)
        finally:
            reports.close()
        fit_time = time.monotonic() - t0 - reports.wait_time
        total_epochs = max(1, sum(r.epochs for r in res))
        keep, lead = self._keepers(res)
        cands = []
        for slot, (trial, p, r) in enumerate(zip(trials, params, res)):
            share = r.epochs / total_epochs
            attrs: dict[str, Any] = {
                TRIAL.EPOCHS: r.epochs, TRIAL.FIT_TIME: fit_time * share, TRIAL.REPORT_TIME: reports.wait_time * share,
                TRIAL.SAMPLE_TIME: sample_time, TRIAL.WORKER: self.single.worker, TRIAL.N_PARAMS: pm.n_params(slot),
                TRIAL.PACK_SIZE: len(trials), TRIAL.PACK_SLOT: slot}
            t_keep = time.monotonic()
            cands.append(self._candidate(trial, p, r, attrs, slot in keep, slot == lead))
            attrs[TRIAL.OVERHEAD_TIME] = sample_time + attrs[TRIAL.REPORT_TIME] + time.monotonic() - t_keep
        return cands

    def _keepers(self, res: list[MemberResult]) -> tuple[set[int], int | None]:
        """The members whose models rank in the best ``keep_models`` with the pack's own members
        counted (the one-trial rule sees finished trials only: it would store every member of a
        first pack), and the member that leads the study (the only curve PNG)."""
        direction, k = self.ctx.direction, self.ctx.cfg.search.keep_models
        values = {i: v for i, r in enumerate(res) if r.state == "COMPLETE" and r.weights is not None
                  and (v := best_of(r.values, direction)[0]) is not None}
        done = ranked(self.ctx.study.get_trials(deepcopy=False), direction)
        stored = [t.value for t in done if t.user_attrs.get(TRIAL.MODEL_ARTIFACT)]
        order = sorted(values, key=lambda i: values[i], reverse=direction == "maximize")  # stable: ties to slot
        keep = {i for j, i in enumerate(order)
                if j + sum(not is_better(values[i], v, direction) for v in stored) < k}
        lead = order[0] if order and (not done or is_better(values[order[0]], done[0].value, direction)) else None
        return keep, lead

    def _candidate(self, trial: Any, params: dict[str, Any], r: MemberResult, attrs: dict[str, Any],
                   keep: bool, lead: bool) -> Candidate:
        cand = Candidate(params=dict(trial.params), state=r.state, user_attrs=attrs, failure=r.failure)
        if r.state == "PRUNED":
            attrs[TRIAL.PRUNED_AT] = r.stopped_at
            return cand
        if r.state != "COMPLETE":
            return cand
        value, best = best_of(r.values, self.ctx.direction)
        if value is None or r.weights is None:
            cand.state, cand.failure = "FAIL", "no finite validation value was logged"
            return cand
        cand.value = value
        if keep:
            model = call_builder(self.ctx.builder, params, self.ctx.data.meta())
            model.set_weights([np.asarray(w) for w in r.weights])
            history = {f"val_{self.ctx.metric}": list(r.values)}
            self.single._store_model(trial, params, _Fitted(value=value, epochs=r.epochs, model=model,
                                                            history=history, best_epoch=best + 1), attrs, lead)
        return cand
