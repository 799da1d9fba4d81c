"""One pack's run (:class:`Pack`): its slots, each holding one trial at a time, trained in one
compiled model (:func:`hpsearch.packing.train.train_pack`); members that end are finished as trials
at once and their slots refilled. :class:`Reports` writes every member's per-epoch values (one
transaction per epoch) and asks the pruners at rungs. The runner that plans packs and builds or
reuses their models is :class:`hpsearch.packing.runner.PackedRunner`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Protocol

from hpsearch.packing import shrink as shrinking
from hpsearch.packing.model import MemberSpec, PackedModel, member_seeds
from hpsearch.packing.shrink import load_states, member_states, shrink_due
from hpsearch.packing.train import MemberResult, Pace, PackSettings, train_pack
from hpsearch.records import TRIAL
from hpsearch.storage.batch import write_intermediate_values
from hpsearch.trials.context import Candidate, RunContext
from hpsearch.trials.runner import TrialRunner

Finisher = Callable[[list[tuple[Any, Candidate]]], None]  # records trials that ended together

__all__ = ["Finisher", "Pack", "PackHost", "Reports", "REFILL_SHARE", "refill_batch", "refill_line"]

#: A freed slot of a pack of K waits until at least ``max(1, K // REFILL_SHARE)`` of its slots are free
#: before a refill reserves trials for them (issue 26): members that end at different epochs (early
#: stopping, pruning, slots no reserved trial fits) otherwise make refills of 1-10 trials, each paying a
#: reservation's fixed cost (the study read, the TPE fit, the create transaction) and, as the trials it
#: starts end together, a tell's. Waiting slots train nothing while their pack still computes them. A
#: count, never a time: a study run twice with one seed refills at the same epochs. No wait when no
#: member is live, when the study's budget has no more trials left than slots free, or under
#: ``search.timeout`` once the time left fits fewer than two generations of the pack's members.
REFILL_SHARE = 8


def refill_batch(k: int) -> int:
    """The fewest free slots of a pack of ``k`` that a refill reserves for (:data:`REFILL_SHARE`)."""
    return max(1, k // REFILL_SHARE)


def refill_line(k: int) -> str | None:
    """The one line saying the refill rule for packs of ``k`` (None: every freed slot refills at once)."""
    n = refill_batch(k)
    if n == 1:
        return None
    return (f"pack refills: a freed slot waits until {n} of the pack's {k} slots are free (K/{REFILL_SHARE}), so"
            f" trials are reserved and told in batches; not when no member trains, at the budget's end, or"
            f" when search.timeout leaves time for fewer than two generations of members")


class PackHost(Protocol):
    """What a :class:`Pack` uses of the runner that started it
    (:class:`hpsearch.packing.runner.PackedRunner`): the study's context, the one-trial runner's
    settings, the pace and deadline, and the runner's per-trial rules."""

    ctx: RunContext
    single: TrialRunner
    pace: Pace
    deadline: float | None
    budget_left: int | None  # trials of the study's budget not yet reserved, as last counted (None: no budget)
    limit_attrs: dict[int, dict[str, Any]]  # trial number -> its search.constraints values
    shrinks: dict[str, Any]  # pack shrinks: {"shrunk", "built", "reused", "last"}

    def pack_model(self, specs: list[MemberSpec], seeds: list[int], shrink: int | None = None
                   ) -> tuple[PackedModel, list[int]]: ...

    def settings(self, pm: PackedModel) -> PackSettings: ...

    def member_params(self, trial: Any) -> tuple[dict[str, Any], MemberSpec | str]: ...

    def within_limits(self, trial: Any, spec: MemberSpec | str, finish: Finisher) -> bool: ...

    def keepers(self, res: list[MemberResult], numbers: list[int]) -> tuple[set[int], int | None]: ...

    def candidate(self, trial: Any, params: dict[str, Any], r: MemberResult, attrs: dict[str, Any],
                  keep: bool, lead: bool) -> Candidate: ...


