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

import contextlib
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
    "use_ema": False,
    "decay": 0.0,  # tf_keras' legacy optimizers' learning-rate decay
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


def _is_legacy(optimizer) -> bool:
    """tf_keras' ``optimizers.legacy`` classes (OptimizerV2): TF's V2 kernels, not Keras' formulas."""
    return bool(getattr(optimizer, "_is_legacy_optimizer", False)) or "legacy" in type(optimizer).__module__


def optimizer_config(optimizer, api=keras):
    """A Keras optimizer (object, name or serialized dict) as its serialized dict, or None.

    ``api``: the Keras the optimizer belongs to, ``keras`` (Keras 3) or ``tf_keras``.
    """
    if optimizer is None:
        return None
    if isinstance(optimizer, dict):
        optimizer = api.optimizers.deserialize(optimizer)
    elif isinstance(optimizer, str):
        optimizer = api.optimizers.get(optimizer)
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
    return api.optimizers.serialize(optimizer)


def sparse_optimizer(config, api=keras):
    """The graphopt.ops.optimizers config that applies Keras optimizer ``config`` to rows.

    Keras calls a learning-rate schedule with the optimizer's iterations before the step
    (0-based); the sparse ops get the 1-based step, hence ``step - 1``. Keras' Adagrad (both
    Keras 3 and tf_keras) divides by sqrt(accumulator + epsilon), the op's
    ``epsilon_inside_sqrt`` form; tf_keras' legacy optimizers run TF's V2 kernels (Adagrad:
    sqrt(accumulator) + epsilon; SGD: one scatter per occurrence of an id, unsummed).
    """
    if config is None:
        return None
    optimizer = api.optimizers.deserialize(config)
    cls, names = _OPTIMIZERS[type(optimizer).__name__]
    keras_config = optimizer.get_config()
    kwargs = {mine: keras_config[theirs] for theirs, mine in names.items()}
    legacy = _is_legacy(optimizer)
    if type(optimizer).__name__ == "Adagrad":
        kwargs["epsilon"] = keras_config["epsilon"]
        kwargs["epsilon_inside_sqrt"] = not legacy
        # tf_keras applies a sparse gradient to the batch's rows (Grappler then computes the
        # division by rsqrt over them); Keras 3 updates the whole table.
        kwargs["batch_rsqrt"] = not legacy and api.__name__ == "tf_keras"
    if type(optimizer).__name__ == "SGD" and legacy:
        kwargs["sum_duplicates"] = False
    schedule = getattr(optimizer, "_learning_rate", None)
    if isinstance(schedule, api.optimizers.schedules.LearningRateSchedule):
        kwargs["learning_rate"] = lambda step: schedule(step - 1)
    else:
        kwargs["learning_rate"] = float(keras_config["learning_rate"])
    return cls(**kwargs)


def attach_table_update(layer, rows, ids, step):
    """``rows`` (the layer's training lookup of ``ids`` at ``step``) with the table update in
    their backward pass: the output's gradient goes to the table's sparse apply op, and
    ``layer.iterations`` is set to ``step``. The gradient of ``layer.update_trigger`` (a zero that
    depends on the update by data) is what makes every compiled train step run it."""
    trigger = tf.convert_to_tensor(_variable(layer.update_trigger))

    @tf.custom_gradient
    def attach(rows, trigger):
        def grad(d_rows):
            # The step read in the forward pass, assigned (not incremented): a shared layer's
            # call sites all update at the same step, and the count advances once per batch.
            advance = _variable(layer.iterations).assign(step, read_value=False)
            apply = layer.table.apply_gradients(ids, tf.convert_to_tensor(d_rows), step=step)
            with tf.control_dependencies([op for op in (advance, apply) if op is not None]):
                done = tf.convert_to_tensor(_variable(layer.iterations))
                return None, tf.cast(tf.minimum(done, 0), trigger.dtype)

        return tf.identity(rows), grad

    return attach(rows, trigger)


def _variable(weight):
    """The tf.Variable behind a Keras 3 weight (``.value``) or a tf_keras one (itself)."""
    return weight.value if isinstance(getattr(weight, "value", None), tf.Variable) else weight


