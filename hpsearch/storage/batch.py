"""Writes of many trials in one transaction: a pack's per-epoch intermediate values and its heartbeats.

Optuna's public :class:`~optuna.storages.RDBStorage` API writes one trial per transaction
(``set_trial_intermediate_value``, ``record_heartbeat``), so a pack of K members cost K commits per
epoch and K more per heartbeat interval (issue 23: thousands of commits per second per host with
packs of 64 and short epochs). Here one transaction holds them all:

* :func:`write_intermediate_values`: every ``(trial id, step, value)`` of an epoch in one
  transaction of four statements whatever K (the trials' states, the steps already stored, one
  multi-row insert, the commit), in Optuna's own tables with Optuna's encoding of inf / NaN
  (``TrialIntermediateValueModel.intermediate_value_to_stored_repr``) and its rule (a finished
  trial is not written). A crash loses at most the values not yet committed (one epoch's); every
  member's whole curve is stored, as ``trial.report`` stores it (the dashboard draws it).
* :func:`write_user_attrs`: the attributes a trial is recorded with (a dozen) in one transaction,
  not one commit each (a pack's members often end together, at the same epoch).
* :func:`beat_and_check`: the heartbeats of every id in one transaction, and their states read back
  in one query (ids no longer RUNNING: failed as stale by another worker).
* :func:`running_without_heartbeat`: a study's RUNNING trials that never recorded a heartbeat (one
  query), which Optuna's stale check skips: see :class:`hpsearch.execution.requeue.Orphans`.

Both take Optuna's RDBStorage (``open_storage``'s); any other storage is written trial by trial
through its public API. The private names used are listed in :mod:`hpsearch.compat`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

__all__ = ["write_intermediate_values", "write_user_attrs", "beat_and_check", "running_without_heartbeat"]


def _rdb(storage: Any) -> bool:
    import optuna

    return isinstance(storage, optuna.storages.RDBStorage)


def _transaction(storage: Any, work: Any) -> Any:
    """Run ``work(session)`` in one new session on ``storage``'s engine and commit it, or roll it all
    back on an error (the driver's error surfaces as is, classified by its class). Its own session,
    not Optuna's thread-local one: Optuna's error path reads the trial through that one and commits
    it, which would commit half a batch."""
    from sqlalchemy.orm import Session

    with Session(storage.engine) as session:
        try:
            out = work(session)
            session.commit()
        except BaseException:
            session.rollback()
            raise
        return out


def _check_running(session: Any, ids: Sequence[int]) -> None:
    """Raise Optuna's ``UpdateFinishedTrialError`` (what its setters raise) unless every trial in
    ``ids`` is unfinished: one query."""
    import optuna
    import sqlalchemy
    from optuna.storages._rdb import models  # compat.PRIVATE_HOOKS: Optuna's tables

    trials = models.TrialModel
    query = sqlalchemy.select(trials.trial_id, trials.state).where(trials.trial_id.in_(ids))
    states = dict(session.execute(query).all())
    for trial_id in ids:
        state = states.get(trial_id)
        if state is None or state.is_finished():
            raise optuna.exceptions.UpdateFinishedTrialError(
                f"trial id {trial_id} is {'missing' if state is None else state.name}: it cannot be written")


def write_intermediate_values(storage: Any, values: Sequence[tuple[int, int, float]]) -> None:
    """Store ``(trial_id, step, value)`` intermediate values of several trials in one transaction of
    a constant number of statements (the trials' states, the steps already stored, one insert, one
    commit); a trial no longer RUNNING among them raises Optuna's ``UpdateFinishedTrialError`` (what
    ``set_trial_intermediate_value`` raises) and nothing is written. A step already stored is
    overwritten, as Optuna's storage does."""
    if not values:
        return
    if not _rdb(storage):
        for trial_id, step, value in values:
            storage.set_trial_intermediate_value(trial_id, step, value)
        return

    import sqlalchemy
    from optuna.storages._rdb import models  # compat.PRIVATE_HOOKS: Optuna's tables and value encoding

    table = models.TrialIntermediateValueModel
    ids = sorted({trial_id for trial_id, _, _ in values})

    def work(session: Any) -> None:
        _check_running(session, ids)
        steps = sqlalchemy.select(table.trial_intermediate_value_id, table.trial_id, table.step).where(
            table.trial_id.in_(ids), table.step.in_(sorted({int(step) for _, step, _ in values})))
        stored = {(t, s): i for i, t, s in session.execute(steps)}  # only the steps written: not the whole curves
        rows = []
        for trial_id, step, value in values:
            repr_value, kind = table.intermediate_value_to_stored_repr(float(value))
            row = {"trial_id": trial_id, "step": int(step), "intermediate_value": repr_value,
                   "intermediate_value_type": kind}
            if (trial_id, int(step)) in stored:
                session.execute(sqlalchemy.update(table).where(
                    table.trial_intermediate_value_id == stored[trial_id, int(step)]).values(**row))
            else:
                rows.append(row)
        if rows:
            session.execute(sqlalchemy.insert(table), rows)

    _transaction(storage, work)


