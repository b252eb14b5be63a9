"""Look up each key's row in the table's built-in hash table before the dense gather (stock target).

Pattern:
    G = GatherV2(ReadVariableOp(table), ids, axis=0)   |   ResourceGather(table, ids)
        -> row  = LookupTableFindV2(hash_table, ids (as int64), -1)
           G/stock_gather = the same gather at Maximum(row, 0) (cast back to the ids' dtype)
           G    = SelectV2(ExpandDims(row >= 0, -1), G/stock_gather, 0.0)
    G = ParallelDynamicStitch(…, gathers of the parts of flat_ids)        (partitioned table)
        -> every use of flat_ids reads Maximum(row, 0) instead; the stitch moves to
           G/stock_gather and G selects as above
The rows stay the dense variable; only the key -> row mapping goes through the hash table, and a
key it does not hold gets the zero row (what an EmbeddingVariable's find returns). The select keeps
the gather's name, so control edges and top-level tensor names stay; Keras' wrap-around of
negative ids runs before the lookup, as before.
"""

import numpy as np

from graphopt.graph import io
from graphopt.graph.model import TensorRef
from graphopt.rewrite import stock_nodes as sn
from graphopt.rewrite.passes.lookups import ReplaceLookups


def _int(name):
    return (io.dtype_enum(name), "type")


class StockLookups:
    name = "stock-lookups"

    def __init__(self, tables: sn.StockTables):
        self.tables = tables

    # Tables passed through one function argument share its gather: rewrite it once (the plan
    # only lets such tables through when their key -> row maps are the same).
    match = ReplaceLookups.match

    def apply(self, ctx, matches):
        for table, site in matches:
            body = ctx.model.body(site.body)
            old = io.clone(body.node(site.node))
            ids = TensorRef.parse(site.ids)
            # Partitioned: the flat ids feed the partition assignment and the stitch's order;
            # every one of those reads must see the row instead.
            id_uses = ([(u.node, u.position) for u in body.consumers(ids.node, (ids.output, ids.index))]
                       if site.part_gathers else [(old.name, 1)])
            base, dev = f"{old.name}/stock", old.device
            keys = ids
            if site.ids_dtype != io.dtype_enum(sn.INT64):
                keys = sn.output(body, sn.add(body, "Cast", f"{base}/keys", [ids],
                                              {"SrcT": (site.ids_dtype, "type"), "DstT": _int(sn.INT64),
                                               "Truncate": (False, "b")}, dev))
            handle = self.tables.handle(body, table, dev)
            missing = sn.const(body, f"{base}/missing", np.int64(-1), dev)
            row = sn.output(body, sn.add(body, sn.FIND_OP, f"{base}/row", [handle, keys, missing],
                                         sn.table_types(), dev))
            zero = sn.const(body, f"{base}/zero", np.int64(0), dev)
            safe = sn.output(body, sn.add(body, "Maximum", f"{base}/safe_row", [row, zero],
                                          {"T": _int(sn.INT64)}, dev))
            if site.ids_dtype != io.dtype_enum(sn.INT64):
                safe = sn.output(body, sn.add(body, "Cast", f"{base}/safe_row_ids", [safe],
                                              {"SrcT": _int(sn.INT64), "DstT": (site.ids_dtype, "type"),
                                               "Truncate": (False, "b")}, dev))
            for node_name, pos in id_uses:
                body.set_input(node_name, pos, safe)
            sn.run_with(body, [site.read, *site.part_gathers], row.node)
            found = sn.output(body, sn.add(body, "GreaterEqual", f"{base}/found", [row, zero],
                                           {"T": _int(sn.INT64)}, dev))
            last = sn.const(body, f"{base}/last_axis", np.int32(-1), dev)
            mask = sn.output(body, sn.add(body, "ExpandDims", f"{base}/found_rows", [found, last],
                                          {"T": _int("bool"), "Tdim": _int("int32")}, dev))
            default = sn.const(body, f"{base}/default_row", np.float32(0), dev)

            gather = io.clone(body.node(old.name))  # with the ids rewired
            gather.name = body.unique_name(f"{base}_gather")
            body.add_node(gather)
            select = io.new_node("SelectV2", old.name, [str(mask), str(sn.output(body, gather.name)), str(default)],
                                 dev)
            io.set_attr(select, "T", io.dtype_enum("float32"), "type")
            if body.is_function:
                out_arg = io.op_def(old.op).output_arg[0].name
                body.replace_uses(TensorRef(old.name, out_arg, 0), TensorRef(old.name, "output", 0))
            body.replace_node(old.name, select)
            ctx.replaced(body.name, old, select, table, self.name)
        return bool(matches)
