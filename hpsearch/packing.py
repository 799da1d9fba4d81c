"""Packed trials: K small MLPs of the built-in ``mlp`` builder trained together in one compiled model.

Small Keras models are bound by per-step overhead, not arithmetic (DESIGN.md section 4), so K
models in one compiled model train nearly K times the samples per second. The layout chosen by
measurement: members are grouped by (depth, activation); each group has stacked weights with a K
axis (one einsum per layer) and hidden widths padded with zeros to the group's widest member, so
the compile time does not grow with K. Padded units stay exactly zero (their weights start at zero
and receive zero gradient: every activation here maps 0 to 0), so each member computes what it
would compute alone.

Exact per-member training, as if each member ran alone:

* the loss is the sum of the members' mean losses: parameters are disjoint, so each member's
  gradient is its own loss's gradient; l1 / l2 are per-member factors on the member's own kernels;
* :class:`PackedOptimizer` applies Keras' own SGD (momentum, Nesterov) and Adam update formulas
  with per-member hyperparameters (a K axis), and an ``active`` mask that freezes a member (early
  stopped, pruned or diverged): no update and no optimizer-state change;
* :class:`PackTrainer` evaluates every member each epoch on the validation split, applies Keras'
  ``EarlyStopping`` rule per member, keeps each member's best-epoch weights and extracts them in
  the layout of the member's own standalone model.

What packs is decided by :func:`pack_refusal` (study level) and :func:`member_spec` (per trial):
everything else (batch norm, dropout, schedules, clipping, user builders, CV, other backends)
trains one model per trial, with a one-line note.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hpsearch.builders import builder_defaults, task_of
from hpsearch.space import coerce_value

__all__ = ["PACKABLE_OPTIMIZERS", "MemberSpec", "member_spec", "pack_refusal", "auto_pack_size",
           "PackedModel", "MemberResult", "PackSettings", "member_scores", "train_pack"]

#: builder optimizer names and their update rule in :class:`PackedOptimizer`
PACKABLE_OPTIMIZERS = ("sgd", "momentum", "nesterov", "adam")
_PACKABLE_METRICS = ("accuracy", "mse", "mae", "rmse", "r2")
_PACKABLE_TASKS = ("binary", "multiclass", "regression")
#: knobs of the built-in MLP a pack does not reproduce exactly; a member may use only their off value
_OFF_VALUES: dict[str, tuple[Any, ...]] = {
    "batch_norm": (False, None), "dropout": (0, 0.0, None), "max_norm": (None,), "weight_decay": (None,),
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

    @property
    def group(self) -> tuple[int, str]:
        """Members of one group share a stacked sub-graph."""
        return len(self.widths), self.activation


def member_spec(builder: Any, params: Mapping[str, Any]) -> MemberSpec | str:
    """The member for ``params`` of the built-in ``mlp`` builder, or why it cannot be packed."""
    from hpsearch.mlp import build_mlp

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
                      momentum=float(p["momentum"]) if opt in ("momentum", "nesterov") else 0.0)


def _widths(n_neurons: int | list[int], n_hidden: int) -> tuple[int, ...]:
    """Hidden widths: one per layer (a ``per_layer`` space gives a list) or one repeated."""
    if isinstance(n_neurons, list):
        return tuple(int(w) for w in n_neurons)
    return tuple([int(n_neurons)] * int(n_hidden))


def pack_refusal(builder: Any, task: str, metric: str, cv: int | None, class_weight: str | None,
                 backend: str) -> str | None:
    """Why a study cannot pack at all (None: it can; single trials may still run alone)."""
    from hpsearch.mlp import build_mlp

    reasons = [
        (backend != "tensorflow", f"the {backend} backend"),
        (builder is not build_mlp, "a user builder"),
        (task not in _PACKABLE_TASKS, f"a {task} target"),
        (metric not in _PACKABLE_METRICS, f"metric {metric}"),
        (bool(cv), "cross-validation"),
        (class_weight is not None, "class_weight"),
    ]
    return next((why for bad, why in reasons if bad), None)


def auto_pack_size(n_params_max: int, batch_size: int, memory_bytes: int | None = None) -> int:
    """K for ``train.pack: auto``: as many members as keep one step's activations and weights
    (with optimizer state) well inside memory, capped at 64 where step overhead no longer
    dominates; 1 for models large enough to be bound by arithmetic."""
    if n_params_max > 200_000:
        return 1
    per_member = 4 * (4 * n_params_max + 8 * batch_size * 256)
    budget = (memory_bytes or 2 * 1024**3) // 8
    return int(max(1, min(64, budget // max(per_member, 1))))


def _group_layout(specs: list[MemberSpec]) -> list[tuple[tuple[int, str], list[int]]]:
    groups: dict[tuple[int, str], list[int]] = {}
    for i, s in enumerate(specs):
        groups.setdefault(s.group, []).append(i)
    return list(groups.items())


def _stacked_regularizer(l1: np.ndarray, l2: np.ndarray) -> Any:
    import keras

    class StackedL1L2(keras.regularizers.Regularizer):
        """Per-member l1 / l2 on a (K, in, out) kernel: sum_k l1_k |W_k| + l2_k W_k^2."""

        def __call__(self, x: Any) -> Any:
            ops = keras.ops
            a = ops.sum(ops.reshape(ops.convert_to_tensor(l1, x.dtype), (-1, 1, 1)) * ops.abs(x))
            b = ops.sum(ops.reshape(ops.convert_to_tensor(l2, x.dtype), (-1, 1, 1)) * ops.square(x))
            return a + b

    return StackedL1L2() if (l1.any() or l2.any()) else None


def _stacked_dense(k: int, n_in: int, n_out: int, activation: str, shared_input: bool,
                   regularizer: Any, name: str) -> Any:
    import keras

    class StackedDense(keras.layers.Layer):
        """K Dense layers side by side: (batch, [K,] in) -> (batch, K, out), one einsum."""

        def build(self, input_shape: Any) -> None:
            self.kernel = self.add_weight(shape=(k, n_in, n_out), initializer="zeros", name="kernel",
                                          regularizer=regularizer)
            self.bias = self.add_weight(shape=(k, n_out), initializer="zeros", name="bias")

        def call(self, x: Any) -> Any:
            eq = "bi,kio->bko" if shared_input else "bki,kio->bko"
            return keras.activations.get(activation)(keras.ops.einsum(eq, x, self.kernel) + self.bias)

        def compute_output_shape(self, input_shape: Any) -> tuple[Any, ...]:
            return input_shape[0], k, n_out

    return StackedDense(name=name)


def _packed_loss(task: str) -> Any:
    import keras

    class PackedLoss(keras.losses.Loss):
        """Sum over members of each member's own loss (the Keras loss of the standalone model)."""

        def call(self, y_true: Any, y_pred: Any) -> Any:
            ops = keras.ops
            k = ops.shape(y_pred)[1]
            if task == "multiclass":
                y = ops.repeat(ops.expand_dims(ops.cast(y_true, "int32"), 1), k, axis=1)
                return ops.sum(keras.losses.sparse_categorical_crossentropy(y, y_pred), axis=1)
            y = ops.cast(ops.reshape(y_true, (ops.shape(y_true)[0], 1, -1)), y_pred.dtype)
            y = ops.repeat(y, k, axis=1)
            per = (keras.losses.binary_crossentropy(y, y_pred) if task == "binary"
                   else keras.losses.mean_squared_error(y, y_pred))
            return ops.sum(per, axis=1)

    return PackedLoss(name="packed_loss")


