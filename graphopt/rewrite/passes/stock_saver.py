"""Save and restore each table's hash table with the Saver (stock target).

Pattern (top-level TF1 ``save/…`` or the ``__inference__traced_save/restore`` functions):
    SaveV2(prefix, names, slices, …)          where the table (part 0) is saved
        -> SaveV2(prefix, names + [KEY-stock_keys, KEY-stock_rows], …,
                  LookupTableExportV2(hash_table):keys, :values)
    AssignVariableOp(table, RestoreV2(prefix, names, slices):j)   (part 0's restore)
        -> unchanged; RestoreV2 gets KEY-stock_keys / KEY-stock_rows appended and
           LookupTableImportV2(hash_table, RestoreV2:n, RestoreV2:n+1) runs wherever the assign
           is waited for (control edges, function control outputs)
The dense table's own entries are untouched: the rows are saved and restored as before.
"""

from graphopt.graph import io
from graphopt.rewrite import stock_nodes as sn
from graphopt.rewrite.passes.saver import _set_names, _strings, _uses


def _part0(uses):
    return [(t, u) for t, u in uses if u.part == 0]


class _SaverPass:
    """Appends the hash tables' entries to each SaveV2 / RestoreV2 whose Saver handles their table."""

    use_kind = node_field = ""

    def __init__(self, tables: sn.StockTables):
        self.tables = tables

    def match(self, ctx):
        """((body, SaveV2 or RestoreV2 node), [(table, use of part 0)]) for each Saver node."""
        groups = [(k, _part0(uses)) for k, uses in _uses(ctx, self.use_kind, self.node_field)]
        return [(k, uses) for k, uses in groups if uses]

    def apply(self, ctx, matches):
        for (body_name, node_name), uses in matches:
            body = ctx.model.body(body_name)
            node = io.clone(body.node(node_name))
            data = body.data_inputs(node)
            names, slices = _strings(body, data[1]), _strings(body, data[2])
            dtypes = list(node.attr["dtypes"].list.type)
            for table, use in uses:
                names += sn.checkpoint_names(table)
                slices += ["", ""]
                dtypes += [io.dtype_enum(sn.INT64)] * 2
                self.add_entry(body, node, table, use, len(names) - 2)
            io.set_attr(node, "dtypes", dtypes, "list(type)")
            if "_output_shapes" in node.attr:  # recorded for the old outputs; TF re-infers it
                del node.attr["_output_shapes"]
            body.replace_node(node_name, node)
            _set_names(ctx, body, node, names, slices)
        return bool(matches)


class StockSave(_SaverPass):
    name = "stock-save"
    use_kind, node_field = "save", "save_node"

    def add_entry(self, body, save, table, use, first):
        handle = self.tables.handle(body, table, save.device)
        export = sn.add(body, sn.EXPORT_OP, f"{table.name}/stock_export", [handle],
                        {"Tkeys": (io.dtype_enum(sn.INT64), "type"),
                         "Tvalues": (io.dtype_enum(sn.INT64), "type")}, save.device)
        # A NodeDef lists its data inputs before its control inputs: the new tensors go between.
        data = 3 + first
        inputs = list(save.input)
        inputs[data:data] = [str(sn.output(body, export, 0)), str(sn.output(body, export, 1))]
        del save.input[:]
        save.input.extend(inputs)


class StockRestore(_SaverPass):
    name = "stock-restore"
    use_kind, node_field = "restore", "restore_node"

    def add_entry(self, body, restore, table, use, first):
        handle = self.tables.handle(body, table, restore.device)
        keys, rows = (body.output_ref(restore.name, k, "tensors") for k in (first, first + 1))
        imp = sn.add(body, sn.IMPORT_OP, f"{table.name}/stock_import", [handle, keys, rows],
                     sn.table_types(), restore.device)
        sn.run_with(body, [use.node], imp)  # runs wherever the restore is waited for
