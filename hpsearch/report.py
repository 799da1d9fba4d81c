"""Looking at stored studies: ``hpsearch status``, ``hpsearch best``, ``hpsearch report`` and the
per-trial training-curve PNG.

Everything here reads the Optuna storage only (DESIGN.md: the storage is the single record), so it
works the same for studies of every engine and while workers are still writing. The report is a
folder of PNG files plus an ``index.html`` that opens offline (relative image paths, inline CSS, no
JavaScript). Plots use matplotlib's Agg backend; a plot that cannot be drawn for this study (e.g.
parameter importances with one finished trial) becomes a note in the report, never a crash.
"""

from __future__ import annotations

import datetime as _dt
import html
import json
import math
import os
import sys
import warnings
from pathlib import Path
from typing import Any, Optional

from hpsearch.errors import UserError
from hpsearch.records import STUDY, TRIAL, clean_attr

__all__ = ["print_status", "print_best", "write_report", "save_curve_png", "study_summary", "open_study_storage"]

#: Curves (and rows) of this many top trials go into the report.
TOP_CURVES = 5


# --------------------------------------------------------------------------------------------------
# opening
# --------------------------------------------------------------------------------------------------


def open_study_storage(storage: Optional[str]) -> tuple[str, Any]:
    """(URL, RDBStorage) for a read command.

    ``must_exist=True``: a missing SQLite file, an empty PostgreSQL database or a database without
    Optuna's tables is a one-line StorageError; nothing is created (no file, no tables).
    """
    from hpsearch.storage import open_storage, resolve_storage_url

    url = resolve_storage_url(storage, None)
    return url, open_storage(url, must_exist=True)


def _quiet_optuna() -> None:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


def _load_study(name: str, st: Any) -> Any:
    import optuna

    try:
        return optuna.load_study(study_name=name, storage=st)
    except KeyError:
        names = [s.study_name for s in optuna.get_all_study_summaries(st, include_best_trial=False)]
        hint = f"; studies there: {', '.join(names[:20])}" if names else "; the storage has no studies"
        raise UserError(f"study {name!r} not found in the storage{hint}") from None


# --------------------------------------------------------------------------------------------------
# summaries
# --------------------------------------------------------------------------------------------------


def _direction(study_attrs: dict[str, Any], directions: list[Any]) -> str:
    d = study_attrs.get(STUDY.DIRECTION)
    if d:
        return str(d)
    return directions[0].name.lower() if directions else "minimize"


def study_summary(name: str, directions: list[Any], user_attrs: dict[str, Any], trials: list[Any],
                  now: Optional[_dt.datetime] = None) -> dict[str, Any]:
    """One row of ``hpsearch status``: trial counts by state, best value, elapsed time."""
    from optuna.trial import TrialState

    direction = _direction(user_attrs, directions)
    counts = {s.name.lower(): 0 for s in TrialState}
    for t in trials:
        counts[t.state.name.lower()] += 1
    done = [t for t in trials if t.state == TrialState.COMPLETE and t.value is not None]
    best_t = None
    if done and len(directions) <= 1:
        best_t = (max if direction == "maximize" else min)(done, key=lambda t: t.value)
    starts = [t.datetime_start for t in trials if t.datetime_start]
    ends = [t.datetime_complete for t in trials if t.datetime_complete]
    elapsed = None
    if starts:
        last = max(ends) if ends else None
        if counts["running"] and now is not None:
            last = max(last, now) if last else now
        if last is not None:
            elapsed = max(0.0, (last - min(starts)).total_seconds())
    return {
        "study": name,
        "engine": user_attrs.get(STUDY.ENGINE),
        "metric": user_attrs.get(STUDY.METRIC),
        "direction": direction,
        "task": user_attrs.get(STUDY.TASK),
        "n_trials": len(trials),
        "complete": counts["complete"],
        "pruned": counts["pruned"],
        "failed": counts["fail"],
        "running": counts["running"],
        "waiting": counts["waiting"],
        "best_value": best_t.value if best_t is not None else None,
        "best_trial": best_t.number if best_t is not None else None,
        "test_score": user_attrs.get(STUDY.TEST_SCORE),
        "started": min(starts).isoformat(timespec="seconds") if starts else None,
        "elapsed_s": elapsed,
    }


