"""Drop the tables from the meta graph's variable collections.

Pattern:
    collection_def["variables" | "trainable_variables" | …] VariableDef(variable_name=table)
        -> removed
Loaders lift every VariableDef into a variable; a table is no longer one.
"""

from graphopt.graph import meta_graphs
from graphopt.rewrite.passes import Pass


class DropTableVariables(Pass):
    name = "drop-table-variables"

    def match(self, ctx):
        names = {h for t in ctx.plan.tables for h in t.handles}
        return sorted(names & meta_graphs.collection_node_names(ctx.model.meta_graph))

    def apply(self, ctx, matches):
        meta_graphs.drop_variables(ctx.model.meta_graph, matches)
        return True
