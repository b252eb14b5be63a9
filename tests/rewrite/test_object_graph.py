"""The TF2 object graph is rewritten, not dropped: tables become EmbeddingVariable objects."""

import collections

import pytest
import tensorflow as tf

from graphopt import model_io
from graphopt.graph import object_graphs
from graphopt.rewrite import rewrite_model


def _restored_tables(loaded):
    """{object path: rows held} of each EmbeddingVariable object the TF2 loader restored."""
    import graphopt.ops.library as library

    lib = library.load_library()
    found = {}
    for list_name in ("variables", "_all_variables"):
        for i, obj in enumerate(getattr(loaded, list_name, [])):
            if type(obj).__name__ == "RestoredResource":
                found[f"{list_name}/{i}"] = int(lib.graphopt_ev_size(obj.resource_handle).numpy())
    return found


@pytest.fixture(scope="module")
def keras_rewrites(course_models, ev_ops, tmp_path_factory):
    model_dir, _ = course_models("keras")
    base = tmp_path_factory.mktemp("object_graph")
    outs = [str(base / "a"), str(base / "b")]
    for out in outs:
        rewrite_model(model_dir, out)
    return model_dir, outs


@pytest.mark.slow
def test_table_objects_become_embedding_variables(keras_rewrites):
    model_dir, (out, _) = keras_rewrites
    before = model_io.read_model(model_dir).meta_graph.object_graph_def
    after = model_io.read_model(out).meta_graph.object_graph_def
    kinds = lambda og: collections.Counter(n.WhichOneof("kind") for n in og.nodes)  # noqa: E731
    # Keras 3 tracks each of the 10 tables twice (variables/N and _all_variables/N); both objects
    # of each table now stand for one EmbeddingVariable; the 6 dense weights (x2) stay variables.
    assert kinds(before)["variable"] == 32 and kinds(after)["variable"] == 12
    assert kinds(after)["resource"] == kinds(before)["resource"] + 20
    assert len(after.nodes) > len(before.nodes)


@pytest.mark.slow
def test_aliased_objects_share_one_restored_table(keras_rewrites):
    _, (out, _) = keras_rewrites
    tables = _restored_tables(tf.saved_model.load(out))
    assert len(tables) == 20
    # Every object holds its table's rows (TF restores a checkpoint key once; the aliases see it).
    assert sorted(tables.values()).count(30001) == 2 and sorted(tables.values()).count(1001) == 2
    assert min(tables.values()) == 20


@pytest.mark.slow
@pytest.mark.parametrize("same_model", [False, True], ids=["two rewrites", "one rewrite loaded twice"])
def test_two_loaded_models_in_one_process_do_not_share_rows(keras_rewrites, same_model):
    """Two served versions live side by side during a swap: neither may see the other's rows."""
    import graphopt.ops.library as library

    _, (out_a, out_b) = keras_rewrites
    a, b = tf.saved_model.load(out_a), tf.saved_model.load(out_a if same_model else out_b)
    lib = library.load_library()
    table_a = [o for o in a.variables if type(o).__name__ == "RestoredResource"][0]
    table_b = [o for o in b.variables if type(o).__name__ == "RestoredResource"][0]
    size_b = lib.graphopt_ev_size(table_b.resource_handle).numpy()
    lib.graphopt_ev_insert(table_a.resource_handle, tf.constant([10**12], tf.int64), tf.ones([1, 10]), dim=10)
    assert lib.graphopt_ev_size(table_b.resource_handle).numpy() == size_b


def test_model_whose_object_graph_has_saveable_functions(ev_ops, tmp_path):
    """A MutableHashTable's save/restore functions sit past the checkpoint's objects: ids stay aligned."""
    import numpy as np

    class Net(tf.Module):
        def __init__(self):
            super().__init__()
            self.emb = tf.Variable(tf.random.stateless_normal([40, 4], seed=[3, 4]), name="emb")
            self.boost = tf.lookup.experimental.MutableHashTable(tf.int64, tf.float32, default_value=0.0)
            self.boost.insert(tf.constant([3, 7], tf.int64), tf.constant([1.5, -2.0]))

        @tf.function(input_signature=[tf.TensorSpec([None], tf.int64, name="ids")])
        def __call__(self, ids):
            rows = tf.nn.embedding_lookup(self.emb, ids)
            return {"score": tf.reduce_sum(rows, 1) + self.boost.lookup(ids)}

    net = Net()
    src, out = str(tmp_path / "net"), str(tmp_path / "out")
    tf.saved_model.save(net, src, signatures={"serving_default": net.__call__})
    meta = model_io.read_model(src).meta_graph
    assert len(meta.object_graph_def.nodes) > len(
        object_graphs.read_object_graph(f"{src}/variables/variables").nodes
    )
    report = rewrite_model(src, out)
    assert report.tables_converted == 1
    ids = tf.constant([0, 3, 7, 39, 3], tf.int64)
    expected = tf.saved_model.load(src).signatures["serving_default"](ids=ids)["score"].numpy()
    got = tf.saved_model.load(out).signatures["serving_default"](ids=ids)["score"].numpy()
    np.testing.assert_array_equal(expected, got)