def _fmt(v: Any, digits: int = 4) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        return f"{v:.{digits}g}" if (abs(v) < 1e-3 and v != 0) or abs(v) >= 1e6 else f"{v:.{digits}f}"
    return str(v)


def _num(v: Any) -> str:
    """Compact number for table cells."""
    if isinstance(v, float) and not math.isnan(v) and abs(v) >= 1000:
        return f"{v:,.0f}"
    return _fmt(v)


def _console() -> Any:
    from rich.console import Console

    con = Console()
    if not con.is_terminal:  # piped: do not squeeze tables into 80 columns
        con = Console(width=max(con.width, 120))
    return con


def _fmt_params(params: dict[str, Any]) -> str:
    return ", ".join(f"{k}={_fmt(v, 3) if isinstance(v, float) else v}" for k, v in params.items())


def _fmt_elapsed(s: Optional[float]) -> str:
    if s is None:
        return "-"
    s = int(round(s))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


def _now() -> _dt.datetime:
    # Optuna stores naive local datetimes
    return _dt.datetime.now()


def print_status(storage: Optional[str] = None, study: Optional[str] = None, top: int = 10,
                 as_json: bool = False) -> int:
    """``hpsearch status``: every study in the storage, or one study with its top trials."""
    import optuna

    from hpsearch.storage import redact_url
    from hpsearch.study import trial_rows

    _quiet_optuna()
    url, st = open_study_storage(storage)
    shown = redact_url(url)
    if study is None:
        summaries = optuna.get_all_study_summaries(st, include_best_trial=False)
        rows = []
        for s in summaries:
            trials = st.get_all_trials(s._study_id, deepcopy=False)
            rows.append(study_summary(s.study_name, list(s.directions), dict(s.user_attrs), trials, _now()))
        if as_json:
            print(json.dumps(clean_attr({"storage": shown, "studies": rows}), default=str))
            return 0
        from rich.table import Table

        con = _console()
        if not rows:
            con.print(f"storage {shown} has no studies yet; start one with `hpsearch run FILE`")
            return 0
        table = Table(title=f"studies in {shown}")
        for col in ("study", "engine", "metric", "complete", "pruned", "failed", "running", "best", "test",
                    "elapsed"):
            table.add_column(col, overflow="fold",
                             justify="right" if col not in ("study", "engine", "metric") else "left")
        for r in rows:
            metric = f"{r['metric'] or '-'} ({'max' if r['direction'] == 'maximize' else 'min'})"
            table.add_row(r["study"], r["engine"] or "-", metric, str(r["complete"]), str(r["pruned"]),
                          str(r["failed"]), str(r["running"]), _num(r["best_value"]), _num(r["test_score"]),
                          _fmt_elapsed(r["elapsed_s"]))
        con.print(table)
        return 0

    s = _load_study(study, st)
    trials = s.get_trials(deepcopy=False)
    summary = study_summary(s.study_name, list(s.directions), dict(s.user_attrs), trials, _now())
    rows = trial_rows(s, summary["direction"], limit=top if top and top > 0 else None)
    if as_json:
        out = dict(summary, storage=shown, data_summary=s.user_attrs.get(STUDY.DATA_SUMMARY),
                   test_metrics=s.user_attrs.get("test_metrics"), trials=rows)
        print(json.dumps(clean_attr(out), default=str))
        return 0
    from rich.table import Table

    con = _console()
    metric = summary["metric"] or "value"
    con.print(f"[bold]{s.study_name}[/bold] — engine {summary['engine'] or '-'}, {metric} ({summary['direction']}),"
              f" storage {shown}")
    ds = s.user_attrs.get(STUDY.DATA_SUMMARY) or {}
    if ds:
        con.print("data: " + _data_line(ds))
    con.print(f"trials: {summary['complete']} complete, {summary['pruned']} pruned, {summary['failed']} failed,"
              f" {summary['running']} running; elapsed {_fmt_elapsed(summary['elapsed_s'])}")
    table = Table(title=f"top {len(rows)} trials")
    for col in ("rank", "trial", "state", metric, "params", "epochs", "fit time (s)"):
        table.add_column(col, overflow="fold")
    for r in rows:
        state = r["state"] + (f": {r['reason'][:60]}" if r.get("reason") else "")
        table.add_row(_fmt(r["rank"]), str(r["number"]), state, _fmt(r["value"]), _fmt_params(r["params"]),
                      _fmt(r["epochs"]), _fmt(r["fit_time"], 2))
    con.print(table)
    if summary["best_value"] is not None:
        line = f"best trial {summary['best_trial']}: {metric} {_fmt(summary['best_value'])}"
        if summary["test_score"] is not None:
            line += f"; test {s.user_attrs.get(STUDY.TEST_METRIC) or metric} {_fmt(summary['test_score'])}"
        con.print(line)
    return 0


