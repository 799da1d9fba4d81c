"""Training a pack (:class:`hpsearch.packing.model.PackedModel`): every member on the same batches,
evaluated each epoch on the validation split; per member, at its own epochs, Keras'
``EarlyStopping`` rule, best-epoch weights, divergence, pruning and the epoch budget; a slot whose
member ended may take a new member (refilling, no rebuild).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from hpsearch.packing.model import PackedModel
from hpsearch.trials.stopping import StopRule

__all__ = ["MemberResult", "Pace", "PackSettings", "EpochHook", "RefillHook", "member_scores", "member_val_losses",
           "stop_settings", "member_epoch_rows", "batch_counts_equal", "Shrinker", "train_pack"]


@dataclass
class MemberResult:
    """What training one member produced (per-epoch values, best epoch, its own weights)."""

    values: list[float] = field(default_factory=list)
    best: float | None = None
    best_epoch: int = 0  # 1-based; 0: none finite yet
    wait: int = 0
    stopped_at: int | None = None  # epoch (0-based) at which it was frozen
    state: str = "RUNNING"  # RUNNING, COMPLETE, PRUNED, FAIL; EMPTY: a slot with no member (PackedModel.empty)
    failure: str | None = None
    weights: list[np.ndarray] | None = None  # standalone layout: [W0, b0, W1, b1, ...]
    deadline_stop: bool = False  # ended at an epoch boundary because the next epoch would pass the deadline

    @property
    def epochs(self) -> int:
        return len(self.values)


def member_scores(task: str, metric: str, pred: np.ndarray, y: np.ndarray,
                  y_var: float | None) -> list[float]:
    """The study metric of each member from ``pred`` (rows, members, outputs); NaN where a member's
    predictions are not finite (it diverged). Computed as Keras' metric of the same name."""
    out = []
    for k in range(pred.shape[1]):
        p = pred[:, k, :]
        if not np.isfinite(p).all():
            out.append(math.nan)
        elif task == "multiclass":
            out.append(float(np.mean(np.argmax(p, axis=1) == y)))
        elif task == "binary":
            out.append(float(np.mean((p[:, 0] > 0.5) == (y.reshape(-1) > 0.5))))
        else:
            err = p - y.reshape(len(y), -1)
            mse = float(np.mean(np.square(err)))
            out.append({"mse": mse, "mae": float(np.mean(np.abs(err))), "rmse": math.sqrt(mse),
                        "r2": 1.0 - mse / y_var if y_var else math.nan}[metric])
    return out


@dataclass(frozen=True)
class PackSettings:
    """How a pack trains: the runner's settings, shared by every member."""

    epochs: int
    batch_size: int
    valid_batch: int
    metric: str
    direction: str
    patience: int  # Keras EarlyStopping's rule per member (epochs: never stops early)
    min_delta: float = 0.0
    restore_best: bool = True
    y_valid_var: float | None = None
    shuffle: bool = True
    #: EarlyStopping's quantity per member from validation predictions, minimised (val_loss, val_mse);
    #: None: the metric, in ``direction`` (:func:`stop_settings` sets these from the study's rule)
    monitor: Callable[[np.ndarray], list[float]] | None = None
    #: ``time.monotonic()`` by which training must end (``search.timeout``): no member is placed in
    #: a freed slot unless its ``epochs`` fit before it, and once the next epoch would end after it
    #: every running member ends at this epoch boundary (COMPLETE, best epoch so far, ``deadline_stop``)
    deadline: float | None = None


