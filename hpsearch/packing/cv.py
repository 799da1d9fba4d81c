"""Packed cross-validation for the scikit-learn engines (random, grid, halving's rungs): ``train.pack``
trains candidates together in one compiled model (:mod:`hpsearch.packing.model`) and hands each
candidate's fold outcomes back to :class:`~hpsearch.engines.sklearn.CandidateSearch`, which records
it exactly as an unpacked candidate (fold scores, std, epochs, curve, rank, refit).

Two layouts, planned by :func:`fold_packs` and said in one line (decision ``pack``):

* **candidates x folds in one pack** (the default): one member per candidate and fold, each on its
  own rows: the pack's input is (batch, K, features) (``PackedModel(per_member=True)``), member
  (candidate, fold) fed its fold's training rows, preprocessed by that fold's pipeline, in its own
  batches (:func:`hpsearch.packing.train.member_epoch_rows`). Folds differ in size by a row or two:
  each member's epochs cover exactly its own rows (index arrays of one common length, its last
  batch padded with weight-0 rows and its real rows there weighted as Keras' mean over them), which
  keeps members step for step only while the folds make the same number of batches: where they do
  not (a weight-0 batch would still be a momentum / Adam / l2 step), or the preprocessed folds
  differ in width (a one-hot encoder fitted per fold), it packs one fold at a time instead. The
  classic 10 candidates x 3 folds are one pack of 30: one trace and compile, every epoch one pass.
  Measured (``benchmarks/bench_packing_sklearn.py``, digits, 100 epochs, the shared 2-core CPU):
  59 s against 106 s one pack per fold and 614 s unpacked (10.4x), the same chosen candidate.
* **one pack per fold** (the fallback above, or ``train.pack`` N under two candidates x the folds):
  the candidates of one fold share the input (batch, features), fold by fold, compiled once and
  reused fold after fold (:meth:`~hpsearch.packing.model.PackedModel.reset_optimizer`).

What stays as unpacked, member by member: the candidates (the engine's own ``ParameterSampler`` /
``ParameterGrid`` list) and the folds (the search's ``check_cv`` splits); each fold's preprocessing
(the pipeline's steps fitted on that fold's training rows, applied to its held-out rows and to the
validation split); the initial weights when ``search.seed`` is set (each candidate starts every
fold from the weights its scikeras estimator builds: ``initialize``, the same seeded build as in
``fit``); the study's early-stopping rule (:mod:`hpsearch.trials.stopping`) per member on the
validation split as its fold's preprocessing maps it, best weights restored as configured; the
fold score from the restored weights on the fold's own held-out rows.

What differs: the batch order (a pack draws its members' orders from one generator; unpacked,
each fit shuffles on its own), so fold scores are close, not equal; with shuffling off they are
equal to float tolerance (``tests/packing/test_packing_cv.py``).
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
from hpsearch.packing.train import Pace, PackSettings, batch_counts_equal, member_scores, stop_settings, train_pack
from hpsearch.records import TRIAL
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
    pace: Pace  # how fast the last pack trained: what the next one is planned from

    @property
    def deadline(self) -> float | None:
        """``time.monotonic()`` at which search.timeout trips (None: no timeout)."""

    def note(self, line: str) -> None:
        """Say and store one decision ``search.timeout`` made."""

#: candidates x folds in one pack where they fit (:func:`cv_layout`); off: one pack per fold, the
#: layout before it (what ``benchmarks/bench_packing_sklearn.py`` compares it with)
FOLDS_TOGETHER = True

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
    deadline_stop: int | None = None  # the 0-based epoch at which search.timeout ended its training


def _key(params: dict[str, Any]) -> str:
    return json.dumps(params, sort_keys=True, default=str)


def _base(ctx: RunContext) -> dict[str, Any]:
    return {**ctx.space.fixed, **ctx.builder_extra}


def cv_pack_plan(ctx: RunContext, engine: str, candidates: list[dict[str, Any]], n_folds: int = 1
                 ) -> tuple[int, str | None]:
    """(K, note): members per pack for these candidates (builder params), each on ``n_folds`` folds
    (1: a pack per fold, a member per candidate) and, when ``train.pack`` asked for packing this
    study cannot use, the one-line reason it trains one model per fit."""
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
        k = min(auto_pack_size(biggest, int(cfg.train.batch_size)), len(candidates) * n_folds)  # <= AUTO_MAX_MEMBERS
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


@dataclass(frozen=True)
class CvPlan:
    """How candidates x folds pack: ``members`` per pack, ``per_pack`` candidates in each, and whether
    a member is one candidate on one fold (``together``) or one pack trains one fold (``why_apart``:
    the reason, when packing per fold)."""

    members: int
    per_pack: int
    together: bool
    why_apart: str | None = None


def cv_layout(ctx: RunContext, engine: str, planned: list[dict[str, Any]], sizes: list[int]
              ) -> tuple[CvPlan, str | None]:
    """The layout for ``planned`` candidates on folds of ``sizes`` training rows, and the note of
    :func:`cv_pack_plan` (why nothing packs)."""
    n_folds, batch = len(sizes), int(ctx.cfg.train.batch_size)
    k, note = cv_pack_plan(ctx, engine, planned, n_folds)
    if k < 2:
        return CvPlan(1, 1, False), note
    why = (None if batch_counts_equal(sizes, batch) else
           f"folds of {min(sizes)}-{max(sizes)} rows make {-(-min(sizes) // batch)}-{-(-max(sizes) // batch)}"
           f" batches of {batch}")
    if why is None and not FOLDS_TOGETHER:
        why = "hpsearch.packing.cv.FOLDS_TOGETHER is off"
    if why is None and n_folds > 1 and k < 2 * n_folds:
        why = f"{k} members hold under 2 candidates x {n_folds} folds"
    if why is None and n_folds > 1:
        per = min(k // n_folds, len(planned))
        return CvPlan(per * n_folds, per, True), note
    k, note = cv_pack_plan(ctx, engine, planned)
    return CvPlan(k, k, False, why if n_folds > 1 else None), note


def _cv_pack_line(ctx: RunContext, plan: CvPlan, note: str | None, n: int, n_folds: int) -> str:
    """The one line that says what ``train.pack`` decided for these candidates' folds."""
    want, k = ctx.cfg.train.pack, plan.members
    if note:
        return note.removeprefix("hpsearch: ")
    if plan.together:
        packs = -(-n // plan.per_pack)
        size = f"one pack of {k}" if packs == 1 else f"{packs} packs of up to {k}"
        return (f"train.pack {want} -> {k}: {n} candidates x {n_folds} folds in {size} members"
                " (one per candidate and fold, each on its fold's rows)")
    if k > 1:
        apart = f"; one pack per fold: {plan.why_apart}" if plan.why_apart else ""
        return f"train.pack {want} -> {k}: {n} candidates x {n_folds} folds train {k} at a time{apart}"
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
    plan, note = cv_layout(ctx, engine, planned, [len(train) for train, _ in search.splits])
    if say:
        value: Any = plan.members if plan.members < 2 else {
            "members": plan.members, "folds_in_pack": len(search.splits) if plan.together else 1}
        ctx.decide("pack", value, _cv_pack_line(ctx, plan, note, len(planned), len(search.splits)))
    return FoldPacks(ctx, search, planned, plan.per_pack, epochs, plan.together) if plan.members > 1 else None


def rung_packs(ctx: RunContext, search: CandidateSearch, rungs: list[Any],
               key: Callable[[dict[str, Any], int], str]) -> Callable[[list[dict[str, Any]], Any], None]:
    """Halving's packs: before each rung, its candidates not stored yet (``key(params, epochs)``)
    planned at the rung's epochs, so a rung's candidates x folds train as packs like a random
    search's; the note on what does not pack is said once, at the first rung."""

    def on_rung(current: list[dict[str, Any]], rung: Any) -> None:
        todo = [p for p in current if key(p, rung.epochs) not in search.stored]
        search.packs = fold_packs(ctx, search, "halving", todo, rung.epochs, say=rung is rungs[0])

    return on_rung


@dataclass
class _Fold:
    """One fold's rows, preprocessed by its own pipeline (fitted on its training rows)."""

    X: np.ndarray  # training rows
    y: np.ndarray
    X_valid: np.ndarray  # the validation split
    X_test: np.ndarray  # its held-out rows
    y_test: np.ndarray


class FoldPacks:
    """Trains planned candidates K at a time when the search first asks for one of them, all their
    folds in one pack (``together``) or one pack per fold; :meth:`folds` answers each candidate's
    fold outcomes (None: train it alone)."""

    def __init__(self, ctx: RunContext, search: CandidateSearch, planned: list[dict[str, Any]], k: int,
                 epochs: int | None = None, together: bool = False) -> None:
        self.ctx, self.search, self.k, self.together = ctx, search, k, together
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

    def trained(self, params: dict[str, Any]) -> bool:
        """Whether the candidate with these pipeline params (``model__*``) was trained in a pack that
        ran already (its fold outcomes wait to be recorded)."""
        return _key({k[len(_PREFIX):]: v for k, v in params.items()}) in self.done

    def folds(self, params: dict[str, Any]) -> list[PackedFold] | None:
        """The fold outcomes of the candidate with these pipeline params (``model__*``)."""
        key = _key({k[len(_PREFIX):]: v for k, v in params.items()})
        if key not in self.specs:
            return None
        if key not in self.done:
            start = self.order.index(key)
            chunk = [c for c in self.order[start:] if c not in self.done][:self.k]
            fit = self.fits()
            if fit is not None and 0 < fit < len(chunk):
                left = (self.search.deadline or 0.0) - time.monotonic()
                self.search.note(f"hpsearch: search.timeout: a pack of {fit} candidates, not {len(chunk)}: {left:.1f} s"
                                 f" left fit the compile and {self.epochs} epochs of {fit} candidates x their folds"
                                 " at the last pack's pace")
                chunk = chunk[:fit]
            if len(chunk) < 2:
                return None  # the last one of the plan: a pack of one does not pay
            self._train(chunk)
        return self.done.pop(key)

    def fits(self) -> int | None:
        """How many candidates a new pack can train all their folds' epochs for before
        ``search.timeout``, at the last pack's pace (its members: candidates x folds together, else
        one fold's, a pack per fold in turn); None: no timeout, or no pack ran yet."""
        s = self.search
        if s.deadline is None:
            return None
        nf = len(s.splits)
        left = s.deadline - time.monotonic()
        if self.together:
            fit = s.pace.fits(left, self.epochs, self.k * nf)
            return None if fit is None else fit // nf
        return s.pace.fits(left / nf, self.epochs, self.k)

    def _train(self, chunk: list[str]) -> None:
        s = self.search
        results: list[list[PackedFold]] = [[] for _ in chunk]
        folds = [self._prepare(train, test) for train, test in s.splits]
        inits = self._initial_weights(chunk, folds) if self.seed is not None else None
        widths = sorted({f.X.shape[1] for f in folds})
        if self.together and len(widths) > 1:
            self.together = False  # said once: the chunks after this one pack per fold too
            self.ctx.decide("pack.folds", 1, f"train.pack: the folds' preprocessing makes {widths} features:"
                            " one pack per fold (a pack's members share one input width)")
        if self.together:
            outcomes = self._pack(chunk, inits, folds)
            self.done.update((key, outcomes[i * len(folds):(i + 1) * len(folds)]) for i, key in enumerate(chunk))
            return
        for fold in folds:
            for i, outcome in enumerate(self._pack(chunk, inits, [fold])):
                results[i].append(outcome)
        self.done.update(zip(chunk, results))

    def _prepare(self, train: np.ndarray, test: np.ndarray) -> _Fold:
        from sklearn.base import clone

        s = self.search
        pre = clone(s.estimator[:-1])  # the fold's own preprocessing, as FoldPipeline fits it
        Xt = np.asarray(pre.fit_transform(s.X[train], s.y[train]), dtype="float32")
        return _Fold(Xt, s.y[train], np.asarray(pre.transform(s.valid[0]), dtype="float32"),
                     np.asarray(pre.transform(s.X[test]), dtype="float32"), s.y[test])

    def _initial_weights(self, chunk: list[str], folds: list[_Fold]) -> dict[int, list[list[np.ndarray]]]:
        """Each candidate's weights as its seeded scikeras estimator builds them (as unpacked: the
        same seeded build on every fold of one input width), per input width of the folds."""
        from sklearn.base import clone

        est, out = self.search.estimator.steps[-1][1], {}
        for fold in folds:
            if fold.X.shape[1] not in out:
                out[fold.X.shape[1]] = [[np.asarray(w) for w in clone(est).set_params(**self.params[key])
                                         .initialize(fold.X, fold.y).model_.get_weights()] for key in chunk]
        return out

    def _model(self, specs: list[MemberSpec], n_features: int, per_member: bool) -> PackedModel:
        """The pack's compiled model: the last one again for the same members on another fold (no
        rebuild, no compile), else a new build."""
        pm = self.pm
        if pm is not None and pm.specs == specs and pm.n_features == n_features and pm.per_member == per_member:
            pm.reset_optimizer()
            return pm
        self.pm = PackedModel(specs, {**self.ctx.data.meta(), "n_features_in_": n_features},
                              steps_per_execution=self.ctx.cfg.train.steps_per_execution, per_member=per_member)
        return self.pm

    def _pack(self, chunk: list[str], inits: dict[int, list[list[np.ndarray]]] | None,
              folds: list[_Fold]) -> list[PackedFold]:
        """One pack: the chunk's members on ``folds`` (member i * len(folds) + f: candidate i on fold
        f; one fold: the shared-input layout), each scored on its fold's held-out rows."""
        s, ctx, nf = self.search, self.ctx, len(folds)
        per_member = nf > 1
        specs = [self.specs[k] for k in chunk for _ in folds]
        pm = self._model(specs, folds[0].X.shape[1], per_member)
        if inits is None:
            pm.init_weights(member_seeds(None, list(range(len(specs)))))
        else:
            for m in range(len(specs)):
                pm.set_member_weights(m, inits[folds[m % nf].X.shape[1]][m // nf])
        t0 = time.perf_counter()
        if per_member:
            X: Any = [folds[m % nf].X for m in range(len(specs))]
            y: Any = [folds[m % nf].y for m in range(len(specs))]
            Xv = np.stack([folds[m % nf].X_valid for m in range(len(specs))], axis=1)
        else:
            X, y, Xv = folds[0].X, folds[0].y, folds[0].X_valid
        res = train_pack(pm, X, y, Xv, s.valid[1], self._settings(pm, s.valid[1]), pace=s.pace)
        fit_time = time.perf_counter() - t0
        t0 = time.perf_counter()
        for i, r in enumerate(res):
            if r.weights is not None:
                pm.set_member_weights(i, r.weights)
        values = _scores(pm, [folds[m % nf] for m in range(len(specs))], ctx.metric, s.sign)
        score_time = (time.perf_counter() - t0) / len(res)
        total = max(1, sum(r.epochs for r in res))
        out = []
        for r, v in zip(res, values):
            ok = r.state == "COMPLETE"
            out.append(PackedFold(v if ok else math.nan, r.epochs, list(r.values), fit_time * r.epochs / total,
                                  score_time if ok else 0.0, None if ok else r.failure,
                                  {f"val_{ctx.metric}": list(r.values)}, r.stopped_at if r.deadline_stop else None))
        if stopped := len({m // nf for m, r in enumerate(res) if r.deadline_stop}):
            s.note(f"hpsearch: search.timeout: {stopped} candidates of the pack ended their folds at an epoch"
                   " boundary, the next epoch would end after the deadline; recorded with each fold's best epoch"
                   f" so far (trial attribute {TRIAL.DEADLINE_STOP})")
        return out

    def _settings(self, pm: PackedModel, yv: np.ndarray) -> PackSettings:
        cfg, spec = self.ctx.cfg, self.search.spec
        batch = int(cfg.train.batch_size)
        return PackSettings(epochs=self.epochs, batch_size=batch, valid_batch=batch, metric=spec.metric,
                            direction=self.ctx.direction, y_valid_var=spec.y_valid_var, shuffle=self.shuffle,
                            deadline=self.search.deadline, **stop_settings(spec.stop, spec.metric, pm, yv))


def _scores(pm: PackedModel, folds: list[_Fold], metric: str, sign: float) -> list[float]:
    """Each member's scorer value on its fold's held-out rows (``sklearn_scoring``'s scorer: accuracy,
    r2 or a negated error), from the members' predictions; a per-member pack predicts every member's
    rows at once (the shorter folds padded with zero rows, not scored)."""
    if not pm.per_member:
        X, y = folds[0].X_test, folds[0].y_test
        pred = pm.predict(X, max(len(X), 1))
        y_var = float(np.var(y)) if pm.task == "regression" else None
        return [v * sign for v in member_scores(pm.task, metric, pred, y, y_var)]
    n = max(len(f.X_test) for f in folds)
    X = np.zeros((n, len(folds), pm.n_features), dtype="float32")
    for m, f in enumerate(folds):
        X[:len(f.X_test), m] = f.X_test
    pred = pm.predict(X, max(n, 1))
    out = []
    for m, f in enumerate(folds):
        y_var = float(np.var(f.y_test)) if pm.task == "regression" else None
        out.append(member_scores(pm.task, metric, pred[:len(f.y_test), m:m + 1], f.y_test, y_var)[0] * sign)
    return out
