"""Rewriting embedding tables of a trained model onto EmbeddingVariables.

Public API (see docs/rewrite.md): ``inspect_model``, ``rewrite_model``, ``write_tensorboard``,
and the records they return: ``ModelInspection``, ``EmbeddingTable``, ``LookupSite``,
``GatherLeftAlone``, ``RewriteReport``.
"""

from graphopt.rewrite.detect import EmbeddingTable, GatherLeftAlone, LookupSite
from graphopt.rewrite.inspection import ModelInspection, inspect_model
from graphopt.rewrite.tensorboard import write_tensorboard

__all__ = ["EmbeddingTable", "GatherLeftAlone", "LookupSite", "ModelInspection", "inspect_model",
           "write_tensorboard"]
