"""Small SavedModels in the forms validate meets, and breakers that damage a copy on purpose.

The breakers edit files the way a buggy rewrite would leave them: a checkpoint value, a
function body, a signature. They work on any SavedModel, rewritten or not.
"""

import os
import shutil

import numpy as np
import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2

ITEMS, USERS, DIM = 50, 40, 4
GENRES = ("Action", "Comedy", "Drama")


def build_keras(path):
    """Keras 3 ``model.export``: int64 ids into an Embedding, a string lookup, floats; two outputs."""
    import keras

    keras.utils.set_random_seed(1)
    movie = keras.Input(shape=(1,), dtype="int64", name="movieId")
    genre = keras.Input(shape=(1,), dtype="string", name="genre")
    numbers = keras.Input(shape=(2,), dtype="float32", name="numbers")
    embedded = keras.layers.Flatten()(keras.layers.Embedding(ITEMS, DIM, name="movie_embedding")(movie))
    one_hot = keras.layers.Flatten()(
        keras.layers.StringLookup(vocabulary=list(GENRES), output_mode="one_hot")(genre)
    )
    hidden = keras.layers.Dense(8, activation="relu")(
        keras.layers.Concatenate()([embedded, one_hot, numbers])
    )
    score = keras.layers.Dense(1, activation="sigmoid", name="score")(hidden)
    model = keras.Model([movie, genre, numbers], [score, embedded])
    model.export(path, verbose=False)
    return path


class _TwoTables(tf.Module):
    def __init__(self):
        super().__init__()
        rng = np.random.default_rng(2)
        self.items = tf.Variable(rng.standard_normal((ITEMS, DIM)).astype(np.float32), name="items")
        self.users = tf.Variable(rng.standard_normal((USERS, DIM)).astype(np.float32), name="users")

    @tf.function(
        input_signature=[
            tf.TensorSpec([None], tf.int64, name="item"),
            tf.TensorSpec([None], tf.int64, name="user"),
        ]
    )
    def score(self, item, user):
        i = tf.nn.embedding_lookup(self.items, item)
        u = tf.nn.embedding_lookup(self.users, user)
        return {"score": tf.reduce_sum(i * u, axis=1), "item_vector": i}


def build_module(path):
    """``tf.Module`` + ``tf.nn.embedding_lookup`` (ResourceGather), two tables of the same dim."""
    module = _TwoTables()
    tf.saved_model.save(module, path, signatures={"serving_default": module.score})
    return path


class _RaggedBag(tf.Module):
    def __init__(self):
        super().__init__()
        self.items = tf.Variable(
            np.random.default_rng(4).standard_normal((ITEMS, DIM)).astype(np.float32), name="items"
        )

    @tf.function(input_signature=[tf.RaggedTensorSpec([None, None], tf.int64, ragged_rank=1)])
    def ragged(self, ids):
        """A RaggedTensor argument: the signature takes its values (``ids``) and row splits (``ids_1``)."""
        rows = tf.nn.embedding_lookup(self.items, ids.values)
        return {"mean": tf.math.segment_mean(rows, ids.value_rowids())}

    @tf.function(
        input_signature=[
            tf.TensorSpec([None], tf.int64, name="values"),
            tf.TensorSpec([None], tf.int64, name="row_splits"),
        ]
    )
    def split(self, values, row_splits):
        """Separate components rebuilt with from_row_splits (which checks them), a ragged reduction."""
        bags = tf.RaggedTensor.from_row_splits(values, row_splits)
        rows = tf.ragged.map_flat_values(tf.nn.embedding_lookup, self.items, bags)
        return {"mean": tf.reduce_mean(rows, axis=1)}

    @tf.function(input_signature=[tf.RaggedTensorSpec([None, None], tf.int64, ragged_rank=1)])
    def padded(self, ids):
        """Padded to a dense batch (RaggedTensorToTensor, id 0 as padding) before the lookup."""
        return {"sum": tf.reduce_sum(tf.nn.embedding_lookup(self.items, ids.to_tensor()), axis=1)}

    @tf.function(input_signature=[tf.RaggedTensorSpec([None, None, None], tf.int64, ragged_rank=2)])
    def nested(self, ids):
        """Two ragged dimensions: values ``ids``, outer splits ``ids_1``, inner splits ``ids_2``."""
        rows = tf.ragged.map_flat_values(tf.nn.embedding_lookup, self.items, ids)
        return {"sum": tf.reduce_sum(tf.reduce_sum(rows, axis=2), axis=1)}


