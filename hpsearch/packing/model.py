"""Packed trials: K small MLPs of the built-in ``mlp`` builder trained together in one compiled model.

Small Keras models are bound by per-step overhead, not arithmetic (DESIGN.md section 4), so K
models in one compiled model train nearly K times the samples per second. The layout chosen by
measurement: members are grouped by (depth, activation, batch norm); each group has stacked weights
with a K axis (one einsum per layer, :mod:`hpsearch.packing.layers`) and hidden widths padded with zeros
to the group's widest member, so the compile time does not grow with K. Padded units stay exactly
zero (their weights start at zero and receive zero gradient: every activation here maps 0 to 0,
and batch norm maps a zero unit to its zero beta), so each member computes what it would alone.

Exact per-member training, as if each member ran alone:

* the loss is the sum of the members' mean losses: parameters are disjoint, so each member's
  gradient is its own loss's gradient; l1 / l2 are per-member factors on the member's own kernels;
* batch norm keeps per-member batch statistics, moving mean / variance and gamma / beta; dropout
  has a per-member rate (0: none) and draws its masks from a generator seeded with the pack;
* :class:`PackedOptimizer` applies Keras' own SGD (momentum, Nesterov) and Adam update formulas
  with per-member hyperparameters (a K axis), and an ``active`` mask that freezes a member (early
  stopped, pruned or diverged): no update and no optimizer-state change;
* :func:`hpsearch.packing.train.train_pack` evaluates every member each epoch on the validation split, applies Keras'
  ``EarlyStopping`` rule per member, keeps each member's best-epoch weights (batch norm's moving
  statistics included) and extracts them in the layout of the member's own standalone model.

The input is shared, (batch, features), every member training on the same rows; or, with
``per_member``, (batch, K, features), member k on rows of its own (the scikit-learn engines' packs of
candidates x folds, :mod:`hpsearch.packing.cv`): each group's first Dense contracts its own members'
rows (:func:`~hpsearch.packing.layers.member_inputs`), and the loss takes per-member targets and
sample weights (:func:`~hpsearch.packing.layers.packed_loss`, :func:`~hpsearch.packing.train.member_epoch_rows`).

What packs is decided by :func:`pack_refusal` (study level) and :func:`member_spec` (per trial):
everything else (alpha dropout, max_norm, weight decay, schedules, clipping, prelu, other
optimizers, user builders, CV, class_weight) trains one model per trial, with a one-line note.

Backends: TensorFlow and JAX compile the pack with XLA; torch runs it eagerly (Keras' torch
``jit_compile`` is torch.compile; no compile to pay, measured 1.25 s an epoch at K=64 on the
2-core CPU against 0.26 s on TensorFlow and 0.28 s on JAX after their 6-7 s compile).
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from hpsearch.models.builders import builder_defaults, task_of
from hpsearch.packing.layers import (
    NoiseSource,
    member_inputs,
    packed_loss,
    packed_optimizer,
    stacked_batch_norm,
    stacked_dense,
    stacked_dropout,
    stacked_regularizer,
)
from hpsearch.spec.space import coerce_value
from hpsearch.trials.seeds import trial_seeds

__all__ = ["PACKABLE_OPTIMIZERS", "AUTO_MAX_MEMBERS", "AUTO_MIN_MEMBERS", "MemberSpec", "member_spec", "pack_refusal",
           "spec_n_params", "auto_pack_size", "PackedModel", "member_seeds"]

#: builder optimizer names and their update rule in :class:`PackedOptimizer`
PACKABLE_OPTIMIZERS = ("sgd", "momentum", "nesterov", "adam")
_PACKABLE_METRICS = ("accuracy", "mse", "mae", "rmse", "r2")
_PACKABLE_TASKS = ("binary", "multiclass", "regression")
#: knobs of the built-in MLP a pack does not reproduce exactly; a member may use only their off value
_OFF_VALUES: dict[str, tuple[Any, ...]] = {
    "max_norm": (None,), "weight_decay": (None,),
    "clipnorm": (None,), "clipvalue": (None,), "lr_schedule": (None, "none"), "loss": (None,),
    "metrics": (None,), "funnel": (None,), "alpha_dropout": (False, None), "lr_warmup_epochs": (0, None),
}
_LAYER_ACTIVATIONS = ("prelu",)  # activations with weights of their own (a layer), not packed
_ADAM = {"beta_1": 0.9, "beta_2": 0.999, "epsilon": 1e-7}  # keras.optimizers.Adam defaults


@dataclass(frozen=True)
class MemberSpec:
    """One member of a pack: its architecture and its optimizer, from the trial's params."""

    widths: tuple[int, ...]
    activation: str
    kernel_initializer: str
    l1: float
    l2: float
    optimizer: str
    learning_rate: float
    momentum: float
    batch_norm: bool = False
    dropout: float = 0.0

    @property
    def group(self) -> tuple[int, str, bool]:
        """Members of one group share a stacked sub-graph."""
        return len(self.widths), self.activation, self.batch_norm


