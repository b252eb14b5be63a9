"""Small models the rewrite tests build themselves, one builder per model family.

Each builder writes a model under ``path`` and returns a ``Case``: where the model is, which
signature to call with which inputs, and how many tables detection must find.
"""

import dataclasses
import os
from collections.abc import Callable

import numpy as np


@dataclasses.dataclass
class Case:
    name: str
    path: str  # SavedModel directory or .meta/.pbtxt file
    signature: str
    feeds: dict[str, np.ndarray]
    tables: int
    kind: str = "saved_model"
    left_alone: int = 0  # gathers that must stay
    tags: list[str] = dataclasses.field(default_factory=lambda: ["serve"])


def _tf():
    import tensorflow as tf

    return tf


def _rng(seed=0):
    return np.random.default_rng(seed)


def keras_two_inputs(path) -> Case:
    """Keras 3: one Embedding table gathered by two inputs (user and item share the table)."""
    import keras

    keras.utils.set_random_seed(1)
    a = keras.Input((1,), dtype="int64", name="user")
    b = keras.Input((3,), dtype="int64", name="items")
    emb = keras.layers.Embedding(50, 8, name="shared")
    x = keras.layers.Concatenate()([keras.layers.Flatten()(emb(a)), keras.layers.Flatten()(emb(b))])
    out = keras.layers.Dense(1, activation="sigmoid")(keras.layers.Dense(4, activation="relu")(x))
    keras.Model([a, b], out).export(path, verbose=False)
    # Both ends of the table through each input: a rewrite that loses the first or last row shows.
    user = np.array([[0], [49], [7], [23], [7], [31]], np.int64)
    items = np.array([[49, 0, 12], [3, 49, 3], [0, 0, 40], [18, 26, 49], [9, 1, 48], [5, 44, 0]], np.int64)
    return Case("keras_two_inputs", path, "serving_default", {"user": user, "items": items}, tables=1)


def keras_string_lookup_masking(path) -> Case:
    """Keras 3: StringLookup feeding an Embedding with mask_zero, pooled under the mask."""
    import keras

    keras.utils.set_random_seed(2)
    inp = keras.Input((4,), dtype="string", name="genres")
    ids = keras.layers.StringLookup(vocabulary=["a", "b", "c", "d"], mask_token="")(inp)
    e = keras.layers.Embedding(6, 5, mask_zero=True, name="genre_emb")(ids)
    out = keras.layers.Dense(1)(keras.layers.GlobalAveragePooling1D()(e))
    keras.Model(inp, out).export(path, verbose=False)
    feeds = {"genres": np.array([["a", "b", "", ""], ["d", "x", "c", ""], ["", "", "", ""]], dtype=object)}
    return Case("keras_string_lookup_masking", path, "serving_default", feeds, tables=1)


def module_lookup_and_activation_gather(path) -> Case:
    """tf.Module + tf.nn.embedding_lookup, plus a gather over activations that must stay."""
    tf = _tf()

    class Net(tf.Module):
        def __init__(self):
            super().__init__()
            self.emb = tf.Variable(tf.random.stateless_normal([30, 6], seed=[1, 2]), name="emb")
            self.w = tf.Variable(tf.random.stateless_normal([6, 6], seed=[3, 4]), name="w")

        @tf.function(
            input_signature=[
                tf.TensorSpec([None], tf.int64, name="ids"),
                tf.TensorSpec([2], tf.int32, name="cols"),
            ]
        )
        def __call__(self, ids, cols):
            h = tf.matmul(tf.nn.embedding_lookup(self.emb, ids), self.w)
            return {"out": tf.gather(h, cols, axis=1)}

    net = Net()
    tf.saved_model.save(net, path, signatures={"serving_default": net.__call__})
    return Case(
        "module_lookup_and_activation_gather",
        path,
        "serving_default",
        {"ids": np.array([0, 29, 7, 7], np.int64), "cols": np.array([5, 0], np.int32)},
        tables=1,
        left_alone=1,
    )


