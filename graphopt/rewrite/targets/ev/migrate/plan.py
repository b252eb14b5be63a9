"""The migration of a source system's tables (TFRA, DeepRec) onto graphopt's EmbeddingVariables.

Not a ``--target``: the model's tables already are hash tables, so each of their ops becomes the
graphopt op of the same role (``graphopt.analysis.sources`` says which). The passes run in order:
the training graph goes (the output serves; training continues from the migrated checkpoint), the
TFRA ShadowVariable / TrainableWrapper plumbing is bypassed, the ops are replaced, the Saver's
entries follow graphopt's checkpoint layout, and what is left dead is removed.
"""

import dataclasses

from graphopt.ev import contract
from graphopt.rewrite.plan import RewriteContext
from graphopt.rewrite.targets.ev import builders as ev_nodes

OP_TYPES = (
    *ev_nodes.EV_OPS,
    contract.INSERT.name,
    contract.SIZE.name,
    contract.REMOVE.name,
)


@dataclasses.dataclass
class MigrationPlan:
    """What the passes share besides the model: the analysis and the nodes they dropped."""

    analysis: object  # graphopt.analysis.sources.SourceAnalysis
    tables: list = dataclasses.field(default_factory=list)  # the served tables being rewritten
    slots: list = dataclasses.field(default_factory=list)  # slot tables folded into their main table
    variables: set = dataclasses.field(default_factory=set)  # TFRA shadow variables bypassed
    notes: list[str] = dataclasses.field(default_factory=list)

    def table_of(self, handle: str):
        return next((t for t in self.tables + self.slots if t.name == handle), None)


class MigrationContext(RewriteContext):
    """A RewriteContext whose plan is a MigrationPlan."""


def passes() -> list:
    from graphopt.rewrite.passes.remove_dead_nodes import RemoveDeadNodes
    from graphopt.rewrite.targets.ev.migrate.drop_training import DropTraining
    from graphopt.rewrite.targets.ev.migrate.remove_shadow_plumbing import RemoveShadowPlumbing
    from graphopt.rewrite.targets.ev.migrate.replace_source_ops import ReplaceSourceOps
    from graphopt.rewrite.targets.ev.migrate.rewire_source_save import RewireSourceSave

    return [RemoveShadowPlumbing(), DropTraining(), ReplaceSourceOps(), RewireSourceSave(), RemoveDeadNodes()]
