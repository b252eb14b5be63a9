"""Protobuf plumbing of graphopt: reading and writing SavedModels, meta graphs and event files.

Everything else works on the graph model (``graphopt.graph.model``) and on plain Python values;
checkpoint bundles are read and written by ``graphopt.checkpoint``.
"""

import dataclasses
import os
import shutil
from typing import Iterable, Optional

import numpy as np
from google.protobuf import message, text_format

from graphopt.checkpoint.convert import OBJECT_GRAPH_KEY
from graphopt.errors import ModelError

SAVED_MODEL_PB = "saved_model.pb"
SAVED_MODEL_PBTXT = "saved_model.pbtxt"
VARIABLES_DIR = "variables"
VARIABLES_PREFIX = "variables"


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
    with open(path, "rb") as f:
        return f.read()


def read_model(path, tags=None) -> ModelSource:
    """Reads a SavedModel directory, or a TF1 meta graph (.meta / .pbtxt) with its checkpoint."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise ModelError(f"{path} does not exist; pass a SavedModel directory or a .meta/.pbtxt file")
    if os.path.isdir(path):
        for name, text in ((SAVED_MODEL_PB, False), (SAVED_MODEL_PBTXT, True)):
            if os.path.isfile(os.path.join(path, name)):
                return _read_saved_model(path, os.path.join(path, name), text, tags)
        metas = sorted(f for f in os.listdir(path) if f.endswith(".meta"))
        if len(metas) == 1:
            return read_model(os.path.join(path, metas[0]), tags)
        raise ModelError(
            f"{path} holds no saved_model.pb and no single .meta file; "
            "pass a SavedModel directory or a TF1 .meta/.pbtxt file"
        )
    if path.endswith((".meta", ".pbtxt", ".pbtext")):
        return _read_meta_graph_file(path)
    raise ModelError(f"{path} is not a model; pass a SavedModel directory or a TF1 .meta/.pbtxt file")


def _read_saved_model(root, pb_path, text, tags):
    _, _, saved_model_pb2 = _protos()
    sm = _parse(saved_model_pb2.SavedModel(), _read_bytes(pb_path), pb_path, text)
    if not sm.meta_graphs:
        raise ModelError(f"{pb_path} holds no meta graph; export the model again")
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
        raise ModelError(
            f"{root} is missing {VARIABLES_DIR}/{VARIABLES_PREFIX}.index; copy the whole SavedModel directory"
        )
    return ModelSource(root, "saved_model", mg, prefix if os.path.exists(prefix + ".index") else None,
                       saved_model=sm, meta_graph_index=index, text=text)


def _read_meta_graph_file(path):
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
# Object graphs (SavedObjectGraph in the SavedModel, TrackableObjectGraph in its checkpoint)


def read_object_graph(prefix):
    """The checkpoint's TrackableObjectGraph, or None for a name-based (TF1) checkpoint."""
    from tensorflow.core.protobuf import trackable_object_graph_pb2

    reader = _tf().train.load_checkpoint(prefix)
    if not reader.has_tensor(OBJECT_GRAPH_KEY):
        return None
    graph = trackable_object_graph_pb2.TrackableObjectGraph()
    graph.ParseFromString(reader.get_tensor(OBJECT_GRAPH_KEY))
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
