"""Checkpoint conversion: a table's tensor becomes an EmbeddingVariable's keys/values/freqs/versions.

Also what the rewrite and validate need around it: a copy of a checkpoint, and a full read of one,
each checking every tensor's CRC32C (reading a checkpoint's index is ``checkpoint.index``).
"""

import contextlib
import dataclasses
import os
import shutil
from collections.abc import Callable

import numpy as np

from graphopt.checkpoint import bundle
from graphopt.checkpoint.index import (
    OBJECT_GRAPH_KEY,
    check_data_sizes,
    checkpoint_tensors,
    key_text,
    read_bundle_index,
    shard_name,
)
from graphopt.errors import ModelError
from graphopt.ev import contract

# Bytes read and written per step while copying a data file (and checking its tensors' CRCs).
COPY_CHUNK = 8 << 20


def _tf():
    import tensorflow as tf

    return tf


@dataclasses.dataclass
class TableConversion:
    """How one checkpoint tensor becomes the four tensors of an EmbeddingVariable."""

    key: str  # checkpoint key of the dense table
    new_key: str  # prefix of KEY-keys / -values / -freqs / -versions
    keys_of: Callable[[int], np.ndarray]  # rows -> int64 ids of each row in stored order


def _copy_checked(src, dst, entries):
    """Copies data file ``src`` to ``dst`` (None: only reads it) and checks the CRC32C of each
    tensor in it on the chunks being copied (no second read). ``entries``: [(key, BundleEntryProto)]
    of this file."""
    from tensorflow.core.framework import types_pb2

    regions = sorted(((e.offset, e.offset + e.size, k, e) for k, e in entries), key=lambda r: r[:2])
    i, crc, strings = 0, 0, bytearray()  # region being hashed, its CRC so far, a string tensor's bytes
    chunk = bytearray(COPY_CHUNK)
    with open(src, "rb") as fin, open(dst, "wb") if dst else contextlib.nullcontext() as fout:
        pos = 0
        while True:
            n = fin.readinto(chunk)
            while i < len(regions) and regions[i][0] <= pos + n:
                start, end, key, entry = regions[i]
                part = memoryview(chunk)[max(start - pos, 0) : max(min(end - pos, n), 0)]
                if entry.dtype == types_pb2.DT_STRING:
                    strings += part  # hashed as TensorFlow wrote it, once whole (string tensors are small)
                else:
                    crc = bundle.crc32c_extend(crc, part)
                if end > pos + n:
                    break
                if entry.dtype == types_pb2.DT_STRING:
                    crc = _string_tensor_crc(strings, entry)
                if entry.dtype != types_pb2.DT_VARIANT and (crc is None or bundle.mask(crc) != entry.crc32c):
                    raise ModelError(
                        f"checkpoint data file {src} is corrupted: tensor {key_text(key)} fails "
                        "its CRC32C check; copy the variables files again or export the model again"
                    )
                i, crc, strings = i + 1, 0, bytearray()
            if not n:
                break
            if fout is not None:
                fout.write(memoryview(chunk)[:n])
            pos += n


def _string_tensor_crc(data, entry):
    """The CRC32C TensorFlow records for a string tensor: it hashes each length as a little-endian
    uint32 (uint64 past 4 GiB), then the masked CRC of those it stored after them, then the bytes."""
    count = int(np.prod([d.size for d in entry.shape.dim], dtype=np.int64))
    crc, pos, lengths = 0, 0, []
    try:
        for _ in range(count):
            n, pos = bundle.read_varint(data, pos)
            lengths.append(n)
            crc = bundle.crc32c_extend(crc, n.to_bytes(4 if n <= 0xFFFFFFFF else 8, "little"))
    except IndexError:
        return None  # the lengths run past the tensor: corrupted
    crc = bundle.crc32c_extend(crc, data[pos : pos + 4])
    return bundle.crc32c_extend(crc, memoryview(data)[pos + 4 :])