@dataclass
class Pace:
    """How fast a pack trained: its first epoch (trace and compile included) and its latest epoch,
    in seconds, for ``slots`` members, and the seconds recording one ended member took (its trial
    told, its model stored: kept across packs); what the deadline is checked against and the next
    pack is planned from (:meth:`fits`)."""

    slots: int = 0
    first_s: float | None = None
    epoch_s: float | None = None
    finish_s: float = 0.0  # telling one ended member whose model is not kept
    keep_s: float = 0.0  # storing the models of the members kept when members last ended together
    compile_s: float = 0.0  # the largest trace and compile seen (a pack that reused a model has none)

    def epoch(self) -> float | None:
        """Seconds of one epoch of this pack (the first one, compile included, until a second ran)."""
        return self.epoch_s if self.epoch_s is not None else self.first_s

    def fits(self, left: float, epochs: int, cap: int) -> int | None:
        """How many members (at most ``cap``) a new pack can train for ``epochs`` epochs in ``left``
        seconds: its compile plus ``epochs`` epochs, whose time grows with the members as this
        pack's did (``epoch_s`` per ``slots``); None until this pack ran two epochs."""
        if self.first_s is None or self.epoch_s is None or not self.slots:
            return None
        compile_s = max(0.0, self.compile_s, self.first_s - self.epoch_s)  # the next pack may build
        per_member = self.epoch_s / self.slots * epochs + self.finish_s
        return max(0, min(cap, int((left - compile_s - self.keep_s) / per_member)))


def stop_settings(rule: StopRule, metric: str, pm: PackedModel, yv: np.ndarray) -> dict[str, Any]:
    """:class:`PackSettings` fields for the study's early-stopping rule (:mod:`hpsearch.trials.stopping`,
    the one every engine uses): per member, the quantity ``rule.key`` names, from the members'
    validation predictions: the study ``metric``'s own scores, ``val_mse`` (rmse, r2) or ``val_loss``."""
    monitor: Callable[[np.ndarray], list[float]] | None = None
    if rule.key == "val_loss":
        def monitor(pred: np.ndarray) -> list[float]:
            return member_val_losses(pm, pred, yv)
    elif rule.key != f"val_{metric}":
        watched = rule.key.removeprefix("val_")
        assert rule.mode == "min" and watched == "mse"  # rmse / r2: the one other monitor, minimised

        def monitor(pred: np.ndarray) -> list[float]:
            return member_scores(pm.task, watched, pred, yv, None)
    return {"patience": rule.patience, "min_delta": rule.min_delta, "restore_best": rule.restore_best,
            "monitor": monitor}


_EPS = 1e-7  # keras.backend.epsilon(): the clip Keras' cross-entropies apply to probabilities


def member_val_losses(pm: PackedModel, pred: np.ndarray, y: np.ndarray) -> list[float]:
    """Each member's Keras ``val_loss``: its compiled loss on the validation rows plus its l1 / l2
    penalty (Keras adds the layers' regularisation losses to the loss it reports)."""
    p = pred.astype("float64")
    if pm.task == "multiclass":
        picked = np.take_along_axis(p, y.astype(int).reshape(-1, 1, 1), axis=2)[:, :, 0]
        loss = -np.log(np.clip(picked, _EPS, 1 - _EPS)).mean(axis=0)
    elif pm.task == "binary":
        q = np.clip(p, _EPS, 1 - _EPS)
        t = y.reshape(len(y), 1, -1).astype("float64")
        loss = -(t * np.log(q) + (1 - t) * np.log(1 - q)).mean(axis=(0, 2))
    else:
        loss = np.square(p - y.reshape(len(y), 1, -1)).mean(axis=(0, 2))
    values = None
    out = []
    for i, spec in enumerate(pm.specs):
        penalty = 0.0
        if spec.l1 or spec.l2:
            values = values if values is not None else pm.group_values()
            kernels = pm.member_weights(i, values)[0:-2:2]  # hidden kernels (the output layer has none)
            penalty = sum(spec.l1 * float(np.abs(w).sum()) + spec.l2 * float(np.square(w).sum()) for w in kernels)
        out.append(float(loss[i]) + penalty)
    return out


#: a chunk of epochs' rows fed to one ``fit`` call at most this large (digits: all 100 epochs, 28 MB)
_CHUNK_BYTES = 256 * 1024**2

