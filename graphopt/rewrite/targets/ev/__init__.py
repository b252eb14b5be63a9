"""The EmbeddingVariable target (``--target ev``): each table becomes an EmbeddingVariable hash table.

Gathers become finds, the Saver saves and restores KEY-keys/-values/-freqs/-versions, TF1
initializers become imports, and the table's variable handle becomes an EmbeddingVariable handle.
"""

from graphopt.checkpoint import TableConversion
from graphopt.ev import contract
from graphopt.rewrite.passes.remove_dead_nodes import RemoveDeadNodes
from graphopt.rewrite.target import (
    COLLISIONLESS,
    COMPRESSED_PARTITIONS,
    COMPRESSED_ROWS,
    TF_KERAS_TRAINING,
    CheckpointLayout,
    Target,
)
from graphopt.rewrite.targets.ev.builders import COMPRESSED_OPS, EV_OPS
from graphopt.rewrite.targets.ev.drop_slot_variables import DropSlotVariables
from graphopt.rewrite.targets.ev.drop_table_variables import DropTableVariables
from graphopt.rewrite.targets.ev.migrate_collisionless import MigrateCollisionless
from graphopt.rewrite.targets.ev.remove_table_reads import RemoveTableReads
from graphopt.rewrite.targets.ev.replace_lookups import ReplaceLookups
from graphopt.rewrite.targets.ev.replace_training_updates import ReplaceTrainingUpdates
from graphopt.rewrite.targets.ev.replace_variable_handles import ReplaceVariableHandles
from graphopt.rewrite.targets.ev.rewire_restore import RewireRestore
from graphopt.rewrite.targets.ev.rewire_save import RewireSave
from graphopt.rewrite.targets.ev.rewrite_initializers import RewriteInitializers
from graphopt.rewrite.targets.ev.rewrite_offline_reads import RewriteOfflineReads, dropped_functions
from graphopt.rewrite.targets.ev.tf2_objects import rewrite_object_graph


def passes():
    """The rewrite, in order: lookups, optimizer updates (TF1 training graphs), the Saver, slot
    variables, initializers, handles, cleanup."""
    return [
        ReplaceLookups(),
        RewriteOfflineReads(),
        MigrateCollisionless(),  # only with rewrite --collisionless (the plan's migrations)
        ReplaceTrainingUpdates(),
        RewireSave(),
        RewireRestore(),
        DropSlotVariables(),
        RewriteInitializers(),
        RemoveTableReads(),
        ReplaceVariableHandles(),
        DropTableVariables(),
        RemoveDeadNodes(),
    ]


def checkpoint_layout(tables) -> CheckpointLayout:
    """Each table's tensor KEY becomes KEY-keys/-values/-freqs/-versions, ids in stored order; a
    trained table's slot variables' tensors become KEY-slot-<name> (same rows, same order)."""
    return CheckpointLayout(
        conversions=[
            TableConversion(t.checkpoint_key, t.checkpoint_key, t.row_ids, t.row_dtype, t.name)
            for t in tables
        ],
        renamed={
            s.checkpoint_key: contract.slot_tensor_name(t.checkpoint_key, s.name)
            for t in tables
            if t.training is not None
            for s in t.training.slots
        },
    )


def restrict_plan(plan):
    """Every table converts; the plan notes the functions left out of the object graph."""
    plan.notes += [
        f"function {f} is left out of the rewritten object graph: {why}"
        for f, why in sorted(dropped_functions(plan).items())
    ]
    return plan


def load_ops():
    """Loads graphopt's op library (OpLibraryError when it is missing or stale)."""
    from graphopt.ops.library import load_library

    load_library()


TARGET = Target(
    name="ev",
    description="EmbeddingVariable",
    passes=passes,
    op_types=EV_OPS,
    checkpoint_layout=checkpoint_layout,
    rewrite_object_graph=rewrite_object_graph,
    restrict_plan=restrict_plan,
    load_ops=load_ops,
    supports=frozenset({COLLISIONLESS, COMPRESSED_ROWS, COMPRESSED_PARTITIONS, TF_KERAS_TRAINING}),
    compressed_op_types=COMPRESSED_OPS,
)
