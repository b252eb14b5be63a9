"""Turn a table's initializer assign (TF1 init graph) into an import of rows 0..V-1.

Pattern (top level):
    AssignVariableOp(table_part_k, initial_value_k) for every part k
        -> GraphoptEvImport(table, keys, ConcatV2(initial_value_k…), Fill(0), Fill(0))
keys are Range(0, V) (one part or div strategy) or ConcatV2(Range(k, V, parts)…) (mod strategy),
the ids each part holds.
"""

import numpy as np

from graphopt.ev import contract
from graphopt.graph import nodes
from graphopt.rewrite.passes import Pass
from graphopt.rewrite.targets.ev import builders as ev


def _keys(body, table, base, device):
    def rng(start, limit, delta):
        consts = [
            body.add_const(f"{base}/keys/{n}", np.int64(v), device)
            for n, v in (("start", start), ("limit", limit), ("delta", delta))
        ]
        return body.op_output(
            body.add_op(
                "Range", f"{base}/keys/range", consts, {"Tidx": (nodes.dtype_enum("int64"), "type")}, device
            )
        )

    parts = len(table.handles)
    if table.partition_strategy != "mod" or parts == 1:
        return rng(0, table.rows, 1)
    return _concat(
        body,
        [rng(k, table.rows, parts) for k in range(parts)],
        f"{base}/keys",
        nodes.dtype_enum("int64"),
        device,
    )


def _concat(body, refs, base, dtype, device):
    if len(refs) == 1:
        return refs[0]
    axis = body.add_const(f"{base}/axis", np.int32(0), device)
    attrs = {"N": (len(refs), "i"), "T": (dtype, "type"), "Tidx": (nodes.dtype_enum("int32"), "type")}
    return body.op_output(body.add_op("ConcatV2", f"{base}/concat", list(refs) + [axis], attrs, device))


def _zeros(body, rows, base, device):
    dims = body.add_const(f"{base}/dims", np.array([rows], np.int32), device)
    value = body.add_const(f"{base}/value", np.int64(0), device)
    attrs = {"T": (nodes.dtype_enum("int64"), "type"), "index_type": (nodes.dtype_enum("int32"), "type")}
    return body.op_output(body.add_op("Fill", f"{base}/zeros", [dims, value], attrs, device))


class RewriteInitializers(Pass):
    name = "rewrite-initializers"

    def match(self, ctx):
        out = []
        for t in ctx.plan.tables:
            inits = sorted((u for u in t.uses if u.kind == "init"), key=lambda u: u.part)
            if inits:
                out.append((t, inits))
        return out

    def apply(self, ctx, matches):
        body = ctx.model.graph
        for table, inits in matches:
            assigns = [nodes.clone(body.node(u.node)) for u in inits]
            first = assigns[0]
            if [u.part for u in inits] != list(range(len(table.handles))):
                # Not every part is initialized here: the initializer cannot be rebuilt, drop it.
                for a in assigns:
                    ctx.disconnected.add((body.name, body.data_inputs(a)[1].node))
                    body.remove_nodes([a.name])
                    ctx.replaced(body.name, a, None, table, self.name)
                continue
            base = f"{first.name}/{contract.OP_PREFIX}"
            values = _concat(
                body,
                [body.data_inputs(a)[1] for a in assigns],
                f"{base}/values",
                nodes.dtype_enum("float32"),
                first.device,
            )
            keys = _keys(body, table, base, first.device)
            zeros = _zeros(body, table.rows, base, first.device)
            new = ev.import_(
                first.name,
                body.data_inputs(first)[0],
                keys,
                values,
                zeros,
                zeros,
                table.dim,
                first.device,
                nodes.control_inputs(first),
            )
            body.replace_node(first.name, new)
            ctx.replaced(body.name, first, new, table, self.name)
            for a in assigns[1:]:
                body.redirect_control(a.name, first.name)
                body.remove_nodes([a.name])
                ctx.replaced(body.name, a, None, table, self.name)
        return bool(matches)
