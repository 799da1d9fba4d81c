"""The ``hpsearch`` command line: thin — parse, call the library, render through
:mod:`hpsearch.console`, return an exit code.

A user mistake (:class:`~hpsearch.errors.UserError`) is one line on stderr and exit code 2; no
traceback. ``main(argv)`` returns the code so tests run the CLI in-process. Importing this module
loads no TensorFlow, Keras, Optuna or scikit-learn: each command imports what it needs.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from hpsearch import console
from hpsearch.console import ConsoleProgress
from hpsearch.errors import HPSearchError, UserError

__all__ = ["build_parser", "main", "main_entry"]


def _quiet_backend(load_backend: bool = True) -> None:
    """Keep TensorFlow's and Optuna's own log lines off the user's terminal (ours say it better)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("KERAS_BACKEND", os.environ.get("KERAS_BACKEND", "tensorflow"))
    import logging
    import warnings

    warnings.filterwarnings("ignore", category=UserWarning, module="keras")
    logging.getLogger("absl").setLevel(logging.ERROR)
    logging.getLogger("tensorflow").setLevel(logging.ERROR)  # e.g. retracing notes when several models predict
    tensorflow = os.environ.get("KERAS_BACKEND", "tensorflow") == "tensorflow"
    if load_backend and tensorflow and "tensorflow" not in sys.modules:
        _import_silently("tensorflow")
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)  # we use stable parts
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

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"hpsearch: error: {message}; see '{self.prog} --help'\n")
        sys.exit(2)


def _finder_parsers(sub: argparse._SubParsersAction) -> None:
    """``lr-find`` and ``batch-find``: the training-advice tools that read a study file."""
    lf = sub.add_parser("lr-find", help="learning-rate range test of a study: suggested rate, range and a PNG")
    lf.add_argument("study", help="study file (YAML)")
    lf.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                    help="a parameter for the test (searched ones default to the middle of their range)")
    lf.add_argument("-o", "--output", default=".", help="folder for the PNG (default: here)")
    lf.add_argument("--steps", type=_positive, default=200, help="training steps of the test")
    lf.add_argument("--json", action="store_true")

    bf = sub.add_parser("batch-find", help="the largest batch size that fits the device (CPU: the fastest)")
    bf.add_argument("study", help="study file (YAML)")
    bf.add_argument("--max-batch", type=int, help="largest size to try (default: the training rows)")
    bf.add_argument("--device", default="auto", choices=["auto", "cpu", "gpu"])
    bf.add_argument("--json", action="store_true")


def _tracking_parser(sub: argparse._SubParsersAction, storage_args: Any) -> None:
    x = sub.add_parser("export-tracking", help="write a stored study to MLflow and/or TensorBoard")
    x.add_argument("study", help="study name")
    storage_args(x)
    x.add_argument("--mlflow", metavar="URI", help="MLflow tracking URI (trials already there are kept)")
    x.add_argument("--tensorboard", metavar="DIR", help="TensorBoard folder: DIR/<study>/trial-NNNN/")
    x.add_argument("--log-models", action="store_true",
                   help="with --mlflow: each stored trial model as an artifact of its run (as tracking.log_models)")
    x.add_argument("--json", action="store_true")


def _best_parsers(sub: argparse._SubParsersAction, storage_args: Callable[[argparse.ArgumentParser], None]) -> None:
    """``best`` (with its repair, --refit) and ``delete``: one study's model and its removal."""
    b = sub.add_parser("best", help="the best trial of a study: params, scores, where the model is")
    b.add_argument("study", help="study name")
    storage_args(b)
    b.add_argument("--export", metavar="PATH",
                   help="write the best model to PATH (.keras) and its preprocessing beside it;"
                        " with --format, a folder PATH holding the model with its preprocessing inside")
    b.add_argument("--format", dest="fmt", choices=["keras", "saved_model", "onnx"],
                   help="serving format of --export: keras (model.keras), saved_model or onnx (model.onnx);"
                        " the artefact takes raw features")
    b.add_argument("--ensemble", type=int, metavar="K",
                   help="score the average of the K best stored models next to the single best")
    b.add_argument("--refit", action="store_true",
                   help="repair: train the best trial's configuration once more, store it and score it on test")
    b.add_argument("--json", action="store_true")

    de = sub.add_parser("delete", help="remove a study: its trials and every model and file it stored")
    de.add_argument("study", help="study name")
    storage_args(de)
    de.add_argument("--yes", action="store_true", help="delete (without it: say what would be deleted)")
    de.add_argument("--force", action="store_true", help="delete although trials are still running (a crashed run)")
    de.add_argument("--json", action="store_true")


