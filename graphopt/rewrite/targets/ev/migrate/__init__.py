"""``migrate_model``: rewrite a TFRA or DeepRec model onto graphopt's EmbeddingVariables.

The model is read as protos (its TFRA / DeepRec ops need not be registered), analysed
(``graphopt.analysis.sources``), its ops replaced by graphopt's (the passes beside this module), its
checkpoint converted to graphopt's layout (``graphopt.checkpoint.migrate``), and the output written
atomically: a TF1-format SavedModel for a SavedModel, a .meta + checkpoint for a TF1 model. It loads
in stock TensorFlow with only graphopt's op library. docs/migration.md.
"""

import dataclasses
import json
import os

from graphopt.analysis.sources import SYSTEMS, SourceAnalysis, analyze
from graphopt.analysis.sources.tables import STRING_KEYS
from graphopt.checkpoint.migrate import migrate_checkpoint
from graphopt.errors import ModelError
from graphopt.ev import contract
from graphopt.graph import io, nodes
from graphopt.graph import meta_graphs as mg_lib
from graphopt.graph.model import ModelGraph
from graphopt.model_io import read_model
from graphopt.output import staged_output
from graphopt.rewrite.inspection import node_counts
from graphopt.rewrite.pipeline import PassResult, run_passes
from graphopt.rewrite.targets.ev.migrate.plan import OP_TYPES, MigrationContext, MigrationPlan, passes

MANIFEST = contract.MANIFEST


@dataclasses.dataclass
class MigrationReport:
    source: str
    output: str | None
    analysis: SourceAnalysis
    passes: list[PassResult] = dataclasses.field(default_factory=list)
    notes: list[str] = dataclasses.field(default_factory=list)
    nodes_before: dict = dataclasses.field(default_factory=dict)
    nodes_after: dict = dataclasses.field(default_factory=dict)
    bytes_converted: int = 0
    wrote: bool = False
    dry_run: bool = False

    @property
    def message(self) -> str:
        served = self.analysis.served
        what = SYSTEMS[self.analysis.system].TITLE if self.analysis.system else ""
        if self.dry_run:
            return f"dry run: would migrate {len(served)} {what} table(s); nothing written"
        return f"migrated {len(served)} {what} table(s) into {self.output}"

    def to_dict(self) -> dict:
        return {
            "source": self.source,
            "output": self.output if self.wrote else None,
            "wrote": self.wrote,
            "dry_run": self.dry_run,
            "message": self.message,
            "analysis": self.analysis.to_dict(),
            "passes": [dataclasses.asdict(p) for p in self.passes],
            "notes": self.notes,
            "nodes_before": self.nodes_before,
            "nodes_after": self.nodes_after,
            "bytes_converted": self.bytes_converted,
        }


def _collisionless_keys(strings):
    from graphopt.ops.fallback import collisionless_key

    return collisionless_key(strings).numpy()


def refuse_unconvertible(analysis: SourceAnalysis):
    """ModelError (one line, naming the table and the fix) for a model the migration cannot take."""
    for table in analysis.tables:
        if table.problem:
            raise ModelError(f"{analysis.system} table {table.name}: {table.problem}")
    for table in analysis.tables:
        if table.unknown:
            raise ModelError(
                f"{analysis.system} table {table.name} is used by {table.reason}; graphopt cannot "
                "rewrite it: remove that op from the model (or export the model without it)"
            )
    if analysis.unknown_ops:
        op = analysis.unknown_ops[0]
        raise ModelError(
            f"{analysis.system} op {op.op} at {op.where} is not one graphopt knows ({op.reason}); "
            "export the model without it"
        )


def is_source_model(meta_graph) -> bool:
    from graphopt.analysis.sources import system_of

    return system_of(ModelGraph(meta_graph)) is not None


