"""TensorFlow Recommenders-Addons (TFRA 0.8.1): its hash-table ops, as data.

A ``de.Variable`` (``de.get_variable``, ``de.keras.layers.Embedding`` and its ``FieldWise`` /
``Squashed`` variants) is one ``TFRA>CuckooHashTableOfTensors`` per shard (``NAME_mht_KofN``; HKV
tables, ``TFRA>HkvHashTableOfTensors``, in a CPU export), keyed by int64 (or string) ids, values of
``value_shape = [dim]``. Lookups read ``TFRA>…Find(table, keys, default)``; the Saver writes
``KEY-keys`` / ``KEY-values`` from ``…Export`` and restores them through ``…Import``. A
``DynamicEmbeddingOptimizer`` keeps each slot in a table of its own,
``<var>_<Optimizer>_<slot>_mht_KofN`` (TF1) or ``<var>_DynamicEmbedding_<layer>-shadow_<slot>``
(Keras), looked up with the same keys.
"""

import re

from graphopt.analysis.sources.tables import table_from_handle, third_input
from graphopt.ev import contract
from graphopt.graph import nodes

NAME = "tfra"
TITLE = "TensorFlow Recommenders-Addons (TFRA) dynamic embedding"
PREFIX = "TFRA>"
TABLE_KINDS = ("CuckooHashTable", "HkvHashTable")
HANDLE_OPS = tuple(f"{PREFIX}{k}OfTensors" for k in TABLE_KINDS)
# op suffix -> role; the table is input 0 of each.
ROLES = {
    "Find": "find",
    "Insert": "insert",
    "Export": "export",
    "Import": "import",
    "Size": "size",
    "Remove": "remove",
}
# Known TFRA ops graphopt has no equivalent for, and why.
UNSUPPORTED = {
    "FindWithExists": f"returns an exists mask, which {contract.FIND.name} has no output for",
    "Accum": "accumulates into rows conditionally on an exists mask; no graphopt op does that",
    "Clear": "empties the table; graphopt has no clear op (import an empty table instead)",
    "ExportWithScores": "exports HKV scores, which graphopt tables do not keep",
    "ExportKeysAndScores": "exports HKV scores, which graphopt tables do not keep",
    "SaveToFileSystem": "saves to TFRA's own file-system format, not a checkpoint",
    "LoadFromFileSystem": "loads TFRA's own file-system format, not a checkpoint",
    "InsertOrAssign": "an HKV score-keeping insert; no graphopt equivalent",
    "FindWithScores": "returns HKV scores, which graphopt tables do not keep",
}
SLOT_OPTIMIZERS = {("accumulator",): "adagrad", ("m", "v"): "adam"}
_SHARD = re.compile(r"_mht_(\d+of\d+)$")


def owns(op: str) -> bool:
    return op.startswith(PREFIX)


def _suffix(op: str) -> str | None:
    for kind in TABLE_KINDS:
        if op.startswith(PREFIX + kind):
            return op[len(PREFIX + kind) :]
    return None


def role_of(node, position) -> str | None:
    suffix = _suffix(node.op)
    if suffix == "OfTensors":
        return "handle"
    if suffix in ROLES and position in (0, None):
        return ROLES[suffix]
    return None


def unknown_reason(node) -> str:
    suffix = _suffix(node.op)
    if suffix in UNSUPPORTED:
        return UNSUPPORTED[suffix]
    if owns(node.op):
        return (
            "a TFRA op graphopt does not know (TFRA newer than 0.8.1, or a table type other than cuckoo/HKV)"
        )
    return f"stock op {node.op} uses the table's handle; graphopt cannot tell what it does with it"


def table_of(handle):
    return table_from_handle(NAME, handle, "value_shape", "key_dtype", "value_dtype")


default_input = third_input


def checkpoint_key_of(model, body, node, role):
    """The checkpoint key the Saver restores this table from (its Import's RestoreV2 entry)."""
    if role != "import":
        return None
    keys = body.data_inputs(node)[1]
    src = body.node(keys.node)
    while src is not None and src.op == "Identity":
        keys = body.data_inputs(src)[0]
        src = body.node(keys.node)
    if src is None or src.op != "RestoreV2":
        return None
    names_node = body.node(body.data_inputs(src)[1].node)
    if names_node is None or names_node.op != "Const":
        return None
    names = [
        v.decode() if isinstance(v, bytes) else str(v) for v in nodes.const_value(names_node).reshape(-1)
    ]
    index = keys.index if keys.index is not None else 0
    name = names[index] if index < len(names) else ""
    return name[: -len("-keys")] if name.endswith("-keys") else None


def read_training_attrs(table, body, node, role):
    pass


def _base(name):
    last = name.rsplit("/", 1)[-1]
    m = _SHARD.search(last)
    return (last[: m.start()], m.group(1)) if m else (last, "")


def pair_slots(tables):
    """Marks the DynamicEmbeddingOptimizer's slot tables and gives their main table its optimizer."""
    bases = {t.name: _base(t.name) for t in tables}
    for t in tables:
        base, shard = bases[t.name]
        mains = [
            m
            for m in tables
            if m is not t and bases[m.name][1] == shard and base.startswith(bases[m.name][0] + "_")
        ]
        if not mains:
            continue
        main = max(mains, key=lambda m: len(bases[m.name][0]))
        slot = base.rsplit("_", 1)[-1]
        if not any(slot in names for names in SLOT_OPTIMIZERS):
            continue
        t.slot_of, t.slot_name = main.name, slot
        main.slots.append(t)
    for t in tables:
        names = tuple(sorted(s.slot_name for s in t.slots))
        t.optimizer = SLOT_OPTIMIZERS.get(names, "") if names else ""
