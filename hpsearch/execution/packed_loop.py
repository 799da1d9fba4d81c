"""The one trial loop, K trials a step: :mod:`hpsearch.execution.loop` (exact budget, heartbeat,
tell, re-queue, stale checks, stop rules, failure streak) for the packs of
:class:`~hpsearch.packing.runner.PackedRunner`. Each trial of a pack is reserved against the
budget, beats its heartbeat (the pack's live trials in one transaction:
:class:`~hpsearch.execution.control.PackHeartbeat`) and is recorded on its own through the loop's
one ``_record`` as soon as it ends; a slot it frees is refilled with a newly reserved trial (no rebuild, no compile)
while the budget and the stop rules allow. A stopped or lost pack fails and re-queues every trial
still running, so no work is counted twice and none is lost.

With ``search.timeout``, packs respect its deadline: each pack after the first is planned from the
last one's pace (as many trials as can train all their epochs in the time left; none: the search
stops), a freed slot takes no new trial once a member's epochs no longer fit, and members still
running when the next epoch would pass the deadline end at that epoch boundary, recorded COMPLETE
with their best epoch so far (trial attribute ``deadline_stopped_at_epoch``): every started trial
is recorded, each counted once in the budget. Reserved trials that never started are failed and
re-queued for a later run.
"""

from __future__ import annotations

import functools
import time
from typing import Any

from hpsearch.execution.budget import study_lock
from hpsearch.execution.control import Control, LoopSettings, PackHeartbeat, TrialLost, WorkerStopped
from hpsearch.execution.drafts import draft_trial, resync
from hpsearch.execution.loop import LoopOutcome, TrialLoop, failure_text, run_trials
from hpsearch.packing.runner import PackedRunner
from hpsearch.records import STUDY, TRIAL
from hpsearch.storage import is_connection_error
from hpsearch.storage.batch import Finish, finish_trials
from hpsearch.trials.context import Candidate, RunContext, finished_attrs

__all__ = ["run_packed_trials", "add_study_counts"]

#: a trial's attributes that say it stored an artifact (a kept model, its preprocessing, its curve)
_UPLOADS = (TRIAL.MODEL_ARTIFACT, TRIAL.PREPROCESS_ARTIFACT, TRIAL.CURVE_ARTIFACT)
#: ``STUDY.PACK_SHRINK``'s counts (its ``last`` is the last shrink's line)
_SHRINK_COUNTS = ("shrunk", "built", "reused")


def add_study_counts(study: Any, storage: Any, url: str, study_id: int, attr: str, counts: dict[str, int],
                     **fields: Any) -> dict[str, Any]:
    """Add ``counts`` to the study attribute ``attr``'s stored counts (absent: 0) and set ``fields``
    (the last line, ...), under the study lock: processes adding at once lose none of each other's.
    Returns the attribute as written."""
    with study_lock(storage, url, study_id, study.study_name):
        had = storage.get_study_user_attrs(study_id).get(attr) or {}
        value = {**had, **{k: int(had.get(k, 0)) + n for k, n in counts.items()}, **fields}
        storage.set_study_user_attr(study_id, attr, value)
    return value


