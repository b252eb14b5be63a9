"""Fallback lookups: the ops a collisionless migration rewrites hashed and vocabulary lookups into.

A migrated table keeps its old rows under their bucket keys ``0..M-1`` and gives every raw id
(a string, or an integer id) its own key, ``collisionless_key(id)``: the farmhash
``Fingerprint64`` of a string (the one ``StringToHashBucketFast`` reduces modulo its bucket
count) or the integer itself, with the sign bit set so raw keys never meet bucket keys. An id
whose key the table does not hold reads its fallback key's row: the bucket the original model
mapped it to. Training with ``find_or_insert_with_fallback`` inserts such an id with that row
as its initial value; from the first update on it learns on its own (docs/ops.md).
"""

import tensorflow as tf
from tensorflow.python.framework import ops

from graphopt.ev import contract
from graphopt.ops.library import load_library

ID_DTYPES = (tf.string, tf.int32, tf.int64)
FALLBACK_DTYPES = (tf.int32, tf.int64)


def _invalid(message: str) -> tf.errors.InvalidArgumentError:
    return tf.errors.InvalidArgumentError(None, None, message)


def _ids(ids):
    ids = tf.convert_to_tensor(ids)
    if ids.dtype not in ID_DTYPES:
        raise _invalid(f"ids must be string, int32 or int64, got {ids.dtype.name}")
    return ids


def _fallback(fallback_keys):
    fallback_keys = tf.convert_to_tensor(fallback_keys)
    if fallback_keys.dtype not in FALLBACK_DTYPES:
        raise _invalid(f"fallback_keys must be int32 or int64, got {fallback_keys.dtype.name}")
    return fallback_keys


def collisionless_key(ids, name=None):
    """The int64 table key of each raw id (string, int32 or int64), shape of ``ids``."""
    return load_library().graphopt_ev_collisionless_key(_ids(ids), name=name)


def find_with_fallback(variable, ids, fallback_keys, name=None):
    """Rows of ``ids`` in EmbeddingVariable ``variable``; an id the table does not hold reads
    the row of its ``fallback_keys`` entry (same shape as ``ids``). Nothing is inserted."""
    return load_library().graphopt_ev_find_with_fallback(
        variable.handle, _ids(ids), _fallback(fallback_keys), dim=variable.dim, name=name
    )


def find_or_insert_with_fallback(variable, ids, fallback_keys, step=0, name=None):
    """Like ``find_with_fallback``, inserting each missing id with its fallback row (admission
    does not apply) and counting every occurrence at ``step`` as find-or-insert does."""
    step = tf.convert_to_tensor(step, tf.int64)
    return load_library().graphopt_ev_find_or_insert_with_fallback(
        variable.handle, _ids(ids), _fallback(fallback_keys), step, dim=variable.dim, name=name
    )


def _row_slices(op, grad):
    """Row gradients as IndexedSlices keyed by each id's collisionless key: what
    ``EmbeddingVariable.apply_gradients`` takes, so the id's own row learns."""
    dim = op.get_attr("dim")
    keys = load_library().graphopt_ev_collisionless_key(op.inputs[1])
    return tf.IndexedSlices(tf.reshape(grad, [-1, dim]), tf.reshape(keys, [-1]))


@ops.RegisterGradient(contract.FIND_WITH_FALLBACK.name)
def _find_with_fallback_grad(op, grad):
    return [_row_slices(op, grad), None, None]


@ops.RegisterGradient(contract.FIND_OR_INSERT_WITH_FALLBACK.name)
def _find_or_insert_with_fallback_grad(op, grad):
    return [_row_slices(op, grad), None, None, None]
