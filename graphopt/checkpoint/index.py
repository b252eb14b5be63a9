"""Reading a checkpoint: the tensors it holds, its bundle index, and a first look at its files.

``check_files`` is what reading a model does with its checkpoint before any work: the index parses
and passes its block CRCs, and every data file holds every byte the index points to (no tensor
data is read; each tensor's CRC32C is checked where it is copied, ``checkpoint.conversion``).
"""

import dataclasses
import os

import numpy as np
from google.protobuf import message

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
        return int(np.prod(self.shape, dtype=np.int64)) * (
            _tf().as_dtype(self.dtype).size if self.dtype != "string" else 1
        )


def checkpoint_tensors(prefix):
    """{name: TensorInfo} of every tensor in a checkpoint."""
    tf = _tf()
    try:
        reader = tf.train.load_checkpoint(prefix)
    except (tf.errors.OpError, ValueError) as exc:
        raise ModelError(
            f"cannot read checkpoint {prefix} ({(str(exc).strip() or type(exc).__name__).splitlines()[0]}); "
            "the variables files are missing or corrupted, copy them again"
        ) from None
    dtypes = reader.get_variable_to_dtype_map()
    shapes = reader.get_variable_to_shape_map()
    return {n: TensorInfo(n, dtypes[n].name, list(shapes[n])) for n in shapes}


def read_bundle_index(prefix):
    """(BundleHeaderProto, {key: BundleEntryProto}) of a checkpoint's index; ModelError if damaged."""
    from tensorflow.core.protobuf import tensor_bundle_pb2

    path = prefix + ".index"
    try:
        entries = dict(bundle.read_index(path))
        header = tensor_bundle_pb2.BundleHeaderProto.FromString(entries.pop(b""))
        parsed = {k: tensor_bundle_pb2.BundleEntryProto.FromString(v) for k, v in entries.items()}
    except OSError as exc:
        raise ModelError(
            f"cannot read checkpoint index {path} ({exc.strerror}); copy the whole variables directory again"
        ) from None
    except (bundle.UnsupportedIndex, IndexError, ValueError, KeyError, message.DecodeError) as exc:
        raise ModelError(
            f"checkpoint index {path} is corrupted ({exc or type(exc).__name__}); "
            "copy the variables files again or export the model again"
        ) from None
    return header, parsed


def check_data_sizes(prefix, header, entries):
    """The data files the index names, each checked to hold every byte its entries point to."""
    sources = data_files(prefix)
    expected = [shard_name(prefix, i, header.num_shards) for i in range(header.num_shards)]
    missing = [p for p in expected if p not in sources]
    if missing:
        raise ModelError(
            f"checkpoint data file {missing[0]} is missing (its index names {header.num_shards} "
            "data file(s)); copy all variables files"
        )
    ends = {}  # shard -> (bytes needed, the tensor ending last)
    for key, entry in entries.items():
        if entry.shard_id >= header.num_shards:
            raise ModelError(
                f"checkpoint index {prefix}.index names data file {entry.shard_id} for tensor "
                f"{key_text(key)}, it has {header.num_shards}; copy the variables files again"
            )
        end = entry.offset + entry.size
        if end > ends.get(entry.shard_id, (0,))[0]:
            ends[entry.shard_id] = (end, key)
    for shard, (needed, key) in ends.items():
        size = os.path.getsize(expected[shard])
        if size < needed:
            raise ModelError(
                f"checkpoint data file {expected[shard]} is truncated ({size} bytes; tensor "
                f"{key_text(key)} ends at byte {needed}); copy the variables files again"
            )
    return expected


def key_text(key: bytes) -> str:
    return repr(key.decode("utf-8", "replace").lstrip("\x00"))


def data_files(prefix):
    directory, base = os.path.dirname(prefix) or ".", os.path.basename(prefix)
    return sorted(os.path.join(directory, n) for n in os.listdir(directory) if n.startswith(base + ".data-"))


def shard_name(prefix, shard, total):
    return f"{prefix}.data-{shard:05d}-of-{total:05d}"


def check_files(prefix):
    """The checkpoint's index parses and its data files hold every byte it points to (ModelError
    naming the file otherwise); reads no tensor data."""
    header, entries = read_bundle_index(prefix)
    check_data_sizes(prefix, header, entries)
