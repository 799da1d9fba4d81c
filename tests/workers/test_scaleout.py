"""Scale-out on PostgreSQL: the connection budget, the blocking study lock, PgBouncer in front.

Real PostgreSQL (tests/pg.py), real PgBouncer (tests/pgbouncer.py, Debian's package installed by the
session hook of tests/conftest.py) and real worker processes. Connections are counted from
``pg_stat_activity``, each matched to the local process that holds it.
"""

from __future__ import annotations

import os
import statistics
import threading
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from hpsearch.errors import StudyFailedError
from hpsearch.execution import budget as B
from hpsearch.execution import control as C
from hpsearch.records import STUDY
from hpsearch.storage import behind_pooler, open_storage
from hpsearch.workers import launcher as L

try:
    from tests.pg import connections_by_process
    from tests.pgbouncer import PgBouncer
except ImportError:  # pragma: no cover - rootdir not on sys.path
    from pg import connections_by_process  # type: ignore[no-redef]
    from pgbouncer import PgBouncer  # type: ignore[no-redef]

pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning", "ignore::UserWarning")

REPO = Path(__file__).resolve().parents[2]
optuna.logging.set_verbosity(optuna.logging.WARNING)


def _study_file(tmp_path: Path, name: str, n_trials: int) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(f"""name: {name}
data:
  source: "sklearn:iris"
  split: {{valid: 0.2, test: 0.2, seed: 0}}
model:
  builder: "tests.worker_builders:build_traced"
space:
  n_neurons: {{int: [4, 12]}}
  tag: {{float: [0.0, 1.0]}}
train: {{epochs: 2, batch_size: 16}}
search: {{engine: optuna, sampler: random, pruner: none, n_trials: {n_trials}, metric: accuracy, seed: null}}
""")
    return path


@pytest.fixture
def worker_env(monkeypatch, tmp_path, worker_process_env):
    """1 s heartbeats (so the heartbeat thread writes during each trial), trials that last 2 s."""
    monkeypatch.setenv(C.HEARTBEAT_ENV, "1")
    monkeypatch.setenv(C.GRACE_ENV, "3")
    monkeypatch.setenv("HPSEARCH_TEST_SLEEP", "2")
    monkeypatch.chdir(tmp_path)


def _check_exact(url: str, name: str, n_trials: int) -> list:
    trials = optuna.load_study(study_name=name, storage=open_storage(url)).trials
    states = [t.state for t in trials]
    assert len(trials) == n_trials and states.count(TrialState.COMPLETE) == n_trials, states
    assert TrialState.RUNNING not in states
    return trials


# ------------------------------------------------------------------------------------ study lock


def test_study_lock_blocks_until_released_and_times_out_in_one_line(postgres_url, monkeypatch):
    monkeypatch.setattr(B, "LOCK_ATTEMPT", 0.3)  # several lock_timeout rounds inside one wait
    st = open_storage(postgres_url)
    optuna.create_study(study_name="lk", storage=st)
    sid = st.get_study_id_from_name("lk")
    other = open_storage(postgres_url)
    held, release = threading.Event(), threading.Event()

    def holder() -> None:
        with B.study_lock(st, postgres_url, sid, "lk"):
            held.set()
            release.wait(30)

    t = threading.Thread(target=holder)
    t.start()
    assert held.wait(30)
    t0 = time.monotonic()
    with pytest.raises(StudyFailedError) as info, B.study_lock(other, postgres_url, sid, "lk", timeout=1.0):
        raise AssertionError("the lock was held by another connection")
    assert 0.9 <= time.monotonic() - t0 < 5
    msg = str(info.value)
    assert "\n" not in msg and "'lk'" in msg and "1 s" in msg
    threading.Timer(0.5, release.set).start()
    t0 = time.monotonic()
    with B.study_lock(other, postgres_url, sid, "lk", timeout=10.0):  # blocks, then gets it on release
        waited = time.monotonic() - t0
    t.join(10)
    assert 0.4 <= waited < 3
    # one pooled connection per storage stays open; the lock left nothing checked out
    assert other.engine.pool.checkedout() == 0 and other.engine.pool.size() == 1


