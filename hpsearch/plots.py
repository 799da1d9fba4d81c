"""Every figure hpsearch draws: the per-trial training-curve PNG and the report's plots.

Figures are drawn on bare ``Figure`` objects with the Agg canvas (no pyplot state, no display), from
plain data (histories, curves, the :class:`~hpsearch.results.evaluation.Evaluation` arrays); only Optuna's
own matplotlib plots go through pyplot, and those figures are closed as soon as they are saved.
Each ``save_*`` function writes one PNG file.
"""

from __future__ import annotations

import contextlib
import sys
import warnings
from collections.abc import Iterator, Sequence
from typing import Any

__all__ = [
    "OPTUNA_PLOTS",
    "report_style",
    "save_confusion_matrix",
    "save_curve_png",
    "save_learning_curves",
    "save_misclassified",
    "save_optuna_plot",
    "save_pareto_front",
    "save_per_class",
    "save_residuals",
    "save_roc_curve",
]

#: the parameter-importance evaluator the report uses (chosen here, not left to Optuna's default), and
#: what it computes
IMPORTANCE_EVALUATOR = "PED-ANOVA"
IMPORTANCE_NOTE = ("Optuna's PedAnovaImportanceEvaluator: how much each parameter's distribution in the top 10%"
                   " of trials differs from all trials; conditional parameters included")

#: Optuna's matplotlib plots by the report's name for them
OPTUNA_PLOTS = {
    "history": "plot_optimization_history",
    "importances": "plot_param_importances",
    "parallel": "plot_parallel_coordinate",
    "slice": "plot_slice",
}


def _figure(size: tuple[float, float], dpi: float | None = None) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=size, dpi=dpi)
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Any, path: str) -> None:
    fig.savefig(path, format="png", dpi=100, bbox_inches="tight")


def _curve_bases(history: dict[str, list[float]]) -> list[str]:
    """Up to three metric names to plot (loss first), each with its ``val_`` twin."""
    bases: list[str] = []
    for k in history:
        base = k[4:] if k.startswith("val_") else k
        if base not in bases:
            bases.append(base)
    if "loss" in bases:
        bases.remove("loss")
        bases.insert(0, "loss")
    return [b for b in bases if b not in ("lr", "learning_rate")][:3] or ["loss"]


def save_curve_png(history: dict[str, list[float]], path: str, title: str = "") -> None:
    """A small learning-curve PNG: loss / val_loss and the other metrics per epoch.

    Called once per finished leading trial by the engines, so it stays fast (Agg canvas on a bare
    ``Figure``, no pyplot state, low dpi, fixed margins instead of tight_layout's second draw).
    """
    from matplotlib.ticker import MaxNLocator

    hist = {str(k): [float("nan") if v is None else float(v) for v in vals]
            for k, vals in (history or {}).items() if vals is not None and len(vals)}
    bases = _curve_bases(hist)
    n = len(bases)
    fig = _figure((3.2 * n, 2.6), dpi=72)
    fig.subplots_adjust(left=0.16 / n, right=1 - 0.03 / n, bottom=0.17, top=0.8 if title else 0.88,
                        wspace=0.35)
    axes = fig.subplots(1, n, squeeze=False)[0]
    for ax, base in zip(axes, bases, strict=True):
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


@contextlib.contextmanager
def report_style() -> Iterator[None]:
    """Agg (unless pyplot is already in use) and a private rc context: Optuna's plots switch the
    global style, and a report must not leave it switched for the caller."""
    import matplotlib

    if "matplotlib.pyplot" not in sys.modules:
        matplotlib.use("Agg")
    with matplotlib.rc_context():
        yield


def _tidy_log_axes(fig: Any) -> None:
    """Drop minor tick labels on log axes: Optuna's slice plots label them and they overlap."""
    from matplotlib.ticker import NullFormatter

    for ax in fig.axes:
        if ax.get_xscale() == "log":
            ax.xaxis.set_minor_formatter(NullFormatter())
        if ax.get_yscale() == "log":
            ax.yaxis.set_minor_formatter(NullFormatter())


def save_optuna_plot(kind: str, study: Any, target_name: str, path: str) -> None:
    """One of Optuna's matplotlib plots (:data:`OPTUNA_PLOTS`) of ``study`` as a PNG.

    Raises what Optuna raises when the plot cannot be drawn for this study; its figures are closed
    either way.
    """
    import matplotlib.pyplot as plt
    import numpy as np
    import optuna.visualization.matplotlib as ovm

    # several objectives: Optuna's plots need one target; they show the first objective
    target: dict[str, Any] = {"target": lambda t: t.values[0]} if len(study.directions) > 1 else {}
    if kind == "importances":
        from optuna.importance import PedAnovaImportanceEvaluator

        target["evaluator"] = PedAnovaImportanceEvaluator()  # named in IMPORTANCE_EVALUATOR
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ax = getattr(ovm, OPTUNA_PLOTS[kind])(study, target_name=target_name, **target)
        fig = ax.flatten()[0].figure if isinstance(ax, np.ndarray) else ax.figure
        if kind == "importances":
            fig.axes[0].set_title(f"Hyperparameter importances ({IMPORTANCE_EVALUATOR})")
        _tidy_log_axes(fig)
        _save(fig, path)
        plt.close(fig)
    except BaseException:
        plt.close("all")
        raise


