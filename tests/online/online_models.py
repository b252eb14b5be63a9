"""A served model whose answer is its EmbeddingVariable's rows, and a training table for its deltas."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from graphopt import ops  # noqa: E402

DIM = 4
BASE_KEYS = np.arange(10, dtype=np.int64)


def base_rows(keys):
    """The rows the served version starts with: row k is [k, k, k, k] / 10."""
    return np.repeat(np.asarray(keys, np.float32)[:, None] / 10, DIM, axis=1)


class RowModel(tf.Module):
    """Answers each id's row (the zero row for ids the table lacks), so a reply shows the table."""

    def __init__(self, keys=BASE_KEYS, dim=DIM):
        super().__init__()
        self.table = ops.EmbeddingVariable(dim, initializer="zeros")
        if len(keys):
            self.table.insert(tf.constant(keys, tf.int64), tf.constant(base_rows(keys)[:, :1].repeat(dim, 1)))

    @tf.function(input_signature=[tf.TensorSpec([None], tf.int64, name="ids")])
    def serve(self, ids):
        return {"rows": self.table.lookup(ids)}


def save_row_model(path, keys=BASE_KEYS, dim=DIM):
    """A version directory holding a RowModel."""
    model = RowModel(keys, dim)
    tf.saved_model.save(model, str(path), signatures={"serving_default": model.serve})
    return str(path)


def training_table(keys=BASE_KEYS, step=0):
    """A training EmbeddingVariable holding the served rows, each last seen at ``step``."""
    ev = ops.EmbeddingVariable(DIM, initializer="zeros")
    ev.insert(tf.constant(keys, tf.int64), tf.constant(base_rows(keys)))
    ev.lookup(tf.constant(keys, tf.int64), insert_missing=True, step=step)
    return ev


def train_rows(ev, keys, step, value):
    """Look ``keys`` up at ``step`` (their last step) and set their rows to ``value``."""
    keys = tf.constant(keys, tf.int64)
    ev.lookup(keys, insert_missing=True, step=step)
    ev.insert(keys, tf.fill([len(keys), DIM], float(value)))
