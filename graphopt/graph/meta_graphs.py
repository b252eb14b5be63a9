"""Meta-graph queries and edits: collections, signatures, the SaverDef, the function library.

These work on the MetaGraphDef a ``graph.model.ModelGraph`` wraps (``model.meta_graph``).
"""

from collections.abc import Iterable

from google.protobuf import message

from graphopt.graph.nodes import clone, dtype_name, op_def, shape_list


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
        keep = [
            raw
            for (vd, _), raw in zip(defs, col.bytes_list.value, strict=False)
            if vd.variable_name.split(":")[0] not in names
        ]
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
                for field in (vd.variable_name, vd.initializer_name, vd.snapshot_name, vd.initial_value_name):
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
            key: (
                dtype_name(info.dtype) if info.dtype else None,
                shape_list(info.tensor_shape) if info.HasField("tensor_shape") else None,
            )
            for key, info in sig.inputs.items()
        }
    return out


def signature_tensor_infos(meta_graph) -> dict:
    """{signature: {"method": method name, "inputs": {key: info}, "outputs": {key: info}}}, each
    info a (tensor name, dtype enum, shape) triple: the name is empty unless the TensorInfo names
    one tensor; the shape is a tuple with None for an unknown dimension, or None for unknown rank."""
    out = {}
    for sig_name, sig in meta_graph.signature_def.items():
        entry: dict = {"method": sig.method_name}
        for part in ("inputs", "outputs"):
            infos = {}
            for key, info in getattr(sig, part).items():
                dims = info.tensor_shape
                shape = None if dims.unknown_rank else tuple(None if d.size < 0 else d.size for d in dims.dim)
                infos[key] = (info.name, info.dtype, shape)
            entry[part] = infos
        out[sig_name] = entry
    return out


def restore_op_name(meta_graph) -> str:
    """The SaverDef's restore op, or "" where the model has no saver."""
    return meta_graph.saver_def.restore_op_name


def graph_nodes_of_op(meta_graph, op_type) -> list:
    """Names of the nodes of the graph itself (not of function bodies) that run ``op_type``."""
    return [n.name for n in meta_graph.graph_def.node if n.op == op_type]


def asset_files(meta_graph) -> dict:
    """{node name: its file's name in ``assets/``} for each tensor the loader feeds an asset's path."""
    return {a.tensor_info.name.split(":")[0]: a.filename for a in meta_graph.asset_file_def}


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


def top_level_calls(meta_graph) -> list:
    """(node name, called function, data inputs) of each function call in the top-level graph."""
    calls = []
    for node in meta_graph.graph_def.node:
        if node.op in ("StatefulPartitionedCall", "PartitionedCall") and node.attr["f"].func.name:
            inputs = [i for i in node.input if not i.startswith("^")]
            calls.append((node.name, node.attr["f"].func.name, inputs))
    return calls


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


def function_names(meta_graph) -> list:
    """Names of the functions of the meta graph's library, in library order."""
    return [f.signature.name for f in meta_graph.graph_def.library.function]


def keep_functions(meta_graph, keep) -> list:
    """Removes every library function (and its gradient entry) not named in ``keep``.

    Returns the removed names. The kept FunctionDefs are copies: bodies that wrapped the old
    protos must be rebuilt (``ModelGraph.rebind_functions``).
    """
    lib = meta_graph.graph_def.library
    dead = [f.signature.name for f in lib.function if f.signature.name not in keep]
    if not dead:
        return []
    kept = [clone(f) for f in lib.function if f.signature.name in keep]
    del lib.function[:]
    lib.function.extend(kept)
    grads = [clone(g) for g in lib.gradient if g.function_name in keep]
    del lib.gradient[:]
    lib.gradient.extend(grads)
    return dead


def has_object_graph(meta_graph) -> bool:
    """Whether the meta graph carries a TF2 SavedObjectGraph."""
    return meta_graph.HasField("object_graph_def")


def drop_object_graph(meta_graph):
    """Removes the SavedObjectGraph: loaders then take the TF1 path (Saver restore, init op)."""
    meta_graph.ClearField("object_graph_def")


def function_library(meta_graph):
    """The FunctionDefLibrary of the meta graph's graph."""
    return meta_graph.graph_def.library


def function_closure(library, names) -> list:
    """The named functions of ``library`` plus every function they call, by name."""
    by_name = {f.signature.name: f for f in library.function}
    out, stack = [], list(names)
    while stack:
        name = stack.pop()
        if name in out or name not in by_name:
            continue
        out.append(name)
        stack += called_functions(by_name[name])
    return out


def asset_filenames(meta_graph) -> list:
    """File names (relative to a SavedModel's assets/ folder) of the meta graph's assets."""
    return [a.filename for a in meta_graph.asset_file_def]
