"""The stock-ops target (``--target stock``): rows stay dense, keys go through built-in hash tables.

The output needs no op library (docs/rewrite.md, "Stock-ops output"). A TF2 SavedModel keeps its
object graph, with a built-in hash table object added per table (object_graph.py), so
``tf.saved_model.load`` runs it the original's way; TF1 formats and partitioned tables stay TF1.
"""

from graphopt.rewrite.passes import CheckpointLayout, Target
from graphopt.rewrite.passes.remove_dead_nodes import RemoveDeadNodes
from graphopt.rewrite.passes.stock.nodes import STOCK_OPS, StockTables, checkpoint_content, restrict_plan
from graphopt.rewrite.passes.stock.object_graph import rewrite_object_graph
from graphopt.rewrite.passes.stock.stock_lookups import StockLookups
from graphopt.rewrite.passes.stock.stock_restore import StockRestore
from graphopt.rewrite.passes.stock.stock_save import StockSave


def passes(tables: StockTables | None = None):
    """The stock rewrite, in order; the passes share one StockTables (the hash tables' names)."""
    tables = tables or StockTables()
    return [StockLookups(tables), StockSave(tables), StockRestore(tables), RemoveDeadNodes()]


def checkpoint_layout(tables) -> CheckpointLayout:
    """The dense tables stay; each table's key -> row map is added beside it."""
    return CheckpointLayout(added=checkpoint_content(tables))


TARGET = Target(
    name="stock",
    description="built-in hash table + dense rows",
    passes=passes,
    op_types=STOCK_OPS,
    checkpoint_layout=checkpoint_layout,
    rewrite_object_graph=rewrite_object_graph,
    restrict_plan=restrict_plan,
)