class Reports:
    """Per-epoch intermediate values of every member on one writer thread (off the training thread),
    flushed before a pruner is asked: the pack's version of ``PruningReporter``. ``trials`` maps a
    slot to its current trial (a refilled slot reports for its new trial). An epoch's values of all
    members are ONE storage transaction (:func:`hpsearch.storage.batch.write_intermediate_values`),
    not one per member: the storage round trips of a pack epoch do not grow with K (issue 23); when
    the storage is slower than an epoch, one transaction takes every epoch reported meanwhile. A
    crash loses at most the values not yet written; a pruner asks only after they all are."""

    def __init__(self, trials: dict[int, Any], check_steps: set[int] | None, storage: Any,
                 decide: Callable[[dict[int, tuple[int, float]]], set[int]] | None = None) -> None:
        """``decide``: the members to prune among those at a step where pruning is due (a study of
        several objectives: :class:`~hpsearch.trials.rungs.ParetoRungs`); None: each trial's pruner."""
        self.trials, self.check_steps, self.storage, self.decide = trials, check_steps, storage, decide
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hpsearch-pack-report")
        self.pending: list[Future[Any]] = []
        self.rows: list[tuple[Any, int, float]] = []  # reported, not yet taken by a write
        self.lock = threading.Lock()
        self.wait_time = 0.0

    def flush(self) -> None:
        t0 = time.monotonic()
        pending, self.pending = self.pending, []
        for fut in pending:
            fut.result()  # a storage error surfaces here, as with one trial
        self.wait_time += time.monotonic() - t0

    def __call__(self, values: dict[int, tuple[int, float]]) -> set[int]:
        now = [(self.trials[i], epoch, float(v)) for i, (epoch, v) in values.items()]
        # compat.PRIVATE_HOOKS: the trial's cached frozen trial, which trial.report keeps in step
        # with the storage and should_prune hands the pruner
        with self.lock:
            self.rows += [(t, e, v) for t, e, v in now if e not in t._cached_frozen_trial.intermediate_values]
        self.pending.append(self.pool.submit(self._write))
        due = [i for i, (epoch, _) in values.items() if self.check_steps is None or epoch in self.check_steps]
        if not due:
            return set()
        self.flush()
        t0 = time.monotonic()
        if self.decide is not None:
            pruned = self.decide({i: values[i] for i in due})
        else:
            pruned = {i for i in due if self.trials[i].should_prune()}
        self.wait_time += time.monotonic() - t0
        return pruned

    def _write(self) -> None:
        """Write every value reported so far in one transaction: one per epoch, or several epochs
        at once when the storage is slower than an epoch (the writes do not queue up)."""
        with self.lock:
            rows, self.rows = self.rows, []
        if not rows:
            return  # an earlier write took them
        # compat.PRIVATE_HOOKS: the trial's storage id; an error surfaces at the next flush
        write_intermediate_values(self.storage, [(t._trial_id, e, v) for t, e, v in rows])
        for t, e, v in rows:
            t._cached_frozen_trial.intermediate_values[e] = v

    def close(self) -> None:
        try:
            self.flush()
        finally:
            self.pool.shutdown(wait=True)