def migrate_model(
    src,
    out,
    dry_run=False,
    overwrite=False,
    tags=None,
    progress=None,
    debug=False,
    on_analysis=None,
    collisionless=False,
):
    """Migrates the TFRA / DeepRec model ``src`` into ``out`` (atomically; ``src`` untouched).

    ``collisionless=True`` keys a string-keyed table by each string's collisionless key (its
    Fingerprint64, ``graphopt.ops.fallback.collisionless_key``), in the checkpoint and in front
    of every lookup; without it such a table is refused."""
    from graphopt.checkpoint.index import checkpoint_tensors
    from graphopt.ops.library import load_library
    from graphopt.rewrite.rewriter import _check_output

    load_library()
    src, out = os.fspath(src), os.fspath(out) if out is not None else None
    source = read_model(src, tags)
    if not dry_run and out is not None:
        _check_output(src, out, overwrite)
    model = ModelGraph(nodes.clone(source.meta_graph))
    analysis = analyze(model)
    if collisionless:
        for table in analysis.tables:
            if table.key_dtype == "string" and table.problem == STRING_KEYS:
                table.problem, table.hashed = "", True
    if analysis.system is None:
        raise ModelError(f"{src} holds no TFRA or DeepRec table; use graphopt rewrite for static tables")
    refuse_unconvertible(analysis)
    if on_analysis is not None:
        on_analysis(analysis)
    report = MigrationReport(src, out, analysis, nodes_before=node_counts(model), dry_run=dry_run)
    infos = checkpoint_tensors(source.checkpoint_prefix)
    from graphopt.checkpoint.migrate import check_table_tensors

    for table in analysis.tables:
        check_table_tensors(source.checkpoint_prefix, infos, table)  # bad input before any work
    plan = MigrationPlan(analysis, analysis.served, [t for t in analysis.tables if t.slot_of])
    for t in plan.tables:
        if t.default_note:
            plan.notes.append(f"table {t.name}: {t.default_note}")
        if t.ttl:
            plan.notes.append(
                f"table {t.name}: steps_to_live {t.ttl} -> TTL eviction: call "
                f"EmbeddingVariable.evict(step, ttl={t.ttl}) ({contract.EVICT.name}) in training"
            )
        if t.min_count > 1:
            plan.notes.append(
                f"table {t.name}: filter_freq {t.min_count} -> admission min_count={t.min_count}"
            )
        if t.hashed:
            plan.notes.append(
                f"table {t.name}: string keys keyed by their collisionless key (Fingerprint64), "
                "as --collisionless keys string ids; the lookups hash the ids the same way"
            )
        if t.slots:
            plan.notes.append(
                f"table {t.name}: {t.optimizer} slots "
                + ", ".join(f"{s.name} -> {t.checkpoint_key}-slot-{s.slot_name}" for s in t.slots)
            )
    ctx = MigrationContext(model, plan)  # type: ignore[arg-type]
    if source.kind == "saved_model":
        mg_lib.drop_object_graph(model.meta_graph)
    report.passes = run_passes(ctx, passes(), debug=debug)
    left = [op for op in model.unregistered_ops() if SYSTEMS[analysis.system].owns(op)]
    if left:
        raise ModelError(
            f"{analysis.system} op {left[0]} is still in the model after the migration (it is on no "
            "table graphopt rewrote); export the model without it"
        )
    mg_lib.add_op_defs(model.meta_graph, OP_TYPES)
    report.nodes_after = node_counts(model)
    report.notes = plan.notes
    if dry_run:
        return report
    with staged_output(out, overwrite=True) as tmp:
        os.makedirs(tmp)
        if source.kind == "saved_model":
            dst = os.path.join(tmp, io.VARIABLES_DIR, io.VARIABLES_PREFIX)
        else:
            base = os.path.basename(source.checkpoint_prefix)
            dst = os.path.join(tmp, base)
        report.bytes_converted = migrate_checkpoint(
            source.checkpoint_prefix, dst, plan.tables, progress, hash_keys=_collisionless_keys
        )
        if source.kind == "saved_model":
            io.write_saved_model(source, model.meta_graph, tmp, keep_object_graph=False)
        else:
            io.write_meta_graph(
                model.meta_graph, os.path.join(tmp, os.path.basename(source.path)), source.text
            )
            io.write_checkpoint_state(tmp, base)
        with open(os.path.join(tmp, MANIFEST), "w") as f:
            json.dump(
                {
                    "source": os.path.abspath(source.path),
                    "system": analysis.system,
                    "tables": [t.to_dict() for t in analysis.tables],
                    "notes": plan.notes,
                    "replaced": [r.to_dict() for r in ctx.replacements],
                },
                f,
                indent=1,
            )
    report.wrote = True
    return report
