"""``rewrite_model``: read a model, run the passes, convert the checkpoint, write the result atomically."""

import concurrent.futures
import dataclasses
import json
import os
from collections.abc import Callable
from typing import Any

from graphopt import checkpoint, model_io
from graphopt.analysis.id_chains import plan_migrations
from graphopt.analysis.tables import GatherLeftAlone, detect
from graphopt.checkpoint import compress
from graphopt.errors import ModelError
from graphopt.ev import contract
from graphopt.graph import io, keras_metadata, meta_graphs, nodes, object_graphs
from graphopt.graph.model import ModelGraph
from graphopt.output import check_output_dir, staged_output
from graphopt.rewrite import tf_keras_layers
from graphopt.rewrite.inspection import node_counts, summarize_reasons
from graphopt.rewrite.pipeline import PassResult, run_passes
from graphopt.rewrite.plan import RewriteContext, RewritePlan
from graphopt.rewrite.target import (
    COLLISIONLESS,
    COMPRESSED_PARTITIONS,
    COMPRESSED_ROWS,
    TF_KERAS_TRAINING,
)
from graphopt.rewrite.targets import TARGETS
from graphopt.rewrite.tensorboard import write_tensorboard


@dataclasses.dataclass
class RewriteReport:
    """What a rewrite did (or, with dry_run, would do)."""

    source: str
    output: str | None
    plan: RewritePlan
    passes: list[PassResult]
    nodes_before: dict[str, int]
    nodes_after: dict[str, int]
    bytes_converted: int = 0
    wrote: bool = False
    dry_run: bool = False
    verification: Any = None  # what ``verify`` returned for the staged output, when given
    manifest: list[dict] = dataclasses.field(default_factory=list)
    tensorboard: list[str] = dataclasses.field(default_factory=list)
    revived_layers: list[str] = dataclasses.field(default_factory=list)  # tf_keras layers without config
    tf_keras_layers: list = dataclasses.field(default_factory=list)  # tf_keras_layers.TableLayer
    left_alone: list[GatherLeftAlone] = dataclasses.field(default_factory=list)  # gathers of no table

    @property
    def why_nothing(self) -> str | None:
        """Why the plan holds no table, the most frequent reasons summarised (None when it holds some)."""
        if self.plan.tables:
            return None
        if self.plan.skipped:
            reasons = summarize_reasons([r for _, r in self.plan.skipped])
            return (
                f"every table of {self.source} is skipped ({reasons}); widen --include/--exclude/--min-rows"
            )
        if not self.left_alone:
            return f"{self.source} gathers from no variable: there is no embedding table to rewrite"
        reasons = summarize_reasons([g.reason for g in self.left_alone])
        return (
            f"no embedding table found in {self.source}; gathers left alone: {reasons} "
            f"(graphopt inspect {self.source} lists them all)"
        )

    @property
    def tables_converted(self) -> int:
        return len(self.plan.tables) if self.wrote else 0

    @property
    def message(self) -> str:
        if not self.plan.tables:
            return "no embedding table to rewrite; nothing written"
        if self.dry_run:
            return f"dry run: would rewrite {len(self.plan.tables)} table(s); nothing written"
        if self.verification is not None and not self.verification.passed:
            return f"verification failed: {self.output} was not written (an existing one is kept)"
        return f"rewrote {self.tables_converted} table(s) into {self.output}"

    def to_dict(self) -> dict:
        return {
            "source": self.source,
            "output": self.output if self.wrote else None,
            "wrote": self.wrote,
            "dry_run": self.dry_run,
            "message": self.message,
            **({"why_nothing": self.why_nothing} if self.why_nothing else {}),
            "plan": self.plan.to_dict(),
            "passes": [dataclasses.asdict(p) for p in self.passes],
            "nodes_before": self.nodes_before,
            "nodes_after": self.nodes_after,
            "tables_converted": self.tables_converted,
            "bytes_converted": self.bytes_converted,
            "tensorboard": self.tensorboard,
        }


def _check_output(src, out, overwrite):
    src_abs, out_abs = os.path.realpath(src), os.path.realpath(out)
    src_root = src_abs if os.path.isdir(src_abs) else os.path.dirname(src_abs)
    if out_abs == src_root or out_abs.startswith(src_root + os.sep) or src_root.startswith(out_abs + os.sep):
        raise ModelError(f"output {out} overlaps the input {src}; choose an output outside the model")
    check_output_dir(out, overwrite)