def _data_line(ds: dict[str, Any]) -> str:
    parts = [f"{ds.get('source', '?')}", f"{ds.get('rows', '?')} rows"]
    if "train_rows" in ds:
        parts.append(f"train/valid/test {ds.get('train_rows')}/{ds.get('valid_rows')}/{ds.get('test_rows')}")
    parts.append(f"{ds.get('features', '?')} features")
    if ds.get("classes"):
        parts.append(f"{ds['classes']} classes")
    return ", ".join(parts)


def print_best(study: str, storage: Optional[str] = None, artifacts: Optional[str] = None,
               export: Optional[str] = None, as_json: bool = False) -> int:
    """``hpsearch best``: the best trial's params, validation and test scores, and where its model is."""
    from hpsearch.storage import artifact_location, redact_url

    _quiet_optuna()
    url, st = open_study_storage(storage)
    s = _load_study(study, st)
    try:
        best = s.best_trial
    except ValueError:
        raise UserError(f"study {study!r} has no completed trial yet; see `hpsearch status {study}`") from None
    attrs = s.user_attrs
    metric = attrs.get(STUDY.METRIC) or "value"
    location = artifact_location(url, artifacts or attrs.get("artifacts"))
    model_id = attrs.get(STUDY.BEST_MODEL_ARTIFACT) or best.user_attrs.get(TRIAL.MODEL_ARTIFACT)
    model_trial = attrs.get(STUDY.BEST_TRIAL, best.number) if attrs.get(STUDY.BEST_MODEL_ARTIFACT) else best.number
    exported = None
    if export:
        from hpsearch.best import export_best

        exported = export_best(study, export, storage=url, artifacts=artifacts)
    out = {
        "study": s.study_name, "storage": redact_url(url), "engine": attrs.get(STUDY.ENGINE), "metric": metric,
        "direction": _direction(attrs, list(s.directions)), "best_trial": best.number, "value": best.value,
        "params": dict(best.params), "fold_scores": best.user_attrs.get(TRIAL.FOLD_SCORES),
        "epochs": best.user_attrs.get(TRIAL.EPOCHS), "n_params": best.user_attrs.get(TRIAL.N_PARAMS),
        "test_metric": attrs.get(STUDY.TEST_METRIC), "test_score": attrs.get(STUDY.TEST_SCORE),
        "test_metrics": attrs.get("test_metrics") or {}, "model_trial": model_trial,
        "model_artifact": model_id, "preprocess_artifact": attrs.get(STUDY.BEST_PREPROCESS_ARTIFACT)
        or best.user_attrs.get(TRIAL.PREPROCESS_ARTIFACT), "artifacts": location,
        "exported": str(exported) if exported else None,
    }
    if as_json:
        print(json.dumps(clean_attr(out), default=str))
        return 0
    from rich.table import Table

    con = _console()
    con.print(f"[bold]{s.study_name}[/bold] best trial {best.number} ({out['engine'] or '-'} engine)")
    table = Table(show_header=True)
    table.add_column("parameter")
    table.add_column("value", overflow="fold")
    for k, v in best.params.items():
        table.add_row(k, _fmt(v, 5) if isinstance(v, float) else str(v))
    con.print(table)
    line = f"validation {metric}: {_fmt(best.value)}"
    folds = out["fold_scores"]
    if folds and len(folds) > 1:
        line += " (folds: " + ", ".join(_fmt(f) for f in folds) + ")"
    con.print(line)
    if out["test_score"] is not None or out["test_metrics"]:
        tm = out["test_metric"] or metric
        extra = ", ".join(f"{k} {_fmt(v)}" for k, v in out["test_metrics"].items() if k != tm)
        con.print(f"test {tm}: {_fmt(out['test_score'])}" + (f" ({extra})" if extra else "")
                  + " — on the held-out test split")
    else:
        con.print("test score: not recorded yet (the study has not finished)")
    if model_id:
        con.print(f"model: artifact {model_id} (trial {model_trial}) in {location}")
    else:
        con.print("model: none stored for the best trial yet; run the study to its end")
    if exported:
        con.print(f"exported: {exported} (+ {Path(exported).with_suffix('.preprocess.json').name})")
    con.print(f"load it: hpsearch.load_best({s.study_name!r}, storage=...)")
    return 0


