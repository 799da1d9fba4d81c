"""The layers, loss and optimizer of a pack (:mod:`hpsearch.packing.model`): K members' layers side by
side on stacked weights with a K axis, each computing what the built-in MLP's layer computes alone.

Every layer takes (batch, K, units) (the first Dense also plain (batch, features), shared by all
members, or (batch, K, features), each member its own rows: :func:`member_inputs`) and keeps each
member's state in row k of its variables:

* :func:`stacked_dense`: ``keras.layers.Dense``, one einsum for the K members;
* :func:`stacked_batch_norm`: ``keras.layers.BatchNormalization`` with the defaults the MLP uses
  (momentum 0.99, epsilon 1e-3): batch statistics over each member's own activations, its own
  moving mean / variance (left as they are once the member is frozen), its own gamma / beta;
* :func:`stacked_dropout`: ``keras.layers.Dropout`` with a rate per member (rate 0: the identity);
* :func:`packed_optimizer`: Keras' SGD (momentum, Nesterov) and Adam updates with per-member
  hyperparameters and an ``active`` mask that freezes a member.

Padded units (a member narrower than its group) start at zero and stay zero in every layer.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

__all__ = ["BN_MOMENTUM", "BN_EPSILON", "stacked_regularizer", "stacked_dense", "stacked_batch_norm",
           "stacked_dropout", "member_inputs", "packed_loss", "packed_optimizer"]

#: keras.layers.BatchNormalization's defaults, which hpsearch.models.mlp builds its batch norm with
BN_MOMENTUM = 0.99
BN_EPSILON = 1e-3

#: where a dropout layer's uniform noise comes from: ``(layer name, shape) -> tensor`` in [0, 1)
NoiseSource = Callable[[str, Any], Any]


def set_row(var: Any, row: int, value: float) -> None:
    """One member's row of a stacked variable set to ``value`` (the others as they are)."""
    set_rows(var, {row: value})


def set_rows(var: Any, rows: dict[int, float]) -> None:
    """Several members' rows of a stacked variable set (``{row: value}``): one read, one write."""
    if not rows:
        return
    values = np.array(var.numpy())
    for row, value in rows.items():
        values[row] = value
    var.assign(values)


def stacked_regularizer(l1: np.ndarray, l2: np.ndarray) -> Any:
    import keras

    class StackedL1L2(keras.regularizers.Regularizer):
        """Per-member l1 / l2 on a (K, in, out) kernel: sum_k l1_k |W_k| + l2_k W_k^2."""

        def __call__(self, x: Any) -> Any:
            ops = keras.ops
            a = ops.sum(ops.reshape(ops.convert_to_tensor(l1, x.dtype), (-1, 1, 1)) * ops.abs(x))
            b = ops.sum(ops.reshape(ops.convert_to_tensor(l2, x.dtype), (-1, 1, 1)) * ops.square(x))
            return a + b

    return StackedL1L2() if (l1.any() or l2.any()) else None


def stacked_dense(k: int, n_in: int, n_out: int, activation: str | None, shared_input: bool,
                  regularizer: Any, name: str, use_bias: bool = True) -> Any:
    """K ``Dense`` layers (the MLP's hidden Dense has no bias under batch norm)."""
    import keras

    class StackedDense(keras.layers.Layer):
        """K Dense layers side by side: (batch, [K,] in) -> (batch, K, out), one einsum."""

        def build(self, input_shape: Any) -> None:
            self.kernel = self.add_weight(shape=(k, n_in, n_out), initializer="zeros", name="kernel",
                                          regularizer=regularizer)
            self.bias = self.add_weight(shape=(k, n_out), initializer="zeros", name="bias") if use_bias else None

        def call(self, x: Any) -> Any:
            eq = "bi,kio->bko" if shared_input else "bki,kio->bko"
            out = keras.ops.einsum(eq, x, self.kernel)
            return keras.activations.get(activation)(out + self.bias if self.bias is not None else out)

        def compute_output_shape(self, input_shape: Any) -> tuple[Any, ...]:
            return input_shape[0], k, n_out

        def member_variables(self) -> list[Any]:
            """The member's weights in its standalone layer's order."""
            return [self.kernel] if self.bias is None else [self.kernel, self.bias]

    return StackedDense(name=name)


