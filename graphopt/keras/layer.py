"""DynamicEmbedding: a Keras 3 layer whose rows live in an EmbeddingVariable.

Training under an unchanged ``model.fit``: in ``training`` calls the layer looks ids up with
find-or-insert (new ids get a row, subject to ``min_count``), and the gradient of its output
drives the table's fused sparse apply op from inside the backward pass. The table is not a
Keras variable, so the model's optimizer never sees it; the layer carries its own optimizer
configuration (a Keras optimizer's config: SGD without momentum, Adagrad, Adam, Ftrl),
as TPU embedding and keras-rs table configs do. ``graphopt.keras.convert`` fills it from the
model's compiled optimizer, so the table trains with the same rule, hyperparameters and
learning-rate schedule as the rest of the model.

The backward pass only reaches the layer if a watched variable lies behind its output: a
scalar ``update_trigger`` variable (always 0, its gradient is 0) is that variable. Its value
never enters the output (the forward pass is the lookup alone).
"""

import uuid

import keras
import numpy as np
import tensorflow as tf

from graphopt.ev import contract
from graphopt.ops import optimizers as sparse_optimizers
from graphopt.ops.embedding_variable import EmbeddingVariable

# The table's tensors in the layer's variable store: table-keys, table-values, ... (the contract's
# layout under the key "table").
TABLE = "table"

# Keras optimizer class -> (graphopt sparse optimizer, {Keras hyperparameter: sparse one}).
_OPTIMIZERS = {
    "SGD": (sparse_optimizers.SGD, {}),
    "Adagrad": (sparse_optimizers.Adagrad, {"initial_accumulator_value": "initial_accumulator_value"}),
    "Adam": (sparse_optimizers.Adam, {"beta_1": "beta_1", "beta_2": "beta_2", "epsilon": "epsilon"}),
    "Ftrl": (
        sparse_optimizers.Ftrl,
        {
            "learning_rate_power": "learning_rate_power",
            "initial_accumulator_value": "initial_accumulator_value",
            "l1_regularization_strength": "l1_regularization_strength",
            "l2_regularization_strength": "l2_regularization_strength",
        },
    ),
}
# Keras options the sparse ops cannot reproduce; a table refuses them instead of ignoring them.
_UNSUPPORTED = {
    "momentum": 0.0,
    "nesterov": False,
    "amsgrad": False,
    "weight_decay": None,
    "clipnorm": None,
    "clipvalue": None,
    "global_clipnorm": None,
    "beta": 0.0,
    "l2_shrinkage_regularization_strength": 0.0,
}


def optimizer_config(optimizer):
    """A Keras optimizer (object, name or serialized dict) as its serialized dict, or None."""
    if optimizer is None:
        return None
    if isinstance(optimizer, dict):
        optimizer = keras.optimizers.deserialize(optimizer)
    elif isinstance(optimizer, str):
        optimizer = keras.optimizers.get(optimizer)
    name = type(optimizer).__name__
    if name not in _OPTIMIZERS:
        raise ValueError(
            f"optimizer {name} has no sparse counterpart for an EmbeddingVariable; "
            f"use one of {', '.join(_OPTIMIZERS)}"
        )
    config = optimizer.get_config()
    for option, neutral in _UNSUPPORTED.items():
        if config.get(option, neutral) not in (neutral, 0, None):
            raise ValueError(
                f"{name}({option}={config[option]!r}) cannot be applied to an EmbeddingVariable's "
                f"rows; use {option}={neutral!r} for the model or give the table its own optimizer"
            )
    return keras.optimizers.serialize(optimizer)


def sparse_optimizer(config):
    """The graphopt.ops.optimizers config that applies Keras optimizer ``config`` to rows.

    Keras calls a learning-rate schedule with the optimizer's iterations before the step
    (0-based); the sparse ops get the 1-based step, hence ``step - 1``.
    """
    if config is None:
        return None
    optimizer = keras.optimizers.deserialize(config)
    cls, names = _OPTIMIZERS[type(optimizer).__name__]
    keras_config = optimizer.get_config()
    kwargs = {mine: keras_config[theirs] for theirs, mine in names.items()}
    if type(optimizer).__name__ == "Adagrad":
        kwargs["epsilon"] = keras_config["epsilon"]
    schedule = optimizer._learning_rate
    if isinstance(schedule, keras.optimizers.schedules.LearningRateSchedule):
        kwargs["learning_rate"] = lambda step: schedule(step - 1)
    else:
        kwargs["learning_rate"] = float(keras_config["learning_rate"])
    return cls(**kwargs)


