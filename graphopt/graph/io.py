"""All protobuf plumbing of graphopt: reading and writing SavedModels, meta graphs and checkpoints.

Everything else works on the graph model (``graphopt.graph.model``) and on plain Python values;
only this module parses or serializes protos, reads checkpoint bundles or writes event files.
"""

import contextlib
import dataclasses
import functools
import os
import shutil
from typing import Callable, Dict, Iterable, Optional

import numpy as np
from google.protobuf import message, text_format

from graphopt.errors import ModelError

SAVED_MODEL_PB = "saved_model.pb"
SAVED_MODEL_PBTXT = "saved_model.pbtxt"
VARIABLES_DIR = "variables"
VARIABLES_PREFIX = "variables"
OBJECT_GRAPH_KEY = "_CHECKPOINTABLE_OBJECT_GRAPH"
# Tensors up to this size are copied together in one shard; bigger ones get a shard each so
# that conversion never holds more than one big tensor in memory.
SHARD_BYTES = 64 << 20


def _tf():
    # TensorFlow is imported lazily: `graphopt --help` must stay fast.
    import tensorflow as tf

    return tf


def _protos():
    from tensorflow.core.framework import graph_pb2
    from tensorflow.core.protobuf import meta_graph_pb2, saved_model_pb2

    return graph_pb2, meta_graph_pb2, saved_model_pb2


@dataclasses.dataclass
class ModelSource:
    """A model read from disk: its meta graph and where its variables live."""

    path: str
    kind: str  # "saved_model" or "meta_graph"
    meta_graph: object  # MetaGraphDef
    checkpoint_prefix: Optional[str]
    saved_model: object = None  # the whole SavedModel proto (kind == "saved_model")
    meta_graph_index: int = 0
    text: bool = False  # meta graph was a .pbtxt

    @property
    def tags(self):
        return list(self.meta_graph.meta_info_def.tags)


def _parse(proto, data, path, text):
    try:
        if text:
            text_format.Parse(data.decode("utf-8"), proto)
        else:
            proto.ParseFromString(data)
    except (message.DecodeError, text_format.ParseError, UnicodeDecodeError, RuntimeWarning) as exc:
        raise ModelError(
            f"{path} is truncated or corrupted ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__}); "
            "export the model again"
        ) from None
    return proto


def _read_bytes(path):
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as exc:
        raise ModelError(f"cannot read {path} ({exc.strerror}); "
                         "pass a readable SavedModel directory or .meta/.pbtxt file") from None


