"""Packed cross-validation for the scikit-learn engines (random, grid): ``train.pack`` trains the
candidates of one fold together in one compiled model (:mod:`hpsearch.packing.model`), fold by fold, and
hands each candidate's fold outcomes back to :class:`~hpsearch.engines.sklearn.CandidateSearch`,
which records it exactly as an unpacked candidate (fold scores, std, epochs, curve, rank, refit).

What stays as unpacked, member by member:

* the candidates (the engine's own ``ParameterSampler`` / ``ParameterGrid`` list) and the folds
  (the search's ``check_cv`` splits);
* each fold's preprocessing: the pipeline's steps fitted on that fold's training rows, applied to
  its held-out rows and to the validation split;
* the initial weights when ``search.seed`` is set: each member starts from the weights its scikeras
  estimator builds (``initialize``: the same seeded build as in ``fit``);
* the study's early-stopping rule (:mod:`hpsearch.trials.stopping`: Keras' ``EarlyStopping`` on
  the study metric, or ``val_loss``) per member on the validation split, best weights restored as
  configured; the fold score from the restored weights on the held-out rows.

What differs: the batch order (all members of a pack see the same shuffled batches; unpacked, each
fit shuffles on its own), so fold scores are close, not equal; with shuffling off they are equal to
float tolerance (``tests/test_packing_cv.py``).

Why one pack per fold rather than candidates x folds in one pack: members that train on different
rows need an input per member (a (batch, K, features) feed), their own batches and, where fold sizes
differ, per-member masks of the optimizer step; grouping by fold keeps the shared-input layout, and
the classic recipe's 10 candidates x 3 folds become 3 packs of 10, compiled once and reused fold
after fold (:meth:`~hpsearch.packing.model.PackedModel.reset_optimizer`). Measured (loaded 2-core
machine, digits folds, SGD members): an epoch of K=30 took 0.94 s and of K=10 1.11 s, so one pack of
candidates x folds would train about 3x faster again; that is the next step.
Halving packs rung by rung: each rung's candidates are known when it starts (:func:`rung_packs`).
"""

from __future__ import annotations

import itertools
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from hpsearch.models.builders import task_of
from hpsearch.packing.model import (
    AUTO_MIN_MEMBERS,
    MemberSpec,
    PackedModel,
    auto_pack_size,
    member_seeds,
    member_spec,
    pack_refusal,
)
from hpsearch.packing.train import PackSettings, member_scores, stop_settings, train_pack
from hpsearch.trials.context import RunContext

__all__ = ["CandidateSearch", "PackedFold", "FoldPacks", "fold_packs", "rung_packs", "cv_pack_plan"]


class CandidateSearch(Protocol):
    """What a pack reads of the scikit-learn engine's search (:class:`hpsearch.engines.sklearn.
    CandidateSearch`, which calls this module: a protocol, not an import back)."""

    X: Any
    y: Any
    estimator: Any
    sign: Any
    spec: Any
    splits: Any
    valid: Any
    stored: dict[str, Any]
    packs: FoldPacks | None

_PREFIX = "model__"  # how CandidateSearch passes builder params to the pipeline


@dataclass
class PackedFold:
    """One candidate's outcome on one fold (the fields of ``hpsearch.engines.folds.FoldResult``)."""

    score: float  # the scorer's orientation (greater is better); NaN when the member failed
    epochs: int = 0
    curve: list[float | None] = field(default_factory=list)
    fit_time: float = 0.0
    score_time: float = 0.0
    failure: str | None = None
    history: dict[str, list[float]] = field(default_factory=dict)  # what a pack measures: the metric per epoch


def _key(params: dict[str, Any]) -> str:
    return json.dumps(params, sort_keys=True, default=str)


def _base(ctx: RunContext) -> dict[str, Any]:
    return {**ctx.space.fixed, **ctx.builder_extra}


