"""Checkpoint conversion: a table's tensor becomes an EmbeddingVariable's keys/values/freqs/versions.

Also what the rewrite needs around it: the tensors of a checkpoint, and a plain copy of one.
"""

import dataclasses
import os
import shutil
from typing import Callable, Dict, Optional

import numpy as np

from graphopt.checkpoint import bundle
from graphopt.errors import ModelError

# The checkpoint key under which TF2 stores its serialized TrackableObjectGraph.
OBJECT_GRAPH_KEY = "_CHECKPOINTABLE_OBJECT_GRAPH"


def _tf():
    import tensorflow as tf

    return tf


@dataclasses.dataclass
class TensorInfo:
    name: str
    dtype: str
    shape: list

    @property
    def nbytes(self):
        return int(np.prod(self.shape, dtype=np.int64)) * (_tf().as_dtype(self.dtype).size
                                                            if self.dtype != "string" else 1)


def checkpoint_tensors(prefix):
    """{name: TensorInfo} of every tensor in a checkpoint."""
    tf = _tf()
    try:
        reader = tf.train.load_checkpoint(prefix)
    except (tf.errors.OpError, ValueError) as exc:
        raise ModelError(
            f"cannot read checkpoint {prefix} ({str(exc).splitlines()[0]}); "
            "the variables files are missing or corrupted, copy them again"
        ) from None
    dtypes = reader.get_variable_to_dtype_map()
    shapes = reader.get_variable_to_shape_map()
    return {n: TensorInfo(n, dtypes[n].name, list(shapes[n])) for n in shapes}


@dataclasses.dataclass
class TableConversion:
    """How one checkpoint tensor becomes the four tensors of an EmbeddingVariable."""

    key: str  # checkpoint key of the dense table
    new_key: str  # prefix of KEY-keys / -values / -freqs / -versions
    keys_of: Callable[[int], np.ndarray]  # rows -> int64 ids of each row in stored order


def _data_files(prefix):
    directory, base = os.path.dirname(prefix) or ".", os.path.basename(prefix)
    return sorted(os.path.join(directory, n) for n in os.listdir(directory) if n.startswith(base + ".data-"))


def _shard_name(prefix, shard, total):
    return f"{prefix}.data-{shard:05d}-of-{total:05d}"


def convert_checkpoint(src_prefix, dst_prefix, tables: list, progress: Callable = None,
                       object_graph: Optional[bytes] = None, added: Optional[Dict[str, np.ndarray]] = None):
    """Writes a copy of a checkpoint in which each table becomes keys/values/freqs/versions.

    ``object_graph``, when given (bytes, or a callable returning them or None), replaces the
    checkpoint's serialized TrackableObjectGraph;
    ``added`` ({name: array}) are tensors written beside the others (the stock target's hash tables).
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
        raise ModelError(f"checkpoint {src_prefix} lacks table tensor {missing[0]}; "
                         "the variables do not match the graph, export the model again")
    try:
        entries = dict(bundle.read_index(src_prefix + ".index"))
    except (bundle.UnsupportedIndex, IndexError, ValueError) as exc:
        raise ModelError(f"cannot read the index of checkpoint {src_prefix} ({exc}); "
                         "the variables files are corrupted, copy them again") from None
    header = tensor_bundle_pb2.BundleHeaderProto.FromString(entries.pop(b""))
    parsed = {k: tensor_bundle_pb2.BundleEntryProto.FromString(v) for k, v in entries.items()}
    sources = _data_files(src_prefix)
    if len(sources) != header.num_shards:
        raise ModelError(f"checkpoint {src_prefix} has {len(sources)} data files, its index names "
                         f"{header.num_shards}; copy all variables files")
    total = header.num_shards + 1
    os.makedirs(os.path.dirname(dst_prefix) or ".", exist_ok=True)
    for shard, path in enumerate(sources):
        shutil.copyfile(path, _shard_name(dst_prefix, shard, total))

    extra = dst_prefix + "_graphopt_extra"
    names, tensors, converted = [], [], 0
    if callable(object_graph):
        object_graph = object_graph()  # computed while the data files were being copied
    if object_graph is not None:
        parsed.pop(OBJECT_GRAPH_KEY.encode(), None)
        names.append(OBJECT_GRAPH_KEY)
        tensors.append(tf.constant(object_graph, dtype=tf.string))
    for name, value in (added or {}).items():
        names.append(name)
        tensors.append(tf.constant(value))
    for table in tables:
        entry = parsed.pop(table.key.encode())
        rows = int(entry.shape.dim[0].size)
        if entry.slices:
            # Slices may lie anywhere in the files: read the whole table once and write it whole.
            (values,) = tf.raw_ops.RestoreV2(prefix=src_prefix, tensor_names=[table.key], shape_and_slices=[""],
                                             dtypes=[tf.as_dtype(entry.dtype)])
            names.append(f"{table.new_key}-values")
            tensors.append(values)
            name = table.key.encode()
            for k in [k for k in parsed if k.startswith(b"\x00") and name in k]:
                del parsed[k]  # the slice entries of this table
        else:
            parsed[f"{table.new_key}-values".encode()] = entry
        names += [f"{table.new_key}-keys", f"{table.new_key}-freqs"]
        tensors += [tf.constant(table.keys_of(rows), tf.int64), tf.zeros([rows], tf.int64)]
        converted += infos[table.key].nbytes
    with tf.device("/CPU:0"):
        tf.raw_ops.SaveV2(prefix=extra, tensor_names=names, shape_and_slices=[""] * len(names), tensors=tensors)
    del tensors
    for key, value in bundle.read_index(extra + ".index"):
        if key:
            e = tensor_bundle_pb2.BundleEntryProto.FromString(value)
            e.shard_id = total - 1
            parsed[key] = e
            if key.endswith(b"-freqs"):  # versions start at zero too: the same bytes serve both
                parsed[key[:-len(b"freqs")] + b"versions"] = e
    os.replace(_shard_name(extra, 0, 1), _shard_name(dst_prefix, total - 1, total))
    os.remove(extra + ".index")
    header.num_shards = total
    bundle.write_index(dst_prefix + ".index", [(b"", header.SerializeToString())]
                       + sorted((k, v.SerializeToString()) for k, v in parsed.items()))
    if progress is not None:
        for i, table in enumerate(tables):
            progress(i + 1, table)
    return converted


def copy_checkpoint(src_prefix, dst_prefix):
    """Copies the files of a checkpoint (index and data shards) to a new prefix."""
    directory = os.path.dirname(src_prefix) or "."
    base = os.path.basename(src_prefix)
    os.makedirs(os.path.dirname(dst_prefix) or ".", exist_ok=True)
    for name in os.listdir(directory):
        if name == base + ".index" or name.startswith(base + ".data-"):
            shutil.copyfile(os.path.join(directory, name),
                            os.path.join(os.path.dirname(dst_prefix) or ".",
                                         os.path.basename(dst_prefix) + name[len(base):]))