def _first_line(exc) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def read_model(path, tags=None, check_integrity=True) -> ModelSource:
    """Reads a SavedModel directory, or a TF1 meta graph (.meta / .pbtxt) with its checkpoint.

    Refuses (ModelError) a damaged model: a graph file that does not parse, a checkpoint index
    that fails its block CRCs, data files shorter than the index says; with ``check_integrity``
    also saved_model.pb no longer matching the checksum its fingerprint.pb recorded at export,
    and a graph whose nodes read nodes that do not exist (a flipped bit in a name)."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise ModelError(f"{path} does not exist; pass a SavedModel directory or a .meta/.pbtxt file")
    if os.path.isdir(path):
        for name, text in ((SAVED_MODEL_PB, False), (SAVED_MODEL_PBTXT, True)):
            if os.path.isfile(os.path.join(path, name)):
                return _read_saved_model(path, os.path.join(path, name), text, tags, check_integrity)
            if os.path.lexists(os.path.join(path, name)):
                raise ModelError(f"{os.path.join(path, name)} is not a file; export the model again")
        metas = sorted(f for f in os.listdir(path) if f.endswith(".meta"))
        if len(metas) == 1:
            return read_model(os.path.join(path, metas[0]), tags)
        raise ModelError(
            f"{path} holds no saved_model.pb and no single .meta file; "
            "pass a SavedModel directory or a TF1 .meta/.pbtxt file"
        )
    if path.endswith((".meta", ".pbtxt", ".pbtext")):
        return _read_meta_graph_file(path, check_integrity)
    raise ModelError(f"{path} is not a model; pass a SavedModel directory or a TF1 .meta/.pbtxt file")


def _read_saved_model(root, pb_path, text, tags, check_integrity):
    _, _, saved_model_pb2 = _protos()
    sm = _parse(saved_model_pb2.SavedModel(), _read_bytes(pb_path), pb_path, text)
    if not sm.meta_graphs:
        raise ModelError(f"{pb_path} holds no meta graph; export the model again")
    if check_integrity and not text:
        _check_fingerprint(root, pb_path)  # TensorFlow's fingerprinting needs a meta graph (else it crashes)
    available = [sorted(mg.meta_info_def.tags) for mg in sm.meta_graphs]
    if tags is None:
        index = next((i for i, t in enumerate(available) if t == ["serve"]), 0)
    else:
        want = sorted(tags)
        if want not in available:
            raise ModelError(
                f"{root} has no meta graph tagged {','.join(want)}; available tag sets: "
                + "; ".join(",".join(t) for t in available)
            )
        index = available.index(want)
    prefix = os.path.join(root, VARIABLES_DIR, VARIABLES_PREFIX)
    mg = sm.meta_graphs[index]
    if mg.saver_def.restore_op_name and not os.path.exists(prefix + ".index"):
        raise ModelError(f"{prefix}.index is missing; copy the whole SavedModel directory")
    prefix = prefix if os.path.exists(prefix + ".index") else None
    if check_integrity:
        _check_graph(mg, pb_path)
    _check_checkpoint_files(prefix)
    return ModelSource(root, "saved_model", mg, prefix, saved_model=sm, meta_graph_index=index, text=text)


def _check_fingerprint(root, pb_path):
    """saved_model.pb carries no checksum of its own; a TF2 export's fingerprint.pb records one
    (saved_model_checksum). A bit flipped inside a string or a number still parses, so compare."""
    path = os.path.join(root, "fingerprint.pb")
    if not os.path.isfile(path):
        return
    from tensorflow.core.protobuf import fingerprint_pb2
    from tensorflow.python.saved_model.pywrap_saved_model import fingerprinting

    try:
        recorded = fingerprint_pb2.FingerprintDef.FromString(_read_bytes(path)).saved_model_checksum
        actual = fingerprint_pb2.FingerprintDef.FromString(
            fingerprinting.CreateFingerprintDef(root)).saved_model_checksum
    except (message.DecodeError, fingerprinting.FingerprintException, RuntimeError, ValueError):
        return  # a damaged fingerprint.pb says nothing about saved_model.pb, which parsed
    if recorded and recorded != actual:
        raise ModelError(f"{pb_path} does not match the checksum in {path}: it was changed or corrupted after "
                         "export; export the model again (or delete fingerprint.pb if you changed it on purpose)")


def _check_checkpoint_files(prefix):
    """A cheap look at a model's checkpoint when it is read (the index, the data file sizes; no
    tensor data), so a damaged one is refused before any work; CRCs are checked when copied."""
    if prefix is not None:
        header, entries = read_bundle_index(prefix)
        _check_data_sizes(prefix, header, entries)


def _check_graph(meta_graph, path):
    from graphopt.graph.model import ModelGraph

    problems = ModelGraph(meta_graph).check()
    if problems:
        raise ModelError(f"{path} is corrupted ({problems[0]}); export the model again")


def _read_meta_graph_file(path, check_integrity=True):
    _, meta_graph_pb2, _ = _protos()
    text = not path.endswith(".meta")
    mg = _parse(meta_graph_pb2.MetaGraphDef(), _read_bytes(path), path, text)
    if not mg.graph_def.node:
        raise ModelError(f"{path} holds an empty graph; pass the .meta file the Saver wrote")
    prefix = os.path.splitext(path)[0]
    if not os.path.exists(prefix + ".index"):
        tf = _tf()
        latest = tf.train.latest_checkpoint(os.path.dirname(path) or ".")
        if latest is None or not os.path.exists(latest + ".index"):
            raise ModelError(
                f"no checkpoint beside {path} (looked for {prefix}.index); keep the .meta next to its checkpoint"
            )
        prefix = latest
    if check_integrity:
        _check_graph(mg, path)
    _check_checkpoint_files(prefix)
    return ModelSource(path, "meta_graph", mg, prefix, text=text)


# ---------------------------------------------------------------------------------------------
# Tensors in graphs


def const_value(node) -> np.ndarray:
    """The value of a Const NodeDef."""
    return _tf().make_ndarray(node.attr["value"].tensor)


def set_const_value(node, value):
    """Stores ``value`` (numpy) in a Const NodeDef and its dtype attr."""
    tf = _tf()
    proto = tf.make_tensor_proto(value)
    node.attr["value"].tensor.CopyFrom(proto)
    node.attr["dtype"].type = proto.dtype


def attr_value(node, name):
    """A NodeDef attr as a Python value (int, float, bytes, bool, type enum, list, shape, func name)."""
    if name not in node.attr:
        return None
    a = node.attr[name]
    kind = a.WhichOneof("value")
    if kind == "list":
        lst = a.list
        for field in ("i", "f", "s", "b", "type", "func", "shape"):
            values = getattr(lst, field)
            if len(values):
                if field == "func":
                    return [v.name for v in values]
                if field == "shape":
                    return [_shape(v) for v in values]
                return list(values)
        return []
    if kind == "func":
        return a.func.name
    if kind == "shape":
        return _shape(a.shape)
    if kind == "tensor":
        return _tf().make_ndarray(a.tensor)
    return getattr(a, kind) if kind else None


def _shape(shape_proto):
    if shape_proto.unknown_rank:
        return None
    return [d.size for d in shape_proto.dim]


def set_attr(node, name, value, kind=None):
    """Sets a NodeDef attr from a Python value; ``kind`` is one of i f s b type shape func list(...)."""
    a = node.attr[name]
    a.Clear()
    if kind == "type":
        a.type = value
    elif kind == "list(type)":
        a.list.type.extend(value)
    elif kind == "list(float)":
        a.list.f.extend(value)
        if not value:
            a.list.SetInParent()
    elif kind == "list(int)":
        a.list.i.extend(value)
    elif kind == "shape":
        if value is None:
            a.shape.unknown_rank = True
        else:
            a.shape.SetInParent()
            for d in value:
                a.shape.dim.add(size=-1 if d is None else d)
    elif kind == "func":
        a.func.name = value
    elif kind == "s" or isinstance(value, (bytes, str)):
        a.s = value.encode() if isinstance(value, str) else value
    elif kind == "b" or isinstance(value, bool):
        a.b = value
    elif kind == "i" or isinstance(value, int):
        a.i = value
    elif kind == "f" or isinstance(value, float):
        a.f = value
    else:
        raise TypeError(f"cannot store {value!r} as attr {name}")


def new_node(op, name, inputs=(), device=""):
    """A fresh NodeDef."""
    from tensorflow.core.framework import node_def_pb2

    return node_def_pb2.NodeDef(op=op, name=name, input=list(inputs), device=device)


def dtype_enum(name):
    """The DataType enum of a dtype name such as 'float32' or 'int64'."""
    return _tf().as_dtype(name).as_datatype_enum


def dtype_name(enum):
    return _tf().as_dtype(enum).name


def op_def(op_type):
    """The registered OpDef of an op type, or None when no loaded library registers it."""
    from tensorflow.python.framework import op_def_registry

    return op_def_registry.get(op_type)


def variable_defs(meta_graph, collection):
    """(VariableDef, index) pairs of a variables collection of a meta graph."""
    from tensorflow.core.framework import variable_pb2

    if collection not in meta_graph.collection_def:
        return []
    out = []
    for i, raw in enumerate(meta_graph.collection_def[collection].bytes_list.value):
        vd = variable_pb2.VariableDef()
        try:
            vd.ParseFromString(raw)
        except message.DecodeError:
            return []  # not a variables collection
        out.append((vd, i))
    return out


def drop_variables(meta_graph, variable_names: Iterable[str]):
    """Removes the VariableDefs of the named variables ('v:0' or 'v') from every collection."""
    names = {n.split(":")[0] for n in variable_names}
    for key in list(meta_graph.collection_def):
        col = meta_graph.collection_def[key]
        if not col.HasField("bytes_list"):
            continue
        defs = variable_defs(meta_graph, key)
        if not defs:
            continue
        keep = [raw for (vd, _), raw in zip(defs, col.bytes_list.value)
                if vd.variable_name.split(":")[0] not in names]
        if len(keep) != len(col.bytes_list.value):
            del col.bytes_list.value[:]
            col.bytes_list.value.extend(keep)


def collection_node_names(meta_graph):
    """Node names a meta graph's collections refer to (node lists and VariableDefs)."""
    out = set()
    for key, col in meta_graph.collection_def.items():
        if col.HasField("node_list"):
            out.update(v.split(":")[0].lstrip("^") for v in col.node_list.value)
        elif col.HasField("bytes_list"):
            for vd, _ in variable_defs(meta_graph, key):
                for field in (vd.variable_name, vd.initializer_name, vd.snapshot_name,
                              vd.initial_value_name):
                    if field:
                        out.add(field.split(":")[0])
    return out