# --------------------------------------------------------------------------------------------------
# the per-trial training curve (uploaded by the engine as a trial artifact)
# --------------------------------------------------------------------------------------------------


def save_curve_png(history: dict[str, list[float]], path: str, title: str = "") -> None:
    """A small learning-curve PNG: loss / val_loss and the other metrics per epoch.

    Called once per finished trial by the training engine, so it stays fast (Agg canvas on a bare
    ``Figure``, no pyplot state, low dpi).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    hist = {str(k): [float("nan") if v is None else float(v) for v in vals]
            for k, vals in (history or {}).items() if vals is not None and len(vals)}
    bases = []
    for k in hist:
        base = k[4:] if k.startswith("val_") else k
        if base not in bases:
            bases.append(base)
    if "loss" in bases:
        bases.remove("loss")
        bases.insert(0, "loss")
    bases = [b for b in bases if b not in ("lr", "learning_rate")][:3] or ["loss"]
    n = len(bases)
    fig = Figure(figsize=(3.2 * n, 2.6), dpi=72)
    FigureCanvasAgg(fig)
    # fixed margins instead of tight_layout (which draws the figure once more)
    fig.subplots_adjust(left=0.16 / n, right=1 - 0.03 / n, bottom=0.17, top=0.8 if title else 0.88,
                        wspace=0.35)
    axes = fig.subplots(1, n, squeeze=False)[0]
    for ax, base in zip(axes, bases):
        for key, style in ((base, "-"), ("val_" + base, "--")):
            vals = hist.get(key)
            if vals:
                ax.plot(range(1, len(vals) + 1), vals, style, label=key, linewidth=1.5)
        ax.set_xlabel("epoch", fontsize=8)
        ax.set_title(base, fontsize=9)
        ax.tick_params(labelsize=7)
        ax.xaxis.set_major_locator(MaxNLocator(nbins=5, integer=True))
        ax.yaxis.set_major_locator(MaxNLocator(nbins=4))
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=7, loc="upper right" if base == "loss" else "lower right", frameon=False)
        else:
            ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.savefig(path, format="png")


# --------------------------------------------------------------------------------------------------
# report
# --------------------------------------------------------------------------------------------------


class _Report:
    def __init__(self, out: Path) -> None:
        self.out = out
        self.files: list[Path] = []
        self.sections: list[dict[str, Any]] = []

    def section(self, title: str, image: Optional[str] = None, note: Optional[str] = None,
                table: Optional[str] = None) -> None:
        self.sections.append({"title": title, "image": image, "note": note, "table": table})

    def save(self, fig: Any, name: str) -> str:
        path = self.out / name
        fig.savefig(path, format="png", dpi=100, bbox_inches="tight")
        self.files.append(path)
        return name


def _use_agg() -> None:
    import matplotlib

    if "matplotlib.pyplot" not in sys.modules:
        matplotlib.use("Agg")


def _close(fig: Any) -> None:
    import matplotlib.pyplot as plt

    plt.close(fig)


def _fig_of(ax: Any) -> Any:
    import numpy as np

    if isinstance(ax, np.ndarray):
        return ax.flatten()[0].figure
    return ax.figure


def _tidy_log_axes(fig: Any) -> None:
    """Drop minor tick labels on log axes: optuna's slice plots label them and they overlap."""
    from matplotlib.ticker import NullFormatter

    for ax in fig.axes:
        if ax.get_xscale() == "log":
            ax.xaxis.set_minor_formatter(NullFormatter())
        if ax.get_yscale() == "log":
            ax.yaxis.set_minor_formatter(NullFormatter())


