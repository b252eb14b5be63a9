"""``inspect_model``: what a model holds (signatures, tables, gathers left alone), without changing it."""

import dataclasses

from graphopt import model_io
from graphopt.analysis.id_chains import TableMigration, plan_migrations
from graphopt.analysis.tables import GatherLeftAlone, TableCandidate, detect
from graphopt.graph import meta_graphs
from graphopt.graph.model import ModelGraph


@dataclasses.dataclass
class ModelInspection:
    """The result of inspecting one model."""

    path: str
    kind: str  # "saved_model" or "meta_graph"
    tags: list[str]
    signatures: dict[str, dict]  # name -> {"inputs": {key: {dtype, shape}}, "outputs": [keys], "method"}
    tables: list[TableCandidate]
    left_alone: list[GatherLeftAlone]
    nodes: dict[str, int]  # body name ("graph" for the top level) -> node count
    # Per table: its id-mapping chain and whether collisionless migration is possible.
    migrations: list[TableMigration] = dataclasses.field(default_factory=list)

    def table(self, name: str) -> TableCandidate | None:
        return next((t for t in self.tables if t.name == name), None)

    def migration(self, name: str) -> TableMigration | None:
        return next((m for m in self.migrations if m.table.name == name), None)

    def to_dict(self) -> dict:
        return {
            "path": self.path,
            "kind": self.kind,
            "tags": self.tags,
            "signatures": self.signatures,
            "tables": [t.to_dict() for t in self.tables],
            "gathers_left_alone": [g.to_dict() for g in self.left_alone],
            "nodes": self.nodes,
            "collisionless": [m.to_dict() for m in self.migrations],
        }


def node_counts(model: ModelGraph) -> dict[str, int]:
    return {(name or "graph"): len(body) for name, body in model.bodies.items()}


def signatures_of(meta_graph) -> dict[str, dict]:
    specs = meta_graphs.signature_input_specs(meta_graph)
    out = {}
    for name, sig in meta_graphs.signature_tensors(meta_graph).items():
        if name.startswith("__saved_model_"):  # the init/train op plumbing, not a signature to call
            continue
        out[name] = {
            "method": sig["method"],
            "inputs": {
                k: {
                    "dtype": specs[name].get(k, (None, None))[0],
                    "shape": specs[name].get(k, (None, None))[1],
                }
                for k in sig["inputs"]
            },
            "outputs": sorted(sig["outputs"]),
        }
    return out


def inspect_model(path, tags=None) -> ModelInspection:
    """Reads a model and reports its signatures, embedding tables and the gathers left alone."""
    source = model_io.read_model(path, tags)
    model = ModelGraph(source.meta_graph)
    found = detect(model)
    return ModelInspection(
        path=str(path),
        kind=source.kind,
        tags=source.tags,
        signatures=signatures_of(source.meta_graph),
        tables=found.tables,
        left_alone=found.left_alone,
        nodes=node_counts(model),
        migrations=plan_migrations(
            model, found.tables, source.path if source.kind == "saved_model" else None
        ),
    )