def member_spec(builder: Any, params: Mapping[str, Any]) -> MemberSpec | str:
    """The member for ``params`` of the built-in ``mlp`` builder, or why it cannot be packed."""
    from hpsearch.models.mlp import build_mlp

    if builder is not build_mlp:
        return "a user builder"
    p = {**builder_defaults(build_mlp), **{k: coerce_value(v) for k, v in params.items()}}
    for name, off in _OFF_VALUES.items():
        if p.get(name) not in off:
            return f"{name}={p[name]!r}"
    opt = str(p["optimizer"]).lower() if isinstance(p["optimizer"], str) else p["optimizer"]
    if opt not in PACKABLE_OPTIMIZERS:
        return f"optimizer={p['optimizer']!r}"
    act = str(p["activation"]).lower()
    if act in _LAYER_ACTIVATIONS:
        return f"activation={p['activation']!r}"
    init = p["kernel_initializer"] or ("lecun_normal" if act == "selu" else
                                       "glorot_uniform" if act == "tanh" else "he_normal")
    return MemberSpec(widths=_widths(p["n_neurons"], p["n_hidden"]), activation=act,
                      kernel_initializer=str(init), l1=float(p["l1"]), l2=float(p["l2"]), optimizer=opt,
                      learning_rate=float(p["learning_rate"]),
                      momentum=float(p["momentum"]) if opt in ("momentum", "nesterov") else 0.0,
                      batch_norm=bool(p["batch_norm"]), dropout=float(p["dropout"] or 0.0))


def member_seeds(seed: int | None, numbers: list[int]) -> list[int]:
    """Each member's seed (initial weights; the first also seeds the pack's dropout masks and
    batch order): :func:`hpsearch.trials.seeds.trial_seeds`, the seed an unpacked trial of the same
    number uses, so a study run again from scratch trains the same packs."""
    return trial_seeds(seed, numbers)


def _widths(n_neurons: int | list[int], n_hidden: int) -> tuple[int, ...]:
    """Hidden widths: one per layer (a ``per_layer`` space gives a list) or one repeated."""
    if isinstance(n_neurons, list):
        return tuple(int(w) for w in n_neurons)
    return tuple([int(n_neurons)] * int(n_hidden))


def spec_n_params(spec: MemberSpec, n_features: int, n_out: int) -> int:
    """Parameters of a member's standalone model, from its shape alone (``count_params``: batch
    norm's moving statistics included, no hidden bias under batch norm): known before any weight
    exists, so ``search.constraints: max_params`` is checked before a member is placed."""
    per_unit = 4 if spec.batch_norm else 1
    dims = list(itertools.pairwise([n_features, *spec.widths, n_out]))
    return sum(i * o + per_unit * o for i, o in dims[:-1]) + sum(i * o + o for i, o in dims[-1:])


def pack_refusal(builder: Any, task: str, metric: str, cv: int | None, class_weight: str | None,
                 backend: str) -> str | None:
    """Why a study cannot pack at all (None: it can; single trials may still run alone)."""
    from hpsearch.models.mlp import build_mlp

    reasons = [
        (backend not in ("tensorflow", "jax", "torch"), f"the {backend} backend"),
        (builder is not build_mlp, "a user builder"),
        (task not in _PACKABLE_TASKS, f"a {task} target"),
        (metric not in _PACKABLE_METRICS, f"metric {metric}"),
        (bool(cv), "cross-validation"),
        (class_weight is not None, "class_weight"),
    ]
    return next((why for bad, why in reasons if bad), None)


