"""The stock-ops target's hash tables: one built-in hash table from key to row per table.

Every body that looks up, saves or restores a table gets its own ``MutableHashTableV2`` node
with the table's shared name, so a handle op inside a function body reaches the same resource
as the one at the top level (the resource manager shares a table by container and name). The
shared name carries a per-rewrite id so that two stock models loaded in one process (two served
versions, or an original and a rewrite of the same code) never share a key -> row map.
"""

import uuid

import numpy as np

from graphopt.graph import nodes
from graphopt.graph.model import Body, TensorRef

HASH_TABLE_OP = "MutableHashTableV2"
TABLE_FIND_OP = "LookupTableFindV2"
TABLE_IMPORT_OP = "LookupTableImportV2"
TABLE_EXPORT_OP = "LookupTableExportV2"
# Every op type the stock passes add; none needs graphopt's library.
STOCK_OPS = (
    HASH_TABLE_OP,
    TABLE_FIND_OP,
    TABLE_IMPORT_OP,
    TABLE_EXPORT_OP,
    "Cast",
    "Maximum",
    "GreaterEqual",
    "ExpandDims",
    "SelectV2",
    "Const",
)
# A table saved under key K gets K-stock-keys and K-stock-values (int64 [n] each: keys, rows)
# beside K: the names a MutableHashTable object saved under K-stock reads (object_graph.py).
STOCK_CHECKPOINT_SUFFIXES = ("keys", "values")
INT64 = "int64"
SHARED_NAME_PREFIX = "graphopt_stock_"


def checkpoint_key(table):
    """The key the table's key -> row map is saved under (its tensors add -keys and -values)."""
    return f"{table.checkpoint_key}-stock"


def checkpoint_names(table):
    """The checkpoint tensors holding a table's key -> row map."""
    return [f"{checkpoint_key(table)}-{s}" for s in STOCK_CHECKPOINT_SUFFIXES]


class StockTables:
    """Names the hash table of each embedding table and puts its handle op into bodies on demand."""

    def __init__(self, run_id=None):
        self.run_id = run_id or uuid.uuid4().hex[:12]

    def shared_name(self, table) -> str:
        return f"{SHARED_NAME_PREFIX}{self.run_id}/{table.name}"

    def handle(self, body: Body, table, device="") -> TensorRef:
        """The table's hash-table handle in ``body``, added once per body."""
        shared = self.shared_name(table).encode()
        for node in body.nodes():
            if node.op == HASH_TABLE_OP and nodes.attr_value(node, "shared_name") == shared:
                return body.op_output(node.name)
        attrs = {
            "container": ("", "s"),
            "shared_name": (shared, "s"),
            "use_node_name_sharing": (False, "b"),
            "key_dtype": (nodes.dtype_enum(INT64), "type"),
            "value_dtype": (nodes.dtype_enum(INT64), "type"),
        }
        name = body.add_op(HASH_TABLE_OP, f"{table.name}/stock_table", (), attrs, device)
        return body.op_output(name)


def table_types():
    """The Tin / Tout attrs of a LookupTableFindV2 or ImportV2 on an int64 -> int64 table."""
    return {"Tin": (nodes.dtype_enum(INT64), "type"), "Tout": (nodes.dtype_enum(INT64), "type")}


def run_with(body, anchors, stateful):
    """Adds ``stateful`` wherever the stateful ``anchors`` are waited for.

    That is: control edges from them, and function control outputs.

    Grappler inlines a function call only when every side-effecting node of the body is reached
    from its control outputs; a call left un-inlined is optimized differently and its numbers can
    move by an ulp.
    """
    anchors = {a for a in anchors if a}
    waiting = {u.node for a in anchors for u in body.consumers(a, control=True) if u.ref.control}
    for name in sorted(waiting):
        if "^" + stateful not in body.control_inputs(name):
            body.add_control_input(name, stateful)
    if body.is_function and anchors & set(body.control_outputs.values()):
        body.add_control_output(stateful)


def checkpoint_content(tables):
    """{tensor name: array}: each table's key -> row map (key i -> row i; partitioned: global ids)."""
    out = {}
    for t in tables:
        ids = np.arange(t.rows, dtype=np.int64)
        keys_name, rows_name = checkpoint_names(t)
        out[keys_name], out[rows_name] = ids, ids.copy()
    return out
