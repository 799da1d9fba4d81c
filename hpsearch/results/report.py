"""``hpsearch report``: a folder of PNG plots, ``trials.csv``, ``metrics.json`` and an ``index.html``
that opens offline (relative image paths, inline CSS, no JavaScript).

The study is read through :mod:`hpsearch.storage.queries`, the best model is evaluated by
:mod:`hpsearch.results.evaluation` and the figures are drawn by :mod:`hpsearch.plots`; this module decides
the sections and writes the files. A plot that cannot be drawn for this study (e.g. parameter
importances with one finished trial) becomes a note in the report, never a crash.
"""

from __future__ import annotations

import datetime as _dt
import html
import json
from pathlib import Path
from typing import Any

from hpsearch import plots
from hpsearch.errors import UserError
from hpsearch.pareto import objectives_of
from hpsearch.records import STUDY, TRIAL, clean_attr, primary_value, ranked, trial_rows
from hpsearch.results.evaluation import Evaluation, evaluate_best
from hpsearch.results.formats import data_line, fmt_elapsed, fmt_params, fmt_value
from hpsearch.storage import redact_url
from hpsearch.storage.queries import open_study_for_reading, study_summary

__all__ = ["TOP_CURVES", "TOP_ROWS", "write_report"]

#: Curves of this many top trials go into the report.
TOP_CURVES = 5
#: Rows of the report's trial table.
TOP_ROWS = 10
_EVAL_TITLE = "Best model on the test split"


class _Report:
    """The report being written: files in order, and the HTML sections that show them."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.files: list[Path] = []
        self.sections: list[dict[str, Any]] = []

    def section(self, title: str, image: str | None = None, note: str | None = None,
                table: str | None = None) -> None:
        self.sections.append({"title": title, "image": image, "note": note, "table": table})

    def path(self, name: str) -> str:
        """Where to write the file ``name``; it is listed as written."""
        path = self.out / name
        self.files.append(path)
        return str(path)

    def plot(self, title: str, name: str, draw: Any, *args: Any, note: str | None = None,
             table: str | None = None) -> None:
        """A section with ``draw(*args, path)``'s PNG, or a note saying why it could not be drawn."""
        path = self.out / name
        try:
            draw(*args, str(path))
        except Exception as e:  # noqa: BLE001 - a plot that cannot be drawn becomes a note
            first = str(e).splitlines()[0][:200] if str(e) else ""
            self.section(title, None, f"not drawn: {e.__class__.__name__}: {first}", table)
            return
        self.files.append(path)
        self.section(title, name, note, table)


def _html_table(header: list[str], rows: list[list[Any]]) -> str:
    h = "".join(f"<th>{html.escape(str(c))}</th>" for c in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(fmt_value(c) if not isinstance(c, str) else c)}</td>"
                                    for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{h}</tr></thead><tbody>{body}</tbody></table>"


def _curve_of(t: Any) -> list[tuple[int, float]]:
    """A trial's per-epoch validation curve (its intermediate values)."""
    return sorted((int(k), float(v)) for k, v in t.intermediate_values.items() if v is not None)


def _learning_curves(rep: _Report, complete: list[Any], direction: str, metric: str) -> None:
    top = [(t, _curve_of(t)) for t in ranked(complete, direction)[:TOP_CURVES]]
    curves = [(f"#{rank} trial {t.number} ({fmt_value(primary_value(t))})", c)
              for rank, (t, c) in enumerate(top, start=1) if c]
    title = f"Learning curves of the top {TOP_CURVES} trials"
    if not curves:
        rep.section(title, None, "no per-epoch values stored; each trial's training-curve PNG is in"
                                 " the dashboard")
        return
    rep.plot(title, "learning_curves.png", plots.save_learning_curves, curves, metric, title)


def _best_history(rep: _Report, complete: list[Any], direction: str) -> None:
    """Every Keras metric of every epoch of the best trial (``TRIAL.HISTORY``), as a table."""
    best = ranked(complete, direction)[:1]
    history = best[0].user_attrs.get(TRIAL.HISTORY) if best else None
    if not history:
        return
    keys = list(history)
    rows = [[i + 1, *(v[i] if i < len(v) and v[i] is not None else "" for v in history.values())]
            for i in range(max(len(v) for v in history.values()))]
    rep.section(f"History of the best trial ({best[0].number})", None,
                "every Keras metric after each epoch (all trials: the history column of trials.csv,"
                " or `hpsearch status STUDY --trial N`)", _html_table(["epoch", *keys], rows))


