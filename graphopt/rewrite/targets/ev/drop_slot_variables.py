"""Remove the optimizer's slot variables of each trained table: the slots now live in its rows.

Pattern (top level):
    VarHandleOp(slot) with its initializer, snapshot read, IsInitialized, Saver read and restore
    assign, and (Adam) the optimizer's m := m * beta1 / ResourceScatterAdd / reads of m_t, v_t
        -> removed, with what reads data only through them; their VariableDefs leave the collections
The Saver already saves and restores the slots as KEY-slot-<name> (rewire-save, rewire-restore).
"""

from graphopt.graph import meta_graphs
from graphopt.rewrite.passes import Pass


class DropSlotVariables(Pass):
    name = "drop-slot-variables"

    def match(self, ctx):
        return [(t, s) for t in ctx.plan.tables if t.training is not None for s in t.training.slots]

    def check(self, ctx):
        return [
            f"graph: slot variable {s.handle} of table {t.name} is still in the graph"
            for t, s in self.match(ctx)
            if ctx.model.graph.node(s.handle) is not None
        ]

    def apply(self, ctx, matches):
        body = ctx.model.graph
        meta_graphs.drop_variables(ctx.model.meta_graph, [s.handle for _, s in matches])
        for table, slot in matches:
            users = {u.node for u in body.consumers(slot.handle, control=True)} | {slot.handle}
            cone = body.dead_cone(users)
            for name in sorted(cone):
                node = body.node(name)
                for ref in body.inputs(node):
                    if ref.node not in cone:
                        ctx.disconnected.add((body.name, ref.node))
                ctx.replaced(body.name, node, None, table, self.name)
            body.remove_nodes(cone)
        return bool(matches)