def module_lookup_sparse(path) -> Case:
    """tf.Module + tf.nn.embedding_lookup_sparse with a mean combiner over a SparseTensor."""
    tf = _tf()

    class Net(tf.Module):
        def __init__(self):
            super().__init__()
            self.emb = tf.Variable(tf.random.stateless_normal([20, 4], seed=[5, 6]), name="emb")

        @tf.function(
            input_signature=[
                tf.TensorSpec([None, 2], tf.int64, name="indices"),
                tf.TensorSpec([None], tf.int64, name="values"),
                tf.TensorSpec([2], tf.int64, name="dense_shape"),
            ]
        )
        def __call__(self, indices, values, dense_shape):
            sp = tf.SparseTensor(indices, values, dense_shape)
            return {"out": tf.nn.embedding_lookup_sparse(self.emb, sp, None, combiner="mean")}

    net = Net()
    tf.saved_model.save(net, path, signatures={"serving_default": net.__call__})
    feeds = {
        "indices": np.array([[0, 0], [0, 1], [1, 0], [2, 0], [2, 1], [2, 2]], np.int64),
        "values": np.array([3, 19, 0, 4, 4, 11], np.int64),
        "dense_shape": np.array([3, 3], np.int64),
    }
    return Case("module_lookup_sparse", path, "serving_default", feeds, tables=1)


def _tf1_graph(partitioner=None, strategy="mod", use_resource=True):
    """A TF1 graph: a plain table, optionally a partitioned one, an MLP; returns (graph, ids, out)."""
    tf = _tf()
    v1 = tf.compat.v1
    g = tf.Graph()
    with g.as_default():
        v1.set_random_seed(3)
        ids = v1.placeholder(tf.int64, [None], name="ids")
        emb = v1.get_variable("emb", [40, 4], use_resource=use_resource)
        x = tf.nn.embedding_lookup(emb, ids)
        if partitioner is not None:
            pemb = v1.get_variable("pemb", [23, 4], use_resource=use_resource, partitioner=partitioner)
            x = x + v1.nn.embedding_lookup(pemb, tf.math.floormod(ids, 23), partition_strategy=strategy)
        w = v1.get_variable("w", [4, 2], use_resource=use_resource)
        out = tf.identity(tf.matmul(x, w), name="out")
    return g, ids, out


def _tf1_saved_model(path, partitioner, strategy, name, use_resource=True) -> Case:
    tf = _tf()
    v1 = tf.compat.v1
    g, ids, out = _tf1_graph(partitioner, strategy, use_resource)
    with g.as_default(), v1.Session(graph=g) as sess:
        sess.run(v1.global_variables_initializer())
        builder = v1.saved_model.Builder(path)
        sig = v1.saved_model.predict_signature_def({"ids": ids}, {"out": out})
        builder.add_meta_graph_and_variables(
            sess, ["serve"], signature_def_map={"serving_default": sig}, main_op=v1.tables_initializer()
        )
        builder.save()
    return Case(
        name,
        path,
        "serving_default",
        {"ids": np.array([0, 39, 5, 22, 17, 11], np.int64)},
        tables=2 if partitioner is not None else 1,
    )


def tf1_builder(path) -> Case:
    """TF1 SavedModelBuilder with one resource table."""
    return _tf1_saved_model(path, None, "mod", "tf1_builder")


def tf1_partitioned_mod(path) -> Case:
    """TF1 SavedModelBuilder with a 3-way partitioned table looked up with the mod strategy."""
    return _tf1_saved_model(path, _tf().compat.v1.fixed_size_partitioner(3), "mod", "tf1_partitioned_mod")


def tf1_partitioned_div(path) -> Case:
    """TF1 SavedModelBuilder with a 3-way partitioned table looked up with the div strategy."""
    return _tf1_saved_model(path, _tf().compat.v1.fixed_size_partitioner(3), "div", "tf1_partitioned_div")


def _tf1_checkpoint(path, as_text, use_resource=True) -> Case:
    tf = _tf()
    v1 = tf.compat.v1
    g, ids, out = _tf1_graph(use_resource=use_resource)
    os.makedirs(path, exist_ok=True)
    with g.as_default(), v1.Session(graph=g) as sess:
        sess.run(v1.global_variables_initializer())
        saver = v1.train.Saver()
        prefix = saver.save(sess, os.path.join(path, "model.ckpt"), write_meta_graph=not as_text)
        if as_text:
            saver.export_meta_graph(prefix + ".pbtxt", as_text=True)
    meta = prefix + (".pbtxt" if as_text else ".meta")
    return Case(
        "tf1_checkpoint_" + ("pbtxt" if as_text else "meta"),
        meta,
        "",
        {"ids:0": np.array([0, 39, 5], np.int64)},
        tables=1,
        kind="meta_graph",
    )