def _optuna_plot(rep: _Report, title: str, fname: str, fn: Any, *args: Any, note: str = "", **kw: Any) -> None:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ax = fn(*args, **kw)
        fig = _fig_of(ax)
        _tidy_log_axes(fig)
        rep.section(title, rep.save(fig, fname), note or None)
        _close(fig)
    except Exception as e:  # noqa: BLE001 - a plot that cannot be drawn becomes a note
        import matplotlib.pyplot as plt

        plt.close("all")
        rep.section(title, None, f"not drawn: {e.__class__.__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}")


def _curve_of(t: Any) -> list[tuple[int, float]]:
    """A trial's per-epoch validation curve: intermediate values, else a stored ``val_curve`` attr."""
    if t.intermediate_values:
        return sorted((int(k), float(v)) for k, v in t.intermediate_values.items() if v is not None)
    stored = t.user_attrs.get("val_curve")
    if isinstance(stored, list):
        return [(i, float(v)) for i, v in enumerate(stored) if v is not None]
    return []


def _learning_curves(rep: _Report, study: Any, direction: str, metric: str) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from optuna.trial import TrialState

    done = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE and t.value is not None]
    done.sort(key=lambda t: t.value, reverse=(direction == "maximize"))
    top = [(t, _curve_of(t)) for t in done[:TOP_CURVES]]
    top = [(t, c) for t, c in top if c]
    title = f"Learning curves of the top {TOP_CURVES} trials"
    if not top:
        rep.section(title, None, "no per-epoch values stored (the scikit-learn engines record only final"
                                 " fold scores); each trial's training-curve PNG is in the dashboard")
        return
    fig = Figure(figsize=(7, 4))
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    for rank, (t, c) in enumerate(top, start=1):
        ax.plot([e + 1 for e, _ in c], [v for _, v in c], marker="o", markersize=3,
                label=f"#{rank} trial {t.number} ({_fmt(t.value)})")
    ax.set_xlabel("epoch")
    ax.set_ylabel(f"validation {metric}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title)
    rep.section(title, rep.save(fig, "learning_curves.png"))


def _resolve_config(study: Any) -> tuple[Any, Optional[str]]:
    """The study's config from its stored study file, with relative data paths resolved; or a note."""
    import yaml

    from hpsearch.config import parse_study_config

    text = study.user_attrs.get(STUDY.CONFIG)
    if not text:
        return None, "the study has no stored study file (study_config attribute)"
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError:
        return None, "the stored study file is not valid YAML"
    candidates = [study.user_attrs.get(k) for k in ("base_dir", "study_dir")] + [os.getcwd()]
    last_err = None
    for base in [c for c in candidates if c]:
        try:
            cfg = parse_study_config(data, where="stored study file", base_dir=str(base), source_text=text)
        except UserError as e:
            return None, f"the stored study file does not validate: {e}"
        path = cfg.data_path()
        if path is None or path.exists():
            return cfg, None
        last_err = f"data file {path} not found (relative paths are resolved from the current folder; run the" \
                   " report from the study file's folder)"
    return None, last_err


def _evaluate(rep: _Report, study: Any, url: str, artifacts: Optional[str]) -> dict[str, Any]:
    """Best model on the test split: confusion matrix + ROC AUC / per-class scores, or residuals."""
    import numpy as np

    from hpsearch.best import _best_artifact_ids, load_model_artifacts
    from hpsearch.data import prepare_data
    from hpsearch.storage import artifact_store_for

    title = "Best model on the test split"
    cfg, why = _resolve_config(study)
    if cfg is None:
        rep.section(title, None, f"skipped: {why}")
        return {}
    try:
        data = prepare_data(cfg)
    except UserError as e:
        rep.section(title, None, f"skipped: the data cannot be prepared again ({e})")
        return {}
    if not len(data.y_test):
        rep.section(title, None, "skipped: the study has no test split (data.split.test: 0)")
        return {}
    try:
        mid, pid, number = _best_artifact_ids(study)
        store = artifact_store_for(url, artifacts or study.user_attrs.get("artifacts"))
        model, pre = load_model_artifacts(store, mid, pid)
    except UserError as e:
        rep.section(title, None, f"skipped: {e}")
        return {}
    note = f"trial {number}, {len(data.y_test)} test rows (the seeded split of the stored study file)"
    if pre.mean is not None and data.preprocessor.mean is not None and not np.allclose(
            pre.mean, data.preprocessor.mean, rtol=1e-4, atol=1e-6):
        note += "; WARNING: the data differs from the data the model was trained on (scaling does not match)"
    raw = np.asarray(model.predict(data.X_test, batch_size=1024, verbose=0))
    if data.task == "classification":
        return _eval_classifier(rep, title, note, data, raw)
    return _eval_regressor(rep, title, note, data, raw)


def _html_table(header: list[str], rows: list[list[Any]]) -> str:
    h = "".join(f"<th>{html.escape(str(c))}</th>" for c in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_fmt(c) if not isinstance(c, str) else c)}</td>"
                                    for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{h}</tr></thead><tbody>{body}</tbody></table>"