class Pack:
    """One pack's run: its slots, each holding one trial at a time. When members end, they are
    finished as trials at once (their stored model, value, attributes apportioned by epochs), and
    each freed slot takes a new trial from ``more`` if that trial fits the slot without a rebuild
    (:meth:`PackedModel.fits`); a trial that fits no free slot waits for one (at most
    ``_WAITING`` wait; left over at the end, they start the next pack)."""

    _WAITING = 4

    def __init__(self, runner: PackHost, trials: list[Any], params: list[dict[str, Any]], specs: list[Any],
                 sample_time: float, finish: Finisher,
                 more: Callable[[int], list[Any]] | None) -> None:
        self.runner, self.finish, self.more = runner, finish, more
        self.pm, slots = runner.pack_model(specs, member_seeds(runner.ctx.cfg.search.seed, [t.number for t in trials]))
        self.trials, self.params = dict(zip(slots, trials)), dict(zip(slots, params))  # slot -> its trial
        self.sample_time: dict[int, float] = dict.fromkeys(slots, sample_time)
        self.waiting: list[tuple[Any, dict[str, Any], MemberSpec | str, float]] = []
        self.member_epochs = 0  # epochs trained by every member so far (apportions the fit time)
        self.refill_s = 0.0  # seconds spent in refills so far (members told, new ones reserved): not fit time
        self.size = len(self.pm.specs)  # the compiled model's slots (a reused model's spares included)
        #: slot -> (pack size, slot) its member started in, for a member moved by a shrink: its trial's
        #: PACK_SIZE / PACK_SLOT stay those it started with (any other member: ``size``, its slot)
        self.origin: dict[int, tuple[int, int]] = {}

    def train(self) -> list[Any]:
        ctx, data, single = self.runner.ctx, self.runner.ctx.data, self.runner.single
        self.reports = Reports(self.trials, single.check_steps, ctx.storage,
                                self._rung_decision if single.rungs is not None else None)
        self.t0 = time.monotonic()
        try:
            res = train_pack(self.pm, single.X_train, single.y_train, data.X_valid, data.y_valid,
                             self.runner.settings(self.pm), self.reports, callbacks=single.extra_callbacks,
                             refill=self._refill if self.more is not None else None, pace=self.runner.pace,
                             shrink=self)
            self._end([i for i in range(self.size) if i in self.trials], res)
        finally:
            self.reports.close()
        return [w[0] for w in self.waiting]

    def _rung_decision(self, due: dict[int, tuple[int, float]]) -> set[int]:
        """The members to prune among ``due`` (slot -> (epoch, value)), judged together per rung by
        the study's Pareto rung rule with every stored trial that reached it (several objectives)."""
        rungs = self.runner.single.rungs
        assert rungs is not None
        pruned: set[int] = set()
        for step in {e for e, _ in due.values()}:
            slots = {self.trials[i].number: i for i, (e, _) in due.items() if e == step}
            known = {i: {TRIAL.N_PARAMS: float(self.pm.n_params(i))} for i in slots.values()}
            reaching = {n: (due[i][1], [known[i][k] for k in rungs.known]) for n, i in slots.items()}
            pruned |= {slots[n] for n in rungs.prune(self.runner.ctx.study, step, reaching)}
        return pruned

    def _end(self, members: list[int], res: list[MemberResult]) -> None:
        """Finish the ended members' trials (the pack's fit time so far, apportioned by epochs)."""
        self.reports.flush()
        self.member_epochs += sum(res[i].epochs for i in members)
        busy = sum(r.epochs for i, r in enumerate(res) if i not in members and r.state == "RUNNING")
        # training only: not the report writes nor the refills (ending members, reserving new ones)
        fit_time = time.monotonic() - self.t0 - self.reports.wait_time - self.refill_s
        per_epoch = fit_time / max(1, self.member_epochs + busy)
        keep_s, ended = 0.0, []
        keep, lead = self.runner.keepers([res[i] for i in members], [self.trials[i].number for i in members])
        for j, i in enumerate(members):
            trial, r = self.trials.pop(i), res[i]
            attrs: dict[str, Any] = {
                TRIAL.EPOCHS: r.epochs, TRIAL.FIT_TIME: per_epoch * r.epochs,
                TRIAL.REPORT_TIME: self.reports.wait_time * r.epochs / max(1, self.member_epochs + busy),
                TRIAL.SAMPLE_TIME: self.sample_time[i], TRIAL.WORKER: self.runner.single.worker,
                TRIAL.N_PARAMS: self.pm.n_params(i), **dict(zip((TRIAL.PACK_SIZE, TRIAL.PACK_SLOT),
                                                                self.origin.get(i, (self.size, i)))),
                TRIAL.HISTORY: {f"val_{self.runner.ctx.metric}": list(r.values)}}
            if r.deadline_stop:
                attrs[TRIAL.DEADLINE_STOP] = r.stopped_at
            attrs.update(self.runner.limit_attrs.pop(trial.number, {}))
            t_keep = time.monotonic()
            cand = self.runner.candidate(trial, self.params.pop(i), r, attrs, j in keep, j == lead)
            attrs[TRIAL.OVERHEAD_TIME] = self.sample_time[i] + attrs[TRIAL.REPORT_TIME] + time.monotonic() - t_keep
            ended.append((trial, cand))
            if TRIAL.MODEL_ARTIFACT in attrs:
                keep_s += time.monotonic() - t_keep
        t_tell = time.monotonic()
        if ended:
            self.finish(ended)  # told together (one transaction where the loop can)
        pace = self.runner.pace  # what ending members costs (told; kept models stored): the deadline keeps room
        pace.finish_s = (time.monotonic() - t_tell) / len(ended) if ended else pace.finish_s
        pace.keep_s = keep_s if keep_s else pace.keep_s

    def _refill(self, ended: list[int], res: list[MemberResult], room: bool) -> set[int]:
        """Finish ``ended`` and give their slots new trials while a member's epochs fit before the
        deadline (``room``); returns the slots refilled."""
        t0 = time.monotonic()
        try:
            return self._refill_slots(ended, res, room)
        finally:
            self.refill_s += time.monotonic() - t0

    def _refill_slots(self, ended: list[int], res: list[MemberResult], room: bool) -> set[int]:
        self.placing: list[tuple[int, MemberSpec, int]] = []
        try:
            return self._fill(ended, res, room)
        finally:
            self.pm.replace(self.placing)  # every slot refilled here, in one write

    def _fill(self, ended: list[int], res: list[MemberResult], room: bool) -> set[int]:
        self._end(ended, res)
        if not room:
            self.more = None  # no new member could end before search.timeout: none is started
            return set()
        free, placed = [*ended, *sorted(self.pm.empty)], set()  # a reused model's spare slots too
        for item in list(self.waiting):  # waiting trials first, in the order they were reserved
            slot = next((m for m in free if isinstance(item[2], MemberSpec) and self.pm.fits(m, item[2])), None)
            if slot is not None:
                self.waiting.remove(item)
                self._place(slot, item)
                free.remove(slot)
                placed.add(slot)
        while free and self.more is not None and len(self.waiting) < self._WAITING:
            if self._hold(len(free), sum(r.state == "RUNNING" for r in res) + len(placed)):
                break  # the free slots wait for more (REFILL_SHARE); each later refill sees them again
            t0 = time.monotonic()
            batch = self.more(len(free))  # one reservation for the free slots
            if not batch:
                self.more = None  # the budget is met or a stop rule tripped: train the members out
                break
            reserve = (time.monotonic() - t0) / len(batch)
            for trial in batch:
                t1 = time.monotonic()
                params, spec = self.runner.member_params(trial)
                if not self.runner.within_limits(trial, spec, self.finish):
                    continue  # over search.constraints: stored PRUNED, never trained; the slot stays free
                item = (trial, params, spec, reserve + time.monotonic() - t1)
                slot = next((m for m in free if isinstance(spec, MemberSpec) and self.pm.fits(m, spec)), None)
                if slot is None:
                    self.waiting.append(item)  # reserved: waits for a slot or starts the next pack
                    continue
                self._place(slot, item)
                free.remove(slot)
                placed.add(slot)
        return placed

    def _hold(self, free: int, live: int) -> bool:
        """Whether ``free`` slots wait for more before a reservation (:data:`REFILL_SHARE`): not when no
        member is ``live`` (the pack would end), the budget has at most ``free`` trials left, or the
        deadline leaves time for fewer than two generations of members."""
        if free >= refill_batch(self.size) or live == 0:
            return False
        left = self.runner.budget_left
        if left is not None and left <= free:
            return False
        deadline, epoch = self.runner.deadline, self.runner.pace.epoch()
        return deadline is None or (epoch is not None and deadline - time.monotonic()
                                    >= 2 * epoch * self.runner.ctx.cfg.train.epochs)

    def _place(self, slot: int, item: tuple[Any, dict[str, Any], MemberSpec | str, float]) -> None:
        """Give ``slot`` its new trial; its weights are set with the refill's others (:meth:`_refill_slots`)."""
        trial, params, spec, sample_time = item
        assert isinstance(spec, MemberSpec)  # fits() said so
        self.placing.append((slot, spec, member_seeds(self.runner.ctx.cfg.search.seed, [trial.number])[0]))
        self.trials[slot], self.params[slot], self.sample_time[slot] = trial, params, sample_time

    def due(self, pm: PackedModel, res: list[MemberResult]) -> bool:
        """Whether the running members move to a smaller model now (:func:`hpsearch.packing.shrink.shrink_due`):
        only once no refill can come (``more`` said none, no reserved trial waits for a slot) and,
        under ``search.timeout``, while the deadline leaves twice the largest compile seen."""
        if self.more is not None or self.waiting or not shrink_due(pm, res, self.runner.ctx.cfg.train.epochs):
            return False
        deadline = self.runner.deadline
        return deadline is None or deadline - time.monotonic() > 2 * self.runner.pace.compile_s

    def move(self, pm: PackedModel, res: list[MemberResult]) -> tuple[PackedModel, dict[int, int], PackSettings]:
        """Move the running members to a kept model that hosts them or a new build of just them
        (:meth:`PackedRunner.pack_model`) with their whole state (:func:`~hpsearch.packing.shrink.load_states`);
        the slot-keyed records (``trials`` (the reports' too), ``params``, ``sample_time``) follow them.
        Members that ended but are not recorded yet (a pack without refills) are recorded first."""
        self._end([i for i in sorted(self.trials) if res[i].state != "RUNNING"], res)
        live = [i for i, r in enumerate(res) if r.state == "RUNNING"]
        states = member_states(pm, live)
        built = self.runner.shrinks["built"]
        seeds = member_seeds(self.runner.ctx.cfg.search.seed, [self.trials[i].number for i in live])
        new, slots = self.runner.pack_model([pm.specs[i] for i in live], seeds, shrink=self.size)
        load_states(new, slots, states)
        moved = dict(zip(slots, live))
        tables: list[dict[int, Any]] = [self.trials, self.params, self.sample_time]
        for table in tables:  # in place: the reports hold ``trials``
            rows = {n: table[o] for n, o in moved.items()}
            table.clear()
            table.update(rows)
        self.origin = {n: self.origin.get(o, (self.size, o)) for n, o in moved.items()}
        left = max(self.runner.ctx.cfg.train.epochs - res[i].epochs for i in live)
        how = ("a new build of just them: one trace and compile" if self.runner.shrinks["built"] > built
               else "a kept compiled model: no compile")
        line = (f"hpsearch: pack shrink: {len(live)} of {self.size} members still training and no refill to come:"
                f" moved to a pack of {len(new.specs)} ({how}) with their weights, optimizer state and batch order;"
                f" up to {(self.size - len(new.specs)) * left} slot-epochs saved (rule: at most one live member in"
                f" {shrinking.SHRINK_SHARE} slots, slots saved x epochs left >= {shrinking.SHRINK_MIN_SLOT_EPOCHS})")
        self.runner.ctx.observer.message(line)
        self.runner.shrinks["shrunk"] += 1
        self.runner.shrinks["last"] = line.removeprefix("hpsearch: ")
        self.pm, self.size = new, len(new.specs)
        return new, moved, self.runner.settings(new)