def signature_tensors(meta_graph):
    """{signature: {"inputs": {key: tensor name}, "outputs": {...}}} for every signature."""
    out = {}
    for sig_name, sig in meta_graph.signature_def.items():
        entry = {"inputs": {}, "outputs": {}, "method": sig.method_name}
        for part in ("inputs", "outputs"):
            for key, info in getattr(sig, part).items():
                kind = info.WhichOneof("encoding")
                if kind == "name":
                    entry[part][key] = info.name
                elif kind == "coo_sparse":
                    c = info.coo_sparse
                    entry[part][key] = c.values_tensor_name
                    entry[part][key + "/indices"] = c.indices_tensor_name
                    entry[part][key + "/dense_shape"] = c.dense_shape_tensor_name
                elif kind == "composite_tensor":
                    for j, comp in enumerate(info.composite_tensor.components):
                        entry[part][f"{key}/{j}"] = comp.name
        out[sig_name] = entry
    return out


def signature_input_specs(meta_graph):
    """{signature: {input key: (dtype name, shape list or None)}}."""
    out = {}
    for sig_name, sig in meta_graph.signature_def.items():
        out[sig_name] = {
            key: (dtype_name(info.dtype) if info.dtype else None,
                  _shape(info.tensor_shape) if info.HasField("tensor_shape") else None)
            for key, info in sig.inputs.items()
        }
    return out