def _packed_optimizer(hyper: dict[str, np.ndarray], ranges: dict[str, tuple[int, int]]) -> Any:
    import keras

    ops = keras.ops

    class PackedOptimizer(keras.optimizers.Optimizer):
        """Keras' SGD (momentum, Nesterov) and Adam updates with per-member hyperparameters."""

        def build(self, var_list: list[Any]) -> None:
            if self.built:
                return
            super().build(var_list)
            self.m = [self.add_variable_from_reference(v, "m") for v in var_list]
            self.v = [self.add_variable_from_reference(v, "v") for v in var_list]
            self.h = {name: self.add_variable(shape=vals.shape, initializer=keras.initializers.Constant(vals),
                                              name=name) for name, vals in hyper.items()}
            self.ranges = [ranges[v.path] for v in var_list]

        def update_step(self, gradient: Any, variable: Any, learning_rate: Any) -> None:
            i = self._get_variable_index(variable)
            a, b = self.ranges[i]
            shape = (b - a,) + (1,) * (len(variable.shape) - 1)
            h = {n: ops.reshape(ops.cast(var[a:b], variable.dtype), shape) for n, var in self.h.items()}
            g = ops.cast(gradient, variable.dtype)
            m, v = self.m[i], self.v[i]
            lr, mom = h["learning_rate"], h["momentum"]
            m_sgd = m * mom - g * lr
            d_sgd = ops.where(h["nesterov"] > 0, m_sgd * mom - g * lr, m_sgd)
            t = ops.cast(self.iterations + 1, variable.dtype)
            b1, b2 = h["beta_1"], h["beta_2"]
            alpha = lr * ops.sqrt(1 - ops.power(b2, t)) / (1 - ops.power(b1, t))
            m_adam = m + (g - m) * (1 - b1)
            v_adam = v + (ops.square(g) - v) * (1 - b2)
            d_adam = -((m_adam * alpha) / (ops.sqrt(v_adam) + h["epsilon"]))
            adam, on = h["adam"] > 0, h["active"] > 0
            self.assign(m, ops.where(on, ops.where(adam, m_adam, m_sgd), m))
            self.assign(v, ops.where(on, ops.where(adam, v_adam, v), v))
            self.assign_add(variable, ops.where(on, ops.where(adam, d_adam, d_sgd), ops.zeros_like(variable)))

        def freeze(self, member: int) -> None:
            """No more updates for ``member`` (its optimizer state is kept as it is)."""
            active = np.array(self.h["active"].numpy())
            active[member] = 0.0
            self.h["active"].assign(active)

    return PackedOptimizer(learning_rate=1.0, name="packed")


