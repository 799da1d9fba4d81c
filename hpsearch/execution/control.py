"""Stop requests, signals, storage retries and the trial heartbeat of the trial loop.

Settings come from the environment (the same for one process and for N workers):
``HPSEARCH_HEARTBEAT_INTERVAL`` seconds between heartbeats (default 10), ``HPSEARCH_HEARTBEAT_GRACE``
(default 3x the interval; below 2x is refused, so a live trial is never declared stale after one
late beat), ``HPSEARCH_STOP_DEADLINE`` seconds a graceful stop may take (default 30) and
``HPSEARCH_STORAGE_RETRY`` seconds a storage outage is ridden out (default 120).

SIGTERM / SIGINT stop the current trial at its next batch; it is told FAIL with reason
``worker stopped (SIGTERM)`` and re-queued as WAITING (its work is not lost). A watchdog enforces
the stop deadline; past it, or on a second signal, the trial is failed and re-queued from the
watchdog thread and the process exits.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from hpsearch.errors import StorageUnreachable, UserError
from hpsearch.storage import is_connection_error, redact_url
from hpsearch.storage.batch import beat_and_check

__all__ = [
    "HEARTBEAT_ENV", "GRACE_ENV", "STOP_DEADLINE_ENV", "STORAGE_RETRY_ENV", "POLL_ENV", "PARENT_ENV",
    "LoopSettings", "env_number", "heartbeat_settings", "Control", "WorkerStopped", "TrialLost", "Retry",
    "Heartbeat", "install_signals", "control_callback",
]

HEARTBEAT_ENV = "HPSEARCH_HEARTBEAT_INTERVAL"
GRACE_ENV = "HPSEARCH_HEARTBEAT_GRACE"
STOP_DEADLINE_ENV = "HPSEARCH_STOP_DEADLINE"
STORAGE_RETRY_ENV = "HPSEARCH_STORAGE_RETRY"
POLL_ENV = "HPSEARCH_WORKER_POLL"
PARENT_ENV = "HPSEARCH_WORKER_PARENT"  # parent pid: a worker whose parent died stops gracefully

DEFAULT_HEARTBEAT = 10
DEFAULT_STOP_DEADLINE = 30.0
DEFAULT_STORAGE_RETRY = 120.0


def env_number(name: str, default: float, env: Mapping[str, str], integer: bool = False) -> float:
    """A positive number of seconds from the environment (a one-line UserError otherwise)."""
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
    interval = int(env_number(HEARTBEAT_ENV, DEFAULT_HEARTBEAT, env, integer=True))
    grace = int(env_number(GRACE_ENV, 3 * interval, env, integer=True))
    if grace < 2 * interval:
        raise UserError(
            f"${GRACE_ENV}={grace} must be at least twice ${HEARTBEAT_ENV}={interval}: a live worker's "
            "trial would be declared stale (and run twice) after one late heartbeat"
        )
    return interval, grace


@dataclass(frozen=True)
class LoopSettings:
    """The trial loop's timing, read once from the environment."""

    interval: int
    grace: int
    deadline: float
    retry: float
    poll: float

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> LoopSettings:
        interval, grace = heartbeat_settings(env)
        return cls(interval=interval, grace=grace,
                   deadline=env_number(STOP_DEADLINE_ENV, DEFAULT_STOP_DEADLINE, env),
                   retry=env_number(STORAGE_RETRY_ENV, DEFAULT_STORAGE_RETRY, env),
                   poll=env_number(POLL_ENV, min(2.0, interval / 2), env))


class WorkerStopped(Exception):
    """Raised inside a trial when the process was asked to stop (SIGTERM/SIGINT)."""


class TrialLost(Exception):
    """Raised inside a trial that another worker failed as stale: it must not be told."""


@dataclass
class Control:
    """Shared state between the trial loop, its heartbeat thread and the signal handlers."""

    stop_reason: str | None = None
    signals: int = 0
    current: Any = None  # the optuna Trial being run
    current_id: int | None = None  # its storage id
    lost: bool = False
    exited: bool = False  # the loop returned: the watchdog must not act any more
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

    def parent_gone(self) -> bool:
        """A worker spawned by ``run --workers`` whose parent exited stops gracefully."""
        parent = os.environ.get(PARENT_ENV)
        if parent and str(os.getppid()) != parent:
            self.request_stop("parent process exited")
            return True
        return False


