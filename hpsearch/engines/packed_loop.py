"""The one trial loop, K trials a step: :mod:`hpsearch.engines.loop` (exact budget, heartbeat,
tell, re-queue, stale checks, stop rules, failure streak) for the packs of
:class:`~hpsearch.engines.packed.PackedRunner`. Each trial of a pack is reserved against the
budget, beats its own heartbeat and is recorded on its own through the loop's one ``_record``; a
stopped or lost pack fails and re-queues every trial still running, so no work is counted twice and
none is lost.
"""

from __future__ import annotations

from typing import Any

from hpsearch.engines.base import Candidate, RunContext
from hpsearch.engines.control import Control, Heartbeat, LoopSettings, TrialLost, WorkerStopped
from hpsearch.engines.loop import LoopOutcome, _failure_text, _Loop, run_trials
from hpsearch.engines.packed import PackedRunner
from hpsearch.storage import is_connection_error

__all__ = ["run_packed_trials"]


class _PackLoop(_Loop):
    runner: PackedRunner

    def step(self) -> tuple[bool, bool]:
        """Reserve up to K trials and train them together (one alone as the one-trial loop does)."""
        trials, finished = self._reserve()
        if len(trials) == 1:
            self.run_one(trials[0])
        elif trials:
            self.run_pack(trials)
        return bool(trials), finished

    def _reserve(self) -> tuple[list[Any], bool]:
        """Up to K trials against the exact budget (each reserved as the one-trial loop does)."""
        trials: list[Any] = []
        finished = False
        while len(trials) < self.runner.pack_size:
            trial, finished = self.retry(self.budget.reserve, "trial reservation", stoppable=True)
            if trial is None:
                break
            trials.append(trial)
        return trials, finished

    def run_pack(self, trials: list[Any]) -> None:
        ctx, ctl = self.ctx, self.ctl
        ids = [self.budget.trial_id(t) for t in trials]
        ctl.current, ctl.current_id, ctl.lost = trials[0], ids[0], False
        beats = [Heartbeat(ctx.storage, tid, self.settings.interval, ctl) for tid in ids]
        for hb in beats:
            hb.start()
        reason: str | None = None
        requeue = False
        try:
            candidates = self.runner.run_pack(trials)
        except (WorkerStopped, TrialLost) as exc:
            reason, requeue = str(exc), True
        except Exception as exc:  # noqa: BLE001 - recorded in the trials, the study goes on
            requeue = is_connection_error(exc)
            reason = "storage connection lost during the trial" if requeue else _failure_text(exc)
        finally:
            for hb in beats:
                hb.stop()
        try:
            if reason is not None:
                candidates = [Candidate(params=dict(t.params), state="FAIL", failure=reason) for t in trials]
            for trial, tid, cand in zip(trials, ids, candidates):
                ctl.current, ctl.current_id = trial, tid
                self._record(trial, tid, cand, requeue)
        finally:
            ctl.current, ctl.current_id = None, None


def run_packed_trials(ctx: RunContext, runner: PackedRunner, settings: LoopSettings, ctl: Control) -> LoopOutcome:
    """:func:`hpsearch.engines.loop.run_trials` for packs of ``runner.pack_size`` trials."""
    return run_trials(ctx, runner, settings, ctl, loop_type=_PackLoop)