def rewrite_model(
    src,
    out,
    include: str | None = None,
    exclude: str | None = None,
    min_rows: int = 0,
    dry_run: bool = False,
    overwrite: bool = False,
    tags=None,
    tensorboard: str | None = None,
    progress: Callable | None = None,
    debug: bool = False,
    on_plan: Callable | None = None,
    target: str = "ev",
    verify: Callable | None = None,
    collisionless: bool = False,
    row_dtype: str = "float32",
) -> RewriteReport:
    """Rewrites the embedding tables of model ``src`` onto EmbeddingVariables and writes ``out``.

    ``target="stock"`` keeps the rows dense and maps keys to rows with TensorFlow's built-in hash
    tables instead, so the output needs no op library (docs/rewrite.md, "Stock-ops output").

    ``on_plan(plan)`` is called once the tables are chosen, ``progress(done, table)`` after each
    table's checkpoint data is converted. ``verify(path)`` checks the complete output before it
    is moved into place (its result, e.g. a ValidationReport, goes to ``report.verification``);
    when the result's ``.passed`` is false, the output is discarded and ``out`` is left as it was.
    Nothing is written when no table is selected or with ``dry_run``; ``src`` is never modified.

    ``collisionless=True`` also keys each table whose id mapping can migrate by raw ids, with the
    original bucket as fallback (docs/rewrite.md, "Collisionless migration"); the plan's
    ``migrations`` say which tables did and why the others did not.

    ``row_dtype`` (int8, float16, bfloat16) compresses the serving tables' rows
    (graphopt.checkpoint.compress): a table the graph trains stays float32 (a plan note says so);
    a table whose rows are not float32, or hold NaN/Inf, is refused before anything is written.
    """
    compress.check_row_dtype(row_dtype)
    if target not in TARGETS:
        raise ModelError(f"unknown target {target!r}; choose one of {', '.join(TARGETS)}")
    spec = TARGETS[target]
    if collisionless and COLLISIONLESS not in spec.supports:
        raise ModelError(
            f"--collisionless needs a target whose tables take new keys (ev); --target {target} "
            "keeps the model's own id mapping: drop --collisionless or use --target ev"
        )
    spec.load_ops()
    src, out = os.fspath(src), os.fspath(out) if out is not None else None
    source = model_io.read_model(src, tags)
    if not dry_run and out is not None:
        _check_output(src, out, overwrite)  # before the plan and any work, once the input is known good
    model = ModelGraph(nodes.clone(source.meta_graph))
    before = node_counts(model)
    found = detect(model)
    plan = spec.restrict_plan(RewritePlan.select(found.tables, include, exclude, min_rows))
    if collisionless:
        plan.migrations = plan_migrations(model, plan.tables, src if source.kind == "saved_model" else None)
    layers = []
    if source.kind == "saved_model" and spec.keeps_object_graph and TF_KERAS_TRAINING in spec.supports:
        layers = tf_keras_layers.plan(source, plan.tables)
        plan.notes += tf_keras_layers.notes(layers)
    plan.notes += _set_row_dtypes(plan, row_dtype, spec)
    report = RewriteReport(
        src,
        out,
        plan,
        [],
        before,
        dict(before),
        dry_run=dry_run,
        left_alone=found.left_alone,
        tf_keras_layers=layers,
    )
    if on_plan is not None:
        on_plan(plan)
    if not plan.tables:
        return report
    ctx = RewriteContext(model, plan)
    if not spec.keeps_object_graph:
        # No TF2 object stands for the converted tables: the output is TF1-format, and the
        # functions only the object graph used go with it.
        meta_graphs.drop_object_graph(model.meta_graph)
    report.passes = run_passes(ctx, spec.passes(), debug=debug)
    compressed = any(t.row_dtype != contract.ROW_DTYPE for t in plan.tables)
    meta_graphs.add_op_defs(
        model.meta_graph, spec.op_types + (spec.compressed_op_types if compressed else ())
    )
    report.nodes_after = node_counts(model)
    report.manifest = [r.to_dict() for r in ctx.replacements]
    if tensorboard:
        report.tensorboard = [
            write_tensorboard(source.meta_graph, tensorboard, run_name="before"),
            write_tensorboard(model.meta_graph, tensorboard, run_name="after"),
        ]
    if dry_run:
        return report
    try:
        report.bytes_converted = _write(source, model.meta_graph, plan, out, report, progress, spec, verify)
    except _VerificationFailed:
        return report
    report.wrote = True
    return report


def _set_row_dtypes(plan, row_dtype, spec) -> list[str]:
    """Gives each chosen table its row dtype; the notes of tables kept float32 (they train)."""
    notes = []
    for t in plan.tables:
        if row_dtype == "float32":
            t.row_dtype = row_dtype
        elif COMPRESSED_ROWS not in spec.supports:
            raise compress.CompressionError(
                f"--target {spec.name} cannot store compressed rows; use --target ev or stock, or "
                "--row-dtype float32"
            )
        elif len(t.handles) > 1 and COMPRESSED_PARTITIONS not in spec.supports:
            raise compress.CompressionError(
                f"table {t.name} is partitioned ({len(t.handles)} parts); --target {spec.name} "
                "compresses unpartitioned tables only: use --target ev, or --exclude it"
            )
        elif t.dtype != "float32":
            raise compress.CompressionError(
                f"table {t.name} has {t.dtype} rows; --row-dtype {row_dtype} compresses float32 "
                "tables only (rewrite it with --row-dtype float32, or --exclude it)"
            )
        elif t.training is not None:
            t.row_dtype = "float32"
            notes.append(
                f"table {t.name}: trained in this graph, kept float32 (compressed rows do not train)"
            )
        else:
            t.row_dtype = row_dtype
    return notes


class _VerificationFailed(Exception):
    """The staged output failed ``verify``: leave the block so the staged files are removed."""


