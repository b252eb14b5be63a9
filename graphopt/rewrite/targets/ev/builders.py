"""The EmbeddingVariable target's NodeDef builders, one per op it writes.

The ops' names, attrs and checkpoint layout are the contract's (``graphopt.ev.contract``); the
builders go through ``graphopt.graph.nodes.make_node`` like every target's.
"""

import numpy as np

from graphopt.ev import contract
from graphopt.graph import nodes
from graphopt.graph.model import TensorRef

# The ops the serving rewrite puts in every output (their OpDefs go into its stripped op list);
# a TF1 training graph's and a collisionless rewrite's add theirs where used.
EV_OPS = (contract.HANDLE.name, contract.FIND.name, contract.EXPORT.name, contract.IMPORT.name)


def _row_attrs(dim):
    return {"dim": (int(dim), "i"), "dtype": (nodes.dtype_enum(contract.ROW_DTYPE), "type")}


def handle(name, shared_name, container, dim, device="", optimizer="", slot_init=()):
    attrs = {
        "shared_name": (shared_name, "s"),
        "container": (container, "s"),
        "key_dtype": (nodes.dtype_enum(contract.KEY_DTYPE), "type"),
        "default_value": ([], "list(float)"),
        **_row_attrs(dim),
    }
    if optimizer:  # a trained table keeps its optimizer's slots in each row
        attrs.update({"optimizer": (optimizer, "s"), "slot_init": (list(slot_init), "list(float)")})
    return nodes.make_node(contract.HANDLE.name, name, (), attrs, device)


def find(name, table_ref, ids_ref, ids_dtype, dim, device="", control=()):
    attrs = {"Tkeys": (ids_dtype, "type"), **_row_attrs(dim)}
    return nodes.make_node(contract.FIND.name, name, [table_ref, ids_ref], attrs, device, control)


def find_with_fallback(name, table_ref, raw_ref, raw_dtype, ids_ref, ids_dtype, dim, device="", control=()):
    attrs = {"Tids": (raw_dtype, "type"), "Tfallback": (ids_dtype, "type"), **_row_attrs(dim)}
    return nodes.make_node(
        contract.FIND_WITH_FALLBACK.name, name, [table_ref, raw_ref, ids_ref], attrs, device, control
    )


def export(name, table_ref, dim, device=""):
    return nodes.make_node(contract.EXPORT.name, name, [table_ref], _row_attrs(dim), device)


def import_(name, table_ref, keys, values, freqs, versions, dim, device="", control=()):
    return nodes.make_node(
        contract.IMPORT.name,
        name,
        [table_ref, keys, values, freqs, versions],
        _row_attrs(dim),
        device,
        control,
    )


def find_or_insert(name, table_ref, ids_ref, step_ref, ids_dtype, dim, device="", control=()):
    attrs = {"Tkeys": (ids_dtype, "type"), **_row_attrs(dim)}
    return nodes.make_node(
        contract.FIND_OR_INSERT.name, name, [table_ref, ids_ref, step_ref], attrs, device, control
    )


def apply(op, name, table_ref, keys, grads, hyper, ids_dtype, dim, device="", control=(), exact=None):
    """The apply op ``op`` of an optimizer (table, keys, grads, *hyperparameters); ``exact``: extra attrs."""
    attrs = {"Tkeys": (ids_dtype, "type"), **_row_attrs(dim), **(exact or {})}
    return nodes.make_node(op, name, [table_ref, keys, grads, *hyper], attrs, device, control)


def export_with_slots(name, table_ref, dim, num_slots, device=""):
    attrs = {**_row_attrs(dim), "num_slots": (int(num_slots), "i")}
    return nodes.make_node(contract.EXPORT_WITH_SLOTS.name, name, [table_ref], attrs, device)


def import_with_slots(
    name, table_ref, keys, values, freqs, versions, slots, pending, dim, optimizer, device="", control=()
):
    attrs = {**_row_attrs(dim), "num_slots": (len(slots), "i"), "optimizer": (optimizer, "s")}
    inputs = [table_ref, keys, values, freqs, versions, *slots, *pending]
    return nodes.make_node(contract.IMPORT_WITH_SLOTS.name, name, inputs, attrs, device, control)


def step_ref(body, device=""):
    """The step find-or-insert records: the graph's int64 ``global_step`` where it has one, else 0."""
    node = body.node("global_step")
    if (
        node is not None
        and node.op == "VarHandleOp"
        and nodes.attr_value(node, "dtype") == nodes.dtype_enum("int64")
    ):
        name = "global_step/graphopt_read"
        if body.node(name) is None:
            body.add_node(
                nodes.make_node(
                    "ReadVariableOp",
                    name,
                    ["global_step"],
                    {"dtype": (nodes.dtype_enum("int64"), "type")},
                    node.device,
                )
            )
        return TensorRef(name, None, 0)
    return body.add_const("graphopt/find_or_insert_step", np.int64(0), device)