def build_ragged(path):
    """``tf.Module`` taking RaggedTensor components into an embedding lookup with a mean combiner."""
    module = _RaggedBag()
    signatures = {
        "serving_default": module.ragged,
        "split": module.split,
        "padded": module.padded,
        "nested": module.nested,
    }
    tf.saved_model.save(module, path, signatures=signatures)
    return path


def build_tf1(path):
    """TF1 graph: a resource variable, ``embedding_lookup``, SavedModelBuilder, Saver restore."""
    graph = tf.Graph()
    with graph.as_default():
        ids = tf.compat.v1.placeholder(tf.int64, [None], name="ids")
        weights = tf.compat.v1.placeholder(tf.float32, [None], name="weights")
        table = tf.compat.v1.get_variable(
            "item_table",
            [ITEMS, DIM],
            initializer=tf.compat.v1.random_normal_initializer(seed=3),
            use_resource=True,
        )
        rows = tf.nn.embedding_lookup(table, ids)
        out = tf.identity(tf.reduce_sum(rows, axis=1) * weights, name="out")
        with tf.compat.v1.Session(graph=graph) as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            builder = tf.compat.v1.saved_model.Builder(path)
            signature = tf.compat.v1.saved_model.predict_signature_def(
                inputs={"ids": ids, "weights": weights}, outputs={"out": out}
            )
            builder.add_meta_graph_and_variables(
                sess, ["serve"], signature_def_map={"serving_default": signature}, strip_default_attrs=True
            )
            builder.save()
    return path


def copy_model(src, dst):
    shutil.copytree(src, dst)
    return str(dst)


# --- breakers -----------------------------------------------------------------------------


def _edit_saved_model(path, edit):
    pb = os.path.join(path, "saved_model.pb")
    saved_model = saved_model_pb2.SavedModel.FromString(open(pb, "rb").read())
    edit(saved_model.meta_graphs[0])
    with open(pb, "wb") as f:
        f.write(saved_model.SerializeToString())


def checkpoint_keys_of_shape(path, shape):
    reader = tf.train.load_checkpoint(os.path.join(path, "variables", "variables"))
    return sorted(k for k, s in reader.get_variable_to_shape_map().items() if list(s) == list(shape))


def _edit_checkpoint(path, edit):
    """Rewrite a SavedModel's checkpoint after ``edit(tensors)`` changed the {key: array} dict."""
    prefix = os.path.join(path, "variables", "variables")
    reader = tf.train.load_checkpoint(prefix)
    tensors = {k: reader.get_tensor(k) for k in reader.get_variable_to_shape_map()}
    edit(tensors)
    names = sorted(tensors)
    tf.raw_ops.SaveV2(
        prefix=prefix,
        tensor_names=names,
        shape_and_slices=[""] * len(names),
        tensors=[tf.constant(tensors[n]) for n in names],
    )


def change_checkpoint_value(path, keys, index, delta=0.5):
    """Add ``delta`` to one element of the tensors ``keys`` (one variable may be saved twice)."""

    def edit(tensors):
        for key in keys:
            tensors[key] = tensors[key].copy()
            tensors[key][index] += delta

    _edit_checkpoint(path, edit)


def drop_table_key(path, table_key, key):
    """Remove one key (and its row) from an EmbeddingVariable saved under ``table_key``."""

    def edit(tensors):
        keep = tensors[f"{table_key}-keys"] != key
        assert not keep.all(), f"{table_key} holds no key {key}"
        for part in ("keys", "values", "freqs", "versions"):
            tensors[f"{table_key}-{part}"] = tensors[f"{table_key}-{part}"][keep]

    _edit_checkpoint(path, edit)


