"""Remove the table's uses that nothing consumes: reads, DisableCopyOnRead, VarIsInitializedOp.

Pattern:
    ReadVariableOp(table) with no data consumer (function bodies) or outside every root's
    dependencies (top level, e.g. Keras 3's unused ``Variable_2/Initializer/ReadVariableOp``)
        -> removed, with the nodes that read only from it
Such ops would run against a resource that is no longer a variable and fail.
"""

from graphopt.rewrite.passes import Pass


class RemoveTableReads(Pass):
    name = "remove-table-reads"

    def match(self, ctx):
        return [(t, u) for t in ctx.plan.tables for u in t.uses if u.kind == "dead"]

    def apply(self, ctx, matches):
        changed = False
        for table, use in matches:
            body = ctx.model.body(use.body)
            node = body.node(use.node)
            if node is None:
                continue
            cone = {use.node} if body.is_function else body.dead_cone([use.node])
            for name in cone:
                n = body.node(name)
                ctx.replaced(body.name, n, None, table, self.name)
                for ref in body.inputs(n):
                    ctx.disconnected.add((body.name, ref.node))
            body.remove_nodes(cone)
            changed = True
        return changed
