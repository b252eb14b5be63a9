"""Rewrite the table reads of functions no serving signature runs (tf_keras' regularizer losses).

Pattern (in a function only the object graph reaches: a tf_keras layer's
``call_and_return_conditional_losses``, a ``loss_fn_N``):
    ReadVariableOp(table) -> [Square | Abs | Cast]* -> L2Loss | Sum over every axis
        -> GraphoptEvExport(table):values -> the same ops
       (the sum over the table's present rows: right after the rewrite every row is present, so a
        reloaded model's regularization loss is what it was, up to the order of the sum)
    any other use of the table there
        -> the function is left out of the object graph (the plan's notes say which)
The export keeps the read's name, so control edges on the read stay.
"""

from graphopt.ev import contract
from graphopt.graph import nodes, object_graphs
from graphopt.graph.model import TensorRef
from graphopt.rewrite.passes import Pass
from graphopt.rewrite.targets.ev import builders


def dropped_functions(plan) -> dict[str, str]:
    """{function: why} of the functions the rewrite leaves out: a table use there that is no sum
    over rows."""
    out: dict[str, str] = {}
    for t in plan.tables:
        for u in t.uses:
            if u.kind == "offline" and not u.present_rows:
                out.setdefault(u.body, f"{u.detail}, and {t.name} becomes an EmbeddingVariable")
    return out


class RewriteOfflineReads(Pass):
    name = "rewrite-offline-reads"

    def match(self, ctx):
        return [(t, u) for t in ctx.plan.tables for u in t.uses if u.kind == "offline"]

    def check(self, ctx):
        """Each offline read of a converted table is an export, or its function is out of the
        object graph."""
        kept = object_graphs.object_graph_functions(ctx.model.meta_graph)
        problems = []
        for table, use in self.match(ctx):
            node = ctx.model.bodies[use.body].node(use.node) if use.body in ctx.model.bodies else None
            if use.present_rows and node is not None and node.op != contract.EXPORT.name:
                problems.append(f"{use.body}: {use.node} reads table {table.name} as a {node.op}")
            elif not use.present_rows and use.body in kept:
                problems.append(f"{use.body} uses table {table.name} and is still in the object graph")
        return problems

    def apply(self, ctx, matches):
        drop = set()
        for table, use in matches:
            if not use.present_rows:
                drop.add(use.body)
                continue
            body = ctx.model.body(use.body)
            old = nodes.clone(body.node(use.node))
            table_ref = body.data_inputs(old)[0]
            new = builders.export(old.name, table_ref, table.dim, old.device, nodes.control_inputs(old))
            body.replace_uses(TensorRef(old.name, "value", 0), TensorRef(old.name, "values", 0))
            body.replace_node(old.name, new)
            ctx.replaced(body.name, old, new, table, self.name)
        if drop:
            object_graphs.drop_concrete_functions(ctx.model.meta_graph, drop)
        return bool(matches)