def saver_node_names(meta_graph):
    """Node names the SaverDef refers to."""
    sd = meta_graph.saver_def
    return {n.split(":")[0] for n in (sd.filename_tensor_name, sd.save_tensor_name, sd.restore_op_name) if n}


def add_op_defs(meta_graph, op_types):
    """Adds the registered OpDefs of ``op_types`` to the meta graph's stripped op list."""
    have = {op.name for op in meta_graph.meta_info_def.stripped_op_list.op}
    for op_type in sorted(set(op_types) - have):
        od = op_def(op_type)
        if od is not None:
            meta_graph.meta_info_def.stripped_op_list.op.add().CopyFrom(od)


def clone(proto):
    out = type(proto)()
    out.CopyFrom(proto)
    return out


# ---------------------------------------------------------------------------------------------
# Writing models


def write_saved_model(source: ModelSource, meta_graph, out_dir, keep_object_graph=False):
    """Writes ``meta_graph`` as a SavedModel into ``out_dir`` with the source's assets.

    Unless ``keep_object_graph`` (the object graph was rewritten too), the object graph is dropped
    and the output is a TF1-format SavedModel."""
    _, _, saved_model_pb2 = _protos()
    sm = saved_model_pb2.SavedModel(saved_model_schema_version=1)
    if source.saved_model is not None:
        sm.saved_model_schema_version = source.saved_model.saved_model_schema_version or 1
    mg = sm.meta_graphs.add()
    mg.CopyFrom(meta_graph)
    # Without the object graph, tf.saved_model.load goes through its TF1 path (Saver restore,
    # then the init op), which is the path that knows nothing about Python objects we replaced.
    if not keep_object_graph:
        mg.ClearField("object_graph_def")
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, SAVED_MODEL_PB), "wb") as f:
        f.write(sm.SerializeToString())
    if source.kind == "saved_model":
        for sub in ("assets", "assets.extra"):
            src = os.path.join(source.path, sub)
            if os.path.isdir(src):
                shutil.copytree(src, os.path.join(out_dir, sub))


def write_meta_graph(meta_graph, path, as_text=False):
    """Writes a MetaGraphDef as binary (.meta) or text (.pbtxt)."""
    with open(path, "wb") as f:
        if as_text:
            f.write(text_format.MessageToString(meta_graph).encode())
        else:
            f.write(meta_graph.SerializeToString())


def write_checkpoint_state(directory, prefix_basename):
    """Writes the `checkpoint` file that tf.train.latest_checkpoint reads."""
    with open(os.path.join(directory, "checkpoint"), "w") as f:
        f.write(f'model_checkpoint_path: "{prefix_basename}"\n'
                f'all_model_checkpoint_paths: "{prefix_basename}"\n')


def write_graph_events(logdir, graph_def, run_name):
    """Writes ``graph_def`` as an event file under LOGDIR/run_name for TensorBoard's graph view."""
    tf = _tf()
    path = os.path.join(logdir, run_name)
    os.makedirs(path, exist_ok=True)
    writer = tf.summary.create_file_writer(path)
    with writer.as_default():
        tf.summary.graph(graph_def)
    writer.close()
    return path


