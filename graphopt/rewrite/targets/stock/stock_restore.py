"""Restore each table's hash table with the Saver (stock target).

Pattern (top-level TF1 ``save/…`` or the ``__inference__traced_restore`` function):
    AssignVariableOp(table, RestoreV2(prefix, names, slices):j)   (part 0's restore)
        -> unchanged; RestoreV2 gets KEY-stock-keys / KEY-stock-values appended and
           LookupTableImportV2(hash_table, RestoreV2:n, RestoreV2:n+1) runs wherever the assign
           is waited for (control edges, function control outputs)
The dense table's own entries are untouched.
"""

from graphopt.rewrite.targets.stock import builders
from graphopt.rewrite.targets.stock.hash_table_entries import AppendHashTableEntries


class StockRestore(AppendHashTableEntries):
    name = "stock-restore"
    use_kind, node_field = "restore", "restore_node"

    def add_entry(self, body, restore, table, use, first):
        handle = self.tables.handle(body, table, restore.device)
        keys, rows = (body.output_ref(restore.name, k, "tensors") for k in (first, first + 1))
        imp = body.add_op(
            builders.TABLE_IMPORT_OP,
            f"{table.name}/stock_import",
            [handle, keys, rows],
            builders.table_types(),
            restore.device,
        )
        builders.run_with(body, [use.node], imp)  # runs wherever the restore is waited for
