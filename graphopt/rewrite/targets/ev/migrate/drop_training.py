"""Drop the source model's training graph: the migrated model serves.

Pattern (top-level graph):
    collection train_op = [train]; train -> apply ops, table inserts, slot lookups, ...
        -> no train_op collection; every node no root (signature, Saver, collection) needs is gone
The TFRA training step writes rows through TrainableWrapper variables and slot tables, DeepRec's
through ``KvResourceSparseApply*``; neither survives the table rewrite, so the output keeps no half of
it. Training continues from the migrated checkpoint (its rows and in-row slots; docs/migration.md).
"""

from graphopt.graph import meta_graphs as mg_lib
from graphopt.graph import nodes
from graphopt.graph.model import TOP, ModelGraph, live_nodes
from graphopt.rewrite.passes import Pass

TRAIN_COLLECTIONS = ("train_op", "update_ops", "summaries", "summary_op")


class DropTraining(Pass):
    name = "drop-training"

    def match(self, ctx):
        keys = [k for k in TRAIN_COLLECTIONS if k in mg_lib.collection_keys(ctx.model.meta_graph)]
        return keys + [""] if keys or self._dead(ctx, keys) else []

    @staticmethod
    def _dead(ctx, keys):
        meta_graph = nodes.clone(ctx.model.meta_graph) if keys else ctx.model.meta_graph
        if keys:
            mg_lib.drop_collections(meta_graph, keys)
        live = live_nodes(ModelGraph(meta_graph))
        return [n.name for n in ctx.model.body(TOP).nodes() if n.name not in live]

    def apply(self, ctx, matches):
        keys = [k for k in matches if k]
        mg_lib.drop_collections(ctx.model.meta_graph, keys)
        body = ctx.model.body(TOP)
        dead = set(self._dead(ctx, []))
        for node in body.nodes():
            if node.name in dead:
                ctx.replacements.append(_removed(node, self.name))
        body.remove_nodes(dead)
        if keys:
            ctx.plan.notes.append(
                f"training graph dropped ({', '.join(keys)}): the output serves, training "
                "continues from the migrated checkpoint (docs/migration.md)"
            )
        return bool(dead) or bool(keys)


def _removed(node, pass_name):
    from graphopt.rewrite.plan import Replacement

    return Replacement(TOP, node.name, node.op, None, None, "", pass_name)