def create_table(layer, api, cls=EmbeddingVariable):
    """The EmbeddingVariable (``cls``) of a table layer (Keras 3 or tf_keras ``api``), from its
    config attributes: a named table unique to the layer, destroyed with it."""
    with tf.init_scope():
        table = cls(
            layer.output_dim,
            key_dtype=layer.key_dtype,
            initializer=layer.embeddings_initializer,
            seed=layer.seed,
            name=layer.name,
            optimizer=sparse_optimizer(layer.optimizer_config, api),
            min_count=layer.min_count,
            max_rows=layer.max_rows,
            evict_policy=layer.evict_policy,
            admission=layer.admission,
            bloom_counters=layer.bloom_counters,
            bloom_hashes=layer.bloom_hashes,
            # A named table, unique to this layer: a TF1 session (graphopt validate's session
            # loader, TF Serving) then finds the restored rows at every run, where an
            # anonymous eager table would be created afresh per run.
            shared_name=f"{layer.name}_{uuid.uuid4().hex}",
        )
        table._anonymous = True  # still destroyed with the layer, as eager tables are
    return table


def table_layer_config(layer, api) -> dict:
    """The config entries a table layer (Keras 3 or tf_keras ``api``) adds to its base layer's."""
    return {
        "output_dim": layer.output_dim,
        "optimizer": layer.optimizer_config,
        "embeddings_initializer": api.initializers.serialize(layer.embeddings_initializer),
        "mask_zero": layer.mask_zero,
        "min_count": layer.min_count,
        "max_rows": layer.max_rows,
        "evict_policy": layer.evict_policy,
        "seed": layer.seed,
        "key_dtype": layer.key_dtype.name,
        "admission": layer.admission,
        "bloom_counters": layer.bloom_counters,
        "bloom_hashes": layer.bloom_hashes,
    }


def save_table_variables(layer, store):
    """A table layer's ``save_own_variables``: the table's keys, rows, counters and slots beside
    the layer's ``update_trigger`` and ``iterations`` (Keras 3 and tf_keras ``.keras`` files)."""
    keys, values, freqs, versions, slots, pending = layer.table._snapshot()
    store["update_trigger"] = np.asarray(layer.update_trigger.numpy())
    store["iterations"] = np.asarray(layer.iterations.numpy())
    for key, value in zip(contract.table_tensor_names(TABLE), (keys, values, freqs, versions), strict=True):
        store[key] = value.numpy()
    for name, value in slots.items():
        store[contract.slot_tensor_name(TABLE, name)] = value.numpy()
    for part, value in zip(contract.PENDING_TENSORS, pending, strict=True):
        store[contract.tensor_name(TABLE, part)] = value.numpy()


def load_table_variables(layer, store):
    """A table layer's ``load_own_variables``: what save_table_variables wrote, exactly."""
    layer.update_trigger.assign(store["update_trigger"][()])
    layer.iterations.assign(store["iterations"][()])
    get = lambda key: np.asarray(store[key])  # noqa: E731
    slot_keys = {n: contract.slot_tensor_name(TABLE, n) for n in layer.table.slot_names}
    slots = {n: get(key) for n, key in slot_keys.items() if key in store}
    keys, values, freqs, versions = map(get, contract.table_tensor_names(TABLE))
    layer.table.import_(
        keys,
        values.reshape(-1, layer.output_dim),
        freqs,
        versions,
        slots={n: v.reshape(-1, layer.output_dim) for n, v in slots.items()} or None,
        pending=tuple(get(contract.tensor_name(TABLE, part)) for part in contract.PENDING_TENSORS),
    )


COMBINERS = (None, "sum", "mean", "sqrtn")


