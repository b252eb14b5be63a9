"""DeepRec's EmbeddingVariable (a TF 1.15 fork): its ops, as data.

The attrs are those of DeepRec's ``tensorflow/core/ops/kv_variable_ops.cc``. An EV is a
``KvVarHandleOp`` (``dtype``, ``shape = [dim]``, ``Tkeys``) created by ``InitializeKvVariableOp``
(``filter_freq``: admission after that many lookups; ``steps_to_live``: rows unseen for that many
steps are evicted; ``resource_primary``: a slot EV names the EV it belongs to). Lookups are
``KvResourceGather`` / ``KvResourceGatherV1(resource, indices, default_value[, counts])``; the
checkpoint holds ``NAME-keys``, ``-values``, ``-freqs``, ``-versions`` (graphopt's own layout) and
``KvResourceImportV2(prefix, self, primary, value, tensor_names, empty_key)`` reads them itself;
``KvResourceExport`` returns keys, values, versions, freqs (in that order). A partitioned EV is one
EV per part (``NAME/part_K``), each saved under its own name.
"""

import numpy as np

from graphopt.analysis.sources.tables import table_from_handle, third_input
from graphopt.graph import nodes

NAME = "deeprec"
TITLE = "DeepRec EmbeddingVariable"
HANDLE_OPS = ("KvVarHandleOp",)
# op -> (role, the input position of the table that role applies to)
ROLES = {
    "KvVarHandleOp": ("handle", None),
    "InitializeKvVariableOp": ("initialize", 0),
    "KvResourceGather": ("find", 0),
    "KvResourceGatherV1": ("find", 0),
    "KvResourceImportV2": ("restore", 1),
    "KvResourceExport": ("export", 0),
    "KvVarIsInitializedOp": ("is_initialized", 0),
}
TRAIN_PREFIX = "KvResourceSparseApply"
# A slot EV's init and import name the main EV as resource_primary (input 1 / 2): known, no action.
PRIMARY_INPUT = {"InitializeKvVariableOp": 1, "KvResourceImportV2": 2}
UNSUPPORTED = {
    "KvResourceImport": "the v1 import (keys, values, versions inputs); re-save the model with "
    "DeepRec's KvResourceImportV2 saver",
    "KvResourceIncrImport": "incremental checkpoints are DeepRec's own format",
    "ReadKvVariableOp": "reads the whole EV as a dense tensor; graphopt tables have no dense value",
    "KvVariableShape": "the EV's dense shape; graphopt tables have none",
    "KvResourceScatterAdd": "adds into rows in place; no graphopt op does that",
    "EVGetFrequency": "per-key frequencies; graphopt exports them only with the whole table",
    "EVGetVersion": "per-key versions; graphopt exports them only with the whole table",
    "DestroyKvResourceOp": "destroys the EV; graphopt tables live as long as the session",
    "KvResourceGeneratePartitionedTensor": "DeepRec's repartitioning on restore",
}


def owns(op: str) -> bool:
    return op in ROLES or op in UNSUPPORTED or op.startswith(("Kv", "EVGet"))


def role_of(node, position) -> str | None:
    if node.op.startswith(TRAIN_PREFIX):
        return "train"
    if node.op in PRIMARY_INPUT and position == PRIMARY_INPUT[node.op]:
        return "primary"
    role, at = ROLES.get(node.op, (None, None))
    if role is None or (position is not None and at is not None and position != at):
        return None
    return role


def unknown_reason(node) -> str:
    if node.op in UNSUPPORTED:
        return UNSUPPORTED[node.op]
    if owns(node.op):
        return "a DeepRec op graphopt does not know (a newer DeepRec, or a storage type other than DRAM)"
    return f"stock op {node.op} uses the EV's handle; graphopt cannot tell what it does with it"


def table_of(handle):
    return table_from_handle(NAME, handle, "shape", "Tkeys", "dtype")


default_input = third_input


def checkpoint_key_of(model, body, node, role):
    """The name KvResourceImportV2 restores the EV from (its tensor_names Const)."""
    if role != "restore":
        return None
    ref = body.data_inputs(node)[4]
    src = body.node(ref.node)
    if src is None or src.op != "Const":
        return None
    value = nodes.const_value(src).reshape(-1)
    return value[0].decode() if value.size and isinstance(value[0], bytes) else None


def read_training_attrs(table, body, node, role):
    if role == "initialize":
        table.min_count = int(nodes.attr_value(node, "filter_freq") or 0)
        table.ttl = int(nodes.attr_value(node, "steps_to_live") or 0)
        inputs = body.data_inputs(node)
        primary = inputs[1].node if len(inputs) > 1 else ""
        init = body.node(inputs[2].node) if len(inputs) > 2 else None
        if table.default_value is None and init is not None and init.op == "Const":
            value = nodes.const_value(init).reshape(-1)
            if value.size in (1, table.dim):  # the EV's initial row (a slot's initial value)
                table.default_value = [float(v) for v in np.broadcast_to(value, [table.dim])]
        if primary and primary != table.name:
            table.primary = primary


# DeepRec names a slot EV after its variable and optimizer: emb/Adagrad (accumulator), emb/Adam(_1).
SLOT_NAMES = {"Adagrad": ("adagrad", "accumulator"), "Adam": ("adam", "m"), "Adam_1": ("adam", "v")}


def pair_slots(tables):
    by_name = {t.name: t for t in tables}
    for t in tables:
        main = by_name.get(t.primary)
        if main is None:
            continue
        last = t.name.rsplit("/", 1)[-1]
        optimizer, slot = SLOT_NAMES.get(last, ("", last))
        t.slot_of, t.slot_name = main.name, slot
        main.slots.append(t)
        main.optimizer = optimizer
