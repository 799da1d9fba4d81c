"""Fault injection against a real PostgreSQL with password authentication (tests/pg.py: scram-sha-256
over TCP; the processes get a URL without the password and ``PGPASSWORD``, the README's recipe).

Each scenario starts real ``hpsearch run`` processes (one process or ``--workers 2``), injects a fault
on an event (a trial has started: the builder of tests/worker_builders.py writes a file per build and
logs every build with its pid and sampled ``tag``), lets the study finish (a second launch where the
fault stopped the first) and prints one line measured from the database and the build log::

    budget 6, finished 6, distinct 6, RUNNING 0, run twice 0, lost 0

* finished: COMPLETE + PRUNED trials; distinct: their distinct configurations (the ``tag``);
* RUNNING: trials left RUNNING after the last launch exited 0;
* run twice: configurations trained again when their earlier attempt had not been interrupted: built
  more often than they have attempts in the database, finished twice, or built after one finished
  (README, "run twice");
* lost: configurations whose attempt was interrupted and that never finished.

Heartbeat 1 s, grace 3 s: a killed worker's trial is failed and re-queued within seconds.

Packed scenarios (``scenario(pack=4)``): the built-in mlp in packs of 4 under ``run --workers 3``
(budget 12); no user builder can trace a packed trial, so tests/pack_trace.py logs each trial as a
process takes it into a pack, and ``learning_rate`` names a configuration.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import optuna
import pytest

from hpsearch.execution import control as C
from hpsearch.storage import open_storage
from tests.budget_line import expected, summary_line

pytestmark = [pytest.mark.slow,
              pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning", "ignore::UserWarning")]

REPO = Path(__file__).resolve().parents[2]
BUDGET = 6
PACKED_BUDGET = 12  # run --workers 3, packs of 4: each worker's first pack takes a third of the budget
optuna.logging.set_verbosity(optuna.logging.WARNING)


class Scenario:
    """One study file, its processes (started here, stopped by pid) and its build log."""

    def __init__(self, tmp_path: Path, server, url: str, name: str, *, seed: int | None = 5, sleep: float = 1.0,
                 pack: int | None = None):
        self.tmp, self.server, self.url, self.name = tmp_path, server, url, name
        self.events = tmp_path / "events"
        self.events.mkdir()
        self.bare = server.url(url.rsplit("/", 1)[1], password=False)
        self.study = tmp_path / f"{name}.yaml"
        seed_text = "null" if seed is None else seed
        self.budget, self.key, path = BUDGET, "tag", str(REPO)
        if pack is not None:  # packed trials of the built-in mlp, traced by tests/pack_trace.py
            self.budget, self.key = PACKED_BUDGET, "learning_rate"
            trace = tmp_path / "trace"
            trace.mkdir()
            (trace / "sitecustomize.py").write_text("import tests.pack_trace\ntests.pack_trace.install()\n")
            path = f"{trace}{os.pathsep}{REPO}"
            self.study.write_text(f"""name: {name}
data:
  source: "sklearn:iris"
  split: {{valid: 0.2, test: 0.2, seed: 0}}
model: {{builder: mlp, fixed: {{optimizer: adam, n_hidden: 1}}}}
space:
  n_neurons: {{int: [4, 12]}}
  learning_rate: {{float: [0.001, 0.1], log: true}}
train: {{epochs: 4, batch_size: 32, pack: {pack}}}
search: {{engine: optuna, sampler: random, pruner: none, n_trials: {self.budget}, metric: accuracy, seed: {seed_text}}}
""")
        else:
            self.study.write_text(f"""name: {name}
data:
  source: "sklearn:iris"
  split: {{valid: 0.2, test: 0.2, seed: 0}}
model:
  builder: "tests.worker_builders:build_traced"
space:
  n_neurons: {{int: [4, 12]}}
  tag: {{float: [0.0, 1.0]}}
