"""The exact global trial budget of a study shared by any number of processes.

Optuna's ``MaxTrialsCallback`` is checked *after* a trial, per process, so N workers overshoot to
``n_trials + N - 1``. The trial loop instead reserves a slot *before* ``study.ask()``:

* ``done``    = COMPLETE + PRUNED trials (what the budget counts),
* ``running`` = RUNNING trials (stale ones are failed first by :func:`hpsearch.execution.requeue.fail_stale`:
  every trial of the loop records a heartbeat as soon as it is asked),
* ``slots``   = ``n_trials - done - running``.

If ``done >= n_trials`` the process is finished. If ``slots > 0`` it calls ``study.ask()``, which
pops a WAITING trial first (a re-queued trial of a killed or stopped worker, or one the user
enqueued) and otherwise creates a new one. If ``slots <= 0`` the rest of the budget is being run by
other workers: this one waits (polling) instead of exiting, because a trial running elsewhere may
still die; its re-queued copy then becomes a free slot. So the last workers linger until every
trial has finished. FAIL trials do not count: a failure frees its slot.

A pack reserves its trials under one count (:meth:`Budget.reserve_many`): queued (WAITING) trials
are popped by ``ask()`` first, the others drafted where the sampler allows it (created with their
params and first heartbeats, all in one transaction: :mod:`hpsearch.execution.drafts`), and the
heartbeats of all of them written in one transaction.

The count, the ``ask()`` (or the drafts) and the trials' first heartbeats happen in one critical section: on
PostgreSQL a transaction-scoped, blocking advisory lock keyed by the study id
(``pg_advisory_xact_lock`` under ``SET LOCAL lock_timeout``, released on commit, rollback or a dropped
connection, so a killed worker cannot hold it). SQLite serves one process, so there is no race to
guard. Nothing is created beyond the budget.

Behind a connection pooler (PgBouncer in transaction pooling; told by
:func:`hpsearch.storage.behind_pooler`) a blocked waiter holds one of the pool's few server
connections for as long as it waits, and the lock's holder needs server connections of its own
(``ask``, the heartbeat) to finish: waiters that fill the pool starve the holder (16 workers on a
pool of 8: lock wait p50 24 s; 256 clients on a pool of 32: no trial finished in minutes). There each
blocking wait lasts :data:`POOLED_ATTEMPT` s and the waiter then gives its server connection back for
a pause drawn from a jittered exponential back-off (up to :data:`POOLED_PAUSE_CAP` s), so the waiters
together hold a small share of the pool and the holder's statements find a free server connection.

The lock is taken only when a slot looks free: the same count made first without the lock already
answers "budget met" (``done`` never falls) and "every slot is taken, wait" (a wait is always
safe), so workers that linger at the end of a study poll without queueing on the lock.
"""

from __future__ import annotations

import contextlib
import itertools
import random
import time
import warnings
from collections.abc import Callable, Iterator
from typing import Any

from hpsearch.errors import StudyFailedError
from hpsearch.execution.drafts import created_trial, resync
from hpsearch.records import tally
from hpsearch.storage import behind_pooler, is_lock_timeout, is_postgresql
from hpsearch.storage.batch import beat_and_check, create_trials
from hpsearch.storage.view import Snapshot, StudyView

__all__ = ["Budget", "study_lock", "take_launch", "tally", "pooled_lock_line", "LAUNCH_ATTR"]

LAUNCH_ATTR = "hpsearch:launches"  # study system attr: processes that ran trials of the study so far
#: Seconds one blocking wait for the study lock may last before it is rolled back and started again.
LOCK_ATTEMPT = 2.0
#: Behind a pooler: seconds of one blocking wait, then the server connection goes back to the pool ...
POOLED_ATTEMPT = 0.1
#: ... for a pause of ``u * min(POOLED_PAUSE_CAP, POOLED_ATTEMPT * 2**k)`` s after the k-th such wait
#: of this wait for the lock, ``u`` uniform in [0.5, 1]. Once the pauses reach the cap a waiter holds
#: a server connection for about 1/12 of its wait (at most 1/8), so 200 waiters hold ~ 17 of them.
POOLED_PAUSE_CAP = 1.5
#: Seconds between two looks at who holds the lock while waiting for it (see ``study_lock``'s timeout).
HOLDER_CHECK = 10.0
_LOCK_CLASS = 0x6870  # "hp": first key of the advisory lock, the study id is the second


