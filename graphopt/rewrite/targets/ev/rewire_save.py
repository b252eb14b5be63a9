"""Rewire the Saver's save: tables are saved as KEY-keys/-values/-freqs/-versions.

Pattern (top-level TF1 ``save/…`` or the ``__inference__traced_save`` function):
    SaveV2(prefix, names, slices, …, ReadVariableOp(table), …)
        -> SaveV2(prefix, names', slices', …,
                  GraphoptEvExport(table):keys, …, :values, :freqs, :versions)
Entry j keeps its position (it becomes KEY-keys) and the other three are appended. Parts 1.. of
a partitioned table lose their SaveV2 entries. A trained table (TF1 training graph) is exported
with GraphoptEvExportWithSlots, and each slot variable's entry becomes KEY-slot-<name>.
"""

from graphopt.ev import contract
from graphopt.graph import nodes
from graphopt.rewrite.passes import Pass
from graphopt.rewrite.passes.saver_entries import entry_strings, saver_uses, set_entry_names
from graphopt.rewrite.targets.ev import builders as ev


class RewireSave(Pass):
    name = "rewire-save"

    def match(self, ctx):
        return saver_uses(ctx, "save", "save_node")

    def apply(self, ctx, matches):
        for (body_name, save_name), uses in matches:
            body = ctx.model.body(body_name)
            save = body.node(save_name)
            data = body.data_inputs(save)
            names, slices = entry_strings(body, data[1]), entry_strings(body, data[2])
            tensors = [str(r) for r in data[3:]]
            dtypes = body.attr(save_name, "dtypes")
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
                slots = table.training.slots if table.training else []
                if slots:
                    name = body.unique_name(f"{read.name}/{contract.EXPORT_WITH_SLOTS.name}")
                    export = ev.export_with_slots(name, handle, table.dim, len(slots), save.device)
                else:
                    export = ev.export(
                        body.unique_name(f"{read.name}/{contract.EXPORT.name}"),
                        handle,
                        table.dim,
                        save.device,
                    )
                body.add_node(export)
                for k, slot in enumerate(slots):
                    s = slot.save_entry
                    ctx.disconnected.add((body.name, data[3 + s].node))
                    names[s], slices[s] = contract.slot_tensor_name(table.checkpoint_key, slot.name), ""
                    tensors[s] = str(body.op_output(export.name, 4 + k))
                    dtypes[s] = nodes.dtype_enum(contract.ROW_DTYPE)
                outs = [str(body.op_output(export.name, i)) for i in range(len(contract.EXPORT.outputs))]
                keys = contract.table_tensor_names(table.checkpoint_key)
                types = [nodes.dtype_enum(t) for t in contract.TABLE_DTYPES]
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
            head = [str(r) for r in body.data_inputs(body.node(save_name))[:3]]
            body.set_inputs(save_name, head + tensors + body.control_inputs(save_name))
            body.set_attr(save_name, "dtypes", dtypes, "list(type)")
            set_entry_names(ctx, body, body.node(save_name), names, slices)
        return bool(matches)
