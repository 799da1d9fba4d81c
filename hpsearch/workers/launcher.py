"""``hpsearch run STUDY --workers N``: validate and create the study once, start N
``python -m hpsearch worker STUDY --storage <URL without password>`` processes (the password travels
in ``PGPASSWORD``, never in argv), relay their output (passwords scrubbed), show progress by polling
the storage, wait, and store the best model's test score.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hpsearch.data.sources.base import source_for
from hpsearch.errors import StudyFailedError
from hpsearch.execution.control import (
    DEFAULT_STOP_DEADLINE,
    PARENT_ENV,
    STOP_DEADLINE_ENV,
    env_number,
    heartbeat_settings,
)
from hpsearch.execution.stoprules import has_stop_rules
from hpsearch.records import DONE_STATES, TRIAL, counts_toward_budget, primary_value
from hpsearch.spec.config import StudyConfig
from hpsearch.storage import STORAGE_ENV, child_env_and_url, scrub, secrets_of
from hpsearch.storage.artifacts import artifact_location
from hpsearch.study.run import StudyResult, finalize, load_config, make_result
from hpsearch.trials.context import Observer, RunContext
from hpsearch.workers.plan import INDEX_ENV, MANAGED_ENV, parse_gpus, plan_workers, worker_command, worker_env
from hpsearch.workers.worker import check_supports_workers, prepare_with_retry

__all__ = ["run_workers", "worker_study_yaml"]

PARENT_POLL = 2.0  # seconds between the parent's progress reads of all trials (each is one query)


@dataclass
class _Child:
    index: int
    gpu: str | None
    proc: subprocess.Popen[bytes]
    tail: list[str]
    thread: threading.Thread


def run_workers(
    study: str | os.PathLike[str] | StudyConfig,
    *,
    storage: str | None = None,
    artifacts: str | None = None,
    n_workers: int = 1,
    gpus: str | list[str] | None = None,
    per_gpu: int = 1,
    n_trials: int | None = None,
    epochs: int | None = None,
    observer: Observer | None = None,
    on_spawn: Callable[[list[int]], None] | None = None,
) -> StudyResult:
    """Run a study with several worker processes to its global budget; return a StudyResult.

    Everything is validated and the study created here, once, before any worker starts (SQLite with
    more than one worker is refused with a one-line StorageError). ``on_spawn`` receives the worker
    pids (benchmarks, tests).
    """
    t0 = time.monotonic()
    plan = plan_workers(n_workers, parse_gpus(gpus), per_gpu)
    heartbeat_settings()  # refuse a bad heartbeat configuration before anything is written
    check_supports_workers(load_config(study, n_trials, epochs), "--workers")
    ctx = prepare_with_retry(study, 0.0, storage=storage, artifacts=artifacts, n_trials=n_trials, epochs=epochs,
                             observer=observer, workers=len(plan))
    already = ctx.engine.is_complete(ctx)
    if not already:
        _Launch(ctx, study, plan, n_trials=n_trials, epochs=epochs,
                artifacts=artifact_location(ctx.storage_url, artifacts or ctx.cfg.artifacts)).run(on_spawn)
    if any(g is not None for g in plan):  # a short predict here must not take a GPU's memory
        os.environ.setdefault("TF_FORCE_GPU_ALLOW_GROWTH", "true")
        os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    finalize(ctx)
    return make_result(ctx, time.monotonic() - t0, already)


def worker_study_yaml(cfg: StudyConfig) -> str:
    """The study file the workers read for a StudyConfig given in Python.

    Not ``cfg.to_yaml()``: that is the original file's text, without the overrides applied in
    Python. A data file is made absolute (the data source's ``worker_source``), because the workers
    read this file from a temp folder and would resolve a relative path against it; an ``s3://``
    folder stays a URL (each worker checks its own copy of it and says so). Nulls are kept (no
    ``exclude_none``): ``search.seed: null`` or ``train.early_stopping: null`` would otherwise come
    back as their non-null defaults.
    """
    import yaml

    data = cfg.model_dump()
    given = source_for(cfg.data.source).worker_source(cfg)
    if given is not None:
        data["data"]["source"] = given
    text: str = yaml.safe_dump(data, sort_keys=False)
    return text


def _pump(stream: Any, prefix: str, scrub_line: Callable[[str], str], tail: list[str],
          say: Callable[[str], None]) -> None:
    for raw in iter(stream.readline, b""):
        line = scrub_line(raw.decode("utf-8", "replace").rstrip("\n"))
        tail.append(line)
        del tail[:-20]
        with contextlib.suppress(Exception):  # a closed stderr must not kill the pump
            say(f"{prefix}{line}")
    stream.close()


class _Launch:
    """Spawn the workers, watch them, stop them on SIGTERM / Ctrl-C."""

    def __init__(self, ctx: RunContext, study: Any, plan: list[str | None], *, n_trials: int | None,
                 epochs: int | None, artifacts: str) -> None:
        self.ctx, self.study, self.plan = ctx, study, plan
        self.n_trials, self.epochs, self.artifacts = n_trials, epochs, artifacts
        self.children: list[_Child] = []
        self.stop_signal: list[int] = []
        self.seen: set[int] = set()
        self.tmpdir: str | None = None

    def _study_file(self) -> str:
        if isinstance(self.study, (str, os.PathLike)):
            return str(Path(self.study).resolve())
        self.tmpdir = tempfile.mkdtemp(prefix="hpsearch-study-")  # a StudyConfig: a private temp file
        path = os.path.join(self.tmpdir, "study.yaml")
        with open(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600), "w") as f:
            f.write(worker_study_yaml(self.ctx.cfg))
        return path

    def _spawn(self) -> None:
        ctx = self.ctx
        bare, extra = child_env_and_url(ctx.storage_url)
        secrets = secrets_of(ctx.storage_url)
        cmd = worker_command(self._study_file(), bare, artifacts=self.artifacts, n_trials=self.n_trials,
                             epochs=self.epochs)
        for i, gpu in enumerate(self.plan):
            env = dict(os.environ)
            env.pop(STORAGE_ENV, None)  # the workers get the URL (without password) in argv
            if extra:  # the URL's own password replaces an exported one; else PGPASSWORD goes on
                env.pop("PGPASSWORD", None)
            env.update(extra)
            env.update(worker_env(gpu, per_gpu=max(1, self.plan.count(gpu)), n_workers=len(self.plan)))
            env.update({MANAGED_ENV: "1", PARENT_ENV: str(os.getpid()), INDEX_ENV: str(i), "PYTHONUNBUFFERED": "1"})
            proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, start_new_session=True)
            tail: list[str] = []
            th = threading.Thread(target=_pump, daemon=True, args=(
                proc.stdout, f"[worker {i}] ", lambda text: scrub(text, secrets), tail, ctx.observer.message))
            th.start()
            self.children.append(_Child(i, gpu, proc, tail, th))

    def _show_finished(self) -> None:
        with contextlib.suppress(Exception):  # progress only; storage may be restarting
            for t in self.ctx.study.get_trials(deepcopy=False):
                if t.state.is_finished() and t.number not in self.seen:
                    self.seen.add(t.number)
                    self.ctx.observer.trial_done(t.number, t.state.name, primary_value(t),
                                                 t.user_attrs.get(TRIAL.FAILURE) or "")

    def run(self, on_spawn: Callable[[list[int]], None] | None) -> None:
        ctx = self.ctx
        deadline = env_number(STOP_DEADLINE_ENV, DEFAULT_STOP_DEADLINE, os.environ)
        prev_term = None
        if threading.current_thread() is threading.main_thread():
            prev_term = signal.signal(signal.SIGTERM, lambda s, f: self.stop_signal.append(s))
        try:
            # trials finished before the workers start (a resumed study); read before spawning, so a
            # trial a fast worker finishes right away is shown rather than taken for an old one
            before = ctx.study.get_trials(deepcopy=False)
            self.seen = {t.number for t in before if t.state.is_finished()}
            ctx.observer.begin(sum(1 for t in before if t.state.name in DONE_STATES), None)
            self._spawn()
            if on_spawn is not None:
                on_spawn([c.proc.pid for c in self.children])
            try:
                self._watch(deadline)
            finally:
                ctx.observer.end()
            for c in self.children:
                c.thread.join(timeout=5)
            self._check_exits()
        finally:
            for c in self.children:
                if c.proc.poll() is None:
                    c.proc.kill()
            if prev_term is not None:
                signal.signal(signal.SIGTERM, prev_term)
            if self.tmpdir:
                shutil.rmtree(self.tmpdir, ignore_errors=True)

    def _watch(self, deadline: float) -> None:
        try:
            while any(c.proc.poll() is None for c in self.children):
                if self.stop_signal:
                    raise KeyboardInterrupt
                self._wait_all_exit(PARENT_POLL)
                if self.stop_signal:
                    raise KeyboardInterrupt
                self._show_finished()
            self._show_finished()  # trials finished after the last read
        except KeyboardInterrupt:
            self._stop_children(deadline)
            raise

    def _check_exits(self) -> None:
        ctx = self.ctx
        bad = [c for c in self.children if c.proc.returncode not in (0, None)]
        done = sum(1 for t in ctx.study.get_trials(deepcopy=False) if counts_toward_budget(t))
        target = ctx.engine.n_trials(ctx.cfg)
        if bad and (target is None or done < target):
            last = next((ln for c in bad for ln in reversed(c.tail) if ln.strip()), "no output")
            codes = ", ".join(f"worker {c.index}: exit {c.proc.returncode}" for c in bad)
            raise StudyFailedError(f"{len(bad)} of {len(self.children)} workers failed ({codes}); last message: {last}")
        if not bad and target is not None and done < target and not has_stop_rules(ctx.cfg):
            raise StudyFailedError(f"the workers exited with {done} of {target} trials done; see their output above")
        for c in bad:
            ctx.observer.message(f"hpsearch: worker {c.index} exited with {c.proc.returncode}; "
                                 "the others finished the budget")

    def _wait_all_exit(self, seconds: float) -> None:
        """Sleep up to ``seconds``; return early when every worker has exited or a stop signal
        arrives, so the end of the run and the reaction to SIGTERM are not delayed by the polling."""
        end = time.monotonic() + seconds
        while time.monotonic() < end and not self.stop_signal:
            if all(c.proc.poll() is not None for c in self.children):
                return
            time.sleep(min(0.1, max(0.0, end - time.monotonic())))

    def _stop_children(self, deadline: float) -> None:
        """SIGTERM every worker once (each fails and re-queues its trial), wait, then SIGKILL."""
        for c in self.children:
            if c.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    c.proc.send_signal(signal.SIGTERM)
        end = time.monotonic() + deadline + 10
        for c in self.children:
            with contextlib.suppress(subprocess.TimeoutExpired):
                c.proc.wait(timeout=max(0.1, end - time.monotonic()))
            if c.proc.poll() is None:
                c.proc.kill()