@contextlib.contextmanager
def study_lock(storage: Any, url: str, study_id: int, name: str, timeout: float = 120.0) -> Iterator[Any]:
    """A critical section over one study across processes (PostgreSQL advisory lock; SQLite: none).
    Yields the connection whose transaction holds the lock (None on SQLite): what the holder writes
    through it commits as the lock is released, or not at all, without a checkout of its own.

    The lock is transaction-scoped (``pg_advisory_xact_lock``: released on commit, rollback or a
    dropped connection, and safe behind PgBouncer in transaction-pooling mode) and *blocking*: the
    server queues the waiters and wakes the next one on release, no polling. Each wait is bounded by
    ``SET LOCAL lock_timeout`` (:data:`LOCK_ATTEMPT` s directly, :data:`POOLED_ATTEMPT` s behind a
    pooler); on a timeout (SQLSTATE 55P03 lock_not_available, told by class) the transaction is rolled
    back and the wait starts again, after a short pause directly and a jittered back-off behind a
    pooler (see the module docstring). A wait fails, in one line naming the study, only when the lock
    has not changed hands for ``timeout`` s (one transaction held it the whole time: a hung process);
    hundreds of processes that take the lock in turn may wait longer than that for their turn.
    """
    if not is_postgresql(url):
        yield None
        return
    pooled = behind_pooler(storage)
    attempt = POOLED_ATTEMPT if pooled else LOCK_ATTEMPT
    watch = _Holder(storage, study_id, timeout)
    for tries in itertools.count():
        with storage.engine.connect() as conn, conn.begin() as trans:
            if _lock(conn, study_id, max(min(attempt, watch.every, watch.left()), 0.001)):
                yield conn
                return
            trans.rollback()
        if watch.stuck():
            raise StudyFailedError(
                f"could not lock study {name!r} within {timeout:.0f} s: one transaction (server process "
                f"{watch.pid}) held its lock the whole time; look for that process in pg_stat_activity "
                f"(a hung worker) and run again"
            )
        time.sleep(pooled_pause(tries) if pooled else random.random() / 20)  # de-synchronise the waiters


class _Holder:
    """Who holds the study lock while this process waits for it: ``pg_locks`` (a transaction is one
    ``virtualtransaction``), read after the first timed-out wait, then every ``min(HOLDER_CHECK,
    timeout / 4)`` s of waiting (no single wait lasts longer)."""

    def __init__(self, storage: Any, study_id: int, timeout: float) -> None:
        self.storage, self.study_id, self.timeout = storage, study_id, timeout
        self.every = min(HOLDER_CHECK, timeout / 4)
        self.changed = self.checked = time.monotonic()  # the last time the lock was seen to change hands
        self.seen = False
        self.holder: str | None = None
        self.pid: int | None = None

    def left(self) -> float:
        return self.timeout - (time.monotonic() - self.changed)

    def stuck(self) -> bool:
        """True when the lock has not changed hands for ``timeout`` s."""
        now = time.monotonic()
        if not self.seen or now - self.checked >= self.every:
            self.checked = now
            with self.storage.engine.connect() as conn:
                row = conn.exec_driver_sql(
                    "SELECT virtualtransaction, pid FROM pg_locks WHERE locktype = 'advisory' AND granted "
                    "AND classid::bigint = %(a)s AND objid::bigint = %(b)s AND objsubid = 2",
                    {"a": _LOCK_CLASS, "b": int(self.study_id)}).first()
                conn.rollback()
            holder = None if row is None else str(row[0])
            if holder is None or (self.seen and holder != self.holder):
                self.changed = now  # free for a moment, or another transaction has it: not hung
            self.seen, self.holder, self.pid = True, holder, None if row is None else int(row[1])
        return now - self.changed >= self.timeout


def pooled_pause(tries: int) -> float:
    """Seconds a waiter behind a pooler leaves the server connection after its ``tries``-th (from 0)
    timed-out wait: jittered exponential back-off (:data:`POOLED_PAUSE_CAP`)."""
    return random.uniform(0.5, 1.0) * min(POOLED_PAUSE_CAP, POOLED_ATTEMPT * 2.0 ** min(tries, 30))


def pooled_lock_line(storage: Any, url: str) -> str | None:
    """The line that says how this process waits for the study lock when a pooler is in front of
    PostgreSQL (an automatic decision); None directly and on SQLite."""
    if not is_postgresql(url) or not behind_pooler(storage):
        return None
    return (f"study lock: a connection pooler is in front of PostgreSQL (the session that runs the "
            f"statements is not the one named at login), so each wait for the lock lasts "
            f"{POOLED_ATTEMPT:g} s and then frees its server connection for a jittered back-off of up to "
            f"{POOLED_PAUSE_CAP:g} s (directly: blocking waits of {LOCK_ATTEMPT:g} s)")