train: {{epochs: 1, batch_size: 32}}
search: {{engine: optuna, sampler: random, pruner: none, n_trials: {BUDGET}, metric: accuracy, seed: {seed_text}}}
""")
        self.env = dict(os.environ, PGPASSWORD=server.password, HPSEARCH_TEST_EVENTS=str(self.events),
                        HPSEARCH_TEST_SLEEP=str(sleep), TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=path,
                        **{C.HEARTBEAT_ENV: "1", C.GRACE_ENV: "3", C.STOP_DEADLINE_ENV: "10"})
        self.env.pop("HPSEARCH_STORAGE", None)
        self.procs: list[subprocess.Popen[str]] = []

    def launch(self, workers: int = 1) -> subprocess.Popen[str]:
        cmd = [sys.executable, "-m", "hpsearch", "run", str(self.study), "--storage", self.bare, "--artifacts",
               str(self.tmp / "art"), "--no-progress"] + (["--workers", str(workers)] if workers > 1 else [])
        proc = subprocess.Popen(cmd, env=self.env, cwd=self.tmp, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True)
        self.procs.append(proc)
        return proc

    def builds(self) -> list[dict]:
        f = self.events / "executions.jsonl"
        return [json.loads(x) for x in f.read_text().splitlines()] if f.exists() else []

    def wait_builds(self, n: int, proc: subprocess.Popen[str], timeout: float = 150) -> list[dict]:
        """Wait for the n-th build (a trial has started); the event, not a guessed delay."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            got = self.builds()
            if len(got) >= n:
                return got
            assert proc.poll() is None, f"exited {proc.returncode} before the event:\n{proc.stdout.read()[-3000:]}"
            time.sleep(0.05)
        raise AssertionError(f"timed out waiting for build {n}")

    def mine(self) -> list[int]:
        """Pids of live processes started for this scenario (their argv names its unique study file)."""
        pids = []
        for d in Path("/proc").iterdir():
            if d.name.isdigit() and int(d.name) != os.getpid():
                with contextlib.suppress(OSError):
                    if str(self.study).encode() in (d / "cmdline").read_bytes():
                        status = (d / "status").read_text()
                        if "\nState:\tZ" not in status:
                            pids.append(int(d.name))
        return pids

    def wait_gone(self, timeout: float = 60) -> None:
        end = time.monotonic() + timeout
        while self.mine() and time.monotonic() < end:
            time.sleep(0.2)
        assert not self.mine(), f"processes still running: {self.mine()}"

    def finish(self, proc: subprocess.Popen[str], code: int = 0, timeout: float = 240) -> str:
        try:
            out, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"the run did not end within {timeout} s:\n{self.hang_report()}") from None
        assert proc.returncode == code, f"exit {proc.returncode}, expected {code}:\n{out[-3000:]}"
        assert "Traceback" not in out, out[-3000:]
        assert self.server.password not in out
        return out

    def hang_report(self) -> str:
        """What a hung run was doing: each of its processes' Python stacks (py-spy) and the server's
        view of every session (pg_stat_activity), for the failure message."""
        parts = []
        for pid in self.mine():
            dump = subprocess.run(["py-spy", "dump", "--pid", str(pid)], capture_output=True, text=True, timeout=60)
            parts.append(f"--- py-spy dump {pid}\n{dump.stdout[:6000]}{dump.stderr[-500:]}")
        with contextlib.suppress(Exception):
            import sqlalchemy

            engine = sqlalchemy.create_engine(self.url)
            with engine.connect() as conn:
                rows = conn.exec_driver_sql(
                    "SELECT pid, state, wait_event_type, wait_event, now() - state_change, left(query, 80)"
                    " FROM pg_stat_activity WHERE datname = current_database()").fetchall()
                trials = conn.exec_driver_sql(
                    "SELECT t.number, t.state, now() - h.heartbeat FROM trials t LEFT JOIN trial_heartbeats h"
                    " ON h.trial_id = t.trial_id ORDER BY t.number").fetchall()
            engine.dispose()
            parts.append("--- pg_stat_activity\n" + "\n".join(map(str, rows)))
            parts.append("--- trials (number, state, heartbeat age)\n" + "\n".join(map(str, trials)))
        return "\n".join(parts)

    def cleanup(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        for pid in self.mine():  # orphaned workers of a killed parent
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def summary(self) -> str:
        study = optuna.load_study(study_name=self.name, storage=open_storage(self.url))
        return summary_line(study.trials, self.builds(), self.budget, self.key)


EXPECTED = expected(BUDGET)


@pytest.fixture
def scenario(tmp_path, postgres_server, request):
    made: list[Scenario] = []

    def make(**kw) -> Scenario:
        name = re.sub(r"[^A-Za-z0-9-]+", "-", request.node.name.replace("test_", "")).strip("-")[:60]
        s = Scenario(tmp_path, postgres_server, postgres_server.url(postgres_server.create_database()), name, **kw)
        made.append(s)
        return s

    yield make
    for s in made:
        s.cleanup()
    postgres_server.start()  # a scenario that failed while the server was down


def _report(s: Scenario, label: str) -> str:
    line = s.summary()
    reasons = Counter(r.split(" (")[0] if r else "none" for r in _reasons(s))
    print(f"\n{label}: {line}   [interrupted attempts: {dict(reasons)}]")
    return line


def _reasons(s: Scenario) -> list[str | None]:
    study = optuna.load_study(study_name=s.name, storage=open_storage(s.url))
    return [t.user_attrs.get("failure_reason") for t in study.trials if t.state.name == "FAIL"]


def test_worker_sigkill_once_its_trial_started(scenario):
    s = scenario()
    parent = s.launch(workers=2)
    victim = s.wait_builds(2, parent)[1]["pid"]
    os.kill(victim, signal.SIGKILL)
    s.finish(parent)
    assert _report(s, "worker SIGKILL") == EXPECTED
    assert "heartbeat lost (worker died or storage unreachable)" in _reasons(s)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_parent_stopped_then_second_launch(scenario, sig):
    s = scenario()
    first = s.launch(workers=2)
    s.wait_builds(3, first)
    first.send_signal(sig)
    first.communicate(timeout=60)
    assert first.returncode == (130 if sig == signal.SIGTERM else -signal.SIGKILL)
    s.wait_gone()  # the workers stop by themselves (their parent is gone): trial failed and re-queued
    s.finish(s.launch(workers=2))
    assert _report(s, f"parent {sig.name} + second launch") == EXPECTED


def test_one_process_sigkill_then_second_launch(scenario):
    s = scenario()
    first = s.launch()
    s.wait_builds(2, first)
    first.kill()
    first.wait()
    s.finish(s.launch())
    assert _report(s, "one process SIGKILL + second launch") == EXPECTED


def test_postgres_restart_mid_run(scenario, postgres_server):
    s = scenario()
    parent = s.launch(workers=2)
    s.wait_builds(2, parent)
    postgres_server.restart(mode="fast")
    s.finish(parent)
    assert _report(s, "pg_ctl restart -m fast") == EXPECTED


def _packed(s: Scenario) -> list[int]:
    """The pack sizes of the finished trials (a re-queued copy left alone trains unpacked: None)."""
    study = optuna.load_study(study_name=s.name, storage=open_storage(s.url))
    return [t.user_attrs.get("pack_size") for t in study.trials if t.state.name == "COMPLETE"]


def test_packed_workers_one_sigkilled_mid_pack(scenario):
    """run --workers 3, packs of 4 (the built-in mlp): a worker is SIGKILLed once its pack started; its
    trials are failed after the grace period and their copies train in another worker's next pack."""
    s = scenario(pack=4)
    parent = s.launch(workers=3)
    victim = s.wait_builds(1, parent)[0]["pid"]
    os.kill(victim, signal.SIGKILL)
    s.finish(parent)
    assert _report(s, "packed: worker SIGKILL mid-pack") == expected(PACKED_BUDGET)
    assert "heartbeat lost (worker died or storage unreachable)" in _reasons(s)
    assert _packed(s).count(4) >= 8  # the two surviving workers' first packs at least


def test_packed_workers_postgres_restart_mid_pack(scenario, postgres_server):
    s = scenario(pack=4)
    parent = s.launch(workers=3)
    s.wait_builds(4, parent)  # a whole pack placed: its members are RUNNING
    postgres_server.restart(mode="fast")
    s.finish(parent)
    assert _report(s, "packed: pg_ctl restart -m fast mid-pack") == expected(PACKED_BUDGET)
    assert _packed(s).count(4) >= 4


def test_postgres_outage_longer_than_the_grace_period(scenario, postgres_server):
    s = scenario()
    parent = s.launch(workers=2)
    s.wait_builds(2, parent)
    postgres_server.restart(mode="fast", down_for=5.0)  # grace 3 s
    s.finish(parent)
    assert _report(s, "outage 5 s > grace 3 s") == EXPECTED


def test_two_concurrent_launches_on_one_study(scenario):
    s = scenario(sleep=0.5)
    a = s.launch()
    s.wait_builds(1, a)  # the study exists: the second process joins it
    b = s.launch()
    s.finish(a)
    s.finish(b)
    assert _report(s, "two concurrent hpsearch run") == EXPECTED


def test_report_of_a_model_keras_refuses_is_one_note_not_a_traceback(tmp_path, capsys):
    """The stored best model is replaced by one with a Lambda layer (a hostile file): Keras' safe mode
    refuses to load it; `hpsearch report` still writes the report, exit 0, and says why the
    test-split section is missing."""
    import keras

    from hpsearch.cli import main

    study = tmp_path / "lam.yaml"
    study.write_text("""name: lam
data: {source: "sklearn:iris", split: {valid: 0.2, test: 0.2, seed: 0}}
model: {builder: mlp, fixed: {activation: relu, optimizer: adam}}
space: {n_neurons: {int: [4, 8]}}
train: {epochs: 1, batch_size: 32}
search: {engine: optuna, sampler: random, pruner: none, n_trials: 1, metric: accuracy, seed: 1}
""")
    db, art = f"sqlite:///{tmp_path / 'h.db'}", tmp_path / "art"
    assert main(["run", str(study), "--storage", db, "--artifacts", str(art), "--no-progress", "--json"]) == 0
    from hpsearch.records import STUDY

    mid = optuna.load_study(study_name="lam", storage=db).user_attrs[STUDY.BEST_MODEL_ARTIFACT]
    hostile = keras.Sequential([keras.Input(shape=(4,)), keras.layers.Lambda(lambda x: x * 1.0),
                                keras.layers.Dense(3, activation="softmax")])
    hostile.save(tmp_path / "hostile.keras")
    (art / mid).write_bytes((tmp_path / "hostile.keras").read_bytes())
    capsys.readouterr()
    code = main(["report", "lam", "--storage", db, "--artifacts", str(art), "-o", str(tmp_path / "rep")])
    out, err = capsys.readouterr()
    assert code == 0 and "Traceback" not in out + err, err
    page = (tmp_path / "rep" / "index.html").read_text()
    assert "the stored model cannot be loaded (ValueError" in page


def test_failed_trials_one_line_each_and_a_one_line_summary(tmp_path, capsys):
    """One process, every trial fails: one line per failed trial (not counted as done), then one
    summary line and exit 1; no traceback."""
    from hpsearch.cli import main

    study = tmp_path / "broken.yaml"
    study.write_text("""name: broken
data: {source: "sklearn:iris", split: {valid: 0.2, test: 0.2, seed: 0}}
model: {builder: "tests.worker_builders:build_broken"}
space: {n_neurons: {int: [4, 8]}}
train: {epochs: 1, batch_size: 32}
search: {engine: optuna, sampler: random, pruner: none, n_trials: 4, metric: accuracy, seed: 1,
         max_failures_in_row: 3}
""")
    code = main(["run", str(study), "--storage", f"sqlite:///{tmp_path / 'h.db'}", "--artifacts",
                 str(tmp_path / "art")])
    out, err = capsys.readouterr()
    lines = [x for x in err.splitlines() if x.strip()]
    assert code == 1 and "Traceback" not in out + err, err
    # the decisions' lines: the data snapshot written at the study's start, the pack size
    decided = [x for x in lines if x.startswith(("hpsearch: data snapshot:", "hpsearch: train.pack auto -> 1:"))]
    lines = [x for x in lines if x not in decided]
    assert len(decided) == 2 and len(lines) == 4, lines
    assert all("FAIL" in x and "(0/4 done" in x and "ValueError: broken builder" in x for x in lines[:3]), lines
    assert lines[3].startswith("hpsearch: study 'broken' stopped: 3 trials failed in a row"), lines