#: ``train.pack: auto``'s planning constants, for both pack planners (the Optuna engine's
#: :func:`hpsearch.packing.runner.pack_plan` and the scikit-learn engines' :func:`hpsearch.packing.cv.cv_pack_plan`):
#: at most this many members (each pack pays one trace and compile of seconds, so fewer, larger
#: packs; past it step overhead no longer dominates). Packed CV used 32 before: its packs are
#: compiled once per chunk of candidates and reused fold after fold, and K=30 already trained an
#: epoch faster than K=10 (packing/cv.py), so the one cap serves it too.
AUTO_MAX_MEMBERS = 64
#: fewer members than this do not pay (measured: K=2 no faster than one trial at a time)
AUTO_MIN_MEMBERS = 4


def auto_pack_size(n_params_max: int, batch_size: int, memory_bytes: int | None = None) -> int:
    """K for ``train.pack: auto``: as many members as keep one step's activations and weights
    (with optimizer state) well inside memory, capped at :data:`AUTO_MAX_MEMBERS`; 1 for models
    large enough to be bound by arithmetic."""
    if n_params_max > 200_000:
        return 1
    per_member = 4 * (4 * n_params_max + 8 * batch_size * 256)
    budget = (memory_bytes or 2 * 1024**3) // 8
    return int(max(1, min(AUTO_MAX_MEMBERS, budget // max(per_member, 1))))


def _group_layout(specs: list[MemberSpec]) -> list[tuple[tuple[int, str, bool], list[int]]]:
    groups: dict[tuple[int, str, bool], list[int]] = {}
    for i, s in enumerate(specs):
        groups.setdefault(s.group, []).append(i)
    return list(groups.items())


def _hyper(specs: list[MemberSpec]) -> dict[str, np.ndarray]:
    def col(fn: Callable[[MemberSpec], float]) -> np.ndarray:
        return np.array([fn(s) for s in specs], dtype="float32")

    return {"learning_rate": col(lambda s: s.learning_rate), "momentum": col(lambda s: s.momentum),
            "nesterov": col(lambda s: float(s.optimizer == "nesterov")),
            "adam": col(lambda s: float(s.optimizer == "adam")),
            "beta_1": col(lambda s: _ADAM["beta_1"]), "beta_2": col(lambda s: _ADAM["beta_2"]),
            "epsilon": col(lambda s: _ADAM["epsilon"]), "active": col(lambda s: 1.0), "t0": col(lambda s: 0.0)}


def _initial_kernel(init: Any, shape: tuple[int, int], seed: int, exact: bool = True) -> np.ndarray:
    """A member's initial kernel. TensorFlow, ``exact``: the Keras initializer (the standalone model's
    values for the seed). Other backends compile each random op per new shape (JAX: 94 s for a
    64-member pack's 256 kernels), and a refill's member (not ``exact``: it sees the pack's next
    batches, never its standalone run) paid eager ops per kernel (9 % of 10,000 tiny packed trials),
    so there the variance-scaling family (he / glorot / lecun) is drawn with NumPy, as Keras defines it."""
    import keras

    if ((exact and keras.backend.backend() == "tensorflow")
            or not isinstance(init, keras.initializers.VarianceScaling)):
        return np.asarray(keras.ops.convert_to_numpy(init(shape)))
    fan_in, fan_out = shape
    fan = {"fan_in": fan_in, "fan_out": fan_out}.get(init.mode, (fan_in + fan_out) / 2.0)
    scale = init.scale / max(1.0, fan)
    rng = np.random.default_rng(seed)
    if init.distribution == "truncated_normal":  # Keras: std / .87962566103423978, cut at two std
        std = math.sqrt(scale) / 0.87962566103423978
        out = rng.standard_normal(shape)
        while (bad := np.abs(out) > 2.0).any():
            out[bad] = rng.standard_normal(int(bad.sum()))
        return (out * std).astype("float32")
    if init.distribution == "untruncated_normal":
        return (rng.standard_normal(shape) * math.sqrt(scale)).astype("float32")
    limit = math.sqrt(3.0 * scale)
    return rng.uniform(-limit, limit, shape).astype("float32")


class PackedModel:
    """The compiled model of one pack; member ``i`` is ``specs[i]`` (see the module docstring).
    ``seed`` seeds the dropout masks; ``dropout_noise`` replaces their generator (a test shares one
    noise source with a standalone model to compare the two)."""

    def __init__(self, specs: list[MemberSpec], meta: Mapping[str, Any], steps_per_execution: int = 1,
                 seed: int = 0, dropout_noise: NoiseSource | None = None, per_member: bool = False) -> None:
        import keras

        from hpsearch.models.builders import output_spec

        self.specs, self.task = specs, task_of(meta)
        self.n_features = int(meta["n_features_in_"])
        self.n_out, self.out_act = output_spec(meta)
        self.seed, self.noise = seed, dropout_noise
        self.per_member = per_member  # input (batch, K, features): each member its own rows
        keras.backend.clear_session()
        inputs = keras.Input(shape=(len(specs), self.n_features) if per_member else (self.n_features,))
        outputs: list[Any] = []
        order: list[int] = []
        ranges: dict[str, tuple[int, int]] = {}
        self.state: list[list[tuple[int, Any]]] = []  # per group: (layer, variable) in standalone order
        self.norms: list[list[Any]] = []  # per group: its batch norm layers
        self.drops: list[list[Any]] = []  # per group: its dropout layers
        self.widths: list[list[int]] = []  # per group: its (padded) hidden widths
        self.slot: dict[int, tuple[int, int]] = {}  # member -> (group, index in group)
        for gi, (key, members) in enumerate(_group_layout(specs)):
            start = len(order)
            order += members
            for j, m in enumerate(members):
                self.slot[m] = (gi, j)
            h, layers = self._group_layers(gi, key, members, inputs)
            for layer in layers:
                ranges.update({v.path: (start, start + len(members)) for v in layer.weights})
            outputs.append(h)
        out = outputs[0] if len(outputs) == 1 else keras.layers.Concatenate(axis=1)(outputs)
        self.position = {m: p for p, m in enumerate(order)}  # member -> position on the K axis
        self.empty: set[int] = set()  # slots with no member (a reused model's spares): frozen, zero
        self.model = keras.Model(inputs, out, name="pack")
        self.optimizer = packed_optimizer(_hyper([specs[m] for m in order]), ranges)
        # XLA fuses the per-member optimizer arithmetic: measured 2.4x less CPU per epoch at K=32
        self.model.compile(optimizer=self.optimizer, loss=packed_loss(self.task, per_member),
                           steps_per_execution=steps_per_execution, jit_compile=keras.backend.backend() != "torch")

    def _group_layers(self, gi: int, key: tuple[int, str, bool], members: list[int],
                      inputs: Any) -> tuple[Any, list[Any]]:
        """One group's stacked layers, as :func:`hpsearch.models.mlp.build_mlp` orders them: per hidden
        layer Dense (no bias under batch norm) -> BatchNormalization -> activation -> Dropout."""
        import keras

        depth, act, bn = key
        specs = [self.specs[m] for m in members]
        k = len(members)
        widths = [max(s.widths[d] for s in specs) for d in range(depth)]
        reg = stacked_regularizer(np.array([s.l1 for s in specs]), np.array([s.l2 for s in specs]))
        rates = np.array([s.dropout for s in specs])
        h, layers, n_in = inputs, [], self.n_features
        if self.per_member and members != list(range(len(self.specs))):
            h = member_inputs(members, f"g{gi}_inputs")(inputs)  # the group's members' own rows
        shared = not self.per_member  # the first Dense's input: one for all, or one per member
        state: list[tuple[int, Any]] = []
        self.norms.append([])
        self.drops.append([])
        self.widths.append(widths)
        for d, w in enumerate(widths):
            dense = stacked_dense(k, n_in, w, None if bn else act, shared and d == 0, reg, f"g{gi}_hidden_{d}",
                                  use_bias=not bn)
            h, n_in = dense(h), w
            layers.append(dense)
            state += [(d, v) for v in dense.member_variables()]
            if bn:
                norm = stacked_batch_norm(k, w, f"g{gi}_bn_{d}")
                h = keras.layers.Activation(act, name=f"g{gi}_act_{d}")(norm(h))
                layers.append(norm)
                self.norms[gi].append(norm)
                state += [(d, v) for v in norm.member_variables()]
            if rates.any():
                drop = stacked_dropout(rates, self.seed + 7919 * gi + d, f"g{gi}_dropout_{d}", self.noise)
                h = drop(h)
                self.drops[gi].append(drop)
        dense = stacked_dense(k, n_in, self.n_out, self.out_act, shared and depth == 0, None, f"g{gi}_output")
        h = dense(h)
        layers.append(dense)
        state += [(depth, v) for v in dense.member_variables()]
        self.state.append(state)
        return h, layers

    def _dims(self, member: int) -> list[tuple[int, int]]:
        sizes = [self.n_features, *self.specs[member].widths, self.n_out]
        return list(itertools.pairwise(sizes))

    def n_params(self, member: int) -> int:
        """Parameters of the member's standalone model (:func:`spec_n_params`)."""
        return spec_n_params(self.specs[member], self.n_features, self.n_out)

    def member_slice(self, member: int, layer: int, value: np.ndarray) -> tuple[Any, ...]:
        """Where the member's own part of a stacked variable lies: [j, :in, :out] or [j, :out]."""
        j = self.slot[member][1]
        i, o = self._dims(member)[layer]
        return (j, slice(0, i), slice(0, o)) if value.ndim == 3 else (j, slice(0, o))

    def member_weights(self, member: int, values: list[list[np.ndarray]] | None = None) -> list[np.ndarray]:
        """The member's weights in its standalone model's order (``model.get_weights()``)."""
        g = self.slot[member][0]
        stacks = values[g] if values is not None else self.group_values()[g]
        return [v[self.member_slice(member, d, v)].copy() for (d, _), v in zip(self.state[g], stacks)]

    def group_values(self) -> list[list[np.ndarray]]:
        """Every member-state variable as numpy, per group (one read for many members)."""
        return [[np.asarray(v.numpy()) for _, v in state] for state in self.state]

    def _place(self, member: int, weights: list[np.ndarray], values: list[list[np.ndarray]]) -> None:
        """In ``values`` (:meth:`group_values`): the member's slot zeroed, then its own part set."""
        g, j = self.slot[member]
        for (d, _), full, w in zip(self.state[g], values[g], weights, strict=True):
            full[j] = 0.0
            full[self.member_slice(member, d, full)] = w

    def _assign(self, values: list[list[np.ndarray]]) -> None:
        for state, vals in zip(self.state, values):
            for (_, var), v in zip(state, vals):
                var.assign(v)

    def set_member_weights(self, member: int, weights: list[np.ndarray]) -> None:
        """Put a standalone model's weights (``model.get_weights()``) into the member's slot."""
        values = self.group_values()
        self._place(member, weights, values)
        self._assign(values)

    def init_weights(self, seeds: list[int]) -> None:
        """Each member initialised as its standalone model would be, from its own seed (its
        initializer over its own fan-in / fan-out; output kernel glorot_uniform; biases, beta and
        moving mean zero; gamma and moving variance one); padding stays zero."""
        values = self.group_values()
        for member in range(len(self.specs)):
            self._place(member, self._initial(member, seeds[member]), values)
        self._assign(values)

    def _initial(self, member: int, seed: int, exact: bool = True) -> list[np.ndarray]:
        """``member``'s initial weights from ``seed`` (``exact``: see :func:`_initial_kernel`)."""
        import keras

        spec, weights = self.specs[member], []
        for d, var in self.state[self.slot[member][0]]:
            i, o = self._dims(member)[d]
            if len(var.shape) == 3:
                name = spec.kernel_initializer if d < len(spec.widths) else "glorot_uniform"
                init = type(keras.initializers.get(name))(seed=seed + d)
                weights.append(_initial_kernel(init, (i, o), seed + d, exact))
            else:
                weights.append(np.full(o, 1.0 if var.name in ("gamma", "moving_variance") else 0.0))
        return weights

    @functools.cached_property
    def _plain(self) -> Any:
        """The pack's layers as a model without XLA, to predict with: the compiled model's XLA predict
        measured ~1 s a call at K=16 on CPU (30-40 ms without), more than the epoch it validates."""
        import keras

        model = keras.Model(self.model.inputs, self.model.outputs, name="pack_predict")
        model.jit_compile = False
        return model

    @property
    def order(self) -> list[int]:
        """The members in their order on the K axis of the compiled model's outputs (by group)."""
        return sorted(self.position, key=self.position.__getitem__)

    def predict(self, X: np.ndarray, batch_size: int) -> np.ndarray:
        """(rows, members, outputs) in member order; ``X`` (rows, features), or (rows, K, features) in
        member order for a ``per_member`` pack."""
        raw = np.asarray(self._plain.predict_on_batch(X) if len(X) <= batch_size  # no per-call data pipeline
                         else self._plain.predict(X, batch_size=batch_size, verbose=0))
        return raw[:, [self.position[m] for m in range(len(self.specs))], :]

    def fits(self, member: int, spec: MemberSpec) -> bool:
        """Whether ``spec`` can take ``member``'s slot without a rebuild: the same group (depth,
        activation, batch norm), widths within the group's, the same l1 / l2 (compiled in), an
        update rule the pack traced, and dropout only where the group has dropout layers."""
        g = self.slot[member][0]
        old = self.specs[member]
        return (spec.group == old.group and all(w <= p for w, p in zip(spec.widths, self.widths[g]))
                and (spec.l1, spec.l2) == (old.l1, old.l2) and self.optimizer.traces(spec.optimizer)
                and (spec.dropout == 0.0 or bool(self.drops[g])))

    def replace(self, members: list[tuple[int, MemberSpec, int]]) -> None:
        """New members, each ``(slot, spec, seed)`` in its slot (see :meth:`fits`), initialised from
        its seed from the same distributions as :meth:`init_weights` (drawn with NumPy on every
        backend: :func:`_initial_kernel`), with fresh optimizer state and step count: each trains
        from here as it would alone (the batches it sees are the pack's next ones). The stacked
        weights and the optimizer's variables are read and written once for all of them (a refill
        of many slots cost one read and one write per slot before)."""
        if not members:
            return
        values = self.group_values()
        for member, spec, seed in members:
            self.specs[member] = spec
            self.empty.discard(member)
            self._place(member, self._initial(member, seed, exact=False), values)
        self._assign(values)
        self.optimizer.place({self.position[m]: {n: float(v[0]) for n, v in _hyper([spec]).items()}
                              for m, spec, _ in members})
        for member, spec, _ in members:
            g, j = self.slot[member]
            for norm in self.norms[g]:
                norm.place(j)
            for drop in self.drops[g]:
                drop.place(j, spec.dropout)

    def host(self, specs: list[MemberSpec]) -> list[int] | None:
        """Slots for a new pack's ``specs`` in this compiled model (no rebuild, no trace, no compile):
        each member in the first free slot it fits (:meth:`fits`), in order; None when one fits no
        slot or they would leave more than half the slots empty (a spare slot still computes)."""
        if 2 * len(specs) < len(self.specs) or not self.optimizer.built:  # unbuilt: its update not traced yet
            return None
        free, slots = list(range(len(self.specs))), []
        for spec in specs:
            slot = next((m for m in free if self.fits(m, spec)), None)
            if slot is None:
                return None
            free.remove(slot)
            slots.append(slot)
        return slots

    def restart(self, slots: list[int], specs: list[MemberSpec], seeds: list[int], seed: int) -> None:
        """A new pack in this compiled model (slots from :meth:`host`): member ``i`` in ``slots[i]``,
        initialised from ``seeds[i]`` as :meth:`init_weights` does; step count, moments and moving
        statistics as a new build's; batch order and dropout masks drawn from ``seed`` as a new
        model's (:class:`PackedModel` ``seed``); every other slot empty (zero weights, frozen)."""
        taken = dict(zip(slots, zip(specs, seeds, strict=True)))
        self.seed, self.empty = seed, set(range(len(self.specs))) - set(taken)
        values = self.group_values()
        for m in range(len(self.specs)):
            g, j = self.slot[m]
            if m in taken:
                self.specs[m] = taken[m][0]
                self._place(m, self._initial(m, taken[m][1]), values)
            else:
                for full in values[g]:
                    full[j] = 0.0
        self._assign(values)
        order = sorted(self.position, key=self.position.__getitem__)
        hyper = _hyper([self.specs[m] for m in order])
        hyper["active"] = np.array([float(m in taken) for m in order], dtype="float32")
        self.optimizer.load(hyper)  # step count and moments zero
        for gi, (norms, drops) in enumerate(zip(self.norms, self.drops)):
            members = sorted((j, m) for m, (g, j) in self.slot.items() if g == gi)
            active = np.array([float(m in taken) for _, m in members], dtype="float32")
            for norm in norms:
                norm.load(active)
            for d, drop in enumerate(drops):
                drop.load(np.array([self.specs[m].dropout for _, m in members]), seed + 7919 * gi + d)

    def freeze(self, member: int) -> None:
        """No more updates for ``member``: its weights, optimizer state and moving statistics stay."""
        self.optimizer.freeze(self.position[member])
        g, j = self.slot[member]
        for norm in self.norms[g]:
            norm.freeze(j)

    def reset_optimizer(self) -> None:
        """Train the same members anew (another CV fold's rows) without a rebuild and its compile:
        optimizer state zero and every member active again (weights are set by the caller)."""
        self.optimizer.reset()
        for norms in self.norms:
            for norm in norms:
                norm.reset()
