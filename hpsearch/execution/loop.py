"""The one trial loop: ask (against the exact budget), heartbeat, run, tell. It serves one process
(``hpsearch run``) and each of N workers (``run --workers``, ``hpsearch worker``) alike, so the
budget, re-queueing and stop handling are written once.

Crash safety:
* a process killed with SIGKILL: its trial's heartbeat stops; after the grace period any other
  process (each poll and each ``ask``) marks it FAIL with reason ``heartbeat lost`` and queues one
  WAITING copy (same params), run next (:mod:`hpsearch.execution.requeue`: exactly one copy, whichever
  process sees it first);
* SIGTERM / SIGINT (see :mod:`hpsearch.execution.control`): the trial is stopped at its next batch,
  told FAIL with its reason and re-queued;
* storage outages: every storage call is retried with back-off (``Retry``); a trial whose reports
  failed during the outage is told FAIL and re-queued; a trial another worker failed as stale
  meanwhile is abandoned, not told (its copy runs elsewhere, so no trial runs twice at once).
"""

from __future__ import annotations

import contextlib
import gc
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from hpsearch.execution.budget import Budget, pooled_lock_line
from hpsearch.execution.callbacks import run_trial_callbacks
from hpsearch.execution.control import Control, Heartbeat, LoopSettings, Retry, TrialLost, WorkerStopped
from hpsearch.execution.requeue import HEARTBEAT_LOST, Orphans, end_interrupted, fail_stale
from hpsearch.execution.stoprules import FailureStreak, StopRules
from hpsearch.records import TRIAL, primary_value
from hpsearch.storage import is_connection_error
from hpsearch.storage.keep import keep_best_models
from hpsearch.trials.context import Candidate, RunContext, record_candidate

__all__ = ["LoopOutcome", "TrialLoop", "failure_text", "run_trials", "fail_and_requeue", "process_say",
           "hard_stop"]


@dataclass
class LoopOutcome:
    finished: bool  # the budget is met
    stopped: str | None  # the stop reason (signal, parent exited), if stopped


def fail_and_requeue(ctx: RunContext, trial_id: int, reason: str) -> None:
    """Fail a running trial with ``reason`` and queue one copy (nothing if it finished; see
    :mod:`hpsearch.execution.requeue`)."""
    end_interrupted(ctx, trial_id, reason)


def hard_stop(ctl: Control, get_ctx: Callable[[], RunContext | None], deadline: float,
              exit_code: int) -> Callable[[], None]:
    """What a second signal (or the stop deadline) does: fail and re-queue the running trial, then
    leave the process at once with ``exit_code``. Called from a signal-handler thread."""
    lock = threading.Lock()

    def stop() -> None:
        if ctl.exited:
            return
        with lock:
            ctx = get_ctx()
            if ctl.current_id is not None and ctx is not None:
                with contextlib.suppress(Exception):  # exiting anyway; the heartbeat of others re-queues it
                    fail_and_requeue(ctx, ctl.current_id, f"worker stopped ({ctl.stop_reason or 'signal'}; "
                                     f"deadline {deadline:g} s)")
                process_say(ctx)(f"stopped ({ctl.stop_reason}); exiting")
            os._exit(exit_code)

    return stop


def process_say(ctx: RunContext) -> Callable[[str], None]:
    """A message of this process for the observer, prefixed with its pid (several may share a log)."""
    pid = os.getpid()
    return lambda text: ctx.observer.message(f"hpsearch worker {pid}: {text}")


def failure_text(exc: BaseException) -> str:
    """A trial's failure reason from its exception: class name and the first line (300 chars)."""
    text = str(exc).splitlines()[0][:300] if str(exc) else ""
    return f"{exc.__class__.__name__}: {text}"


