"""Checkpoints of source tables (TFRA, DeepRec) in graphopt's layout, and table dumps read into one.

A TFRA table saved under key K already has ``K-keys`` (int64 [n]) and ``K-values`` ([n, dim]), a
DeepRec EV also ``K-freqs`` and ``K-versions``: graphopt's layout. The migration copies the data files
as they are and adds, in one extra shard, what graphopt's layout has and the source's lacks: zero
freqs/versions (TFRA), and each optimizer slot table's rows aligned to K-keys as ``K-slot-<name>``
(rows the slot table lacks get the optimizer's initial slot value). Nothing is re-encoded.
"""

import numpy as np

from graphopt.checkpoint.conversion import convert_checkpoint, copy_checkpoint
from graphopt.checkpoint.index import checkpoint_tensors
from graphopt.errors import ModelError


def _tf():
    import tensorflow as tf

    return tf


# TF's initial slot values (Adagrad's initial_accumulator_value; Adam's m and v).
SLOT_INIT = {"accumulator": 0.1, "m": 0.0, "v": 0.0}


def slot_init(slot) -> float:
    """The value a slot row starts at: the slot table's own default (its find's constant) where
    the graph shows it, else TF's default for the slot."""
    if slot.default_value:
        return float(slot.default_value[0])
    return SLOT_INIT.get(slot.slot_name, 0.0)


def check_table_tensors(prefix, infos, table):
    """(rows, dim) of a source table's K-keys / K-values; ModelError naming the table when they
    are missing or disagree."""
    k = table.checkpoint_key
    for suffix in ("keys", "values"):
        if f"{k}-{suffix}" not in infos:
            raise ModelError(
                f"table {table.name}: checkpoint {prefix} lacks {k}-{suffix}; the checkpoint does "
                "not belong to this graph, pass the checkpoint its Saver wrote"
            )
    keys, values = infos[f"{k}-keys"], infos[f"{k}-values"]
    want = "string" if getattr(table, "hashed", False) else "int64"
    if len(keys.shape) != 1 or keys.dtype != want:
        raise ModelError(
            f"table {table.name}: checkpoint tensor {k}-keys is {keys.dtype}{keys.shape}, not int64 "
            "[n]; only int64-keyed tables convert (hash string keys to int64 first)"
        )
    if len(values.shape) != 2 or values.shape[1] != table.dim:
        raise ModelError(
            f"table {table.name}: checkpoint tensor {k}-values has shape {values.shape}, not "
            f"[n, {table.dim}] (the graph's dim); pass the checkpoint this graph saved"
        )
    if keys.shape[0] != values.shape[0]:
        raise ModelError(
            f"table {table.name}: checkpoint tensor {k}-keys holds {keys.shape[0]} keys but "
            f"{k}-values {values.shape[0]} rows; the checkpoint is damaged, save the table again"
        )
    return keys.shape[0], table.dim


def aligned_slot(main_keys, slot_keys, slot_values, init, dim):
    """The slot table's rows in the order of ``main_keys`` (``init`` where it lacks a key)."""
    out = np.full((len(main_keys), dim), init, np.float32)
    if len(slot_keys):
        order = np.argsort(slot_keys, kind="stable")
        sorted_keys = slot_keys[order]
        pos = np.searchsorted(sorted_keys, main_keys)
        pos_c = np.minimum(pos, len(sorted_keys) - 1)
        hit = sorted_keys[pos_c] == main_keys
        out[hit] = slot_values[order[pos_c[hit]]]
    return out


def migrate_checkpoint(src_prefix, dst_prefix, tables, progress=None, hash_keys=None) -> int:
    """Writes ``src_prefix``'s checkpoint at ``dst_prefix`` in graphopt's layout for ``tables``
    (graphopt.analysis.sources.SourceTable, the served ones; their ``slots`` folded in). Returns
    the bytes of table rows migrated. ``hash_keys`` (strings -> int64 keys) keys the tables whose
    ``hashed`` is set; two strings with one key are refused."""
    tf = _tf()
    infos = checkpoint_tensors(src_prefix)
    reader = None
    added: dict[str, np.ndarray] = {}
    total = 0
    for table in tables:
        rows, dim = check_table_tensors(src_prefix, infos, table)
        k = table.checkpoint_key
        total += rows * dim * 4
        if table.hashed:
            reader = reader or tf.train.load_checkpoint(src_prefix)
            hashed = np.asarray(hash_keys(reader.get_tensor(f"{k}-keys")), np.int64)
            if len(np.unique(hashed)) != len(hashed):
                raise ModelError(
                    f"table {table.name}: two of its string keys share a Fingerprint64; it cannot be "
                    "keyed collisionless, re-key it in the original model"
                )
            added[f"{k}-keys"] = hashed
        if f"{k}-freqs" not in infos:
            # The bundle aliases K-versions to these bytes (convert_checkpoint: zeros serve both).
            added[f"{k}-freqs"] = np.zeros([rows], np.int64)
        elif f"{k}-versions" not in infos:
            added[f"{k}-versions"] = np.zeros([rows], np.int64)
        if table.slots:
            reader = reader or tf.train.load_checkpoint(src_prefix)
            main_keys = reader.get_tensor(f"{k}-keys")
            for slot in table.slots:
                s_rows, _ = check_table_tensors(src_prefix, infos, slot)
                del s_rows
                added[f"{k}-slot-{slot.slot_name}"] = aligned_slot(
                    main_keys,
                    reader.get_tensor(f"{slot.checkpoint_key}-keys"),
                    reader.get_tensor(f"{slot.checkpoint_key}-values"),
                    slot_init(slot),
                    dim,
                )
        if table.min_count > 1 and f"{k}-keys_filtered" in infos and f"{k}-freqs_filtered" in infos:
            # DeepRec's keys seen fewer than filter_freq times: graphopt's admission counters.
            reader = reader or tf.train.load_checkpoint(src_prefix)
            added[f"{k}-pending-keys"] = reader.get_tensor(f"{k}-keys_filtered").astype(np.int64)
            added[f"{k}-pending-counts"] = reader.get_tensor(f"{k}-freqs_filtered").astype(np.int64)
    if added:
        convert_checkpoint(src_prefix, dst_prefix, [], added=added)
    else:
        copy_checkpoint(src_prefix, dst_prefix)
    if progress is not None:
        for i, table in enumerate(tables):
            progress(i + 1, table)
    return total
