"""The keep-best-K rule, in one place: which trials' models are stored and which are deleted.

Every reader ranks with :func:`hpsearch.records.ranked` / :func:`~hpsearch.records.outranks` (value,
ties to the lower trial number). A finishing trial (one alone, or the members of a pack that end
together or out of trial order) is placed in that ranking before it is told
(:func:`finishing_keepers`): its model is saved only when it ranks in the best ``keep_models``
stored models, and its curve PNG only when it leads the study. :func:`keep_best_models` then deletes
the models that fell out of the best K; a model is never deleted while its trial can still be
named best.
"""

from __future__ import annotations

import contextlib
import heapq
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from hpsearch.pareto import pareto_front
from hpsearch.records import STUDY, TRIAL, outranks, primary_value, rank_key, ranked

if TYPE_CHECKING:  # pragma: no cover
    import optuna

    from hpsearch.storage.artifacts import ArtifactStore

__all__ = ["KeepBar", "finishing_keepers", "keep_best_models"]


def finishing_keepers(trials: Sequence[Any], direction: str, keep: int,
                      finishing: Sequence[tuple[float, int]]) -> tuple[set[int], int | None]:
    """For trials ``finishing`` now ((value, trial number) each, not told yet), given the study's
    ``trials`` so far: the indices whose models rank in the best ``keep`` stored models (the other
    finishing ones counted: the one-trial rule alone would store every member of a first pack), and
    the index of the one that leads the study (None: none does)."""
    # the study's best and the trials with a stored model: one pass, no sort of the whole study
    # (this runs at every pack end); the same trials and best as ranked()
    done = [t for t in trials if t.state.name == "COMPLETE" and primary_value(t) is not None]
    stored = [(primary_value(t), t.number) for t in done if t.user_attrs.get(TRIAL.MODEL_ARTIFACT)]
    best = min(done, key=rank_key(direction)) if done else None
    ahead = {i: sum(outranks(v, n, value, number, direction) for v, n in stored)
             + sum(outranks(*other, value, number, direction) for j, other in enumerate(finishing) if j != i)
             for i, (value, number) in enumerate(finishing)}
    keepers = {i for i, n in ahead.items() if n < keep}
    first = min(ahead, key=lambda i: ahead[i], default=None)
    leads = first is not None and (best is None or outranks(*finishing[first], primary_value(best), best.number,
                                                            direction))
    return keepers, first if leads else None


class KeepBar:
    """:func:`finishing_keepers` for one process, reading the study only when a finishing trial can
    rank: the best ``keep`` stored models as last read are a bar, and a finishing trial that at least
    ``keep`` of them outrank is neither kept nor the study's lead, whatever finished since (a stored
    model leaves the best K, and is deleted, only when K others outrank it, and they outrank every
    trial it outranks). Late in a long study almost every trial is under the bar: no read of the
    whole study per pack end (measured 5 % of a 10,000-trial packed study's time, issue 26)."""

    def __init__(self, direction: str, keep: int) -> None:
        self.direction, self.keep = direction, keep
        self.bar: list[tuple[float | None, int]] = []  # (value, number) of the best stored models read, best first

    def under(self, value: float | None, number: int) -> bool:
        """Do at least ``keep`` (>= 1) models of the bar outrank this finishing trial?"""
        return self.keep >= 1 and sum(outranks(v, n, value, number, self.direction) for v, n in self.bar) >= self.keep

    def keepers(self, read: Callable[[], Sequence[Any]],
                finishing: Sequence[tuple[float, int]]) -> tuple[set[int], int | None]:
        """:func:`finishing_keepers` of ``finishing`` against the study ``read()`` returns; no read
        when every one of them is under the bar."""
        if all(self.under(value, number) for value, number in finishing):
            return set(), None
        trials = read()
        stored = (t for t in trials if t.state.name == "COMPLETE" and primary_value(t) is not None
                  and t.user_attrs.get(TRIAL.MODEL_ARTIFACT))
        self.bar = [(primary_value(t), t.number)
                    for t in heapq.nsmallest(max(self.keep, 0), stored, key=rank_key(self.direction))]
        return finishing_keepers(trials, self.direction, self.keep, finishing)


def keep_best_models(study: optuna.Study, store: ArtifactStore, direction: str, keep: int,
                     trials: Sequence[Any] | None = None) -> int:
    """Delete the artifacts of completed trials outside the best ``keep``; how many were deleted.
    ``trials``: the study's trials as stored now (default: read).

    Ties go to the earlier trial (as Optuna's ``best_trial``), the study's own best model is never
    deleted, nor (several objectives) a model of the Pareto front, which a pick rule may choose;
    every deleted id is recorded in ``STUDY.REMOVED_ARTIFACTS`` so that readers (and
    other workers) know the file is gone on purpose. Safe to run from several workers at once.
    """
    from optuna.artifacts.exceptions import ArtifactNotFound

    attrs = study.user_attrs
    protected = {attrs.get(STUDY.BEST_MODEL_ARTIFACT), attrs.get(STUDY.BEST_PREPROCESS_ARTIFACT)}
    gone = set(attrs.get(STUDY.REMOVED_ARTIFACTS, []))
    trials = study.get_trials(deepcopy=False) if trials is None else trials
    if len(study.directions) > 1:
        front = pareto_front(trials, [d.name.lower() for d in study.directions])
        protected |= {t.user_attrs.get(k) for t in front for k in (TRIAL.MODEL_ARTIFACT, TRIAL.PREPROCESS_ARTIFACT)}
    with_models = [t for t in ranked(trials, direction) if t.user_attrs.get(TRIAL.MODEL_ARTIFACT)]
    removed = 0
    for t in with_models[max(keep, 0):]:
        for key in (TRIAL.MODEL_ARTIFACT, TRIAL.PREPROCESS_ARTIFACT, TRIAL.CURVE_ARTIFACT):
            aid = t.user_attrs.get(key)
            if not aid or aid in protected or aid in gone:
                continue
            with contextlib.suppress(ArtifactNotFound):  # another worker removed it first: gone all the same
                store.remove(aid)
            gone.add(aid)
            removed += 1
    if removed:
        study.set_user_attr(STUDY.REMOVED_ARTIFACTS, sorted(gone))
    return removed
