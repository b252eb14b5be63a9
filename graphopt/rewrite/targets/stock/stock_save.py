"""Save each table's hash table with the Saver (stock target).

Pattern (top-level TF1 ``save/…`` or the ``__inference__traced_save`` function):
    SaveV2(prefix, names, slices, …)          where the table (part 0) is saved
        -> SaveV2(prefix, names + [KEY-stock-keys, KEY-stock-values], …,
                  LookupTableExportV2(hash_table):keys, :values)
The dense table's own entries are untouched.
"""

from graphopt.graph import nodes
from graphopt.rewrite.targets.stock import builders
from graphopt.rewrite.targets.stock.hash_table_entries import AppendHashTableEntries


class StockSave(AppendHashTableEntries):
    name = "stock-save"
    use_kind, node_field = "save", "save_node"

    def add_entry(self, body, save, table, use, first):
        handle = self.tables.handle(body, table, save.device)
        attrs = {
            "Tkeys": (nodes.dtype_enum(builders.INT64), "type"),
            "Tvalues": (nodes.dtype_enum(builders.INT64), "type"),
        }
        export = body.add_op(
            builders.TABLE_EXPORT_OP, f"{table.name}/stock_export", [handle], attrs, save.device
        )
        # A NodeDef lists its data inputs before its control inputs: the new tensors go between.
        body.insert_inputs(save.name, 3 + first, [body.op_output(export, 0), body.op_output(export, 1)])
