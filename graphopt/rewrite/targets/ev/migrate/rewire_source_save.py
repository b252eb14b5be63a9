"""Rewire the Saver's save to graphopt's layout, and drop the slot tables' entries and nodes.

Pattern (top-level TF1 ``save/…`` or a SavedModel's ``__inference__traced_save`` function):
    SaveV2(prefix, [K-keys, K-values, S-keys, S-values, …], …, export:0, export:1, slot:0, slot:1, …)
        -> SaveV2(prefix, [K-keys, K-values, …, K-freqs, K-versions], …,
                  GraphoptEvExport(T):0, :1, …, :2, :3)
K is a served table's checkpoint key, S a slot table's. Where the saved rows come in as function
arguments (a SavedModel's save function), K-freqs and K-versions are zeros of the keys' shape (a
TFRA table keeps neither). DeepRec's saves already name all four. The slot tables' exports and
handles go once nothing reads them; their rows stay in the checkpoint as K-slot-<name>.
"""

from graphopt.ev import contract
from graphopt.graph import meta_graphs as mg_lib
from graphopt.graph import nodes
from graphopt.rewrite.passes import Pass
from graphopt.rewrite.passes.saver_entries import entry_strings, set_entry_names
from graphopt.rewrite.targets.ev import builders as ev


class RewireSourceSave(Pass):
    name = "rewire-source-save"

    def match(self, ctx):
        mains = {t.checkpoint_key for t in ctx.plan.tables}
        slots = {t.checkpoint_key for t in ctx.plan.slots}
        out = []
        for body in ctx.model.bodies.values():
            for node in body.nodes():
                if node.op != "SaveV2":
                    continue
                names = entry_strings(body, body.data_inputs(node)[1])
                add = [k for k in mains if f"{k}-keys" in names and f"{k}-freqs" not in names]
                drop = [i for i, n in enumerate(names) if n.rsplit("-", 1)[0] in slots]
                if add or drop:
                    out.append((body.name, node.name, add, drop))
        return out

    def apply(self, ctx, matches):
        for body_name, save_name, add, drop in matches:
            body = ctx.model.body(body_name)
            save = body.node(save_name)
            data = body.data_inputs(save)
            names, slices = entry_strings(body, data[1]), entry_strings(body, data[2])
            tensors = [str(r) for r in data[3:]]
            dtypes = list(nodes.attr_value(save, "dtypes"))
            for i in drop:
                ctx.disconnected.add((body.name, data[3 + i].node))
            keep = [i for i in range(len(names)) if i not in set(drop)]
            names, slices = [names[i] for i in keep], [slices[i] for i in keep]
            tensors, dtypes = [tensors[i] for i in keep], [dtypes[i] for i in keep]
            hashed = {t.checkpoint_key for t in ctx.plan.tables if t.hashed}
            for key in sorted(add):
                keys = data[3 + [*entry_strings(body, data[1])].index(f"{key}-keys")]
                if key in hashed:  # GraphoptEvExport's keys: the strings' collisionless keys
                    dtypes[names.index(f"{key}-keys")] = nodes.dtype_enum(contract.KEY_DTYPE)
                producer = body.node(keys.node)
                if producer is not None and producer.op == contract.EXPORT.name:
                    extra = [str(body.op_output(producer.name, j)) for j in (2, 3)]
                else:
                    zeros = body.add_op(
                        "ZerosLike",
                        f"{save_name}/{key}-freqs",
                        [keys],
                        {"T": (nodes.dtype_enum(contract.KEY_DTYPE), "type")},
                    )
                    ref = body.output_ref(zeros, 0, "y") if body.is_function else body.op_output(zeros, 0)
                    extra = [str(ref)] * 2
                names += [f"{key}-freqs", f"{key}-versions"]
                slices += ["", ""]
                tensors += extra
                dtypes += [nodes.dtype_enum(contract.KEY_DTYPE)] * 2
            save = body.node(save_name)
            head = [str(r) for r in body.data_inputs(save)[:3]]
            nodes.set_inputs(save, head + tensors + nodes.control_inputs(save))
            nodes.set_attr(save, "dtypes", dtypes, "list(type)")
            set_entry_names(ctx, body, save, names, slices)
        self._drop_slot_tables(ctx)
        return bool(matches) or bool(ctx.plan.slots)

    def _drop_slot_tables(self, ctx):
        """The slot tables' exports and handles, once nothing reads them (every body)."""
        slot_handles = {t.name for t in ctx.plan.slots}
        mg_lib.drop_collection_nodes(ctx.model.meta_graph, slot_handles)
        for table in ctx.plan.slots:
            for op in sorted(table.ops, key=lambda o: o.role == "handle"):
                body = ctx.model.bodies.get(op.body)
                node = body.node(op.node) if body is not None else None
                if node is None or contract.is_ev_op(node.op):
                    continue
                old = nodes.clone(node)
                if body.consumers(node.name) or body.return_uses(node.name):
                    # Still passed to a function (a SavedModel's save/restore call): an empty table
                    # stands in, so that no call changes its arguments.
                    if op.role == "handle":
                        new = ev.handle(node.name, "", "", table.dim, node.device)
                    else:
                        new = ev.export(node.name, body.data_inputs(node)[0], table.dim, node.device)
                    body.replace_node(node.name, new)
                    ctx.replaced(body.name, old, new, table, self.name)
                    continue
                ctx.replaced(body.name, old, None, table, self.name)
                body.remove_nodes([node.name])

    def check(self, ctx):
        return [f"{b or 'graph'}/{s}: save entries not in graphopt's layout" for b, s, *_ in self.match(ctx)]
