"""NodeDef builders of the stock-ops target: a built-in hash table from key to row per table.

Every body that looks up, saves or restores a table gets its own ``MutableHashTableV2`` node
with the table's shared name, so a handle op inside a function body reaches the same resource
as the one at the top level (the resource manager shares a table by container and name). The
shared name carries a per-rewrite id so that two stock models loaded in one process (two served
versions, or an original and a rewrite of the same code) never share a key -> row map.
"""

import uuid

import numpy as np

from graphopt.graph import io
from graphopt.graph.model import Body, TensorRef

HASH_TABLE_OP = "MutableHashTableV2"
FIND_OP = "LookupTableFindV2"
IMPORT_OP = "LookupTableImportV2"
EXPORT_OP = "LookupTableExportV2"
# Every op type the stock passes add; none needs graphopt's library.
STOCK_OPS = (HASH_TABLE_OP, FIND_OP, IMPORT_OP, EXPORT_OP, "Cast", "Maximum", "GreaterEqual",
             "ExpandDims", "SelectV2", "Const")
CHECKPOINT_SUFFIXES = ("stock_keys", "stock_rows")  # KEY-stock_keys (int64 [n]), KEY-stock_rows (int64 [n])
INT64 = "int64"


def checkpoint_names(table):
    """The checkpoint tensors holding a table's key -> row map."""
    return [f"{table.checkpoint_key}-{s}" for s in CHECKPOINT_SUFFIXES]


class StockTables:
    """Names the hash table of each embedding table and puts its handle op into bodies on demand."""

    def __init__(self, run_id=None):
        self.run_id = run_id or uuid.uuid4().hex[:12]

    def shared_name(self, table) -> str:
        return f"graphopt_stock_{self.run_id}/{table.name}"

    def handle(self, body: Body, table, device="") -> TensorRef:
        """The table's hash-table handle in ``body``, added once per body."""
        shared = self.shared_name(table).encode()
        for node in body.nodes():
            if node.op == HASH_TABLE_OP and io.attr_value(node, "shared_name") == shared:
                return output(body, node.name)
        node = io.new_node(HASH_TABLE_OP, body.unique_name(f"{table.name}/stock_table"), device=device)
        io.set_attr(node, "container", "", "s")
        io.set_attr(node, "shared_name", shared, "s")
        io.set_attr(node, "use_node_name_sharing", False, "b")
        io.set_attr(node, "key_dtype", io.dtype_enum(INT64), "type")
        io.set_attr(node, "value_dtype", io.dtype_enum(INT64), "type")
        body.add_node(node)
        return output(body, node.name)


def output(body: Body, node_name, index=0) -> TensorRef:
    """Output ``index`` of a node in the body's spelling (function bodies name the op's output arg)."""
    if not body.is_function:
        return TensorRef(node_name, None, index)
    args = io.op_def(body.node(node_name).op).output_arg
    return TensorRef(node_name, args[index].name, 0)


def add(body: Body, op, base_name, inputs, attrs=None, device="", control=()) -> str:
    """Adds a stock op (attrs {name: (value, kind)}); returns its name."""
    node = io.new_node(op, body.unique_name(base_name), [str(r) for r in inputs] + list(control), device)
    for k, (v, kind) in (attrs or {}).items():
        io.set_attr(node, k, v, kind)
    body.add_node(node)
    return node.name


def const(body: Body, base_name, value, device="") -> TensorRef:
    node = io.new_node("Const", body.unique_name(base_name), device=device)
    io.set_const_value(node, np.asarray(value))
    body.add_node(node)
    return output(body, node.name)


def table_types():
    return {"Tin": (io.dtype_enum(INT64), "type"), "Tout": (io.dtype_enum(INT64), "type")}


def run_with(body, anchors, stateful):
    """Adds ``stateful`` wherever the stateful ``anchors`` are waited for (control edges, control outputs).

    Grappler inlines a function call only when every side-effecting node of the body is reached
    from its control outputs; a call left un-inlined is optimized differently and its numbers can
    move by an ulp.
    """
    anchors = {a for a in anchors if a}
    for name in sorted({u.node for a in anchors for u in body.consumers(a, control=True) if u.ref.control}):
        node = io.clone(body.node(name))
        if "^" + stateful not in node.input:
            node.input.append("^" + stateful)
            body.replace_node(name, node)
    if body.is_function and anchors & set(body.function.control_ret.values()):
        body.function.control_ret[stateful] = stateful
        body.function.signature.control_output.append(stateful)


def _key_map(table):
    return table.rows, table.partition_strategy, tuple(table.partition_rows)


def restrict_plan(plan):
    """Skips tables that share a lookup function with a table whose key -> row map differs.

    A shared function body holds one lookup for all the tables passed through it, so it can only
    consult one hash table; that is right only when all of them map the same keys to the same rows.
    """
    by_handle = {h: t for t in plan.tables for h in t.handles}
    for t in list(plan.tables):
        others = {by_handle[h].name: by_handle[h] for h in t.shares_arguments_with if h in by_handle}
        differ = sorted(n for n, o in others.items() if _key_map(o) != _key_map(t))
        if differ:
            plan.tables.remove(t)
            plan.skipped.append((t, f"shares a lookup function with {differ[0]}, which has other rows; "
                                    "the stock target can look up only one key -> row map there"))
    return plan


def checkpoint_content(tables):
    """{tensor name: array} of each table's key -> row map (key i -> row i; partitioned: global ids)."""
    out = {}
    for t in tables:
        ids = np.arange(t.rows, dtype=np.int64)
        keys_name, rows_name = checkpoint_names(t)
        out[keys_name], out[rows_name] = ids, ids.copy()
    return out