def _search_plots(rep: _Report, study: Any, metric: str, complete: list[Any]) -> None:
    """Optuna's plots of the search, each where the study has enough trials for it."""
    if complete:
        rep.plot("Optimization history", "optimization_history.png", plots.save_optuna_plot, "history", study,
                 metric)
    else:
        rep.section("Optimization history", None, "no completed trial yet")
    varying = {k for t in complete for k in t.params if len({repr(u.params.get(k)) for u in complete}) > 1}
    if len(complete) >= 2 and varying:
        rep.plot("Parameter importances", "param_importances.png", plots.save_optuna_plot, "importances", study,
                 metric, note=f"{plots.IMPORTANCE_EVALUATOR} importance of each parameter for the validation"
                              f" {metric} ({plots.IMPORTANCE_NOTE}; few trials make this rough)")
    else:
        rep.section("Parameter importances", None,
                    "needs at least 2 completed trials and a parameter that varies between them")
    has_params = any(t.params for t in complete)
    if len(complete) >= 2 and has_params:
        rep.plot("Parallel coordinates", "parallel_coordinates.png", plots.save_optuna_plot, "parallel", study,
                 metric)
    else:
        rep.section("Parallel coordinates", None, "needs at least 2 completed trials with parameters")
    if has_params:
        rep.plot("Slice plots", "slice.png", plots.save_optuna_plot, "slice", study, metric)
    else:
        rep.section("Slice plots", None, "no completed trial with parameters yet")


def _misclassified(rep: _Report, ev: Evaluation) -> None:
    """An image classifier's misclassified test images with their true and predicted labels."""
    title = "Misclassified test images"
    if ev.y_true is None or ev.y_pred is None or not (ev.y_true != ev.y_pred).any():
        rep.section(title, None, "every test image is classified correctly")
        return
    rep.plot(title, "misclassified.png", plots.save_misclassified, ev.images, ev.y_true, ev.y_pred, ev.labels,
             note="the first misclassified images of the test split, in test order; each titled true / predicted"
                  " label (pixels min-max scaled per image)")


def _evaluation_sections(rep: _Report, ev: Evaluation) -> None:
    """Confusion matrix and ROC curve or per-class scores; or the residuals."""
    s = ev.scores
    if ev.task != "classification":
        table = _html_table(["metric", "value"], [["MAE", s["mae"]], ["RMSE", s["rmse"]], ["R2", s["r2"]]])
        rep.plot("Residuals (test split)", "residuals.png", plots.save_residuals, ev.y_true, ev.y_pred, s["r2"],
                 note=ev.note, table=table)
        return
    rep.plot("Confusion matrix (test split)", "confusion_matrix.png", plots.save_confusion_matrix, ev.confusion,
             ev.labels, s["accuracy"], note=ev.note)
    if ev.images is not None:
        _misclassified(rep, ev)
    if ev.roc is not None:
        table = _html_table(["metric", "value"], [["ROC AUC", s["roc_auc"]], ["accuracy", s["accuracy"]]])
        rep.plot("ROC curve (test split)", "roc_curve.png", plots.save_roc_curve, *ev.roc, s["roc_auc"], ev.labels[1],
                 table=table)
        return
    per = s["per_class"]
    rows = [[c, v["precision"], v["recall"], v["f1"], v["support"]] for c, v in per.items()]
    rep.plot("Per-class precision / recall (test split)", "per_class.png", plots.save_per_class, ev.labels,
             [per[c]["precision"] for c in ev.labels], [per[c]["recall"] for c in ev.labels],
             table=_html_table(["class", "precision", "recall", "f1", "support"], rows))


