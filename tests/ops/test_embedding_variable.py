"""The Python API: eager, tf.function, TF1 graphs, gradients, checkpoints, SavedModel."""

import os

import numpy as np
import pytest
import tensorflow as tf

import graphopt
from graphopt import EmbeddingVariable

ROWS = np.arange(12, dtype=np.float32).reshape(3, 4)


def test_exported_from_package():
    assert graphopt.EmbeddingVariable is EmbeddingVariable


def test_tf_function_lookup_and_insert():
    ev = EmbeddingVariable(4, initializer="zeros")

    @tf.function
    def step(ids, rows):
        ev.insert(ids, rows)
        return ev.lookup(ids), ev.lookup(ids + 100, insert_missing=True), ev.size()

    found, inserted, size = step(tf.constant([1, 2, 3], tf.int64), ROWS)
    np.testing.assert_array_equal(found.numpy(), ROWS)
    assert not inserted.numpy().any() and int(size) == 6


def test_int32_ids():
    ev = EmbeddingVariable(4, key_dtype=tf.int32)
    ev.insert(tf.constant([1, 2, 3], tf.int32), ROWS)
    np.testing.assert_array_equal(ev.lookup(tf.constant([[3], [1]], tf.int32)).numpy(), ROWS[[[2], [0]]])


def test_gradient_reaches_rows_as_indexed_slices():
    ev = EmbeddingVariable(4)
    ev.insert([1, 2, 3], ROWS)
    ids = tf.constant([[3, 1], [3, 3]], tf.int64)
    weights = tf.constant(np.random.default_rng(0).standard_normal((2, 2, 4)), tf.float32)
    with tf.GradientTape() as tape:
        tape.watch(ev.handle)
        loss = tf.reduce_sum(ev.lookup(ids) * weights)
    grad = tape.gradient(loss, ev.handle)
    assert isinstance(grad, tf.IndexedSlices)
    np.testing.assert_array_equal(grad.indices.numpy(), [3, 1, 3, 3])
    np.testing.assert_allclose(grad.values.numpy(), weights.numpy().reshape(-1, 4))

    # the same through find-or-insert, in a tf.function, against a dense-variable reference
    dense = tf.Variable(np.zeros((4, 4), np.float32))

    @tf.function
    def grads():
        with tf.GradientTape(persistent=True) as t:
            t.watch(ev.handle)
            ours = tf.reduce_sum(ev.lookup(ids, insert_missing=True) * weights)
            ref = tf.reduce_sum(tf.gather(dense, ids) * weights)
        return t.gradient(ours, ev.handle), t.gradient(ref, dense)

    g, ref = grads()
    np.testing.assert_allclose(
        tf.convert_to_tensor(tf.IndexedSlices(g.values, g.indices, tf.constant([4, 4], tf.int64))).numpy(),
        tf.convert_to_tensor(ref).numpy(),
    )


def test_tf1_graph_session_and_saver(tmp_path):
    prefix = str(tmp_path / "model.ckpt")
    with tf.Graph().as_default(), tf.compat.v1.Session() as sess:
        ev = EmbeddingVariable(4, name="movie_emb")
        ids = tf.compat.v1.placeholder(tf.int64, [None])
        train = ev.lookup(ids, insert_missing=True, step=tf.constant(7, tf.int64))
        assign = ev.insert([1, 2, 3], ROWS)
        saver = tf.compat.v1.train.Saver()
        sess.run(assign)
        trained = sess.run(train, {ids: [1, 9]})
        np.testing.assert_array_equal(trained[0], ROWS[0])
        saver.save(sess, prefix)
    names = dict(tf.train.list_variables(prefix))
    assert names == {
        "movie_emb-keys": [4],
        "movie_emb-values": [4, 4],
        "movie_emb-freqs": [4],
        "movie_emb-versions": [4],
    }
    with tf.Graph().as_default(), tf.compat.v1.Session() as sess:
        ev = EmbeddingVariable(4, name="movie_emb")
        found = ev.lookup([1, 9, 5])
        tf.compat.v1.train.Saver().restore(sess, prefix)
        got = sess.run(found)
        np.testing.assert_array_equal(got[:2], np.stack([ROWS[0], trained[1]]))
        assert not got[2].any()
        _, _, freqs, versions = sess.run(ev.export())
        assert sorted(freqs.tolist()) == [0, 0, 1, 1] and sorted(versions.tolist()) == [0, 0, 7, 7]


