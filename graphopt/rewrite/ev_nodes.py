"""NodeDef builders for the EmbeddingVariable ops and the few stock ops the passes add."""

import numpy as np

from graphopt.graph import io
from graphopt.graph.model import Body, TensorRef
from graphopt.rewrite.plan import EXPORT_OP, FIND_OP, HANDLE_OP, IMPORT_OP

EXPORT_OUTPUTS = ("keys", "values", "freqs", "versions")


def _set_row_attrs(node, dim):
    io.set_attr(node, "dim", int(dim), "i")
    io.set_attr(node, "dtype", io.dtype_enum("float32"), "type")


def handle(name, shared_name, container, dim, device=""):
    node = io.new_node(HANDLE_OP, name, device=device)
    io.set_attr(node, "shared_name", shared_name, "s")
    io.set_attr(node, "container", container, "s")
    io.set_attr(node, "key_dtype", io.dtype_enum("int64"), "type")
    io.set_attr(node, "default_value", [], "list(float)")
    _set_row_attrs(node, dim)
    return node


def find(name, table_ref, ids_ref, ids_dtype, dim, device="", control=()):
    node = io.new_node(FIND_OP, name, [str(table_ref), str(ids_ref)] + list(control), device)
    io.set_attr(node, "Tkeys", ids_dtype, "type")
    _set_row_attrs(node, dim)
    return node


def export(name, table_ref, dim, device=""):
    node = io.new_node(EXPORT_OP, name, [str(table_ref)], device)
    _set_row_attrs(node, dim)
    return node


def import_(name, table_ref, keys, values, freqs, versions, dim, device="", control=()):
    node = io.new_node(IMPORT_OP, name, [str(r) for r in (table_ref, keys, values, freqs, versions)]
                       + list(control), device)
    _set_row_attrs(node, dim)
    return node


def const(body: Body, base_name, value, device="") -> TensorRef:
    """Adds a Const node holding ``value`` (numpy) to ``body``; returns the reference to it."""
    node = io.new_node("Const", body.unique_name(base_name), device=device)
    io.set_const_value(node, np.asarray(value))
    body.add_node(node)
    return body.output_ref(node.name)


def add(body: Body, op, base_name, inputs, attrs, device="") -> TensorRef:
    """Adds a stock op with the given inputs and attrs ({name: (value, kind)}); returns output 0."""
    node = io.new_node(op, body.unique_name(base_name), [str(r) for r in inputs], device)
    for k, (v, kind) in attrs.items():
        io.set_attr(node, k, v, kind)
    body.add_node(node)
    return body.output_ref(node.name)


def output(body: Body, node_name, arg, flat_index) -> TensorRef:
    """Output ``arg`` (flat index ``flat_index`` in graphs) of a node whose output args are single tensors."""
    return TensorRef(node_name, arg, 0) if body.is_function else TensorRef(node_name, None, flat_index)


def control_inputs(node):
    return [s for s in node.input if s.startswith("^")]