def _draw(rep: _Report, study: Any, url: str, artifacts: str | None, direction: str, metric: str,
          complete: list[Any]) -> dict[str, Any]:
    """All sections of the report, in order; returns the test scores ({} when not evaluated)."""
    with plots.report_style():
        objectives = objectives_of(study)
        if len(objectives) > 1:
            rep.plot("Pareto front", "pareto_front.png", plots.save_pareto_front, study, [n for n, _ in objectives],
                     note="every completed trial; the front (no trial better on every objective) highlighted. The"
                          f" other plots show the first objective, {objectives[0][0]}")
        _search_plots(rep, study, metric, complete)
        _learning_curves(rep, complete, direction, metric)
        _best_history(rep, complete, direction)
        if not complete:
            rep.section(_EVAL_TITLE, None, "no completed trial yet")
            return {}
        try:
            ev = evaluate_best(study, url, artifacts)
        except (ValueError, TypeError) as e:  # Keras refuses the stored model (safe mode) or cannot rebuild it
            first = str(e).splitlines()[0][:200] if str(e) else ""
            ev = f"the stored model cannot be loaded ({e.__class__.__name__}: {first})"
        if isinstance(ev, str):
            rep.section(_EVAL_TITLE, None, f"skipped: {ev}")
            return {}
        _evaluation_sections(rep, ev)
        return ev.scores


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2em auto;max-width:1100px;
color:#222;padding:0 1em}h1{font-size:1.6em}h2{font-size:1.2em;margin-top:2em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.5em 0;font-size:.9em}th,td{border:1px solid #ccc;padding:3px 8px;
text-align:left}th{background:#f4f4f4}img{max-width:100%;border:1px solid #eee}.note{color:#666;
font-style:italic}.muted{color:#888}
"""


def _info_rows(attrs: dict[str, Any], summary: dict[str, Any], shown_url: str) -> list[list[Any]]:
    metric = summary.get("metric") or "value"
    info: list[list[Any]] = [
        ["engine", summary.get("engine") or "-"], ["metric", f"{metric} ({summary['direction']})"],
        ["task", summary.get("task") or "-"], ["storage", shown_url],
        ["trials", f"{summary['complete']} complete, {summary['pruned']} pruned, {summary['failed']} failed,"
                   f" {summary['running']} running"],
        ["elapsed", fmt_elapsed(summary.get("elapsed_s"))],
        ["best validation " + metric, f"{fmt_value(summary.get('best_value'))} (trial {summary.get('best_trial')})"],
    ]
    if attrs.get(STUDY.TEST_SCORE) is not None:
        info.append([f"test {attrs.get(STUDY.TEST_METRIC) or metric}", fmt_value(attrs.get(STUDY.TEST_SCORE))])
    ds = attrs.get(STUDY.DATA_SUMMARY)
    if ds:
        info.append(["data", data_line(ds)])
    return info


def _index_html(study: Any, summary: dict[str, Any], rows: list[dict[str, Any]], rep: _Report,
                evaluated: bool, shown_url: str) -> str:
    e = html.escape
    metric = summary.get("metric") or "value"
    trows = [[r["rank"] if r["rank"] is not None else "-", r["number"], r["state"], r["value"],
              fmt_params(r["params"]), r["epochs"],
              "-" if r["fit_time"] is None else f"{r['fit_time']:.2f}", (r.get("reason") or "")[:80]] for r in rows]
    parts = [
        "<!DOCTYPE html>", "<html lang='en'><head><meta charset='utf-8'>",
        f"<title>hpsearch report: {e(study.study_name)}</title><style>{_CSS}</style></head><body>",
        f"<h1>hpsearch report: {e(study.study_name)}</h1>",
        f"<p class='muted'>generated {e(_dt.datetime.now().isoformat(timespec='seconds'))}</p>",
        _html_table(["", ""], _info_rows(study.user_attrs, summary, shown_url)).replace(
            "<thead><tr><th></th><th></th></tr></thead>", ""),
        "<h2>Top trials</h2>",
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
    metrics_link = "test metrics also in <a href='metrics.json'>metrics.json</a>; " if evaluated else ""
    parts.append(f"<p class='muted'>{metrics_link}all trials in <a href='trials.csv'>trials.csv</a></p>")
    parts.append("</body></html>")
    return "\n".join(parts)


def _output_folder(out_dir: str) -> Path:
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise UserError(f"-o {out_dir}: is a file; give a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"-o {out_dir}: cannot create the folder ({e.strerror})") from None
    return out


def write_report(study_name: str, out_dir: str, storage: str | None = None,
                 artifacts: str | None = None) -> list[Path]:
    """Write PNG plots, ``trials.csv``, ``metrics.json`` and an offline ``index.html`` to ``out_dir``.

    Returns the written files, ``index.html`` last.
    """
    url, _, study = open_study_for_reading(study_name, storage)
    rep = _Report(_output_folder(out_dir))
    trials = study.get_trials(deepcopy=False)
    summary = study_summary(study.study_name, list(study.directions), dict(study.user_attrs), trials,
                            _dt.datetime.now())
    direction, metric = summary["direction"], summary.get("metric") or "value"
    complete = [t for t in trials if t.state.name == "COMPLETE" and primary_value(t) is not None]
    scores = _draw(rep, study, url, artifacts, direction, metric, complete)

    df = study.trials_dataframe() if trials else None  # the table for scripts
    csv_path = Path(rep.path("trials.csv"))
    if df is not None and len(df.columns):
        df.to_csv(csv_path, index=False)
    else:
        csv_path.write_text("number,state,value\n", encoding="utf-8")
    if scores:
        payload = {"study": study.study_name, "best_trial": summary.get("best_trial"),
                   "validation": {metric: summary.get("best_value")},
                   "recorded_test": study.user_attrs.get(STUDY.TEST_METRICS) or {}, "test": scores}
        Path(rep.path("metrics.json")).write_text(json.dumps(clean_attr(payload), indent=2), encoding="utf-8")
    page = _index_html(study, summary, trial_rows(trials, direction, limit=TOP_ROWS), rep, bool(scores),
                       redact_url(url))
    Path(rep.path("index.html")).write_text(page, encoding="utf-8")
    return rep.files