class _PackLoop(TrialLoop):
    runner: PackedRunner
    drafted = False  # new trials drafted whole (hpsearch.execution.drafts), not asked one by one

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.runner.read_trials = self.budget.view.trials  # the keep rule reads what the reservations read
        if self.drafted:
            ctx, budget = self.ctx, self.budget
            attrs = {TRIAL.WORKER: self.runner.single.worker}
            budget.draft = lambda number: draft_trial(ctx.study, number, ctx.space.suggest, attrs)
            budget.beat_within = self.settings.grace / 4
        self.live: dict[int, tuple[Any, int]] = {}  # trial number -> (trial, storage id)
        self.beat = PackHeartbeat(self.ctx.storage, self.settings.interval, self.ctl)  # every live trial's
        self.carry: list[Any] = []  # reserved trials a pack found no slot for: the next pack's first
        self.deadline_stops = 0  # members of the current pack ended by search.timeout
        self.reuse_counts = (0, 0)  # STUDY.PACK_MODELS as last recorded: (built, reused)
        self.shrunk: dict[str, Any] = dict.fromkeys(_SHRINK_COUNTS, 0)  # this process's shrinks as last added

    def run(self) -> bool:
        """The loop; reserved trials still waiting for a slot are trained (or, stopping, re-queued)."""
        try:
            return self._run()
        finally:
            self.beat.stop()

    def _run(self) -> bool:
        try:
            return super().run()
        finally:
            while self.carry:
                carry, self.carry = self.carry, []
                why = f"worker stopped ({self.ctl.stop_reason})" if self.ctl.stopping else None
                if why is None and self._planned(len(carry)) < len(carry):
                    why = "search.timeout: not started, its epochs would end after the deadline"
                if why is not None:
                    for trial in carry:
                        self._finish(trial, Candidate(params=dict(trial.params), state="FAIL", failure=why), True)
                else:
                    self.run_pack(carry, refill=False)

    def step(self) -> tuple[bool, bool]:
        """Reserve up to K trials (after the carried ones; fewer when the timeout leaves time for
        fewer) and train them together."""
        k = self._planned(self.runner.pack_size)
        if k == 0:
            return False, False  # the stop rule tripped: the loop ends
        t0 = time.monotonic()
        trials, finished = self._reserve(k - len(self.carry))
        reserve_s = time.monotonic() - t0  # part of the trials' sample_time (drafted: their sampling too)
        trials, self.carry = [*self.carry, *trials], []
        if trials:
            self.run_pack(trials, reserve_s=reserve_s)
        return bool(trials), finished

    def _planned(self, k: int) -> int:
        """How many of ``k`` trials the next pack trains: all without ``search.timeout`` or before a
        pack has run, else as many as can train all their epochs before its deadline (0: the
        search stops, one line saying why). Each smaller pack is one line and a study attribute."""
        deadline = self.runner.deadline = self.rules.deadline()
        left = None if deadline is None else deadline - time.monotonic()
        fit = None if left is None else self.runner.plan(left)
        if fit is None or fit >= k:
            return k
        epochs = self.ctx.cfg.train.epochs
        if fit == 0:
            self.retry(lambda: self.rules.no_pack_fits(self.ctx, epochs), "stop-rule check")
            return 0
        self._note(f"hpsearch: search.timeout: a pack of {fit} trials, not {k}: {left:.1f} s left fit the compile"
                   f" and {epochs} epochs of {fit} members at the last pack's pace")
        return fit

    def _note(self, line: str) -> None:
        self.rules.note(self.ctx, line, self.retry)

    def _reuse_note(self) -> None:
        """A pack that reused the last pack's compiled model (no trace, no compile): one line the
        first time, and the counts as a study attribute whenever they change (added to the stored
        ones under the study lock, as :meth:`_shrink_note`'s: workers add up)."""
        built, reused = self.runner.builds, self.runner.reuses
        if not reused or self.reuse_counts == (built, reused):
            return
        line = ("hpsearch: packs of one shape share one compiled model: a pack whose members all fit the last"
                " pack's slots trains in its model (no trace, no compile; spare slots stay empty and still"
                " compute, so at least half must be filled)")
        if not self.reuse_counts[1]:
            self.ctx.observer.message(line)
        new = {"built": built - self.reuse_counts[0], "reused": reused - self.reuse_counts[1]}
        self.reuse_counts = (built, reused)
        ctx = self.ctx
        self.retry(lambda: add_study_counts(ctx.study, ctx.storage, ctx.storage_url, self.budget.study_id,
                                            STUDY.PACK_MODELS, new, note=line.removeprefix("hpsearch: ")),
                   "study attribute")

    def _shrink_note(self) -> None:
        """``STUDY.PACK_SHRINK`` whenever a pack shrank (:mod:`hpsearch.packing.shrink`; each shrink's
        line was said as its members moved): how many, the models built / reused for it, the last line.
        The counts are the study's: this process's new shrinks are added to the stored ones under the
        study lock, so workers (and a resumed run) add up rather than the last writer's counts winning."""
        shrinks = dict(self.runner.shrinks)
        if shrinks["shrunk"] == self.shrunk["shrunk"]:
            return
        new = {k: shrinks[k] - self.shrunk[k] for k in _SHRINK_COUNTS}
        self.shrunk = shrinks
        ctx = self.ctx
        self.retry(lambda: add_study_counts(ctx.study, ctx.storage, ctx.storage_url, self.budget.study_id,
                                            STUDY.PACK_SHRINK, new, last=shrinks["last"]), "study attribute")

    def _reserve(self, k: int) -> tuple[list[Any], bool]:
        """Up to ``k`` trials against the exact budget: one lock and one count for the pack."""
        trials: list[Any] = []
        finished = False
        while len(trials) < k:
            more, finished = self.retry(lambda: self.budget.reserve_many(k - len(trials)), "trial reservation",
                                        stoppable=True)
            if not more:
                break
            trials.extend(more)
        self.runner.budget_left = self.budget.left
        return trials, finished

    def _start(self, trial: Any) -> None:
        if trial.number in self.live:
            return
        tid = self.budget.trial_id(trial)
        self.beat.add(tid)
        self.live[trial.number] = (trial, tid)
        if self.ctl.current is None:
            self.ctl.current, self.ctl.current_id = trial, tid

    def _finish(self, trial: Any, cand: Candidate, requeue: bool = False) -> None:
        """Record one trial of the pack as it ends (its heartbeat stops first)."""
        _, tid = self.live.pop(trial.number)
        self.beat.discard(tid)
        self.budget.created.discard(tid)
        self.deadline_stops += TRIAL.DEADLINE_STOP in cand.user_attrs
        ctl = self.ctl
        ctl.current, ctl.current_id = trial, tid
        try:
            self._record(trial, tid, cand, requeue)
        finally:
            nxt = next(iter(self.live.values()), None)
            ctl.current, ctl.current_id = (nxt[0], nxt[1]) if nxt else (None, None)

    def _finish_many(self, ended: list[tuple[Any, Candidate]]) -> None:
        """Record the trials of a pack that ended together. With a drafted sampler (TPE, random:
        its ``after_trial`` needs nothing stored) they are told in one transaction
        (:func:`hpsearch.storage.batch.finish_trials`), drafted ones known as stored without a read
        back (the others read back one by one); otherwise one by one (:meth:`_finish`)."""
        if not self.drafted or len(ended) < 2:
            for trial, cand in ended:
                self._finish(trial, cand)
            return
        from optuna import pruners
        from optuna.trial import TrialState

        ctx, ctl = self.ctx, self.ctl
        told: list[tuple[Any, int, Finish]] = []
        for trial, cand in ended:
            tid = self.live[trial.number][1]
            frozen = trial._cached_frozen_trial  # compat.PRIVATE_HOOKS: its params and attributes as created
            attrs = finished_attrs(cand, ctx.engine.name, bool(frozen.user_attrs.get(TRIAL.FAILURE)))
            values = cand.values or ([] if cand.value is None else [cand.value])
            told.append((trial, tid, Finish(tid, cand.state, values, attrs)))
            ctx.study.sampler.after_trial(pruners._filter_study(ctx.study, frozen), frozen,  # as tell does
                                          TrialState[cand.state], values if cand.state == "COMPLETE" else None)
        ctl.current, ctl.current_id = told[0][0], told[0][1]
        try:
            n, written = len(ctx.study.directions), dict[int, Any]()
            done = self.retry(lambda: finish_trials(ctx.storage, [f for _, _, f in told], n, written), "tell")
            resync(ctx.study)  # as tell does: the sampler's next read sees these trials ended
            for trial, tid, f in told:  # ended: no longer beaten or failed with the pack
                del self.live[trial.number]
                self.beat.discard(tid)
                self.deadline_stops += TRIAL.DEADLINE_STOP in f.attrs
            for trial, tid, f in told:
                # a drafted trial ended here is known as stored without a read back (only this process
                # wrote it, through its Trial or here); any other, and one that stored an artifact
                # (Optuna's upload writes the trial's system attributes), is read back
                if tid in done and tid in written and tid in self.budget.created and not any(
                        key in f.attrs for key in _UPLOADS):
                    frozen = _ended(trial, tid, f.attrs, *written[tid])
                else:
                    frozen = self.retry(functools.partial(ctx.storage.get_trial, tid), "read back")
                self.budget.created.discard(tid)
                if tid not in done and frozen.user_attrs.get(TRIAL.FAILURE) != f.attrs.get(TRIAL.FAILURE):
                    self.abandon(trial.number, tid)  # failed as stale while it ran (not an earlier try of ours)
                else:
                    self.told(frozen)
        finally:
            nxt = next(iter(self.live.values()), None)
            ctl.current, ctl.current_id = (nxt[0], nxt[1]) if nxt else (None, None)

    def _more(self, n: int) -> list[Any]:
        """Up to ``n`` new trials for freed slots (one reservation), or none: the budget is met, a
        stop rule tripped or the worker is stopping (the pack then trains its members out)."""
        ctl, ctx = self.ctl, self.ctx
        if ctl.stopping or self.streak.tripped or ctl.parent_gone():
            return []
        if self.retry(lambda: self.rules.tripped(ctx), "stop-rule check"):
            return []
        trials, _ = self.retry(lambda: self.budget.reserve_many(n), "trial reservation", stoppable=True)
        self.runner.budget_left = self.budget.left  # a refill at the budget's end takes its last trials at once
        for trial in trials:
            self._start(trial)
        return list(trials)

    def run_pack(self, trials: list[Any], refill: bool = True, reserve_s: float = 0.0) -> None:
        """Train ``trials`` as a pack, refilling freed slots with new trials (``refill``); each
        trial is recorded as it ends. A stopped or lost pack fails and re-queues every trial still
        running, so no work is counted twice and none is lost."""
        self.ctl.lost = False
        for trial in trials:
            self._start(trial)
        reason: str | None = None
        requeue = False
        self.deadline_stops = 0
        try:
            self.carry = self.runner.run_pack(trials, self._finish_many, self._more if refill else None,
                                              reserve_s)
        except (WorkerStopped, TrialLost) as exc:
            reason, requeue = str(exc), True
        except Exception as exc:  # noqa: BLE001 - recorded in the trials, the study goes on
            requeue = is_connection_error(exc)
            reason = "storage connection lost during the trial" if requeue else failure_text(exc)
        if reason is not None:
            self.carry = []
            for trial, _ in list(self.live.values()):
                self._finish(trial, Candidate(params=dict(trial.params), state="FAIL", failure=reason), requeue)
        self._reuse_note()
        self._shrink_note()
        if self.deadline_stops:
            self._note(f"hpsearch: search.timeout: {self.deadline_stops} running trials of the pack ended at an epoch"
                       f" boundary, the next epoch would end after the deadline; recorded COMPLETE with their best"
                       f" epoch so far (trial attribute {TRIAL.DEADLINE_STOP})")


