"""Running a model through each loader on the same inputs."""

import os

import numpy as np


def _tf():
    import tensorflow as tf

    return tf


def run_tf2(path, signature, feeds):
    """Outputs of ``tf.saved_model.load(path).signatures[signature]``."""
    tf = _tf()
    fn = tf.saved_model.load(path).signatures[signature]
    return {k: v.numpy() for k, v in fn(**{k: tf.constant(v) for k, v in feeds.items()}).items()}


def run_session(path, signature, feeds, tags=("serve",)):
    """Outputs through ``tf.compat.v1.saved_model.loader.load`` in a Session (TF Serving's path)."""
    tf = _tf()
    with tf.compat.v1.Session(graph=tf.Graph()) as sess:
        mg = tf.compat.v1.saved_model.loader.load(sess, list(tags), path)
        sig = mg.signature_def[signature]
        return sess.run(
            {k: v.name for k, v in sig.outputs.items()}, {sig.inputs[k].name: v for k, v in feeds.items()}
        )


def run_meta_graph(meta_path, feeds, fetch="out:0"):
    """``import_meta_graph`` + ``Saver.restore`` of the checkpoint beside the meta graph."""
    tf = _tf()
    prefix = tf.train.latest_checkpoint(os.path.dirname(meta_path))
    with tf.compat.v1.Session(graph=tf.Graph()) as sess:
        saver = tf.compat.v1.train.import_meta_graph(meta_path)
        saver.restore(sess, prefix)
        return {fetch: sess.run(fetch, feeds)}


def assert_identical(expected, actual):
    assert sorted(expected) == sorted(actual)
    for k in expected:
        a, b = np.asarray(expected[k]), np.asarray(actual[k])
        assert a.dtype == b.dtype and a.shape == b.shape, k
        same = a.reshape(-1) == b.reshape(-1)
        if a.dtype.kind == "f":
            same |= np.isnan(a.reshape(-1)) & np.isnan(b.reshape(-1))  # masked-out rows average to NaN
        diff = np.nonzero(~same)[0]
        assert diff.size == 0, (
            f"{k}: {diff.size} of {a.size} values differ, "
            f"e.g. {a.reshape(-1)[diff[:3]]} vs {b.reshape(-1)[diff[:3]]}"
        )
