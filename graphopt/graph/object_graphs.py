"""Object graphs: a SavedModel's SavedObjectGraph and its checkpoint's TrackableObjectGraph.

Reading them, and the proto-level edits the rewrite makes: copying (grafting) a subtree of
objects from one graph into another with ids and function names mapped.
"""

import glob

from graphopt.errors import ModelError


def _tf():
    import tensorflow as tf

    return tf


def read_object_graph(prefix):
    """The checkpoint's TrackableObjectGraph, or None for a name-based (TF1) checkpoint."""
    from google.protobuf import message
    from tensorflow.core.protobuf import trackable_object_graph_pb2
    from tensorflow.python.trackable.base import OBJECT_GRAPH_PROTO_KEY

    tf = _tf()
    try:
        reader = tf.train.load_checkpoint(prefix)
        if not reader.has_tensor(OBJECT_GRAPH_PROTO_KEY):
            return None
        graph = trackable_object_graph_pb2.TrackableObjectGraph()
        graph.ParseFromString(reader.get_tensor(OBJECT_GRAPH_PROTO_KEY))
    except (tf.errors.OpError, ValueError, IndexError, message.DecodeError) as exc:
        # TensorFlow's reader raises IndexError on a truncated data file, OpError on a bad checksum;
        # the files are named, since the user has to replace them.
        files = ", ".join(sorted(glob.glob(glob.escape(prefix) + ".data-*"))) or f"{prefix}.data-*"
        raise ModelError(
            f"cannot read the object graph of checkpoint {prefix} ({files}) "
            f"({(str(exc).strip() or type(exc).__name__).splitlines()[0]}); "
            "the variables files are corrupted, copy them again"
        ) from None
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


def concrete_function_names(meta_graph) -> list:
    """Names of the concrete functions the SavedObjectGraph lists (none for TF1 formats)."""
    return list(meta_graph.object_graph_def.concrete_functions)


def saved_object_graph(meta_graph):
    """The SavedObjectGraph of a meta graph (empty for TF1 formats)."""
    return meta_graph.object_graph_def


def size(object_graph) -> int:
    """Number of objects (node ids run 0..size-1) of a SavedObjectGraph or TrackableObjectGraph."""
    return len(object_graph.nodes)


def pad(object_graph, n):
    """Appends empty objects until the graph has ``n``; returns the ids appended."""
    first = len(object_graph.nodes)
    while len(object_graph.nodes) < n:
        object_graph.nodes.add()
    return list(range(first, n))


def children(object_graph, object_id) -> dict:
    """{local name: child id} of one object."""
    return {c.local_name: c.node_id for c in object_graph.nodes[object_id].children}


def all_object_functions(object_graph) -> set:
    """Names of the concrete functions the objects of a graph stand for."""
    return set().union(*(object_functions(n) for n in object_graph.nodes))


def subtree(object_graph, root: int) -> list:
    """Ids reachable from ``root`` through children and saveable functions, root first."""
    order, stack, seen = [], [root], {root}
    while stack:
        i = stack.pop()
        order.append(i)
        node = object_graph.nodes[i]
        nxt = [c.node_id for c in node.children]
        for s in node.saveable_objects.values():
            nxt += [s.save_function, s.restore_function]
        for j in nxt:
            if j not in seen:
                seen.add(j)
                stack.append(j)
    return order


def variable_names(saved_object_graph, ckpt_graph) -> dict[str, str]:
    """{checkpoint key: the variable's own name} of every variable of a TF2 SavedModel: the name a
    Keras export gives it (its path, ``mlp_0/kernel``), which stays the same across exports, where
    the checkpoint key (``_all_variables/13/...``) is a position. The SavedObjectGraph and the
    checkpoint's TrackableObjectGraph number the objects alike."""
    names: dict[str, str] = {}
    if ckpt_graph is None:
        return names
    for i, node in enumerate(saved_object_graph.nodes):
        if node.WhichOneof("kind") != "variable" or not node.variable.name or i >= len(ckpt_graph.nodes):
            continue
        for attr in ckpt_graph.nodes[i].attributes:
            names[attr.checkpoint_key] = node.variable.name
    return names


def objects_saved_under(ckpt_graph, checkpoint_key) -> set:
    """Ids of the checkpoint objects with an attribute saved under ``checkpoint_key``."""
    return {
        i
        for i, node in enumerate(ckpt_graph.nodes)
        if any(a.checkpoint_key == checkpoint_key for a in node.attributes)
    }


def captured_object_inputs(meta_graph, top_level_calls) -> list:
    """(object id, input) pairs: the objects top-level calls of concrete functions capture.

    A concrete function's captures are its last inputs, so a call of it names, at those
    positions, the tensor (usually a handle) of each captured object. ``top_level_calls`` are
    ``meta_graph.top_level_calls`` of the model.
    """
    concrete = meta_graph.object_graph_def.concrete_functions
    out: list = []
    for _, function, inputs in top_level_calls:
        if function not in concrete:
            continue
        bound = list(concrete[function].bound_inputs)
        out += zip(bound, inputs[len(inputs) - len(bound) :], strict=False)
    return out