# ---------------------------------------------------------------------------------------------
# Checkpoints


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
            f"cannot read checkpoint {prefix} ({_first_line(exc)}); "
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


# --- The tensor bundle index: a LevelDB-format table of key -> BundleEntryProto -----------------
# Rewriting the index lets a converted table keep its bytes where they are: KEY-values is the
# old KEY entry under a new name, so the data files are copied as files and only the ids and
# counters are written. The format is TensorFlow's core/lib/io/{format,block_builder,table}.cc.

_TABLE_MAGIC = 0xDB4775248B80FB57
_FOOTER_LEN = 48
_CRC_TABLE = []
# TensorFlow's own CRC32C: abseil's hardware-accelerated ExtendCrc32cInternal(crc32c_t, string_view),
# exported by libtensorflow_framework (TF 2.21 pins this abseil release). Pure Python does ~10 MB/s,
# which would make checking a checkpoint slower than converting it; this does GB/s.
_ABSL_EXTEND_CRC32C = ("_ZN4absl12lts_2025081412crc_internal20ExtendCrc32cInternalENS0_8crc32c_tE"
                       "St17basic_string_viewIcSt11char_traitsIcEE")
# Bytes read and written per step while copying a data file (and checking its tensors' CRCs).
COPY_CHUNK = 8 << 20


@functools.lru_cache(maxsize=None)
def _native_crc32c():
    """abseil's CRC32C extend function from TensorFlow's framework library, or None."""
    import ctypes

    try:
        lib = ctypes.CDLL(os.path.join(os.path.dirname(_tf().__file__), "libtensorflow_framework.so.2"))
        fn = getattr(lib, _ABSL_EXTEND_CRC32C)
    except (OSError, AttributeError):
        return None
    # string_view is passed by value as (size, pointer) in two registers (x86-64 and aarch64 ABIs).
    fn.restype, fn.argtypes = ctypes.c_uint32, [ctypes.c_uint32, ctypes.c_size_t, ctypes.c_void_p]
    return fn


def crc32c_extend(crc: int, data) -> int:
    """CRC32C of the bytes hashed so far (``crc``, 0 at first) extended by ``data``
    (bytes, bytearray or a memoryview of one)."""
    view = memoryview(data).cast("B")
    if not view.nbytes:
        return crc
    fn = _native_crc32c()
    if fn is None:
        return _py_crc32c_extend(crc, view)
    if view.readonly:
        return fn(crc, view.nbytes, bytes(view))
    import ctypes

    return fn(crc, view.nbytes, ctypes.addressof(ctypes.c_char.from_buffer(view)))