def stacked_batch_norm(k: int, n: int, name: str) -> Any:
    import keras

    ops = keras.ops

    class StackedBatchNorm(keras.layers.Layer):
        """K BatchNormalization layers on (batch, K, n), as Keras computes one: in training the
        mean / variance over the batch axis (each member's own activations) and the moving
        statistics updated with momentum 0.99 (only while the member is active); in inference the
        moving statistics; then ``(x - mean) / sqrt(var + 1e-3) * gamma + beta``."""

        def build(self, input_shape: Any) -> None:
            self.gamma = self.add_weight(shape=(k, n), initializer="ones", name="gamma")
            self.beta = self.add_weight(shape=(k, n), initializer="zeros", name="beta")
            self.moving_mean = self.add_weight(shape=(k, n), initializer="zeros", name="moving_mean",
                                               trainable=False)
            self.moving_variance = self.add_weight(shape=(k, n), initializer="ones", name="moving_variance",
                                                   trainable=False)
            self.active = self.add_weight(shape=(k, 1), initializer="ones", name="active", trainable=False)

        def call(self, x: Any, training: bool | None = None) -> Any:
            if training:
                mean, variance = ops.moments(x, axes=[0])
                on = self.active > 0
                for var, batch in ((self.moving_mean, mean), (self.moving_variance, variance)):
                    old = var.value  # a tensor: JAX's where takes no Keras variable
                    var.assign(ops.where(on, old * BN_MOMENTUM + batch * (1.0 - BN_MOMENTUM), old))
            else:
                mean, variance = self.moving_mean, self.moving_variance
            # ops.batch_normalization's arithmetic (TF and JAX alike), with (K, n) statistics
            inv = ops.rsqrt(variance + BN_EPSILON) * self.gamma
            return x * inv + (self.beta - mean * inv)

        def compute_output_shape(self, input_shape: Any) -> tuple[Any, ...]:
            return tuple(input_shape)

        def member_variables(self) -> list[Any]:
            return [self.gamma, self.beta, self.moving_mean, self.moving_variance]

        def reset(self) -> None:
            """Every member's moving statistics update again (a new CV fold)."""
            self.active.assign(np.ones(self.active.shape, dtype="float32"))

        def load(self, active: np.ndarray) -> None:
            """A new pack in this layer: the members whose moving statistics update (1) or not (0)."""
            self.active.assign(active.reshape(k, 1))

        def place(self, j: int) -> None:
            """Row ``j`` holds a new member (its statistics are set with its weights): update them."""
            set_row(self.active, j, 1.0)

        def freeze(self, j: int) -> None:
            """The member in row ``j`` keeps its moving statistics from now on."""
            set_row(self.active, j, 0.0)

    return StackedBatchNorm(name=name)


