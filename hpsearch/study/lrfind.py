"""The learning-rate range test (Smith 2017; Géron ch. 11): raise the rate exponentially from tiny to
large over a few hundred steps, watch the loss, and take about half of the rate where it turns up.

:func:`range_test` runs it on any compiled Keras model; :func:`lr_find` on a study (its builder,
data and fixed parameters; searched parameters at the middle of their range unless set) and draws
the figure; :func:`resolve_auto` turns ``space.learning_rate: {float: auto, log: true}`` into the
range the test suggests, storing the result on the study so that every later run (and every
worker) searches the same range. Divergence (a NaN loss, or a smoothed loss 4x its best) ends the
test early; it is drawn, not an error.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hpsearch.data.prepare import PreparedData, prepare_data
from hpsearch.errors import ConfigError
from hpsearch.models.builders import call_builder, resolve_builder
from hpsearch.spec.config import StudyConfig
from hpsearch.spec.space import CategoricalParam, FloatParam, IntParam, Param, SearchSpace
from hpsearch.study.validate import load_study_config

__all__ = ["LRFindResult", "LR_FIND_ATTR", "range_test", "suggest", "lr_find", "middle_params", "resolve_auto",
           "save_lr_plot"]

#: the study user attribute that holds the range test behind a ``float: auto`` parameter
LR_FIND_ATTR = "lr_find"
_SMOOTH = 9  # steps in the centred moving average (no lag, unlike an exponential average)
_DIVERGE = 4.0  # stop once the smoothed loss is this many times its best


@dataclass
class LRFindResult:
    """The test's trace and its reading: ``turn`` is the rate of the lowest smoothed loss,
    ``suggestion`` half of it, ``low``-``high`` the log-uniform range to search."""

    lrs: list[float]
    losses: list[float]
    smoothed: list[float]
    turn: float
    suggestion: float
    low: float
    high: float
    diverged_at: float | None
    figure: str | None = None

    def summary(self) -> dict[str, Any]:
        """The result without the trace (what the CLI prints and the study stores)."""
        out = asdict(self)
        for k in ("lrs", "losses", "smoothed"):
            out.pop(k)
        out["steps"] = len(self.lrs)
        return out


def _smooth(losses: np.ndarray) -> np.ndarray:
    w = min(_SMOOTH, len(losses))
    kernel = np.ones(w)
    num = np.convolve(losses, kernel, mode="same")
    den = np.convolve(np.ones_like(losses), kernel, mode="same")
    out: np.ndarray = num / den
    return out


def suggest(lrs: list[float], losses: list[float]) -> tuple[list[float], float, float, float, float]:
    """(smoothed losses, turn, suggestion, low, high) of a trace of finite losses."""
    smoothed = _smooth(np.asarray(losses, dtype=float))
    turn = float(lrs[int(np.argmin(smoothed))])
    suggestion = turn / 2
    return [float(v) for v in smoothed], turn, suggestion, suggestion / 10, turn


def range_test(model: Any, X: np.ndarray, y: np.ndarray, *, lr_min: float = 1e-6, lr_max: float = 10.0,
               steps: int = 200, batch_size: int = 32, seed: int = 0) -> LRFindResult:
    """Train ``model`` one batch per step with the rate rising from ``lr_min`` to ``lr_max``."""
    if not 0 < lr_min < lr_max:
        raise ConfigError(f"lr-find: need 0 < lr_min < lr_max, got {lr_min} and {lr_max}; give a rising range")
    if steps < _SMOOTH:
        raise ConfigError(f"lr-find --steps: must be >= {_SMOOTH}, got {steps}")
    rng = np.random.default_rng(seed)
    bs = max(1, min(batch_size, len(y)))
    order = rng.permutation(len(y))
    lrs: list[float] = []
    losses: list[float] = []
    diverged = None
    best = math.inf
    for i in range(steps):
        lr = lr_min * (lr_max / lr_min) ** (i / (steps - 1))
        try:
            model.optimizer.learning_rate = lr
        except TypeError:
            raise ConfigError("lr-find: the model's optimizer has a learning-rate schedule; build it with a"
                              " plain learning_rate (no lr_schedule) for the range test") from None
        start = (i * bs) % len(y)
        idx = order[start:start + bs] if start + bs <= len(y) else order[-bs:]
        loss = float(model.train_on_batch(X[idx], y[idx], return_dict=True)["loss"])
        if not math.isfinite(loss):
            diverged = lr
            break
        lrs.append(lr)
        losses.append(loss)
        recent = float(np.mean(losses[-_SMOOTH:]))
        best = min(best, recent)
        if len(losses) > _SMOOTH and recent > _DIVERGE * best:
            diverged = lr
            break
    if len(losses) < 2:
        raise ConfigError(f"lr-find: the loss was not finite from the first steps (at rate {lr_min:g});"
                          " lower lr_min or check the data")
    smoothed, turn, sugg, low, high = suggest(lrs, losses)
    return LRFindResult(lrs=lrs, losses=losses, smoothed=smoothed, turn=turn, suggestion=sugg, low=low, high=high,
                        diverged_at=diverged)


def save_lr_plot(result: LRFindResult, path: str | os.PathLike[str], title: str = "") -> None:
    """Smoothed loss against rate (log axis), the raw loss faint, the suggestion and range marked."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 4.0))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ax.plot(result.lrs, result.losses, color="0.75", lw=0.8, label="loss per step")
    ax.plot(result.lrs, result.smoothed, color="C0", lw=1.8, label="smoothed loss")
    ax.axvspan(result.low, result.high, color="C2", alpha=0.12, label="suggested range")
    ax.axvline(result.suggestion, color="C3", ls="--", label=f"suggestion {result.suggestion:.3g}")
    if result.diverged_at is not None:
        ax.axvline(result.diverged_at, color="k", ls=":", label=f"diverged at {result.diverged_at:.3g}")
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("training loss")
    top = float(np.percentile(result.smoothed, 95)) * 1.5
    ax.set_ylim(min(result.losses) * 0.9, max(top, min(result.smoothed) * 1.1))
    ax.set_title(title or "learning-rate range test")
    ax.legend(fontsize="small")
    fig.savefig(path, format="png", dpi=100, bbox_inches="tight")


