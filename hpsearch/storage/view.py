"""The study's trials as a reservation reads them, without re-reading what this process wrote (issue 26).

Optuna's cached storage re-reads every unfinished trial at each read, with a query per relation for
all of them: at 10,000 tiny trials a packed reservation's read of the study took ~32 ms, spent on
this process's own running trials and the ones it had just told. :class:`StudyView` keeps the trials
as last read and applies what this process writes itself (the trials it creates, the trials it
tells); before each use one light query counts the study's trials per state (a ``GROUP BY`` on
Optuna's trials table), and only when those counts differ from the view's is the study read again
through Optuna: another process created, ended, failed or re-queued a trial, or this process changed
one outside the view (a re-queue, a queued trial asked). A change leaves a trace in the counts: a
creation adds a trial, and a trial only moves forward (WAITING, RUNNING, then a finished state).
What the view does not follow is a write that changes no state: a running trial's curve and
attributes as it trains (here or elsewhere), which the reservation does not read (its count, TPE's
fit on the finished trials and its liars, the running trials' params). Storages other than
Optuna's RDB always read.

The view also keeps what a reservation computes from every trial, so that its cost does not grow
with the study: the budget's count (:func:`hpsearch.records.tally`) and two columns, each trial's
state and first value, from which TPE's bounded history picks its trials with NumPy
(:func:`hpsearch.engines.packsampling.history_index`). At 10,000 trials those passes over the trials
took ~9 ms per reservation (``tally`` and the history's selection), ~0.3 ms so. A
:meth:`StudyView.snapshot` hands them out together.
"""

from __future__ import annotations

import contextlib
import math
from array import array
from collections import Counter
from typing import Any, NamedTuple

import numpy as np

from hpsearch.records import counts_toward_budget, tally

__all__ = ["StudyView", "Snapshot", "snapshot_of", "stored_state_counts", "trial_columns"]


class Snapshot(NamedTuple):
    """The study's trials in number order, with their columns and the budget's count of them."""

    trials: list[Any]
    states: np.ndarray  # each trial's ``TrialState`` value (int8)
    values: np.ndarray  # each trial's first objective value, NaN without one
    done: int  # trials that count toward the budget (:func:`hpsearch.records.tally`)
    running: int
    waiting: int


def _value(trial: Any) -> float:
    values = trial.values
    return float(values[0]) if values else math.nan


def trial_columns(trials: list[Any]) -> tuple[np.ndarray, np.ndarray]:
    """(states, first values) of ``trials`` as :class:`Snapshot` holds them."""
    states = np.fromiter((t.state.value for t in trials), dtype=np.int8, count=len(trials))
    return states, np.fromiter((_value(t) for t in trials), dtype=float, count=len(trials))


def stored_state_counts(storage: Any, study_id: int, conn: Any = None) -> Counter[str]:
    """The study's stored trials per state name, in one query (an RDB storage; from a list of trials:
    :func:`hpsearch.records.state_counts`), on ``conn`` if given (the study lock's: no checkout)."""
    import sqlalchemy
    from optuna.storages._rdb import models  # compat.PRIVATE_HOOKS: Optuna's tables

    trials = models.TrialModel
    query = sqlalchemy.select(trials.state, sqlalchemy.func.count()).where(
        trials.study_id == study_id).group_by(trials.state)
    with contextlib.nullcontext(conn) if conn is not None else storage.engine.connect() as on:
        rows = on.execute(query).all()
    return Counter({(s.name if hasattr(s, "name") else str(s)): int(n) for s, n in rows})


def snapshot_of(trials: list[Any]) -> Snapshot:
    """The :class:`Snapshot` of ``trials`` (the study's, in number order), computed from them."""
    return Snapshot(trials, *trial_columns(trials), *tally(trials))


class StudyView:
    """A study's trials (``FrozenTrial`` by number) as last read, kept up to date with this process's
    own writes (:meth:`created`, :meth:`ended`); :meth:`trials` reads the study again only when the
    stored counts per state say something else changed it."""

    def __init__(self, study: Any, storage: Any, study_id: int) -> None:
        import optuna

        self.study, self.storage, self.study_id = study, storage, study_id
        self.light = isinstance(storage, optuna.storages.RDBStorage)  # the counts can be queried
        self.known: list[Any] | None = None  # index = trial number
        self.counts: Counter[str] = Counter()
        self.states, self.values = array("b"), array("d")  # the known trials' columns, index = number
        self.done = 0  # known trials that count toward the budget
        self.reads = self.reuses = 0

    def snapshot(self, conn: Any = None) -> Snapshot:
        """The study as stored now (:meth:`trials`; its light count on ``conn`` if given) with its
        columns and count, without a pass over it when the view is up to date."""
        trials = self.trials(conn)
        if self.known is None:  # not kept: computed from the read
            return snapshot_of(trials)
        return Snapshot(trials, np.array(self.states), np.array(self.values), self.done,
                        self.counts["RUNNING"], self.counts["WAITING"])

    def trials(self, conn: Any = None) -> list[Any]:
        """The study's trials in number order, as stored now (a list of its own: the caller may keep it);
        the light count on ``conn`` if given (the study lock's connection)."""
        known = self.known
        if known is not None and self.light and +stored_state_counts(self.storage, self.study_id, conn) == +self.counts:
            self.reuses += 1
            return list(known)
        trials: list[Any] = self.study.get_trials(deepcopy=False)
        self.reads += 1
        if not trials or trials[-1].number == len(trials) - 1:  # numbered 0..n-1: the list is by number
            self.known, self.counts = list(trials), Counter(t.state.name for t in trials)
            states, values = trial_columns(trials)
            self.states, self.values = array("b", states.tobytes()), array("d", values.tobytes())
            self.done = tally(trials)[0]
        else:
            self.known = None
        return trials

    def forget(self) -> None:
        """This process changed the study outside the view (a queued trial asked): the next use reads."""
        self.known = None

    def created(self, frozen: list[Any]) -> None:
        """Trials this process just created (stored as ``frozen``: numbers, ids, state RUNNING)."""
        for t in frozen:
            if self.known is None or t.number != len(self.known):
                self.forget()  # numbered elsewhere meanwhile
                return
            self.known.append(t)
            self.counts[t.state.name] += 1
            self.states.append(t.state.value)
            self.values.append(_value(t))
            self.done += counts_toward_budget(t)

    def ended(self, frozen: Any) -> None:
        """A trial this process just told, as stored (``frozen``)."""
        known = self.known
        if known is None:
            return
        if frozen.number >= len(known):  # not created through the view
            self.forget()
            return
        old, i = known[frozen.number], frozen.number
        self.counts[old.state.name] -= 1
        self.counts[frozen.state.name] += 1
        self.done += counts_toward_budget(frozen) - counts_toward_budget(old)
        self.states[i], self.values[i] = frozen.state.value, _value(frozen)
        known[i] = frozen
