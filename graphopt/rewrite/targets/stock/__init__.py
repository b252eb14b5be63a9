"""The stock-ops target (``--target stock``): rows stay dense, keys go through built-in hash tables.

The output needs no op library (docs/rewrite.md, "Stock-ops output"). A TF2 SavedModel keeps its
object graph, with a built-in hash table object added per table (object_graph.py), so
``tf.saved_model.load`` runs it the original's way; TF1 formats and partitioned tables stay TF1.
"""

from graphopt.checkpoint import TableConversion
from graphopt.rewrite.passes.remove_dead_nodes import RemoveDeadNodes
from graphopt.rewrite.target import COMPRESSED_ROWS, CheckpointLayout, Target
from graphopt.rewrite.targets.stock.builders import STOCK_OPS, StockTables, checkpoint_content
from graphopt.rewrite.targets.stock.compress_rows import (
    DECODE_OPS,
    CompressStockRows,
    RemoveCompressedTableReads,
)
from graphopt.rewrite.targets.stock.object_graph import rewrite_object_graph
from graphopt.rewrite.targets.stock.stock_lookups import StockLookups
from graphopt.rewrite.targets.stock.stock_restore import StockRestore
from graphopt.rewrite.targets.stock.stock_save import StockSave


def passes(tables: StockTables | None = None):
    """The stock rewrite, in order; the passes share one StockTables (the hash tables' names)."""
    tables = tables or StockTables()
    return [
        StockLookups(tables),
        StockSave(tables),
        StockRestore(tables),
        RemoveCompressedTableReads(),  # only with rewrite --row-dtype
        CompressStockRows(),
        RemoveDeadNodes(),
    ]


def _key_map(table):
    return table.rows, table.partition_strategy, tuple(table.partition_rows)


def restrict_plan(plan):
    """Skips tables that share a lookup function with a table whose key -> row map differs.

    A shared function body holds one lookup for all the tables passed through it, so it can only
    consult one hash table; that is right only when all of them map the same keys to the same rows.
    """
    by_handle = {h: t for t in plan.tables for h in t.handles}
    for t in list(plan.tables):
        others = {by_handle[h].name: by_handle[h] for h in t.shares_arguments_with if h in by_handle}
        differ = sorted(n for n, o in others.items() if _key_map(o) != _key_map(t))
        if differ:
            plan.tables.remove(t)
            plan.skipped.append(
                (
                    t,
                    f"shares a lookup function with {differ[0]}, which has other rows; "
                    "the stock target can look up only one key -> row map there",
                )
            )
    return plan


def checkpoint_layout(tables) -> CheckpointLayout:
    """The dense tables stay (a compressed table's tensor becomes its stored rows, rewrite
    --row-dtype); each table's key -> row map is added beside it."""
    return CheckpointLayout(
        conversions=[
            TableConversion(t.checkpoint_key, t.checkpoint_key, t.row_ids, t.row_dtype, t.name, fused=True)
            for t in tables
            if t.row_dtype != "float32"
        ],
        added=checkpoint_content(tables),
    )


TARGET = Target(
    name="stock",
    description="built-in hash table + dense rows",
    passes=passes,
    op_types=STOCK_OPS,
    checkpoint_layout=checkpoint_layout,
    rewrite_object_graph=rewrite_object_graph,
    restrict_plan=restrict_plan,
    supports=frozenset({COMPRESSED_ROWS}),
    compressed_op_types=DECODE_OPS,
)
