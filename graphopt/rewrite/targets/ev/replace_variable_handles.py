"""Replace each table's variable handle by a GraphoptEvHandleOp.

Pattern:
    VarHandleOp(shared_name=S, shape=[V, D])  -> GraphoptEvHandleOp(shared_name=S, dim=D)
The output is still a resource, so call edges and function argument types do not change.
Parts 1.. of a partitioned table are left without consumers and removed by the cleanup.
"""

from graphopt.graph import nodes
from graphopt.rewrite.passes import Pass
from graphopt.rewrite.targets.ev import builders as ev


class ReplaceVariableHandles(Pass):
    name = "replace-variable-handles"

    def match(self, ctx):
        return [t for t in ctx.plan.tables]

    def apply(self, ctx, matches):
        body = ctx.model.graph
        for table in matches:
            old = nodes.clone(body.node(table.handles[0]))
            update = table.training
            new = ev.handle(
                old.name,
                nodes.attr_value(old, "shared_name") or old.name,
                nodes.attr_value(old, "container") or b"",
                table.dim,
                old.device,
                optimizer=update.optimizer if update else "",
                slot_init=[s.init_value for s in update.slots] if update else (),
            )
            body.replace_node(old.name, new)
            ctx.replaced(body.name, old, new, table, self.name)
            for part in table.handles[1:]:
                ctx.disconnected.add((body.name, part))
        return bool(matches)
