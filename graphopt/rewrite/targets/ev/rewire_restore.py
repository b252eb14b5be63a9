"""Rewire the Saver's restore: tables are restored from KEY-keys/-values/-freqs/-versions.

Pattern (top-level TF1 ``save/…`` or the ``__inference__traced_restore`` function):
    AssignVariableOp(table, Identity(RestoreV2(prefix, names, slices):j))
        -> GraphoptEvImport(table, RestoreV2(prefix, names', slices'):j, :n, :n+1, :n+2)
Entry j keeps its position (it becomes KEY-keys) and the other three are appended, so no other
output of RestoreV2 moves. The RestoreV2 entries of parts 1.. of a partitioned table are kept but
read KEY-freqs so that the outputs keep their positions. A trained table (TF1 training graph) is
restored with GraphoptEvImportWithSlots, its slots from the slot variables' entries renamed
KEY-slot-<name> (their assigns go in drop-slot-variables).
"""

import numpy as np

from graphopt.ev import contract
from graphopt.graph import nodes
from graphopt.rewrite.passes import Pass
from graphopt.rewrite.passes.saver_entries import entry_strings, saver_uses, set_entry_names
from graphopt.rewrite.targets.ev import builders as ev


class RewireRestore(Pass):
    name = "rewire-restore"

    def match(self, ctx):
        return saver_uses(ctx, "restore", "restore_node")

    def apply(self, ctx, matches):
        for (body_name, restore_name), uses in matches:
            body = ctx.model.body(body_name)
            restore = body.node(restore_name)
            data = body.data_inputs(restore)
            names, slices = entry_strings(body, data[1]), entry_strings(body, data[2])
            dtypes = body.attr(restore_name, "dtypes")
            first_import = {}
            for table, use in uses:
                j = use.restore_entry
                assign = nodes.clone(body.node(use.node))
                ctx.disconnected.add((body.name, body.data_inputs(assign)[1].node))
                keys = contract.table_tensor_names(table.checkpoint_key)
                if use.part != 0:
                    # Keep the position of the output; nothing reads it once the assign is gone.
                    names[j], slices[j], dtypes[j] = keys[2], "", nodes.dtype_enum(contract.KEY_DTYPE)
                    target = first_import.get(table.name)
                    if target:
                        body.redirect_control(assign.name, target)
                    body.remove_nodes([assign.name])
                    ctx.replaced(body.name, assign, None, table, self.name)
                    continue
                n = len(names)
                names[j], slices[j], dtypes[j] = keys[0], "", nodes.dtype_enum(contract.KEY_DTYPE)
                names += keys[1:]
                slices += [""] * 3
                dtypes += [nodes.dtype_enum(t) for t in contract.TABLE_DTYPES[1:]]
                outs = [body.output_ref(restore_name, k, "tensors") for k in (j, n, n + 1, n + 2)]
                slots = table.training.slots if table.training else []
                if slots:
                    for slot in slots:
                        names[slot.restore_entry] = contract.slot_tensor_name(table.checkpoint_key, slot.name)
                        slices[slot.restore_entry] = ""
                    slot_outs = [body.output_ref(restore_name, s.restore_entry, "tensors") for s in slots]
                    # Admission counters: none in a converted dense table.
                    pending = [
                        body.add_const(
                            f"{assign.name}/pending_{what}", np.zeros([0], np.int64), assign.device
                        )
                        for what in ("keys", "counts")
                    ]
                    new = ev.import_with_slots(
                        assign.name,
                        body.data_inputs(assign)[0],
                        *outs,
                        slot_outs,
                        pending,
                        table.dim,
                        table.training.optimizer,
                        assign.device,
                        nodes.control_inputs(assign),
                    )
                else:
                    new = ev.import_(
                        assign.name,
                        body.data_inputs(assign)[0],
                        *outs,
                        table.dim,
                        assign.device,
                        nodes.control_inputs(assign),
                    )
                body.replace_node(assign.name, new)
                first_import[table.name] = assign.name
                ctx.replaced(body.name, assign, new, table, self.name)
            body.set_attr(restore_name, "dtypes", dtypes, "list(type)")
            body.remove_attr(restore_name, "_output_shapes")  # recorded for the old outputs; TF re-infers it
            set_entry_names(ctx, body, body.node(restore_name), names, slices)
        return bool(matches)
