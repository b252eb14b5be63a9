"""Replace each table's variable handle by a GraphoptEvHandleOp.

Pattern:
    VarHandleOp(shared_name=S, shape=[V, D])  -> GraphoptEvHandleOp(shared_name=S, dim=D)
The output is still a resource, so call edges and function argument types do not change.
Parts 1.. of a partitioned table are left without consumers and removed by the cleanup.
"""

from graphopt.graph import io
from graphopt.rewrite import ev_nodes


class ReplaceVariableHandles:
    name = "replace-variable-handles"

    def match(self, ctx):
        return [t for t in ctx.plan.tables]

    def apply(self, ctx, matches):
        body = ctx.model.graph
        for table in matches:
            old = io.clone(body.node(table.handles[0]))
            new = ev_nodes.handle(old.name, io.attr_value(old, "shared_name") or old.name,
                                  io.attr_value(old, "container") or b"", table.dim, old.device)
            body.replace_node(old.name, new)
            ctx.replaced(body.name, old, new, table, self.name)
            for part in table.handles[1:]:
                ctx.disconnected.add((body.name, part))
        return bool(matches)
