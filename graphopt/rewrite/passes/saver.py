"""Rewire the Saver: tables are saved and restored as KEY-keys/-values/-freqs/-versions.

Pattern (top-level TF1 ``save/…`` or the ``__inference__traced_save/restore`` functions):
    SaveV2(prefix, names, slices, …, ReadVariableOp(table), …)
        -> SaveV2(prefix, names', slices', …, GraphoptEvExport(table):keys, …, :values, :freqs, :versions)
    AssignVariableOp(table, Identity(RestoreV2(prefix, names, slices):j))
        -> GraphoptEvImport(table, RestoreV2(prefix, names', slices'):j, :n, :n+1, :n+2)
Entry j keeps its position (it becomes KEY-keys) and the other three are appended, so no other
output of RestoreV2 moves. Parts 1.. of a partitioned table lose their SaveV2 entries; their
RestoreV2 entries are kept but read KEY-freqs so that the outputs keep their positions.
"""

import itertools

import numpy as np

from graphopt.graph import io
from graphopt.rewrite import ev_nodes
from graphopt.rewrite.plan import CHECKPOINT_SUFFIXES

INT64 = "int64"
FLOAT = "float32"


def _uses(ctx, kind, node_field):
    out = [(t, u) for t in ctx.plan.tables for u in t.uses if u.kind == kind]
    key = lambda tu: (tu[1].body, getattr(tu[1], node_field))  # noqa: E731
    return [(k, sorted(g, key=lambda tu: tu[1].part)) for k, g in itertools.groupby(sorted(out, key=key), key)]


def _strings(body, ref):
    node = body.node(ref.node)
    return [v.decode() if isinstance(v, bytes) else str(v) for v in io.const_value(node).reshape(-1)]


def _set_names(ctx, body, node, names, slices):
    """Points inputs 1 and 2 (tensor_names, shape_and_slices) of a Save/Restore node at new Consts."""
    data = body.data_inputs(node)
    for pos, values, base in ((1, names, "tensor_names"), (2, slices, "shape_and_slices")):
        ctx.disconnected.add((body.name, data[pos].node))
        ref = ev_nodes.const(body, f"{node.name}/{base}_ev", np.array(values, dtype=object), node.device)
        body.set_input(node.name, pos, ref)


class RewireSave:
    name = "rewire-save"

    def match(self, ctx):
        return _uses(ctx, "save", "save_node")

    def apply(self, ctx, matches):
        for (body_name, save_name), uses in matches:
            body = ctx.model.body(body_name)
            save = body.node(save_name)
            data = body.data_inputs(save)
            names, slices = _strings(body, data[1]), _strings(body, data[2])
            tensors = [str(r) for r in data[3:]]
            dtypes = list(save.attr["dtypes"].list.type)
            drop = set()
            for table, use in uses:
                j = use.save_entry
                ctx.disconnected.add((body.name, data[3 + j].node))
                if use.part != 0:
                    drop.add(j)
                    continue
                read = body.node(use.node)
                # A ref variable is saved directly; a resource through its ReadVariableOp.
                handle = body.output_ref(read.name) if read.op == "VariableV2" else body.data_inputs(read)[0]
                export = ev_nodes.export(body.unique_name(f"{read.name}/GraphoptEvExport"),
                                         handle, table.dim, save.device)
                body.add_node(export)
                outs = [str(ev_nodes.output(body, export.name, arg, i))
                        for i, arg in enumerate(ev_nodes.EXPORT_OUTPUTS)]
                keys = [f"{table.checkpoint_key}-{s}" for s in CHECKPOINT_SUFFIXES]
                types = [io.dtype_enum(t) for t in (INT64, FLOAT, INT64, INT64)]
                names[j], slices[j], tensors[j], dtypes[j] = keys[0], "", outs[0], types[0]
                names += keys[1:]
                slices += [""] * 3
                tensors += outs[1:]
                dtypes += types[1:]
                if read.op != "VariableV2":
                    ctx.replaced(body.name, read, export, table, self.name)
            keep = [i for i in range(len(names)) if i not in drop]
            names, slices = [names[i] for i in keep], [slices[i] for i in keep]
            tensors, dtypes = [tensors[i] for i in keep], [dtypes[i] for i in keep]
            save = body.node(save_name)
            ctrl = ev_nodes.control_inputs(save)
            head = [str(r) for r in body.data_inputs(save)[:3]]
            del save.input[:]
            save.input.extend(head + tensors + ctrl)
            io.set_attr(save, "dtypes", dtypes, "list(type)")
            _set_names(ctx, body, save, names, slices)
        return bool(matches)


class RewireRestore:
    name = "rewire-restore"

    def match(self, ctx):
        return _uses(ctx, "restore", "restore_node")

    def apply(self, ctx, matches):
        for (body_name, restore_name), uses in matches:
            body = ctx.model.body(body_name)
            restore = body.node(restore_name)
            data = body.data_inputs(restore)
            names, slices = _strings(body, data[1]), _strings(body, data[2])
            dtypes = list(restore.attr["dtypes"].list.type)
            first_import = {}
            for table, use in uses:
                j = use.restore_entry
                assign = io.clone(body.node(use.node))
                ctx.disconnected.add((body.name, body.data_inputs(assign)[1].node))
                keys = [f"{table.checkpoint_key}-{s}" for s in CHECKPOINT_SUFFIXES]
                if use.part != 0:
                    # Keep the position of the output; nothing reads it once the assign is gone.
                    names[j], slices[j], dtypes[j] = keys[2], "", io.dtype_enum(INT64)
                    target = first_import.get(table.name)
                    if target:
                        body.redirect_control(assign.name, target)
                    body.remove_nodes([assign.name])
                    ctx.replaced(body.name, assign, None, table, self.name)
                    continue
                n = len(names)
                names[j], slices[j], dtypes[j] = keys[0], "", io.dtype_enum(INT64)
                names += keys[1:]
                slices += [""] * 3
                dtypes += [io.dtype_enum(t) for t in (FLOAT, INT64, INT64)]
                outs = [body.output_ref(restore_name, k, "tensors") for k in (j, n, n + 1, n + 2)]
                new = ev_nodes.import_(assign.name, body.data_inputs(assign)[0], *outs, table.dim,
                                       assign.device, ev_nodes.control_inputs(assign))
                body.replace_node(assign.name, new)
                first_import[table.name] = assign.name
                ctx.replaced(body.name, assign, new, table, self.name)
            restore = body.node(restore_name)
            io.set_attr(restore, "dtypes", dtypes, "list(type)")
            if "_output_shapes" in restore.attr:  # recorded for the old outputs; TF re-infers it
                del restore.attr["_output_shapes"]
            _set_names(ctx, body, restore, names, slices)
        return bool(matches)