def _middle(p: Param) -> Any:
    if isinstance(p, IntParam):
        mid = round(math.sqrt(p.low * p.high)) if p.log else (p.low + p.top) // 2
        return p.low + (mid - p.low) // p.step * p.step
    if isinstance(p, FloatParam):
        return math.sqrt(p.low * p.high) if p.log else (p.low + p.high) / 2
    if isinstance(p, CategoricalParam):
        return p.choices[(len(p.choices) - 1) // 2]
    raise TypeError(type(p).__name__)


def middle_params(space: SearchSpace, sets: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The fixed parameters, each searched one at the middle of its range, then ``sets`` on top."""
    params = space.full_params({name: _middle(p) for name, p in space.params.items()})
    params.update(sets or {})
    return params


def _test_params(params: dict[str, Any], lr_min: float) -> dict[str, Any]:
    """The range test drives the rate itself: no schedule, no warm-up."""
    out = dict(params, learning_rate=lr_min)
    out.pop("lr_schedule", None)
    out.pop("lr_warmup_epochs", None)
    return out


def run_on_data(cfg: StudyConfig, space: SearchSpace, data: PreparedData, builder: Any,
                sets: Mapping[str, Any] | None = None, *, steps: int = 200, lr_min: float = 1e-6,
                lr_max: float = 10.0) -> LRFindResult:
    """The range test of a study whose data is prepared and builder resolved."""
    import keras

    seed = cfg.search.seed or 0
    keras.backend.clear_session()
    keras.utils.set_random_seed(seed)
    params = _test_params(middle_params(space, sets), lr_min)
    model = call_builder(builder, params, data.meta(), clear_session=False)
    return range_test(model, data.X_train, data.y_train, lr_min=lr_min, lr_max=lr_max, steps=steps,
                      batch_size=32 if cfg.train.batch_size == "auto" else cfg.train.batch_size, seed=seed)


def lr_find(config: str | os.PathLike[str] | StudyConfig, *, sets: Mapping[str, Any] | None = None,
            output: str | os.PathLike[str] | None = None, steps: int = 200, lr_min: float = 1e-6,
            lr_max: float = 10.0) -> LRFindResult:
    """The range test of a study file; with ``output`` (a folder) its PNG is written there."""
    cfg = config if isinstance(config, StudyConfig) else load_study_config(config)
    space = cfg.search_space().without_auto()
    folder = None if output is None else Path(output)
    if folder is not None and not folder.is_dir():  # before the test trains, not after
        what = "is a file, not a folder; give a folder" if folder.exists() else "folder does not exist; create it first"
        raise ConfigError(f"-o {output}: {what}")
    data = prepare_data(cfg, 1)
    result = run_on_data(cfg, space, data, resolve_builder(cfg.model.builder), sets, steps=steps, lr_min=lr_min,
                         lr_max=lr_max)
    if folder is not None:
        path = folder / f"lr_find_{cfg.name}.png"
        save_lr_plot(result, path, f"{cfg.name}: learning-rate range test")
        result.figure = str(path)
    return result


def resolve_auto(cfg: StudyConfig, space: SearchSpace, data: PreparedData, builder: Any, study: Any,
                 artifact_store: Any) -> SearchSpace:
    """``space`` with every ``float: auto`` parameter replaced by the range the test suggests.

    The first run stores the result (and its figure, as an artifact) on the study; later runs and
    other workers read it back, so the search space never changes under a study.
    """
    auto = [name for name, p in space.params.items() if isinstance(p, FloatParam) and p.auto]
    if not auto:
        return space
    stored = study.user_attrs.get(LR_FIND_ATTR)
    if stored is None:
        result = run_on_data(cfg, space.without_auto(), data, builder)
        stored = result.summary()
        stored.pop("figure")  # no file of its own: the figure is the artifact
        stored["figure_artifact"] = _store_figure(result, study, artifact_store, cfg.name)
        study.set_user_attr(LR_FIND_ATTR, stored)
    low, high = float(stored["low"]), float(stored["high"])
    params = {name: (FloatParam(low, high, log=True, grid_points=getattr(p, "grid_points", None)) if name in auto
                     else p) for name, p in space.params.items()}
    return SearchSpace(params=params, fixed=dict(space.fixed))


def _store_figure(result: LRFindResult, study: Any, store: Any, name: str) -> str:
    import tempfile

    from optuna.artifacts import upload_artifact

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"lr_find_{name}.png"
        save_lr_plot(result, path, f"{name}: learning-rate range test")
        artifact_id: str = upload_artifact(artifact_store=store, file_path=str(path), study_or_trial=study)
    return artifact_id