class TrialLoop:
    """The ask / heartbeat / run / tell loop of one process (subclassed by the packed loop)."""

    def __init__(self, ctx: RunContext, runner: Callable[[Any], Candidate], settings: LoopSettings,
                 ctl: Control) -> None:
        self.ctx, self.runner, self.settings, self.ctl = ctx, runner, settings, ctl
        self.say = process_say(ctx)
        self.retry = Retry(ctx.storage_url, ctl, settings.retry, self.say)
        self.streak = FailureStreak(ctx.cfg.search.max_failures_in_row)
        study_id = self.retry(lambda: ctx.study_id, "start-up")
        self.budget = Budget(ctx.study, ctx.storage, ctx.storage_url, study_id, ctx.engine.n_trials(ctx.cfg))
        lock_line = self.retry(lambda: pooled_lock_line(ctx.storage, ctx.storage_url), "start-up")
        if lock_line is not None:  # an automatic decision: said and recorded
            ctx.decide("storage.study_lock", "short waits behind a pooler", lock_line)
        self.orphans = Orphans(settings.grace)  # asked trials whose first heartbeat never came

    def run(self) -> bool:
        """Run trials until the budget is met (True), the timeout passes or a stop (False)."""
        ctx, ctl = self.ctx, self.ctl
        rules = self.rules = StopRules.of(ctx)  # search.timeout, patience, target (a pack refilling asks too)
        while not ctl.stopping and not self.streak.tripped:
            if ctl.parent_gone() or self.retry(lambda: rules.tripped(ctx), "stop-rule check"):
                return False
            self.retry(lambda: fail_stale(ctx, self.budget.study_id, self.orphans), "stale-trial check")
            ran, finished = self.step()
            if not ran:
                if finished:
                    return True
                if rules.reason is None:  # a rule that tripped in the step (a pack that no longer fits
                    ctl.sleep(self.settings.poll)  # search.timeout) ends the loop now, not a poll later
        return False

    def step(self) -> tuple[bool, bool]:
        """Reserve and run one trial: (whether one ran, whether the budget is met)."""
        trial, finished = self.retry(self.budget.reserve, "trial reservation", stoppable=True)
        if trial is None:
            return False, finished
        self.run_one(trial)
        return True, finished

    def run_one(self, trial: Any) -> None:
        ctx, ctl = self.ctx, self.ctl
        tid = self.budget.trial_id(trial)
        ctl.current, ctl.current_id, ctl.lost = trial, tid, False
        hb = Heartbeat(ctx.storage, tid, self.settings.interval, ctl)
        hb.start()
        requeue = False
        try:
            candidate = self.runner(trial)
        except (WorkerStopped, TrialLost) as exc:
            candidate, requeue = Candidate(params=dict(trial.params), state="FAIL", failure=str(exc)), True
        except Exception as exc:  # noqa: BLE001 - recorded in the trial, the study goes on
            requeue = is_connection_error(exc)
            reason = "storage connection lost during the trial" if requeue else failure_text(exc)
            candidate = Candidate(params=dict(trial.params), state="FAIL", failure=reason)
        finally:
            hb.stop()
        try:
            self._record(trial, tid, candidate, requeue)
        finally:
            ctl.current, ctl.current_id = None, None

    def _record(self, trial: Any, tid: int, candidate: Candidate, requeue: bool) -> None:
        """Tell the storage how the trial ended. An interrupted trial is failed and queued once; a
        trial another process failed as stale meanwhile is not told (its copy runs elsewhere)."""
        from optuna.exceptions import UpdateFinishedTrialError

        ctx = self.ctx
        abandoned = self.ctl.lost
        if requeue and not abandoned:
            reason = candidate.failure or HEARTBEAT_LOST
            self.retry(lambda: end_interrupted(ctx, tid, reason), "re-queue")
            frozen = self.retry(lambda: ctx.storage.get_trial(tid), "read back")
            abandoned = frozen.user_attrs.get(TRIAL.FAILURE) != reason
        elif not abandoned:
            try:
                frozen = self.retry(lambda: record_candidate(ctx.study, candidate, engine=ctx.engine.name,
                                                             trial=trial, storage=ctx.storage, trial_id=tid), "tell")
            except UpdateFinishedTrialError:  # failed as stale while it ran (a long storage outage)
                abandoned = True
        if abandoned:
            self.abandon(trial.number, tid)
            return
        self.told(frozen, streak=not requeue)  # an interrupted trial is not the trial's own failure

    def abandon(self, number: int, tid: int) -> None:
        """A trial another process failed as stale while it ran: make sure its one copy is queued
        (the stale check may have died before) and say so."""
        self.retry(lambda: end_interrupted(self.ctx, tid, HEARTBEAT_LOST), "re-queue")
        self.say(f"trial {number} was failed as stale by another process; abandoned (its copy runs next)")

    def told(self, frozen: Any, streak: bool = True) -> None:
        """After a trial's tell: the failure streak, its line, the trial callbacks (which see the
        stored trial)."""
        self.budget.view.ended(frozen)  # as stored: the next reservation need not read it again
        if streak:
            self.streak.update(frozen.state.name, frozen.user_attrs.get(TRIAL.FAILURE))
        self._show(frozen)
        run_trial_callbacks(self.ctx, frozen, self.rules)

    def _show(self, frozen: Any) -> None:
        ctx = self.ctx
        detail = frozen.user_attrs.get(TRIAL.FAILURE) or ""
        if frozen.state.name == "PRUNED":
            detail = frozen.user_attrs.get(TRIAL.INFEASIBLE) or f"at epoch {frozen.user_attrs.get(TRIAL.PRUNED_AT)}"
        ctx.observer.trial_done(frozen.number, frozen.state.name, primary_value(frozen), detail)
        if frozen.state.name == "COMPLETE" and frozen.user_attrs.get(TRIAL.MODEL_ARTIFACT):
            with contextlib.suppress(Exception):  # disk hygiene must not stop the study
                keep_best_models(ctx.study, ctx.artifact_store, ctx.direction, ctx.cfg.search.keep_models,
                                 self.budget.view.trials())