def test_study_lock_waits_past_its_timeout_while_the_lock_changes_hands(postgres_url, monkeypatch):
    """The timeout catches a hung holder, not a long queue: 10 processes queued first hold the lock
    0.3 s each in turn; a waiter with a 1 s timeout waits ~3 s for its turn and gets the lock (it
    stopped after 1 s with "could not lock study" while hundreds of workers took the lock in turn)."""
    monkeypatch.setattr(B, "LOCK_ATTEMPT", 10.0)  # the queued holders keep their place in the queue
    st = open_storage(postgres_url)
    optuna.create_study(study_name="turns", storage=st)
    sid = st.get_study_id_from_name("turns")
    stores = [open_storage(postgres_url) for _ in range(10)]
    order: list[str] = []

    def holder(i: int) -> None:
        with B.study_lock(stores[i], postgres_url, sid, "turns", timeout=60):
            order.append(f"h{i}")
            time.sleep(0.3)

    threads = [threading.Thread(target=holder, args=(i,)) for i in range(10)]
    for t in threads:
        t.start()
        time.sleep(0.02)  # queued in this order
    time.sleep(0.3)
    t0 = time.monotonic()
    with B.study_lock(st, postgres_url, sid, "turns", timeout=1.0):
        waited = time.monotonic() - t0
        order.append("waiter")
    for t in threads:
        t.join(30)
    assert waited > 1.5, (waited, order)  # longer than its timeout, and it got the lock
    assert sorted(order) == sorted([f"h{i}" for i in range(10)] + ["waiter"])


# ------------------------------------------------------------------------------ connection budget


@pytest.mark.parametrize("n_workers", [1, 4])
def test_each_worker_holds_one_connection_on_average(tmp_path, postgres_server, postgres_url, worker_env, n_workers):
    """Sample pg_stat_activity every 0.1 s while the workers run; per worker, average the
    connections it holds from its first connection to its last (start-up imports excluded)."""
    n_trials = 2 * n_workers
    study = _study_file(tmp_path, f"conn{n_workers}", n_trials)
    dbname = postgres_url.rsplit("/", 1)[1]
    pids: list[int] = []
    samples: list[dict[int | None, int]] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            if pids:
                samples.append(connections_by_process(postgres_server, dbname))
            time.sleep(0.1)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    try:
        L.run_workers(study, storage=postgres_url, artifacts=str(tmp_path / "art"), n_workers=n_workers,
                      on_spawn=pids.extend)
    finally:
        stop.set()
        th.join(10)
    _check_exact(postgres_url, f"conn{n_workers}", n_trials)
    per_worker = []
    for pid in pids:
        held = [s.get(pid, 0) for s in samples]
        active = [i for i, n in enumerate(held) if n]
        assert active, f"worker {pid} was never seen connected"
        window = held[active[0]:active[-1] + 1]
        per_worker.append(statistics.mean(window))
    me = statistics.mean(s.get(os.getpid(), 0) for s in samples)
    total = [sum(s.values()) for s in samples]
    print(f"\nconnections: workers {n_workers}, per worker mean "
          f"{statistics.mean(per_worker):.2f} (each {', '.join(f'{x:.2f}' for x in per_worker)}), "
          f"launcher mean {me:.2f}, all processes mean {statistics.mean(total):.2f} max {max(total)}")
    assert statistics.mean(per_worker) <= 1.15  # one pooled connection; brief extra ones while threads overlap
    assert me <= 1.0  # the launcher keeps at most one between its polls


# --------------------------------------------------------------------------------------- PgBouncer


def test_pgbouncer_keeps_answering_after_more_log_than_a_pipe_holds(postgres_server, postgres_url):
    """PgBouncer logs every login and close to stderr too; with its stderr on an unread pipe it froze
    after 64 KiB of log, every client waiting on it (the hang of the 256-client simulation): each
    login here must still be answered after twice that much log."""
    import psycopg

    bouncer = PgBouncer(postgres_server, pool_size=1).start()
    try:
        url = bouncer.url(postgres_url.rsplit("/", 1)[1], driver="postgresql")
        logins = 0
        while bouncer.log.stat().st_size < 2 * 65536:
            with psycopg.connect(url, connect_timeout=5) as conn:  # a frozen pooler: a timeout, not a hang
                assert conn.execute("SELECT 1").fetchone() == (1,)
            logins += 1
    finally:
        bouncer.close()
    print(f"\npgbouncer answered {logins} logins after {2 * 64} KiB of log")


