"""The two models validate compares, each read once and analysed once: the ``ModelPair``.

Every check is a function of the pair (``structure.STRUCTURAL_CHECKS``); the input generator
reads its vocabularies and input uses from the pair's original graph. Nothing here rereads a
model or rebuilds its graph model.
"""

import dataclasses
import functools

from graphopt.errors import GraphoptError
from graphopt.ev import contract
from graphopt.graph.io import ModelSource
from graphopt.graph.model import ModelGraph


@dataclasses.dataclass
class ModelPair:
    """The original and the rewritten model (as read from disk and as graph models) and what
    the analysis of the original found: its embedding tables and the inputs it hashes itself."""

    original: ModelSource
    rewritten: ModelSource
    tags: tuple
    original_graph: ModelGraph = dataclasses.field(init=False)
    rewritten_graph: ModelGraph = dataclasses.field(init=False)
    # graphopt.analysis.tables.TableCandidate of the original, and its signature inputs ("sig:key")
    # that reach tables only through an integer hash or FloorMod (any integer is a valid id).
    tables: list = dataclasses.field(default_factory=list)
    folded: set[str] = dataclasses.field(default_factory=set)
    # Why the original's tables could not be read (None: they were).
    tables_unknown: str | None = None

    def __post_init__(self):
        self.original_graph = ModelGraph(self.original.meta_graph)
        self.rewritten_graph = ModelGraph(self.rewritten.meta_graph)

    @property
    def original_dir(self) -> str:
        return self.original.path

    @property
    def rewritten_dir(self) -> str:
        return self.rewritten.path

    @functools.cached_property
    def ev_ops(self) -> list[str]:
        """The EmbeddingVariable op types the rewritten model uses (graph and function bodies)."""
        return sorted(op for op in self.rewritten_graph.op_uses() if contract.is_ev_op(op))

    def analyse(self) -> "ModelPair":
        """Finds the original's tables and folded inputs (graphopt.analysis); a model the analysis
        cannot read leaves them empty, with the reason in ``tables_unknown``."""
        from graphopt.analysis.id_chains import folded_inputs, plan_migrations
        from graphopt.analysis.tables import detect

        try:
            self.tables = detect(self.original_graph).tables
            model_dir = self.original.path if self.original.kind == "saved_model" else None
            self.folded = folded_inputs(plan_migrations(self.original_graph, self.tables, model_dir))
        except GraphoptError as exc:
            self.tables, self.folded, self.tables_unknown = [], set(), str(exc)
        return self