def _hyper(specs: list[MemberSpec]) -> dict[str, np.ndarray]:
    def col(fn: Callable[[MemberSpec], float]) -> np.ndarray:
        return np.array([fn(s) for s in specs], dtype="float32")

    return {"learning_rate": col(lambda s: s.learning_rate), "momentum": col(lambda s: s.momentum),
            "nesterov": col(lambda s: float(s.optimizer == "nesterov")),
            "adam": col(lambda s: float(s.optimizer == "adam")),
            "beta_1": col(lambda s: _ADAM["beta_1"]), "beta_2": col(lambda s: _ADAM["beta_2"]),
            "epsilon": col(lambda s: _ADAM["epsilon"]), "active": col(lambda s: 1.0)}


@dataclass
class MemberResult:
    """What training one member produced (per-epoch values, best epoch, its own weights)."""

    values: list[float] = field(default_factory=list)
    best: float | None = None
    best_epoch: int = 0  # 1-based; 0: none finite yet
    wait: int = 0
    stopped_at: int | None = None  # epoch (0-based) at which it was frozen
    state: str = "RUNNING"  # RUNNING, COMPLETE, PRUNED, FAIL
    failure: str | None = None
    weights: list[np.ndarray] | None = None  # standalone layout: [W0, b0, W1, b1, ...]

    @property
    def epochs(self) -> int:
        return len(self.values)


