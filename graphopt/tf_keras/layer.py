"""DynamicEmbedding for tf_keras: the Keras 3 layer's design (graphopt.keras.layer) on tf_keras.

The rows live in an EmbeddingVariable; ``training`` calls look ids up with find-or-insert, and
the gradient of the output drives the table's fused sparse apply op from the backward pass
(through a ``tf.custom_gradient`` whose trigger is the scalar ``update_trigger`` weight, the
layer's one trainable weight). The table's optimizer is configured on the layer as a tf_keras
optimizer config (SGD without momentum, Adagrad, Adam, Ftrl): the rewrite of a tf_keras
SavedModel fills it from the model's compiled optimizer, so ``tf_keras.models.load_model`` of the
rewritten model revives each converted Embedding as this layer and ``fit`` trains its rows.

The table is tracked as ``embeddings``, the name an Embedding's variable has in a SavedModel's
object graph, so the rewritten checkpoint restores into it.
"""

import warnings

import tensorflow as tf
import tf_keras
from tensorflow.python.checkpoint import saveable_compat

from graphopt.keras import layer as keras3_layer
from graphopt.ops.embedding_variable import EmbeddingVariable


@saveable_compat.legacy_saveable_name("VARIABLE_VALUE")
class _Embeddings(EmbeddingVariable):
    """The layer's table, checkpointed as ``<path>/embeddings/.ATTRIBUTES/VARIABLE_VALUE-keys``
    (-values, ...): where the rewrite of a tf_keras SavedModel puts an Embedding's converted rows
    (its variable's checkpoint key, suffixed), so load_model restores them into this table."""


@tf_keras.saving.register_keras_serializable(package="graphopt")
class DynamicEmbedding(tf_keras.layers.Layer):
    """An Embedding without a vocabulary size for tf_keras models; arguments as
    ``graphopt.keras.DynamicEmbedding`` (``optimizer``: a tf_keras optimizer, name or config)."""

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
        for embedding_only in (
            "input_dim",
            "input_length",
            "sparse",
            "activity_regularizer",
            "embeddings_constraint",
        ):
            kwargs.pop(embedding_only, None)  # an Embedding's; ids have any value and shape here
        # A converted Embedding's: its value counts in the model's losses, over the table's present
        # rows (every row right after the rewrite); its gradient does not reach the rows (warned).
        self._embeddings_regularizer = kwargs.pop("embeddings_regularizer", None)
        super().__init__(**kwargs)
        self.output_dim = int(output_dim)
        self.optimizer_config = keras3_layer.optimizer_config(optimizer, tf_keras)
        self.embeddings_initializer = tf_keras.initializers.get(embeddings_initializer)
        self.mask_zero = bool(mask_zero)
        self.supports_masking = self.mask_zero
        self.min_count, self.max_rows, self.evict_policy = int(min_count), int(max_rows), evict_policy
        self.seed = int(seed)
        self.admission, self.bloom_counters, self.bloom_hashes = admission, bloom_counters, bloom_hashes
        self.key_dtype = tf.as_dtype(key_dtype)
        self.embeddings = keras3_layer.create_table(self, tf_keras, _Embeddings)
        self.update_trigger = self.add_weight(
            name="update_trigger", shape=(), initializer="zeros", trainable=True
        )
        self.iterations = self.add_weight(
            name="iterations", shape=(), dtype="int64", initializer="zeros", trainable=False
        )
        self.built = True
        self._fit_warned = False
        regularizer = tf_keras.regularizers.get(self._embeddings_regularizer)
        if regularizer is not None:
            # tf_keras computes an Embedding's regularization over its whole [V, dim] variable in
            # model.losses; here over the exported rows, the same sum in another order. Exported
            # values carry no gradient: fit's loss is the original's, its update to the rows is not.
            self.add_loss(lambda: regularizer(tf.stop_gradient(self.table.export()[1])))
        for problem in self._training_problems():
            warnings.warn(problem, RuntimeWarning, stacklevel=2)

    def _training_problems(self) -> list:
        """What fit will not do for this table (warned at construction, i.e. at load, and at the
        first training call)."""
        problems = []
        if self.optimizer_config is None:
            problems.append(
                f"graphopt: tf_keras layer {self.name} has no optimizer, so fit cannot train its "
                "table (it is looked up find-only); rewrite a model compiled with SGD, Adagrad, Adam "
                "or Ftrl, or give DynamicEmbedding optimizer="
            )
        if self._embeddings_regularizer:
            problems.append(
                f"graphopt: tf_keras layer {self.name}: its embeddings_regularizer counts in the "
                "loss, but its gradient is not applied when fit trains the dynamic table (rows "
                "do not decay)"
            )
        return problems

    @property
    def table(self):
        return self.embeddings

    def compute_output_shape(self, input_shape):
        return tf.TensorShape(input_shape).concatenate([self.output_dim])

    def compute_mask(self, inputs, mask=None):
        if not self.mask_zero:
            return None
        return tf.not_equal(inputs, 0)

    def call(self, inputs, training=None):
        ids = tf.convert_to_tensor(inputs)
        if ids.dtype != self.key_dtype:
            ids = tf.cast(ids, self.key_dtype)
        if training and not self._fit_warned:
            self._fit_warned = True
            for problem in self._training_problems():
                warnings.warn(problem, RuntimeWarning, stacklevel=2)
        if not training or self.table.optimizer is None:
            return self.table.lookup(ids)
        step = tf.convert_to_tensor(self.iterations) + 1
        rows = self.table.lookup(ids, insert_missing=True, step=step)
        return keras3_layer.attach_table_update(self, rows, ids, step)

    def save_own_variables(self, store):
        keras3_layer.save_table_variables(self, store)

    def load_own_variables(self, store):
        keras3_layer.load_table_variables(self, store)

    def get_config(self):
        config = super().get_config()
        config.update(keras3_layer.table_layer_config(self, tf_keras))
        regularizer = tf_keras.regularizers.get(self._embeddings_regularizer)
        config["embeddings_regularizer"] = (
            None if regularizer is None else tf_keras.regularizers.serialize(regularizer)
        )
        return config
