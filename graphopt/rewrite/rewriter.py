"""``rewrite_model``: read a model, run the passes, convert the checkpoint, write the result atomically."""

import concurrent.futures
import dataclasses
import json
import os
from typing import Callable, Dict, List, Optional

from graphopt.errors import ModelError
from graphopt.graph import io
from graphopt.graph.model import ModelGraph
from graphopt.output import check_output_dir, staged_output
from graphopt.rewrite.detect import detect
from graphopt.rewrite.inspection import node_counts
from graphopt.rewrite.object_graph import rewrite_object_graph
from graphopt.rewrite.pipeline import PassResult, run_passes, stock_passes
from graphopt.rewrite.plan import EV_OPS, RewriteContext, RewritePlan
from graphopt.rewrite import stock_nodes
from graphopt.rewrite.tensorboard import write_tensorboard

MANIFEST = "graphopt_manifest.json"
TARGETS = ("ev", "stock")


@dataclasses.dataclass
class RewriteReport:
    """What a rewrite did (or, with dry_run, would do)."""

    source: str
    output: Optional[str]
    plan: RewritePlan
    passes: List[PassResult]
    nodes_before: Dict[str, int]
    nodes_after: Dict[str, int]
    bytes_converted: int = 0
    wrote: bool = False
    dry_run: bool = False
    manifest: List[dict] = dataclasses.field(default_factory=list)
    tensorboard: List[str] = dataclasses.field(default_factory=list)

    @property
    def tables_converted(self) -> int:
        return len(self.plan.tables) if self.wrote else 0

    @property
    def message(self) -> str:
        if not self.plan.tables:
            return "no embedding table to rewrite; nothing written"
        if self.dry_run:
            return f"dry run: would rewrite {len(self.plan.tables)} table(s); nothing written"
        return f"rewrote {self.tables_converted} table(s) into {self.output}"

    def to_dict(self) -> dict:
        return {
            "source": self.source, "output": self.output if self.wrote else None,
            "wrote": self.wrote, "dry_run": self.dry_run, "message": self.message,
            "plan": self.plan.to_dict(),
            "passes": [dataclasses.asdict(p) for p in self.passes],
            "nodes_before": self.nodes_before, "nodes_after": self.nodes_after,
            "tables_converted": self.tables_converted, "bytes_converted": self.bytes_converted,
            "tensorboard": self.tensorboard,
        }


def _check_output(src, out, overwrite):
    src_abs, out_abs = os.path.realpath(src), os.path.realpath(out)
    src_root = src_abs if os.path.isdir(src_abs) else os.path.dirname(src_abs)
    if out_abs == src_root or out_abs.startswith(src_root + os.sep) or src_root.startswith(out_abs + os.sep):
        raise ModelError(f"output {out} overlaps the input {src}; choose an output outside the model")
    check_output_dir(out, overwrite)


def rewrite_model(src, out, include: Optional[str] = None, exclude: Optional[str] = None,
                  min_rows: int = 0, dry_run: bool = False, overwrite: bool = False, tags=None,
                  tensorboard: Optional[str] = None, progress: Optional[Callable] = None,
                  debug: bool = False, on_plan: Optional[Callable] = None, target: str = "ev") -> RewriteReport:
    """Rewrites the embedding tables of model ``src`` onto EmbeddingVariables and writes ``out``.

    ``target="stock"`` keeps the rows dense and maps keys to rows with TensorFlow's built-in hash
    tables instead, so the output needs no op library (docs/rewrite.md, "Stock-ops output").

    ``on_plan(plan)`` is called once the tables are chosen, ``progress(done, table)`` after each
    table's checkpoint data is converted. Nothing
    is written when no table is selected or with ``dry_run``; ``src`` is never modified.
    """
    if target not in TARGETS:
        raise ModelError(f"unknown target {target!r}; choose one of {', '.join(TARGETS)}")
    src, out = os.fspath(src), os.fspath(out) if out is not None else None
    source = io.read_model(src, tags)
    if not dry_run and out is not None:
        _check_output(src, out, overwrite)  # before the plan and any work, once the input is known good
    model = ModelGraph(io.clone(source.meta_graph))
    before = node_counts(model)
    plan = RewritePlan.select(detect(model).tables, include, exclude, min_rows)
    if target == "stock":
        plan = stock_nodes.restrict_plan(plan)
    report = RewriteReport(src, out, plan, [], before, dict(before), dry_run=dry_run)
    if on_plan is not None:
        on_plan(plan)
    if not plan.tables:
        return report
    ctx = RewriteContext(model, plan)
    if target == "stock":
        # No TF2 object stands for a hash table: the output is TF1-format, and the functions only
        # the object graph used go with it.
        model.meta_graph.ClearField("object_graph_def")
        report.passes = run_passes(ctx, stock_passes(), debug=debug)
        io.add_op_defs(model.meta_graph, stock_nodes.STOCK_OPS)
    else:
        report.passes = run_passes(ctx, debug=debug)
        io.add_op_defs(model.meta_graph, EV_OPS)
    report.nodes_after = node_counts(model)
    report.manifest = [r.to_dict() for r in ctx.replacements]
    if tensorboard:
        report.tensorboard = [write_tensorboard(source.meta_graph, tensorboard, run_name="before"),
                              write_tensorboard(model.meta_graph, tensorboard, run_name="after")]
    if dry_run:
        return report
    report.bytes_converted = _write(source, model.meta_graph, plan, out, report, progress, target)
    report.wrote = True
    return report


