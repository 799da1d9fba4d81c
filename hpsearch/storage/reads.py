"""A study's trials read for a pack's reservation without reading its running trials again (issue 26).

Optuna's cached storage (``_CachedStorage`` over ``RDBStorage``) keeps every finished trial, but each
``get_trials`` reads again, whole (params, values, both attribute tables, intermediate values), every
trial it last saw unfinished and every trial newer than the last finished one it saw: a packed
study's read re-reads the pack's 60-odd running trials and the members it has just told. A refill
that reserves one trial paid that for it alone (the cause, measured, of late trials' sample time
being 3x early ones'). :func:`read_trials` returns what ``get_trials(deepcopy=False)`` returns with
one light query (id, number and state of those trials) and a whole read only of the trials that
are new or whose state changed; a running trial whose state did not change keeps the copy
already read (its params, which a drafted trial is created with; a trial asked one param at a time
is read again until it has params). :func:`known_created` and :func:`known_finished` put the trials
this process has just created (drafted) and told into the cache (their stored rows, known without a
read), so the next read does not fetch them.

What may be stale is a running trial's intermediate values and attributes written since it was
read: a reservation counts states (fresh) and TPE's constant liar uses a running trial's params
(never changed after they are set). Optuna's own reads (``get_trials``, pruners, Hyperband's bracket
views) are untouched: they re-read every unfinished trial as before, and the cache stays as Optuna
keeps it (every cached trial that is not finished is in its unfinished set). Any other storage:
``get_trials``. The private names are listed in :mod:`hpsearch.compat`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

__all__ = ["read_trials", "known_created", "known_finished"]


def _cache(study: Any) -> tuple[Any, Any] | None:
    """(Optuna's cached storage of ``study``, its cache of the study), or None: not a cached RDB
    storage, or the study not read through it yet (the first read is Optuna's own)."""
    import optuna
    from optuna.storages._cached_storage import _CachedStorage  # compat.PRIVATE_HOOKS

    cached = study._storage
    if not isinstance(cached, _CachedStorage) or not isinstance(cached._backend, optuna.storages.RDBStorage):
        return None
    info = cached._studies.get(study._study_id)
    return None if info is None else (cached, info)


def read_trials(study: Any) -> list[Any]:
    """The study's trials as ``study.get_trials(deepcopy=False)`` returns them (sorted by number, the
    cache's own objects), reading whole only the trials that are new or whose state changed."""
    found = _cache(study)
    if found is None:
        return list(study.get_trials(deepcopy=False))
    import sqlalchemy
    from optuna.storages._rdb import models  # compat.PRIVATE_HOOKS: Optuna's tables
    from sqlalchemy.orm import Session

    cached, info = found
    backend, sid = cached._backend, study._study_id
    with cached._lock:
        low = min([*info.unfinished_trial_ids, info.last_finished_trial_id + 1])
        t = models.TrialModel
        with Session(backend.engine) as session:
            rows = session.execute(sqlalchemy.select(t.trial_id, t.number, t.state)
                                   .where(t.study_id == sid, t.trial_id >= low)).all()
            session.rollback()
        need = set()
        for trial_id, number, state in rows:
            have = info.trials.get(number)
            if have is None or have.state != state or (not state.is_finished() and not have.params):
                need.add(int(trial_id))
        if need:  # as Optuna's _read_trials_from_remote_storage adds what it reads
            fresh = backend._get_trials(sid, None, need, max(need))  # these and any created since
            cached._add_trials_to_cache(sid, fresh)
            for trial in fresh:
                if not trial.state.is_finished():
                    info.unfinished_trial_ids.add(trial._trial_id)
                    continue
                info.last_finished_trial_id = max(info.last_finished_trial_id, trial._trial_id)
                info.unfinished_trial_ids.discard(trial._trial_id)
        return sorted(info.trials.values(), key=lambda trial: trial.number)


def known_created(study: Any, trials: Iterable[Any]) -> None:
    """Put ``trials`` (running ``FrozenTrial``s exactly as just created by this process, with their
    storage ids) into the study's cache as Optuna's read would add them, so that :func:`read_trials`
    does not read them whole (a running trial's copy may lag its later attributes: see above)."""
    import copy

    found = _cache(study)
    if found is None:
        return
    cached, info = found
    with cached._lock:
        fresh = [copy.deepcopy(t) for t in trials if t.number not in info.trials and not t.state.is_finished()]
        cached._add_trials_to_cache(study._study_id, fresh)
        info.unfinished_trial_ids.update(t._trial_id for t in fresh)


def known_finished(study: Any, trials: Iterable[Any]) -> None:
    """Put ``trials`` (finished ``FrozenTrial``s exactly as stored: told by this process, their rows
    known without a read) into the study's cache in place of the running copies it holds, so that
    :func:`read_trials` does not read them back. A trial the cache does not hold is left to a read."""
    found = _cache(study)
    if found is None:
        return
    cached, info = found
    with cached._lock:
        for trial in trials:
            have = info.trials.get(trial.number)
            if have is not None and have._trial_id == trial._trial_id and trial.state.is_finished():
                info.trials[trial.number] = trial
                info.unfinished_trial_ids.discard(trial._trial_id)