def _py_crc32c_extend(crc, data) -> int:
    if not _CRC_TABLE:
        for i in range(256):
            c = i
            for _ in range(8):
                c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
            _CRC_TABLE.append(c)
    crc ^= 0xFFFFFFFF
    for b in bytes(data):
        crc = _CRC_TABLE[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def _crc32c(data) -> int:
    return crc32c_extend(0, data)


def _mask(crc: int) -> int:
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _masked_crc(data) -> int:
    return _mask(_crc32c(data))


def _varint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _read_varint(buf: bytes, pos: int):
    shift = result = 0
    while True:
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7


def _block_entries(block: bytes):
    num_restarts = int.from_bytes(block[-4:], "little")
    end = len(block) - 4 - 4 * num_restarts
    pos, key, out = 0, b"", []
    while pos < end:
        shared, pos = _read_varint(block, pos)
        non_shared, pos = _read_varint(block, pos)
        vlen, pos = _read_varint(block, pos)
        key = key[:shared] + block[pos:pos + non_shared]
        pos += non_shared
        out.append((key, block[pos:pos + vlen]))
        pos += vlen
    return out


class _UnsupportedIndex(Exception):
    """The index uses a feature (compression) this reader does not handle, or is damaged."""


def _read_block(data: bytes, handle: bytes):
    offset, pos = _read_varint(handle, 0)
    size, _ = _read_varint(handle, pos)
    if offset + size + 5 > len(data):
        raise _UnsupportedIndex("a block lies past the end of the file: truncated")
    block = data[offset:offset + size + 1]
    if _masked_crc(block) != int.from_bytes(data[offset + size + 1:offset + size + 5], "little"):
        raise _UnsupportedIndex("a block fails its CRC32C check")
    if block[-1] != 0:
        raise _UnsupportedIndex("compressed block")
    return block[:-1]


def _read_index(path):
    """[(key, value bytes)] of a bundle index file, in key order."""
    data = _read_bytes(path)
    footer = data[-_FOOTER_LEN:]
    if len(data) < _FOOTER_LEN or int.from_bytes(footer[-8:], "little") != _TABLE_MAGIC:
        raise _UnsupportedIndex("no table footer: truncated or not an index")
    _, pos = _read_varint(footer, 0)
    _, pos = _read_varint(footer, pos)
    index = _read_block(data, footer[pos:])
    return [e for _, handle in _block_entries(index) for e in _block_entries(_read_block(data, handle))]


def read_bundle_index(prefix):
    """(BundleHeaderProto, {key: BundleEntryProto}) of a checkpoint's index; ModelError if damaged."""
    from tensorflow.core.protobuf import tensor_bundle_pb2

    path = prefix + ".index"
    try:
        entries = dict(_read_index(path))
        header = tensor_bundle_pb2.BundleHeaderProto.FromString(entries.pop(b""))
        parsed = {k: tensor_bundle_pb2.BundleEntryProto.FromString(v) for k, v in entries.items()}
    except OSError as exc:
        raise ModelError(f"cannot read checkpoint index {path} ({exc.strerror}); "
                         "copy the whole variables directory again") from None
    except (_UnsupportedIndex, IndexError, ValueError, KeyError, message.DecodeError) as exc:
        raise ModelError(f"checkpoint index {path} is corrupted ({exc or type(exc).__name__}); "
                         "copy the variables files again or export the model again") from None
    return header, parsed


def _check_data_sizes(prefix, header, entries):
    """The data files the index names, each checked to hold every byte its entries point to."""
    sources = _data_files(prefix)
    expected = [_shard_name(prefix, i, header.num_shards) for i in range(header.num_shards)]
    missing = [p for p in expected if p not in sources]
    if missing:
        raise ModelError(f"checkpoint data file {missing[0]} is missing (its index names {header.num_shards} "
                         "data file(s)); copy all variables files")
    ends = {}  # shard -> (bytes needed, the tensor ending last)
    for key, entry in entries.items():
        if entry.shard_id >= header.num_shards:
            raise ModelError(f"checkpoint index {prefix}.index names data file {entry.shard_id} for tensor "
                             f"{_key_text(key)}, it has {header.num_shards}; copy the variables files again")
        end = entry.offset + entry.size
        if end > ends.get(entry.shard_id, (0,))[0]:
            ends[entry.shard_id] = (end, key)
    for shard, (needed, key) in ends.items():
        size = os.path.getsize(expected[shard])
        if size < needed:
            raise ModelError(f"checkpoint data file {expected[shard]} is truncated ({size} bytes; tensor "
                             f"{_key_text(key)} ends at byte {needed}); copy the variables files again")
    return expected


def _key_text(key: bytes) -> str:
    return repr(key.decode("utf-8", "replace").lstrip("\x00"))


def _block(entries) -> bytes:
    body, restarts = bytearray(), []
    for key, value in entries:
        restarts.append(len(body))
        body += _varint(0) + _varint(len(key)) + _varint(len(value)) + key + value
    if not restarts:
        restarts = [0]
    for r in restarts:
        body += r.to_bytes(4, "little")
    body += len(restarts).to_bytes(4, "little")
    return bytes(body)


def _write_index(path, entries):
    """Writes sorted (key, value bytes) as a bundle index file (one data block, no compression)."""
    out = bytearray()

    def put(block):
        handle = _varint(len(out)) + _varint(len(block))
        out.extend(block + b"\x00" + _masked_crc(block + b"\x00").to_bytes(4, "little"))
        return handle

    data_handle = put(_block(entries))
    meta_handle = put(_block([]))
    index_handle = put(_block([(entries[-1][0], data_handle)] if entries else []))
    footer = (meta_handle + index_handle).ljust(_FOOTER_LEN - 8, b"\x00") + _TABLE_MAGIC.to_bytes(8, "little")
    out.extend(footer)
    with open(path, "wb") as f:
        f.write(out)


def _data_files(prefix):
    directory, base = os.path.dirname(prefix) or ".", os.path.basename(prefix)
    return sorted(os.path.join(directory, n) for n in os.listdir(directory) if n.startswith(base + ".data-"))


def _shard_name(prefix, shard, total):
    return f"{prefix}.data-{shard:05d}-of-{total:05d}"


def _copy_checked(src, dst, entries):
    """Copies data file ``src`` to ``dst`` (None: only reads it) and checks the CRC32C of each
    tensor in it on the chunks being copied (no second read). ``entries``: [(key, BundleEntryProto)]
    of this file."""
    from tensorflow.core.framework import types_pb2

    regions = sorted(((e.offset, e.offset + e.size, k, e) for k, e in entries), key=lambda r: r[:2])
    i, crc, strings = 0, 0, bytearray()  # region being hashed, its CRC so far, a string tensor's bytes
    chunk = bytearray(COPY_CHUNK)
    with open(src, "rb") as fin, (open(dst, "wb") if dst else contextlib.nullcontext()) as fout:
        pos = 0
        while True:
            n = fin.readinto(chunk)
            while i < len(regions) and regions[i][0] <= pos + n:
                start, end, key, entry = regions[i]
                part = memoryview(chunk)[max(start - pos, 0):max(min(end - pos, n), 0)]
                if entry.dtype == types_pb2.DT_STRING:
                    strings += part  # hashed as TensorFlow wrote it, once whole (string tensors are small)
                else:
                    crc = crc32c_extend(crc, part)
                if end > pos + n:
                    break
                if entry.dtype == types_pb2.DT_STRING:
                    crc = _string_tensor_crc(strings, entry)
                if entry.dtype != types_pb2.DT_VARIANT and (crc is None or _mask(crc) != entry.crc32c):
                    raise ModelError(f"checkpoint data file {src} is corrupted: tensor {_key_text(key)} fails "
                                     "its CRC32C check; copy the variables files again or export the model again")
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
            n, pos = _read_varint(data, pos)
            lengths.append(n)
            crc = crc32c_extend(crc, n.to_bytes(4 if n <= 0xFFFFFFFF else 8, "little"))
    except IndexError:
        return None  # the lengths run past the tensor: corrupted
    crc = crc32c_extend(crc, data[pos:pos + 4])
    return crc32c_extend(crc, memoryview(data)[pos + 4:])


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
    for name, value in (added or {}).items():
        names.append(name)
        tensors.append(tf.constant(value))
    for table in tables:
        entry = parsed.pop(table.key.encode())
        if len(entry.shape.dim) != 2:
            raise ModelError(f"checkpoint {src_prefix} holds table tensor {table.key} with shape "
                             f"{[d.size for d in entry.shape.dim]}, not [rows, dim]; the variables do not "
                             "match the graph, export the model again")
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
    for key, value in _read_index(extra + ".index"):
        if key:
            e = tensor_bundle_pb2.BundleEntryProto.FromString(value)
            e.shard_id = total - 1
            parsed[key] = e
            if key.endswith(b"-freqs"):  # versions start at zero too: the same bytes serve both
                parsed[key[:-len(b"freqs")] + b"versions"] = e
    os.replace(_shard_name(extra, 0, 1), _shard_name(dst_prefix, total - 1, total))
    os.remove(extra + ".index")
    header.num_shards = total
    _write_index(dst_prefix + ".index", [(b"", header.SerializeToString())]
                 + sorted((k, v.SerializeToString()) for k, v in parsed.items()))
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
    sources = _check_data_sizes(src_prefix, header, entries)
    by_shard = {}
    for key, entry in entries.items():
        if not entry.slices:  # a sliced tensor's entry only lists its slices, which have their own
            by_shard.setdefault(entry.shard_id, []).append((key, entry))
    if dst_prefix is not None:
        os.makedirs(os.path.dirname(dst_prefix) or ".", exist_ok=True)
    for shard, path in enumerate(sources):
        _copy_checked(path, dst_prefix and _shard_name(dst_prefix, shard, total), by_shard.get(shard, []))


# ---------------------------------------------------------------------------------------------
# Object graphs (SavedObjectGraph in the SavedModel, TrackableObjectGraph in its checkpoint)


def read_object_graph(prefix):
    """The checkpoint's TrackableObjectGraph, or None for a name-based (TF1) checkpoint."""
    from tensorflow.core.protobuf import trackable_object_graph_pb2

    tf = _tf()
    try:
        reader = tf.train.load_checkpoint(prefix)
        if not reader.has_tensor(OBJECT_GRAPH_KEY):
            return None
        graph = trackable_object_graph_pb2.TrackableObjectGraph()
        graph.ParseFromString(reader.get_tensor(OBJECT_GRAPH_KEY))
    except (tf.errors.OpError, ValueError, IndexError, message.DecodeError) as exc:
        raise ModelError(f"cannot read the object graph of checkpoint {prefix} ({_first_line(exc)}); "
                         "the variables files are corrupted, copy them again") from None
    return graph


def object_functions(saved_object) -> list:
    """Names of the concrete functions one SavedObject (a function or bare function) stands for."""
    kind = saved_object.WhichOneof("kind")
    if kind == "function":
        return list(saved_object.function.concrete_functions)
    if kind == "bare_concrete_function":
        return [saved_object.bare_concrete_function.concrete_function_name]
    return []


def object_graph_functions(meta_graph) -> set:
    """Names of the concrete functions a SavedModel's object graph refers to."""
    if not meta_graph.HasField("object_graph_def"):
        return set()
    og = meta_graph.object_graph_def
    return set(og.concrete_functions).union(*(object_functions(n) for n in og.nodes))


def top_level_calls(meta_graph) -> list:
    """(node name, called function, data inputs) of each function call in the top-level graph."""
    calls = []
    for node in meta_graph.graph_def.node:
        if node.op in ("StatefulPartitionedCall", "PartitionedCall") and node.attr["f"].func.name:
            inputs = [i for i in node.input if not i.startswith("^")]
            calls.append((node.name, node.attr["f"].func.name, inputs))
    return calls


def serialize(proto) -> bytes:
    return proto.SerializeToString()


def called_functions(function_def) -> list:
    """Names of the functions a FunctionDef's nodes call (func and list(func) attrs)."""
    names = []
    for node in function_def.node_def:
        for value in node.attr.values():
            if value.HasField("func"):
                names.append(value.func.name)
            names += [f.name for f in value.list.func]
    return names


def _rename_func_attrs(attr_map, renamed):
    for value in attr_map.values():
        if value.HasField("func") and value.func.name in renamed:
            value.func.name = renamed[value.func.name]
        for f in value.list.func:
            if f.name in renamed:
                f.name = renamed[f.name]


def append_renamed_functions(library, source_library, renamed):
    """Copies the functions named in ``renamed`` from ``source_library``, under their new names."""
    for function_def in source_library.function:
        if function_def.signature.name not in renamed:
            continue
        copy = library.function.add()
        copy.CopyFrom(function_def)
        copy.signature.name = renamed[function_def.signature.name]
        for node in copy.node_def:
            _rename_func_attrs(node.attr, renamed)


def _remap_refs(refs, new_id):
    for ref in refs:
        if ref.node_id not in new_id:
            raise ModelError(f"template object refers to object {ref.node_id} outside its subtree")
        ref.node_id = new_id[ref.node_id]


def graft_object(dst, src, new_id, renamed):
    """Makes SavedObject ``dst`` a copy of ``src`` with object ids and function names mapped."""
    dst.CopyFrom(src)
    _remap_refs(dst.children, new_id)
    _remap_refs(dst.dependencies, new_id)
    for saveable in dst.saveable_objects.values():
        saveable.save_function = new_id[saveable.save_function]
        saveable.restore_function = new_id[saveable.restore_function]
    kind = dst.WhichOneof("kind")
    if kind == "function":
        names = [renamed[n] for n in dst.function.concrete_functions]
        del dst.function.concrete_functions[:]
        dst.function.concrete_functions.extend(names)
    elif kind == "bare_concrete_function":
        name = dst.bare_concrete_function.concrete_function_name
        dst.bare_concrete_function.concrete_function_name = renamed[name]


def graft_checkpoint_object(dst, src, new_id):
    """Makes TrackableObject ``dst`` a copy of ``src`` with child ids mapped."""
    dst.CopyFrom(src)
    _remap_refs(dst.children, new_id)


def set_checkpoint_attribute(node, name, checkpoint_key):
    """Makes ``checkpoint_key`` the only saved attribute of a TrackableObject."""
    del node.attributes[:]
    attr = node.attributes.add()
    attr.name = name
    attr.checkpoint_key = checkpoint_key
    node.has_checkpoint_values.value = True


def copy_concrete_function(object_graph, source_object_graph, name, new_name, new_id):
    """Copies a SavedConcreteFunction under ``new_name`` with its captured object ids mapped."""
    if new_name in object_graph.concrete_functions:
        return
    fn = object_graph.concrete_functions[new_name]
    fn.CopyFrom(source_object_graph.concrete_functions[name])
    captured = [new_id[i] for i in fn.bound_inputs]
    del fn.bound_inputs[:]
    fn.bound_inputs.extend(captured)