def cv_pack_plan(ctx: RunContext, engine: str, candidates: list[dict[str, Any]]) -> tuple[int, str | None]:
    """(K, note): members per pack for these candidates (builder params) and, when ``train.pack``
    asked for packing this study cannot use, the one-line reason it trains one model per fit."""
    import keras

    cfg, want = ctx.cfg, ctx.cfg.train.pack
    if want == 1 or len(candidates) < 2:
        return 1, None
    specs = [member_spec(ctx.builder, {**_base(ctx), **p}) for p in candidates]
    reasons = [
        (len(ctx.data.meta().get("X_shape_", (0, 0))) > 2, "N-D input"),
        (cfg.train.trial_timeout is not None, "train.trial_timeout"),
        (cfg.model.init_from is not None, "model.init_from"),
        (bool({"epochs", "batch_size"} & set(ctx.space.params)), "a searched epochs or batch_size"),
        (len(cfg.search.metrics or []) > 1, "search.metric with several objectives"),  # packs score one
    ]
    why = next((w for bad, w in reasons if bad), None) or pack_refusal(
        ctx.builder, task_of(ctx.data.meta()), ctx.metric, None, cfg.train.class_weight, keras.backend.backend())
    n_packable = sum(isinstance(s, MemberSpec) for s in specs)
    if why is None and n_packable < 2:
        why = f"model params {next(s for s in specs if isinstance(s, str))}"
    k = int(want) if want != "auto" else 0
    if want == "auto":
        biggest = max((_n_params(ctx, s) for s in specs if isinstance(s, MemberSpec)), default=0)
        k = min(auto_pack_size(biggest, int(cfg.train.batch_size)), len(candidates))  # at most AUTO_MAX_MEMBERS
        if k < AUTO_MIN_MEMBERS:
            return 1, None  # too few members to pay: no note, as the Optuna engine's auto
    if why is not None:
        return 1, f"hpsearch: train.pack {cfg.train.pack} -> 1: {why} is not packed yet (one model per fit)"
    return k, None


def _n_params(ctx: RunContext, spec: MemberSpec) -> int:
    meta = ctx.data.meta()
    sizes = [int(np.prod(meta.get("n_features_in_") or 1)), *spec.widths,
             int(meta.get("n_classes_") or meta.get("n_outputs_") or 1)]
    return sum(a * b + b for a, b in itertools.pairwise(sizes))


def _cv_pack_line(ctx: RunContext, k: int, note: str | None, n: int) -> str:
    """The one line that says what ``train.pack`` decided for these candidates' folds."""
    want = ctx.cfg.train.pack
    if note:
        return note.removeprefix("hpsearch: ")
    if k > 1:
        return f"train.pack {want} -> {k}: {n} candidates x {ctx.cfg.search.cv or 1} folds train {k} at a time"
    if want == 1:
        return "train.pack 1: one model per fit"
    return (f"train.pack {want} -> 1: one model per fit ({n} candidates: too few of one shape to pay for a"
            " pack's compile)")


def fold_packs(ctx: RunContext, search: CandidateSearch, engine: str, candidates: list[dict[str, Any]],
               epochs: int | None = None, say: bool = True) -> FoldPacks | None:
    """The packs for ``candidates`` (the engine's, not stored yet), or None: one model per fit.
    ``epochs``: a halving rung's (the candidates' params then carry it, as the rung fits them);
    halving is planned rung by rung (:func:`rung_packs`), not here."""
    if engine == "halving" and epochs is None:
        return None
    planned = [ctx.space.builder_params(p if epochs is None else {**p, "epochs": epochs}) for p in candidates]
    k, note = cv_pack_plan(ctx, engine, planned)
    if say:
        ctx.decide("pack", k, _cv_pack_line(ctx, k, note, len(planned)))
    return FoldPacks(ctx, search, planned, k, epochs) if k > 1 else None


def rung_packs(ctx: RunContext, search: CandidateSearch, rungs: list[Any],
               key: Callable[[dict[str, Any], int], str]) -> Callable[[list[dict[str, Any]], Any], None]:
    """Halving's packs: before each rung, its candidates not stored yet (``key(params, epochs)``)
    planned at the rung's epochs, so a rung's candidates x folds train as packs like a random
    search's; the note on what does not pack is said once, at the first rung."""

    def on_rung(current: list[dict[str, Any]], rung: Any) -> None:
        todo = [p for p in current if key(p, rung.epochs) not in search.stored]
        search.packs = fold_packs(ctx, search, "halving", todo, rung.epochs, say=rung is rungs[0])

    return on_rung


