"""Workers on one shared study: budget, crash safety, signals, GPU/CPU environment, secrets.

Real PostgreSQL (tests/pg.py) and real worker processes. Kill and stop tests act on an event (a
file written by the trial's builder when it starts, tests/worker_builders.py), never after a sleep,
and count executions per trial number. Each reliability test prints one summary line.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from hpsearch.cli import build_parser, main
from hpsearch.errors import StudyFailedError, UserError
from hpsearch.execution import budget as B
from hpsearch.execution import control as C
from hpsearch.storage import child_env_and_url, open_storage
from hpsearch.workers import launcher as L
from hpsearch.workers import plan as P
from hpsearch.workers import worker as WK

pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning",
                                        "ignore::UserWarning")

REPO = Path(__file__).resolve().parents[2]
optuna.logging.set_verbosity(optuna.logging.WARNING)


def _study_file(tmp_path: Path, name: str, n_trials: int, *, builder: str = "mlp", epochs: int = 2) -> Path:
    if builder == "mlp":
        model = "builder: mlp\n  fixed: {activation: relu, optimizer: adam}"
        space = "n_neurons: {int: [4, 16]}\n  learning_rate: {float: [1.0e-3, 1.0e-1], log: true}"
    else:
        model = f"builder: \"{builder}\""
        space = "n_neurons: {int: [4, 12]}\n  tag: {float: [0.0, 1.0]}"
    text = f"""name: {name}
data:
  source: "sklearn:iris"
  max_rows: 150
  split: {{valid: 0.2, test: 0.2, seed: 0}}
model:
  {model}
space:
  {space}
