"""Worker processes on one shared study: GPU pinning, signals, heartbeat, an exact global budget.

``hpsearch run STUDY --workers N`` (:func:`run_workers`) validates the study and creates it once,
then starts N ``python -m hpsearch worker STUDY --storage <URL without password>`` processes (the
password travels in ``PGPASSWORD``, never in argv), shows progress by polling the storage, waits,
and stores the best model's test score. ``hpsearch worker STUDY`` (:func:`run_worker`) is one such
process; it can also be started by hand on another machine (or by docker-compose) to join a study.
There is no coordinator of our own: the storage is the only shared state (DESIGN.md section 1).

The exact global budget
-----------------------
Optuna's ``MaxTrialsCallback`` is checked *after* a trial, per process, so N workers overshoot to
``n_trials + N - 1``. A worker here instead reserves a trial slot *before* ``study.ask()``:

* ``done``    = COMPLETE + PRUNED trials (what the budget counts, as in the one-process engine),
* ``running`` = RUNNING trials that are alive: they have a heartbeat row, or started less than
  two grace periods ago (a RUNNING trial left by a killed process that ran without a heartbeat
  would otherwise hold its slot for ever),
* ``slots``   = ``n_trials - done - running``.

If ``done >= n_trials`` the worker is finished. If ``slots > 0`` it calls ``study.ask()``, which
pops a WAITING trial first (a re-queued trial of a killed or stopped worker, or one the user
enqueued) and otherwise creates a new one. If ``slots <= 0`` the remaining budget is being run by
other workers: this worker waits (polling, and failing stale trials on each poll) instead of
exiting, because a trial running elsewhere may still die; its re-queued copy then becomes a free
slot and is picked up here. So the last workers linger until every trial has finished.

The count and the ``ask()`` (plus the trial's first heartbeat) happen in one critical section: on
PostgreSQL a transaction-scoped advisory lock keyed by the study id
(``pg_try_advisory_xact_lock``); it is released on commit, rollback or a dropped connection, so a
killed worker cannot hold it. SQLite serves one worker, so there is no race to guard. Because
reservation happens before ``ask()``, there are no surplus trials: nothing is created beyond the
budget, nothing has to be deleted or disguised afterwards. FAIL trials do not count (the budget is
completed work); a FAIL frees its slot, and a stale or stopped trial's re-queued WAITING copy
takes it. WAITING trials beyond the budget (e.g. enqueued by a user) are left WAITING.

Crash safety
------------
* Heartbeat on (``HPSEARCH_HEARTBEAT_INTERVAL`` seconds, default 10; grace
  ``HPSEARCH_HEARTBEAT_GRACE``, default 3x the interval; a grace below 2x the interval is refused,
  so a live worker's trial is never declared stale by one late beat). Our heartbeat thread survives
  storage errors (Optuna's thread dies on the first one, after which a live trial would go stale)
  and, on each beat, checks that its trial is still RUNNING. If another worker failed it as stale
  (e.g. after a storage outage longer than the grace period), the trial is abandoned at the next
  batch and not told: its re-queued copy runs elsewhere, so no trial runs on two live workers.
* A worker killed with SIGKILL: its trial's heartbeat stops; after the grace period any other
  worker (each poll and each ``ask``) marks it FAIL and ``RetryHeartbeatStaleTrialCallback``
  re-queues a WAITING copy (same params, ``failed_trial`` in system attrs), run next.
* SIGTERM / SIGINT: the current trial is stopped at the next batch, told FAIL with reason
  ``worker stopped (SIGTERM)`` and re-queued as WAITING (its work is not lost), and the worker exits
  0. A watchdog enforces ``HPSEARCH_STOP_DEADLINE`` seconds (default 30): past it, or on a second
  signal, the trial is failed and re-queued from the watchdog thread and the process exits 0.
* Storage outages (PostgreSQL restart): connections are checked out with ``pool_pre_ping``; every
  storage call of the loop is retried with back-off for ``HPSEARCH_STORAGE_RETRY`` seconds (default
  120). A trial whose reports failed during the outage is told FAIL and re-queued. If the storage
  stays down, the worker exits with a one-line message (password redacted).

GPU and CPU workers
-------------------
``--gpus 0,1 --per-gpu K`` gives each worker ``CUDA_VISIBLE_DEVICES=<id>`` (K per id) and the memory
settings that let K processes share one GPU: TensorFlow memory growth
(``TF_FORCE_GPU_ALLOW_GROWTH``), JAX without preallocation and capped at ``0.9/K`` of the memory
(``XLA_PYTHON_CLIENT_PREALLOCATE=false``, ``XLA_PYTHON_CLIENT_MEM_FRACTION``), PyTorch with
expandable segments and ``torch.cuda.set_per_process_memory_fraction(0.9/K)`` applied in the worker
(``HPSEARCH_GPU_MEMORY_FRACTION``). Without ``--gpus`` the workers run on the CPU
(``CUDA_VISIBLE_DEVICES=""``, ``JAX_PLATFORMS=cpu``) with ``cores // N`` threads each
(OMP / TensorFlow intra-op threads) so that N workers do not oversubscribe the cores.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import logging
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Optional, Sequence, Union

from hpsearch.errors import StorageError, StudyFailedError, UserError

__all__ = [
    "run_workers",
    "run_worker",
    "parse_gpus",
    "plan_workers",
    "worker_env",
    "worker_command",
    "heartbeat_settings",
    "apply_backend_settings",
    "HEARTBEAT_ENV",
    "GRACE_ENV",
    "STOP_DEADLINE_ENV",
    "STORAGE_RETRY_ENV",
]

log = logging.getLogger("hpsearch.workers")

HEARTBEAT_ENV = "HPSEARCH_HEARTBEAT_INTERVAL"
GRACE_ENV = "HPSEARCH_HEARTBEAT_GRACE"
STOP_DEADLINE_ENV = "HPSEARCH_STOP_DEADLINE"
STORAGE_RETRY_ENV = "HPSEARCH_STORAGE_RETRY"
POLL_ENV = "HPSEARCH_WORKER_POLL"
GPU_FRACTION_ENV = "HPSEARCH_GPU_MEMORY_FRACTION"
CPU_THREADS_ENV = "HPSEARCH_CPU_THREADS"
MANAGED_ENV = "HPSEARCH_WORKER_MANAGED"  # set by run_workers: the parent finalizes, not the worker
PARENT_ENV = "HPSEARCH_WORKER_PARENT"  # parent pid: a worker whose parent died stops gracefully
INDEX_ENV = "HPSEARCH_WORKER_INDEX"
PARENT_POLL = 2.0  # seconds between the parent's progress reads of all trials (each is one query)

DEFAULT_HEARTBEAT = 10
DEFAULT_STOP_DEADLINE = 30.0
DEFAULT_STORAGE_RETRY = 120.0
GPU_MEMORY_SHARE = 0.9  # of a GPU's memory, split between the workers pinned to it
_LOCK_CLASS = 0x6870  # "hp": first key of the advisory lock, the study id is the second


# ==================================================================================================
# Planning: GPUs, environment, command line
# ==================================================================================================


def parse_gpus(spec: Union[str, Sequence[Union[str, int]], None]) -> list[str]:
    """``"0,1"`` -> ``["0", "1"]``. Ids are indexes or ``GPU-``/``MIG-`` UUIDs; no duplicates."""
    if spec is None:
        return []
    items = spec.split(",") if isinstance(spec, str) else [str(s) for s in spec]
    ids = [s.strip() for s in items if s.strip()]
    if isinstance(spec, str) and spec.strip() and not ids:
        raise UserError(f"--gpus {spec!r} names no GPU; write e.g. --gpus 0,1")
    for g in ids:
        if not (g.isdigit() or g.upper().startswith(("GPU-", "MIG-"))):
            raise UserError(f"--gpus: {g!r} is not a GPU id; write indexes like --gpus 0,1 (see nvidia-smi -L)")
    dup = sorted({g for g in ids if ids.count(g) > 1})
    if dup:
        raise UserError(f"--gpus lists {', '.join(dup)} twice; use --per-gpu K for several workers per GPU")
    return ids


def plan_workers(n_workers: int, gpus: Sequence[str], per_gpu: int = 1) -> list[Optional[str]]:
    """The GPU id of each worker (``None``: CPU). With GPUs the default is ``len(gpus) * per_gpu``
    workers; an explicit ``n_workers`` > 1 may use fewer slots (spread round-robin), not more."""
    if not isinstance(n_workers, int) or n_workers < 1 or not isinstance(per_gpu, int) or per_gpu < 1:
        raise UserError("--workers and --per-gpu must be >= 1")
    if not gpus:
        if per_gpu != 1:
            raise UserError("--per-gpu needs --gpus (e.g. --gpus 0 --per-gpu 2)")
        return [None] * n_workers
    slots = len(gpus) * per_gpu
    n = slots if n_workers == 1 else n_workers
    if n > slots:
        raise UserError(
            f"--workers {n_workers} is more than --gpus {','.join(gpus)} x --per-gpu {per_gpu} = {slots} slots; "
            f"raise --per-gpu or leave --workers out"
        )
    return [gpus[i % len(gpus)] for i in range(n)]


def worker_env(
    gpu: Optional[str],
    *,
    per_gpu: int = 1,
    n_workers: int = 1,
    cpu_count: Optional[int] = None,
    base: Optional[Mapping[str, str]] = None,
) -> dict[str, str]:
    """Environment additions for one worker (see the module docstring). Thread counts already set
    in ``base`` (the user's environment) are kept."""
    base = os.environ if base is None else base
    env: dict[str, str] = {}
    cores = cpu_count or os.cpu_count() or 1
    if gpu is not None:
        frac = f"{GPU_MEMORY_SHARE / per_gpu:.3f}"
        env.update({
            "CUDA_VISIBLE_DEVICES": gpu,
            "TF_FORCE_GPU_ALLOW_GROWTH": "true",
            "XLA_PYTHON_CLIENT_PREALLOCATE": "false",
            "XLA_PYTHON_CLIENT_MEM_FRACTION": frac,
            "PYTORCH_CUDA_ALLOC_CONF": "expandable_segments:True",
            GPU_FRACTION_ENV: frac,
        })
    else:
        env.update({"CUDA_VISIBLE_DEVICES": "", "JAX_PLATFORMS": "cpu"})
    threads = str(max(1, cores // max(1, n_workers)))
    for key in ("OMP_NUM_THREADS", "TF_NUM_INTRAOP_THREADS", CPU_THREADS_ENV):
        env[key] = base.get(key) or threads
    env["TF_NUM_INTEROP_THREADS"] = base.get("TF_NUM_INTEROP_THREADS") or str(min(2, int(threads)))
    return env


def worker_command(
    study_file: Union[str, os.PathLike[str]],
    storage_url: str,
    *,
    artifacts: Optional[str] = None,
    n_trials: Optional[int] = None,
    epochs: Optional[int] = None,
    progress: bool = False,
    python: Optional[str] = None,
) -> list[str]:
    """argv of one spawned worker. ``storage_url`` must carry no password (see child_env_and_url)."""
    cmd = [python or sys.executable, "-m", "hpsearch", "worker", str(study_file), "--storage", storage_url]
    if artifacts:
        cmd += ["--artifacts", str(artifacts)]
    if n_trials is not None:
        cmd += ["--n-trials", str(n_trials)]
    if epochs is not None:
        cmd += ["--epochs", str(epochs)]
    if not progress:
        cmd.append("--no-progress")
    return cmd


def _env_number(name: str, default: float, env: Mapping[str, str], integer: bool = False) -> float:
    raw = env.get(name)
    if raw is None or not str(raw).strip():
        return default
    try:
        value = int(raw) if integer else float(raw)
    except ValueError:
        raise UserError(f"${name}={raw!r} is not a {'whole ' if integer else ''}number of seconds") from None
    if value <= 0:
        raise UserError(f"${name} must be > 0, got {raw}")
    return value


def heartbeat_settings(env: Mapping[str, str] = os.environ) -> tuple[int, int]:
    """(heartbeat interval, grace period) in seconds, from the environment; grace >= 2 x interval."""
    interval = int(_env_number(HEARTBEAT_ENV, DEFAULT_HEARTBEAT, env, integer=True))
    grace = int(_env_number(GRACE_ENV, 3 * interval, env, integer=True))
    if grace < 2 * interval:
        raise UserError(
            f"${GRACE_ENV}={grace} must be at least twice ${HEARTBEAT_ENV}={interval}: a live worker's "
            "trial would be declared stale (and run twice) after one late heartbeat"
        )
    return interval, grace


def apply_backend_settings(env: Mapping[str, str] = os.environ) -> None:
    """In a worker, before Keras builds anything: per-backend GPU memory and CPU thread limits that
    environment variables alone do not cover (PyTorch; TensorFlow growth for already-visible GPUs)."""
    backend = env.get("KERAS_BACKEND", "tensorflow")
    frac = env.get(GPU_FRACTION_ENV)
    threads = env.get(CPU_THREADS_ENV)
    if backend == "torch":
        try:
            import torch
        except ImportError:
            return
        if threads and threads.isdigit():
            torch.set_num_threads(int(threads))
        if frac and torch.cuda.is_available():
            torch.cuda.set_per_process_memory_fraction(float(frac), 0)
    elif backend == "tensorflow" and frac:
        try:
            import tensorflow as tf

            for dev in tf.config.list_physical_devices("GPU"):
                tf.config.experimental.set_memory_growth(dev, True)
        except Exception:  # noqa: BLE001 - TF_FORCE_GPU_ALLOW_GROWTH already asks for the same
            pass


# ==================================================================================================
# The worker: control, heartbeat, storage retries, budget
# ==================================================================================================


class WorkerStopped(Exception):
    """Raised inside a trial when the worker was asked to stop (SIGTERM/SIGINT)."""


class TrialLost(Exception):
    """Raised inside a trial that another worker failed as stale: it must not be told."""


@dataclass
class _Control:
    stop_reason: Optional[str] = None
    signals: int = 0
    current: Any = None  # the optuna Trial being run
    lost: bool = False
    exited: bool = False  # run_worker returned: the watchdog must not act any more
    wake: threading.Event = field(default_factory=threading.Event)

    @property
    def stopping(self) -> bool:
        return self.stop_reason is not None

    def request_stop(self, reason: str) -> None:
        if self.stop_reason is None:
            self.stop_reason = reason
        self.wake.set()

    def sleep(self, seconds: float) -> None:
        self.wake.wait(seconds)


def _is_storage_error(exc: BaseException) -> bool:
    """A lost/refused database connection (worth retrying), not a bug or a user mistake. Optuna
    wraps some driver errors (StorageInternalError), so the causes are searched too."""
    seen = 0
    cur: Optional[BaseException] = exc
    while cur is not None and seen < 8:
        if _is_connection_error(cur):
            return True
        cur = cur.__cause__ or cur.__context__
        seen += 1
    return False


def _is_connection_error(exc: BaseException) -> bool:
    try:
        import sqlalchemy.exc as sa_exc
    except ImportError:  # pragma: no cover
        return False
    if isinstance(exc, (sa_exc.OperationalError, sa_exc.InterfaceError, sa_exc.DisconnectionError)):
        return True
    if isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated:
        return True
    mod = type(exc).__module__
    return mod.startswith("psycopg") and type(exc).__name__ in ("OperationalError", "InterfaceError")


class _Retry:
    """Retries storage calls through an outage, for at most ``budget`` seconds per outage."""

    def __init__(self, url: str, ctl: _Control, budget: float) -> None:
        self.url, self.ctl, self.budget = url, ctl, budget

    def __call__(self, fn: Callable[[], Any], what: str = "storage call", stoppable: bool = False) -> Any:
        from hpsearch.storage import redact_url

        start = time.monotonic()
        delay, warned = 0.25, False
        while True:
            try:
                return fn()
            except Exception as exc:  # noqa: BLE001
                if not _is_storage_error(exc):
                    raise
                waited = time.monotonic() - start
                if waited >= self.budget or (stoppable and self.ctl.stopping):
                    raise StorageError(
                        f"storage {redact_url(self.url)} unreachable for {waited:.0f} s during {what}; "
                        f"the worker stops (its running trial is re-queued by the heartbeat of the other "
                        f"workers); restart the server and the worker, or raise ${STORAGE_RETRY_ENV}"
                    ) from None
                if not warned:
                    _say(f"storage connection lost during {what}; retrying for up to {self.budget:.0f} s")
                    warned = True
                time.sleep(delay)
                delay = min(delay * 2, 5.0)


def _say(msg: str) -> None:
    print(f"hpsearch worker {os.getpid()}: {msg}", file=sys.stderr, flush=True)


class _Heartbeat(threading.Thread):
    """Records the trial's heartbeat every ``interval`` s, through storage errors, and notices when
    another worker failed the trial as stale (sets ``ctl.lost``)."""

    def __init__(self, storage: Any, trial_id: int, interval: float, ctl: _Control) -> None:
        super().__init__(name=f"hpsearch-heartbeat-{trial_id}", daemon=True)
        self.storage, self.trial_id, self.interval, self.ctl = storage, trial_id, interval, ctl
        self.halt = threading.Event()

    def run(self) -> None:
        from optuna.trial import TrialState

        parent = os.environ.get(PARENT_ENV)
        while not self.halt.wait(self.interval):
            if parent and str(os.getppid()) != parent:
                self.ctl.request_stop("parent process exited")
            try:
                self.storage.record_heartbeat(self.trial_id)
                if self.storage.get_trial(self.trial_id).state != TrialState.RUNNING:
                    self.ctl.lost = True
                    return
            except Exception:  # noqa: BLE001 - keep beating through an outage
                continue

    def stop(self) -> None:
        self.halt.set()
        self.join(timeout=10)


@contextlib.contextmanager
def _study_lock(ctx: Any, study_id: int, ctl: _Control, timeout: float = 120.0) -> Iterator[None]:
    """The critical section of reservation (see module docstring). PostgreSQL: advisory lock held
    by a transaction on a dedicated connection; SQLite: nothing (one worker)."""
    from hpsearch.storage import is_postgresql

    if not is_postgresql(ctx.storage_url):
        yield
        return
    import sqlalchemy

    engine = ctx.storage.engine
    with engine.connect() as conn:
        with conn.begin():
            start = time.monotonic()
            q = sqlalchemy.text("SELECT pg_try_advisory_xact_lock(:a, :b)")
            while not conn.execute(q, {"a": _LOCK_CLASS, "b": int(study_id)}).scalar():
                if time.monotonic() - start > timeout:
                    raise StudyFailedError(f"could not lock study {ctx.study.study_name!r} for {timeout:.0f} s")
                time.sleep(0.02)
            yield


def _live_running(ctx: Any, study_id: int, trials: Sequence[Any], grace: int) -> int:
    """RUNNING trials that hold a budget slot: with a heartbeat row, or started recently."""
    from optuna.trial import TrialState

    running = [t for t in trials if t.state == TrialState.RUNNING]
    if not running:
        return 0
    try:
        import sqlalchemy

        with ctx.storage.engine.connect() as conn:
            rows = conn.execute(sqlalchemy.text(
                "SELECT h.trial_id FROM trial_heartbeats h JOIN trials t ON t.trial_id = h.trial_id "
                "WHERE t.study_id = :s AND t.state = 'RUNNING'"), {"s": int(study_id)}).fetchall()
        beating = {r[0] for r in rows}
    except Exception as exc:  # noqa: BLE001 - unknown schema: count every RUNNING trial
        if _is_storage_error(exc):
            raise
        return len(running)
    cutoff = _dt.datetime.now() - _dt.timedelta(seconds=2 * grace)
    return sum(1 for t in running
               if t._trial_id in beating or (t.datetime_start is not None and t.datetime_start > cutoff))


class _Budget:
    """Reserve a trial slot against the global budget (see module docstring)."""

    def __init__(self, ctx: Any, study_id: int, grace: int, ctl: _Control) -> None:
        self.ctx, self.study_id, self.grace, self.ctl = ctx, study_id, grace, ctl
        self.n_trials: Optional[int] = ctx.cfg.search.n_trials

    def counts(self) -> tuple[int, int]:
        from optuna.trial import TrialState

        trials = self.ctx.study.get_trials(deepcopy=False)
        done = sum(1 for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED))
        return done, _live_running(self.ctx, self.study_id, trials, self.grace)

    def reserve(self) -> tuple[Any, bool]:
        """(trial, finished): a trial to run now, or None and whether the budget is met."""
        with _study_lock(self.ctx, self.study_id, self.ctl):
            if self.n_trials is not None:
                done, running = self.counts()
                if done >= self.n_trials:
                    return None, True
                if done + running >= self.n_trials:
                    return None, False
            with warnings.catch_warnings():  # "heartbeat is supposed to be used with optimize": we beat
                warnings.simplefilter("ignore", UserWarning)
                trial = self.ctx.study.ask()
            try:
                self.ctx.storage.record_heartbeat(trial._trial_id)
            except Exception:  # noqa: BLE001 - the heartbeat thread records it again shortly
                pass
            return trial, False


def _control_callback(ctl: _Control) -> Any:
    import keras

    class WorkerControl(keras.callbacks.Callback):
        """Stops training at the next batch when the worker stops or its trial was lost."""

        def _check(self) -> None:
            if ctl.lost:
                raise TrialLost("trial was failed as stale by another worker")
            if ctl.stopping:
                raise WorkerStopped(f"worker stopped ({ctl.stop_reason})")

        def on_train_begin(self, logs: Any = None) -> None:
            self._check()

        def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
            self._check()

        def on_test_batch_end(self, batch: int, logs: Any = None) -> None:
            self._check()

    return WorkerControl()


def _make_runner(ctx: Any, ctl: _Control) -> Any:
    from hpsearch.optuna_search import TrialRunner

    class WorkerTrialRunner(TrialRunner):
        """The engine's trial runner, with a callback that obeys stop requests."""

        def _fit(self, model: Any, X: Any, y: Any, Xv: Any, yv: Any, epochs: int, callbacks: list[Any],
                 initial_epoch: int = 0) -> Any:
            return super()._fit(model, X, y, Xv, yv, epochs, [*callbacks, _control_callback(ctl)], initial_epoch)

    return WorkerTrialRunner(ctx)


def _requeue(ctx: Any, trial_id: int) -> None:
    """Queue a WAITING copy of a failed trial (the retry callback the heartbeat uses)."""
    import copy

    cb = ctx.storage.get_heartbeat_stale_trial_callback()
    if cb is not None:
        cb(ctx.study, copy.deepcopy(ctx.storage.get_trial(trial_id)))


def _fail_and_requeue(ctx: Any, trial_id: int, reason: str) -> None:
    from optuna.exceptions import UpdateFinishedTrialError
    from optuna.trial import TrialState

    from hpsearch.records import TRIAL

    try:
        ctx.storage.set_trial_user_attr(trial_id, TRIAL.FAILURE, reason)
        if ctx.storage.set_trial_state_values(trial_id, TrialState.FAIL):
            _requeue(ctx, trial_id)
    except UpdateFinishedTrialError:
        pass


def _install_signals(ctl: _Control, on_hard_stop: Callable[[], None], deadline: float) -> Callable[[], None]:
    """SIGTERM/SIGINT -> graceful stop with a watchdog; a second signal -> hard stop. Returns undo."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def watchdog() -> None:
        time.sleep(deadline)
        if not ctl.exited:
            on_hard_stop()

    def handler(signum: int, _frame: Any) -> None:
        ctl.signals += 1
        name = signal.Signals(signum).name
        if ctl.signals == 1:
            ctl.request_stop(name)
            threading.Thread(target=watchdog, name="hpsearch-stop-watchdog", daemon=True).start()
        else:
            threading.Thread(target=on_hard_stop, daemon=True).start()

    old = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}

    def undo() -> None:
        for s, h in old.items():
            signal.signal(s, h)

    return undo


class _Streak:
    """Failed trials in a row in this worker (stopped, lost and storage-failed trials do not count)."""

    def __init__(self, limit: int) -> None:
        self.limit, self.streak, self.tripped = limit, 0, False
        self.last_reason: Optional[str] = None

    def __call__(self, _study: Any, trial: Any) -> None:
        from optuna.trial import TrialState

        from hpsearch.records import TRIAL

        if trial.state == TrialState.FAIL:
            self.streak += 1
            self.last_reason = trial.user_attrs.get(TRIAL.FAILURE)
            self.tripped = self.streak >= self.limit
        else:
            self.streak = 0


def _prepare_with_retry(study: Any, budget: float, **kwargs: Any) -> Any:
    """prepare_context, retrying while the server is unreachable or workers race to create tables."""
    from hpsearch.study import prepare_context

    start = time.monotonic()
    while True:
        try:
            return prepare_context(study, **kwargs)
        except StorageError as exc:
            text = str(exc)
            transient = "unreachable" in text or " failed (" in text
            if not transient or time.monotonic() - start > budget:
                raise
            time.sleep(1.0 + (os.getpid() % 7) / 10)


def _worker_index(env: Mapping[str, str] = os.environ) -> Optional[int]:
    """This worker's index under run_workers (None: started by hand / docker-compose)."""
    try:
        return int(env[INDEX_ENV])
    except (KeyError, ValueError):
        return None


def _seed_rngs(obj: Any, seq: Any, depth: int = 0) -> bool:
    """Seed every random state of a sampler (and of its fallback samplers) from ``seq``."""
    import optuna
    from optuna.samplers._lazy_random_state import LazyRandomState

    found = False
    items = sorted(vars(obj).items()) if hasattr(obj, "__dict__") else []
    children = iter(seq.spawn(len(items)))
    for _name, value in items:
        child = next(children)
        if isinstance(value, LazyRandomState):
            value.rng.seed(int(child.generate_state(1)[0]))
            found = True
        elif isinstance(value, optuna.samplers.BaseSampler) and depth < 3:
            found = _seed_rngs(value, child, depth + 1) or found
    return found


def _reseed_sampler(sampler: Any, seed: Optional[int], index: Optional[int]) -> None:
    """Give this worker's sampler a random stream of its own.

    Every worker builds its sampler from ``search.seed``, so without this all workers draw the same
    sequence (random sampler) or the same startup trials (TPE); Optuna reseeds likewise for
    ``n_jobs > 1``. With a seed and a known worker index (run_workers) the stream is derived from
    both, so a run is reproducible; worker 0 keeps ``search.seed`` itself (one worker draws what one
    process draws). Otherwise ``reseed_rng()`` (fresh entropy). QMC's shared scrambling seed is left
    alone on purpose: its workers share one sequence through the storage.
    """
    if seed is None or index is None:
        sampler.reseed_rng()
        return
    if index == 0:
        return
    import numpy as np

    if not _seed_rngs(sampler, np.random.SeedSequence([int(seed) % (1 << 64), int(index)])):
        sampler.reseed_rng()  # a sampler whose internals we do not know: fresh entropy


def run_worker(
    study: Union[str, os.PathLike[str], Any],
    *,
    storage: Optional[str] = None,
    artifacts: Optional[str] = None,
    n_trials: Optional[int] = None,
    epochs: Optional[int] = None,
    progress: bool = True,
) -> int:
    """Join (or create) a study and run trials until the global budget is met. Returns 0.

    SIGTERM/SIGINT stop it gracefully (exit 0). Raises StorageError / StudyFailedError with a
    one-line message for the CLI.
    """
    from hpsearch.optuna_search import prune_stored_models
    from hpsearch.records import TRIAL

    interval, grace = heartbeat_settings()
    deadline = _env_number(STOP_DEADLINE_ENV, DEFAULT_STOP_DEADLINE, os.environ)
    retry_budget = _env_number(STORAGE_RETRY_ENV, DEFAULT_STORAGE_RETRY, os.environ)
    poll = _env_number(POLL_ENV, min(2.0, interval / 2), os.environ)
    ctl = _Control()
    ctx_box: dict[str, Any] = {}
    hard_lock = threading.Lock()

    def hard_stop() -> None:
        if ctl.exited:
            return
        with hard_lock:
            trial, ctx = ctl.current, ctx_box.get("ctx")
            if trial is not None and ctx is not None:
                try:
                    _fail_and_requeue(ctx, trial._trial_id, f"worker stopped ({ctl.stop_reason or 'signal'}; "
                                      f"deadline {deadline:g} s)")
                except Exception:  # noqa: BLE001 - exiting anyway; the heartbeat re-queues it
                    pass
            _say(f"stopped ({ctl.stop_reason}); exiting")
            os._exit(0)

    undo = _install_signals(ctl, hard_stop, deadline)
    try:
        apply_backend_settings()
        ctx = _prepare_with_retry(study, retry_budget, storage=storage, artifacts=artifacts, n_trials=n_trials,
                                  epochs=epochs, progress=progress, workers=1, heartbeat=True, create=True)
        ctx_box["ctx"] = ctx
        if ctx.cfg.search.engine != "optuna":
            raise UserError(f"workers run engine optuna only; study {ctx.cfg.name!r} uses {ctx.cfg.search.engine}")
        _reseed_sampler(ctx.study.sampler, ctx.cfg.search.seed, _worker_index())
        # heartbeat timing from the environment (open_storage's defaults are for one process)
        ctx.storage.heartbeat_interval = interval
        ctx.storage.grace_period = grace
        retry = _Retry(ctx.storage_url, ctl, retry_budget)
        study_id = retry(lambda: ctx.storage.get_study_id_from_name(ctx.study.study_name), "start-up")
        budget = _Budget(ctx, study_id, grace, ctl)
        runner = _make_runner(ctx, ctl)
        streak = _Streak(ctx.cfg.search.max_failures_in_row)
        with ctx.progress:
            finished = _loop(ctx, ctl, runner, budget, retry, streak, interval, poll, prune_stored_models, TRIAL)
        if streak.tripped:
            raise StudyFailedError(
                f"study {ctx.study.study_name!r} stopped: {streak.streak} trials failed in a row"
                f" (last: {streak.last_reason}); check the space ranges and the data"
                f" (search.max_failures_in_row = {ctx.cfg.search.max_failures_in_row})")
        if finished and not ctl.stopping and not os.environ.get(MANAGED_ENV):
            from hpsearch.study import finalize

            with _study_lock(ctx, study_id, ctl, timeout=600):
                retry(lambda: finalize(ctx), "finalize")
        if ctl.stopping:
            _say(f"stopped ({ctl.stop_reason}); no trial left running")
        return 0
    except BaseException as exc:
        ctx, trial = ctx_box.get("ctx"), ctl.current
        if ctx is not None and trial is not None:  # best effort; else the heartbeat of others re-queues it
            with contextlib.suppress(Exception):
                _fail_and_requeue(ctx, trial._trial_id, f"worker exited ({type(exc).__name__})")
        if not isinstance(exc, StorageError) and _is_storage_error(exc) and ctx is not None:
            from hpsearch.storage import storage_error

            raise storage_error(exc, ctx.storage_url) from None
        raise
    finally:
        ctl.exited = True
        undo()


def _loop(ctx: Any, ctl: _Control, runner: Any, budget: _Budget, retry: _Retry, streak: Any, interval: int,
          poll: float, prune_models: Callable[[Any], Any], TRIAL: Any) -> bool:
    """Run trials until the budget is met (True), the timeout passes or a stop (False)."""
    import optuna
    from optuna.exceptions import ExperimentalWarning
    from optuna.trial import TrialState

    timeout = ctx.cfg.search.timeout
    start = time.monotonic()
    parent = os.environ.get(PARENT_ENV)
    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    try:
        while not ctl.stopping and not streak.tripped:
            if parent and str(os.getppid()) != parent:
                ctl.request_stop("parent process exited")
                break
            if timeout is not None and time.monotonic() - start >= timeout:
                return False
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ExperimentalWarning)
                retry(lambda: optuna.storages.fail_stale_trials(ctx.study), "stale-trial check")
            trial, finished = retry(budget.reserve, "trial reservation", stoppable=True)
            if trial is None:
                if finished:
                    return True
                ctl.sleep(poll)
                continue
            _run_one(ctx, ctl, runner, trial, retry, streak, interval, prune_models, TRIAL, TrialState)
        return False
    finally:
        optuna.logging.set_verbosity(level)


def _run_one(ctx: Any, ctl: _Control, runner: Any, trial: Any, retry: _Retry, streak: Any, interval: int,
             prune_models: Callable[[Any], Any], TRIAL: Any, TrialState: Any) -> None:
    import optuna

    ctl.current, ctl.lost = trial, False
    hb = _Heartbeat(ctx.storage, trial._trial_id, interval, ctl)
    hb.start()
    value: Optional[float] = None
    state = TrialState.COMPLETE
    requeue, reason = False, None
    try:
        value = runner(trial)
    except optuna.TrialPruned:
        state = TrialState.PRUNED
    except Exception as exc:  # noqa: BLE001 - recorded in the trial, the study goes on
        state = TrialState.FAIL
        if isinstance(exc, WorkerStopped):
            requeue, reason = True, str(exc)
        elif _is_storage_error(exc):
            requeue, reason = True, "storage connection lost during the trial"
    finally:
        hb.stop()
    try:
        if ctl.lost:  # failed as stale by another worker; its re-queued copy runs elsewhere
            _say(f"trial {trial.number} was failed as stale by another worker; abandoned")
            raise TrialLost()
        tid = trial._trial_id
        if requeue and reason:
            with contextlib.suppress(Exception):
                retry(lambda: ctx.storage.set_trial_user_attr(tid, TRIAL.FAILURE, reason), "tell")
        if state == TrialState.COMPLETE:
            retry(lambda: ctx.study.tell(trial, value, skip_if_finished=True), "tell")
        else:
            retry(lambda: ctx.study.tell(trial, state=state, skip_if_finished=True), "tell")
        frozen = retry(lambda: ctx.storage.get_trial(tid), "tell")
        if requeue and frozen.state == TrialState.FAIL:
            retry(lambda: _requeue(ctx, tid), "re-queue")
        if not requeue:
            streak(ctx.study, frozen)
        detail = frozen.user_attrs.get(TRIAL.FAILURE) or ""
        if frozen.state == TrialState.PRUNED:
            detail = f"at epoch {frozen.user_attrs.get('pruned_at_epoch')}"
        ctx.progress.trial_done(frozen.number, frozen.state.name, frozen.value, detail)
        if frozen.state == TrialState.COMPLETE and frozen.user_attrs.get(TRIAL.MODEL_ARTIFACT):
            with contextlib.suppress(Exception):
                prune_models(ctx)
        ctl.current = None
    except TrialLost:
        ctl.current = None


# ==================================================================================================
# The parent: spawn, watch, finalize
# ==================================================================================================


def _redactor(secrets: Sequence[str]) -> Callable[[str], str]:
    from urllib.parse import quote

    forms = sorted({f for s in secrets if s for f in (s, quote(s, safe=""), quote(s))}, key=len, reverse=True)

    def scrub(text: str) -> str:
        for f in forms:
            text = text.replace(f, "***")
        return text

    return scrub


def _pump(stream: Any, prefix: str, scrub: Callable[[str], str], tail: list[str]) -> None:
    for raw in iter(stream.readline, b""):
        line = scrub(raw.decode("utf-8", "replace").rstrip("\n"))
        tail.append(line)
        del tail[:-20]
        try:
            print(f"{prefix}{line}", file=sys.stderr, flush=True)
        except Exception:  # noqa: BLE001 - a closed stderr must not kill the pump
            pass
    stream.close()


@dataclass
class _Child:
    index: int
    gpu: Optional[str]
    proc: subprocess.Popen
    tail: list[str]
    thread: threading.Thread


def run_workers(
    study: Union[str, os.PathLike[str], Any],
    *,
    storage: Optional[str] = None,
    artifacts: Optional[str] = None,
    n_workers: int = 1,
    gpus: Union[str, Sequence[str], None] = None,
    per_gpu: int = 1,
    n_trials: Optional[int] = None,
    epochs: Optional[int] = None,
    progress: bool = True,
    on_spawn: Optional[Callable[[list[int]], None]] = None,
) -> Any:
    """Run a study with several worker processes to its global budget; return a StudyResult.

    Everything is validated and the study created here, once, before any worker starts (SQLite with
    more than one worker is refused with a one-line StorageError). ``on_spawn`` receives the worker
    pids (benchmarks, tests).
    """
    from hpsearch.storage import artifact_location, child_env_and_url
    from hpsearch.study import _is_complete, finalize, make_result

    t0 = time.monotonic()
    plan = plan_workers(n_workers, parse_gpus(gpus), per_gpu)
    heartbeat_settings()  # refuse a bad heartbeat configuration before anything is written
    ctx = _prepare_with_retry(study, 0.0, storage=storage, artifacts=artifacts, n_trials=n_trials, epochs=epochs,
                              progress=progress, workers=len(plan), heartbeat=False, create=True)
    if ctx.cfg.search.engine != "optuna":
        raise UserError(f"--workers runs engine optuna only; study {ctx.cfg.name!r} uses {ctx.cfg.search.engine} "
                        "(set search.engine: optuna, or run it with one process)")
    already = _is_complete(ctx)
    if not already:
        _spawn_and_wait(ctx, study, plan, n_trials=n_trials, epochs=epochs, on_spawn=on_spawn,
                        artifacts=artifact_location(ctx.storage_url, artifacts or ctx.cfg.artifacts),
                        child_env_and_url=child_env_and_url)
    if any(g is not None for g in plan):  # a short predict here must not take a GPU's memory
        os.environ.setdefault("TF_FORCE_GPU_ALLOW_GROWTH", "true")
        os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    finalize(ctx)
    return make_result(ctx, time.monotonic() - t0, already)


def _worker_study_yaml(cfg: Any) -> str:
    """The study file the workers read for a StudyConfig given in Python.

    Not ``cfg.to_yaml()``: that is the original file's text, without the overrides applied in
    Python. A file ``data.source`` is made absolute, because the workers read this file from a temp
    folder and would resolve a relative path against it; ``sklearn:`` sources stay as they are.
    Nulls are kept (no ``exclude_none``): ``search.seed: null`` or ``train.early_stopping: null``
    would otherwise come back as their non-null defaults.
    """
    import yaml

    data = cfg.model_dump()
    path = cfg.data_path()
    if path is not None:
        data["data"]["source"] = str(path.absolute())
    return yaml.safe_dump(data, sort_keys=False)


def _spawn_and_wait(ctx: Any, study: Any, plan: list[Optional[str]], *, n_trials: Optional[int],
                    epochs: Optional[int], artifacts: str, on_spawn: Optional[Callable[[list[int]], None]],
                    child_env_and_url: Callable[[str], tuple[str, dict[str, str]]]) -> None:
    from optuna.trial import TrialState

    from hpsearch.records import TRIAL
    from hpsearch.storage import STORAGE_ENV, _secrets_of

    tmpdir = None
    if isinstance(study, (str, os.PathLike)):
        study_file = str(Path(study).resolve())
    else:  # a StudyConfig: the workers read it from a private temp file
        tmpdir = tempfile.mkdtemp(prefix="hpsearch-study-")
        study_file = os.path.join(tmpdir, "study.yaml")
        with open(os.open(study_file, os.O_WRONLY | os.O_CREAT, 0o600), "w") as f:
            f.write(_worker_study_yaml(ctx.cfg))
    bare, extra = child_env_and_url(ctx.storage_url)
    scrub = _redactor(_secrets_of(ctx.storage_url))
    cmd = worker_command(study_file, bare, artifacts=artifacts, n_trials=n_trials, epochs=epochs)
    deadline = _env_number(STOP_DEADLINE_ENV, DEFAULT_STOP_DEADLINE, os.environ)
    children: list[_Child] = []
    stop_signal: list[int] = []
    prev_term = None
    if threading.current_thread() is threading.main_thread():
        prev_term = signal.signal(signal.SIGTERM, lambda s, f: stop_signal.append(s))
    try:
        # trials finished before the workers start (a resumed study); read before spawning, so a trial
        # a fast worker finishes right away is shown rather than taken for an old one
        before = ctx.study.get_trials(deepcopy=False)
        seen: set[int] = {t.number for t in before if t.state.is_finished()}
        ctx.progress.skip(sum(1 for t in before if t.state in (TrialState.COMPLETE, TrialState.PRUNED)))
        for i, gpu in enumerate(plan):
            env = dict(os.environ)
            env.pop(STORAGE_ENV, None)
            env.pop("PGPASSWORD", None)
            env.update(extra)
            env.update(worker_env(gpu, per_gpu=max(1, plan.count(gpu)), n_workers=len(plan)))
            env.update({MANAGED_ENV: "1", PARENT_ENV: str(os.getpid()), INDEX_ENV: str(i), "PYTHONUNBUFFERED": "1"})
            proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, start_new_session=True)
            tail: list[str] = []
            th = threading.Thread(target=_pump, args=(proc.stdout, f"[worker {i}] ", scrub, tail), daemon=True)
            th.start()
            children.append(_Child(i, gpu, proc, tail, th))
        if on_spawn is not None:
            on_spawn([c.proc.pid for c in children])

        def show_finished() -> None:
            with contextlib.suppress(Exception):  # progress only; storage may be restarting
                for t in ctx.study.get_trials(deepcopy=False):
                    if t.state.is_finished() and t.number not in seen:
                        seen.add(t.number)
                        ctx.progress.trial_done(t.number, t.state.name, t.value,
                                                t.user_attrs.get(TRIAL.FAILURE) or "")

        with ctx.progress:
            try:
                while any(c.proc.poll() is None for c in children):
                    if stop_signal:
                        raise KeyboardInterrupt
                    _wait_all_exit(children, PARENT_POLL, stop_signal)
                    if stop_signal:
                        raise KeyboardInterrupt
                    show_finished()
                show_finished()  # trials finished after the last read
            except KeyboardInterrupt:
                _stop_children(children, deadline)
                raise
        for c in children:
            c.thread.join(timeout=5)
        bad = [c for c in children if c.proc.returncode not in (0, None)]
        done = sum(1 for t in ctx.study.get_trials(deepcopy=False)
                   if t.state in (TrialState.COMPLETE, TrialState.PRUNED))
        target = ctx.cfg.search.n_trials
        if bad and (target is None or done < target):
            last = next((ln for c in bad for ln in reversed(c.tail) if ln.strip()), "no output")
            codes = ", ".join(f"worker {c.index}: exit {c.proc.returncode}" for c in bad)
            raise StudyFailedError(f"{len(bad)} of {len(children)} workers failed ({codes}); last message: {last}")
        if not bad and target is not None and done < target and ctx.cfg.search.timeout is None:
            raise StudyFailedError(f"the workers exited with {done} of {target} trials done; see their output above")
        for c in bad:
            print(f"hpsearch: worker {c.index} exited with {c.proc.returncode}; the others finished the budget",
                  file=sys.stderr, flush=True)
    finally:
        for c in children:
            if c.proc.poll() is None:
                c.proc.kill()
        if prev_term is not None:
            signal.signal(signal.SIGTERM, prev_term)
        if tmpdir:
            import shutil

            shutil.rmtree(tmpdir, ignore_errors=True)


def _wait_all_exit(children: list[_Child], seconds: float, stop_signal: list[int]) -> None:
    """Sleep up to ``seconds``; return early when every worker has exited or a stop signal arrives,
    so the end of the run and the reaction to SIGTERM are not delayed by the polling interval."""
    end = time.monotonic() + seconds
    while time.monotonic() < end and not stop_signal:
        if all(c.proc.poll() is not None for c in children):
            return
        time.sleep(min(0.1, max(0.0, end - time.monotonic())))


def _stop_children(children: list[_Child], deadline: float) -> None:
    """SIGTERM every worker once (each fails and re-queues its trial), wait, then SIGKILL."""
    for c in children:
        if c.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                c.proc.send_signal(signal.SIGTERM)
    end = time.monotonic() + deadline + 10
    for c in children:
        with contextlib.suppress(subprocess.TimeoutExpired):
            c.proc.wait(timeout=max(0.1, end - time.monotonic()))
        if c.proc.poll() is None:
            c.proc.kill()
