"""Rewrite passes: the interface every pass implements, shared passes, one folder per target.

A pass module is named after its pass and opens with the pattern it rewrites. A pass has a
``name`` (the manifest's and the report's), ``match(ctx)`` that finds what to change without
editing, and ``apply(ctx, matches)`` that edits ``ctx.model`` in place and says whether it
changed anything. ``ctx`` is the ``RewriteContext``: the graph model, the plan and the manifest.
Targets (``ev/``, ``stock/``) list their passes in their ``TARGET`` (graphopt.rewrite.targets).
"""

import dataclasses
from collections.abc import Callable

import numpy as np


@dataclasses.dataclass
class PassResult:
    """What one pass did."""

    name: str
    changed: bool
    matches: int


class Pass:
    """One rewrite pass: ``match`` finds, ``apply`` edits, ``report`` says what was done."""

    name = ""

    def match(self, ctx) -> list:
        """What this pass would change in ``ctx.model``; no edits."""
        raise NotImplementedError

    def apply(self, ctx, matches) -> bool:
        """Edits ``ctx.model`` for ``matches`` (from ``match``); whether the graph changed."""
        raise NotImplementedError

    def check(self, ctx) -> list[str]:
        """What this pass established that must still hold (debug mode checks it after this pass
        and every later one): one line per violation."""
        return []

    def report(self, matches, changed) -> PassResult:
        return PassResult(self.name, changed, len(matches))

    def run(self, ctx) -> PassResult:
        matches = self.match(ctx)
        changed = bool(matches) and bool(self.apply(ctx, matches))
        ctx.model.invalidate()
        return self.report(matches, changed)


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

    A target is a folder under ``passes/`` whose ``__init__`` defines ``TARGET`` and is listed in
    ``graphopt.rewrite.targets.TARGETS``; ``rewrite_model`` knows no target by name.
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
    # A note for each tf_keras layer owning a converted table (what load_model + fit does with it).
    tf_keras_note: str = ""

    @property
    def keeps_object_graph(self) -> bool:
        return self.rewrite_object_graph is not None