def _initializer(initializer):
    initializer = keras.initializers.get(initializer)
    return type(initializer).__name__, initializer


@keras.saving.register_keras_serializable(package="graphopt")
class DynamicEmbedding(keras.layers.Layer):
    """An Embedding without a vocabulary size: any int32/int64 id value gets its own row.

    Args:
        output_dim: row width.
        optimizer: the table's optimizer, a Keras optimizer (object, name or serialized
            dict; SGD without momentum, Adagrad, Adam, Ftrl). None: the layer cannot train.
        embeddings_initializer: initializer of a new id's row (RandomUniform, RandomNormal,
            TruncatedNormal, Constant, Zeros, Ones); rows are a function of (seed, id).
        mask_zero: id 0 is padding (``compute_mask`` is ``ids != 0``), as in Embedding.
        min_count: an id gets a row at its ``min_count``-th training lookup (admission).
        admission: "counter" (an exact count per not-yet-admitted id) or "bloom" (a counting
            Bloom filter of ``bloom_counters`` bytes fixed up front, ``bloom_hashes`` counters
            per id; a few ids are admitted early), see docs/ops.md.
        max_rows, evict_policy: row cap of the table and what leaves when it is full.
        seed: initializer seed.
        key_dtype: "int64" or "int32" (ids of the other integer dtype are cast).
    """

    def __init__(
        self,
        output_dim,
        optimizer=None,
        embeddings_initializer="uniform",
        mask_zero=False,
        min_count=0,
        max_rows=0,
        evict_policy="lru",
        seed=0,
        key_dtype="int64",
        admission="counter",
        bloom_counters=1 << 20,
        bloom_hashes=3,
        **kwargs,
    ):
        kwargs.pop("input_length", None)  # Embedding's old argument; ids have any shape here
        super().__init__(**kwargs)
        self.output_dim = int(output_dim)
        self.optimizer_config = optimizer_config(optimizer)
        self.embeddings_initializer = keras.initializers.get(embeddings_initializer)
        self.mask_zero = bool(mask_zero)
        self.supports_masking = self.mask_zero
        self.supports_jit = False  # the table ops have no XLA kernels: jit_compile="auto" resolves off
        self.min_count, self.max_rows, self.evict_policy = int(min_count), int(max_rows), evict_policy
        self.seed = int(seed)
        self.admission, self.bloom_counters, self.bloom_hashes = admission, bloom_counters, bloom_hashes
        self.key_dtype = tf.as_dtype(key_dtype)
        with tf.init_scope():
            self.table = EmbeddingVariable(
                self.output_dim,
                key_dtype=self.key_dtype,
                initializer=self.embeddings_initializer,
                seed=self.seed,
                name=self.name,
                optimizer=sparse_optimizer(self.optimizer_config),
                min_count=self.min_count,
                max_rows=self.max_rows,
                evict_policy=self.evict_policy,
                admission=self.admission,
                bloom_counters=self.bloom_counters,
                bloom_hashes=self.bloom_hashes,
                # A named table, unique to this layer: a TF1 session (graphopt validate's session
                # loader, TF Serving) then finds the restored rows at every run, where an
                # anonymous eager table would be created afresh per run.
                shared_name=f"{self.name}_{uuid.uuid4().hex}",
            )
            self.table._anonymous = True  # still destroyed with the layer, as eager tables are
        self.update_trigger = self.add_weight(shape=(), initializer="zeros", name="update_trigger")
        # Table steps taken: the 1-based step of the next update is iterations + 1 (Adam's
        # bias correction, the learning-rate schedule, the rows' last-used step for eviction).
        self.iterations = self.add_weight(
            shape=(), dtype="int64", initializer="zeros", trainable=False, name="iterations"
        )
        self.built = True

    def compute_output_shape(self, input_shape):
        return tuple(input_shape) + (self.output_dim,)

    def compute_output_spec(self, inputs, mask=None, training=None):
        return keras.KerasTensor(self.compute_output_shape(inputs.shape), dtype="float32")

    def compute_mask(self, inputs, mask=None):
        if not self.mask_zero:
            return None
        return keras.ops.not_equal(inputs, 0)

    def _ids(self, inputs):
        ids = tf.convert_to_tensor(inputs)
        if ids.dtype != self.key_dtype:
            ids = tf.cast(ids, self.key_dtype)
        return ids

    def call(self, inputs, training=None):
        ids = self._ids(inputs)
        if not training:
            return self.table.lookup(ids)
        if self.table.optimizer is None:
            raise ValueError(
                f"DynamicEmbedding '{self.name}' has no optimizer; give it optimizer= (or convert "
                "a compiled model) to train it"
            )
        step = tf.convert_to_tensor(self.iterations.value) + 1
        rows = self.table.lookup(ids, insert_missing=True, step=step)
        return self._update_in_backward(rows, ids, tf.convert_to_tensor(self.update_trigger.value), step)

    def _update_in_backward(self, rows, ids, trigger, step):
        @tf.custom_gradient
        def attach(rows, trigger):
            def grad(d_rows):
                # The step read in the forward pass, assigned (not incremented): a shared layer's
                # call sites all update at the same step, and the count advances once per batch.
                advance = self.iterations.value.assign(step, read_value=False)
                apply = self.table.apply_gradients(ids, tf.convert_to_tensor(d_rows), step=step)
                with tf.control_dependencies([op for op in (advance, apply) if op is not None]):
                    # A zero that depends on the update by data, not only by control edge.
                    done = tf.convert_to_tensor(self.iterations.value)
                    return None, tf.cast(tf.minimum(done, 0), trigger.dtype)

            return tf.identity(rows), grad

        return attach(rows, trigger)

    # --- saving: the table's keys, rows, counters and slots beside the layer's variables ---
    def save_own_variables(self, store):
        keys, values, freqs, versions, slots, pending = self.table._snapshot()
        store["update_trigger"] = np.asarray(self.update_trigger.numpy())
        store["iterations"] = np.asarray(self.iterations.numpy())
        for key, value in zip(
            contract.table_tensor_names(TABLE), (keys, values, freqs, versions), strict=True
        ):
            store[key] = value.numpy()
        for name, value in slots.items():
            store[contract.slot_tensor_name(TABLE, name)] = value.numpy()
        for part, value in zip(contract.PENDING_TENSORS, pending, strict=True):
            store[contract.tensor_name(TABLE, part)] = value.numpy()

    def load_own_variables(self, store):
        self.update_trigger.assign(store["update_trigger"][()])
        self.iterations.assign(store["iterations"][()])
        get = lambda key: np.asarray(store[key])  # noqa: E731
        names = self.table.slot_names
        slot_keys = {n: contract.slot_tensor_name(TABLE, n) for n in names}
        slots = {n: get(key) for n, key in slot_keys.items() if key in store}
        keys, values, freqs, versions = map(get, contract.table_tensor_names(TABLE))
        self.table.import_(
            keys,
            values.reshape(-1, self.output_dim),
            freqs,
            versions,
            slots={n: v.reshape(-1, self.output_dim) for n, v in slots.items()} or None,
            pending=tuple(get(contract.tensor_name(TABLE, part)) for part in contract.PENDING_TENSORS),
        )

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "output_dim": self.output_dim,
                "optimizer": self.optimizer_config,
                "embeddings_initializer": keras.initializers.serialize(self.embeddings_initializer),
                "mask_zero": self.mask_zero,
                "min_count": self.min_count,
                "max_rows": self.max_rows,
                "evict_policy": self.evict_policy,
                "seed": self.seed,
                "key_dtype": self.key_dtype.name,
                "admission": self.admission,
                "bloom_counters": self.bloom_counters,
                "bloom_hashes": self.bloom_hashes,
            }
        )
        return config