def _rewritten_object_graph(spec, source, meta_graph, plan, scratch_dir, layers=()):
    """(serialized checkpoint object graph, ids of the objects owning a table) after the target
    turned the tables' objects into its own.

    None where the model has no object graph or a table is partitioned (no TF2 object stands for a
    partitioned table); the output then drops its object graph and loads through the TF1 path.
    """
    if not meta_graphs.has_object_graph(meta_graph) or any(len(t.handles) > 1 for t in plan.tables):
        return None
    source_graph = object_graphs.read_object_graph(source.checkpoint_prefix)
    ckpt_graph = spec.rewrite_object_graph(meta_graph, source_graph, plan.tables, scratch_dir=scratch_dir)
    if ckpt_graph is None:
        return None
    og = object_graphs.saved_object_graph(meta_graph)
    for node_id, name, dtype, trainable, key, _ in tf_keras_layers.layer_weights(layers):
        object_graphs.append_variable(og, ckpt_graph, node_id, name, dtype, trainable, key)
    table_ids = [
        i for t in plan.tables for i in object_graphs.objects_saved_under(source_graph, t.checkpoint_key)
    ]
    return io.serialize(ckpt_graph), keras_metadata.layers_owning(meta_graph, table_ids)


def _table_identities(source, meta_graph, tables) -> list[str]:
    """Each table's stable identity (contract.TABLE_IDENTITY): the variable's own name in a TF2
    SavedModel's object graph (a Keras export's ``movieId_embedding/embeddings``, which the export
    of the model trained on from its .keras file names alike), else the variable's name."""
    names = {}
    if source.kind == "saved_model" and meta_graphs.has_object_graph(meta_graph):
        names = object_graphs.variable_names(
            object_graphs.saved_object_graph(meta_graph),
            object_graphs.read_object_graph(source.checkpoint_prefix),
        )
    return [names.get(t.checkpoint_key or "", t.name) for t in tables]


def _write(source, meta_graph, plan, out, report, progress, spec, verify=None):
    # Before the object-graph rewrite below edits the meta graph in place.
    identities = _table_identities(source, meta_graph, plan.tables)
    with staged_output(out, overwrite=True) as tmp:  # rewrite_model already refused an unwanted overwrite
        os.makedirs(tmp)
        with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
            # Saving the EmbeddingVariable template for the object graph costs TensorFlow time, the
            # checkpoint's data files cost disk time: do both at once. The conversion asks for the
            # object graph only when it writes the checkpoint's new shard, after the file copies.
            object_graph = None
            if source.kind == "saved_model" and spec.keeps_object_graph:
                # Scratch files go in the stage folder, so they share the output's fate.
                object_graph = pool.submit(
                    _rewritten_object_graph,
                    spec,
                    source,
                    meta_graph,
                    plan,
                    os.path.dirname(tmp),
                    report.tf_keras_layers,
                )
            if source.kind == "saved_model":
                dst_prefix = os.path.join(tmp, io.VARIABLES_DIR, io.VARIABLES_PREFIX)
            else:
                base = os.path.basename(source.checkpoint_prefix)
                dst_prefix = os.path.join(tmp, base)
            layout = spec.checkpoint_layout(plan.tables)
            # The optimizer slots of the tables tf_keras revives as DynamicEmbedding.
            layout.added.update(tf_keras_layers.slot_tensors(report.tf_keras_layers))
            converted = checkpoint.convert_checkpoint(
                source.checkpoint_prefix,
                dst_prefix,
                layout.conversions,
                progress,
                object_graph=(lambda: (object_graph.result() or (None,))[0])
                if object_graph is not None
                else None,
                added=layout.added,
                renamed=layout.renamed,
            )
            if not layout.conversions and progress is not None:
                # A target that converts no table's rows (stock) still shows each table done.
                for i, table in enumerate(plan.tables):
                    progress(i + 1, table)
            # The meta graph is written last: the object-graph rewrite edits it in place.
            if source.kind == "saved_model":
                keep = object_graph is not None and object_graph.result() is not None
                io.write_saved_model(source, meta_graph, tmp, keep_object_graph=keep)
                if keep:  # tf_keras models: load_model revives the table layers from the SavedModel
                    report.revived_layers = keras_metadata.write_without_configs(
                        source.path,
                        tmp,
                        object_graph.result()[1],
                        revived=tf_keras_layers.revived_configs(report.tf_keras_layers),
                    )
            else:
                io.write_meta_graph(meta_graph, os.path.join(tmp, os.path.basename(source.path)), source.text)
                io.write_checkpoint_state(tmp, base)
        with open(os.path.join(tmp, contract.MANIFEST), "w") as f:
            json.dump(
                {
                    "source": os.path.abspath(source.path),
                    "tables": [
                        {**t.to_dict(), contract.TABLE_IDENTITY: identity}
                        for t, identity in zip(plan.tables, identities, strict=True)
                    ],
                    "replaced": report.manifest,
                },
                f,
                indent=1,
            )
        if verify is not None:
            report.verification = verify(tmp)
            if not report.verification.passed:
                raise _VerificationFailed
    return converted
