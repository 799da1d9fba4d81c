"""How far the chosen trial stands above the others: a finished study's selection note.

A trial's validation accuracy on n rows has a standard error of sqrt(p (1 - p) / n): 0.010 at
p = 0.96 on 360 rows. When several trials score within one standard error of the best, their order
is partly chance: the best of many such trials is chosen partly for its luck on the validation rows,
so its test score tends to be lower than its validation score. Measured (issue 25, digits, 37 s):
the ten best trials by validation (0.925-0.964) scored 0.933-0.972 on test in no particular order,
and the average of the best five scored 0.969-0.978 on test where the single best scored 0.950-0.961.

:func:`note_selection` says so in one line and the study attribute ``selection`` when it happens,
and with ``search.ensemble: K`` scores the best K's stored models averaged on the test split beside
the best model (``load_best(top_k=K)`` / ``hpsearch best NAME --ensemble K`` give that ensemble).
"""

from __future__ import annotations

import math

import numpy as np

from hpsearch.errors import UserError
from hpsearch.metrics import score_predictions
from hpsearch.models.scoring import predict_raw
from hpsearch.records import STUDY, clean_attr, primary_value, ranked
from hpsearch.storage.artifacts import load_model_artifacts
from hpsearch.storage.queries import top_models
from hpsearch.trials.context import RunContext

__all__ = ["PROPORTIONS", "MIN_WITHIN", "note_selection", "std_error"]

#: study metrics that are a proportion of the validation rows (a binomial standard error)
PROPORTIONS = frozenset({"accuracy"})
#: trials within one standard error of the best (the best included) from which the line is said
MIN_WITHIN = 3


def std_error(p: float, n: int) -> float:
    """The standard error of a proportion ``p`` measured on ``n`` rows."""
    return math.sqrt(max(0.0, p * (1.0 - p)) / max(1, n))


def note_selection(ctx: RunContext, best_test: float | None) -> None:
    """For a one-objective study whose trials were compared on holdout validation rows by a
    proportion metric: how many trials score within one standard error of the best (one line when
    at least ``MIN_WITHIN`` do), and with ``search.ensemble: K`` (an engine that keeps each trial's
    model) the test score of the best K averaged. Recorded as ``STUDY.SELECTION``."""
    cfg, study = ctx.cfg, ctx.study
    n = len(ctx.data.y_valid)
    if ctx.metric not in PROPORTIONS or ctx.several or ctx.engine.cv_folds(cfg) > 1 or not n:
        return
    done = ranked(study.get_trials(deepcopy=False), ctx.direction)
    if not done:
        return
    values = [float(v) for t in done if (v := primary_value(t)) is not None]  # ranked: all have one
    best = values[0]
    se = std_error(best, n)
    within = sum(abs(best - v) <= se + 1e-12 for v in values)
    k = cfg.search.ensemble if cfg.search.ensemble and cfg.search.ensemble > 1 else None
    ensemble = None if k is None or ctx.engine.refits_ensemble else _ensemble_test(ctx, k)
    line = None
    if within >= MIN_WITHIN or ensemble is not None:
        line = (f"selection: {within} trials are within one standard error ({se:.4f} on {n} validation rows)"
                f" of the best validation {ctx.metric} {best:.4f}, so their order is partly chance and the best"
                " one's test score may be lower")
        if ensemble is not None and best_test is not None:
            line += (f"; the average of the best {k} (search.ensemble) scored {ensemble:.4f} on test,"
                     f" the best one {best_test:.4f}")
        else:
            line += (f"; the average of the best {min(5, within)} is steadier (search.ensemble: {min(5, within)},"
                     f" load_best(top_k={min(5, within)}))")
        ctx.observer.message(f"hpsearch: {line}")
    study.set_user_attr(STUDY.SELECTION, clean_attr({
        "metric": ctx.metric, "valid_rows": n, "std_error": se, "best_value": best, "within_one_se": within,
        "ensemble": k, "ensemble_test_score": ensemble, "line": line}))


def _ensemble_test(ctx: RunContext, k: int) -> float | None:
    """The test score of the best ``k`` trials' stored models averaged; None without a test split or
    when fewer than ``k`` models are kept (``load_best(top_k=k)`` then says why)."""
    if not len(ctx.data.y_test):
        return None
    try:  # fewer models kept than asked, or one unreadable: load_best(top_k=k) says which
        models = [load_model_artifacts(ctx.artifact_store, mid, pid)[0] for _, mid, pid in top_models(ctx.study, k)]
    except UserError:
        return None
    outs = [predict_raw(model, ctx.data.X_test) for model in models]
    return score_predictions(ctx.metric, ctx.data.task, ctx.data.y_test, np.mean(outs, axis=0))
