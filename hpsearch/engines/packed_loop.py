"""The one trial loop, K trials at a time: what :mod:`hpsearch.engines.loop` does for one trial
(exact budget, heartbeat, tell, re-queue, failure streak), for the packs of
:class:`~hpsearch.engines.packed.PackedRunner`. Each trial of a pack is reserved against the
budget, beats its own heartbeat and is told on its own; a stopped or lost pack fails and re-queues
every trial still running, so no work is counted twice and none is lost.
"""

from __future__ import annotations

import contextlib
import time
import warnings
from typing import Any

from hpsearch.engines.base import Candidate, RunContext, record_candidate
from hpsearch.engines.control import Control, Heartbeat, LoopSettings, TrialLost, WorkerStopped
from hpsearch.engines.loop import LoopOutcome, _failure_text, _Loop, _requeue, fail_and_requeue
from hpsearch.engines.packed import PackedRunner
from hpsearch.records import TRIAL
from hpsearch.storage import is_connection_error

__all__ = ["run_packed_trials"]


class _PackLoop(_Loop):
    runner: PackedRunner

    def run(self) -> bool:
        """Run packs until the budget is met (True), the timeout passes or a stop (False)."""
        import optuna
        from optuna.exceptions import ExperimentalWarning

        ctx, ctl = self.ctx, self.ctl
        timeout = ctx.cfg.search.timeout
        start = time.monotonic()
        while not ctl.stopping and not self.streak.tripped:
            if ctl.parent_gone() or (timeout is not None and time.monotonic() - start >= timeout):
                return False
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ExperimentalWarning)
                self.retry(lambda: optuna.storages.fail_stale_trials(ctx.study), "stale-trial check")
            trials, finished = self._reserve()
            if len(trials) == 1:
                self.run_one(trials[0])
            elif trials:
                self.run_pack(trials)
            elif finished:
                return True
            else:
                ctl.sleep(self.settings.poll)
        return False

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
                self._tell(trial, tid, cand, requeue)
        finally:
            ctl.current, ctl.current_id = None, None

    def _tell(self, trial: Any, tid: int, cand: Candidate, requeue: bool) -> None:
        ctx = self.ctx
        if self.retry(lambda: ctx.storage.get_trial(tid).state.name, "state check") != "RUNNING":
            self.say(f"trial {trial.number} was failed as stale by another worker; abandoned")
            return
        frozen = self.retry(lambda: record_candidate(ctx.study, cand, engine=ctx.engine.name, trial=trial), "tell")
        if requeue and frozen.state.name == "FAIL":
            self.retry(lambda: _requeue(ctx, tid), "re-queue")
        else:
            self.streak.update(frozen.state.name, frozen.user_attrs.get(TRIAL.FAILURE))
        self._show(frozen)


def run_packed_trials(ctx: RunContext, runner: PackedRunner, settings: LoopSettings, ctl: Control) -> LoopOutcome:
    """:func:`hpsearch.engines.loop.run_trials` for packs of ``runner.pack_size`` trials."""
    import optuna

    loop = _PackLoop(ctx, runner, settings, ctl)
    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    try:
        finished = loop.run()
    except BaseException as exc:
        if ctl.current_id is not None:  # best effort; else the heartbeat of others re-queues it
            with contextlib.suppress(Exception):
                fail_and_requeue(ctx, ctl.current_id, f"worker exited ({type(exc).__name__})")
        raise
    finally:
        optuna.logging.set_verbosity(level)
    if loop.streak.tripped:
        raise loop.streak.error(ctx.study.study_name)
    return LoopOutcome(finished=finished, stopped=ctl.stop_reason)