def combine(x, inputs, weights, combiner):
    """keras-rs ``EmbedReduce``'s reduction of looked-up rows ``x`` (dense ids ``inputs``, optional
    ``weights``), in its ops and order, so a converted DistributedEmbedding table computes what
    it computed: 1-D ids are weighted (sum) or returned as they are; 2-D ids are reduced over
    their last axis by the weighted sum, mean (sum / sum of weights) or sqrtn."""
    if combiner is None:
        return x
    ops = keras.ops
    rank = len(x.shape)
    dtype = x.dtype if weights is None else keras.backend.result_type(x.dtype, weights.dtype)
    if weights is None or (rank <= 2 and combiner != "sum"):
        weights = ops.ones_like(inputs, dtype=dtype)
    else:
        weights = ops.cast(weights, dtype)
    weights = ops.convert_to_tensor(weights, sparse=False)
    if len(weights.shape) < rank:
        weights = ops.expand_dims(weights, axis=tuple(range(len(weights.shape), rank)))
    x = ops.multiply(x, weights)
    if rank <= 2:
        return x
    x = ops.sum(x, axis=-2)
    if combiner == "mean":
        return ops.divide_no_nan(x, ops.sum(weights, axis=-2))
    if combiner == "sqrtn":
        return ops.divide_no_nan(x, ops.sqrt(ops.sum(ops.square(weights), axis=-2)))
    return x


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
        combiner=None,
        **kwargs,
    ):
        kwargs.pop("input_length", None)  # Embedding's old argument; ids have any shape here
        super().__init__(**kwargs)
        if combiner not in COMBINERS:
            raise ValueError(f"combiner must be one of {', '.join(map(str, COMBINERS))}, got {combiner!r}")
        self.combiner = combiner
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
        self.table = create_table(self, keras)
        self.update_trigger = self.add_weight(shape=(), initializer="zeros", name="update_trigger")
        # Table steps taken: the 1-based step of the next update is iterations + 1 (Adam's
        # bias correction, the learning-rate schedule, the rows' last-used step for eviction).
        self.iterations = self.add_weight(
            shape=(), dtype="int64", initializer="zeros", trainable=False, name="iterations"
        )
        self.built = True

    def compute_output_shape(self, input_shape, weights_shape=None):
        if self.combiner is not None and len(input_shape) > 1:
            return tuple(input_shape)[:-1] + (self.output_dim,)
        return tuple(input_shape) + (self.output_dim,)

    def compute_output_spec(self, inputs, weights=None, mask=None, training=None):
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

    def call(self, inputs, weights=None, training=None):
        return combine(self._lookup(inputs, training), inputs, weights, self.combiner)

    def _lookup(self, inputs, training):
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
        return attach_table_update(self, rows, ids, step)

    # --- saving: the table's keys, rows, counters and slots beside the layer's variables ---
    def save_own_variables(self, store):
        save_table_variables(self, store)

    def load_own_variables(self, store):
        load_table_variables(self, store)

    def get_config(self):
        config = super().get_config()
        config.update(table_layer_config(self, keras))
        config["combiner"] = self.combiner
        return config


@contextlib.contextmanager
def compressed_tables(model, row_dtype):
    """Within the block, every DynamicEmbedding layer of ``model`` looks up a compressed copy of its
    table (``row_dtype`` int8 / float16 / bfloat16, docs/ops.md): what ``model.export`` then saves
    is a serving model with compressed rows. The trained float32 tables are put back afterwards.

        with compressed_tables(model, "int8"):
            model.export("serving/1", format="tf_saved_model")
    """
    from graphopt.checkpoint import compress

    compress.check_row_dtype(row_dtype)
    layers = [layer for layer in model.layers if isinstance(layer, DynamicEmbedding)]
    if row_dtype == "float32" or not layers:
        yield layers
        return
    trained = {}
    for layer in layers:
        keys, values, _, _ = layer.table.export()
        compress.check_rows(values.numpy(), row_dtype, layer.name)
        with tf.init_scope():
            table = EmbeddingVariable(
                layer.output_dim,
                key_dtype=layer.key_dtype,
                name=layer.name,
                row_dtype=row_dtype,
                shared_name=f"{layer.name}_{row_dtype}_{uuid.uuid4().hex}",
            )
            table._anonymous = True
        table.import_(keys, values)
        trained[layer.name] = layer.table
        layer.table = table
    try:
        yield layers
    finally:
        for layer in layers:
            layer.table = trained[layer.name]
