"""Rewriting embedding tables of a trained model onto EmbeddingVariables.

Public API (see docs/rewrite.md): ``inspect_model``, ``rewrite_model``, ``write_tensorboard``,
the records they return (``ModelInspection``, ``TableCandidate``, ``LookupSite``,
``GatherLeftAlone``, ``RewriteReport``), and ``RewritePlan`` / ``default_passes`` / ``run_passes``
for callers that drive the pass pipeline themselves.
"""

from graphopt.analysis.tables import GatherLeftAlone, LookupSite, TableCandidate, detect
from graphopt.rewrite.inspection import ModelInspection, inspect_model
from graphopt.rewrite.pipeline import PassResult, run_passes
from graphopt.rewrite.plan import RewriteContext, RewritePlan
from graphopt.rewrite.rewriter import RewriteReport, rewrite_model
from graphopt.rewrite.targets import default_passes
from graphopt.rewrite.tensorboard import write_tensorboard

__all__ = [
    "TableCandidate",
    "GatherLeftAlone",
    "LookupSite",
    "ModelInspection",
    "PassResult",
    "RewriteContext",
    "RewritePlan",
    "RewriteReport",
    "default_passes",
    "detect",
    "inspect_model",
    "rewrite_model",
    "run_passes",
    "write_tensorboard",
]
