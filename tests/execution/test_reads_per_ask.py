"""Storage reads that do not grow with the study (issue 26 item 3): a pack's reservation
(``Budget.reserve_many``: the budget count, K drafted trials, their heartbeats), the one-fit-per-pack
TPE proposals and the tells read each finished trial once per process. Optuna's ``_CachedStorage``
(what ``optuna.create_study`` wraps an RDBStorage in) keeps every finished trial and re-reads only
the unfinished ones and those newer than the last finished one; hpsearch reads trials only through
``study.get_trials`` (that cache). Counted: SQL SELECTs per asked trial, after the process's first
read of the study, at 100 and at 1,000 finished trials, on SQLite and PostgreSQL, with a second
worker finishing trials in between, and the trials the RDB storage returned per
asked trial (a bulk re-read of every trial is a constant number of SELECTs too: the rows tell)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import optuna
import pytest
import sqlalchemy

from hpsearch.engines.packsampling import HISTORY, PackTPESampler
from hpsearch.execution.budget import Budget
from hpsearch.execution.drafts import draft_trial
from hpsearch.storage import open_storage

K = 8
BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_sampling.py"


def _filled(url: str, name: str, size: int) -> None:
    """``size`` seeded random COMPLETE trials: benchmarks/bench_sampling.py's fill (one in one place)."""
    spec = importlib.util.spec_from_file_location("bench_sampling", BENCH)
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    _, storage = bench._filled(url, name, size, seed=size)
    storage.engine.dispose()


def _worker(url: str, name: str, size: int) -> tuple[object, optuna.Study, Budget]:
    """(storage, study, budget) of one worker process, opened as the trial loop opens them."""
    storage = open_storage(url)
    study = optuna.load_study(study_name=name, storage=storage)
    study.sampler = PackTPESampler(optuna.samplers.TPESampler(seed=0, multivariate=True, constant_liar=True,
                                                              n_startup_trials=10), K, HISTORY)
    budget = Budget(study, storage, url, study._study_id, size + 10 * K)
    # as the packed loop reserves with TPE: each new trial drafted and created with its params
    budget.draft = lambda number: draft_trial(study, number, _suggest, {})
    budget.beat_within = 3600.0  # no early heartbeat of a slow reservation (its reads depend on the machine's load)
    return storage, study, budget


def _suggest(t: object) -> None:
    t.suggest_int("n_hidden", 1, 2)
    t.suggest_int("n_neurons", 4, 32)
    t.suggest_float("learning_rate", 1e-3, 0.1, log=True)


def _pack(study: optuna.Study, budget: Budget) -> None:
    """Reserve a pack (one TPE fit, drafted trials), suggest its members (stored already), tell them."""
    trials, finished = budget.reserve_many(K)
    assert len(trials) == K and not finished
    for t in trials:
        _suggest(t)
    for t in trials:
        study.tell(t, 0.5)


def _reads_per_ask(url: str, size: int) -> list[tuple[float, float]]:
    """(SELECTs, trials read) per asked trial of one worker for three packs in a row (reserve,
    suggest, tell) on a study of ``size`` finished trials, while a second worker runs a pack of its
    own between them (its trials are new to the first: each is read once)."""
    name = f"reads-{size}"
    _filled(url, name, size)
    storage, study, budget = _worker(url, name, size)
    _, other, other_budget = _worker(url, name, size)
    selects: list[int] = []
    read: list[int] = []
    for name in ("_get_trials", "get_all_trials", "get_trial"):  # the RDB storage's trial reads
        real = getattr(storage, name)
        setattr(storage, name, lambda *a, _real=real, **k: _counted(_real(*a, **k), read))

    def count(conn, cursor, statement, *_):
        if statement.lstrip().upper().startswith("SELECT"):
            selects.append(1)

    sqlalchemy.event.listen(storage.engine, "before_cursor_execute", count)
    out = []
    try:
        for _ in range(3):
            _pack(other, other_budget)
            before, rows = len(selects), len(read)
            _pack(study, budget)
            out.append(((len(selects) - before) / K, (len(read) - rows) / K))
    finally:
        sqlalchemy.event.remove(storage.engine, "before_cursor_execute", count)
    return out


def _counted(out: object, read: list[int]) -> object:
    read.extend([1] * (len(out) if isinstance(out, list) else 1))
    return out


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
def test_reads_per_ask_do_not_grow_with_the_study(storage_url):
    small = _reads_per_ask(storage_url, 100)
    large = _reads_per_ask(storage_url, 1000)
    print(f"(SELECTs, trials read) per ask, 3 packs of {K}: 100 trials {small}, 1000 trials {large}")
    # after the first pack (the process's one read of every finished trial), the same reads per ask
    assert large[1:] == small[1:], (small, large)
    assert small[1] == small[2]  # and none added pack after pack
    assert large[1][1] <= 3 * K  # the other worker's new trials and this pack's running ones, not the study
    assert large[0][1] >= 1000 / K  # the first pack did read the whole study (once)