class FoldPacks:
    """Trains planned candidates K at a time, one pack per fold, when the search first asks for one
    of them; :meth:`folds` answers each candidate's fold outcomes (None: train it alone)."""

    def __init__(self, ctx: RunContext, search: CandidateSearch, planned: list[dict[str, Any]], k: int,
                 epochs: int | None = None) -> None:
        self.ctx, self.search, self.k = ctx, search, k
        self.epochs = epochs or ctx.cfg.train.epochs  # a halving rung's, or every candidate's
        self.specs: dict[str, MemberSpec] = {}
        self.params: dict[str, dict[str, Any]] = {}
        for p in planned:
            spec = member_spec(ctx.builder, {**_base(ctx), **p})
            if isinstance(spec, MemberSpec):
                self.specs[_key(p)], self.params[_key(p)] = spec, p
        self.order = list(self.specs)
        self.done: dict[str, list[PackedFold]] = {}
        self.pm: PackedModel | None = None  # the chunk's compiled pack, reused fold after fold
        est = search.estimator.steps[-1][1]
        self.seed, self.shuffle = est.random_state, bool(est.shuffle)

    def folds(self, params: dict[str, Any]) -> list[PackedFold] | None:
        """The fold outcomes of the candidate with these pipeline params (``model__*``)."""
        key = _key({k[len(_PREFIX):]: v for k, v in params.items()})
        if key not in self.specs:
            return None
        if key not in self.done:
            start = self.order.index(key)
            chunk = [c for c in self.order[start:] if c not in self.done][:self.k]
            if len(chunk) < 2:
                return None  # the last one of the plan: a pack of one does not pay
            self._train(chunk)
        return self.done.pop(key)

    def _train(self, chunk: list[str]) -> None:
        s = self.search
        results: list[list[PackedFold]] = [[] for _ in chunk]
        inits = self._initial_weights(chunk) if self.seed is not None else None
        for train, test in s.splits:
            for i, fold in enumerate(self._fold(chunk, inits, train, test)):
                results[i].append(fold)
        self.done.update(zip(chunk, results))

    def _initial_weights(self, chunk: list[str]) -> list[list[np.ndarray]]:
        """Each member's weights as its seeded scikeras estimator builds them (as unpacked)."""
        from sklearn.base import clone

        s = self.search
        X, y = s.X[s.splits[0][0]], s.y[s.splits[0][0]]
        pre = clone(s.estimator[:-1]).fit(X, y)
        Xt = pre.transform(X)
        out = []
        for key in chunk:
            est = clone(s.estimator.steps[-1][1]).set_params(**self.params[key])
            out.append([np.asarray(w) for w in est.initialize(Xt, y).model_.get_weights()])
        return out

    def _fold(self, chunk: list[str], inits: list[list[np.ndarray]] | None, train: np.ndarray,
              test: np.ndarray) -> list[PackedFold]:
        """One pack: the chunk's members trained on one fold's rows, scored on its held-out rows."""
        from sklearn.base import clone

        s, ctx = self.search, self.ctx
        pre = clone(s.estimator[:-1])  # the fold's own preprocessing, as FoldPipeline fits it
        Xt = np.asarray(pre.fit_transform(s.X[train], s.y[train]), dtype="float32")
        Xv, yv = np.asarray(pre.transform(s.valid[0]), dtype="float32"), s.valid[1]
        Xs = np.asarray(pre.transform(s.X[test]), dtype="float32")
        specs = [self.specs[k] for k in chunk]
        pm = self.pm
        if pm is not None and pm.specs == specs and pm.n_features == Xt.shape[1]:
            pm.reset_optimizer()  # the chunk's next fold: no rebuild, no compile
        else:
            pm = self.pm = PackedModel(specs, {**ctx.data.meta(), "n_features_in_": Xt.shape[1]},
                                       steps_per_execution=ctx.cfg.train.steps_per_execution)
        if inits is None:
            pm.init_weights(member_seeds(None, list(range(len(specs)))))
        else:
            for i, w in enumerate(inits):
                pm.set_member_weights(i, w)
        t0 = time.perf_counter()
        res = train_pack(pm, Xt, s.y[train], Xv, yv, self._settings(pm, yv))
        fit_time = time.perf_counter() - t0
        t0 = time.perf_counter()
        for i, r in enumerate(res):
            if r.weights is not None:
                pm.set_member_weights(i, r.weights)
        values = _scores(pm, Xs, s.y[test], ctx.metric, s.sign)
        score_time = (time.perf_counter() - t0) / len(res)
        total = max(1, sum(r.epochs for r in res))
        out = []
        for r, v in zip(res, values):
            ok = r.state == "COMPLETE"
            out.append(PackedFold(v if ok else math.nan, r.epochs, list(r.values), fit_time * r.epochs / total,
                                  score_time if ok else 0.0, None if ok else r.failure,
                                  {f"val_{ctx.metric}": list(r.values)}))
        return out

    def _settings(self, pm: PackedModel, yv: np.ndarray) -> PackSettings:
        cfg, spec = self.ctx.cfg, self.search.spec
        batch = int(cfg.train.batch_size)
        return PackSettings(epochs=self.epochs, batch_size=batch, valid_batch=batch, metric=spec.metric,
                            direction=self.ctx.direction, y_valid_var=spec.y_valid_var, shuffle=self.shuffle,
                            **stop_settings(spec.stop, spec.metric, pm, yv))


def _scores(pm: PackedModel, X: np.ndarray, y: np.ndarray, metric: str, sign: float) -> list[float]:
    """Each member's scorer value on held-out rows (``sklearn_scoring``'s scorer: accuracy, r2 or a
    negated error), from the members' predictions."""
    pred = pm.predict(X, max(len(X), 1))
    y_var = float(np.var(y)) if pm.task == "regression" else None
    return [v * sign for v in member_scores(pm.task, metric, pred, y, y_var)]
