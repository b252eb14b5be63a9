"""The migration of a source system's tables (TFRA, DeepRec) onto graphopt's EmbeddingVariables.

Not a ``--target``: the model's tables already are hash tables, so each of their ops becomes the
graphopt op of the same role (``graphopt.rewrite.sources`` says which). The passes run in order:
the training graph goes (the output serves; training continues from the migrated checkpoint), the
TFRA ShadowVariable / TrainableWrapper plumbing is bypassed, the ops are replaced, the Saver's
entries follow graphopt's checkpoint layout, and what is left dead is removed.
"""

import dataclasses

from graphopt.rewrite.passes.ev import nodes as ev_nodes
from graphopt.rewrite.plan import RewriteContext

OP_TYPES = (
    *ev_nodes.EV_OPS,
    "GraphoptEvInsert",
    "GraphoptEvSize",
    "GraphoptEvRemove",
)


@dataclasses.dataclass
class MigrationPlan:
    """What the passes share besides the model: the analysis and the nodes they dropped."""

    analysis: object  # graphopt.rewrite.sources.SourceAnalysis
    tables: list = dataclasses.field(default_factory=list)  # the served tables being rewritten
    slots: list = dataclasses.field(default_factory=list)  # slot tables folded into their main table
    variables: set = dataclasses.field(default_factory=set)  # TFRA shadow variables bypassed
    notes: list[str] = dataclasses.field(default_factory=list)

    def table_of(self, handle: str):
        return next((t for t in self.tables + self.slots if t.name == handle), None)


class MigrationContext(RewriteContext):
    """A RewriteContext whose plan is a MigrationPlan."""


def passes() -> list:
    from graphopt.rewrite.passes.migrate.drop_training import DropTraining
    from graphopt.rewrite.passes.migrate.remove_shadow_plumbing import RemoveShadowPlumbing
    from graphopt.rewrite.passes.migrate.replace_source_ops import ReplaceSourceOps
    from graphopt.rewrite.passes.migrate.rewire_source_save import RewireSourceSave
    from graphopt.rewrite.passes.remove_dead_nodes import RemoveDeadNodes

    return [RemoveShadowPlumbing(), DropTraining(), ReplaceSourceOps(), RewireSourceSave(), RemoveDeadNodes()]
