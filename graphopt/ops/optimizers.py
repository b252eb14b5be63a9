"""Sparse optimizers an EmbeddingVariable keeps in its rows (the slots sit after each value).

Each config names the apply op (``contract.APPLY_OPS``) it drives and the slots it keeps; the
hyperparameters are passed to the op as scalar tensors on every step, so a
``learning_rate`` may be a float, a tensor/variable, or a callable of the step (e.g. a
``keras.optimizers.schedules.LearningRateSchedule``).
"""

import numbers

import tensorflow as tf

from graphopt.ev import contract


def _invalid(message: str) -> tf.errors.InvalidArgumentError:
    return tf.errors.InvalidArgumentError(None, None, message)


class SparseOptimizer:
    """Base of the optimizer configs; ``name`` is the handle op's ``optimizer`` attr."""

    name = ""
    slot_names: tuple = ()

    def __init__(self, learning_rate=0.001):
        if isinstance(learning_rate, numbers.Real) and not learning_rate >= 0:
            raise _invalid(f"learning_rate must be >= 0, got {learning_rate}")
        self.learning_rate = learning_rate

    def slot_init(self) -> list:
        """Initial value of each slot (the handle op's ``slot_init``)."""
        return []

    def lr(self, step):
        lr = self.learning_rate
        if callable(lr) and not isinstance(lr, (tf.Tensor, tf.Variable)):
            if step is None:
                raise _invalid("a learning-rate schedule needs apply_gradients(..., step=)")
            lr = lr(step)
        return tf.cast(lr, tf.float32)

    def apply(self, ops, handle, keys, grads, dim, step):
        raise NotImplementedError

    def __repr__(self):
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({fields})"


class SGD(SparseOptimizer):
    """row -= learning_rate * g (no slots).

    ``sum_duplicates=False``: a key repeated in the batch updates its row once per occurrence,
    in batch order, bit for bit as v1 ``GradientDescentOptimizer``'s scatter does (the default
    sums them first, as Keras' SGD does).
    """

    name = "sgd"
    slot_names = contract.SLOT_NAMES[name]

    def __init__(self, learning_rate=0.001, sum_duplicates=True):
        super().__init__(learning_rate)
        self.sum_duplicates = bool(sum_duplicates)

    def apply(self, ops, handle, keys, grads, dim, step):
        return ops.graphopt_ev_apply_sgd(
            handle, keys, grads, self.lr(step), dim=dim, sum_duplicates=self.sum_duplicates
        )


class Adagrad(SparseOptimizer):
    """TF's ResourceSparseApplyAdagradV2: accum += g²; row -= lr·g / (√accum + epsilon).

    ``rsqrt=True`` (epsilon must be 0): v1 ``AdagradOptimizer``'s ResourceSparseApplyAdagrad,
    row -= lr·g·rsqrt(accum) with Eigen's packet rsqrt, bit for bit (docs/ops.md).
    """

    name = "adagrad"
    slot_names = contract.SLOT_NAMES[name]

    def __init__(self, learning_rate=0.001, initial_accumulator_value=0.1, epsilon=1e-7, rsqrt=False):
        super().__init__(learning_rate)
        if rsqrt and epsilon != 0:
            raise _invalid(f"rsqrt=True is v1 Adagrad, which has no epsilon: give epsilon=0, got {epsilon}")
        self.rsqrt = bool(rsqrt)
        if not initial_accumulator_value >= 0:
            raise _invalid(f"initial_accumulator_value must be >= 0, got {initial_accumulator_value}")
        if not epsilon >= 0:
            raise _invalid(f"epsilon must be >= 0, got {epsilon}")
        self.initial_accumulator_value = float(initial_accumulator_value)
        self.epsilon = float(epsilon)

    def slot_init(self):
        return [self.initial_accumulator_value]

    def apply(self, ops, handle, keys, grads, dim, step):
        return ops.graphopt_ev_apply_adagrad(
            handle,
            keys,
            grads,
            self.lr(step),
            tf.constant(self.epsilon, tf.float32),
            dim=dim,
            rsqrt=self.rsqrt,
        )