def _rewritten_object_graph(source, meta_graph, plan, scratch_dir):
    """Serialized checkpoint object graph after turning the tables' objects into EmbeddingVariables.

    None where the model has no object graph or a table is partitioned (no TF2 object stands for a
    partitioned table); the output then drops its object graph and loads through the TF1 path.
    """
    if not meta_graph.HasField("object_graph_def") or any(len(t.handles) > 1 for t in plan.tables):
        return None
    ckpt_graph = rewrite_object_graph(meta_graph, io.read_object_graph(source.checkpoint_prefix), plan.tables,
                                      scratch_dir=scratch_dir)
    return io.serialize(ckpt_graph) if ckpt_graph is not None else None


def _write(source, meta_graph, plan, out, report, progress, target):
    with staged_output(out, overwrite=True) as tmp:  # rewrite_model already refused an unwanted overwrite
        os.makedirs(tmp)
        with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
            # Saving the EmbeddingVariable template for the object graph costs TensorFlow time, the
            # checkpoint's data files cost disk time: do both at once. The conversion asks for the
            # object graph only when it writes the checkpoint's new shard, after the file copies.
            object_graph = None
            if source.kind == "saved_model" and target == "ev":
                # Scratch files go in the stage folder, so they share the output's fate.
                object_graph = pool.submit(_rewritten_object_graph, source, meta_graph, plan,
                                           os.path.dirname(tmp))
            if source.kind == "saved_model":
                dst_prefix = os.path.join(tmp, io.VARIABLES_DIR, io.VARIABLES_PREFIX)
            else:
                base = os.path.basename(source.checkpoint_prefix)
                dst_prefix = os.path.join(tmp, base)
            if target == "stock":
                converted = io.convert_checkpoint(source.checkpoint_prefix, dst_prefix, [], None,
                                                  added=stock_nodes.checkpoint_content(plan.tables))
                for i, table in enumerate(plan.tables if progress is not None else ()):
                    progress(i + 1, table)
            else:
                conversions = [io.TableConversion(t.checkpoint_key, t.checkpoint_key, t.row_ids)
                               for t in plan.tables]
                converted = io.convert_checkpoint(
                    source.checkpoint_prefix, dst_prefix, conversions, progress,
                    object_graph=object_graph.result if object_graph is not None else None)
            # The meta graph is written last: the object-graph rewrite edits it in place.
            if source.kind == "saved_model":
                keep = object_graph is not None and object_graph.result() is not None
                io.write_saved_model(source, meta_graph, tmp, keep_object_graph=keep)
            else:
                io.write_meta_graph(meta_graph, os.path.join(tmp, os.path.basename(source.path)), source.text)
                io.write_checkpoint_state(tmp, base)
        with open(os.path.join(tmp, MANIFEST), "w") as f:
            json.dump({"source": os.path.abspath(source.path), "tables": [t.to_dict() for t in plan.tables],
                       "replaced": report.manifest}, f, indent=1)
    return converted
