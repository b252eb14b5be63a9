"""Remove what the rewrite left dead, and the functions nothing calls any more.

Pattern:
    a node the earlier passes disconnected, with no consumer left, not a root (signature,
    Saver, collection), and either stateless or a leftover op of a table
        -> removed, then its inputs are checked the same way
    a library function neither a node nor the object graph reaches
        -> removed
"""

from graphopt.graph import nodes, object_graphs
from graphopt.graph.model import TOP, root_names
from graphopt.rewrite.passes import Pass
from graphopt.rewrite.plan import Replacement

# Stateful ops that may go once dead: the leftovers of a table's old variable.
TABLE_LEFTOVERS = {
    "ReadVariableOp",
    "ResourceGather",
    "DisableCopyOnRead",
    "VarIsInitializedOp",
    "AssignVariableOp",
    "VarHandleOp",
    "VariableV2",
    "Assign",
    "IsVariableInitialized",
}


def _removable(node, table_handles):
    if node.op in ("VarHandleOp", "VariableV2"):
        return node.name in table_handles
    if node.op in TABLE_LEFTOVERS:
        return True
    return nodes.is_stateful(node.op) is False


def reachable_functions(model):
    """Names of the library functions reachable from the top-level graph or the object graph."""
    # The object graph is kept (rewritten) for TF2 models; tf.saved_model.load restores every
    # concrete function it names, e.g. a lookup table's _create_resource, which no node calls.
    seen = {f for f in object_graphs.object_graph_functions(model.meta_graph) if f in model.bodies}
    stack = [TOP, *seen]
    while stack:
        body = model.body(stack.pop())
        for node in body.nodes():
            for f in [e.function for e in model.calls_of(body, node)] + model.other_function_refs(body, node):
                if f in model.bodies and f not in seen:
                    seen.add(f)
                    stack.append(f)
    return seen


class RemoveDeadNodes(Pass):
    name = "remove-dead-nodes"

    def match(self, ctx):
        return sorted(ctx.disconnected)

    def apply(self, ctx, matches):
        model = ctx.model
        roots = root_names(model.meta_graph)
        handles = {h for t in ctx.plan.tables for h in t.handles}
        removed = {}
        work = list(matches)
        while work:
            bname, name = work.pop()
            body = model.body(bname)
            gone = removed.setdefault(bname, set())
            node = body.node(name)
            if node is None or name in gone or (bname == TOP and name in roots):
                continue
            if any(u.node not in gone for u in body.consumers(name, control=True)) or body.return_uses(name):
                continue
            if not _removable(node, handles):
                continue
            gone.add(name)
            ctx.replacements.append(Replacement(bname, node.name, node.op, None, None, "", self.name))
            work.extend((bname, r.node) for r in body.inputs(node))
        for bname, names in removed.items():
            model.body(bname).remove_nodes(names)
        model.keep_functions(reachable_functions(model))
        return any(removed.values())