def _positive(text: str) -> int:
    """An option that counts rows, passes or steps: a whole number of at least 1."""
    if not text.strip().isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {text!r}")
    return int(text)


def build_parser() -> argparse.ArgumentParser:
    """The command table (also used by the worker launcher's and compose file's tests)."""
    p = _Parser(prog="hpsearch", description="Hyperparameter search for Keras models.")
    p.add_argument("--version", action="store_true", help="print the version and exit")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    def storage_args(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--storage", help="database URL (default: $HPSEARCH_STORAGE, the study file, sqlite:///hpsearch.db)")
        sp.add_argument("--artifacts",
                        help="artifact store: a folder or s3://bucket/prefix (default: beside the SQLite file)")

    r = sub.add_parser("run", help="run a study file to its budget and print the result")
    r.add_argument("study", help="study file (YAML)")
    storage_args(r)
    r.add_argument("--resume", action="store_true", help="continue an interrupted scikit-learn-engine study")
    r.add_argument("--n-trials", type=int, help="override search.n_trials")
    r.add_argument("--epochs", type=int, help="override train.epochs")
    r.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override any field of the study file, e.g. --set data.split.test=0.2 (value read as YAML)")
    r.add_argument("--workers", type=int, default=1, help="worker processes on one study (PostgreSQL for > 1)")
    r.add_argument("--gpus", help="GPU ids to pin workers to, e.g. 0,1")
    r.add_argument("--per-gpu", type=int, default=1, help="workers per listed GPU")
    r.add_argument("--no-progress", action="store_true", help="no progress bar / per-trial lines")
    r.add_argument("--json", action="store_true", help="print the result as JSON")
    r.add_argument("--top", type=_positive, default=10, help="rows in the result table")

    w = sub.add_parser("worker", help="join a running study as one worker process")
    w.add_argument("study", nargs="?", help="study file (YAML); or give --study NAME instead")
    w.add_argument("--study", dest="study_name", metavar="NAME",
                   help="join the stored study NAME with no study file: its stored configuration and data snapshot")
    storage_args(w)
    w.add_argument("--n-trials", type=int, help="override search.n_trials (the global budget)")
    w.add_argument("--epochs", type=int, help="override train.epochs")
    w.add_argument("--gpus", help="claim one GPU slot of these ids through the study and pin to it: e.g. 0,1, or "
                   "auto (the GPUs this process sees); default $HPSEARCH_GPUS, else no pinning")
    w.add_argument("--no-progress", action="store_true")

    v = sub.add_parser("validate", help="check a study file (and its data) without running it")
    v.add_argument("study", nargs="+", help="study file(s)")
    v.add_argument("--no-data", action="store_true", help="check the file only, do not load the data")

    s = sub.add_parser("status", help="studies in the storage, or one study's top trials")
    s.add_argument("study", nargs="?", help="study name")
    storage_args(s)
    s.add_argument("--top", type=_positive, default=10)
    s.add_argument("--trial", type=int, metavar="N", help="one trial: its params, attributes and per-epoch history")
    s.add_argument("--json", action="store_true")
    _tracking_parser(sub, storage_args)

    _best_parsers(sub, storage_args)
    _finder_parsers(sub)
    pr = sub.add_parser("predict", help="predict a CSV file of raw rows with the study's best model")
    pr.add_argument("study", help="study name")
    pr.add_argument("data", help="CSV file of rows (the study's feature columns)")
    storage_args(pr)
    pr.add_argument("-o", "--output", required=True, help="CSV file to write")
    pr.add_argument("--mc", type=_positive, metavar="N", help="MC dropout: N passes; adds std (and entropy) columns")
    pr.add_argument("--json", action="store_true")

    rp = sub.add_parser("report", help="plots and tables of a study (PNG + index.html)")
    rp.add_argument("study", help="study name")
    storage_args(rp)
    rp.add_argument("-o", "--output", required=True, help="output folder")

    d = sub.add_parser("dashboard", help="start optuna-dashboard on the study database")
    d.add_argument("storage_pos", nargs="?", metavar="STORAGE", help="database URL (default as for --storage)")
    storage_args(d)
    d.add_argument("--host", default="127.0.0.1",
                   help="bind address (default 127.0.0.1; the dashboard has no authentication)")
    d.add_argument("--port", type=int, default=8080)
    return p


def _observer(enabled: bool) -> ConsoleProgress:
    """The progress display of a run: trial lines only when ``enabled``, warnings always."""
    return ConsoleProgress(enabled=enabled)


def cmd_run(a: argparse.Namespace) -> int:
    """Run a study file to its budget (one process, or N workers) and show the result."""
    if a.workers < 1 or a.per_gpu < 1:
        raise UserError("--workers and --per-gpu must be >= 1; give 1 or more")
    study = _run_config(a)
    if a.workers > 1 or a.gpus:
        from hpsearch.workers.launcher import run_workers

        res = run_workers(study, storage=a.storage, artifacts=a.artifacts, n_workers=a.workers, gpus=a.gpus,
                          per_gpu=a.per_gpu, n_trials=a.n_trials, epochs=a.epochs,
                          observer=_observer(not a.no_progress))
    else:
        from hpsearch.study.run import run_study

        res = run_study(study, storage=a.storage, artifacts=a.artifacts, resume=a.resume, n_trials=a.n_trials,
                        epochs=a.epochs, observer=_observer(not (a.no_progress or a.json)), handle_signals=True)
    if a.json:
        console.print_json(res.to_dict())
    else:
        console.print_result(res, a.top)
    return 0


def _overrides(a: argparse.Namespace) -> dict[str, object]:
    """run / worker: ``--n-trials``, ``--epochs`` (if given), (run) ``--set KEY=VALUE`` (null too) as overrides."""
    given = {"search.n_trials": a.n_trials, "train.epochs": a.epochs}
    return {**{k: v for k, v in given.items() if v is not None}, **_sets(getattr(a, "set", []))}


def _run_config(a: argparse.Namespace) -> Any:
    """The study to run: its file, or with ``--set`` the file's validated config with the overrides."""
    if not getattr(a, "set", None):
        return a.study
    from hpsearch.study.validate import load_study_config

    return load_study_config(a.study, _overrides(a))


def cmd_worker(a: argparse.Namespace) -> int:
    """Join a study as one worker process; 0 when its budget is met or it was stopped gracefully."""
    from hpsearch.workers.worker import run_worker

    if a.study_name is not None:
        from hpsearch.workers.join import join_study

        joined = join_study(a.study_name, a.storage, a.artifacts)
        run_worker(joined.cfg, storage=joined.storage, artifacts=joined.artifacts, n_trials=a.n_trials,
                   epochs=a.epochs, observer=_observer(not a.no_progress), gpus=a.gpu_slots, raws=joined.raws)
        return 0
    run_worker(a.study, storage=a.storage, artifacts=a.artifacts, n_trials=a.n_trials, epochs=a.epochs,
               observer=_observer(not a.no_progress), gpus=a.gpu_slots)
    return 0


def cmd_validate(a: argparse.Namespace) -> int:
    """Check study files (and, unless --no-data, their data); an ``ok`` line each."""
    from hpsearch.study.validate import load_study_config

    for path in a.study:
        cfg = load_study_config(path)
        data = None
        if not a.no_data:
            from hpsearch.data.prepare import check_input_rank, prepare_data
            from hpsearch.engines.base import get_engine
            from hpsearch.models.builders import resolve_builder

            data = prepare_data(cfg, get_engine(cfg.search.engine).cv_folds(cfg))
            check_input_rank(resolve_builder(cfg.model.builder), data)
        console.print_validated(path, cfg, data)
    return 0


def cmd_status(a: argparse.Namespace) -> int:
    """Every study in the storage, or one study's top trials."""
    from hpsearch.storage.queries import list_studies, study_status

    if a.trial is not None:
        return _trial_status(a)
    data = list_studies(a.storage) if a.study is None else study_status(a.study, a.storage, top=a.top)
    if a.json:
        console.print_json(data)
    elif a.study is None:
        console.print_studies(data)
    else:
        console.print_status(data)
    return 0


def _trial_status(a: argparse.Namespace) -> int:
    from hpsearch.storage.queries import trial_detail

    if a.study is None:
        raise UserError("status --trial N: give the study name too: hpsearch status STUDY --trial N")
    data = trial_detail(a.study, a.storage, a.trial)
    if a.json:
        console.print_json(data)
    else:
        console.print_trial(data)
    return 0


def cmd_export_tracking(a: argparse.Namespace) -> int:
    """A stored study written to MLflow / TensorBoard (what a run could not write is filled in)."""
    from hpsearch.tracking.export import export_tracking

    data = export_tracking(a.study, a.storage, mlflow=a.mlflow, tensorboard=a.tensorboard, log_models=a.log_models,
                           artifacts=a.artifacts)
    if a.json:
        console.print_json(data)
    else:
        console.print_tracking(data)
    return 0


def cmd_best(a: argparse.Namespace) -> int:
    """The best trial, where its model is; with --export, a copy of the model; --refit repairs it first."""
    from hpsearch.results.best import describe_best

    if a.refit:
        from hpsearch.results.repair import refit_best

        refit_best(a.study, storage=a.storage, artifacts=a.artifacts, observer=_observer(not a.json))

    info = describe_best(a.study, storage=a.storage, artifacts=a.artifacts, export=a.export, ensemble=a.ensemble,
                         fmt=a.fmt)
    if a.json:
        console.print_json(info)
    else:
        console.print_best(info)
    return 0


def cmd_delete(a: argparse.Namespace) -> int:
    """Remove a study and its artifacts (with --yes); without it, what would be removed."""
    from hpsearch.storage.delete import delete_study

    out = delete_study(a.study, storage=a.storage, artifacts=a.artifacts, yes=a.yes, force=a.force)
    if a.json:
        console.print_json(out)
    else:
        console.print_deleted(out)
    return 0


def cmd_report(a: argparse.Namespace) -> int:
    """Write the report folder; list its files."""
    from hpsearch.results.report import write_report

    console.print_files(write_report(a.study, a.output, storage=a.storage, artifacts=a.artifacts))
    return 0


def _sets(items: list[str]) -> dict[str, object]:
    """``--set name=value`` pairs, values read as YAML (``0.1``, ``relu``, ``true``, ``[8, 8, 1]``): the one
    rule for ``lr-find`` (a parameter's name) and ``run`` (a study file's dotted key)."""
    import yaml

    out: dict[str, object] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise UserError(f"--set {item}: expected NAME=VALUE, e.g. --set n_neurons=64")
        try:
            out[name.strip()] = yaml.safe_load(value)
        except yaml.YAMLError:
            raise UserError(f"--set {item}: the value is not YAML; quote it, e.g. --set {name.strip()}='...'"
                            ) from None
    return out


def cmd_lr_find(a: argparse.Namespace) -> int:
    """The range test: suggestion, range, and the figure's path."""
    from hpsearch.study.lrfind import lr_find

    info = lr_find(a.study, sets=_sets(a.set), output=a.output, steps=a.steps).summary()
    if a.json:
        console.print_json(info)
    else:
        end = f"diverged at {info['diverged_at']:.3g}" if info["diverged_at"] else "did not diverge"
        print(f"suggested learning_rate: {info['suggestion']:.3g} (loss lowest at {info['turn']:.3g}; {end})")
        print(f"suggested range: {{float: [{info['low']:.3g}, {info['high']:.3g}], log: true}}")
        print(f"figure: {info['figure']}")
    return 0


def cmd_batch_find(a: argparse.Namespace) -> int:
    """The batch-size finder: the size, why it stopped there, what it tried."""
    from hpsearch.study.batchfind import find_batch_size

    info = find_batch_size(a.study, max_batch=a.max_batch, device=a.device).summary()
    if a.json:
        console.print_json(info)
    else:
        print(f"batch_size: {info['batch_size']} ({info['reason']}, {info['device']})")
        for t in info["tried"]:
            rate = f"{t['samples_per_s']:.0f} samples/s" if t["fits"] else "out of memory"
            print(f"  {t['batch_size']:>7}  {rate}")
    return 0


def cmd_predict(a: argparse.Namespace) -> int:
    """Predict a file of rows with the best model (MC-dropout uncertainty with --mc)."""
    from hpsearch.results.predict import predict_file

    info = predict_file(a.study, a.data, a.output, mc=a.mc, storage=a.storage, artifacts=a.artifacts)
    if a.json:
        console.print_json(info)
    else:
        print(f"wrote {info['rows']} rows to {info['output']} ({', '.join(info['columns'])})")
    return 0


def cmd_dashboard(a: argparse.Namespace) -> int:
    """Serve optuna-dashboard until Ctrl-C."""
    from hpsearch.results.dashboard import open_dashboard

    dashboard = open_dashboard(storage=a.storage_pos or a.storage, artifacts=a.artifacts, host=a.host, port=a.port)
    console.print_dashboard(dashboard)
    dashboard.serve()
    console.print_dashboard_stopped()
    return 0


COMMANDS = {"run": cmd_run, "worker": cmd_worker, "validate": cmd_validate, "status": cmd_status,
            "best": cmd_best, "report": cmd_report, "dashboard": cmd_dashboard, "predict": cmd_predict,
            "lr-find": cmd_lr_find, "batch-find": cmd_batch_find, "delete": cmd_delete,
            "export-tracking": cmd_export_tracking}


def _refused(a: argparse.Namespace) -> bool:
    """run / worker: a bad study file, and a worker's malformed GPU list (``--gpus`` /
    ``$HPSEARCH_GPUS``), are one line and exit 2 before any backend loads (seconds, not after)."""
    from hpsearch.study.validate import load_study_config
    from hpsearch.workers.slots import resolve_slots

    try:
        if getattr(a, "study", None) is not None:
            load_study_config(a.study, _overrides(a))
        if a.command == "worker":
            a.gpu_slots = resolve_slots(a.gpus)
    except UserError as e:
        console.print_error(str(e))
        return True
    return False


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns the exit code (0 ok, 2 user error, 1 failed study, 130 Ctrl-C)."""
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
    if a.command == "worker" and (a.study is None) == (a.study_name is None):
        console.print_error("worker: give either a study file (hpsearch worker FILE) or a stored study's name"
                            " (hpsearch worker --study NAME --storage URL)")
        return 2
    if a.command in ("run", "worker") and _refused(a):
        return 2
    if a.command != "validate":
        # TensorFlow only where models are built or loaded: status/dashboard stay fast; a worker that
        # claims a GPU slot loads it after pinning itself (CUDA_VISIBLE_DEVICES first)
        _quiet_backend(load_backend=(a.command in ("run", "report", "predict", "lr-find", "batch-find"))
                       or (a.command == "worker" and not a.gpu_slots)
                       or (a.command == "best" and bool(a.export or a.ensemble or a.refit)))
    try:
        return COMMANDS[a.command](a)
    except UserError as e:
        console.print_error(str(e))
        return 2
    except HPSearchError as e:
        console.print_error(str(e), user=False)
        return int(getattr(e, "exit_code", 1))
    except KeyboardInterrupt:
        console.print_error("interrupted; finished trials are stored (run it again to continue; scikit-learn"
                            " engines: with --resume)", user=False)
        return 130


def main_entry() -> None:
    """The ``hpsearch`` console script."""
    sys.exit(main())