def graft_subtree(og, ckpt_graph, template_og, template_ckpt, template_root, target, renamed):
    """Copies the template's subtree under ``template_root`` onto object ``target`` of both graphs.

    The template root lands on ``target`` (so every parent and capture of ``target`` now
    reaches the copy); its descendants are appended to both graphs, keeping their ids aligned.
    Function names are mapped through ``renamed``; the concrete functions the copied objects
    stand for are copied under their new names.
    """
    sub = subtree(template_og, template_root)
    new_id = {template_root: target}
    for j in sub[1:]:
        new_id[j] = len(og.nodes)
        og.nodes.add()
        ckpt_graph.nodes.add()
    for j in sub:
        graft_object(og.nodes[new_id[j]], template_og.nodes[j], new_id, renamed)
        # Save/restore function objects exist only in the SavedModel's graph, past the end
        # of the checkpoint's; their checkpoint slots stay empty to keep the ids aligned.
        if j < len(template_ckpt.nodes):
            graft_checkpoint_object(ckpt_graph.nodes[new_id[j]], template_ckpt.nodes[j], new_id)
    for j in sub:
        for name in object_functions(template_og.nodes[j]):
            copy_concrete_function(og, template_og, name, renamed[name], new_id)


def append_child(og, ckpt_graph, parent: int, local_name: str) -> int:
    """Appends an empty object to both graphs (ids aligned: ``ckpt_graph`` padded to ``og``'s size)
    as child ``local_name`` of ``parent`` in each; returns its id (``graft_subtree`` fills it)."""
    if local_name in children(og, parent):
        raise ModelError(f"object {parent} already has a child named {local_name!r}")
    pad(ckpt_graph, size(og))
    new = size(og)
    og.nodes.add()
    ckpt_graph.nodes.add()
    for graph in (og, ckpt_graph):
        ref = graph.nodes[parent].children.add()
        ref.node_id, ref.local_name = new, local_name
    return new


def checkpoint_object(ckpt_graph, object_id):
    """One TrackableObject of a checkpoint's object graph (for ``set_checkpoint_attribute``)."""
    return ckpt_graph.nodes[object_id]


def bound_object_args(meta_graph, top_level_calls) -> dict:
    """{top-level tensor: [(function, arg position)]}: where concrete functions receive a captured object.

    Keras' per-layer functions (``*_layer_call_fn``, ``*_layer_call_and_return_conditional_losses``)
    are reached only through the object graph: no top-level node calls them, but their concrete
    function's ``bound_inputs`` name the variable objects bound to their last args. The tensor of
    an object is the one top-level calls pass for it (``captured_object_inputs``).
    """
    if not meta_graph.HasField("object_graph_def"):
        return {}
    tensor_of: dict = {}
    for object_id, ref in captured_object_inputs(meta_graph, top_level_calls):
        tensor_of.setdefault(object_id, ref.split(":")[0])
    arg_counts = {f.signature.name: len(f.signature.input_arg) for f in meta_graph.graph_def.library.function}
    out: dict = {}
    for function, concrete in meta_graph.object_graph_def.concrete_functions.items():
        bound = list(concrete.bound_inputs)
        if function not in arg_counts or not bound:
            continue
        first = arg_counts[function] - len(bound)
        for j, object_id in enumerate(bound):
            if object_id in tensor_of:
                out.setdefault(tensor_of[object_id], []).append((function, first + j))
    return out


def drop_concrete_functions(meta_graph, names) -> list[str]:
    """Leaves the concrete functions ``names`` out of a SavedModel's object graph: out of every
    function object's list and the concrete-function map; a function object left without one
    becomes a plain object (``tf.saved_model.load`` restores an attribute that is no function).
    Returns the names that were there."""
    og = meta_graph.object_graph_def
    names = set(names)
    dropped = sorted(names & set(og.concrete_functions))
    for node in og.nodes:
        kind = node.WhichOneof("kind")
        keep = [n for n in object_functions(node) if n not in names]
        if kind == "function" and keep:
            del node.function.concrete_functions[:]
            node.function.concrete_functions.extend(keep)
        elif kind in ("function", "bare_concrete_function") and not keep:
            node.user_object.identifier = "_generic_user_object"
            node.user_object.version.producer = 1
            node.user_object.version.min_consumer = 1
    for name in dropped:
        del og.concrete_functions[name]
    return dropped


def append_variable(og, ckpt_graph, parent: int, local_name: str, dtype: str, trainable: bool, key: str):
    """Adds a scalar variable ``local_name`` under object ``parent`` to both the SavedObjectGraph
    ``og`` and the checkpoint's graph (kept the same size, so the new object has one id in both),
    its value saved under checkpoint ``key``."""
    from tensorflow.core.framework import types_pb2

    pad(ckpt_graph, size(og))
    new_id = size(og)
    og.nodes.add().variable.CopyFrom(
        _saved_variable(local_name, getattr(types_pb2, f"DT_{dtype.upper()}"), trainable)
    )
    og.nodes[parent].children.add(node_id=new_id, local_name=local_name)
    node = ckpt_graph.nodes.add()
    node.attributes.add(name="VARIABLE_VALUE", full_name=local_name, checkpoint_key=key)
    ckpt_graph.nodes[parent].children.add(node_id=new_id, local_name=local_name)


def _saved_variable(name, dtype, trainable):
    from tensorflow.core.protobuf import saved_object_graph_pb2

    variable = saved_object_graph_pb2.SavedVariable(dtype=dtype, trainable=trainable, name=name)
    variable.shape.SetInParent()  # a scalar
    return variable