def tf1_ref_variables_partitioned(path) -> Case:
    """TF1 SavedModelBuilder with ref variables (VariableV2), one of them partitioned (mod)."""
    return _tf1_saved_model(
        path,
        _tf().compat.v1.fixed_size_partitioner(2),
        "mod",
        "tf1_ref_variables_partitioned",
        use_resource=False,
    )


def tf1_checkpoint_ref_variables(path) -> Case:
    """TF1 Saver checkpoint + .meta of a graph with ref variables (VariableV2)."""
    return _tf1_checkpoint(path, as_text=False, use_resource=False)


def tf1_checkpoint_meta(path) -> Case:
    """TF1 Saver checkpoint with its binary .meta graph."""
    return _tf1_checkpoint(path, as_text=False)


def tf1_checkpoint_pbtxt(path) -> Case:
    """TF1 Saver checkpoint with a text .pbtxt meta graph."""
    return _tf1_checkpoint(path, as_text=True)


def module_without_table(path) -> Case:
    """tf.Module with a dense layer only: nothing to rewrite."""
    tf = _tf()

    class Net(tf.Module):
        def __init__(self):
            super().__init__()
            self.w = tf.Variable(tf.ones([3, 2]), name="w")

        @tf.function(input_signature=[tf.TensorSpec([None, 3], tf.float32, name="x")])
        def __call__(self, x):
            return {"out": tf.matmul(x, self.w)}

    net = Net()
    tf.saved_model.save(net, path, signatures={"serving_default": net.__call__})
    return Case("module_without_table", path, "serving_default", {"x": np.ones([2, 3], np.float32)}, tables=0)


def module_tables_read_whole(path) -> Case:
    """tf.Module whose two gathered variables the serving function also reads whole (a weight-tied
    output layer): no table."""
    tf = _tf()

    class Net(tf.Module):
        def __init__(self):
            super().__init__()
            self.a = tf.Variable(tf.ones([5, 2]), name="a")
            self.b = tf.Variable(tf.ones([5, 2]), name="b")

        @tf.function(input_signature=[tf.TensorSpec([None], tf.int64, name="ids")])
        def __call__(self, ids):
            rows = tf.gather(self.a, ids) + tf.gather(self.b, ids)
            return {
                "out": tf.matmul(rows, self.a, transpose_b=True) + tf.matmul(rows, self.b, transpose_b=True)
            }

    net = Net()
    tf.saved_model.save(net, path, signatures={"serving_default": net.__call__})
    return Case("module_tables_read_whole", path, "serving_default", {"ids": np.arange(3)}, tables=0)


def module_shared_lookup_function(path) -> Case:
    """tf.Module whose two tables go through one traced lookup function (one body, two callers)."""
    tf = _tf()

    @tf.function
    def lookup(table, ids):
        return tf.nn.embedding_lookup(table, ids)

    class Net(tf.Module):
        def __init__(self):
            super().__init__()
            self.a = tf.Variable(tf.random.stateless_normal([9, 3], seed=[1, 1]), name="a")
            self.b = tf.Variable(tf.random.stateless_normal([9, 3], seed=[2, 2]), name="b")

        @tf.function(input_signature=[tf.TensorSpec([None], tf.int64, name="ids")])
        def __call__(self, ids):
            return {"out": lookup(self.a, ids) * lookup(self.b, 8 - ids)}

    net = Net()
    tf.saved_model.save(net, path, signatures={"serving_default": net.__call__})
    return Case(
        "module_shared_lookup_function",
        path,
        "serving_default",
        {"ids": np.array([0, 3, 8], np.int64)},
        tables=2,
    )


SAVED_MODEL_CASES: list[Callable] = [
    keras_two_inputs,
    keras_string_lookup_masking,
    module_lookup_and_activation_gather,
    module_lookup_sparse,
    tf1_builder,
    tf1_partitioned_mod,
    tf1_partitioned_div,
    tf1_ref_variables_partitioned,
    module_shared_lookup_function,
]
CHECKPOINT_CASES: list[Callable] = [tf1_checkpoint_meta, tf1_checkpoint_pbtxt, tf1_checkpoint_ref_variables]
ALL_CASES = SAVED_MODEL_CASES + CHECKPOINT_CASES
