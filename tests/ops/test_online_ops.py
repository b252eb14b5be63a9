"""GraphoptEvExportChanged and GraphoptEvApplyDelta: the ops under online updates."""

import numpy as np
import pytest
import tensorflow as tf

import graphopt
from graphopt.ops import online


def table(keys, step):
    ev = graphopt.EmbeddingVariable(3, initializer="zeros")
    ev.insert(
        tf.constant(keys, tf.int64), tf.constant(np.arange(len(keys) * 3, dtype=np.float32).reshape(-1, 3))
    )
    ev.lookup(tf.constant(keys, tf.int64), insert_missing=True, step=step)
    return ev


def test_export_changed_takes_rows_after_the_step_and_every_key():
    ev = table([1, 2, 3, -(2**63)], step=4)
    ev.lookup(tf.constant([2, 7], tf.int64), insert_missing=True, step=9)  # 7 is new: initializer row
    keys, values, versions, present = (t.numpy() for t in online.export_changed(ev.handle, 3, 4))
    order = np.argsort(keys)
    np.testing.assert_array_equal(keys[order], [2, 7])
    np.testing.assert_array_equal(versions[order], [9, 9])
    np.testing.assert_array_equal(values[order], [[3, 4, 5], [0, 0, 0]])
    assert sorted(present.tolist()) == [-(2**63), 1, 2, 3, 7]
    assert online.export_changed(ev.handle, 3, 9)[0].shape == [0]
    assert online.export_changed(ev.handle, 3, np.iinfo(np.int64).min)[0].shape == [5]


def test_apply_delta_removes_then_upserts_and_inserts_missing_keys():
    ev = table([1, 2, 3], step=0)
    online.apply_delta(ev.handle, 3, [3, 10], np.full((2, 3), 7, np.float32), [1, 3, 99])
    keys, values = (t.numpy() for t in ev.export()[:2])
    found = dict(zip(keys.tolist(), values.tolist(), strict=True))
    assert found == {2: [3, 4, 5], 3: [7, 7, 7], 10: [7, 7, 7]}  # 3: removed, then upserted


@pytest.mark.parametrize(
    "keys, values, removed, dim, message",
    [
        ([[1]], np.zeros((1, 3), np.float32), [], 3, "keys must be 1-D"),
        ([1, 2], np.zeros((1, 3), np.float32), [], 3, "values must have shape [2, 3]"),
        ([1], np.zeros((1, 3), np.float32), [[1]], 3, "removed_keys must be 1-D"),
        ([1], np.zeros((1, 4), np.float32), [], 4, "has dim=4 but the EmbeddingVariable has dim 3"),
    ],
)
def test_apply_delta_refuses_bad_input(keys, values, removed, dim, message):
    ev = table([1], step=0)
    with pytest.raises((tf.errors.InvalidArgumentError, ValueError), match=message.replace("[", r"\[")):
        online.apply_delta(ev.handle, dim, keys, values, removed)
    np.testing.assert_array_equal(ev.export()[0].numpy(), [1])  # nothing applied


def test_ops_have_complete_shape_functions():
    ev = table([1], step=0)

    @tf.function
    def changed(since):
        return online.export_changed(ev.handle, 3, since)

    graph = changed.get_concrete_function(tf.TensorSpec([], tf.int64)).graph
    shapes = [t.shape.as_list() for t in graph.outputs]
    assert shapes == [[None], [None, 3], [None], [None]]
    with pytest.raises(ValueError, match="must be rank 0"):
        tf.function(
            lambda: online.export_changed(ev.handle, 3, tf.constant([1], tf.int64))
        ).get_concrete_function()
    with pytest.raises(ValueError):
        tf.function(
            lambda: online.apply_delta(ev.handle, 3, [1, 2], tf.zeros([3, 3]), [])
        ).get_concrete_function()
