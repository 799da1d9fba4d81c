"""The ``hpsearch`` command line: thin — parse, call the library, print, return an exit code.

A user mistake (:class:`~hpsearch.errors.UserError`) is one line on stderr and exit code 2; no
traceback. ``main(argv)`` returns the code so tests run the CLI in-process.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, NoReturn, Optional, Sequence

from hpsearch.errors import HPSearchError, UserError

__all__ = ["main", "main_entry", "build_parser"]


def _quiet_backend(load_backend: bool = True) -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("KERAS_BACKEND", os.environ.get("KERAS_BACKEND", "tensorflow"))
    import logging
    import warnings

    warnings.filterwarnings("ignore", category=UserWarning, module="keras")
    logging.getLogger("absl").setLevel(logging.ERROR)
    if load_backend and os.environ.get("KERAS_BACKEND", "tensorflow") == "tensorflow" and "tensorflow" not in sys.modules:
        _import_silently("tensorflow")
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # Optuna's per-trial "failed with value/exception" lines are shown by our own progress output
    optuna.logging.disable_propagation()


def _import_silently(module: str) -> None:
    """Import a module with fd 2 pointed at /dev/null: TensorFlow's C++ start-up lines are written
    before its log level applies. Errors still surface (as the exception, after stderr is back)."""
    import importlib

    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        importlib.import_module(module)
    except ImportError:
        pass  # the real import later reports it with a readable message
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (no usage block): ``hpsearch: error: ...; see --help``."""

    def error(self, message: str) -> "NoReturn":  # type: ignore[override]
        sys.stderr.write(f"hpsearch: error: {message}; see '{self.prog} --help'\n")
        sys.exit(2)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="hpsearch", description="Hyperparameter search for Keras models.")
    p.add_argument("--version", action="store_true", help="print the version and exit")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    def storage_args(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--storage", help="database URL (default: $HPSEARCH_STORAGE, the study file, sqlite:///hpsearch.db)")
        sp.add_argument("--artifacts", help="artifact store: a folder or s3://bucket/prefix (default: beside the SQLite file)")

    r = sub.add_parser("run", help="run a study file to its budget and print the result")
    r.add_argument("study", help="study file (YAML)")
    storage_args(r)
    r.add_argument("--resume", action="store_true", help="continue an interrupted scikit-learn-engine study")
    r.add_argument("--n-trials", type=int, help="override search.n_trials")
    r.add_argument("--epochs", type=int, help="override train.epochs")
    r.add_argument("--workers", type=int, default=1, help="worker processes on one study (PostgreSQL for > 1)")
    r.add_argument("--gpus", help="GPU ids to pin workers to, e.g. 0,1")
    r.add_argument("--per-gpu", type=int, default=1, help="workers per listed GPU")
    r.add_argument("--no-progress", action="store_true", help="no progress bar / per-trial lines")
    r.add_argument("--json", action="store_true", help="print the result as JSON")
    r.add_argument("--top", type=int, default=10, help="rows in the result table")

    w = sub.add_parser("worker", help="join a running study as one worker process")
    w.add_argument("study", help="study file (YAML)")
    storage_args(w)
    w.add_argument("--n-trials", type=int, help="override search.n_trials (the global budget)")
    w.add_argument("--epochs", type=int, help="override train.epochs")
    w.add_argument("--no-progress", action="store_true")

    v = sub.add_parser("validate", help="check a study file (and its data) without running it")
    v.add_argument("study", nargs="+", help="study file(s)")
    v.add_argument("--no-data", action="store_true", help="check the file only, do not load the data")

    s = sub.add_parser("status", help="studies in the storage, or one study's top trials")
    s.add_argument("study", nargs="?", help="study name")
    storage_args(s)
    s.add_argument("--top", type=int, default=10)
    s.add_argument("--json", action="store_true")

    b = sub.add_parser("best", help="the best trial of a study: params, scores, where the model is")
    b.add_argument("study", help="study name")
    storage_args(b)
    b.add_argument("--export", metavar="PATH", help="write the best model to PATH (.keras) and its preprocessing beside it")
    b.add_argument("--json", action="store_true")

    rp = sub.add_parser("report", help="plots and tables of a study (PNG + index.html)")
    rp.add_argument("study", help="study name")
    storage_args(rp)
    rp.add_argument("-o", "--output", required=True, help="output folder")

    d = sub.add_parser("dashboard", help="start optuna-dashboard on the study database")
    d.add_argument("storage_pos", nargs="?", metavar="STORAGE", help="database URL (default as for --storage)")
    storage_args(d)
    d.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1; the dashboard has no authentication)")
    d.add_argument("--port", type=int, default=8080)
    return p


def _fmt(v: Any, digits: int = 4) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}g}" if abs(v) < 1e-3 and v != 0 else f"{v:.{digits}f}"
    return str(v)


def _fmt_params(params: dict[str, Any]) -> str:
    return ", ".join(f"{k}={_fmt(v, 3) if isinstance(v, float) else v}" for k, v in params.items())


