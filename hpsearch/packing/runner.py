"""The packed trial runner: K asked trials of the built-in MLP trained in one compiled model
(:mod:`hpsearch.packing.model`), each finished as an ordinary trial: its own params, per-epoch
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
from collections.abc import Callable
from typing import Any

import numpy as np

from hpsearch.models.builders import call_builder, output_spec
from hpsearch.packing.model import (
    AUTO_MIN_MEMBERS,
    MemberSpec,
    PackedModel,
    auto_pack_size,
    member_spec,
    pack_refusal,
    spec_n_params,
)
from hpsearch.packing.pack import Finisher, Pack
from hpsearch.packing.train import MemberResult, Pace, PackSettings, stop_settings
from hpsearch.records import TRIAL
from hpsearch.trials.constraints import MEASURED, TrialInfeasible, apply_measured, infeasible_attrs
from hpsearch.trials.context import Candidate, RunContext
from hpsearch.trials.rungs import ParetoRungs
from hpsearch.trials.runner import Fitted, TrialRunner

__all__ = ["KEEP_MODELS", "Finisher", "pack_plan", "pack_line", "PackedRunner"]

#: compiled pack models kept for the next packs (packs alternate between a few shapes: a depth
#: group's trials carried to a pack of their own, then the others'); each holds its weights,
#: optimizer state and compiled functions (a few MB at K=64 on digits)
KEEP_MODELS = 3


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
        want = _auto_k(auto, cfg.search.n_trials)  # auto_pack_size caps it at AUTO_MAX_MEMBERS
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


def pack_line(ctx: RunContext, k: int, note: str | None) -> str:
    """The one line that says what ``train.pack`` decided and why (no silent choices), for the
    outcome of :func:`pack_plan` (``note``: its refusal)."""
    cfg = ctx.cfg
    want, budget = cfg.train.pack, cfg.search.n_trials
    if note:
        return note.removeprefix("hpsearch: ")
    if k > 1:
        packs = f"; {budget} trials in {math.ceil(budget / k)} packs, freed slots refilled" if budget else ""
        return f"train.pack {want} -> {k}: trials of one shape train {k} at a time in one compiled model{packs}"
    if want != "auto":
        return f"train.pack {want}: one trial per model"
    largest = _largest_member(ctx, {**ctx.space.fixed, **ctx.builder_extra})
    if auto_pack_size(largest, int(cfg.train.batch_size)) < AUTO_MIN_MEMBERS:
        return (f"train.pack auto -> 1: the largest model the space allows ({largest} weights) leaves room for"
                f" fewer than {AUTO_MIN_MEMBERS} members (one trial per model; a pack pays only for small models)")
    return (f"train.pack auto -> 1: a budget of {budget} trials is under two packs of {AUTO_MIN_MEMBERS} (one trial per"
            " model; a pack's compile does not pay for so few trials)")


def _auto_k(k_max: int, budget: int | None) -> int:
    """``auto``'s K: the budget in as few packs of at most ``k_max`` as it takes, of equal size
    (70 trials: two packs of 35, not 64 and a 6 that pays a whole compile); 1 where a pack would
    be smaller than ``AUTO_MIN_MEMBERS`` or the budget is under two such packs (not worth a compile)."""
    if budget is None:
        return k_max if k_max >= AUTO_MIN_MEMBERS else 1
    k = math.ceil(budget / math.ceil(budget / max(1, k_max)))
    return k if k >= AUTO_MIN_MEMBERS and budget >= 2 * AUTO_MIN_MEMBERS else 1


def _study_refusal(ctx: RunContext) -> str | None:
    """Study settings a pack does not honour per member (each trial must behave as if alone).
    ``search.constraints: max_params`` packs (a member's size is known from its shape, checked
    before it is placed); a latency is measured on a built model of its own, so it does not."""
    cfg = ctx.cfg
    later = [n for n, _ in ctx.objectives[1:]]
    reasons = [
        (len(ctx.data.meta().get("X_shape_", (0, 0))) > 2, "N-D input"),
        (cfg.train.trial_timeout is not None, "train.trial_timeout"),
        (cfg.search.constraints is not None and cfg.search.constraints.max_latency_ms is not None,
         "search.constraints max_latency_ms"),
        (any(n != TRIAL.N_PARAMS for n in later), f"search.metric {', '.join(later)} (a pack measures n_params only)"),
        (cfg.model.init_from is not None, "model.init_from"),
        (bool(ctx.keras_callbacks), "keras_callbacks (a pack runs no per-member Keras callback)"),
    ]
    return next((why for bad, why in reasons if bad), None)


def _task(ctx: RunContext) -> str:
    from hpsearch.models.builders import task_of

    return task_of(ctx.data.meta())


class PackedRunner:
    """Trains the trials it is handed as packs (those that pack exactly) or one by one."""

    def __init__(self, ctx: RunContext, pack_size: int, extra_callbacks: list[Any] | None = None,
                 check_steps: set[int] | None = None, rungs: ParetoRungs | None = None) -> None:
        self.ctx, self.pack_size = ctx, pack_size
        self.single = TrialRunner(ctx, extra_callbacks, check_steps, rungs)
        #: the study's trials as stored now, for the keep rule (the packed loop gives its reservations' view)
        self.read_trials: Callable[[], list[Any]] = lambda: ctx.study.get_trials(deepcopy=False)
        self.deadline: float | None = None  # time.monotonic() by which packs end (search.timeout)
        #: trials of the study's budget not yet reserved as the loop last counted them (None: no budget):
        #: a refill at the budget's end does not wait for more free slots (pack.REFILL_SHARE)
        self.budget_left: int | None = None
        self.pace = Pace()  # how fast the last pack trained: what the next one is planned from
        self.compiled: list[PackedModel] = []  # the last packs' models, latest first: reused when members fit
        self.builds = self.reuses = 0  # packs that built (traced, compiled) a model / reused one
        #: pack shrinks (:mod:`hpsearch.packing.shrink`): how many, their models built / reused, the last line
        self.shrinks: dict[str, Any] = {"shrunk": 0, "built": 0, "reused": 0, "last": None}
        self.limit_attrs: dict[int, dict[str, Any]] = {}  # trial number -> its search.constraints values

    def pack_model(self, specs: list[MemberSpec], seeds: list[int], shrink: int | None = None
                   ) -> tuple[PackedModel, list[int]]:
        """The compiled model of a new pack and each member's slot in it: one of the last
        ``KEEP_MODELS`` packs' models when every member fits one of its slots
        (:meth:`PackedModel.host`: no rebuild, no trace, no compile; the members train as in a new
        build), else a new build (the oldest kept model dropped). ``shrink``: the slots of the pack
        whose members move to the model (:mod:`hpsearch.packing.shrink`): only a smaller one hosts
        them, and it is counted in ``shrinks``, not as a pack."""
        for pm in self.compiled:
            slots = pm.host(specs) if shrink is None or len(pm.specs) < shrink else None
            if slots is not None:
                pm.restart(slots, specs, seeds, seeds[0])
                self.compiled.remove(pm)
                self.compiled.insert(0, pm)
                self._count(shrink, "reused")
                return pm, slots
        del self.compiled[KEEP_MODELS - 1:]  # its memory goes before the new model is built
        pm = PackedModel(specs, self.ctx.data.meta(), steps_per_execution=self.ctx.cfg.train.steps_per_execution,
                         seed=seeds[0])
        pm.init_weights(seeds)
        self.compiled.insert(0, pm)
        self._count(shrink, "built")
        return pm, list(range(len(specs)))

    def _count(self, shrink: int | None, how: str) -> None:
        if shrink is not None:
            self.shrinks[how] += 1
        elif how == "built":
            self.builds += 1
        else:
            self.reuses += 1

    def plan(self, left: float) -> int | None:
        """How many trials a new pack can train for all their epochs in ``left`` seconds (at most
        ``pack_size``), from the last pack's pace; None before a pack ran two epochs."""
        return self.pace.fits(left, self.ctx.cfg.train.epochs, self.pack_size)

    def __call__(self, trial: Any) -> Candidate:
        """One trial alone (a re-queued trial, or the last of the budget)."""
        return self.single(trial)

    def run_pack(self, trials: list[Any], finish: Finisher,
                 more: Callable[[int], list[Any]] | None = None, reserve_s: float = 0.0) -> list[Any]:
        """Train ``trials`` (those that pack together, the others one by one); they end through
        ``finish([(trial, candidate), ...])`` as soon as they end (the members that end at one epoch
        together). With ``more`` (``more(n)``: up to n new
        trials, none when the budget is met), a slot whose member ended takes a new trial from it
        (see :class:`~hpsearch.packing.pack.Pack`). Returns the trials reserved from ``more``
        that found no slot: the next pack's. ``reserve_s``: the seconds their reservation took
        (shared into each trial's ``sample_time`` with its suggest time)."""
        t_start = time.monotonic()
        suggested = [self.member_params(t) for t in trials]
        sample_time = (reserve_s + time.monotonic() - t_start) / max(1, len(trials))
        over = {i for i, t in enumerate(trials) if not self.within_limits(t, suggested[i][1], finish)}
        packed = [i for i, (_, spec) in enumerate(suggested) if isinstance(spec, MemberSpec) and i not in over]
        if len(packed) < 2:
            packed = []
        left: list[Any] = []
        if packed:
            pack = Pack(self, [trials[i] for i in packed], [suggested[i][0] for i in packed],
                         [suggested[i][1] for i in packed], sample_time, finish, more)
            left = pack.train()
        for i, trial in enumerate(trials):
            if i not in packed and i not in over:
                self.limit_attrs.pop(trial.number, None)  # alone: the one-trial runner checks its limits
                finish([(trial, self.single(trial))])
        return left

    def within_limits(self, trial: Any, spec: MemberSpec | str, finish: Finisher) -> bool:
        """``search.constraints: max_params`` on a member before it is placed (its size is known from
        its shape): one over the limit ends through ``finish`` as PRUNED, never trained, as an
        unpacked trial does (:mod:`hpsearch.trials.constraints`); a feasible one's constraint values
        go with its trial attributes. A trial that runs alone is checked by the one-trial runner."""
        if self.ctx.cfg.search.constraints is None or not isinstance(spec, MemberSpec):
            return True
        meta = self.ctx.data.meta()
        n = spec_n_params(spec, int(meta["n_features_in_"]), output_spec(meta)[0])
        try:
            self.limit_attrs[trial.number] = apply_measured(self.ctx.cfg, trial, {MEASURED["max_params"]: float(n)})
        except TrialInfeasible as e:
            finish([(trial, Candidate(params=dict(trial.params), state="PRUNED", user_attrs=infeasible_attrs(e)))])
            return False
        return True

    def member_params(self, trial: Any) -> tuple[dict[str, Any], MemberSpec | str]:
        if trial.user_attrs.get(TRIAL.WORKER) != self.single.worker:  # a drafted trial was created with it
            trial.set_user_attr(TRIAL.WORKER, self.single.worker)
        p = self.ctx.space.full_params(self.ctx.space.suggest(trial))
        p.update(self.ctx.builder_extra)
        return p, member_spec(self.ctx.builder, p)

    def settings(self, pm: PackedModel) -> PackSettings:
        """How ``pm`` trains: the one-trial runner's batches and its early-stopping rule per member."""
        r = self.single
        return PackSettings(epochs=self.ctx.cfg.train.epochs, batch_size=r.batch_size, valid_batch=r.valid_batch,
                            metric=self.ctx.metric, direction=self.ctx.direction, y_valid_var=r.y_valid_var,
                            deadline=self.deadline, **stop_settings(r.rule, self.ctx.metric, pm, self.ctx.data.y_valid))

    def value(self, r: MemberResult) -> tuple[float | None, int]:
        """(trial value, 0-based epoch) of a member, by the rule an unpacked trial's value follows."""
        return self.single.rule.trial_value(r.values, r.best_epoch, self.ctx.direction)

    def keepers(self, res: list[MemberResult], numbers: list[int]) -> tuple[set[int], int | None]:
        """The members (indices of ``res``; ``numbers`` their trial numbers) whose models rank in
        the best ``keep_models`` and the one that leads the study (the only curve PNG): the one
        keep rule (:func:`hpsearch.storage.keep.finishing_keepers`, by the process's
        :class:`~hpsearch.storage.keep.KeepBar`), the pack's finishing members
        placed together, so a tied earlier trial that finishes last still keeps its model."""
        values = {i: v for i, r in enumerate(res) if r.state == "COMPLETE" and r.weights is not None
                  and (v := self.value(r)[0]) is not None}
        ok = list(values)
        finishing = [(values[i], numbers[i]) for i in ok]
        if not finishing:
            return set(), None  # nothing to place: no read of the study
        keep, lead = self.single.keep_bar.keepers(self.read_trials, finishing)
        return {ok[j] for j in keep}, None if lead is None else ok[lead]

    def candidate(self, trial: Any, params: dict[str, Any], r: MemberResult, attrs: dict[str, Any],
                   keep: bool, lead: bool) -> Candidate:
        cand = Candidate(params=dict(trial.params), state=r.state, user_attrs=attrs, failure=r.failure)
        if r.state == "PRUNED":
            attrs[TRIAL.PRUNED_AT] = r.stopped_at
            return cand
        if r.state != "COMPLETE":
            return cand
        value, best = self.value(r)
        if value is None or r.weights is None:
            cand.state, cand.failure = "FAIL", "no finite validation value was logged"
            return cand
        cand.value = value
        if self.ctx.several:  # every objective's value: the trained first, then the measured (n_params)
            cand.values = [value, *(float(attrs[n]) for n, _ in self.ctx.objectives[1:])]
            keep = keep or self.single.on_front(cand.values)  # a front model may be picked later
        if keep:
            import keras

            # the session's names reset, without the full garbage collection clear_session adds by
            # default: 0.35-1 s a kept model late in a long study (every stored trial is tracked)
            keras.backend.clear_session(free_memory=False)
            model = call_builder(self.ctx.builder, params, self.ctx.data.meta(), clear_session=False)
            model.set_weights([np.asarray(w) for w in r.weights])
            history = {f"val_{self.ctx.metric}": list(r.values)}
            self.single.store_model(trial, params, Fitted(value=value, epochs=r.epochs, model=model,
                                                            history=history, best_epoch=best + 1), attrs, lead)
        return cand
