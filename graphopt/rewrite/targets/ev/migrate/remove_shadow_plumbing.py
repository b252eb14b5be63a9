"""Bypass TFRA's ShadowVariable / TrainableWrapper plumbing around each lookup.

Pattern (graph or function body; R a shadow or TrainableWrapper variable):
    AssignVariableOp(R, X)  ->  ReadVariableOp(R, ^assign)  ->  consumers
        -> consumers read X
where X is a TFRA find's rows (the TrainableWrapper holding this step's rows) or the read feeds a
TFRA find's keys (the ShadowVariable holding this step's unique ids). Once nothing reads them the
assigns and reads go, and the variables leave the model's collections: serving a lookup is one find.
"""

from graphopt.graph import meta_graphs as mg_lib
from graphopt.graph import nodes
from graphopt.graph.model import TOP
from graphopt.rewrite.passes import Pass


def _is_find(node, system) -> bool:
    return node is not None and system.owns(node.op) and system.role_of(node, None) == "find"


def _source_find(body, ref, system) -> bool:
    return _is_find(body.node(ref.node), system)


class RemoveShadowPlumbing(Pass):
    name = "remove-shadow-plumbing"

    def match(self, ctx):
        from graphopt.analysis.sources import SYSTEMS

        system = SYSTEMS[ctx.plan.analysis.system]
        out = []
        for body in ctx.model.bodies.values():
            for read in body.nodes():
                if read.op != "ReadVariableOp":
                    continue
                resource = body.data_inputs(read)[0]
                for ctrl in nodes.control_inputs(read):
                    assign = body.node(ctrl[1:])
                    if assign is None or assign.op != "AssignVariableOp":
                        continue
                    target, value = body.data_inputs(assign)[:2]
                    if target != resource:
                        continue
                    feeds_find = any(
                        u.position == 1 and _is_find(body.node(u.node), system)
                        for u in body.consumers(read.name)
                    )
                    if _source_find(body, value, system) or feeds_find:
                        out.append((body.name, read.name, assign.name, value, resource))
                        break
        return out

    def apply(self, ctx, matches):
        assigns = {}
        for body_name, read_name, assign_name, value, resource in matches:
            body = ctx.model.body(body_name)
            read = body.node(read_name)
            body.replace_uses(body.output_ref(read_name, 0, "value"), value)
            ctx.disconnected.add((body_name, read_name))
            assigns.setdefault(body_name, set()).add(assign_name)
            ctx.replacements.append(_removed(body_name, read, self.name))
            if body_name == TOP:
                ctx.plan.variables.add(resource.node)
        for body_name, names in assigns.items():
            body = ctx.model.body(body_name)
            for name in names:
                if not body.consumers(name):  # an assign has no data output; only control edges
                    ctx.replacements.append(_removed(body_name, body.node(name), self.name))
            body.remove_nodes(names)
        # TF1: the TrainableWrappers leave the variable collections (their initializers go with them).
        mg_lib.drop_variables(ctx.model.meta_graph, ctx.plan.variables)
        for name in ctx.plan.variables:
            ctx.disconnected.add((TOP, name))
        return bool(matches)

    def check(self, ctx):
        return [f"{b or 'graph'}/{r} still reads a shadow variable" for b, r, *_ in self.match(ctx)]


def _removed(body, node, pass_name):
    from graphopt.rewrite.plan import Replacement

    return Replacement(body, node.name, node.op, None, None, "", pass_name)
