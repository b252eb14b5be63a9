"""SavedTables: a tf_keras layer that owns converted tables but has no graphopt counterpart (e.g.
``DenseFeatures`` over ``tf.feature_column`` embedding columns), trained through its own saved
call function.

Pattern (keras_metadata of a rewritten tf_keras SavedModel, one table layer L):

    L: class DenseFeatures, no config                      (revived from the SavedModel, find-only)
      ==>
    L: class graphopt>SavedTables, config {optimizer, tables: {child name: {output_dim, ...}}}

tf_keras revives L from that config: the layer creates one EmbeddingVariable per table under the
child name the table has in the object graph (so the checkpoint restores its rows into it and the
saved functions capture it), and receives the saved functions (``keras_api``) as a layer revived
from the SavedModel does. ``call`` runs the saved ``call_and_return_conditional_losses``; in
training it records that call on a tape watching the tables, and the output's backward pass takes
the gradient of each table (an IndexedSlices of ids and rows, from GraphoptEvFind's gradient),
inserts the ids the table does not hold (their initializer row) and applies the table's sparse
optimizer, as DynamicEmbedding does. A new id reads the default (zero) row in the forward pass of
the batch that brings it, and trains from its initializer row after it.
"""

import warnings

import tensorflow as tf
import tf_keras

from graphopt.keras import layer as keras3_layer
from graphopt.tf_keras.layer import _Embeddings


@tf_keras.saving.register_keras_serializable(package="graphopt")
class SavedTables(tf_keras.layers.Layer):
    """Runs a revived layer's saved call function with its tables trainable by ``optimizer``.

    ``tables``: {object-graph child name: {"output_dim": D, "embeddings_initializer": ...}}.
    """

    def __init__(self, tables, optimizer=None, **kwargs):
        super().__init__(**kwargs)
        self.table_configs = dict(tables)
        self.optimizer_config = keras3_layer.optimizer_config(optimizer, tf_keras)
        self._serialized_attributes = {"metadata": {}}
        self.tables = []
        for child, table in sorted(self.table_configs.items()):
            ev = _TableSpec(self, child, table).create()
            self._track_trackable(ev, name=child)
            self.tables.append(ev)
        # One trainable scalar per table stands for it among the model's trainable weights (the
        # original layer had one variable per table); their zero gradients carry the updates.
        self.update_triggers = [
            self.add_weight(name=f"update_trigger_{i}", shape=(), initializer="zeros", trainable=True)
            for i in range(len(self.tables))
        ]
        self.iterations = self.add_weight(
            name="iterations", shape=(), dtype="int64", initializer="zeros", trainable=False
        )
        self.built = True
        self._fit_warned = False
        if self.optimizer_config is None:
            warnings.warn(self._untrainable(), RuntimeWarning, stacklevel=2)

    def _untrainable(self):
        return (
            f"graphopt: tf_keras layer {self.name} has no optimizer, so fit cannot train its tables "
            "(they are looked up find-only); rewrite a model compiled with SGD, Adagrad, Adam or Ftrl"
        )

    def _saved_call(self):
        keras_api = self._serialized_attributes.get("keras_api")
        fn = getattr(keras_api, "call_and_return_conditional_losses", None)
        if fn is None:
            raise ValueError(
                f"tf_keras layer {self.name} has no saved call function; load the rewritten model "
                "with tf_keras.models.load_model"
            )
        return fn

    def call(self, inputs, training=None):
        fn = self._saved_call()
        if not training or self.optimizer_config is None:
            if training and not self._fit_warned:
                self._fit_warned = True
                warnings.warn(self._untrainable(), RuntimeWarning, stacklevel=2)
            return fn(inputs, training=False)[0]
        handles = [t.handle for t in self.tables]
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch(handles)
            out = fn(inputs, training=True)[0]
        step = tf.convert_to_tensor(self.iterations) + 1
        triggers = [tf.convert_to_tensor(t) for t in self.update_triggers]

        @tf.custom_gradient
        def attach(out_, *triggers):
            def grad(d_out):
                table_grads = tape.gradient(out, handles, output_gradients=d_out)
                updates = [self.iterations.assign(step, read_value=False)]
                for table, g in zip(self.tables, table_grads, strict=True):
                    if g is None:
                        continue
                    ids, rows = tf.reshape(g.indices, [-1]), tf.reshape(g.values, [-1, table.dim])
                    inserted = table.lookup(ids, insert_missing=True, step=step)
                    with tf.control_dependencies([inserted]):
                        updates.append(table.apply_gradients(ids, rows, step=step))
                with tf.control_dependencies([u for u in updates if u is not None]):
                    zero = tf.cast(tf.minimum(tf.convert_to_tensor(self.iterations), 0), tf.float32)
                    return (None, *[zero for _ in triggers])

            return tf.identity(out_), grad

        return attach(out, *triggers)

    def get_config(self):
        config = super().get_config()
        config.update({"tables": self.table_configs, "optimizer": self.optimizer_config})
        return config


class _TableSpec:
    """One table's attributes in the form create_table reads them."""

    def __init__(self, layer, child, config):
        self.output_dim = int(config["output_dim"])
        self.key_dtype = tf.int64
        self.embeddings_initializer = tf_keras.initializers.get(
            config.get("embeddings_initializer", "uniform")
        )
        self.seed = 0
        self.name = child.replace("/", "_")
        self.optimizer_config = layer.optimizer_config
        self.min_count, self.max_rows, self.evict_policy = 0, 0, "lru"
        self.admission, self.bloom_counters, self.bloom_hashes = "counter", 1 << 20, 3

    def create(self):
        return keras3_layer.create_table(self, tf_keras, _Embeddings)