def remove_function_node(path, op):
    """Delete the first node running ``op`` from the function body that holds one; returns names."""
    found = {}

    def edit(meta_graph):
        for fdef in meta_graph.graph_def.library.function:
            for i, node in enumerate(fdef.node_def):
                if node.op == op:
                    found.update(function=fdef.signature.name, node=node.name)
                    del fdef.node_def[i]
                    return
        raise AssertionError(f"no {op} node in any function body")

    _edit_saved_model(path, edit)
    return found


def rename_signature_output(path, signature, old, new):
    def edit(meta_graph):
        outputs = meta_graph.signature_def[signature].outputs
        outputs[new].CopyFrom(outputs[old])
        del outputs[old]

    _edit_saved_model(path, edit)


def rewire_gather(path, op="ResourceGather"):
    """Make the second ``op`` gather of a function body read the first one's table."""
    found = {}

    def edit(meta_graph):
        for fdef in meta_graph.graph_def.library.function:
            gathers = [n for n in fdef.node_def if n.op == op]
            if len(gathers) >= 2:
                found.update(
                    function=fdef.signature.name,
                    node=gathers[1].name,
                    table=gathers[0].input[0],
                    was=gathers[1].input[0],
                )
                gathers[1].input[0] = gathers[0].input[0]
                return
        raise AssertionError(f"no function body with two {op} nodes")

    _edit_saved_model(path, edit)
    return found


def replace_op(path, old_op, new_op):
    """Change the op type of every ``old_op`` node in function bodies (an op no library defines)."""

    def edit(meta_graph):
        for fdef in meta_graph.graph_def.library.function:
            for node in fdef.node_def:
                if node.op == old_op:
                    node.op = new_op

    _edit_saved_model(path, edit)


# --- vocabularies in files ------------------------------------------------------------------


def write_vocabulary(path, words, columns=False):
    """One word a line; with ``columns``, ``word<TAB>id`` lines (a TextFileInitializer's key_index 0)."""
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(f"{w}\t{i}\n" if columns else f"{w}\n" for i, w in enumerate(words))
    return path


def build_keras_vocabulary_file(path, vocabulary):
    """Keras 3 ``StringLookup(vocabulary=FILE)`` into an Embedding: the file becomes an asset."""
    import keras

    keras.utils.set_random_seed(5)
    genre = keras.Input(shape=(1,), dtype="string", name="genre")
    ids = keras.layers.StringLookup(vocabulary=vocabulary)(genre)
    size = sum(1 for _ in open(vocabulary, encoding="utf-8")) + 1  # the OOV index 0 too
    embedded = keras.layers.Flatten()(keras.layers.Embedding(size, DIM, name="genre_embedding")(ids))
    keras.Model(genre, embedded).export(path, verbose=False)
    return path


class _TextFileTable(tf.Module):
    def __init__(self, vocabulary, size):
        super().__init__()
        init = tf.lookup.TextFileInitializer(vocabulary, tf.string, 0, tf.int64, 1, delimiter="\t")
        self.table = tf.lookup.StaticHashTable(init, default_value=-1)
        self.tags = tf.Variable(
            np.random.default_rng(6).standard_normal((size + 1, DIM)).astype(np.float32), name="tags"
        )

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="tag")])
    def __call__(self, tag):
        return {"vector": tf.nn.embedding_lookup(self.tags, self.table.lookup(tag) + 1)}  # unknown: row 0


def build_text_file_table(path, vocabulary):
    """``tf.lookup.TextFileInitializer`` over ``word<TAB>id`` lines (key_index 0, value_index 1)."""
    module = _TextFileTable(vocabulary, sum(1 for _ in open(vocabulary, encoding="utf-8")))
    tf.saved_model.save(module, path, signatures={"serving_default": module.__call__})
    return path


def build_feature_column_vocabulary_file(path, vocabulary):
    """tf_keras ``DenseFeatures`` over ``categorical_column_with_vocabulary_file`` (a constant path)."""
    import tf_keras

    tf_keras.utils.set_random_seed(7)
    column = tf.feature_column.categorical_column_with_vocabulary_file("city", vocabulary, num_oov_buckets=1)
    city = {"city": tf_keras.Input(shape=(1,), dtype=tf.string, name="city")}
    dense = tf_keras.layers.DenseFeatures([tf.feature_column.embedding_column(column, DIM)])(city)
    tf_keras.Model(city, dense).save(path, save_format="tf")
    return path