class PackedModel:
    """The compiled model of one pack; member ``i`` is ``specs[i]`` (see the module docstring)."""

    def __init__(self, specs: list[MemberSpec], meta: Mapping[str, Any], steps_per_execution: int = 1) -> None:
        import keras

        from hpsearch.builders import output_spec

        self.specs, self.task = specs, task_of(meta)
        self.n_features = int(meta["n_features_in_"])
        self.n_out, out_act = output_spec(meta)
        keras.backend.clear_session()
        inputs = keras.Input(shape=(self.n_features,))
        outputs: list[Any] = []
        order: list[int] = []
        ranges: dict[str, tuple[int, int]] = {}
        self.layers: list[list[Any]] = []  # per group: its stacked layers, input to output
        self.slot: dict[int, tuple[int, int]] = {}  # member -> (group, index in group)
        for gi, ((depth, act), members) in enumerate(_group_layout(specs)):
            k, start = len(members), len(order)
            order += members
            for j, m in enumerate(members):
                self.slot[m] = (gi, j)
            widths = [max(specs[m].widths[d] for m in members) for d in range(depth)]
            reg = _stacked_regularizer(np.array([specs[m].l1 for m in members]),
                                       np.array([specs[m].l2 for m in members]))
            h, layers, n_in = inputs, [], self.n_features
            for d, (w, a) in enumerate([*((w, act) for w in widths), (self.n_out, out_act)]):
                layer = _stacked_dense(k, n_in, w, a, d == 0, reg if d < depth else None,
                                       f"g{gi}_{'output' if d == depth else f'hidden_{d}'}")
                h, n_in = layer(h), w
                layers.append(layer)
            for layer in layers:
                ranges.update({v.path: (start, start + k) for v in layer.weights})
            self.layers.append(layers)
            outputs.append(h)
        out = outputs[0] if len(outputs) == 1 else keras.layers.Concatenate(axis=1)(outputs)
        self.position = {m: p for p, m in enumerate(order)}  # member -> position on the K axis
        self.model = keras.Model(inputs, out, name="pack")
        self.optimizer = _packed_optimizer(_hyper([specs[m] for m in order]), ranges)
        # XLA fuses the per-member optimizer arithmetic: measured 2.4x less CPU per epoch at K=32
        self.model.compile(optimizer=self.optimizer, loss=_packed_loss(self.task),
                           steps_per_execution=steps_per_execution, jit_compile=True)

    def _dims(self, member: int) -> list[tuple[int, int]]:
        sizes = [self.n_features, *self.specs[member].widths, self.n_out]
        return list(itertools.pairwise(sizes))

    def n_params(self, member: int) -> int:
        """Parameters of the member's standalone model."""
        return sum(i * o + o for i, o in self._dims(member))

    def member_weights(self, member: int, values: list[list[np.ndarray]] | None = None) -> list[np.ndarray]:
        """The member's weights in its standalone model's order ([W0, b0, W1, b1, ...])."""
        g, j = self.slot[member]
        stacks = values[g] if values is not None else self.group_values()[g]
        out: list[np.ndarray] = []
        for d, (i, o) in enumerate(self._dims(member)):
            out += [stacks[2 * d][j, :i, :o].copy(), stacks[2 * d + 1][j, :o].copy()]
        return out

    def group_values(self) -> list[list[np.ndarray]]:
        """Every stacked variable as numpy, per group (one read for many members)."""
        return [[np.asarray(v.numpy()) for layer in layers for v in (layer.kernel, layer.bias)]
                for layers in self.layers]

    def set_member_weights(self, member: int, weights: list[np.ndarray]) -> None:
        """Put a standalone model's weights (``model.get_weights()``) into the member's slot."""
        g, j = self.slot[member]
        for d, layer in enumerate(self.layers[g]):
            for var, w in ((layer.kernel, weights[2 * d]), (layer.bias, weights[2 * d + 1])):
                full = np.asarray(var.numpy())
                full[j] = 0.0
                full[j][tuple(slice(0, n) for n in w.shape)] = w
                var.assign(full)

    def init_weights(self, seed: int) -> None:
        """Each member initialised as its standalone model would be (its initializer over its own
        fan-in / fan-out; output kernel glorot_uniform; biases zero); padding stays zero."""
        import keras

        values = self.group_values()
        for member, spec in enumerate(self.specs):
            g, j = self.slot[member]
            for d, (i, o) in enumerate(self._dims(member)):
                name = spec.kernel_initializer if d < len(spec.widths) else "glorot_uniform"
                init = type(keras.initializers.get(name))(seed=seed + 1000 * member + d)
                values[g][2 * d][j] = 0.0
                values[g][2 * d][j, :i, :o] = keras.ops.convert_to_numpy(init((i, o)))
                values[g][2 * d + 1][j] = 0.0
        for layers, vals in zip(self.layers, values):
            for var, v in zip((w for layer in layers for w in (layer.kernel, layer.bias)), vals):
                var.assign(v)

    @functools.cached_property
    def _plain(self) -> Any:
        """The pack's layers as a model without XLA, to predict with: the compiled model's XLA predict
        measured ~1 s a call at K=16 on CPU (30-40 ms without), more than the epoch it validates."""
        import keras

        model = keras.Model(self.model.inputs, self.model.outputs, name="pack_predict")
        model.jit_compile = False
        return model

    def predict(self, X: np.ndarray, batch_size: int) -> np.ndarray:
        """(rows, members, outputs) in member order."""
        raw = np.asarray(self._plain.predict_on_batch(X) if len(X) <= batch_size  # no per-call data pipeline
                         else self._plain.predict(X, batch_size=batch_size, verbose=0))
        return raw[:, [self.position[m] for m in range(len(self.specs))], :]

    def freeze(self, member: int) -> None:
        self.optimizer.freeze(self.position[member])


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


