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

from graphopt.graph import nodes
from graphopt.graph.model import TensorRef
from graphopt.rewrite.passes import Pass
from graphopt.rewrite.passes.lookup_sites import distinct_lookup_sites
from graphopt.rewrite.targets.stock import builders as sn


def _int(name):
    return (nodes.dtype_enum(name), "type")


class StockLookups(Pass):
    name = "stock-lookups"

    def __init__(self, tables: sn.StockTables):
        self.tables = tables

    def match(self, ctx):
        # Tables passed through one function argument share its gather: rewrite it once (the plan
        # only lets such tables through when their key -> row maps are the same).
        return distinct_lookup_sites(ctx)

    def apply(self, ctx, matches):
        for table, site in matches:
            body = ctx.model.body(site.body)
            old = nodes.clone(body.node(site.node))
            ids = TensorRef.parse(site.ids)
            # Partitioned: the flat ids feed the partition assignment and the stitch's order;
            # every one of those reads must see the row instead.
            id_uses = (
                [(u.node, u.position) for u in body.consumers(ids.node, (ids.output, ids.index))]
                if site.part_gathers
                else [(old.name, 1)]
            )
            base, dev = f"{old.name}/stock", old.device

            def add(op, suffix, inputs, attrs, body=body, base=base, dev=dev):
                return body.op_output(body.add_op(op, f"{base}/{suffix}", inputs, attrs, dev))

            keys = ids
            if site.ids_dtype != nodes.dtype_enum(sn.INT64):
                keys = add(
                    "Cast",
                    "keys",
                    [ids],
                    {"SrcT": (site.ids_dtype, "type"), "DstT": _int(sn.INT64), "Truncate": (False, "b")},
                )
            handle = self.tables.handle(body, table, dev)
            missing = body.add_const(f"{base}/missing", np.int64(-1), dev)
            row = add(sn.TABLE_FIND_OP, "row", [handle, keys, missing], sn.table_types())
            zero = body.add_const(f"{base}/zero", np.int64(0), dev)
            safe = add("Maximum", "safe_row", [row, zero], {"T": _int(sn.INT64)})
            if site.ids_dtype != nodes.dtype_enum(sn.INT64):
                safe = add(
                    "Cast",
                    "safe_row_ids",
                    [safe],
                    {"SrcT": _int(sn.INT64), "DstT": (site.ids_dtype, "type"), "Truncate": (False, "b")},
                )
            for node_name, pos in id_uses:
                body.set_input(node_name, pos, safe)
            sn.run_with(body, [site.read, *site.part_gathers], row.node)
            found = add("GreaterEqual", "found", [row, zero], {"T": _int(sn.INT64)})
            last = body.add_const(f"{base}/last_axis", np.int32(-1), dev)
            mask = add("ExpandDims", "found_rows", [found, last], {"T": _int("bool"), "Tdim": _int("int32")})
            default = body.add_const(f"{base}/default_row", np.float32(0), dev)

            gather = nodes.renamed(body.node(old.name), body.unique_name(f"{base}_gather"))  # ids rewired
            body.add_node(gather)
            select = nodes.make_node(
                "SelectV2",
                old.name,
                [mask, body.op_output(gather.name), default],
                {"T": (nodes.dtype_enum("float32"), "type")},
                dev,
            )
            if body.is_function:
                out_arg = nodes.output_arg_names(old.op)[0]
                body.replace_uses(TensorRef(old.name, out_arg, 0), TensorRef(old.name, "output", 0))
            body.replace_node(old.name, select)
            ctx.replaced(body.name, old, select, table, self.name)
        return bool(matches)