#: called after each pack epoch with {member: (its own epoch, 0-based; value)} of the members
#: trained in it; returns those to prune
EpochHook = Callable[[dict[int, tuple[int, float]]], set[int]]
#: called after each pack epoch with the members that ended in it (their results final) and whether a
#: new member's epochs still fit before the deadline; returns the slots given a new member
#: (:meth:`PackedModel.replace`), which train on with a fresh result
RefillHook = Callable[[list[int], list[MemberResult], bool], set[int]]


def _epoch_end(pm: PackedModel, res: list[MemberResult], s: PackSettings, scores: list[float],
               hook: EpochHook | None, watched: list[float] | None = None) -> None:
    """Per member, at its own epoch: Keras' EarlyStopping rule (on ``watched``, minimised, if
    given), the epoch budget, best weights, divergence and pruning."""
    sign = 1.0 if s.direction == "maximize" and watched is None else -1.0
    live: dict[int, tuple[int, float]] = {}
    snap: list[int] = []
    for i, r in enumerate(res):
        if r.state != "RUNNING":
            continue
        epoch, v = r.epochs, scores[i]
        r.values.append(v)
        if not math.isfinite(v):
            r.state, r.stopped_at = "FAIL", epoch
            r.failure = f"training diverged: validation predictions became non-finite at epoch {epoch + 1}"
            pm.freeze(i)
            continue
        live[i] = (epoch, v)
        r.wait += 1
        if r.weights is None:
            snap.append(i)
        w = v if watched is None else watched[i]
        if r.best is None or sign * (w - sign * s.min_delta) > sign * r.best:
            r.best, r.best_epoch, r.wait = w, epoch + 1, 0
            snap.append(i)
        elif r.wait >= s.patience and epoch > 0:
            r.state, r.stopped_at = "COMPLETE", epoch
            pm.freeze(i)
        if r.state == "RUNNING" and r.epochs >= s.epochs:
            r.state = "COMPLETE"
            pm.freeze(i)
    if snap and s.restore_best:
        values = pm.group_values()
        for i in snap:
            res[i].weights = pm.member_weights(i, values)
    for i in (hook(live) if hook is not None else set()):
        res[i].state, res[i].stopped_at = "PRUNED", live[i][0]
        pm.freeze(i)


def _stop_at_deadline(pm: PackedModel, res: list[MemberResult]) -> None:
    """End every running member at this epoch boundary: the next epoch would end after the
    deadline. Each is COMPLETE with its best epoch so far (as EarlyStopping would have stopped it
    there), marked ``deadline_stop``."""
    for i, r in enumerate(res):
        if r.state == "RUNNING":
            r.state, r.stopped_at, r.deadline_stop = "COMPLETE", r.epochs - 1, True
            pm.freeze(i)


def _finish(pm: PackedModel, res: list[MemberResult], members: list[int], restore_best: bool) -> None:
    """The ended members' weights final: the best epoch's (restore_best) or the last ones (a frozen
    member's weights no longer change); none for a pruned or failed member."""
    values = pm.group_values() if members else []
    for i in members:
        r = res[i]
        if r.state == "RUNNING":
            r.state = "COMPLETE"
        if r.state == "COMPLETE" and (not restore_best or r.weights is None):
            r.weights = pm.member_weights(i, values)
        elif r.state != "COMPLETE":
            r.weights = None