def test_study_lock_waiters_behind_pgbouncer_leave_the_holder_server_connections(postgres_server, postgres_url):
    """Through a pool of 2 server connections: one process holds the study lock (1 connection) and
    needs another for its own statements (as ``ask`` does) while 3 others wait for the lock. Waiters
    blocking 2 s at a time kept the second connection and each statement of the holder waited for a
    waiter's timeout (~1 s each); behind a pooler (told by ``behind_pooler``, said in one line) a wait
    lasts 0.1 s and then gives the connection back, so the holder's statements go through at once."""
    dbname = postgres_url.rsplit("/", 1)[1]
    direct = open_storage(postgres_url)
    assert not behind_pooler(direct) and B.pooled_lock_line(direct, postgres_url) is None
    bouncer = PgBouncer(postgres_server, pool_size=2).start()
    try:
        url = bouncer.url(dbname)
        holder_st = open_storage(url)
        assert behind_pooler(holder_st)
        assert "pooler" in (B.pooled_lock_line(holder_st, url) or "")
        optuna.create_study(study_name="pooled", storage=holder_st)
        sid = holder_st.get_study_id_from_name("pooled")
        waiters = [open_storage(url) for _ in range(3)]
        got: list[int] = []
        held = threading.Event()

        def waiter(i: int) -> None:
            held.wait(30)
            with B.study_lock(waiters[i], url, sid, "pooled", timeout=60):
                got.append(i)

        threads = [threading.Thread(target=waiter, args=(i,)) for i in range(3)]
        for t in threads:
            t.start()
        with B.study_lock(holder_st, url, sid, "pooled"):
            held.set()
            time.sleep(1.0)  # every waiter is queued on the lock
            t0 = time.monotonic()
            for _ in range(5):  # the holder's own statements, each on a second server connection
                holder_st.get_study_system_attrs(sid)
            statements = time.monotonic() - t0
        for t in threads:
            t.join(60)
    finally:
        bouncer.close()
    print(f"\nholder's 5 statements through a pool of 2 with 3 waiters: {statements:.2f} s")
    assert sorted(got) == [0, 1, 2]  # every waiter got the lock after the release
    assert statements < 2.5


def test_study_through_pgbouncer_in_transaction_pooling(tmp_path, postgres_server, postgres_url, worker_env):
    """Three workers and the launcher share 3 server connections through PgBouncer
    (pool_mode = transaction): the budget is exact and nothing is left RUNNING."""
    dbname = postgres_url.rsplit("/", 1)[1]
    bouncer = PgBouncer(postgres_server, pool_size=3).start()
    try:
        url = bouncer.url(dbname)
        study = _study_file(tmp_path, "bounced", 6)
        res = L.run_workers(study, storage=url, artifacts=str(tmp_path / "art"), n_workers=3)
        assert res.n_complete == 6
        server_side = sum(connections_by_process(postgres_server, dbname).values())
    finally:
        bouncer.close()
    trials = _check_exact(postgres_url, "bounced", 6)  # read directly from the server
    decided = optuna.load_study(study_name="bounced", storage=open_storage(postgres_url)).user_attrs[STUDY.DECISIONS]
    assert "a connection pooler is in front" in decided["storage.study_lock"]["line"]  # said and recorded
    workers = {t.user_attrs.get("worker") for t in trials}
    print(f"\npgbouncer (transaction pooling, 3 server connections): workers: 3, budget 6, finished "
          f"{len(trials)}, distinct {len({t.params['tag'] for t in trials})}, RUNNING 0, "
          f"workers that ran trials: {len(workers)}, server connections at the end: {server_side}")
    assert len({t.params["tag"] for t in trials}) == 6
    assert server_side <= 3


# --------------------------------------------------------------------------------- scale benchmark


def test_scale_benchmark_at_ci_size():
    """benchmarks/bench_scale.py at its CI size, so the scale run cannot rot: real workers directly and
    through PgBouncer with exact budget lines, and the simulated clients named as a simulation."""
    import subprocess
    import sys

    bench = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_scale.py"
    out = subprocess.run([sys.executable, str(bench), "--workers", "2", "--per-worker", "1", "--simulate", "4",
                          "--sim-processes", "1", "--ramp", "1", "--timeout", "300"],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    table = [line for line in out.stdout.splitlines() if line.startswith("| ")]
    assert len(table) == 4, out.stdout  # the header and three rows
    assert "| real workers | 2 | direct |" in table[1]
    assert "| real workers | 2 | pgbouncer(pool=8) |" in table[2]
    assert table[3].startswith("| SIMULATION (no training) | 4 of 4 | pgbouncer(pool=32) |")
    assert table[1].endswith("budget 2, finished 2, distinct 2, RUNNING 0, run twice 0, lost 0 |")
    assert table[3].endswith("budget 4, finished 4, distinct 4, RUNNING 0, created 4 |")