def print_result(res: Any, top: int) -> None:
    from rich.console import Console
    from rich.table import Table

    probe = Console()
    # a terminal keeps its width; a pipe or log file gets room for one row per trial
    con = Console(width=probe.width if probe.is_terminal else 160)
    if res.already_complete:
        con.print(f"study {res.study_name} is complete ({res.n_complete} complete, {res.n_pruned} pruned,"
                  f" {res.n_failed} failed trials); nothing to run. Results:")
    table = Table(title=f"{res.study_name} — {res.engine} — {res.metric} ({res.direction})")
    names = list(dict.fromkeys(k for row in res.rows[:top] for k in row["params"]))
    rows = res.rows[:top]
    with_std = any(r["std"] is not None for r in rows)  # CV engines: the spread over folds
    cols = ["rank", "trial", *names, f"mean {res.metric}" if with_std else res.metric,
            *(["std"] if with_std else []), "fit time (s)", "epochs", "state"]
    for col in cols:
        table.add_column(col, overflow="fold")
    for row in rows:
        state = row["state"] + (f": {row['reason'][:60]}" if row.get("reason") else "")
        table.add_row(_fmt(row["rank"]), str(row["number"]), *(_fmt(row["params"].get(n), 3) for n in names),
                      _fmt(row["value"]), *([_fmt(row["std"])] if with_std else []), _fmt(row["fit_time"], 1),
                      _fmt(row["epochs"]), state)
    con.print(table)
    con.print(f"trials: {res.n_complete} complete, {res.n_pruned} pruned, {res.n_failed} failed; wall time {res.wall_time:.1f} s")
    con.print(f"best trial {res.best_trial}: {res.metric} {_fmt(res.best_value)} with {_fmt_params(res.best_params)}")
    if res.test_score is not None:
        extra = ", ".join(f"{k} {_fmt(v)}" for k, v in res.test_metrics.items() if k != res.metric)
        con.print(f"test {res.metric}: {_fmt(res.test_score)}" + (f" ({extra})" if extra else "") +
                  " — best model on the held-out test split")
    con.print(f"storage: {res.storage}   load it: hpsearch.load_best({res.study_name!r}, storage=...)")


def cmd_run(a: argparse.Namespace) -> int:
    if a.workers < 1 or a.per_gpu < 1:
        raise UserError("--workers and --per-gpu must be >= 1; give 1 or more")
    if a.workers > 1 or a.gpus:
        from hpsearch.workers import run_workers

        res = run_workers(a.study, storage=a.storage, artifacts=a.artifacts, n_workers=a.workers, gpus=a.gpus,
                          per_gpu=a.per_gpu, n_trials=a.n_trials, epochs=a.epochs, progress=not a.no_progress)
    else:
        from hpsearch.study import run_study

        res = run_study(a.study, storage=a.storage, artifacts=a.artifacts, resume=a.resume, n_trials=a.n_trials,
                        epochs=a.epochs, progress=not (a.no_progress or a.json))
    if a.json:
        print(json.dumps(res.to_dict(), default=str))
    else:
        print_result(res, a.top)
    return 0


def cmd_worker(a: argparse.Namespace) -> int:
    from hpsearch.workers import run_worker

    return run_worker(a.study, storage=a.storage, artifacts=a.artifacts, n_trials=a.n_trials, epochs=a.epochs,
                      progress=not a.no_progress)


def cmd_validate(a: argparse.Namespace) -> int:
    from hpsearch.config import load_study_config

    for path in a.study:
        cfg = load_study_config(path)
        msg = f"{path}: ok (study {cfg.name}, engine {cfg.search.engine}, {len(cfg.space)} parameters"
        if not a.no_data:
            from hpsearch.data import prepare_data

            data = prepare_data(cfg)
            s = data.summary
            msg += f"; data {s['rows']} rows x {s['features']} features, {data.task}"
            if data.task == "classification":
                msg += f", {data.n_classes} classes"
        print(msg + ")")
    return 0


def cmd_status(a: argparse.Namespace) -> int:
    from hpsearch.report import print_status

    return print_status(storage=a.storage, study=a.study, top=a.top, as_json=a.json)


def cmd_best(a: argparse.Namespace) -> int:
    from hpsearch.report import print_best

    return print_best(a.study, storage=a.storage, artifacts=a.artifacts, export=a.export, as_json=a.json)


def cmd_report(a: argparse.Namespace) -> int:
    from hpsearch.report import write_report

    files = write_report(a.study, a.output, storage=a.storage, artifacts=a.artifacts)
    for f in files:
        print(f)
    return 0


def cmd_dashboard(a: argparse.Namespace) -> int:
    from hpsearch.dashboard import run_dashboard

    return run_dashboard(storage=a.storage_pos or a.storage, artifacts=a.artifacts, host=a.host, port=a.port)


COMMANDS = {"run": cmd_run, "worker": cmd_worker, "validate": cmd_validate, "status": cmd_status,
            "best": cmd_best, "report": cmd_report, "dashboard": cmd_dashboard}


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    try:
        a = parser.parse_args(argv)
    except SystemExit as e:  # _Parser already printed its one-line error
        return int(e.code or 0) if e.code in (0, None) else 2
    if a.version:
        from hpsearch import __version__

        print(f"hpsearch {__version__}")
        return 0
    if not a.command:
        parser.print_help()
        return 2
    if a.command != "validate":
        # TensorFlow only where models are built or loaded: status/dashboard stay fast
        _quiet_backend(load_backend=a.command in ("run", "worker", "report")
                       or (a.command == "best" and bool(a.export)))
    try:
        return COMMANDS[a.command](a)
    except UserError as e:
        print(f"hpsearch: error: {e}", file=sys.stderr)
        return 2
    except HPSearchError as e:
        print(f"hpsearch: {e}", file=sys.stderr)
        return getattr(e, "exit_code", 1)
    except KeyboardInterrupt:
        print("hpsearch: interrupted; finished trials are stored (rerun with --resume to continue)", file=sys.stderr)
        return 130


def main_entry() -> None:
    sys.exit(main())