def test_tf2_checkpoint_round_trip(tmp_path):
    ev = EmbeddingVariable(4, seed=3)
    ev.insert([1, 2, 3], ROWS)
    ev.lookup([-1], insert_missing=True, step=4)
    path = tf.train.Checkpoint(emb=ev).write(str(tmp_path / "ckpt"))
    names = sorted(n for n, _ in tf.train.list_variables(path) if n.startswith("emb/"))
    assert [n.rsplit("-", 1)[1] for n in names] == ["freqs", "keys", "values", "versions"]
    restored = EmbeddingVariable(4)
    tf.train.Checkpoint(emb=restored).read(path).assert_consumed()
    for a, b in zip(ev.export(), restored.export(), strict=False):
        np.testing.assert_array_equal(np.sort(a.numpy(), axis=0), np.sort(b.numpy(), axis=0))


def test_saved_model_round_trip(tmp_path):
    module = tf.Module()
    module.emb = EmbeddingVariable(4, default_value=-1.0)
    module.emb.insert([10, 20, 30], ROWS)
    module.serve = tf.function(
        lambda ids: module.emb.lookup(ids), input_signature=[tf.TensorSpec([None], tf.int64)]
    )
    module.train = tf.function(
        lambda ids: module.emb.lookup(ids, insert_missing=True),
        input_signature=[tf.TensorSpec([None], tf.int64)],
    )
    export_dir = str(tmp_path / "saved")
    tf.saved_model.save(module, export_dir)
    loaded = tf.saved_model.load(export_dir)
    np.testing.assert_array_equal(
        loaded.serve(tf.constant([30, 10, 5], tf.int64)).numpy(), np.stack([ROWS[2], ROWS[0], -np.ones(4)])
    )
    # a second load is an independent table
    again = tf.saved_model.load(export_dir)
    loaded.train(tf.constant([77], tf.int64))
    assert (again.serve(tf.constant([77], tf.int64)).numpy() == -1).all()
    assert os.path.isdir(export_dir)


def test_eager_objects_do_not_share_tables():
    a, b = EmbeddingVariable(4), EmbeddingVariable(4)
    a.insert([1], ROWS[:1])
    assert int(b.size()) == 0


def test_named_tables_share_in_a_graph():
    with tf.Graph().as_default(), tf.compat.v1.Session() as sess:
        a = EmbeddingVariable(4, shared_name="shared_table")
        b = EmbeddingVariable(4, shared_name="shared_table")
        sess.run(a.insert([1, 2], ROWS[:2]))
        assert sess.run(b.size()) == 2


@pytest.mark.parametrize(
    "bad", [{"initializer": "glorot"}, {"initializer": tf.keras.initializers.Constant([1.0, 2.0])}]
)
def test_bad_initializer(bad):
    with pytest.raises(tf.errors.InvalidArgumentError):
        EmbeddingVariable(4, **bad)


def test_two_variables_keep_their_own_tables_after_load(tmp_path):
    module = tf.Module()
    module.a = EmbeddingVariable(4, name="a")
    module.b = EmbeddingVariable(4, name="b")
    module.a.insert(tf.constant([1, 2, 3], tf.int64), tf.ones([3, 4]))
    module.b.insert(tf.constant([7], tf.int64), 2 * tf.ones([1, 4]))
    tf.saved_model.save(module, str(tmp_path))
    lib = graphopt.ops.load_library()
    first, second = tf.saved_model.load(str(tmp_path)), tf.saved_model.load(str(tmp_path))
    sizes = [int(lib.graphopt_ev_size(m.a.resource_handle)) for m in (first, second)]
    sizes += [int(lib.graphopt_ev_size(m.b.resource_handle)) for m in (first, second)]
    assert sizes == [3, 3, 1, 1]
    lib.graphopt_ev_insert(first.a.resource_handle, tf.constant([9], tf.int64), tf.ones([1, 4]), dim=4)
    assert int(lib.graphopt_ev_size(second.a.resource_handle)) == 3  # loads do not share
    keys, values, _, _ = lib.graphopt_ev_export(first.b.resource_handle, dim=4)
    assert keys.numpy().tolist() == [7] and (values.numpy() == 2).all()