def write_user_attrs(storage: Any, trial_id: int, attrs: dict[str, Any]) -> None:
    """Set the user attributes ``attrs`` of one running trial in one transaction (its state, the keys
    already stored, one update per stored key, one insert, one commit), stored as
    ``set_trial_user_attr`` stores them (JSON); a finished trial raises ``UpdateFinishedTrialError``
    and nothing is written."""
    if not attrs:
        return
    if not _rdb(storage):
        for key, value in attrs.items():
            storage.set_trial_user_attr(trial_id, key, value)
        return

    import sqlalchemy
    from optuna.storages._rdb import models  # compat.PRIVATE_HOOKS: Optuna's tables

    table = models.TrialUserAttributeModel
    encoded = {key: json.dumps(value) for key, value in attrs.items()}

    def work(session: Any) -> None:
        _check_running(session, [trial_id])
        query = sqlalchemy.select(table.key).where(table.trial_id == trial_id, table.key.in_(list(encoded)))
        stored = set(session.scalars(query))
        for key in stored:
            session.execute(sqlalchemy.update(table).where(table.trial_id == trial_id, table.key == key)
                            .values(value_json=encoded[key]))
        rows = [{"trial_id": trial_id, "key": key, "value_json": v} for key, v in encoded.items() if key not in stored]
        if rows:
            session.execute(sqlalchemy.insert(table), rows)

    _transaction(storage, work)


def beat_and_check(storage: Any, trial_ids: Iterable[int]) -> set[int]:
    """Record the heartbeat of every trial in ``trial_ids`` in one transaction and return those no
    longer RUNNING (another worker failed them as stale)."""
    ids = sorted(set(trial_ids))
    if not ids:
        return set()
    if not _rdb(storage):
        for trial_id in ids:
            storage.record_heartbeat(trial_id)
        return {i for i in ids if storage.get_trial(i).state.name != "RUNNING"}

    import sqlalchemy
    from optuna.storages._rdb import models  # compat.PRIVATE_HOOKS: Optuna's tables, as record_heartbeat writes them

    def work(session: Any) -> set[int]:
        now = session.execute(sqlalchemy.func.now()).scalar_one()
        beats = models.TrialHeartbeatModel
        have = set(session.scalars(sqlalchemy.select(beats.trial_id).where(beats.trial_id.in_(ids))))
        if have:
            session.execute(sqlalchemy.update(beats).where(beats.trial_id.in_(have)).values(heartbeat=now))
        session.add_all([beats(trial_id=i, heartbeat=now) for i in ids if i not in have])
        trials = models.TrialModel
        states = session.execute(sqlalchemy.select(trials.trial_id, trials.state).where(trials.trial_id.in_(ids)))
        return {i for i, state in states if state.name != "RUNNING"}

    gone: set[int] = _transaction(storage, work)
    return gone


def running_without_heartbeat(storage: Any, study_id: int) -> set[int]:
    """The ids of ``study_id``'s RUNNING trials that have no heartbeat row (one query). Optuna's stale
    check skips them; a storage without heartbeats (not RDB) has none."""
    if not _rdb(storage):
        return set()

    import sqlalchemy
    from optuna.storages._rdb import models  # compat.PRIVATE_HOOKS: Optuna's tables
    from optuna.trial import TrialState

    trials, beats = models.TrialModel, models.TrialHeartbeatModel
    query = (sqlalchemy.select(trials.trial_id)
             .outerjoin(beats, beats.trial_id == trials.trial_id)
             .where(trials.study_id == study_id, trials.state == TrialState.RUNNING, beats.trial_id.is_(None)))
    return set(_transaction(storage, lambda session: list(session.scalars(query))))
