"""Replace each trained table's v1 optimizer update by the EmbeddingVariable apply op (TF1 graphs).

Pattern (top level; graphopt.analysis.training_updates finds the update and its tensors):
    ResourceScatterAdd(table, ids, Mul(Neg(g), lr))     -> GraphoptEvApplySgd(table, ids, g, lr)
                                                           (sum_duplicates=False: per occurrence)
    ResourceSparseApplyAdagrad(table, acc, lr, g, ids)  -> GraphoptEvApplyAdagrad(table, ids, g, lr, 0)
    ResourceSparseApplyFtrl(table, acc, lin, g, ids, lr, l1, l2, p)
                                                        -> GraphoptEvApplyFtrl(table, ids, g, lr, l1, l2, p)
    AssignSubVariableOp(table, <v1 Adam update of m, v>)
        -> GraphoptEvApplyAdam(table, ids, g, lr_t, beta1, beta2, epsilon, beta1_power, beta2_power)
The apply op keeps the update's name, so the train op's control edges wait for it; Adam's reads
of the new m and v (``group_deps``) now wait for it too. The slot variables go in drop-slot-variables.
"""

import numpy as np

from graphopt.ev import contract
from graphopt.graph import meta_graphs, nodes
from graphopt.rewrite.passes import Pass
from graphopt.rewrite.targets.ev import builders as ev

# The ops a rewritten training graph adds beyond the serving ones.
TRAINING_OPS = (
    contract.FIND_OR_INSERT.name,
    contract.EXPORT_WITH_SLOTS.name,
    contract.IMPORT_WITH_SLOTS.name,
)


class ReplaceTrainingUpdates(Pass):
    name = "replace-training-updates"

    def match(self, ctx):
        return [t for t in ctx.plan.tables if t.training is not None]

    def check(self, ctx):
        problems = []
        for table in ctx.plan.tables:
            if table.training is not None:
                node = ctx.model.graph.node(table.training.node)
                if node is None or node.op != table.training.apply_op:
                    problems.append(
                        f"graph: the optimizer update of table {table.name} is no longer "
                        f"{table.training.apply_op}"
                    )
        return problems

    def apply(self, ctx, matches):
        body = ctx.model.graph
        for table in matches:
            update = table.training
            old = nodes.clone(body.node(update.node))
            hyper = [
                h if h is not None else body.add_const(f"{old.name}/epsilon", np.float32(0), old.device)
                for h in update.hyper
            ]
            ids_dtype = (
                next(s.ids_dtype for s in table.sites if s.training)
                if any(s.training for s in table.sites)
                else nodes.dtype_enum("int64")
            )
            new = ev.apply(
                update.apply_op,
                old.name,
                body.data_inputs(old)[0],
                update.keys,
                update.grads,
                hyper,
                ids_dtype,
                table.dim,
                old.device,
                nodes.control_inputs(old),
                update.exact_attrs,
            )
            for ref in body.data_inputs(old):
                ctx.disconnected.add((body.name, ref.node))
            body.replace_node(old.name, new)
            for name in update.control_from:
                body.redirect_control(name, old.name)
            ctx.replaced(body.name, old, new, table, self.name)
            meta_graphs.add_op_defs(ctx.model.meta_graph, (update.apply_op, *TRAINING_OPS))
        return bool(matches)
