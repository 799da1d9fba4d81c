"""The stop rules every engine obeys, and the one line that says which of them ended a study.

* ``search.timeout``: seconds this run may search (each process counts from its own start);
* ``search.patience: N``: stop once N trials finished (complete or pruned) after the best one,
  counted from the storage in the order they finished, so N workers share one count;
* ``search.target: X``: stop once the best value reaches X (``>=`` when maximizing, ``<=`` when
  minimizing);
* ``train.trial_timeout``: one trial's training is stopped at its next batch once it runs longer
  (:class:`hpsearch.trials.callbacks.TrialTimer`) and the trial is recorded as failed with the reason
  beside that timer (:func:`hpsearch.trials.callbacks.trial_timeout_reason`).

The Optuna engine's trial loop asks :meth:`StopRules.check` before it reserves a trial; the
scikit-learn engines before each candidate. The process that trips a rule stores the reason as the
study attribute ``STUDY.STOP_REASON`` (so ``run --workers`` reports it too) and says it through
the observer; :func:`closing_reason` is the line the result carries.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from hpsearch.errors import ConfigError, DataError, StudyFailedError
from hpsearch.records import STUDY, is_better, primary_value

if TYPE_CHECKING:  # pragma: no cover
    from hpsearch.spec.config import StudyConfig
    from hpsearch.trials.context import RunContext

__all__ = ["REQUESTED", "FailureStreak", "StopRules", "StopSearch", "closing_reason", "has_stop_rules"]


#: the start of the reason of a stop asked by a trial callback (:meth:`StopRules.request`)
REQUESTED = "callback: "


class StopSearch(Exception):
    """Raised inside a scikit-learn engine's candidate loop when a stop rule tripped."""


def has_stop_rules(cfg: StudyConfig) -> bool:
    """Can this study end before its trial budget (timeout, patience or target set)?"""
    s = cfg.search
    return s.timeout is not None or s.patience is not None or s.target is not None


def _reached(value: float, target: float, direction: str) -> bool:
    return value >= target if direction == "maximize" else value <= target


