"""NodeDef and AttrValue helpers, and the one node builder every rewrite target uses.

A NodeDef is read and edited through these functions (and ``graph.model.Body`` for edits that
touch a body's index); no module outside ``graphopt.graph`` and ``graphopt.checkpoint`` reads or
writes proto fields itself (tests/graph/test_proto_boundary.py).
"""

import numpy as np


def _tf():
    import tensorflow as tf

    return tf


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
    """A NodeDef attr as a Python value: int, float, bytes, bool, type enum, list, shape, func name."""
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
                    return [shape_list(v) for v in values]
                return list(values)
        return []
    if kind == "func":
        return a.func.name
    if kind == "shape":
        return shape_list(a.shape)
    if kind == "tensor":
        return _tf().make_ndarray(a.tensor)
    return getattr(a, kind) if kind else None


def shape_list(shape_proto):
    if shape_proto.unknown_rank:
        return None
    return [d.size for d in shape_proto.dim]


def set_attr(node, name, value, kind=None):
    """Sets a NodeDef attr from a Python value; ``kind``: i f s b type shape func list(...)."""
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
    """The dtype name ('float32', 'int64', ...) of a DataType enum."""
    return _tf().as_dtype(enum).name


def op_def(op_type):
    """The registered OpDef of an op type, or None when no loaded library registers it."""
    from tensorflow.python.framework import op_def_registry

    return op_def_registry.get(op_type)


def clone(proto):
    """A deep copy of a proto (NodeDef, FunctionDef, MetaGraphDef, ...)."""
    out = type(proto)()
    out.CopyFrom(proto)
    return out


def make_node(op, name, inputs=(), attrs=None, device="", control=()):
    """A fresh NodeDef: data ``inputs`` (TensorRefs or strings), then ``control`` inputs ('^x').

    ``attrs`` maps attr name -> (value, kind), ``kind`` as ``set_attr`` takes it; they are set in
    the order given.
    """
    node = new_node(op, name, [str(r) for r in inputs] + list(control), device)
    for key, (value, kind) in (attrs or {}).items():
        set_attr(node, key, value, kind)
    return node


def const_node(name, value, device=""):
    """A Const NodeDef holding ``value`` (numpy, or anything np.asarray takes)."""
    node = new_node("Const", name, device=device)
    set_const_value(node, np.asarray(value))
    return node


def renamed(node, name):
    """A copy of ``node`` called ``name``."""
    out = clone(node)
    out.name = name
    return out


def control_inputs(node) -> list:
    """The control inputs ('^name') of a NodeDef, in order."""
    return [s for s in node.input if s.startswith("^")]


def set_inputs(node, inputs):
    """Replaces every input of ``node`` (data inputs first, then control inputs, as strings)."""
    del node.input[:]
    node.input.extend(str(i) for i in inputs)


def insert_inputs(node, position, inputs):
    """Inserts ``inputs`` (TensorRefs or strings) before input ``position`` of ``node``."""
    names = list(node.input)
    names[position:position] = [str(i) for i in inputs]
    set_inputs(node, names)


def add_control_input(node, name):
    """Makes ``node`` wait for node ``name`` (once)."""
    if "^" + name not in node.input:
        node.input.append("^" + name)


def remove_attr(node, name):
    """Drops attr ``name`` of ``node`` if it has one."""
    if name in node.attr:
        del node.attr[name]


def function_attrs(node) -> list:
    """(attr name, function name) of each function a node's func and list(func) attrs name."""
    out = []
    for name, value in node.attr.items():
        names = [value.func.name] if value.HasField("func") else [f.name for f in value.list.func]
        out += [(name, fn) for fn in names if fn]
    return out


def output_arg_names(op_type) -> list:
    """The output arg names of a registered op type (a function body spells outputs by them)."""
    od = op_def(op_type)
    if od is None:
        raise KeyError(f"op {op_type} is not registered; load the library that defines it")
    return [a.name for a in od.output_arg]


def is_stateful(op_type):
    """Whether a registered op type is stateful; None when no loaded library registers it."""
    od = op_def(op_type)
    return None if od is None else od.is_stateful