def _eval_classifier(rep: _Report, title: str, note: str, data: Any, raw: Any) -> dict[str, Any]:
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from sklearn import metrics as m

    y = data.y_test
    proba = np.column_stack([1 - raw.reshape(-1), raw.reshape(-1)]) if raw.ndim == 1 or raw.shape[1] == 1 else raw
    pred = proba.argmax(axis=1)
    labels = [str(c) for c in (data.preprocessor.classes or range(proba.shape[1]))]
    k = len(labels)
    out: dict[str, Any] = {"accuracy": float(m.accuracy_score(y, pred))}
    cm = m.confusion_matrix(y, pred, labels=list(range(k)))
    fig = Figure(figsize=(1.2 + 0.6 * max(k, 4), 1.0 + 0.6 * max(k, 4)))
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    m.ConfusionMatrixDisplay(cm, display_labels=labels).plot(ax=ax, colorbar=False)
    ax.set_title(f"Confusion matrix (test, accuracy {out['accuracy']:.3f})")
    rep.section("Confusion matrix (test split)", rep.save(fig, "confusion_matrix.png"), note)
    if k == 2:
        out["roc_auc"] = float(m.roc_auc_score(y, proba[:, 1]))
        fig = Figure(figsize=(5, 4.5))
        FigureCanvasAgg(fig)
        ax = fig.subplots()
        m.RocCurveDisplay.from_predictions(y, proba[:, 1], ax=ax, name="best model")
        ax.plot([0, 1], [0, 1], ":", color="grey")
        ax.set_title(f"ROC curve (test, AUC {out['roc_auc']:.3f})")
        rep.section("ROC curve (test split)", rep.save(fig, "roc_curve.png"),
                    table=_html_table(["metric", "value"], [["ROC AUC", out["roc_auc"]],
                                                            ["accuracy", out["accuracy"]]]))
    else:
        p, r, f, s = m.precision_recall_fscore_support(y, pred, labels=list(range(k)), zero_division=0)
        out["per_class"] = {labels[i]: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]),
                                        "support": int(s[i])} for i in range(k)}
        fig = Figure(figsize=(max(5, 0.7 * k + 2), 3.8))
        FigureCanvasAgg(fig)
        ax = fig.subplots()
        x = np.arange(k)
        ax.bar(x - 0.2, p, 0.4, label="precision")
        ax.bar(x + 0.2, r, 0.4, label="recall")
        ax.set_xticks(x, labels)
        ax.set_ylim(0, 1.05)
        ax.set_xlabel("class")
        ax.legend(fontsize=8)
        ax.set_title("Per-class precision / recall (test)")
        rows = [[labels[i], float(p[i]), float(r[i]), float(f[i]), int(s[i])] for i in range(k)]
        rep.section("Per-class precision / recall (test split)", rep.save(fig, "per_class.png"),
                    table=_html_table(["class", "precision", "recall", "f1", "support"], rows))
    return out