def convert_checkpoint(
    src_prefix,
    dst_prefix,
    tables: list,
    progress: Callable | None = None,
    object_graph: bytes | None = None,
    added: dict[str, np.ndarray] | None = None,
    renamed: dict[str, str] | None = None,
):
    """Writes a copy of a checkpoint in which each table becomes keys/values/freqs/versions.

    ``object_graph``, when given (bytes, or a callable returning them or None), replaces the
    checkpoint's serialized TrackableObjectGraph;
    ``added`` ({name: array}) are tensors written beside the others (the stock target's hash tables);
    ``renamed`` ({old: new}) keep their bytes under a new key (a trained table's slot variables).
    The data files are copied as they are and the index is rewritten so that KEY-values names
    the table's bytes where they already lie; only the ids (and one shared block of zeros for
    freqs and versions) are written, in one extra shard. Tables stored in slices (partitioned
    variables) are read once each and written whole into that shard. Returns the table bytes
    converted.
    """
    from tensorflow.core.protobuf import tensor_bundle_pb2

    tf = _tf()
    infos = checkpoint_tensors(src_prefix)
    missing = [t.key for t in tables if t.key not in infos]
    if missing:
        raise ModelError(
            f"checkpoint {src_prefix} lacks table tensor {missing[0]}; "
            "the variables do not match the graph, export the model again"
        )
    header, parsed = read_bundle_index(src_prefix)
    _copy_data_files(src_prefix, dst_prefix, header, parsed, header.num_shards + 1)
    total = header.num_shards + 1

    extra = dst_prefix + "_graphopt_extra"
    names, tensors, converted = [], [], 0
    if callable(object_graph):
        object_graph = object_graph()  # computed while the data files were being copied
    if object_graph is not None:
        parsed.pop(OBJECT_GRAPH_KEY.encode(), None)
        names.append(OBJECT_GRAPH_KEY)
        tensors.append(tf.constant(object_graph, dtype=tf.string))
    for old, new in (renamed or {}).items():
        if old.encode() not in parsed:
            raise ModelError(
                f"checkpoint {src_prefix} lacks tensor {old}; the variables do not match "
                "the graph, export the model again"
            )
        parsed[new.encode()] = parsed.pop(old.encode())
    for name, value in (added or {}).items():
        names.append(name)
        tensors.append(tf.constant(value))
    for table in tables:
        entry = parsed.pop(table.key.encode())
        if len(entry.shape.dim) != 2:
            raise ModelError(
                f"checkpoint {src_prefix} holds table tensor {table.key} with shape "
                f"{[d.size for d in entry.shape.dim]}, not [rows, dim]; the variables do not "
                "match the graph, export the model again"
            )
        rows = int(entry.shape.dim[0].size)
        if entry.slices:
            # Slices may lie anywhere in the files: read the whole table once and write it whole.
            (values,) = tf.raw_ops.RestoreV2(
                prefix=src_prefix,
                tensor_names=[table.key],
                shape_and_slices=[""],
                dtypes=[tf.as_dtype(entry.dtype)],
            )
            names.append(contract.tensor_name(table.new_key, contract.VALUES))
            tensors.append(values)
            name = table.key.encode()
            for k in [k for k in parsed if k.startswith(b"\x00") and name in k]:
                del parsed[k]  # the slice entries of this table
        else:
            parsed[contract.tensor_name(table.new_key, contract.VALUES).encode()] = entry
        names += [contract.tensor_name(table.new_key, part) for part in (contract.KEYS, contract.FREQS)]
        tensors += [tf.constant(table.keys_of(rows), tf.int64), tf.zeros([rows], tf.int64)]
        converted += infos[table.key].nbytes
    with tf.device("/CPU:0"):
        tf.raw_ops.SaveV2(
            prefix=extra, tensor_names=names, shape_and_slices=[""] * len(names), tensors=tensors
        )
    del tensors
    for key, value in bundle.read_index(extra + ".index"):
        if key:
            e = tensor_bundle_pb2.BundleEntryProto.FromString(value)
            e.shard_id = total - 1
            parsed[key] = e
            freqs = contract.tensor_name("", contract.FREQS).encode()
            if key.endswith(freqs):  # versions start at zero too: the same bytes serve both
                parsed[contract.tensor_name(key[: -len(freqs)].decode(), contract.VERSIONS).encode()] = e
    os.replace(shard_name(extra, 0, 1), shard_name(dst_prefix, total - 1, total))
    os.remove(extra + ".index")
    header.num_shards = total
    bundle.write_index(
        dst_prefix + ".index",
        [(b"", header.SerializeToString())] + sorted((k, v.SerializeToString()) for k, v in parsed.items()),
    )
    if progress is not None:
        for i, table in enumerate(tables):
            progress(i + 1, table)
    return converted


def copy_checkpoint(src_prefix, dst_prefix):
    """Copies the files of a checkpoint (index and data shards) to a new prefix, checking the data
    against its index as it goes (ModelError naming the file and tensor when it is damaged)."""
    header, entries = read_bundle_index(src_prefix)
    _copy_data_files(src_prefix, dst_prefix, header, entries, header.num_shards)
    shutil.copyfile(src_prefix + ".index", dst_prefix + ".index")


def verify_checkpoint(prefix):
    """Reads a checkpoint's index and data files and checks each tensor's CRC32C; ModelError
    naming the file and tensor when it is damaged."""
    header, entries = read_bundle_index(prefix)
    _copy_data_files(prefix, None, header, entries, header.num_shards)


def _copy_data_files(src_prefix, dst_prefix, header, entries, total):
    """Copies the data files to shards 0.. of ``total`` at ``dst_prefix`` (None: only reads them),
    each checked: sizes against the index up front, each tensor's CRC32C as its bytes pass through."""
    sources = check_data_sizes(src_prefix, header, entries)
    by_shard = {}
    for key, entry in entries.items():
        if not entry.slices:  # a sliced tensor's entry only lists its slices, which have their own
            by_shard.setdefault(entry.shard_id, []).append((key, entry))
    if dst_prefix is not None:
        os.makedirs(os.path.dirname(dst_prefix) or ".", exist_ok=True)
    for shard, path in enumerate(sources):
        _copy_checked(path, dst_prefix and shard_name(dst_prefix, shard, total), by_shard.get(shard, []))
