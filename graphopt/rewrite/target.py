"""What a rewrite target is: data the engine (``rewrite_model``) asks, never a target's own code.

A target is a package ``graphopt.rewrite.targets.<name>`` whose ``__init__`` defines ``TARGET``
and is listed in ``graphopt.rewrite.targets.TARGETS``.
"""

import dataclasses
from collections.abc import Callable

import numpy as np

from graphopt.rewrite.passes import Pass

# What a target can do beyond the plain serving rewrite (``Target.supports``):
# "collisionless": ``rewrite --collisionless`` (tables keyed by raw ids, the bucket as fallback).
COLLISIONLESS = "collisionless"
# "compressed-rows": ``rewrite --row-dtype`` (serving rows stored int8 / 16-bit); with
# "compressed-partitions" also for partitioned tables.
COMPRESSED_ROWS = "compressed-rows"
COMPRESSED_PARTITIONS = "compressed-partitions"
# tf_keras layers owning a converted table are revived as trainable graphopt.tf_keras layers.
TF_KERAS_TRAINING = "tf-keras-training"


@dataclasses.dataclass
class CheckpointLayout:
    """How a target's output checkpoint differs from the input's.

    ``conversions`` (graphopt.checkpoint.TableConversion) turn a table's tensor into an
    EmbeddingVariable's four; ``added`` ({name: array}) are tensors written beside the others;
    ``renamed`` ({old: new}) keep their bytes under a new key (a trained table's slot variables).
    """

    conversions: list = dataclasses.field(default_factory=list)
    added: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    renamed: dict[str, str] = dataclasses.field(default_factory=dict)


def _every_table(plan):
    return plan


def _no_library():
    pass


@dataclasses.dataclass(frozen=True)
class Target:
    """A rewrite target, described as data: what a table becomes and the passes that make it so.

    ``rewrite_model`` knows no target by name: it reads these fields.
    """

    name: str  # the --target value
    description: str  # what a converted table becomes, for the plan listing
    passes: Callable[[], list[Pass]]  # fresh pass instances, in the order they run
    op_types: tuple[str, ...]  # op types the output uses whose OpDefs go into its stripped op list
    checkpoint_layout: Callable[[list], CheckpointLayout]  # of the plan's tables
    # (meta_graph, checkpoint object graph, tables) -> the rewritten checkpoint object graph, or
    # None: makes TF2 objects stand for the converted tables in a SavedModel's object graph
    # (edited in place). A target without one drops the object graph before its passes run, and
    # its output is TF1-format.
    rewrite_object_graph: Callable | None = None
    restrict_plan: Callable = _every_table  # drops the tables the target cannot convert
    # Registers the op library the target's ops come from (their OpDefs go into the output);
    # called before anything is read, so a missing library fails fast.
    load_ops: Callable[[], None] = _no_library
    supports: frozenset[str] = frozenset()  # e.g. COLLISIONLESS
    # Op types a compressed rewrite (rewrite --row-dtype) adds to op_types.
    compressed_op_types: tuple[str, ...] = ()

    @property
    def keeps_object_graph(self) -> bool:
        return self.rewrite_object_graph is not None