def _eval_regressor(rep: _Report, title: str, note: str, data: Any, raw: Any) -> dict[str, Any]:
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from sklearn import metrics as m

    y = np.asarray(data.y_test, dtype=np.float64)
    pred = raw.reshape(-1).astype(np.float64)
    out = {"mae": float(m.mean_absolute_error(y, pred)), "rmse": float(np.sqrt(m.mean_squared_error(y, pred))),
           "r2": float(m.r2_score(y, pred))}
    fig = Figure(figsize=(10, 4))
    FigureCanvasAgg(fig)
    ax1, ax2 = fig.subplots(1, 2)
    ax1.scatter(pred, y - pred, s=12, alpha=0.7)
    ax1.axhline(0, color="grey", linestyle=":")
    ax1.set_xlabel("predicted")
    ax1.set_ylabel("residual (true - predicted)")
    ax1.set_title("Residuals (test)")
    lo, hi = float(min(y.min(), pred.min())), float(max(y.max(), pred.max()))
    ax2.scatter(y, pred, s=12, alpha=0.7)
    ax2.plot([lo, hi], [lo, hi], ":", color="grey")
    ax2.set_xlabel("true")
    ax2.set_ylabel("predicted")
    ax2.set_title(f"Predicted vs true (R2 {out['r2']:.3f})")
    rep.section("Residuals (test split)", rep.save(fig, "residuals.png"), note,
                table=_html_table(["metric", "value"], [["MAE", out["mae"]], ["RMSE", out["rmse"]],
                                                        ["R2", out["r2"]]]))
    return out


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2em auto;max-width:1100px;
color:#222;padding:0 1em}h1{font-size:1.6em}h2{font-size:1.2em;margin-top:2em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.5em 0;font-size:.9em}th,td{border:1px solid #ccc;padding:3px 8px;
text-align:left}th{background:#f4f4f4}img{max-width:100%;border:1px solid #eee}.note{color:#666;
font-style:italic}.muted{color:#888}
"""


def _index_html(study: Any, summary: dict[str, Any], rows: list[dict[str, Any]], rep: _Report,
                evaluation: dict[str, Any], shown_url: str) -> str:
    e = html.escape
    attrs = study.user_attrs
    metric = summary.get("metric") or "value"
    info = [
        ["engine", summary.get("engine") or "-"], ["metric", f"{metric} ({summary['direction']})"],
        ["task", summary.get("task") or "-"], ["storage", shown_url],
        ["trials", f"{summary['complete']} complete, {summary['pruned']} pruned, {summary['failed']} failed,"
                   f" {summary['running']} running"],
        ["elapsed", _fmt_elapsed(summary.get("elapsed_s"))],
        ["best validation " + metric, f"{_fmt(summary.get('best_value'))} (trial {summary.get('best_trial')})"],
    ]
    if attrs.get(STUDY.TEST_SCORE) is not None:
        info.append([f"test {attrs.get(STUDY.TEST_METRIC) or metric}", _fmt(attrs.get(STUDY.TEST_SCORE))])
    ds = attrs.get(STUDY.DATA_SUMMARY)
    if ds:
        info.append(["data", _data_line(ds)])
    trows = [[r["rank"] if r["rank"] is not None else "-", r["number"], r["state"], r["value"],
              _fmt_params(r["params"]), r["epochs"],
              "-" if r["fit_time"] is None else f"{r['fit_time']:.2f}", (r.get("reason") or "")[:80]] for r in rows]
    parts = [
        "<!DOCTYPE html>", "<html lang='en'><head><meta charset='utf-8'>",
        f"<title>hpsearch report: {e(study.study_name)}</title><style>{_CSS}</style></head><body>",
        f"<h1>hpsearch report: {e(study.study_name)}</h1>",
        f"<p class='muted'>generated {e(_dt.datetime.now().isoformat(timespec='seconds'))}</p>",
        _html_table(["", ""], info).replace("<thead><tr><th></th><th></th></tr></thead>", ""),
        f"<h2>Top trials</h2>",
        _html_table(["rank", "trial", "state", metric, "params", "epochs", "fit time (s)", "reason"], trows),
    ]
    for s in rep.sections:
        parts.append(f"<h2>{e(s['title'])}</h2>")
        if s["note"]:
            parts.append(f"<p class='note'>{e(s['note'])}</p>")
        if s["image"]:
            parts.append(f"<p><img src='{e(s['image'])}' alt='{e(s['title'])}'></p>")
        if s["table"]:
            parts.append(s["table"])
    if evaluation:
        parts.append("<p class='muted'>test metrics also in <a href='metrics.json'>metrics.json</a>;"
                     " all trials in <a href='trials.csv'>trials.csv</a></p>")
    else:
        parts.append("<p class='muted'>all trials in <a href='trials.csv'>trials.csv</a></p>")
    parts.append("</body></html>")
    return "\n".join(parts)


def _draw(study: Any, url: str, artifacts: Optional[str], out: Path, direction: str, metric: str,
          complete: list[Any]) -> tuple[_Report, dict[str, Any]]:
    """All plots of the report, in order; each one that cannot be drawn becomes a note."""
    import optuna.visualization.matplotlib as ovm

    rep = _Report(out)
    if complete:
        _optuna_plot(rep, "Optimization history", "optimization_history.png", ovm.plot_optimization_history,
                     study, target_name=metric)
    else:
        rep.section("Optimization history", None, "no completed trial yet")
    varying = sorted({k for t in complete for k in t.params
                      if len({repr(u.params.get(k)) for u in complete}) > 1})
    if len(complete) >= 2 and varying:
        _optuna_plot(rep, "Parameter importances", "param_importances.png", ovm.plot_param_importances, study,
                     target_name=metric, note="fANOVA importance of each parameter for the validation "
                                              f"{metric} (few trials make this rough)")
    else:
        rep.section("Parameter importances", None,
                    "needs at least 2 completed trials and a parameter that varies between them")
    if len(complete) >= 2 and study.best_trial.params:
        _optuna_plot(rep, "Parallel coordinates", "parallel_coordinates.png", ovm.plot_parallel_coordinate, study,
                     target_name=metric)
    else:
        rep.section("Parallel coordinates", None, "needs at least 2 completed trials with parameters")
    if complete and study.best_trial.params:
        _optuna_plot(rep, "Slice plots", "slice.png", ovm.plot_slice, study, target_name=metric)
    else:
        rep.section("Slice plots", None, "no completed trial with parameters yet")
    _learning_curves(rep, study, direction, metric)
    evaluation: dict[str, Any] = {}
    if complete:
        evaluation = _evaluate(rep, study, url, artifacts)
    else:
        rep.section("Best model on the test split", None, "no completed trial yet")
    return rep, evaluation


def write_report(study_name: str, out_dir: str, storage: Optional[str] = None,
                 artifacts: Optional[str] = None) -> list[Path]:
    """Write PNG plots, ``trials.csv``, ``metrics.json`` and an offline ``index.html`` to ``out_dir``.

    Returns the written files, ``index.html`` last.
    """
    from optuna.trial import TrialState

    from hpsearch.storage import redact_url
    from hpsearch.study import trial_rows

    _quiet_optuna()
    _use_agg()
    import matplotlib

    url, st = open_study_storage(storage)
    study = _load_study(study_name, st)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise UserError(f"-o {out_dir}: is a file; give a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"-o {out_dir}: cannot create the folder ({e.strerror})") from None
    trials = study.get_trials(deepcopy=False)
    summary = study_summary(study.study_name, list(study.directions), dict(study.user_attrs), trials, _now())
    direction = summary["direction"]
    metric = summary.get("metric") or "value"
    complete = [t for t in trials if t.state == TrialState.COMPLETE and t.value is not None]
    if len(study.directions) > 1:
        raise UserError(f"study {study_name!r} has several objectives; hpsearch reports single-objective studies")
    with matplotlib.rc_context():  # optuna's plots switch the global style; keep it to this report
        rep, evaluation = _draw(study, url, artifacts, out, direction, metric, complete)

    # tables for scripts
    csv_path = out / "trials.csv"
    df = study.trials_dataframe() if trials else None
    if df is not None and len(df.columns):
        df.to_csv(csv_path, index=False)
    else:
        csv_path.write_text("number,state,value\n", encoding="utf-8")
    rep.files.append(csv_path)
    if evaluation:
        mpath = out / "metrics.json"
        payload = {"study": study.study_name, "best_trial": summary.get("best_trial"),
                   "validation": {metric: summary.get("best_value")},
                   "recorded_test": study.user_attrs.get("test_metrics") or {}, "test": evaluation}
        mpath.write_text(json.dumps(clean_attr(payload), indent=2), encoding="utf-8")
        rep.files.append(mpath)
    index = out / "index.html"
    index.write_text(_index_html(study, summary, trial_rows(study, direction, limit=10), rep, evaluation,
                                 redact_url(url)), encoding="utf-8")
    rep.files.append(index)
    return rep.files