train: {{epochs: {epochs}, batch_size: 16}}
search: {{engine: optuna, sampler: random, pruner: none, n_trials: {n_trials}, metric: accuracy, seed: null}}
"""
    path = tmp_path / f"{name}.yaml"
    path.write_text(text)
    return path


@pytest.fixture
def fast_heartbeat(monkeypatch, tmp_path, worker_process_env):
    """Short heartbeat for tests; workers import tests.worker_builders; trial events in a folder."""
    monkeypatch.setenv(C.HEARTBEAT_ENV, "1")
    monkeypatch.setenv(C.GRACE_ENV, "3")
    monkeypatch.setenv(C.STOP_DEADLINE_ENV, "20")
    events = tmp_path / "events"
    events.mkdir()
    monkeypatch.setenv("HPSEARCH_TEST_EVENTS", str(events))
    return events


@pytest.fixture
def spawned(monkeypatch) -> list[tuple[list[str], dict[str, str]]]:
    """Worker processes are not started: each spawn records (argv, environment) and exits 0."""
    import io

    seen: list[tuple[list[str], dict[str, str]]] = []

    class FakePopen:
        def __init__(self, cmd, env=None, **kw):
            seen.append((list(cmd), dict(env)))
            self.pid, self.returncode, self.stdout = 10**6 + len(seen), 0, io.BytesIO(b"")

        def poll(self):
            return self.returncode

    monkeypatch.setattr(L.subprocess, "Popen", FakePopen)
    return seen


def _load(url: str, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=open_storage(url))


def _wait_for(pred, timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def _executions(events: Path) -> list[dict]:
    f = events / "executions.jsonl"
    return [json.loads(x) for x in f.read_text().splitlines()] if f.exists() else []


def _per_trial_number(study: optuna.Study, execs: list[dict]) -> dict[int, int]:
    """Executions per trial number. An execution (pid, tag, time) belongs to the trial with that tag
    run by that pid (user attr ``worker``) that started last before it: a trial re-queued after a
    storage outage may run again on the same worker, as a new trial number."""
    import datetime

    counts: dict[int, int] = {}
    for e in execs:
        when = datetime.datetime.fromtimestamp(e["t"] + 0.5)
        match = [t for t in study.trials if t.params.get("tag") == e["tag"]
                 and str(t.user_attrs.get("worker", "")).endswith(f":{e['pid']}")
                 and t.datetime_start is not None and t.datetime_start <= when]
        assert match, f"execution {e} matches no trial"
        number = max(match, key=lambda t: t.datetime_start).number
        counts[number] = counts.get(number, 0) + 1
    return counts


def _summary(study: optuna.Study, execs: list[dict], n_trials: int, workers: int, killed: int,
             stopped: int = 0) -> dict[str, int]:
    per_number = _per_trial_number(study, execs)
    trials = study.trials
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    # a trial is lost if it was interrupted (FAIL by kill/stop) and no copy with its params completed
    interrupted = [t for t in trials if t.state == TrialState.FAIL]
    done_tags = {t.params["tag"] for t in complete}
    lost = sum(1 for t in interrupted if t.params.get("tag") not in done_tags)
    tags_complete = [t.params["tag"] for t in complete]
    twice = sum(1 for n in per_number.values() if n > 1) + (len(tags_complete) - len(set(tags_complete)))
    running = sum(1 for t in trials if t.state == TrialState.RUNNING)
    s = {"workers": workers, "killed": killed, "stopped": stopped, "lost": lost, "twice": twice, "running": running,
             "complete": len(complete)}
    extra = f"stopped: {stopped}, " if stopped else ""
    print(f"\nworkers: {workers}, killed: {killed}, {extra}trials lost: {lost}, run twice: {twice}, "
          f"stranded RUNNING: {running}, COMPLETE: {len(complete)} of {n_trials}")
    return s


# ==================================================================================================
# Planning and environment (no processes)
# ==================================================================================================


def test_parse_and_plan_gpus():
    assert P.parse_gpus("0, 1") == ["0", "1"]
    assert P.parse_gpus(None) == []
    assert P.parse_gpus("GPU-1234") == ["GPU-1234"]
    for bad in ("0,0", "x", ","):
        with pytest.raises(UserError):
            P.parse_gpus(bad)
    assert P.plan_workers(1, ["0", "1"], 2) == ["0", "1", "0", "1"]
    assert P.plan_workers(3, ["0", "1"], 2) == ["0", "1", "0"]
    assert P.plan_workers(3, [], 1) == [None, None, None]
    with pytest.raises(UserError, match="slots"):
        P.plan_workers(5, ["0", "1"], 2)
    with pytest.raises(UserError, match="--per-gpu needs --gpus"):
        P.plan_workers(2, [], 2)


def test_gpu_worker_env_pins_one_gpu_and_shares_memory():
    env = P.worker_env("1", per_gpu=2, n_workers=4, cpu_count=16, base={})
    assert env["CUDA_VISIBLE_DEVICES"] == "1"
    assert env["TF_FORCE_GPU_ALLOW_GROWTH"] == "true"
    assert env["XLA_PYTHON_CLIENT_PREALLOCATE"] == "false"
    assert float(env["XLA_PYTHON_CLIENT_MEM_FRACTION"]) == pytest.approx(0.45)
    assert env["PYTORCH_CUDA_ALLOC_CONF"] == "expandable_segments:True"
    assert float(env[P.GPU_FRACTION_ENV]) == pytest.approx(0.45)
    assert env["OMP_NUM_THREADS"] == "4"


def test_cpu_worker_env_hides_gpus_and_splits_cores():
    env = P.worker_env(None, n_workers=4, cpu_count=8, base={})
    assert env["CUDA_VISIBLE_DEVICES"] == ""
    assert env["JAX_PLATFORMS"] == "cpu"
    assert env["OMP_NUM_THREADS"] == env["TF_NUM_INTRAOP_THREADS"] == "2"
    assert "XLA_PYTHON_CLIENT_MEM_FRACTION" not in env
    assert P.worker_env(None, n_workers=4, cpu_count=8, base={"OMP_NUM_THREADS": "3"})["OMP_NUM_THREADS"] == "3"
    assert P.worker_env(None, n_workers=16, cpu_count=2, base={})["OMP_NUM_THREADS"] == "1"


def test_heartbeat_settings_are_consistent():
    assert C.heartbeat_settings({}) == (10, 30)
    assert C.heartbeat_settings({C.HEARTBEAT_ENV: "2"}) == (2, 6)
    with pytest.raises(UserError, match="twice"):
        C.heartbeat_settings({C.HEARTBEAT_ENV: "5", C.GRACE_ENV: "6"})
    with pytest.raises(UserError):
        C.heartbeat_settings({C.HEARTBEAT_ENV: "soon"})


def test_worker_command_has_no_password_and_parses(postgres_url, tmp_path):
    bare, extra = child_env_and_url(postgres_url)
    cmd = P.worker_command(tmp_path / "s.yaml", bare, artifacts=str(tmp_path), n_trials=3, epochs=2)
    assert "s3cr" not in " ".join(cmd) and "PGPASSWORD" in extra
    assert cmd[1:4] == ["-m", "hpsearch", "worker"]
    a = build_parser().parse_args(cmd[3:])
    assert (a.command, a.storage, a.n_trials, a.epochs, a.no_progress) == ("worker", bare, 3, 2, True)


def test_apply_backend_settings_without_gpu_is_harmless():
    P.apply_backend_settings({"KERAS_BACKEND": "tensorflow"})
    P.apply_backend_settings({"KERAS_BACKEND": "torch", P.GPU_FRACTION_ENV: "0.45"})


# ==================================================================================================
# Samplers: each worker draws its own sequence
# ==================================================================================================


@pytest.mark.parametrize("sampler", ["random", "tpe"])
def test_launches_draw_different_params_reproducibly(sampler, tmp_path, monkeypatch):
    """Same study, same search.seed: the second process on a study (a worker, a relaunch, a concurrent
    run) must not repeat the first one's draws (random sampler, TPE startup trials); launch 0 keeps
    search.seed, and the same history draws the same again (reproducible)."""
    from hpsearch.engines.optuna import seed_launch
    from hpsearch.study.run import prepare_context

    monkeypatch.delenv("HPSEARCH_STORAGE", raising=False)
    study = _study_file(tmp_path, f"seeds-{sampler}", 10)
    study.write_text(study.read_text().replace("sampler: random", f"sampler: {sampler}")
                     .replace("seed: null", "seed: 7"))

    def launches(db: str, n: int, seeded: bool = True) -> list[list[tuple[int, float]]]:
        url = f"sqlite:///{tmp_path / db}"
        out = []
        for i in range(n):
            ctx = prepare_context(study, storage=url, worker_index=i)
            assert seed_launch(ctx) == i
            draws = []
            for _ in range(3):
                t = ctx.study.ask()
                draws.append((t.suggest_int("n_neurons", 4, 16),
                              t.suggest_float("learning_rate", 1e-3, 1e-1, log=True)))
                ctx.study.tell(t, state=TrialState.FAIL)  # no training; the next ask starts afresh
            out.append(draws)
        return out

    first, again = launches("a.db", 2), launches("b.db", 2)
    assert first[0] != first[1] and first[0][0] != first[1][0]
    assert first == again
    import optuna as _optuna

    sampler_cls = {"random": _optuna.samplers.RandomSampler, "tpe": _optuna.samplers.TPESampler}[sampler]
    plain = _optuna.create_study(sampler=sampler_cls(seed=7))
    t = plain.ask()
    assert (t.suggest_int("n_neurons", 4, 16), t.suggest_float("learning_rate", 1e-3, 1e-1, log=True)) \
        == first[0][0]  # launch 0 draws what search.seed draws


def test_run_worker_reseeds_with_its_index(tmp_path, monkeypatch):
    seen = []

    real = WK.prepare_context

    def record(study, **kw):
        ctx = real(study, **kw)
        seen.append((type(ctx.study.sampler).__name__, ctx.cfg.search.seed, kw["worker_index"]))
        raise KeyboardInterrupt  # stop before any trial

    monkeypatch.setattr(WK, "prepare_context", record)
    monkeypatch.setenv(P.INDEX_ENV, "3")
    monkeypatch.delenv("HPSEARCH_STORAGE", raising=False)
    study = _study_file(tmp_path, "reseed", 2)
    study.write_text(study.read_text().replace("seed: null", "seed: 5"))
    with pytest.raises(KeyboardInterrupt):
        WK.run_worker(study, storage=f"sqlite:///{tmp_path / 'h.db'}")
    assert seen == [("RandomSampler", 5, 3)]


# ==================================================================================================
# run_workers(StudyConfig): the workers get the configuration as given in Python
# ==================================================================================================


def test_run_workers_with_study_config_hands_over_overrides_and_absolute_data(tmp_path, postgres_url,
                                                                             fast_heartbeat, monkeypatch):
    import io

    import yaml

    from hpsearch.study.validate import apply_overrides, load_study_config

    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "data.csv").write_text("a,b,y\n" + "".join(f"{i},{(i * 7) % 11},{i % 2}\n" for i in range(60)))
    text = _study_file(tmp_path, "cfgobj", 2).read_text()
    text = text.replace('source: "sklearn:iris"', 'source: data.csv\n  target: y')
    text = text.replace("train: {epochs: 2, batch_size: 16}",
                        "train: {epochs: 2, batch_size: 16, early_stopping: null}")
    (folder / "study.yaml").write_text(text)
    cfg = apply_overrides(load_study_config(folder / "study.yaml"), {"train.batch_size": 7})
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # the workers' cwd is not the study's folder either
    handed: list[str] = []

    class FakePopen:
        def __init__(self, cmd, env=None, **kw):
            handed.append(Path(cmd[4]).read_text())  # python -m hpsearch worker FILE ...
            self.pid, self.returncode, self.stdout = 10**6 + len(handed), 0, io.BytesIO(b"")

        def poll(self):
            return self.returncode

    monkeypatch.setattr(L.subprocess, "Popen", FakePopen)
    with pytest.raises(StudyFailedError):  # the fake workers ran nothing
        L.run_workers(cfg, storage=postgres_url, n_workers=2)
    assert len(handed) == 2
    given = yaml.safe_load(handed[0])
    assert given["train"]["batch_size"] == 7
    assert given["data"]["source"] == str((folder / "data.csv").absolute())
    worker_file = tmp_path / "w" / "study.yaml"  # as a worker reads it: from a folder of its own
    worker_file.parent.mkdir()
    worker_file.write_text(handed[0])
    got = load_study_config(worker_file)
    from hpsearch.data.sources.base import source_for

    located = source_for(got.data.source).locate(got)
    assert located == (folder / "data.csv").absolute() and located.exists()
    assert got.model_dump(exclude={"data"}) == cfg.model_dump(exclude={"data"})  # search.seed: null stays null
    assert got.train.batch_size == 7 and got.data.target == "y"
    assert got.search.seed is None and got.train.early_stopping is None


def test_parent_polls_every_two_seconds_and_shows_every_trial(tmp_path, postgres_url, fast_heartbeat,
                                                              monkeypatch, capsys):
    """While the (fake) workers live 2.4 s the parent reads the trials about once (every 2 s, not
    every 0.5 s), yet a trial finished just before they exit is still shown."""
    import io

    from optuna.distributions import FloatDistribution

    study = _study_file(tmp_path, "poll", 3)
    life = 2.4
    alive_until: list[float] = []
    reads: list[float] = []
    last: list[None] = []
    get_trials = optuna.Study.get_trials

    def counting(self, *a, **kw):
        if alive_until and time.monotonic() < alive_until[0]:
            reads.append(time.monotonic())
        return get_trials(self, *a, **kw)

    def finish_one(value: float) -> None:
        _load(postgres_url, "poll").add_trial(optuna.trial.create_trial(
            params={"tag": value}, distributions={"tag": FloatDistribution(0, 1)}, value=value))

    class FakePopen:
        def __init__(self, cmd, env=None, **kw):
            self.end = time.monotonic() + life
            if not alive_until:
                alive_until.append(self.end)
                finish_one(0.25)
            self.pid, self.returncode, self.stdout = 10**6, None, io.BytesIO(b"")

        def poll(self):
            if self.returncode is None and time.monotonic() >= self.end:
                if not last:  # the last trial is told just before a worker exits (no timer: load-proof)
                    last.append(finish_one(0.75))
                self.returncode = 0
            return self.returncode

        def kill(self):
            self.returncode = -9

    from hpsearch.console import ConsoleProgress

    monkeypatch.setattr(L.subprocess, "Popen", FakePopen)
    monkeypatch.setattr(optuna.Study, "get_trials", counting)
    with pytest.raises(StudyFailedError, match="2 of 3"):
        L.run_workers(study, storage=postgres_url, n_workers=2, observer=ConsoleProgress("poll"))
    err = capsys.readouterr().err
    assert "trial 0 COMPLETE value=0.2500" in err and "trial 1 COMPLETE value=0.7500" in err, err
    assert len(reads) <= 2, reads  # 0.5 s polling reads 4 times


def test_worker_study_yaml_keeps_sklearn_sources(tmp_path):
    import yaml

    from hpsearch.study.validate import load_study_config

    cfg = load_study_config(_study_file(tmp_path, "skl", 2))
    assert yaml.safe_load(L.worker_study_yaml(cfg))["data"]["source"] == "sklearn:iris"


def test_worker_study_yaml_gives_a_csv_absolute_and_an_s3_folder_as_its_url(tmp_path, monkeypatch):
    """Workers launched by ``run --workers`` get a file as its absolute path, and an s3:// folder as
    the URL (each checks its own copy and prints its fetch line): nothing is fetched to write it."""
    import yaml

    from hpsearch.data.sources import s3folder
    from hpsearch.study.validate import load_study_config

    monkeypatch.setattr(s3folder, "fetch_prefix", lambda *a, **k: pytest.fail("fetched to write a study file"))
    base = _study_file(tmp_path, "s3", 2).read_text()
    (tmp_path / "rows.csv").write_text("a,b,y\n1,2,0\n3,4,1\n")
    csv = base.replace('source: "sklearn:iris"\n  max_rows: 150', 'source: rows.csv\n  target: y')
    (tmp_path / "csv.yaml").write_text(csv)
    given = yaml.safe_load(L.worker_study_yaml(load_study_config(tmp_path / "csv.yaml")))["data"]["source"]
    assert given == str((tmp_path / "rows.csv").absolute())
    s3 = base.replace('source: "sklearn:iris"\n  max_rows: 150', 'source: "s3://bucket/images/"')
    (tmp_path / "s3.yaml").write_text(s3)
    given = yaml.safe_load(L.worker_study_yaml(load_study_config(tmp_path / "s3.yaml")))["data"]["source"]
    assert given == "s3://bucket/images/"


# ==================================================================================================
# Refusals
# ==================================================================================================


def test_sqlite_refuses_several_workers_in_one_line(tmp_path, capsys, fast_heartbeat):
    study = _study_file(tmp_path, "sq", 2)
    db = tmp_path / "h.db"
    code = main(["run", str(study), "--workers", "2", "--storage", f"sqlite:///{db}", "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "PostgreSQL" in err and "postgresql+psycopg://" in err
    assert not db.exists()


def test_non_optuna_engine_refused(tmp_path, postgres_url, fast_heartbeat):
    study = _study_file(tmp_path, "rnd", 2)
    study.write_text(study.read_text().replace("engine: optuna, sampler: random, pruner: none, ", "engine: random, "))
    with pytest.raises(UserError, match="engine optuna only"):
        L.run_workers(study, storage=postgres_url, n_workers=2)


# ==================================================================================================
# The exact global budget (storage-side reservation), without Keras: threads race on PostgreSQL
# ==================================================================================================


def test_budget_is_exact_when_many_workers_race(postgres_url, monkeypatch):
    """Five workers race for the last slots; a delay between counting and ask() widens the window
    that MaxTrialsCallback-style counting loses (without the lock this creates surplus trials)."""
    n_trials, n_workers = 15, 5
    counts = B.Budget.counts

    def slow_counts(self):
        res = counts(self)
        time.sleep(0.05)
        return res

    monkeypatch.setattr(B.Budget, "counts", slow_counts)
    st0 = open_storage(postgres_url, workers=n_workers)
    optuna.create_study(study_name="race", storage=st0)
    made: list[int] = []
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            st = open_storage(postgres_url, workers=n_workers, heartbeat=True, heartbeat_interval=1, grace_period=3)
            study = optuna.load_study(study_name="race", storage=st)
            budget = B.Budget(study, st, postgres_url, st.get_study_id_from_name("race"), n_trials)
            while True:
                trial, finished = budget.reserve()
                if trial is None:
                    if finished:
                        return
                    time.sleep(0.01)
                    continue
                made.append(trial.number)
                x = trial.suggest_float("x", 0, 1)
                time.sleep(0.005)
                study.tell(trial, x)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(n_workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    trials = optuna.load_study(study_name="race", storage=st0).trials
    print(f"\nbudget race: workers: {n_workers}, trials created: {len(trials)}, "
          f"COMPLETE: {sum(t.state == TrialState.COMPLETE for t in trials)} of {n_trials}")
    assert len(trials) == n_trials and len(made) == n_trials
    assert all(t.state == TrialState.COMPLETE for t in trials)
    assert sorted(t.number for t in trials) == list(range(n_trials))


def test_spawned_worker_environment_and_argv(tmp_path, postgres_url, fast_heartbeat, monkeypatch, spawned):
    """--gpus 0,1 --per-gpu 2: four workers, two per GPU, each with its memory settings; the password
    is in PGPASSWORD only. Popen is replaced, so no GPU (and no TensorFlow) is needed."""

    study = _study_file(tmp_path, "envs", 2)
    seen = spawned
    monkeypatch.setenv("HPSEARCH_STORAGE", postgres_url)  # the password must not leak through it either
    with pytest.raises(StudyFailedError):  # the fake workers ran nothing
        L.run_workers(study, storage=postgres_url, artifacts=str(tmp_path / "art"), gpus="0,1", per_gpu=2)
    assert len(seen) == 4
    assert [env["CUDA_VISIBLE_DEVICES"] for _, env in seen] == ["0", "1", "0", "1"]
    for cmd, env in seen:
        assert "s3cr" not in " ".join(cmd)
        assert env["PGPASSWORD"] == "s3cr:t@pw/%?#&"
        assert "HPSEARCH_STORAGE" not in env
        assert env["TF_FORCE_GPU_ALLOW_GROWTH"] == "true" and env["XLA_PYTHON_CLIENT_PREALLOCATE"] == "false"
        assert float(env["XLA_PYTHON_CLIENT_MEM_FRACTION"]) == pytest.approx(0.45)
        assert env[P.MANAGED_ENV] == "1" and env[C.PARENT_ENV] == str(os.getpid())
        a = build_parser().parse_args(cmd[3:])
        assert a.command == "worker" and a.storage.endswith(postgres_url.rsplit("@", 1)[1])


def test_exported_pgpassword_reaches_the_workers(tmp_path, postgres_server, postgres_url, fast_heartbeat,
                                                monkeypatch, spawned):
    """The README's recipe: `export PGPASSWORD=...` and a URL without a password. The workers get
    the password through their environment (never argv)."""

    bare, extra = child_env_and_url(postgres_url)
    monkeypatch.setenv("PGPASSWORD", extra["PGPASSWORD"])
    study = _study_file(tmp_path, "pgpw", 2)
    seen = spawned
    with pytest.raises(StudyFailedError):  # the fake workers ran nothing
        L.run_workers(study, storage=bare, artifacts=str(tmp_path / "art"), n_workers=2)
    assert len(seen) == 2
    for cmd, env in seen:
        assert env["PGPASSWORD"] == postgres_server.password
        assert postgres_server.password not in " ".join(cmd)


# ==================================================================================================
# End to end with real worker processes
# ==================================================================================================


def test_run_workers_cli_exact_budget_no_secret_anywhere(tmp_path, postgres_url, fast_heartbeat, capfd,
                                                          monkeypatch):
    study = _study_file(tmp_path, "e2e", 4)
    pw = "s3cr:t@pw/%?#&"
    cmdlines: list[str] = []
    stop = threading.Event()

    def scan_process_list() -> None:  # the process list while the workers run
        while not stop.is_set():
            for d in Path("/proc").iterdir():
                if d.name.isdigit():
                    with contextlib.suppress(OSError):
                        cmdlines.append((d / "cmdline").read_bytes().replace(b"\0", b" ").decode())
            time.sleep(0.2)

    scanner = threading.Thread(target=scan_process_list, daemon=True)
    scanner.start()
    monkeypatch.chdir(tmp_path)
    try:
        code = main(["run", str(study), "--workers", "2", "--storage", postgres_url, "--artifacts",
                     str(tmp_path / "art"), "--json"])
    finally:
        stop.set()
        scanner.join()
    out, err = capfd.readouterr()
    assert code == 0, err[-2000:]
    res = json.loads(out.strip().splitlines()[-1])
    assert res["n_complete"] == 4 and res["test_score"] is not None
    workers_seen = [c for c in cmdlines if "hpsearch worker" in c]
    assert workers_seen, "the scan never saw a worker process"
    quoted = __import__("urllib.parse").parse.quote(pw, safe="")
    for text in (out, err, *cmdlines):
        assert pw not in text and quoted not in text
    study_obj = _load(postgres_url, "e2e")
    trials = study_obj.trials
    assert [t.state for t in trials].count(TrialState.COMPLETE) == 4 and len(trials) == 4
    running = sum(1 for t in trials if t.state == TrialState.RUNNING)
    print(f"\nworkers: 2, killed: 0, trials lost: 0, run twice: 0, stranded RUNNING: {running}, "
          f"COMPLETE: {res['n_complete']} of 4, trials created: {len(trials)}")
    stored = json.dumps([study_obj.user_attrs, [t.user_attrs for t in trials], [t.system_attrs for t in trials]],
                        default=str)
    assert pw not in stored and quoted not in stored


def test_sigkill_mid_trial_is_requeued_and_completed(tmp_path, postgres_url, fast_heartbeat, monkeypatch):
    events = fast_heartbeat
    n_trials = 4
    monkeypatch.setenv("HPSEARCH_TEST_SLEEP", "1.5")
    study = _study_file(tmp_path, "kill", n_trials, builder="tests.worker_builders:build_traced")
    pids: list[int] = []
    result: dict = {}

    def parent() -> None:
        try:
            result["res"] = L.run_workers(study, storage=postgres_url, artifacts=str(tmp_path / "art"),
                                          n_workers=2, on_spawn=pids.extend)
        except BaseException as exc:  # noqa: BLE001
            result["exc"] = exc

    th = threading.Thread(target=parent)
    th.start()
    _wait_for(lambda: any(events.glob("started-*")), 120, "a trial to start")
    victim_file = sorted(events.glob("started-*"))[0]
    victim = int(victim_file.name.split("-")[1])
    assert victim in pids
    os.kill(victim, signal.SIGKILL)
    th.join(240)
    assert not th.is_alive()
    assert "exc" not in result, result.get("exc")
    study_obj = _load(postgres_url, "kill")
    s = _summary(study_obj, _executions(events), n_trials, workers=2, killed=1)
    assert s["complete"] == n_trials and s["lost"] == 0 and s["twice"] == 0 and s["running"] == 0
    failed = [t for t in study_obj.trials if t.state == TrialState.FAIL]
    assert len(failed) == 1 and failed[0].user_attrs["worker"].endswith(f":{victim}")
    retry = [t for t in study_obj.trials if t.system_attrs.get("failed_trial") == failed[0].number]
    assert len(retry) == 1 and retry[0].state == TrialState.COMPLETE
    assert retry[0].params == failed[0].params
    assert result["res"].n_complete == n_trials and result["res"].test_score is not None


def test_sigterm_stops_gracefully_and_requeues(tmp_path, sqlite_url, fast_heartbeat, monkeypatch):
    """One standalone worker on SQLite: SIGTERM in the middle of a trial -> exit 0, trial FAIL with the
    reason and re-queued WAITING, nothing RUNNING. A second worker then finishes the study exactly."""
    events = fast_heartbeat
    monkeypatch.setenv("HPSEARCH_TEST_SLEEP", "3")
    n_trials = 2
    study = _study_file(tmp_path, "term", n_trials, builder="tests.worker_builders:build_traced")
    cmd = [sys.executable, "-m", "hpsearch", "worker", str(study), "--storage", sqlite_url,
           "--artifacts", str(tmp_path / "art"), "--no-progress"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=tmp_path)
    try:
        _wait_for(lambda: any(events.glob("started-*")) or proc.poll() is not None, 120, "a trial to start")
        assert proc.poll() is None, proc.stdout.read().decode()
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=30)
        stop_time = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
    out = proc.stdout.read().decode()
    assert code == 0, out
    assert stop_time < 20
    study_obj = _load(sqlite_url, "term")
    states = [t.state for t in study_obj.trials]
    assert TrialState.RUNNING not in states
    failed = [t for t in study_obj.trials if t.state == TrialState.FAIL]
    assert len(failed) == 1 and failed[0].user_attrs["failure_reason"].startswith("worker stopped (SIGTERM)")
    waiting = [t for t in study_obj.trials if t.state == TrialState.WAITING]
    assert len(waiting) == 1 and waiting[0].params == failed[0].params

    monkeypatch.setenv("HPSEARCH_TEST_SLEEP", "0")
    proc2 = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=180)
    assert proc2.returncode == 0, proc2.stderr[-2000:]
    study_obj = _load(sqlite_url, "term")
    s = _summary(study_obj, _executions(events), n_trials, workers=1, killed=0, stopped=1)
    assert s["complete"] == n_trials and s["lost"] == 0 and s["twice"] == 0 and s["running"] == 0
    assert study_obj.user_attrs.get("test_score") is not None  # a standalone worker finalizes


def test_postgres_restart_mid_run_loses_nothing(tmp_path, postgres_server, postgres_url, fast_heartbeat,
                                                monkeypatch):
    events = fast_heartbeat
    monkeypatch.setenv("HPSEARCH_TEST_SLEEP", "1")
    n_trials = 3
    study = _study_file(tmp_path, "restart", n_trials, builder="tests.worker_builders:build_traced")
    bare = postgres_server.url(postgres_url.rsplit("/", 1)[1], password=False)
    cmd = [sys.executable, "-m", "hpsearch", "worker", str(study), "--storage", bare,
           "--artifacts", str(tmp_path / "art"), "--no-progress"]
    env = dict(os.environ, PGPASSWORD=postgres_server.password)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=tmp_path, env=env)
    try:
        _wait_for(lambda: len(list(events.glob("started-*"))) >= 2 or proc.poll() is not None, 150,
                  "the second trial to start")
        assert proc.poll() is None, proc.stdout.read().decode()
        before = [t.number for t in _load(postgres_url, "restart").trials if t.state == TrialState.COMPLETE]
        postgres_server.restart(mode="fast", down_for=2.5)
        code = proc.wait(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
        postgres_server.start()
    out = proc.stdout.read().decode()
    assert postgres_server.password not in out
    assert "Traceback" not in out, out[-3000:]
    study_obj = _load(postgres_url, "restart")
    complete = [t.number for t in study_obj.trials if t.state == TrialState.COMPLETE]
    assert set(before) <= set(complete)  # nothing completed is lost
    if code != 0:  # allowed: a clear one-line message, then a rerun finishes the study
        assert "storage" in out and "hpsearch" in out, out
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, env=env, timeout=180)
        assert proc.returncode == 0, proc.stderr[-2000:]
        study_obj = _load(postgres_url, "restart")
    print(f"\npostgres restart: worker {'reconnected, exit 0' if code == 0 else f'exit {code} with a message'}")
    s = _summary(study_obj, _executions(events), n_trials, workers=1, killed=0)
    assert s["complete"] == n_trials and s["lost"] == 0 and s["twice"] == 0 and s["running"] == 0


@pytest.mark.gpu
@pytest.mark.skipif(not Path("/dev/nvidiactl").exists(), reason="needs an NVIDIA GPU")
def test_two_workers_share_one_gpu(tmp_path, postgres_url, fast_heartbeat):  # pragma: no cover - GPU only
    study = _study_file(tmp_path, "gpu", 4)
    res = L.run_workers(study, storage=postgres_url, artifacts=str(tmp_path / "art"), gpus="0", per_gpu=2)
    assert res.n_complete == 4


def test_ctrl_c_on_one_process_run_requeues_like_a_worker(tmp_path, sqlite_url, fast_heartbeat, monkeypatch):
    """`hpsearch run` without --workers runs the workers' trial loop: SIGINT mid-trial -> exit 130,
    the trial FAIL with its reason and re-queued; the next `run` runs the copy and meets the budget."""
    events = fast_heartbeat
    monkeypatch.setenv("HPSEARCH_TEST_SLEEP", "3")
    study = _study_file(tmp_path, "intr", 2, builder="tests.worker_builders:build_traced")
    cmd = [sys.executable, "-m", "hpsearch", "run", str(study), "--storage", sqlite_url,
           "--artifacts", str(tmp_path / "art"), "--no-progress"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=tmp_path)
    try:
        _wait_for(lambda: any(events.glob("started-*")) or proc.poll() is not None, 120, "a trial to start")
        assert proc.poll() is None, proc.stdout.read().decode()
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    out = proc.stdout.read().decode()
    assert code == 130 and "interrupted" in out and "Traceback" not in out, out
    study_obj = _load(sqlite_url, "intr")
    failed = [t for t in study_obj.trials if t.state == TrialState.FAIL]
    assert len(failed) == 1 and failed[0].user_attrs["failure_reason"].startswith("worker stopped (SIGINT)")
    waiting = [t for t in study_obj.trials if t.state == TrialState.WAITING]
    assert len(waiting) == 1 and waiting[0].params == failed[0].params

    monkeypatch.setenv("HPSEARCH_TEST_SLEEP", "0")
    again = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=180)
    assert again.returncode == 0, again.stderr[-2000:]
    study_obj = _load(sqlite_url, "intr")
    s = _summary(study_obj, _executions(events), 2, workers=1, killed=0, stopped=1)
    assert s["complete"] == 2 and s["lost"] == 0 and s["twice"] == 0 and s["running"] == 0
    copy = next(t for t in study_obj.trials if t.system_attrs.get("failed_trial") == failed[0].number)
    assert copy.state == TrialState.COMPLETE and copy.user_attrs.get("failure_reason") is None


# ==================================================================================================
# One copy per interrupted trial, whichever process sees it (no Keras)
# ==================================================================================================


def test_stale_check_and_owner_requeue_one_copy_with_a_reason(postgres_url):
    """After an outage longer than the grace period both the stale check of another process and
    the trial's own process end the same trial: one FAIL with the heartbeat reason, one copy."""
    from types import SimpleNamespace

    from hpsearch.execution import requeue as R
    st = open_storage(postgres_url, workers=2, heartbeat=True, heartbeat_interval=1, grace_period=2)
    study = optuna.create_study(study_name="once", storage=st)
    ctx = SimpleNamespace(storage=st, study=study, storage_url=postgres_url)
    study_id = st.get_study_id_from_name("once")
    trial = study.ask()
    trial.suggest_float("x", 0, 1)
    tid = st.get_trial_id_from_study_id_trial_number(study_id, trial.number)
    st.record_heartbeat(tid)
    time.sleep(3.2)
    results: list[int] = []
    threads = [threading.Thread(target=lambda: results.append(R.fail_stale(ctx, study_id))) for _ in range(3)]
    for t in threads:
        t.start()
    R.end_interrupted(ctx, tid, "storage connection lost during the trial")
    for t in threads:
        t.join(30)
    R.end_interrupted(ctx, tid, "storage connection lost during the trial")  # a retried call
    trials = study.trials
    waiting = [t for t in trials if t.state == TrialState.WAITING]
    assert len(waiting) == 1 and waiting[0].params == trial.params
    failed = st.get_trial(tid)
    assert failed.state == TrialState.FAIL and sum(results) <= 1
    # the reason is one of the two enders': the attribute and the state are two writes, so the last
    # reason written before the state change stays, whichever process changed the state
    assert failed.user_attrs["failure_reason"] in (R.HEARTBEAT_LOST, "storage connection lost during the trial")


def test_progress_counts_failed_trials_shown_not_done(capsys):
    from hpsearch.console import ConsoleProgress

    p = ConsoleProgress("s", total=2)
    p.begin(0, None)
    for n in range(3):
        p.trial_done(n, "FAIL", None, "ValueError: x")
    p.trial_done(3, "COMPLETE", 0.5)
    p.end()
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 4 and all("(0/2 done" in line for line in err[:3]) and "(1/2 done" in err[3], err