@dataclass
class StopRules:
    """The study's stop rules, for one process; :meth:`check` returns the reason once one tripped."""

    timeout: float | None
    patience: int | None
    target: float | None
    direction: str
    metric: str
    start: float = field(default_factory=time.monotonic)
    reason: str | None = None
    said: bool = False  # the reason is stored with the study and was said (once)
    plan: list[str] = field(default_factory=list)  # STUDY.DEADLINE_PLAN: what search.timeout decided

    @classmethod
    def of(cls, ctx: RunContext) -> StopRules:
        s = ctx.cfg.search
        return cls(timeout=s.timeout, patience=s.patience, target=s.target, direction=ctx.direction,
                   metric=ctx.metric)

    def check(self, trials: Any = None, study: Any = None) -> str | None:
        """The reason a rule tripped (None: go on). ``trials`` (or ``study``'s, read only when
        patience or target is set) are the stored trials; the first reason found sticks."""
        if self.reason is None:
            self.reason = self._timeout()
        if self.reason is None and (self.patience is not None or self.target is not None):
            if trials is None:
                trials = study.get_trials(deepcopy=False) if study is not None else []
            self.reason = self._target(trials) or self._patience(trials)
        return self.reason

    def request(self, reason: str) -> None:
        """A stop asked from outside the rules (a trial callback's ``study.stop()``): the next
        :meth:`tripped` ends the search with ``reason``, stored and said as a rule's would be."""
        if self.reason is None:
            self.reason = reason

    def note(self, ctx: RunContext, line: str, write: Callable[[Callable[[], Any], str], Any] | None = None) -> None:
        """One decision ``search.timeout`` made (a smaller pack, members ended at an epoch boundary):
        said in one line, and every such line of this run stored as ``STUDY.DEADLINE_PLAN``
        (``write(f, what)``: how the attribute is written, e.g. through the trial loop's retry)."""
        ctx.observer.message(line)
        self.plan.append(line)
        lines = list(self.plan)
        (write or (lambda f, what: f()))(lambda: ctx.study.set_user_attr(STUDY.DEADLINE_PLAN, lines), "study attribute")

    def no_pack_fits(self, ctx: RunContext, epochs: int) -> bool:
        """Trip ``search.timeout`` now: the time left cannot fit a new pack's compile and ``epochs``
        epochs (both engines' packs say it in these words)."""
        left = (self.deadline() or 0.0) - time.monotonic()
        return self.tripped(ctx, reason=f"timeout: {left:.1f} s left cannot fit a pack's compile and {epochs} epochs"
                                        f" (search.timeout = {self.timeout:g} s)")

    def deadline(self) -> float | None:
        """``time.monotonic()`` at which ``search.timeout`` trips (None: no timeout)."""
        return None if self.timeout is None else self.start + self.timeout

    def _timeout(self) -> str | None:
        elapsed = time.monotonic() - self.start
        if self.timeout is None or elapsed < self.timeout:
            return None
        return f"timeout: {elapsed:.0f} s of searching (search.timeout = {self.timeout:g} s)"

    def _target(self, trials: Any) -> str | None:
        if self.target is None:
            return None
        hits = [t for t in trials if t.state.name == "COMPLETE" and (v := primary_value(t)) is not None
                and _reached(float(v), self.target, self.direction)]
        if not hits:
            return None
        first = min(hits, key=lambda t: t.number)
        return (f"target: trial {first.number} reached {self.metric} {primary_value(first):.6g}"
                f" (search.target = {self.target:g})")

    def _patience(self, trials: Any) -> str | None:
        if self.patience is None:
            return None
        done = [t for t in trials if t.state.name in ("COMPLETE", "PRUNED")]
        done.sort(key=lambda t: (t.datetime_complete is None, t.datetime_complete or 0, t.number))
        best: Any = None
        since = 0
        for t in done:
            value = primary_value(t)  # several objectives: the first one
            if t.state.name == "COMPLETE" and is_better(value, None if best is None else primary_value(best),
                                                        self.direction):
                best, since = t, 0
            elif best is not None:
                since += 1
        if best is None or since < self.patience:
            return None
        return (f"patience: {since} finished trials without improving on trial {best.number}"
                f" ({self.metric} {primary_value(best):.6g}; search.patience = {self.patience})")

    def tripped(self, ctx: RunContext, trials: Any = None, reason: str | None = None) -> bool:
        """:meth:`check`, and on the first trip store the reason with the study and say it;
        ``reason``: the caller stops the search now for it (a pack that no longer fits the timeout)."""
        known = self.reason
        if known is None and reason is not None:
            self.reason = reason
        reason = self.check(trials, ctx.study)
        if reason is None:
            return False
        if not self.said:
            self.said = True
            ctx.stop_rule = reason
            ctx.study.set_user_attr(STUDY.STOP_REASON, reason)
            ctx.observer.message(f"hpsearch: stopping the search: {reason}")
        return True


def closing_reason(ctx: RunContext, already: bool) -> str:
    """Which rule ended the study: a stop rule of this run, else the budget when it is met, else a
    rule another worker stored."""
    if ctx.stop_rule:
        return ctx.stop_rule
    complete = ctx.engine.is_complete(ctx)
    if complete:
        planned = ctx.engine.plan(ctx)
        what = "every candidate was evaluated" if planned is None else f"{planned} trials done"
        return f"budget: {what}" + (" (before this run)" if already else "")
    stored = ctx.study.user_attrs.get(STUDY.STOP_REASON)
    return str(stored) if stored else "stopped before the budget"


class FailureStreak:
    """The one "N failed trials in a row stop the study" rule, for every engine and worker."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.streak = 0
        self.last_reason: str | None = None

    @property
    def tripped(self) -> bool:
        return self.streak >= self.limit

    def update(self, state: str, reason: str | None = None) -> bool:
        """Count one finished trial (state name); returns whether the streak tripped."""
        if state == "FAIL":
            self.streak += 1
            self.last_reason = reason
        else:
            self.streak = 0
        return self.tripped

    def error(self, study_name: str, what: str = "trials") -> StudyFailedError:
        # a user error the trials met (a builder that returns no model, a field it names): its own fix
        named = (self.last_reason or "").startswith(tuple(f"{c.__name__}:" for c in (ConfigError, DataError)))
        fix = "fix what it names" if named else "check the space ranges and the data"
        return StudyFailedError(
            f"study {study_name!r} stopped: {self.streak} {what} failed in a row (last: {self.last_reason});"
            f" {fix} (search.max_failures_in_row = {self.limit})"
        )
