"""What the stock target's saver passes share: appending the hash tables' entries to a Saver node.

The dense table's own entries are untouched: the rows are saved and restored as before; each
table's key -> row map is added as KEY-stock-keys and KEY-stock-values (stock_save.py,
stock_restore.py).
"""

from graphopt.graph import nodes
from graphopt.rewrite.passes import Pass
from graphopt.rewrite.passes.saver_entries import entry_strings, saver_uses, set_entry_names
from graphopt.rewrite.targets.stock import builders


def _part0(uses):
    return [(t, u) for t, u in uses if u.part == 0]


class AppendHashTableEntries(Pass):
    """Appends the hash tables' entries to each SaveV2 / RestoreV2 whose Saver handles their table.

    Subclasses say which Saver node (``use_kind``, ``node_field``) and wire the new entries
    (``add_entry``).
    """

    use_kind = node_field = ""

    def __init__(self, tables: builders.StockTables):
        self.tables = tables

    def match(self, ctx):
        """((body, SaveV2 or RestoreV2 node), [(table, use of part 0)]) for each Saver node."""
        groups = [(k, _part0(uses)) for k, uses in saver_uses(ctx, self.use_kind, self.node_field)]
        return [(k, uses) for k, uses in groups if uses]

    def apply(self, ctx, matches):
        for (body_name, node_name), uses in matches:
            body = ctx.model.body(body_name)
            data = body.data_inputs(body.node(node_name))
            names, slices = entry_strings(body, data[1]), entry_strings(body, data[2])
            dtypes = body.attr_value(node_name, "dtypes")
            for table, use in uses:
                names += builders.checkpoint_names(table)
                slices += ["", ""]
                dtypes += [nodes.dtype_enum(builders.INT64)] * 2
                self.add_entry(body, body.node(node_name), table, use, len(names) - 2)
            body.set_attr(node_name, "dtypes", dtypes, "list(type)")
            body.remove_attr(node_name, "_output_shapes")  # recorded for the old outputs; TF re-infers it
            set_entry_names(ctx, body, body.node(node_name), names, slices)
        return bool(matches)

    def add_entry(self, body, node, table, use, first):
        """Wires entries ``first`` and ``first + 1`` (KEY-stock-keys, KEY-stock-values) of ``node``."""
        raise NotImplementedError