class Adam(SparseOptimizer):
    """Lazy Adam: TF's ApplyAdam formula on the rows in the batch only (m, v of other rows
    do not decay). Needs the 1-based ``step``: beta_i_power = beta_i ** step (float32)."""

    name = "adam"
    slot_names = contract.SLOT_NAMES[name]

    def __init__(self, learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7):
        super().__init__(learning_rate)
        for label, beta in (("beta_1", beta_1), ("beta_2", beta_2)):
            if not 0 <= beta < 1:
                raise _invalid(f"{label} must be in [0, 1), got {beta}")
        if not epsilon >= 0:
            raise _invalid(f"epsilon must be >= 0, got {epsilon}")
        self.beta_1, self.beta_2, self.epsilon = float(beta_1), float(beta_2), float(epsilon)

    def slot_init(self):
        return [0.0, 0.0]

    def apply(self, ops, handle, keys, grads, dim, step):
        if step is None:
            raise _invalid(
                "Adam needs apply_gradients(..., step=) (the 1-based training step) for its bias correction"
            )
        t = tf.cast(step, tf.float32)
        beta_1 = tf.constant(self.beta_1, tf.float32)
        beta_2 = tf.constant(self.beta_2, tf.float32)
        return ops.graphopt_ev_apply_adam(
            handle,
            keys,
            grads,
            self.lr(step),
            beta_1,
            beta_2,
            tf.constant(self.epsilon, tf.float32),
            tf.pow(beta_1, t),
            tf.pow(beta_2, t),
            dim=dim,
        )


class Ftrl(SparseOptimizer):
    """TF's ResourceSparseApplyFtrl (FTRL-Proximal, slots accumulator and linear)."""

    name = "ftrl"
    slot_names = contract.SLOT_NAMES[name]

    def __init__(
        self,
        learning_rate=0.001,
        learning_rate_power=-0.5,
        initial_accumulator_value=0.1,
        l1_regularization_strength=0.0,
        l2_regularization_strength=0.0,
    ):
        super().__init__(learning_rate)
        if not learning_rate_power <= 0:
            raise _invalid(f"learning_rate_power must be <= 0, got {learning_rate_power}")
        if not initial_accumulator_value >= 0:
            raise _invalid(f"initial_accumulator_value must be >= 0, got {initial_accumulator_value}")
        if not (l1_regularization_strength >= 0 and l2_regularization_strength >= 0):
            raise _invalid("l1/l2_regularization_strength must be >= 0")
        self.learning_rate_power = float(learning_rate_power)
        self.initial_accumulator_value = float(initial_accumulator_value)
        self.l1_regularization_strength = float(l1_regularization_strength)
        self.l2_regularization_strength = float(l2_regularization_strength)

    def slot_init(self):
        return [self.initial_accumulator_value, 0.0]

    def apply(self, ops, handle, keys, grads, dim, step):
        f = lambda v: tf.constant(v, tf.float32)  # noqa: E731
        return ops.graphopt_ev_apply_ftrl(
            handle,
            keys,
            grads,
            self.lr(step),
            f(self.l1_regularization_strength),
            f(self.l2_regularization_strength),
            f(self.learning_rate_power),
            dim=dim,
        )


OPTIMIZERS = {cls.name: cls for cls in (SGD, Adagrad, Adam, Ftrl)}


def get(optimizer):
    """None, a name ('sgd', 'adagrad', 'adam', 'ftrl') or a SparseOptimizer."""
    if optimizer is None or isinstance(optimizer, SparseOptimizer):
        return optimizer
    if isinstance(optimizer, str) and optimizer.lower() in OPTIMIZERS:
        return OPTIMIZERS[optimizer.lower()]()
    raise _invalid(
        f"unknown optimizer {optimizer!r}; use one of {', '.join(OPTIMIZERS)} or a "
        "graphopt.ops.optimizers config (SGD, Adagrad, Adam, Ftrl)"
    )
