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
"""

from __future__ import annotations

from collections import Counter
from typing import Any

__all__ = ["StudyView", "stored_state_counts"]


def stored_state_counts(storage: Any, study_id: int) -> Counter[str]:
    """The study's stored trials per state name, in one query (an RDB storage; from a list of trials:
    :func:`hpsearch.records.state_counts`)."""
    import sqlalchemy
    from optuna.storages._rdb import models  # compat.PRIVATE_HOOKS: Optuna's tables

    trials = models.TrialModel
    with storage.engine.connect() as conn:
        rows = conn.execute(sqlalchemy.select(trials.state, sqlalchemy.func.count())
                            .where(trials.study_id == study_id).group_by(trials.state)).all()
    return Counter({(s.name if hasattr(s, "name") else str(s)): int(n) for s, n in rows})


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
        self.reads = self.reuses = 0

    def trials(self) -> list[Any]:
        """The study's trials in number order, as stored now (a list of its own: the caller may keep it)."""
        if self.known is not None and self.light and +stored_state_counts(self.storage, self.study_id) == +self.counts:
            self.reuses += 1
            return list(self.known)
        trials: list[Any] = self.study.get_trials(deepcopy=False)
        self.reads += 1
        if not trials or trials[-1].number == len(trials) - 1:  # numbered 0..n-1: the list is by number
            self.known, self.counts = list(trials), Counter(t.state.name for t in trials)
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

    def ended(self, frozen: Any) -> None:
        """A trial this process just told, as stored (``frozen``)."""
        known = self.known
        if known is None:
            return
        if frozen.number >= len(known):  # not created through the view
            self.forget()
            return
        self.counts[known[frozen.number].state.name] -= 1
        self.counts[frozen.state.name] += 1
        known[frozen.number] = frozen