#: called after each epoch with {member: value} of the members trained in it; returns those to prune
EpochHook = Callable[[int, dict[int, float]], set[int]]


def _epoch_end(pm: PackedModel, res: list[MemberResult], s: PackSettings, epoch: int, scores: list[float],
               hook: EpochHook | None) -> None:
    """Per member, Keras' EarlyStopping rule, best-epoch weights, divergence and pruning."""
    sign = 1.0 if s.direction == "maximize" else -1.0
    live: dict[int, float] = {}
    snap: list[int] = []
    for i, r in enumerate(res):
        if r.state != "RUNNING":
            continue
        v = scores[i]
        r.values.append(v)
        if not math.isfinite(v):
            r.state, r.stopped_at = "FAIL", epoch
            r.failure = f"training diverged: validation predictions became non-finite at epoch {epoch + 1}"
            pm.freeze(i)
            continue
        live[i] = v
        r.wait += 1
        if r.weights is None:
            snap.append(i)
        if r.best is None or sign * (v - sign * s.min_delta) > sign * r.best:
            r.best, r.best_epoch, r.wait = v, epoch + 1, 0
            snap.append(i)
        elif r.wait >= s.patience and epoch > 0:
            r.state, r.stopped_at = "COMPLETE", epoch
            pm.freeze(i)
    if snap and s.restore_best:
        values = pm.group_values()
        for i in snap:
            res[i].weights = pm.member_weights(i, values)
    for i in (hook(epoch, live) if hook is not None else set()):
        res[i].state, res[i].stopped_at = "PRUNED", epoch
        pm.freeze(i)


def train_pack(pm: PackedModel, X: np.ndarray, y: np.ndarray, Xv: np.ndarray, yv: np.ndarray,
               s: PackSettings, hook: EpochHook | None = None, callbacks: list[Any] | None = None
               ) -> list[MemberResult]:
    """Train every member of ``pm`` on the same batches; each stops, is pruned or fails alone.
    Returns one :class:`MemberResult` per member with its own weights (best epoch's when
    ``restore_best``, as ``EarlyStopping(restore_best_weights=True)``)."""
    import keras

    res = [MemberResult() for _ in pm.specs]

    class PerMember(keras.callbacks.Callback):
        def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
            pred = pm.predict(Xv, s.valid_batch)
            _epoch_end(pm, res, s, epoch, member_scores(pm.task, s.metric, pred, yv, s.y_valid_var), hook)
            if all(r.state != "RUNNING" for r in res):
                self.model.stop_training = True

    pm.model.fit(X, y, batch_size=s.batch_size, epochs=s.epochs, shuffle=s.shuffle, verbose=0,
                 callbacks=[PerMember(), *(callbacks or [])])
    values = pm.group_values()
    for i, r in enumerate(res):
        if r.state == "RUNNING":
            r.state = "COMPLETE"
        if r.state == "COMPLETE" and (not s.restore_best or r.weights is None):
            r.weights = pm.member_weights(i, values)
        elif r.state != "COMPLETE":
            r.weights = None
    return res