def _epoch_rows(n: int, batch_size: int, epochs: int, rng: np.random.Generator | None
                ) -> tuple[np.ndarray, np.ndarray]:
    """Row indices and sample weights of ``epochs`` epochs of full batches: each epoch the rows in
    Keras' order (shuffled, or as they are), its last partial batch filled up to ``batch_size`` with
    rows of weight 0 and its real rows weighted ``batch_size / rows in it``, so each batch's loss is
    Keras' mean over the real rows while every batch has one shape: one trace and compile, not a
    second one for the last batch (measured 2.4 s at K=64 on the 2-core CPU)."""
    nb = -(-n // batch_size)
    last = n - (nb - 1) * batch_size
    pad = nb * batch_size - n
    weight = np.ones(nb * batch_size, dtype="float32")
    weight[(nb - 1) * batch_size:n] = batch_size / last
    weight[n:] = 0.0
    rows = [np.concatenate([order, order[:pad]]) for order in
            (rng.permutation(n) if rng is not None else np.arange(n) for _ in range(epochs))]
    return np.concatenate(rows), np.tile(weight, epochs)


def member_epoch_rows(sizes: list[int], batch_size: int, epochs: int, rng: np.random.Generator | None
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Per-member rows (rows, K) and sample weights (rows, K) of a pack whose members train on rows of
    their own (``sizes``: each member's training rows, e.g. its CV fold's): each member's own epochs
    as :func:`_epoch_rows` (its order, its last partial batch filled with weight-0 rows, its real rows
    there weighted ``batch_size / rows in it``), in index arrays of one common length. Members whose
    sizes differ by a row or two stay step for step with one another only while their batch counts
    are equal (a weight-0 batch would still be an optimizer step: momentum, Adam and l2 move on it),
    so unequal batch counts are refused (:func:`batch_counts_equal`); the caller packs such folds apart."""
    if not batch_counts_equal(sizes, batch_size):
        raise ValueError(f"members of one pack need one batch count: rows {sizes}, batch {batch_size}")
    cols = [_epoch_rows(n, batch_size, epochs, rng) for n in sizes]
    return np.stack([r for r, _ in cols], axis=1), np.stack([w for _, w in cols], axis=1)


def batch_counts_equal(sizes: list[int], batch_size: int) -> bool:
    """Whether rows of these ``sizes`` make one number of batches of ``batch_size`` (a pack's epoch)."""
    return len({-(-n // batch_size) for n in sizes}) <= 1


def _feed(pm: PackedModel, X: Any, y: Any, s: PackSettings, epochs: int, rng: np.random.Generator | None
          ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``epochs`` epochs of batches for ``fit``: rows, targets and sample weights. Shared rows: ``X`` and
    ``y`` are arrays. Per-member rows (``pm.per_member``): lists of each member's arrays; the input is
    (rows, K, features) in member order, targets and weights (rows, K[, outputs]) in the order of the
    model's K axis (:attr:`PackedModel.order`), as the per-member loss reads them."""
    if not pm.per_member:
        rows, weight = _epoch_rows(len(X), s.batch_size, epochs, rng)
        return X[rows], y[rows], weight
    idx, weight = member_epoch_rows([len(x) for x in X], s.batch_size, epochs, rng)
    xb = np.stack([x[idx[:, k]] for k, x in enumerate(X)], axis=1)
    order = pm.order
    yb = np.stack([y[m][idx[:, m]] for m in order], axis=1)
    return xb, yb, weight[:, order]


def _fit_data(xb: np.ndarray, yb: np.ndarray, weight: np.ndarray, batch_size: int) -> dict[str, Any]:
    """``fit``'s data for a chunk of a pack's batches, in order. TensorFlow: a tf.data pipeline with
    no background threads (no prefetch). Keras' own array adapter prefetches on tf.data's threads; a
    pack's ``fit`` ends early (``stop_training``: its members are done, or a shrink cuts the chunk),
    which leaves Keras' epoch iterator suspended in a reference cycle, and its destruction at the
    next full garbage collection waited for those threads: 0.3-7 s at a time, inside or after a run
    (issue 25's intermittent overshoot of search.timeout). Other backends: the arrays."""
    import keras

    if keras.backend.backend() != "tensorflow":
        return {"x": xb, "y": yb, "sample_weight": weight, "batch_size": batch_size, "shuffle": False}
    import tensorflow as tf

    options = tf.data.Options()
    options.autotune.enabled = False
    options.experimental_optimization.inject_prefetch = False
    data = tf.data.Dataset.from_tensor_slices((xb, yb, weight)).batch(batch_size).with_options(options)
    return {"x": data, "shuffle": False}


class Shrinker(Protocol):
    """Moves a pack's running members to a smaller compiled model (:mod:`hpsearch.packing.shrink`)."""

    def due(self, pm: PackedModel, res: list[MemberResult]) -> bool:
        """Whether to move them now (an epoch boundary; counted, never timed)."""

    def move(self, pm: PackedModel, res: list[MemberResult]) -> tuple[PackedModel, dict[int, int], PackSettings]:
        """Move them: the model they continue in, its slot -> the old slot, and its settings."""


def train_pack(pm: PackedModel, X: Any, y: Any, Xv: np.ndarray, yv: np.ndarray,
               s: PackSettings, hook: EpochHook | None = None, callbacks: list[Any] | None = None,
               refill: RefillHook | None = None, pace: Pace | None = None,
               shrink: Shrinker | None = None) -> list[MemberResult]:
    """Train every member of ``pm`` on the same batches; each stops, is pruned or fails alone, at
    its own epochs (at most ``s.epochs`` each). ``refill`` may put a new member in a slot whose
    member ended: the pack trains until no member runs. Returns one :class:`MemberResult` per slot
    (its last member's) with its own weights (best epoch's when ``restore_best``, as
    ``EarlyStopping(restore_best_weights=True)``).

    The epochs run as full batches (:func:`_epoch_rows`), fed in chunks of epochs to ``fit`` (a
    chunk's rows at most ``_CHUNK_BYTES``); on TensorFlow one compiled call runs a whole epoch
    (``steps_per_execution``: measured 20% less time per epoch at K=64). ``pace`` (filled in as the
    epochs run) times them: what ``s.deadline`` is checked against, and what plans the next pack.

    ``shrink`` (shared-input packs): at an epoch boundary where ``shrink.due``, the running members
    move to ``shrink.move``'s smaller model and train on from the rest of the same chunk of batches;
    the results returned are then the small model's slots (``res`` follows its members). ``pace``
    is left as the big pack's (the next pack is planned from it).

    A ``per_member`` pack takes ``X`` and ``y`` as lists of each member's rows and targets (its CV
    fold's, preprocessed by that fold's pipeline; one batch count for all: :func:`member_epoch_rows`)
    and ``Xv`` as (rows, K, features), the validation rows as each member's preprocessing maps them;
    ``yv`` is every member's."""
    n = max(len(x) for x in X) if pm.per_member else len(X)
    run = _PackRun(pm, -(-n // s.batch_size), Xv, yv, s, hook, refill, pace, shrink)
    parts = list(zip(X, y)) if pm.per_member else [(X, y)]
    row_bytes = max(1, sum(a[:1].nbytes + b[:1].nbytes for a, b in parts))
    per_chunk = max(1, min(s.epochs, _CHUNK_BYTES // (run.nb * s.batch_size * row_bytes)))
    rng = np.random.default_rng(pm.seed) if s.shuffle else None
    cbs = [run.callback(), *(callbacks or [])]
    while run.running():
        left = s.epochs - min(r.epochs for r in run.res if r.state == "RUNNING")
        chunk: tuple[np.ndarray, ...] = _feed(run.pm, X, y, s, min(per_chunk, left), rng)
        while len(chunk[0]):
            run.cut = None
            xb, yb, weight = chunk
            run.pm.model.fit(**_fit_data(xb, yb, weight, s.batch_size), epochs=1, verbose=0, callbacks=cbs)
            if run.cut is None:
                break
            run.move()  # the rest of this chunk's batches in the smaller model
            chunk = tuple(a[run.cut * s.batch_size:] for a in chunk)
    run.restore_pace()
    return run.res


class _PackRun:
    """One :func:`train_pack` call's state: the model its members train in (a shrink moves them),
    their results, and what runs at each pack epoch's end."""

    def __init__(self, pm: PackedModel, nb: int, Xv: np.ndarray, yv: np.ndarray, s: PackSettings,
                 hook: EpochHook | None, refill: RefillHook | None, pace: Pace | None, shrink: Shrinker | None) -> None:
        self.pm, self.nb, self.Xv, self.yv, self.s = pm, nb, Xv, yv, s
        self.hook, self.refill, self.shrink = hook, refill, shrink
        self.res = [MemberResult(state="EMPTY" if i in pm.empty else "RUNNING") for i in range(len(pm.specs))]
        self.timing = pace if pace is not None else Pace()
        self.timing.slots, self.timing.first_s, self.timing.epoch_s = len(self.res), None, None
        self.big: tuple[int, float | None, float | None] | None = None  # the pace before a shrink
        self.clock = time.monotonic()
        self.cut: int | None = None  # batches of the current fit call run when a shrink became due
        self._per_execution()

    def _per_execution(self) -> None:
        import keras

        model = self.pm.model
        if keras.backend.backend() == "tensorflow" and model.steps_per_execution != self.nb:
            model.steps_per_execution, model.train_function = self.nb, None  # JAX unrolls it: left as set

    def running(self) -> bool:
        return any(r.state == "RUNNING" for r in self.res)

    def callback(self) -> Any:
        import keras

        run = self

        class PerMember(keras.callbacks.Callback):
            def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
                if (batch + 1) % run.nb == 0:
                    run.epoch_end(self.model, batch + 1)

        return PerMember()

    def epoch_end(self, model: Any, done: int) -> None:
        """A pack epoch ended after ``done`` batches of this fit call: each member's epoch end, the
        deadline, the ended members finished and their slots refilled, then perhaps a shrink."""
        sync = getattr(model, "jax_state_sync", None)
        if sync is not None:  # JAX: the variables hold the state again (read and changed below)
            sync()
        pm, res, s, timing = self.pm, self.res, self.s, self.timing
        running = [i for i, r in enumerate(res) if r.state == "RUNNING"]
        pred = pm.predict(self.Xv, s.valid_batch)
        _epoch_end(pm, res, s, member_scores(pm.task, s.metric, pred, self.yv, s.y_valid_var), self.hook,
                   None if s.monitor is None else s.monitor(pred))
        now = time.monotonic()
        if timing.first_s is None:
            timing.first_s = now - self.clock
        else:
            timing.epoch_s = now - self.clock
            timing.compile_s = max(timing.compile_s, timing.first_s - timing.epoch_s)
        epoch_s, left = timing.epoch() or 0.0, math.inf if s.deadline is None else s.deadline - now
        next_s = timing.epoch_s or 0.0  # after the first epoch (the compile's) only a passed deadline stops
        if next_s + timing.finish_s * sum(r.state == "RUNNING" for r in res) + timing.keep_s > left or left <= 0:
            _stop_at_deadline(pm, res)  # the next epoch, and recording them after it, would pass the deadline
        ended = [i for i in running if res[i].state != "RUNNING"]
        _finish(pm, res, ended, s.restore_best)
        room = epoch_s * s.epochs + timing.finish_s * (len(running) - len(ended) + 1) + timing.keep_s <= left
        for i in self.refill(ended, res, room) if self.refill is not None and ended else ():
            res[i] = MemberResult()
        self.clock = time.monotonic()  # the next epoch's time leaves out ending members (finish_s, keep_s)
        if not self.running():
            model.stop_training = True
        elif self.shrink is not None and self.shrink.due(pm, res):
            self.cut, model.stop_training = done, True  # moved once this fit call returns

    def move(self) -> None:
        """The running members into the shrinker's smaller model; the pace times that model's epochs
        from here (its first one with its compile, if built), the big pack's kept for :meth:`restore_pace`."""
        assert self.shrink is not None
        pm, moved, self.s = self.shrink.move(self.pm, self.res)
        res = [MemberResult(state="EMPTY") for _ in pm.specs]
        for new, old in moved.items():
            res[new] = self.res[old]
        self.pm, self.res, t = pm, res, self.timing
        if self.big is None:
            self.big = (t.slots, t.first_s, t.epoch_s)
        t.slots, t.first_s, t.epoch_s = len(res), None, None
        self._per_execution()
        self.clock = time.monotonic()

    def restore_pace(self) -> None:
        """The big pack's pace back (what the next, full pack is planned from)."""
        if self.big is not None:
            self.timing.slots, self.timing.first_s, self.timing.epoch_s = self.big
