"""Key a migrated table by raw ids, falling back to the original bucket (rewrite --collisionless).

Pattern (after replace-lookups; ``ids = chain(raw)`` is the model's own id mapping, kept):
    GraphoptEvFind(table, ids)  ->  GraphoptEvFindWithFallback(table, raw, ids)
The table keeps the old rows under their bucket keys 0..M-1; a raw id's own key
(``graphopt.ops.fallback.collisionless_key``) is missing until training inserts it, so at rewrite
time every lookup reads its old bucket's row: the outputs are the original's, bit for bit. The
find keeps its name, so control edges and the manifest stay as replace-lookups left them.
"""

from graphopt.ev import contract
from graphopt.graph import meta_graphs, nodes
from graphopt.graph.model import TensorRef
from graphopt.rewrite.passes import Pass
from graphopt.rewrite.targets.ev import builders as ev


class MigrateCollisionless(Pass):
    name = "migrate-collisionless"

    def match(self, ctx):
        """(table, IdChain) of each lookup site of each table whose migration is possible."""
        return [(m.table, c) for m in ctx.plan.migrations if m.possible for c in m.chains]

    def check(self, ctx):
        """Every site of a migrated table is a fallback find: never a partially migrated table."""
        problems = []
        for table, chain in self.match(ctx):
            node = ctx.model.body(chain.site.body).node(chain.site.node)
            if node is None or node.op != contract.FIND_WITH_FALLBACK.name:
                problems.append(
                    f"{chain.site.where} of migrated table {table.name} is "
                    f"{node.op if node is not None else 'gone'}, not {contract.FIND_WITH_FALLBACK.name}"
                )
        return problems

    def apply(self, ctx, matches):
        for table, chain in matches:
            body = ctx.model.body(chain.site.body)
            old = nodes.clone(body.node(chain.site.node))
            table_ref, ids_ref = body.data_inputs(old)[:2]
            new = ev.find_with_fallback(
                old.name,
                table_ref,
                TensorRef.parse(chain.raw),
                nodes.dtype_enum(chain.raw_dtype),
                ids_ref,
                nodes.attr_value(old, "Tkeys"),
                table.dim,
                old.device,
                nodes.control_inputs(old),
            )
            body.replace_node(old.name, new)
            ctx.replaced(body.name, old, new, table, self.name)
        meta_graphs.add_op_defs(ctx.model.meta_graph, (contract.FIND_WITH_FALLBACK.name,))
        return bool(matches)