def _lock(conn: Any, study_id: int, wait: float) -> bool:
    """Take the study's advisory lock in ``conn``'s transaction, waiting at most ``wait`` s."""
    import sqlalchemy

    conn.exec_driver_sql(f"SET LOCAL lock_timeout = '{max(1, int(wait * 1000))}ms'")
    try:
        conn.execute(sqlalchemy.text("SELECT pg_advisory_xact_lock(:a, :b)"), {"a": _LOCK_CLASS, "b": int(study_id)})
    except sqlalchemy.exc.OperationalError as exc:
        if not is_lock_timeout(exc):
            raise
        return False
    conn.exec_driver_sql("SET LOCAL lock_timeout = DEFAULT")  # the holder's own statements wait as any other
    return True


class Budget:
    """Reserve a trial slot against the global budget (see the module docstring)."""

    def __init__(self, study: Any, storage: Any, url: str, study_id: int, n_trials: int | None) -> None:
        self.study, self.storage, self.url, self.study_id = study, storage, url, study_id
        self.n_trials = n_trials
        self.pending: Any = None  # asked, not yet handed out (see reserve)
        #: reserved by reserve_many, not yet handed out: Trials, or (id, template) of drafted ones
        self.held: list[Any] = []
        #: ``draft(number) -> template``: one trial drafted with its params (hpsearch.execution.drafts;
        #: a reservation's drafts are created together), or None: ``study.ask()`` per trial. Set by
        #: the packed loop where the sampler allows it.
        self.draft: Callable[[int], Any] | None = None
        self.ids: dict[int, int] = {}  # trial number -> storage id of the trials this process reserved
        #: storage ids of the drafted trials handed out: their Trial holds every stored field (nothing
        #: else writes them while they run), so their end can be known without a read back
        self.created: set[int] = set()
        #: Seconds a reserved trial may wait for its first heartbeat while the rest of a pack is reserved
        #: (another process fails a RUNNING trial without one after the grace period: Orphans).
        self.beat_within = 0.5
        #: trials of the budget neither finished, running nor reserved as the last reservation counted
        #: them (None: no budget, or none counted yet)
        self.left: int | None = None
        #: the study's trials as a reservation reads them: read again only when another process (or a
        #: re-queue) changed the study; the loop tells it the trials it ends (:meth:`StudyView.ended`)
        self.view = StudyView(study, storage, study_id)

    def counts(self, trials: list[Any] | None = None) -> tuple[int, int]:
        """(done, running) among ``trials`` (default: the study's trials as stored now)."""
        done, running, _ = tally(self.study.get_trials(deepcopy=False) if trials is None else trials)
        return done, running

    def _verdict(self) -> bool | None:
        """True: the budget is met; False: every free slot is taken (wait); None: a slot is free."""
        assert self.n_trials is not None
        done, running = self.counts()
        if done >= self.n_trials:
            return True
        if done + running >= self.n_trials:
            return False
        return None

    def trial_id(self, trial: Any) -> int:
        """The storage id of ``trial`` (known without a read for the trials this process reserved)."""
        tid = self.ids.get(trial.number)
        if tid is None:
            tid = self.ids[trial.number] = int(self.storage.get_trial_id_from_study_id_trial_number(
                self.study_id, trial.number))
        return tid

    def reserve(self) -> tuple[Any, bool]:
        """(trial, finished): a trial to run now, or None and whether the budget is met.

        A trial asked in a call that then failed (the connection dropped before its heartbeat or the
        commit) is kept and handed out by the retried call: Optuna's stale check skips a trial without
        a heartbeat, so a second ``ask`` would leave the first RUNNING for ever.
        """
        if self.pending is not None:
            trial = self.pending
            self.storage.record_heartbeat(self.trial_id(trial))
            self.pending = None
            return trial, False
        if self.n_trials is not None:
            verdict = self._verdict()  # without the lock: "met" and "wait" need no lock
            if verdict is not None:
                return None, verdict
        with study_lock(self.storage, self.url, self.study_id, self.study.study_name):
            if self.n_trials is not None:
                verdict = self._verdict()
                if verdict is not None:
                    return None, verdict
            with warnings.catch_warnings():  # "heartbeat is supposed to be used with optimize": we beat
                warnings.simplefilter("ignore", UserWarning)
                trial = self.study.ask()
            self.pending = trial
            self.storage.record_heartbeat(self.trial_id(trial))
        self.pending = None
        return trial, False

    def reserve_many(self, k: int) -> tuple[list[Any], bool]:
        """(trials, finished): up to ``k`` trials under one lock and one count (a pack's reservation;
        :meth:`reserve` counts once per trial). WAITING trials (re-queued or enqueued: their params
        fixed) are popped first by ``study.ask()``; the others are drafted (:attr:`draft`: created with
        their params and first heartbeats, all in one transaction: on PostgreSQL the lock's own) or
        asked. The asked ones' heartbeats are recorded in one transaction before the drafts are created.
        Trials reserved by a call that then failed are handed out by the retried call, as :meth:`reserve`
        does with one (a failed call's drafts are not stored: they are created together, or not at all,
        and handed on only once committed)."""
        if self.pending is not None:
            trial, finished = self.reserve()
            return [trial], finished
        if not self.held:
            with study_lock(self.storage, self.url, self.study_id, self.study.study_name) as conn:
                snap = self.view.snapshot(conn)
                trials, n, done, running, waiting = snap.trials, k, snap.done, snap.running, snap.waiting
                if self.n_trials is not None:
                    if done >= self.n_trials:
                        self.left = 0
                        return [], True
                    n = min(k, self.n_trials - done - running)
                    self.left = max(0, self.n_trials - done - running - max(0, n))
                waiting = waiting if self.draft is not None else n
                unbeaten, drafts = time.monotonic(), []
                if self.draft is not None:
                    resync(self.study, trials)  # the drafts' sampler sees the study as stored now, as an ask would
                with warnings.catch_warnings():  # see reserve
                    warnings.simplefilter("ignore", UserWarning)
                    new = waiting if self.draft is not None else 0  # the first trial the sampler proposes
                    for i in range(max(0, n)):
                        if i == new:
                            self._expect(n - new, snap)
                        if i < waiting:
                            self.held.append(self.study.ask())  # a queued trial first, with its fixed params
                        else:
                            assert self.draft is not None
                            drafts.append(self.draft(len(trials) + i - waiting))
                        if time.monotonic() - unbeaten > self.beat_within:  # a slow reservation: none waits long
                            self._beat()
                            unbeaten = time.monotonic()
                if self.held:  # the asked ones, stored by Optuna's ask (the drafts are beaten as created)
                    self._beat()
                # numbered as stored; on PostgreSQL in the lock's transaction: committed as it is released
                ids = create_trials(self.storage, self.study_id, drafts, conn)
            self.held += list(zip(ids, drafts))  # stored for sure only now (a retry would beat them)
        else:  # a retry: the heartbeats may not have been written
            self._beat()
        trials_out = [self._trial(t) for t in self.held]
        if all(isinstance(t, tuple) for t in self.held):  # all drafted here: the view knows them as created
            self.view.created([t._cached_frozen_trial for t in trials_out])  # compat.PRIVATE_HOOKS
        else:
            self.view.forget()  # a queued trial was asked: the next reservation reads
        self.held = []
        return trials_out, False

    def _expect(self, n: int, snap: Snapshot) -> None:
        """Tell a sampler that takes the hint (``expect(n, snap)``: hpsearch's one-fit-per-pack TPE)
        that ``n`` proposals follow (it draws them in one batch) and that ``snap`` is the study as
        stored now (read under the lock: it fits on it without a read of its own)."""
        expect = getattr(self.study.sampler, "expect", None)
        if callable(expect):
            expect(n, snap)

    def _beat(self) -> None:
        """The heartbeats of every held trial in one transaction (their first: inside the lock)."""
        beat_and_check(self.storage, [t[0] if isinstance(t, tuple) else self.trial_id(t) for t in self.held])

    def _trial(self, held: Any) -> Any:
        """A held trial as an ``optuna.trial.Trial``: a drafted one ((storage id, its template)) is built
        from its template, as created, without reading it back (:func:`hpsearch.execution.drafts.created_trial`)."""
        if not isinstance(held, tuple):
            return held
        trial_id, template = held
        trial = created_trial(self.study, template, trial_id)
        self.ids[trial.number] = trial_id
        self.created.add(trial_id)
        return trial


def take_launch(storage: Any, url: str, study_id: int, name: str) -> int:
    """This process's launch number on the study: 0 for the first process that runs its trials, then
    1, 2, ... (a counter stored on the study, taken under the study lock, so concurrent launches get
    different numbers). The sampler seed is derived from it (:func:`hpsearch.engines.samplers.launch_seed`)."""
    with study_lock(storage, url, study_id, name):
        n = int(storage.get_study_system_attrs(study_id).get(LAUNCH_ATTR, 0))
        storage.set_study_system_attr(study_id, LAUNCH_ATTR, n + 1)
    return n
