"""Many workers on one PostgreSQL study: real worker processes, directly and through PgBouncer, and a
simulation of many more clients replaying one worker's recorded storage calls.

    python benchmarks/bench_scale.py                      # 16 workers direct + PgBouncer, 256 simulated clients
    python benchmarks/bench_scale.py --workers 32 --per-worker 3 --simulate 512
    python benchmarks/bench_scale.py --workers 2 --per-worker 2 --simulate 8     # the CI size

**Real workers** (``hpsearch run STUDY --workers N``: the launcher and N worker processes) train the
smallest real model (tests/worker_builders.py's one-layer network on iris, 1 epoch, unpacked), a
budget of ``N * per-worker`` trials, on a throw-away PostgreSQL (tests/pg.py), once directly and once
through a throw-away PgBouncer in transaction-pooling mode (tests/pgbouncer.py, ``--pool`` server
connections). Measured: PostgreSQL connections of the study's database (sampled every 0.2 s: max and
mean; through PgBouncer these are the pooler's server connections), commits per second
(``pg_stat_database.xact_commit``), the study-lock wait of every reservation in every process
(benchmarks/scale_probe.py), trials per minute, and the budget line of the fault suite.

**Simulation** (named so in the output): the direct run records every ``RDBStorage`` call of its
processes; ``--simulate`` clients (threads, spread over processes) then replay that mix per trial
through PgBouncer against a fresh study, without training: each reserves a trial with the real
``Budget.reserve`` (the study lock, the count, ``ask``), makes the recorded number of heartbeat,
intermediate-value, attribute and read calls, and tells it. It measures what the server and the
lock do with that many clients, not training. A client stopped by an error is counted
(``clients_failed``, each error's first line on stderr) and makes the row inexact.

Exit 1 when a budget line is not exact.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from functools import partial
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.budget_line import expected, summary_line  # noqa: E402

#: recorded calls the replay makes itself through reserve / tell (not replayed one by one)
_BY_PROTOCOL = {"create_new_trial", "set_trial_param", "set_trial_state_values", "check_trial_is_updatable"}


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else float("nan")


class Sampler(threading.Thread):
    """Connections of one database (max, mean) while a run lasts, and its commit counter."""

    def __init__(self, admin_url: str, db: str) -> None:
        super().__init__(daemon=True)
        import sqlalchemy

        self.engine = sqlalchemy.create_engine(admin_url, poolclass=sqlalchemy.pool.NullPool)
        self.db, self.halt, self.samples = db, threading.Event(), []
        self.commits0 = self.commits()

    def _scalar(self, sql: str) -> int:
        with self.engine.connect() as conn:
            return int(conn.exec_driver_sql(sql, (self.db,)).scalar() or 0)

    def commits(self) -> int:
        return self._scalar("SELECT xact_commit FROM pg_stat_database WHERE datname = %s")

    def run(self) -> None:
        while not self.halt.wait(0.2):
            self.samples.append(self._scalar(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()"))

    def stop(self) -> dict[str, Any]:
        self.halt.set()
        self.join(10)
        commits = self.commits() - self.commits0
        self.engine.dispose()
        s = self.samples or [0]
        return {"max": max(s), "mean": round(sum(s) / len(s), 1), "commits": commits}


def _study_file(folder: Path, name: str, budget: int) -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(f"""name: {name}
data: {{source: "sklearn:iris", split: {{valid: 0.2, test: 0.2, seed: 0}}}}
model: {{builder: "tests.worker_builders:build_traced"}}
space: {{n_neurons: {{int: [4, 12]}}, tag: {{float: [0.0, 1.0]}}}}
train: {{epochs: 1, batch_size: 32, pack: 1}}
search: {{engine: optuna, sampler: random, pruner: none, n_trials: {budget}, metric: accuracy, seed: 0}}
""")
    return path


def _locks(events: Path) -> list[float]:
    return [float(x) for f in events.glob("lock-*.txt") for x in f.read_text().split()]


def real_workers(server: Any, bouncer: Any, a: argparse.Namespace, record: bool) -> tuple[dict[str, Any], Counter[str]]:
    """One ``hpsearch run --workers N`` on a new database; its row and (record) the storage call mix."""
    import optuna

    from hpsearch.storage import open_storage

    db = server.create_database()
    url = bouncer.url(db) if bouncer else server.url(db)
    bare = url.replace(f":{_quoted(server.password)}@", "@")
    tmp = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    events, probe = tmp / "events", tmp / "probe"
    events.mkdir()
    probe.mkdir()
    (probe / "sitecustomize.py").write_text("import scale_probe\nscale_probe.install()\n")
    name, budget = f"scale-{uuid.uuid4().hex[:6]}", a.workers * a.per_worker
    study = _study_file(tmp, name, budget)
    env = dict(os.environ, PGPASSWORD=server.password, HPSEARCH_TEST_EVENTS=str(events), HPSEARCH_TEST_SLEEP="0",
               HPSEARCH_BENCH_EVENTS=str(events), HPSEARCH_BENCH_RECORD="1" if record else "0",
               TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=os.pathsep.join([str(probe), str(REPO / "benchmarks"), str(REPO)]))
    env.pop("HPSEARCH_STORAGE", None)
    sampler = Sampler(server.url(db), db)
    sampler.start()
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "hpsearch", "run", str(study), "--storage", bare, "--artifacts",
                           str(tmp / "art"), "--no-progress", "--workers", str(a.workers)], env=env, cwd=tmp,
                          capture_output=True, text=True, timeout=a.timeout)
    wall = time.monotonic() - t0
    conn = sampler.stop()
    if proc.returncode != 0:
        print(proc.stdout[-3000:], proc.stderr[-3000:], file=sys.stderr)
    trials = optuna.load_study(study_name=name, storage=open_storage(server.url(db))).trials
    builds = [json.loads(x) for x in (events / "executions.jsonl").read_text().splitlines()]
    waits = [w * 1000 for w in _locks(events)]
    calls: Counter[str] = Counter()
    for f in events.glob("calls-*.json"):
        calls.update(json.loads(f.read_text()))
    finished = sum(t.state.name == "COMPLETE" for t in trials)
    through = f"pgbouncer(pool={a.pool})" if bouncer else "direct"
    row = {"kind": "real workers", "workers": a.workers, "through": through,
           "exit": proc.returncode, "wall_s": round(wall, 1), "connections_max": conn["max"],
           "connections_mean": conn["mean"], "commits_per_s": round(conn["commits"] / wall, 1),
           "lock_wait_ms_p50": round(_pct(waits, 0.5), 1), "lock_wait_ms_p99": round(_pct(waits, 0.99), 1),
           "trials_per_min": round(finished / wall * 60, 1),
           "budget_line": summary_line(trials, builds, budget)}
    row["exact"] = row["budget_line"] == expected(budget)
    per_trial = Counter({k: v / max(finished, 1) for k, v in calls.items()})
    return row, per_trial


def _quoted(password: str) -> str:
    from urllib.parse import quote

    return quote(password, safe="")


def _client(url: str, name: str, budget: int, mix: dict[str, float], seed: int, ramp: float,
            joined: list[int]) -> None:
    """One simulated client: reserve, replay the recorded per-trial calls, tell; until the budget is met."""
    import optuna

    from hpsearch.errors import StorageUnreachable
    from hpsearch.execution import budget as B
    from hpsearch.storage import open_storage

    rng = random.Random(seed)
    time.sleep(rng.uniform(0, ramp))  # clients join over the ramp, as a cluster's workers do
    for attempt in range(10):  # hundreds of simultaneous logins through the pooler on 2 cores time out
        try:
            st = open_storage(url, workers=2, heartbeat=True, heartbeat_interval=10)
            break
        except StorageUnreachable:
            if attempt == 9:
                return  # counted as not connected in the output
            time.sleep(2 * (1 + rng.random()))
    joined.append(seed)
    from hpsearch.execution.control import Control, Retry

    retry = Retry(url, Control(), 300.0, lambda _line: None)  # a lost connection is retried, as workers do
    study = retry(partial(optuna.load_study, study_name=name, storage=st))
    sid = retry(partial(st.get_study_id_from_name, name))
    budget_ = B.Budget(study, st, url, sid, budget)
    while True:
        trial, finished = retry(budget_.reserve, "trial reservation")
        if trial is None:
            if finished:
                return
            time.sleep(0.05)
            continue
        x = retry(partial(trial.suggest_float, "x", 0.0, 1.0))
        tid = retry(partial(budget_.trial_id, trial))
        for method, per_trial in mix.items():
            for i in range(int(per_trial) + (rng.random() < per_trial - int(per_trial))):
                retry(partial(_replay, st, method, tid, sid, i, trial.number, name))
        retry(partial(study.tell, trial, x))


#: the recorded calls a simulated client makes one by one (the others are named in the output)
REPLAYABLE = {"record_heartbeat", "set_trial_intermediate_value", "set_trial_user_attr", "set_trial_system_attr",
              "get_trial", "get_all_trials", "get_study_user_attrs", "get_study_system_attrs",
              "get_study_directions", "get_trial_id_from_study_id_trial_number", "get_study_id_from_name"}


def _replay(st: Any, method: str, tid: int, sid: int, i: int, number: int, name: str) -> None:
    if method == "record_heartbeat":
        st.record_heartbeat(tid)
    elif method == "set_trial_intermediate_value":
        st.set_trial_intermediate_value(tid, i, 0.5)
    elif method == "set_trial_user_attr":
        st.set_trial_user_attr(tid, f"k{i}", i)
    elif method == "set_trial_system_attr":
        st.set_trial_system_attr(tid, f"bench:k{i}", i)
    elif method == "get_trial":
        st.get_trial(tid)
    elif method == "get_all_trials":
        st.get_all_trials(sid, deepcopy=False)
    elif method == "get_trial_id_from_study_id_trial_number":
        st.get_trial_id_from_study_id_trial_number(sid, number)
    elif method == "get_study_id_from_name":
        st.get_study_id_from_name(name)
    elif method in REPLAYABLE:
        getattr(st, method)(sid)  # get_study_user_attrs / _system_attrs / _directions


def _sim_process(url: str, name: str, budget: int, mix: dict[str, float], threads: int, base: int, ramp: float,
                 q: Any) -> None:
    """``threads`` simulated clients in one process; puts the study-lock waits (s) they measured."""
    import warnings

    from scale_probe import timed_lock

    from hpsearch.execution import budget as B

    warnings.simplefilter("ignore")
    waits: list[float] = []
    joined: list[int] = []
    failed: list[str] = []
    B.study_lock = timed_lock(B.study_lock, waits.append)

    def client(seed: int) -> None:
        try:
            _client(url, name, budget, mix, seed, ramp, joined)
        except Exception as exc:  # noqa: BLE001 - a client that stopped is counted and named, not hidden
            failed.append(f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}")

    ts = [threading.Thread(target=client, args=(base + i,)) for i in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    q.put((waits, len(joined), failed))


def simulate(server: Any, bouncer: Any, a: argparse.Namespace, mix: Counter[str]) -> dict[str, Any]:
    import optuna

    from hpsearch.storage import open_storage

    db = server.create_database()
    url = bouncer.url(db)  # a pooler of its own (--sim-pool server connections)
    name, budget = f"sim-{uuid.uuid4().hex[:6]}", a.simulate * a.per_worker
    optuna.create_study(study_name=name, storage=open_storage(url, workers=2))
    replayed = {k: v for k, v in mix.items() if k in REPLAYABLE}
    skipped = sorted(k for k in mix if k not in REPLAYABLE and k not in _BY_PROTOCOL)
    procs_n = max(1, min(a.sim_processes, a.simulate))
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    share = [a.simulate // procs_n + (i < a.simulate % procs_n) for i in range(procs_n)]
    sampler = Sampler(server.url(db), db)
    sampler.start()
    t0 = time.monotonic()
    procs = [ctx.Process(target=_sim_process, args=(url, name, budget, replayed, n, 1000 * i, a.ramp, q))
             for i, n in enumerate(share)]
    for p in procs:
        p.start()
    got = [q.get(timeout=a.timeout) for _ in procs]
    waits = [w * 1000 for ws, _, _ in got for w in ws]
    joined = sum(n for _, n, _ in got)
    failed = Counter(line for _, _, lines in got for line in lines)
    for line, n in failed.most_common():
        print(f"simulated clients stopped by an error: {n} x {line}", file=sys.stderr)
    for p in procs:
        p.join(60)
    wall = time.monotonic() - t0
    conn = sampler.stop()
    trials = optuna.load_study(study_name=name, storage=open_storage(server.url(db))).trials
    finished = sum(t.state.name == "COMPLETE" for t in trials)
    running = sum(t.state.name == "RUNNING" for t in trials)
    distinct = len({t.number for t in trials if t.state.name == "COMPLETE"})
    line = f"budget {budget}, finished {finished}, distinct {distinct}, RUNNING {running}, created {len(trials)}"
    return {"kind": "SIMULATION (no training)", "workers": f"{joined} of {a.simulate}",
            "through": f"pgbouncer(pool={a.sim_pool})",
            "exit": 0, "wall_s": round(wall, 1), "connections_max": conn["max"], "connections_mean": conn["mean"],
            "commits_per_s": round(conn["commits"] / wall, 1), "lock_wait_ms_p50": round(_pct(waits, 0.5), 1),
            "lock_wait_ms_p99": round(_pct(waits, 0.99), 1), "trials_per_min": round(finished / wall * 60, 1),
            "budget_line": line, "clients_failed": sum(failed.values()),
            "exact": finished == budget == len(trials) and running == 0 and joined == a.simulate and not failed,
            "replayed_per_trial": {k: round(v, 2) for k, v in sorted(replayed.items())},
            "by_reserve_and_tell": sorted(k for k in mix if k in _BY_PROTOCOL), "not_replayed": skipped}


def _show(row: dict[str, Any]) -> None:
    print(json.dumps(row), flush=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workers", type=int, default=16)
    p.add_argument("--per-worker", type=int, default=2, help="trials per worker (or simulated client) in the budget")
    p.add_argument("--pool", type=int, default=8, help="PgBouncer server connections (default 8)")
    p.add_argument("--only-simulate", action="store_true", help="record the call mix from 2 workers, then simulate")
    p.add_argument("--sim-pool", type=int, default=32, help="PgBouncer server connections for the simulation")
    p.add_argument("--simulate", type=int, default=256, help="simulated clients (0: none)")
    p.add_argument("--sim-processes", type=int, default=8, help="processes the simulated clients are spread over")
    p.add_argument("--ramp", type=float, default=10.0, help="seconds over which the simulated clients join")
    p.add_argument("--timeout", type=float, default=1800)
    a = p.parse_args(argv)

    import optuna

    from tests.pg import PostgresServer
    from tests.pgbouncer import PgBouncer

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stopped: the servers below still close
    server = PostgresServer().start()
    bouncer = None
    rows = []
    try:
        bouncer = PgBouncer(server, pool_size=a.pool).start()
        if a.only_simulate:  # the call mix recorded from a small direct run, not shown
            _, mix = real_workers(server, None, argparse.Namespace(**{**vars(a), "workers": 2, "per_worker": 1}),
                                  record=True)
        else:
            direct, mix = real_workers(server, None, a, record=True)
            rows.append(direct)
            _show(direct)
            rows.append(real_workers(server, bouncer, a, record=False)[0])
            _show(rows[-1])
        if a.simulate:
            bouncer.close()
            bouncer = PgBouncer(server, pool_size=a.sim_pool).start()
            rows.append(simulate(server, bouncer, a, mix))
            _show(rows[-1])
    finally:
        if bouncer is not None:
            bouncer.close()
        server.close()
    cols = ["kind", "workers", "through", "wall_s", "connections_max", "connections_mean", "commits_per_s",
            "lock_wait_ms_p50", "lock_wait_ms_p99", "trials_per_min"]
    print("| " + " | ".join(cols) + " | budget line |")
    print("|" + "---|" * (len(cols) + 1))
    for row in rows:
        print("| " + " | ".join(str(row[c]) for c in cols) + f" | {row['budget_line']} |")
    return 0 if all(r["exact"] and r["exit"] == 0 for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
