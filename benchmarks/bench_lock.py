"""Wait for the study lock (the exact budget's critical section) with N processes on one study.

    python benchmarks/bench_lock.py                        # 16 processes, a throw-away PostgreSQL (tests/pg.py)
    python benchmarks/bench_lock.py --workers 32 --per-worker 20
    python benchmarks/bench_lock.py --pgbouncer 4          # the same through PgBouncer, 4 server connections
    python benchmarks/bench_lock.py --storage postgresql+psycopg://user@host/db   # PGPASSWORD in env

Each process opens the storage as a worker does (heartbeat on) and loops over the real
``Budget.reserve`` (count, ``ask``, first heartbeat, under ``study_lock``), then tells the trial
COMPLETE at once: no model is trained, so every process is at the lock as often as it can be, far
more often than real workers whose trials take seconds. The study's budget is
``workers * per-worker`` trials. Measured per reservation: the wait for the lock (from asking for it
to holding it) and the time it is held. Printed: one JSON line, then the figures in words, with
``budget N, finished N, distinct N, RUNNING 0``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing as mp
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else float("nan")


def _worker(url: str, name: str, n_trials: int, start: Any, out: Any, attempt: float | None) -> None:
    import warnings

    import optuna

    from hpsearch.execution import budget as B
    from hpsearch.storage import open_storage

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.simplefilter("ignore")
    waits: list[float] = []
    holds: list[float] = []
    real_lock = B.study_lock

    @contextlib.contextmanager
    def timed_lock(*args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        with real_lock(*args, **kwargs):
            t1 = time.perf_counter()
            waits.append(t1 - t0)
            try:
                yield
            finally:
                holds.append(time.perf_counter() - t1)

    B.study_lock = timed_lock  # Budget.reserve looks the name up in its module at each call
    if attempt is not None:
        B.LOCK_ATTEMPT = attempt
    st = open_storage(url, workers=2, heartbeat=True, heartbeat_interval=10)
    study = optuna.load_study(study_name=name, storage=st)
    budget = B.Budget(study, st, url, st.get_study_id_from_name(name), n_trials)
    start.wait()
    made = 0
    while True:
        trial, finished = budget.reserve()
        if trial is None:
            if finished:
                break
            time.sleep(0.02)
            continue
        study.tell(trial, trial.suggest_float("x", 0.0, 1.0))
        made += 1
    out.put({"waits": waits, "holds": holds, "made": made})


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workers", type=int, default=16)
    p.add_argument("--per-worker", type=int, default=10, help="trials per worker in the budget")
    p.add_argument("--storage", help="PostgreSQL URL (default: a throw-away server from tests/pg.py)")
    p.add_argument("--pgbouncer", type=int, default=0, metavar="POOL",
                   help="go through a throw-away PgBouncer (transaction pooling) with POOL server connections")
    p.add_argument("--attempt", type=float, help="seconds of one blocking wait (default: LOCK_ATTEMPT)")
    a = p.parse_args(argv)

    import optuna

    from hpsearch.storage import open_storage

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    server = bouncer = None
    url = a.storage
    if not url:
        from tests.pg import PostgresServer

        server = PostgresServer().start()
        db = server.create_database()
        url = server.url(db)
        if a.pgbouncer:
            from tests.pgbouncer import PgBouncer

            bouncer = PgBouncer(server, pool_size=a.pgbouncer).start()
            url = bouncer.url(db)
    try:
        name = f"lock-{uuid.uuid4().hex[:6]}"
        n_trials = a.workers * a.per_worker
        optuna.create_study(study_name=name, storage=open_storage(url, workers=2))
        ctx = mp.get_context("spawn")
        start, out = ctx.Event(), ctx.Queue()
        procs = [ctx.Process(target=_worker, args=(url, name, n_trials, start, out, a.attempt))
                 for _ in range(a.workers)]
        for proc in procs:
            proc.start()
        time.sleep(2.0 + 0.2 * a.workers)  # let every process import and connect before the gun
        t0 = time.monotonic()
        start.set()
        results = [out.get(timeout=600) for _ in procs]
        wall = time.monotonic() - t0
        for proc in procs:
            proc.join(60)
        waits = [w * 1000 for r in results for w in r["waits"]]
        holds = [h * 1000 for r in results for h in r["holds"]]
        trials = optuna.load_study(study_name=name, storage=open_storage(url, workers=2)).trials
        finished = sum(t.state.name == "COMPLETE" for t in trials)
        running = sum(t.state.name == "RUNNING" for t in trials)
        distinct = len({t.number for t in trials})
        row = {
            "workers": a.workers, "through": f"pgbouncer(pool={a.pgbouncer})" if bouncer else "direct",
            "attempt_s": a.attempt,
            "budget": n_trials, "created": len(trials), "finished": finished, "distinct": distinct,
            "running": running, "reservations": len(waits), "wall_s": round(wall, 2),
            "reservations_per_s": round(len(waits) / wall, 1),
            "lock_wait_ms": {"p50": round(_pct(waits, 0.5), 2), "p99": round(_pct(waits, 0.99), 2),
                             "max": round(max(waits), 2), "mean": round(statistics.mean(waits), 2)},
            "lock_hold_ms": {"p50": round(_pct(holds, 0.5), 2), "p99": round(_pct(holds, 0.99), 2)},
        }
        print(json.dumps(row))
        print(f"{a.workers} processes ({row['through']}): lock wait p50 {row['lock_wait_ms']['p50']} ms, "
              f"p99 {row['lock_wait_ms']['p99']} ms (max {row['lock_wait_ms']['max']} ms); held p50 "
              f"{row['lock_hold_ms']['p50']} ms, p99 {row['lock_hold_ms']['p99']} ms; "
              f"{row['reservations_per_s']} reservations/s")
        print(f"budget {n_trials}, finished {finished}, distinct {distinct}, RUNNING {running}, "
              f"created {len(trials)}")
        return 0 if (finished == n_trials == len(trials) and running == 0) else 1
    finally:
        if bouncer is not None:
            bouncer.close()
        if server is not None:
            server.close()


if __name__ == "__main__":
    raise SystemExit(main())