@contextlib.contextmanager
def _long_lived_frozen() -> Iterator[None]:
    """Leave the objects alive when the trials start out of Python's full garbage collections while
    they run (``gc.freeze``; unfrozen after). They are mostly the modules of TensorFlow, Keras,
    Optuna and scikit-learn (~600,000 objects), and each full collection scanned them all: 0.25-0.9 s
    apiece, a full collection every ~100 trials of a packed study of tiny trials (issue 26). Cyclic
    garbage among them is collected after the loop; nothing else changes."""
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def _catch_up(study: Any) -> None:
    """Read the study once through Optuna with Python's collector paused. The packed loop reads the
    study through its own view (:class:`hpsearch.storage.view.StudyView`), so Optuna's cache of it
    falls behind, and the first read after the loop (the best trial's) loads every trial told since:
    at 10,000 tiny trials about a million objects, during which the collector ran 9 full collections
    of ~1 s each that freed almost nothing. Paused, the read allocates them without a scan; cyclic
    garbage waits for the next collection."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        study.get_trials(deepcopy=False)
    finally:
        if enabled:
            gc.enable()


def run_trials(ctx: RunContext, runner: Callable[[Any], Candidate], settings: LoopSettings,
               ctl: Control, loop_type: type[TrialLoop] = TrialLoop) -> LoopOutcome:
    """Run trials of ``ctx.study`` with ``runner`` until the budget, the timeout or a stop.

    ``runner(trial)`` trains one asked trial and returns its finished :class:`Candidate`. Raises
    :class:`~hpsearch.errors.StudyFailedError` after ``search.max_failures_in_row`` failures in a row.
    ``loop_type`` runs more than one trial a step (:mod:`hpsearch.execution.packed_loop`).
    """
    import optuna

    loop = loop_type(ctx, runner, settings, ctl)
    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    try:
        with _long_lived_frozen():
            finished = loop.run()
            _catch_up(ctx.study)
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
