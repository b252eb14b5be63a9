"""Replace every row gather of a table by GraphoptEvFind.

Pattern:
    ResourceGather(table, ids)                                   -> GraphoptEvFind(table, ids)
    GatherV2(ReadVariableOp(table), ids, axis=0)                 -> GraphoptEvFind(table, ids)
    ParallelDynamicStitch(DynamicPartition(Range(Size(ids)), p),
                          [gather(part_k, DynamicPartition(new_ids, p):k)])
                                                                 -> GraphoptEvFind(part_0, ids)
    a gather an optimizer update's gradients come from (TF1 training graphs)
                                                                 -> GraphoptEvFindOrInsert(table, ids, step)
The find keeps the name of the node it replaces, so control edges and top-level tensor names stay.
"""

from graphopt.graph import nodes
from graphopt.graph.model import Body, TensorRef
from graphopt.rewrite.passes import Pass
from graphopt.rewrite.passes.lookup_sites import distinct_lookup_sites
from graphopt.rewrite.targets.ev import builders as ev


def _table_ref(body: Body, gather) -> TensorRef:
    """The variable a gather reads: its params (ResourceGather), or the variable behind the read."""
    ref = body.data_inputs(gather)[0]
    if gather.op == "ResourceGather":
        return ref
    node = body.node(ref.node)
    while node is not None and node.op == "Identity":
        ref = body.data_inputs(node)[0]
        node = body.node(ref.node)
    if node is not None and node.op == "ReadVariableOp":
        return body.data_inputs(node)[0]
    return ref  # a ref variable (VariableV2) read through its Identity snapshot


def _gathers_rows(body: Body, node) -> bool:
    """Whether a use of a table's resource gathers rows that something consumes.

    ResourceGather, or a ReadVariableOp whose value (through Identity) is the params of a
    GatherV2. Gathers nothing consumes (the parts of a replaced partitioned lookup, left for the
    cleanup) do not count.
    """

    def live(name):
        return bool(body.consumers(name)) or bool(body.return_uses(name))

    if node.op == "ResourceGather":
        return live(node.name)
    if node.op != "ReadVariableOp":
        return False
    stack = [node.name]
    while stack:
        for use in body.consumers(stack.pop()):
            consumer = body.node(use.node)
            if consumer.op == "Identity":
                stack.append(consumer.name)
            elif consumer.op in ("GatherV2", "Gather") and use.position == 0 and live(consumer.name):
                return True
    return False


class ReplaceLookups(Pass):
    name = "replace-lookups"

    def match(self, ctx):
        return distinct_lookup_sites(ctx)

    def check(self, ctx):
        """No gather of a converted table is left: every row read goes through GraphoptEvFind."""
        problems = []
        for table in ctx.plan.tables:
            for handle in table.handles:
                for body, use in ctx.model.trace_variable(handle):
                    node = body.node(use.node)
                    if _gathers_rows(body, node):
                        problems.append(
                            f"{body.name or 'graph'}: {node.name} ({node.op}) still reads rows "
                            f"of table {table.name}, which the rewrite replaced"
                        )
        return problems

    def apply(self, ctx, matches):
        for table, site in matches:
            body = ctx.model.body(site.body)
            old = nodes.clone(body.node(site.node))
            gather = body.node(site.part_gathers[0]) if site.part_gathers else old
            table_ref = _table_ref(body, gather)
            for ref in body.data_inputs(old):
                ctx.disconnected.add((body.name, ref.node))
            for g in site.part_gathers:
                ctx.disconnected.add((body.name, g))
            if site.training:  # training inserts unseen ids; serving lookups only find
                new = ev.find_or_insert(
                    old.name,
                    table_ref,
                    site.ids,
                    ev.step_ref(body, old.device),
                    site.ids_dtype,
                    table.dim,
                    old.device,
                    nodes.control_inputs(old),
                )
            else:
                new = ev.find(
                    old.name,
                    table_ref,
                    site.ids,
                    site.ids_dtype,
                    table.dim,
                    old.device,
                    nodes.control_inputs(old),
                )
            if body.is_function:
                out_arg = nodes.output_arg_names(old.op)[0]
                body.replace_uses(TensorRef(old.name, out_arg, 0), TensorRef(old.name, "values", 0))
            body.replace_node(old.name, new)
            if site.read:
                # Ordering edges on the old read (Keras' NoOp) now wait for the find instead.
                body.redirect_control(site.read, old.name)
            ctx.replaced(body.name, old, new, table, self.name)
        return bool(matches)