def stacked_dropout(rates: np.ndarray, seed: int, name: str, noise: NoiseSource | None = None) -> Any:
    """K ``Dropout`` layers: member k's units are kept where its uniform noise is >= its rate and
    scaled by 1 / (1 - rate), as ``tf.nn.experimental.stateless_dropout`` does (rate 0 keeps all).
    ``noise`` replaces the seeded Keras generator (a test shares one source with a standalone model)."""
    import keras

    ops = keras.ops
    k = len(rates)
    scale = (1.0 / (1.0 - rates.astype("float64"))).astype("float32")  # as TF: 1 / keep_prob, then float32

    class StackedDropout(keras.layers.Layer):
        def __init__(self, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.seed_generator = keras.random.SeedGenerator(seed)

        def build(self, input_shape: Any) -> None:
            self.rate = self.add_weight(shape=(k, 1), initializer=keras.initializers.Constant(rates.reshape(k, 1)),
                                        name="rate", trainable=False)
            self.scale = self.add_weight(shape=(k, 1), initializer=keras.initializers.Constant(scale.reshape(k, 1)),
                                         name="scale", trainable=False)

        def call(self, x: Any, training: bool | None = None) -> Any:
            if not training:
                return x
            shape = ops.shape(x)
            u = noise(self.name, shape) if noise is not None else keras.random.uniform(shape, seed=self.seed_generator)
            return x * self.scale * ops.cast(u >= self.rate, x.dtype)

        def compute_output_shape(self, input_shape: Any) -> tuple[Any, ...]:
            return tuple(input_shape)

        def load(self, member_rates: np.ndarray, seed: int) -> None:
            """A new pack in this layer: its members' rates, and masks drawn as a new layer seeded
            with ``seed`` draws them (the generator's state back to ``[seed, 0]``)."""
            self.rate.assign(member_rates.reshape(k, 1).astype("float32"))
            self.scale.assign((1.0 / (1.0 - member_rates.astype("float64"))).astype("float32").reshape(k, 1))
            state = self.seed_generator.state
            state.assign(np.array([seed, 0], dtype=state.dtype))

        def place(self, j: int, rate: float) -> None:
            """Row ``j`` holds a new member with dropout ``rate``."""
            set_row(self.rate, j, rate)
            set_row(self.scale, j, float(np.float32(1.0 / (1.0 - rate))))

    return StackedDropout(name=name)


def member_inputs(members: list[int], name: str) -> Any:
    """A group's own members' rows of a per-member input: (batch, K, features) -> (batch, k, features),
    the members in ``members`` order (the group's order on its stacked weights)."""
    import keras

    index = np.array(members, dtype="int32")

    class MemberInputs(keras.layers.Layer):
        def call(self, x: Any) -> Any:
            return keras.ops.take(x, index, axis=1)

        def compute_output_shape(self, input_shape: Any) -> tuple[Any, ...]:
            return input_shape[0], len(members), input_shape[2]

    return MemberInputs(name=name)


def packed_loss(task: str, per_member: bool = False) -> Any:
    """The pack's loss. Shared rows: ``y_true`` (batch[, outputs]) is every member's target. Per-member
    rows (``per_member``): ``y_true`` is (batch, K[, outputs]) on the K axis of the predictions and the
    sample weight (batch, K) weighs each member's rows on its own (its last partial batch: its real
    rows ``batch / rows in it``, its padding 0); Keras divides the weighted sum by batch x K, so the
    per-member losses are multiplied by K: each member's gradient is its own batch mean's."""
    import keras

    class PackedLoss(keras.losses.Loss):
        """Sum over members of each member's own loss (the Keras loss of the standalone model)."""

        def call(self, y_true: Any, y_pred: Any) -> Any:
            ops = keras.ops
            k = ops.shape(y_pred)[1]
            if per_member:
                if task == "multiclass":
                    per = keras.losses.sparse_categorical_crossentropy(ops.cast(y_true, "int32"), y_pred)
                else:
                    y = ops.cast(ops.reshape(y_true, ops.shape(y_pred)), y_pred.dtype)
                    per = (keras.losses.binary_crossentropy(y, y_pred) if task == "binary"
                           else keras.losses.mean_squared_error(y, y_pred))
                return per * ops.cast(k, per.dtype)  # (batch, K): weighted by the per-member sample weight
            if task == "multiclass":
                y = ops.repeat(ops.expand_dims(ops.cast(y_true, "int32"), 1), k, axis=1)
                return ops.sum(keras.losses.sparse_categorical_crossentropy(y, y_pred), axis=1)
            y = ops.cast(ops.reshape(y_true, (ops.shape(y_true)[0], 1, -1)), y_pred.dtype)
            y = ops.repeat(y, k, axis=1)
            per = (keras.losses.binary_crossentropy(y, y_pred) if task == "binary"
                   else keras.losses.mean_squared_error(y, y_pred))
            return ops.sum(per, axis=1)

    return PackedLoss(name="packed_loss")


class _Rows(dict[str, Any]):
    """One variable's rows ``a:b`` of the per-member hyperparameters, each sliced on first use:
    tracing only the ones the update rule reads (plain SGD: the learning rate and the active mask)
    halved the ops an SGD pack traces (4216 -> 2221 at K=16 on digits, 4 depth groups) and cut its
    first epoch's CPU time (trace and compile) by a fifth, against slicing all nine for every variable."""

    def __init__(self, h: dict[str, Any], a: int, b: int, shape: tuple[int, ...], dtype: Any) -> None:
        super().__init__()
        self.h, self.a, self.b, self.shape, self.dtype = h, a, b, shape, dtype

    def __missing__(self, name: str) -> Any:
        import keras

        ops = keras.ops
        value = self[name] = ops.reshape(ops.cast(self.h[name][self.a:self.b], self.dtype), self.shape)
        return value


class PackedOptimizerState:
    """The per-member state of :func:`packed_optimizer`'s optimizer, read and written between steps
    (new members placed, members moved in or frozen, a reused pack reset); kept out of the traced
    update so that the class defined where Keras is imported stays short."""

    h: dict[str, Any]  # per-member hyperparameter variables (``active``, ``t0`` included)
    m: list[Any]  # first moments (momentum, Adam), one per trained variable; none for plain SGD
    v: list[Any]  # Adam's second moments
    ranges: list[tuple[int, int]]  # each trained variable's rows of the members' positions
    built: bool
    iterations: Any

    if TYPE_CHECKING:  # Keras' Optimizer's (the class this one is mixed into)
        def _get_variable_index(self, variable: Any) -> int: ...

    def reset(self) -> None:
        """Step count and moments zero, every member active: the same members train anew."""
        if self.built:
            self.iterations.assign(0)
            for var in [*self.m, *self.v]:
                var.assign(np.zeros(var.shape, dtype=var.dtype))
            self.h["active"].assign(np.ones(self.h["active"].shape, dtype="float32"))

    def load(self, values: dict[str, np.ndarray]) -> None:
        """A new pack: every member's hyperparameters (a new build's), step count and moments zero."""
        self.reset()
        for name, var in self.h.items():
            var.assign(values[name])

    def place(self, members: dict[int, dict[str, float]]) -> None:
        """New members at positions ``members`` (``{position: hyperparameters}``): their
        hyperparameters, zero moments, their step count from now (Adam's bias correction),
        active; each stacked variable read and written once for all of them."""
        t0 = float(self.iterations.numpy())
        for name, var in self.h.items():
            set_rows(var, {m: t0 if name == "t0" else values.get(name, 1.0) for m, values in members.items()})
        for i, (a, b) in enumerate(self.ranges):
            for var in (*self.m[i:i + 1], *self.v[i:i + 1]):
                set_rows(var, {m - a: 0.0 for m in members if a <= m < b})

    def moments(self, variable: Any) -> list[Any]:
        """``variable``'s moment variables, stacked as it is: m, then v (none for plain SGD)."""
        i = self._get_variable_index(variable)
        return [*self.m[i:i + 1], *self.v[i:i + 1]]

    def rows(self, position: int) -> dict[str, float]:
        """The per-member hyperparameters (``active`` and ``t0`` included) at ``position``."""
        return {name: float(var.numpy()[position]) for name, var in self.h.items()}

    def carry(self, members: dict[int, dict[str, float]]) -> None:
        """Members moved in from another pack at positions ``members`` (``{position: rows}``,
        :meth:`rows`; their moments are set by the caller): every hyperparameter as given."""
        for name, var in self.h.items():
            set_rows(var, {m: values[name] for m, values in members.items()})

    def traces(self, optimizer: str) -> bool:
        """Whether this pack's compiled update has ``optimizer``'s rule."""
        return {"adam": bool(self.v), "momentum": bool(self.m), "nesterov": bool(self.m)}.get(optimizer, True)

    def freeze(self, member: int) -> None:
        """No more updates for ``member`` (its optimizer state is kept as it is)."""
        set_row(self.h["active"], member, 0.0)


def packed_optimizer(hyper: dict[str, np.ndarray], ranges: dict[str, tuple[int, int]]) -> Any:
    """The pack's optimizer: ``hyper`` per-member hyperparameters, ``ranges`` each variable's rows.

    Long: the class is defined here, where Keras is imported (hpsearch imports Keras lazily).
    """
    import keras

    ops = keras.ops

    class PackedOptimizer(PackedOptimizerState, keras.optimizers.Optimizer):
        """Keras' SGD (momentum, Nesterov) and Adam updates with per-member hyperparameters."""

        def build(self, var_list: list[Any]) -> None:
            if self.built:
                return
            super().build(var_list)
            # the update rules the pack's members use; the others are not traced (a smaller graph
            # to compile: an SGD-only pack keeps no moments at all)
            adam = bool(hyper["adam"].any())
            self.m = [self.add_variable_from_reference(v, "m") for v in var_list] \
                if adam or hyper["momentum"].any() else []
            self.v = [self.add_variable_from_reference(v, "v") for v in var_list] if adam else []
            self.h = {name: self.add_variable(shape=vals.shape, initializer=keras.initializers.Constant(vals),
                                              name=name) for name, vals in hyper.items()}
            self.ranges = [ranges[v.path] for v in var_list]

        def update_step(self, gradient: Any, variable: Any, learning_rate: Any) -> None:
            i = self._get_variable_index(variable)
            a, b = self.ranges[i]
            shape = (b - a,) + (1,) * (len(variable.shape) - 1)
            h = _Rows(self.h, a, b, shape, variable.dtype)  # only the rows the traced rule reads
            g = ops.cast(gradient, variable.dtype)
            on = h["active"] > 0
            lr = h["learning_rate"]
            if not self.m:  # plain SGD for every member
                self.assign_add(variable, ops.where(on, -(g * lr), ops.zeros_like(g)))
                return
            m = self.m[i].value  # tensors: JAX's where takes no Keras variable
            mom = h["momentum"]
            m_sgd = m * mom - g * lr
            d_sgd = ops.where(h["nesterov"] > 0, m_sgd * mom - g * lr, m_sgd)
            if not self.v:  # SGD with momentum / Nesterov (or none) for every member
                self.assign(self.m[i], ops.where(on, m_sgd, m))
                self.assign_add(variable, ops.where(on, d_sgd, ops.zeros_like(g)))
                return
            v = self.v[i].value
            t = ops.cast(self.iterations + 1, variable.dtype) - h["t0"]  # the member's own step count
            b1, b2 = h["beta_1"], h["beta_2"]
            alpha = lr * ops.sqrt(1 - ops.power(b2, t)) / (1 - ops.power(b1, t))
            m_adam = m + (g - m) * (1 - b1)
            v_adam = v + (ops.square(g) - v) * (1 - b2)
            d_adam = -((m_adam * alpha) / (ops.sqrt(v_adam) + h["epsilon"]))
            adam = h["adam"] > 0
            self.assign(self.m[i], ops.where(on, ops.where(adam, m_adam, m_sgd), m))
            self.assign(self.v[i], ops.where(on, ops.where(adam, v_adam, v), v))
            self.assign_add(variable, ops.where(on, ops.where(adam, d_adam, d_sgd), ops.zeros_like(g)))

    return PackedOptimizer(learning_rate=1.0, name="packed")
