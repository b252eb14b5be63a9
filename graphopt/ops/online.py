"""The online-update ops on a table's resource handle: what changed since a step, and a delta
applied atomically. Handles, not EmbeddingVariable objects, because a served model's tables are
restored resources that only expose their handle."""

import tensorflow as tf

from graphopt.ops.library import load_library


def export_changed(handle, dim: int, since: int):
    """(keys int64 [n], values float32 [n, dim], versions int64 [n], present_keys int64 [m]):
    the rows whose last step is after ``since`` and every key the table holds, one snapshot."""
    out = load_library().graphopt_ev_export_changed(handle, tf.convert_to_tensor(since, tf.int64), dim=dim)
    return out.keys, out.values, out.versions, out.present_keys


def apply_delta(handle, dim: int, keys, values, removed_keys):
    """Removes ``removed_keys`` then assigns ``values`` ([n, dim]) to ``keys``, inserting missing
    keys, under every shard's writer lock: a concurrent lookup sees all of it or none."""
    return load_library().graphopt_ev_apply_delta(
        handle,
        tf.convert_to_tensor(keys, tf.int64),
        tf.convert_to_tensor(values, tf.float32),
        tf.convert_to_tensor(removed_keys, tf.int64),
        dim=dim,
    )
