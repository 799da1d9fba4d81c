"""Everything hpsearch shows on a terminal: the ``run`` result table, ``status`` and ``best``
tables, the report's file list, the dashboard's address, JSON for scripts and the progress display
of a running search. Library functions return data; this module (and ``cli.py``) prints it.

Tables go to stdout; progress and warnings to stderr, so ``--json`` output stays parseable.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from hpsearch.records import DONE_STATES, clean_attr, is_better
from hpsearch.results.formats import data_line, fmt_elapsed, fmt_number, fmt_params, fmt_value

if TYPE_CHECKING:  # pragma: no cover
    from hpsearch.data.prepare import PreparedData
    from hpsearch.results.dashboard import Dashboard
    from hpsearch.spec.config import StudyConfig
    from hpsearch.study.run import StudyResult

__all__ = [
    "NO_AUTH_WARNING",
    "ConsoleProgress",
    "print_best",
    "print_dashboard",
    "print_dashboard_stopped",
    "print_error",
    "print_files",
    "print_json",
    "print_result",
    "print_status",
    "print_studies",
    "print_validated",
]

#: ``run`` tables in a pipe or log file get this width: room for one row per trial
LOG_WIDTH = 160
#: ``status`` / ``best`` tables in a pipe get at least this width
PIPE_WIDTH = 120

NO_AUTH_WARNING = (
    "hpsearch: warning: the dashboard has no authentication; anyone who can reach {host}:{port} can read"
    " and change the studies (delete them, too). Bind to 127.0.0.1 and use an SSH tunnel if you can."
)


def _console(min_pipe_width: int = PIPE_WIDTH, pipe_width: int | None = None) -> Console:
    """stdout: a terminal keeps its width; a pipe is not squeezed into 80 columns."""
    con = Console()
    if con.is_terminal:
        return con
    return Console(width=pipe_width if pipe_width is not None else max(con.width, min_pipe_width))


def print_json(data: Any) -> None:
    """One JSON document on stdout (numpy values and NaN made JSON-safe)."""
    print(json.dumps(clean_attr(data), default=str))


def print_error(message: str, *, user: bool = True) -> None:
    """One line on stderr: ``hpsearch: error: ...`` for a user error, ``hpsearch: ...`` otherwise."""
    print(f"hpsearch: error: {message}" if user else f"hpsearch: {message}", file=sys.stderr)


# --------------------------------------------------------------------------------------------- run


def _result_table(res: StudyResult, top: int) -> Table:
    rows = res.rows[:top]
    names = list(dict.fromkeys(k for row in rows for k in row["params"]))
    with_std = any(r["std"] is not None for r in rows)  # CV engines: the spread over folds
    table = Table(title=f"{res.study_name} — {res.engine} — {res.metric} ({res.direction})")
    cols = ["rank", "trial", *names, f"mean {res.metric}" if with_std else res.metric,
            *(["std"] if with_std else []), "fit time (s)", "epochs", "state"]
    for col in cols:
        table.add_column(col, overflow="fold")
    for row in rows:
        state = row["state"] + (f": {row['reason'][:60]}" if row.get("reason") else "")
        table.add_row(fmt_value(row["rank"]), str(row["number"]),
                      *(fmt_value(row["params"].get(n), 3) for n in names), fmt_value(row["value"]),
                      *([fmt_value(row["std"])] if with_std else []), fmt_value(row["fit_time"], 1),
                      fmt_value(row["epochs"]), state)
    return table


def _print_front(con: Console, front: list[dict[str, Any]], objectives: list[Any]) -> None:
    """The Pareto front of a study of several objectives: trial, each objective's value, params
    (best first on the first objective)."""
    names = [o[0] if isinstance(o, (list, tuple)) else o for o in objectives]
    dirs = {o[0]: o[1] for o in objectives if isinstance(o, (list, tuple))}
    table = Table(title=f"Pareto front: {len(front)} trials")
    for col in ("trial", *(f"{n} ({dirs[n][:3]})" if n in dirs else n for n in names), "params"):
        table.add_column(col, overflow="fold")
    for r in front:
        values = [r["values"].get(n) for n in names]  # counts (n_params) as integers, not 1810.0000
        table.add_row(str(r["number"]), *(fmt_value(int(v) if isinstance(v, float) and v.is_integer() else v)
                                          for v in values), fmt_params(r["params"]))
    con.print(table)


def print_result(res: StudyResult, top: int = 10) -> None:
    """``hpsearch run``: the top trials of a :class:`hpsearch.study.run.StudyResult` and the best model."""
    con = _console(pipe_width=LOG_WIDTH)
    if res.already_complete:
        con.print(f"study {res.study_name} is complete ({res.n_complete} complete, {res.n_pruned} pruned,"
                  f" {res.n_failed} failed trials); nothing to run. Results:")
    con.print(_result_table(res, top))
    con.print(f"trials: {res.n_complete} complete, {res.n_pruned} pruned, {res.n_failed} failed;"
              f" wall time {res.wall_time:.1f} s")
    if res.stopped_by:
        con.print(f"ended by {res.stopped_by}")
    if res.front is not None:
        _print_front(con, res.front, res.objectives or [])
    con.print(f"best trial {res.best_trial}: {res.metric} {fmt_value(res.best_value)} with"
              f" {fmt_params(res.best_params)}")
    if res.test_score is not None:
        extra = ", ".join(f"{k} {fmt_value(v)}" for k, v in res.test_metrics.items() if k != res.metric)
        con.print(f"test {res.metric}: {fmt_value(res.test_score)}" + (f" ({extra})" if extra else "")
                  + " — best model on the held-out test split")
    con.print(f"storage: {res.storage}   load it: hpsearch.load_best({res.study_name!r}, storage=...)")


def print_validated(path: str, cfg: StudyConfig, data: PreparedData | None = None) -> None:
    """``hpsearch validate``: one ``ok`` line per study file (with its data when it was loaded)."""
    msg = f"{path}: ok (study {cfg.name}, engine {cfg.search.engine}, {len(cfg.space)} parameters"
    if data is not None:
        s = data.summary
        msg += f"; data {s['rows']} rows x {s['features']} features, {data.task}"
        if data.task == "classification":
            msg += f", {data.n_classes} classes"
    print(msg + ")")


# ------------------------------------------------------------------------------------------ status


def print_studies(data: dict[str, Any]) -> None:
    """``hpsearch status``: one row per study of :func:`hpsearch.storage.queries.list_studies`."""
    con = _console()
    shown, rows = data["storage"], data["studies"]
    if not rows:
        con.print(f"storage {shown} has no studies yet; start one with `hpsearch run FILE`")
        return
    table = Table(title=f"studies in {shown}")
    for col in ("study", "engine", "metric", "complete", "pruned", "failed", "running", "best", "test",
                "elapsed"):
        table.add_column(col, overflow="fold", justify="left" if col in ("study", "engine", "metric") else "right")
    for r in rows:
        metric = f"{r['metric'] or '-'} ({'max' if r['direction'] == 'maximize' else 'min'})"
        table.add_row(r["study"], r["engine"] or "-", metric, str(r["complete"]), str(r["pruned"]),
                      str(r["failed"]), str(r["running"]), fmt_number(r["best_value"]), fmt_number(r["test_score"]),
                      fmt_elapsed(r["elapsed_s"]))
    con.print(table)


def print_status(data: dict[str, Any]) -> None:
    """``hpsearch status NAME``: :func:`hpsearch.storage.queries.study_status` as lines and a trial table."""
    con = _console()
    metric = data["metric"] or "value"
    con.print(f"[bold]{data['study']}[/bold] — engine {data['engine'] or '-'}, {metric} ({data['direction']}),"
              f" storage {data['storage']}")
    if data.get("data_summary"):
        con.print("data: " + data_line(data["data_summary"]))
    con.print(f"trials: {data['complete']} complete, {data['pruned']} pruned, {data['failed']} failed,"
              f" {data['running']} running; elapsed {fmt_elapsed(data['elapsed_s'])}")
    if data.get("stop_reason"):
        con.print(f"ended by {data['stop_reason']}")
    for decision in (data.get("decisions") or {}).values():  # what hpsearch decided for the user
        con.print(f"decided: {decision['line']}")
    rows = data["trials"]
    table = Table(title=f"top {len(rows)} trials")
    for col in ("rank", "trial", "state", metric, "params", "epochs", "fit time (s)"):
        table.add_column(col, overflow="fold")
    for r in rows:
        state = r["state"] + (f": {r['reason'][:60]}" if r.get("reason") else "")
        table.add_row(fmt_value(r["rank"]), str(r["number"]), state, fmt_value(r["value"]), fmt_params(r["params"]),
                      fmt_value(r["epochs"]), fmt_value(r["fit_time"], 2))
    con.print(table)
    if data.get("front") is not None:
        _print_front(con, data["front"], data["objectives"])
    if data["best_value"] is not None:
        line = f"best trial {data['best_trial']}: {metric} {fmt_value(data['best_value'])}"
        if data["test_score"] is not None:
            line += f"; test {data.get('test_metric') or metric} {fmt_value(data['test_score'])}"
        con.print(line)
    if data.get("model_missing"):
        con.print(f"[bold red]the best trial {data['best_trial']} has no stored model[/bold red]: repair it with"
                  f" `hpsearch best {data['study']} --refit` (or `hpsearch run FILE --resume`)")


def print_deleted(out: dict[str, Any]) -> None:
    """``hpsearch delete``: what was (or, without --yes, would be) removed."""
    what = f"study {out['study']!r}: {out['trials']} trials and {out['artifacts']} stored files (models, curves)"
    if out["deleted"]:
        _console().print(f"deleted {what}")
    else:
        _console().print(f"would delete {what}; pass --yes to delete")


def print_trial(data: dict[str, Any]) -> None:
    """``hpsearch status NAME --trial N``: one trial and its per-epoch history as a table."""
    con = _console()
    values = ", ".join(fmt_value(v) for v in data["values"] or []) or "-"
    con.print(f"[bold]{data['study']}[/bold] trial {data['number']}: {data['state']}, value {values},"
              f" params {fmt_params(data['params'])}")
    for key in ("failure_reason", "pruned_at_epoch", "epochs_trained", "fit_time", "worker"):
        if data["user_attrs"].get(key) is not None:
            con.print(f"{key}: {fmt_value(data['user_attrs'][key])}")
    history = data["history"]
    if not history:
        con.print("no per-epoch history stored")
        return
    table = Table(title="history (every Keras metric per epoch)")
    table.add_column("epoch")
    for key in history:
        table.add_column(key)
    for i in range(max(len(v) for v in history.values())):
        table.add_row(str(i + 1), *(fmt_value(v[i]) if i < len(v) else "" for v in history.values()))
    con.print(table)


def print_tracking(data: dict[str, Any]) -> None:
    """``hpsearch export-tracking``: what was written where."""
    con = _console()
    if "mlflow" in data:
        m = data["mlflow"]
        con.print(f"MLflow {m['uri']}: {m['logged']} trial runs written, {m['already_there']} already there"
                  f" (experiment {data['study']!r}, parent run {m['parent_run']})")
        if m.get("models_added_to_runs_already_there"):
            con.print(f"  and {m['models_added_to_runs_already_there']} stored models added to the runs already there")
    if "tensorboard" in data:
        t = data["tensorboard"]
        con.print(f"TensorBoard {t['folder']}: {t['logged']} trials written (tensorboard --logdir {t['folder']})")


def print_best(info: dict[str, Any]) -> None:
    """``hpsearch best``: :func:`hpsearch.storage.queries.best_info` as a parameter table and lines."""
    con = _console()
    metric = info["metric"]
    if info.get("front") is not None:
        _print_front(con, info["front"], info["objectives"])
        con.print(f"chosen by pick {info['pick']!r} (the front's best {metric};"
                  " load_best(..., pick=RULE) chooses another):")
    con.print(f"[bold]{info['study']}[/bold] best trial {info['best_trial']} ({info['engine'] or '-'} engine)")
    table = Table(show_header=True)
    table.add_column("parameter")
    table.add_column("value", overflow="fold")
    for k, v in info["params"].items():
        table.add_row(k, fmt_value(v, 5) if isinstance(v, float) else str(v))
    con.print(table)
    line = f"validation {metric}: {fmt_value(info['value'])}"
    folds = info["fold_scores"]
    if folds and len(folds) > 1:
        line += " (folds: " + ", ".join(fmt_value(f) for f in folds) + ")"
    con.print(line)
    if info["test_score"] is not None or info["test_metrics"]:
        tm = info["test_metric"] or metric
        extra = ", ".join(f"{k} {fmt_value(v)}" for k, v in info["test_metrics"].items() if k != tm)
        con.print(f"test {tm}: {fmt_value(info['test_score'])}" + (f" ({extra})" if extra else "")
                  + " — on the held-out test split")
    elif info.get("test_rows") == 0:
        con.print("test score: none (no test split: data.split.test is 0)")
    elif info.get("model_missing"):
        con.print("test score: not recorded (the best trial has no stored model to score)")
    else:
        con.print("test score: not recorded yet (the study has not finished)")
    if info.get("model_missing"):
        con.print(f"model: none stored for the best trial {info['best_trial']}; repair it with"
                  f" `hpsearch best {info['study']} --refit` (or `hpsearch run FILE --resume`)")
    elif info["model_artifact"]:
        con.print(f"model: artifact {info['model_artifact']} (trial {info['model_trial']}) in {info['artifacts']}")
    else:
        con.print("model: none stored for the best trial yet; run the study to its end")
    if info.get("ensemble"):
        _print_ensemble(con, info["ensemble"])
    if info["exported"]:
        exported = Path(info["exported"])
        if info.get("export_format"):
            con.print(f"exported: {exported} ({info['export_format']}, preprocessing inside: it takes raw features;"
                      f" inputs and outputs in {exported.parent / 'hpsearch.json'})")
        else:
            con.print(f"exported: {exported} (+ {exported.with_suffix('.preprocess.json').name})")
    con.print(f"load it: hpsearch.load_best({info['study']!r}, storage=...)")


def _print_ensemble(con: Console, e: dict[str, Any]) -> None:
    """The top-K ensemble's scores next to the single best model's."""
    trials = ", ".join(str(n) for n in e["trials"])
    con.print(f"ensemble of the top {e['k']} (trials {trials}): validation {e['metric']} {fmt_value(e['valid'])},"
              f" test {fmt_value(e['test'])}")
    con.print(f"single best (trial {e['best_trial']}): validation {e['metric']} {fmt_value(e['best_valid'])},"
              f" test {fmt_value(e['best_test'])}")


def print_files(files: Iterable[Path]) -> None:
    """``hpsearch report``: the written files, one per line."""
    for f in files:
        print(f)


# --------------------------------------------------------------------------------------- dashboard


def print_dashboard(dashboard: Dashboard) -> None:
    """Where the dashboard (:class:`hpsearch.results.dashboard.Dashboard`) serves, with a warning on stderr
    when it listens beyond this machine."""
    if not dashboard.loopback:
        print(NO_AUTH_WARNING.format(host=dashboard.host, port=dashboard.port), file=sys.stderr, flush=True)
    print(f"optuna-dashboard for {dashboard.storage} (artifacts: {dashboard.artifacts})", flush=True)
    print(f"open {dashboard.url}   (Ctrl-C to stop)", flush=True)


def print_dashboard_stopped() -> None:
    print("dashboard stopped", flush=True)


# ---------------------------------------------------------------------------------------- progress


class ConsoleProgress:
    """A running search on stderr: a rich progress bar on a terminal, else one line per finished
    trial (for logs). Implements :class:`hpsearch.engines.base.Observer`.

    The run sets ``total`` (candidates planned), ``label`` (the study name) and ``direction`` before
    :meth:`begin`. ``enabled=False`` hides the trials; :meth:`message` lines (warnings) always show.
    """

    def __init__(self, label: str = "hpsearch", *, direction: str = "maximize", total: int | None = None,
                 enabled: bool = True) -> None:
        self.total = total
        self.label = label
        self.direction = direction
        self.enabled = enabled
        self.done = 0
        self.best: float | None = None
        self.start = time.monotonic()
        self._bar: Progress | None = None  # while a bar is shown
        self._task: Any = None
        self._lock = threading.Lock()

    def _note_best(self, value: float | None) -> None:
        if is_better(value, self.best, self.direction):
            self.best = value

    def _best_text(self) -> str:
        return "-" if self.best is None else f"{self.best:.4f}"

    def begin(self, done: int, best: float | None) -> None:
        """Start showing; ``done`` trials (best value ``best``) finished in earlier runs."""
        with self._lock:
            self.start = time.monotonic()
            self.done = done
            self._note_best(best)
            if self.enabled and sys.stderr.isatty():
                self._bar = Progress(
                    TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("best {task.fields[best]}"), TimeElapsedColumn(),
                    console=Console(stderr=True), transient=False,
                )
                self._bar.start()
                self._task = self._bar.add_task(self.label, total=self.total, completed=self.done,
                                                best=self._best_text())

    def trial_done(self, number: int, state: str, value: float | None, detail: str = "") -> None:
        """One more finished trial (state name COMPLETE / PRUNED / FAIL). A failed trial is shown but
        not counted as done: it does not count against the budget (its slot is run again)."""
        with self._lock:
            if state in DONE_STATES:
                self.done += 1
            if state == "COMPLETE":
                self._note_best(value)
            if self._bar is not None:
                self._bar.update(self._task, completed=self.done, best=self._best_text())
                return
            if not self.enabled:
                return
            total = f"/{self.total}" if self.total else ""
            val = "-" if value is None else f"{value:.4f}"
            print(f"[{self.label}] trial {number} {state} value={val} ({self.done}{total} done,"
                  f" best {self._best_text()}, {time.monotonic() - self.start:.0f}s)"
                  f"{' ' + detail if detail else ''}", file=sys.stderr, flush=True)

    def message(self, text: str) -> None:
        """A line for the user (a warning, a worker's fate) on stderr, above the bar if one is shown."""
        with self._lock:
            if self._bar is not None:
                self._bar.console.print(text, markup=False, highlight=False, soft_wrap=True)
            else:
                print(text, file=sys.stderr, flush=True)

    def end(self) -> None:
        """Stop showing (the bar stays on screen at its last state)."""
        with self._lock:
            if self._bar is not None:
                self._bar.stop()
                self._bar = None