def save_pareto_front(study: Any, names: Sequence[str], path: str) -> None:
    """The Pareto front of a study of two or three objectives (Optuna's ``plot_pareto_front``: every
    completed trial, the front highlighted; infeasible trials are stored PRUNED, so never on it)."""
    import matplotlib.pyplot as plt
    import optuna.visualization.matplotlib as ovm

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ax = ovm.plot_pareto_front(study, target_names=list(names))
        fig = ax.get_figure(root=True)
        _save(fig, path)
        plt.close(fig)
    except BaseException:
        plt.close("all")
        raise


def save_learning_curves(curves: Sequence[tuple[str, Sequence[tuple[int, float]]]], metric: str, title: str,
                         path: str) -> None:
    """Validation metric per epoch of several trials: ``curves`` is (legend label, [(epoch, value)])."""
    fig = _figure((7, 4))
    ax = fig.subplots()
    for label, points in curves:
        ax.plot([e + 1 for e, _ in points], [v for _, v in points], marker="o", markersize=3, label=label)
    ax.set_xlabel("epoch")
    ax.set_ylabel(f"validation {metric}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title)
    _save(fig, path)


def save_confusion_matrix(confusion: list[list[int]], labels: list[str], accuracy: float, path: str) -> None:
    """Confusion matrix, rows the true class, columns the predicted one."""
    import numpy as np
    from sklearn.metrics import ConfusionMatrixDisplay

    k = len(labels)
    fig = _figure((1.2 + 0.6 * max(k, 4), 1.0 + 0.6 * max(k, 4)))
    ax = fig.subplots()
    ConfusionMatrixDisplay(np.asarray(confusion), display_labels=labels).plot(ax=ax, colorbar=False)
    ax.set_title(f"Confusion matrix (test, accuracy {accuracy:.3f})")
    _save(fig, path)


def save_roc_curve(fpr: Sequence[float], tpr: Sequence[float], auc: float, positive: str, path: str) -> None:
    """ROC curve of a binary classifier (``positive``: the class scored as positive)."""
    fig = _figure((5, 4.5))
    ax = fig.subplots()
    ax.plot(fpr, tpr, label=f"best model (AUC = {auc:.2f})")
    ax.plot([0, 1], [0, 1], ":", color="grey")
    ax.set_xlabel(f"False Positive Rate (Positive label: {positive})")
    ax.set_ylabel(f"True Positive Rate (Positive label: {positive})")
    ax.set_aspect("equal")
    ax.set_xlim(-0.01, 1.01)
    ax.set_ylim(-0.01, 1.01)
    ax.legend(loc="lower right")
    ax.set_title(f"ROC curve (test, AUC {auc:.3f})")
    _save(fig, path)


def save_per_class(labels: list[str], precision: Sequence[float], recall: Sequence[float], path: str) -> None:
    """Precision and recall of each class, side by side."""
    import numpy as np

    k = len(labels)
    fig = _figure((max(5, 0.7 * k + 2), 3.8))
    ax = fig.subplots()
    x = np.arange(k)
    ax.bar(x - 0.2, precision, 0.4, label="precision")
    ax.bar(x + 0.2, recall, 0.4, label="recall")
    ax.set_xticks(x, labels)
    ax.set_ylim(0, 1.05)
    ax.set_xlabel("class")
    ax.legend(fontsize=8)
    ax.set_title("Per-class precision / recall (test)")
    _save(fig, path)


def save_residuals(y: Any, pred: Any, r2: float, path: str) -> None:
    """Residuals against predictions, and predictions against the truth."""
    fig = _figure((10, 4))
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
    ax2.set_title(f"Predicted vs true (R2 {r2:.3f})")
    _save(fig, path)


def _displayable(image: Any) -> tuple[Any, str | None]:
    """One image as imshow takes it, min-max scaled to [0, 1] (the inputs are standardized):
    (h, w) and (h, w, 1) in grey, (h, w, 3|4) in colour, other channel counts by their first one."""
    import numpy as np

    a = np.asarray(image, dtype=np.float64)
    if a.ndim == 3:
        a = a if a.shape[-1] in (3, 4) else a[..., 0]
    lo, hi = float(np.nanmin(a)), float(np.nanmax(a))
    a = (a - lo) / (hi - lo) if hi > lo else np.zeros_like(a)
    return (a, None) if a.ndim == 3 else (a, "gray_r")


def save_misclassified(images: Any, y_true: Sequence[int], y_pred: Sequence[int], labels: Sequence[str],
                       path: str, limit: int = 32) -> None:
    """A grid of the first ``limit`` misclassified test images, each titled with its true and
    predicted label. ``images``: (rows, h, w) or (rows, h, w, c); ``y_*``: class indices into
    ``labels``. Raises ValueError when every image is classified correctly (nothing to draw)."""
    import numpy as np

    wrong = np.flatnonzero(np.asarray(y_true) != np.asarray(y_pred))
    if not len(wrong):
        raise ValueError("every test image is classified correctly")
    shown = wrong[:limit]
    cols = min(8, len(shown))
    rows = -(-len(shown) // cols)
    fig = _figure((1.5 * cols, 1.75 * rows + 0.4))
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, i in zip(axes.flat, shown, strict=False):
        image, cmap = _displayable(images[i])
        ax.imshow(image, cmap=cmap, interpolation="nearest")
        ax.set_title(f"true {labels[int(y_true[i])]}\npred {labels[int(y_pred[i])]}", fontsize=8, color="#b00")
    fig.suptitle(f"Misclassified test images: {len(shown)} of {len(wrong)} shown "
                 f"({len(wrong)} of {len(y_true)} wrong)", fontsize=10)
    _save(fig, path)
