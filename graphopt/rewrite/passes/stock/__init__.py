"""The stock-ops target (``--target stock``): rows stay dense, keys go through built-in hash tables.

The output needs no op library (docs/rewrite.md, "Stock-ops output"). No TF2 object stands for a
hash table, so the output is TF1-format: its object graph, and the functions only it used, go.
"""

from graphopt.rewrite.passes import CheckpointLayout, Target
from graphopt.checkpoint import TableConversion
from graphopt.rewrite.passes.remove_dead_nodes import RemoveDeadNodes
from graphopt.rewrite.passes.stock.compress_rows import DECODE_OPS, CompressStockRows, RemoveCompressedTableReads
from graphopt.rewrite.passes.stock.nodes import STOCK_OPS, StockTables, checkpoint_content, restrict_plan
from graphopt.rewrite.passes.stock.stock_lookups import StockLookups
from graphopt.rewrite.passes.stock.stock_restore import StockRestore
from graphopt.rewrite.passes.stock.stock_save import StockSave


def passes(tables: StockTables | None = None):
    """The stock rewrite, in order; the passes share one StockTables (the hash tables' names)."""
    tables = tables or StockTables()
    return [
        StockLookups(tables),
        StockSave(tables), StockRestore(tables),
        RemoveCompressedTableReads(),
        CompressStockRows(),
        RemoveDeadNodes(),
    ]


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
    op_types=STOCK_OPS + DECODE_OPS,
    checkpoint_layout=checkpoint_layout,
    restrict_plan=restrict_plan,
)