class Retry:
    """Retries storage calls through an outage, for at most ``budget`` seconds per outage."""

    def __init__(self, url: str, ctl: Control, budget: float, say: Callable[[str], None]) -> None:
        self.url, self.ctl, self.budget, self.say = url, ctl, budget, say

    def __call__(self, fn: Callable[[], Any], what: str = "storage call", stoppable: bool = False) -> Any:
        start = time.monotonic()
        delay, warned = 0.25, False
        while True:
            try:
                return fn()
            except Exception as exc:
                if not is_connection_error(exc):
                    raise
                waited = time.monotonic() - start
                if waited >= self.budget or (stoppable and self.ctl.stopping):
                    raise StorageUnreachable(
                        f"storage {redact_url(self.url)} unreachable for {waited:.0f} s during {what}; "
                        f"the worker stops (its running trial is re-queued by the heartbeat of the other "
                        f"workers); restart the server and the worker, or raise ${STORAGE_RETRY_ENV}"
                    ) from None
                if not warned:
                    self.say(f"storage connection lost during {what}; retrying for up to {self.budget:.0f} s")
                    warned = True
                time.sleep(delay)
                delay = min(delay * 2, 5.0)


class Heartbeat(threading.Thread):
    """Records the trial's heartbeat every ``interval`` s, through storage errors, and notices when
    another worker failed the trial as stale (sets ``ctl.lost``). Optuna's own heartbeat thread dies
    on the first storage error, after which a live trial would go stale."""

    def __init__(self, storage: Any, trial_id: int, interval: float, ctl: Control) -> None:
        super().__init__(name=f"hpsearch-heartbeat-{trial_id}", daemon=True)
        self.storage, self.trial_id, self.interval, self.ctl = storage, trial_id, interval, ctl
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.wait(self.interval):
            self.ctl.parent_gone()
            try:
                self.storage.record_heartbeat(self.trial_id)
                if self.storage.get_trial(self.trial_id).state.name != "RUNNING":
                    self.ctl.lost = True
                    return
            except Exception:  # noqa: BLE001 - keep beating through an outage
                continue

    def stop(self) -> None:
        self.halt.set()
        self.join(timeout=10)


class PackHeartbeat(threading.Thread):
    """The heartbeats of a pack's running trials, :class:`Heartbeat` for many: every ``interval`` s
    ONE transaction records the heartbeat of every trial in it and reads their states back
    (:func:`hpsearch.storage.batch.beat_and_check`), instead of one thread, one commit and one read
    per member. A trial another worker failed as stale sets ``ctl.lost``. Trials join with
    :meth:`add` when they start and leave with :meth:`discard` before they are recorded; the thread
    lives as long as the loop (:meth:`stop`)."""

    def __init__(self, storage: Any, interval: float, ctl: Control) -> None:
        super().__init__(name="hpsearch-pack-heartbeat", daemon=True)
        self.storage, self.interval, self.ctl = storage, interval, ctl
        self.ids: set[int] = set()
        self.lock = threading.Lock()
        self.halt = threading.Event()

    def add(self, trial_id: int) -> None:
        with self.lock:
            self.ids.add(trial_id)
        if not self.is_alive() and not self.halt.is_set():
            self.start()

    def discard(self, trial_id: int) -> None:
        with self.lock:
            self.ids.discard(trial_id)

    def run(self) -> None:
        while not self.halt.wait(self.interval):
            self.ctl.parent_gone()
            with self.lock:
                ids = set(self.ids)
            try:
                gone = beat_and_check(self.storage, ids)
            except Exception:  # noqa: BLE001 - keep beating through an outage
                continue
            with self.lock:  # a trial recorded meanwhile left the set first: its new state is no loss
                if gone & self.ids:
                    self.ctl.lost = True

    def stop(self) -> None:
        self.halt.set()
        if self.is_alive():
            self.join(timeout=10)


def install_signals(ctl: Control, on_hard_stop: Callable[[], None], deadline: float) -> Callable[[], None]:
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


def control_callback(ctl: Control) -> Any:
    """A Keras callback that stops training at the next batch when the process stops or its trial
    was lost."""
    import keras

    class StopControl(keras.callbacks.Callback):
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

    return StopControl()