def _ended(trial: Any, tid: int, attrs: dict[str, Any], state: str, values: list[float] | None, completed: Any) -> Any:
    """The stored ``FrozenTrial`` of a drafted ``trial`` that :func:`hpsearch.storage.batch.finish_trials`
    just ended (its ``written`` entry: state, values, completion time; ``attrs`` its attributes): the
    trial as created (its Trial's cached copy, with every intermediate value written since), ended."""
    from optuna.trial import FrozenTrial, TrialState

    c = trial._cached_frozen_trial  # compat.PRIVATE_HOOKS
    return FrozenTrial(number=c.number, state=TrialState[state], value=None, values=values,
                       datetime_start=c.datetime_start, datetime_complete=completed, params=dict(c.params),
                       distributions=dict(c.distributions), user_attrs={**c.user_attrs, **attrs},
                       system_attrs=dict(c.system_attrs), intermediate_values=dict(c.intermediate_values),
                       trial_id=tid)


class _DraftedPackLoop(_PackLoop):
    drafted = True


def run_packed_trials(ctx: RunContext, runner: PackedRunner, settings: LoopSettings, ctl: Control,
                      drafted: bool = False) -> LoopOutcome:
    """:func:`hpsearch.execution.loop.run_trials` for packs of ``runner.pack_size`` trials; with
    ``drafted`` (the sampler allows it: the engine decides) new trials are created with their params
    (:mod:`hpsearch.execution.drafts`), not asked one by one."""
    return run_trials(ctx, runner, settings, ctl, loop_type=_DraftedPackLoop if drafted else _PackLoop)
