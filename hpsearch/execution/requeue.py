"""Failing an interrupted trial and queueing its copy, exactly once, whichever process sees it.

Two paths end a trial that did not finish: its own process (a stop signal, a storage connection lost
during the trial) and any other process's stale-trial check (a trial whose heartbeat stopped for the
grace period: the worker died, or the storage was unreachable longer than that). After a long
outage both see the same trial. The rules that keep one copy per interrupted trial:

* the RUNNING -> FAIL change is atomic in the storage (a row lock); whoever makes it writes the
  reason first, so a trial failed by the heartbeat says why (:data:`HEARTBEAT_LOST`);
* the copy is queued by :func:`requeue_once` under the study lock, only if the trial is FAIL and no
  trial lists it in its ``retry_history`` yet: a second call (the other path, or a retry of a storage
  call whose answer was lost) queues nothing.

So a configuration is trained again only when its earlier attempt did not finish (README, "run
twice").

A trial can also be left RUNNING with no heartbeat at all: ``study.ask()`` writes the trial, then
reads the study for the sampler, and the trial's first heartbeat follows; a worker killed, or a
storage connection lost, in between leaves a trial that Optuna's stale check skips (it has no
heartbeat to be late) and that the exact budget counts as running for ever, so every worker waits.
:class:`Orphans` finds such trials: one this process sees RUNNING without a heartbeat for a whole
grace period (by its own clock: no clocks of two hosts compared) is failed as stale like the others.
A live trial has its heartbeat within milliseconds of its ask (a pack's drafted trials: within
``Budget.beat_within``, a quarter of the grace period, however long the pack's reservation takes).
"""

from __future__ import annotations

import copy
import time
import warnings
from typing import Any

from hpsearch.execution.budget import study_lock
from hpsearch.records import TRIAL
from hpsearch.trials.context import RunContext

__all__ = ["HEARTBEAT_LOST", "RETRY_HISTORY", "requeue_once", "fail_trial", "fail_stale", "end_interrupted",
           "Orphans"]

HEARTBEAT_LOST = "heartbeat lost (worker died or storage unreachable)"
RETRY_HISTORY = "retry_history"  # system attr of a copy (Optuna's RetryHeartbeatStaleTrialCallback)


def _locked(ctx: RunContext) -> Any:
    """The study lock of ``ctx``'s study (the budget's: see :mod:`hpsearch.execution.budget`)."""
    study_id = ctx.storage.get_study_id_from_name(ctx.study.study_name)
    return study_lock(ctx.storage, ctx.storage_url, study_id, ctx.study.study_name)


def requeue_once(ctx: RunContext, trial_id: int) -> bool:
    """Queue a WAITING copy (same params) of the FAIL trial ``trial_id`` unless one exists already.
    Returns whether a copy was queued."""
    with _locked(ctx):
        return _requeue_locked(ctx, trial_id)


def _fail_and_requeue_locked(ctx: RunContext, trial_id: int, reason: str) -> bool:
    """Fail ``trial_id`` and queue its copy in one critical section of the study lock, so no
    reservation counts the slot its failure frees before the copy that takes it is queued (a new
    trial would fill the budget and the copy would never run). Returns whether this call failed it."""
    with _locked(ctx):
        failed = fail_trial(ctx.storage, trial_id, reason)
        ended = ctx.storage.get_trial(trial_id)
        if ended.state.name == "FAIL" and ended.user_attrs.get(TRIAL.FAILURE) in (reason, HEARTBEAT_LOST):
            _requeue_locked(ctx, trial_id)
        return failed


def _requeue_locked(ctx: RunContext, trial_id: int) -> bool:
    """:func:`requeue_once` inside the study lock."""
    callback = ctx.storage.get_heartbeat_stale_trial_callback()
    if callback is None:
        return False
    failed = ctx.storage.get_trial(trial_id)
    if failed.state.name != "FAIL":
        return False
    for t in ctx.study.get_trials(deepcopy=False):
        if failed.number in t.system_attrs.get(RETRY_HISTORY, ()):
            return False
    before = len(ctx.study.get_trials(deepcopy=False))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ExperimentalWarning of the retry callback
        callback(ctx.study, copy.deepcopy(failed))
    return len(ctx.study.get_trials(deepcopy=False)) > before  # max_retry may refuse


def fail_trial(storage: Any, trial_id: int, reason: str) -> bool:
    """Fail a RUNNING trial with ``reason``; False when it had finished already (someone else ended it)."""
    from optuna.exceptions import UpdateFinishedTrialError
    from optuna.trial import TrialState

    try:
        storage.set_trial_user_attr(trial_id, TRIAL.FAILURE, reason)
        return bool(storage.set_trial_state_values(trial_id, TrialState.FAIL))
    except UpdateFinishedTrialError:
        return False


class Orphans:
    """The RUNNING trials without a heartbeat that this process has watched for ``grace`` seconds
    (see the module docstring). :meth:`due` is called at every stale check of the loop."""

    def __init__(self, grace: float, clock: Any = time.monotonic) -> None:
        self.grace, self.clock = grace, clock
        self.first_seen: dict[int, float] = {}

    def due(self, storage: Any, study_id: int) -> list[int]:
        from hpsearch.storage.batch import running_without_heartbeat

        now = self.clock()
        ids = running_without_heartbeat(storage, study_id)
        self.first_seen = {i: self.first_seen.get(i, now) for i in ids}
        return sorted(i for i, seen in self.first_seen.items() if now - seen >= self.grace)


def fail_stale(ctx: RunContext, study_id: int, orphans: Orphans | None = None) -> int:
    """Fail the trials whose heartbeat is older than the grace period (and the ``orphans`` due: no
    heartbeat for a grace period), with :data:`HEARTBEAT_LOST`, and queue one copy of each. Returns
    how many this process failed.

    Optuna's ``fail_stale_trials`` cannot give a reason: a finished trial's attributes are frozen,
    so the reason is written before the state changes (which needs the stale ids first).
    """
    ids = ctx.storage._get_stale_trial_ids(study_id)  # compat.PRIVATE_HOOKS: no public stale-id query
    if orphans is not None:
        ids = [*ids, *orphans.due(ctx.storage, study_id)]
    return sum(_fail_and_requeue_locked(ctx, tid, HEARTBEAT_LOST) for tid in ids)


def end_interrupted(ctx: RunContext, trial_id: int, reason: str) -> None:
    """The owner's path for its trial that did not finish (stopped, storage lost, found stale): fail it
    with ``reason`` unless it is finished, then make sure exactly one copy is queued when it ended
    interrupted (by this call, an earlier try of it whose answer was lost, or the heartbeat check)."""
    _fail_and_requeue_locked(ctx, trial_id, reason)
