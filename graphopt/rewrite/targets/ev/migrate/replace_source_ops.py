"""Replace each op of a source table by the graphopt op of the same role.

Pattern (graph or function body; T a TFRA / DeepRec table, K its checkpoint key):
    TFRA>CuckooHashTableOfTensors / KvVarHandleOp  -> GraphoptEvHandleOp(dim, default_value, min_count)
    TFRA>…Find(T, keys, default) / KvResourceGather[V1](T, keys, default[, counts])
                                                           -> GraphoptEvFind(T, keys)
    TFRA>…Insert(T, keys, rows)                            -> GraphoptEvInsert(T, keys, rows)
    TFRA>…Export(T) (keys, values)                         -> GraphoptEvExport(T) (keys, values, …)
    KvResourceExport(T) (keys, values, versions, freqs)    -> GraphoptEvExport(T), outputs 2 and 3 swapped
    TFRA>…Import(T, R:j, R:j+1)                            -> GraphoptEvImport(T, R:j, R:j+1, R:n, R:n+1),
                                                              R (RestoreV2) also reading K-freqs, K-versions
    KvResourceImportV2(prefix, T, primary, value, names, empty_key)
                                                           -> GraphoptEvImport(T, RestoreV2(prefix,
                                                              K-keys, K-values, K-freqs, K-versions))
    TFRA>…Size(T) / TFRA>…Remove(T, keys)                  -> GraphoptEvSize(T) / GraphoptEvRemove(T, keys)
    InitializeKvVariableOp / KvVarIsInitializedOp          -> NoOp / Const(true)
A slot table's import goes (its RestoreV2 entries read the main table's tensors so that no output
of the RestoreV2 moves); its rows reach the main table's in-row slots through the checkpoint
(K-slot-<name>), its save entries and handle go in rewire-source-save.
"""

import numpy as np

from graphopt.ev import contract
from graphopt.graph import nodes
from graphopt.rewrite.passes import Pass
from graphopt.rewrite.passes.saver_entries import entry_strings, set_entry_names
from graphopt.rewrite.targets.ev import builders as ev

INSERT_OP, SIZE_OP, REMOVE_OP = contract.INSERT.name, contract.SIZE.name, contract.REMOVE.name


def _row_attrs(dim):
    return {"dim": (int(dim), "i"), "dtype": (nodes.dtype_enum(contract.ROW_DTYPE), "type")}


def _keys_attr(table):
    return {"Tkeys": (nodes.dtype_enum(table.key_dtype), "type")}


class ReplaceSourceOps(Pass):
    name = "replace-source-ops"

    def match(self, ctx):
        out = []
        for table in ctx.plan.tables + ctx.plan.slots:
            for op in table.ops:
                body = ctx.model.bodies.get(op.body)
                node = body.node(op.node) if body is not None else None
                if node is not None and node.op == op.op and op.role not in ("primary", "train"):
                    out.append((table, op))
        return out

    def apply(self, ctx, matches):
        self._restores = {}
        for table, op in matches:
            body = ctx.model.body(op.body)
            old = nodes.clone(body.node(op.node))
            if table.slot_of is not None:
                new = self._slot(ctx, body, table, op, old)
            else:
                new = getattr(self, f"_{op.role}")(ctx, body, table, old)
            if new is not None or table.slot_of is not None:
                ctx.replaced(body.name, old, new, table, self.name)
        for body_name, restore_name, names, slices, dtypes in self._restores.values():
            body = ctx.model.body(body_name)
            restore = body.node(restore_name)
            nodes.set_attr(restore, "dtypes", dtypes, "list(type)")
            nodes.remove_attr(restore, "_output_shapes")
            set_entry_names(ctx, body, restore, names, slices)
        return bool(matches)

    def check(self, ctx):
        return [
            f"{op.where} ({op.op}) is still in the model"
            for table, op in self.match(ctx)
            if op.role not in ("handle", "export") or table.slot_of is None
        ]

    # --- main tables -----------------------------------------------------------------------
    def _put(self, body, old, new):
        body.replace_node(old.name, new)
        return new

    def _handle(self, ctx, body, table, old):
        shared = nodes.attr_value(old, "shared_name") or b""
        container = nodes.attr_value(old, "container") or b""
        new = ev.handle(old.name, _text(shared), _text(container), table.dim, old.device)
        if table.default_value is not None:
            nodes.set_attr(new, "default_value", [float(v) for v in table.default_value], "list(float)")
        if table.min_count > 1:
            nodes.set_attr(new, "min_count", int(table.min_count), "i")
        return self._put(body, old, new)

    def _keys(self, body, table, old, ref):
        """The keys a lookup of ``table`` passes: its ids, or (hashed tables) their collisionless keys."""
        if not table.hashed:
            return ref
        name = body.add_op(
            contract.COLLISIONLESS_KEY.name,
            f"{old.name}/{contract.COLLISIONLESS_KEY.name}",
            [ref],
            {"Tids": (nodes.dtype_enum("string"), "type")},
            old.device,
        )
        return body.op_output(name, 0) if not body.is_function else body.output_ref(name, 0, "keys")

    def _key_attr(self, table):
        return {"Tkeys": (nodes.dtype_enum(contract.KEY_DTYPE if table.hashed else table.key_dtype), "type")}

    def _find(self, ctx, body, table, old):
        data = body.data_inputs(old)
        new = ev.find(
            old.name,
            data[0],
            self._keys(body, table, old, data[1]),
            nodes.dtype_enum(contract.KEY_DTYPE if table.hashed else table.key_dtype),
            table.dim,
            old.device,
            nodes.control_inputs(old),
        )
        return self._put(body, old, new)

    def _insert(self, ctx, body, table, old):
        data = body.data_inputs(old)
        new = nodes.make_node(
            INSERT_OP,
            old.name,
            [data[0], self._keys(body, table, old, data[1]), data[2]],
            {**self._key_attr(table), **_row_attrs(table.dim)},
            old.device,
            nodes.control_inputs(old),
        )
        return self._put(body, old, new)

    def _size(self, ctx, body, table, old):
        new = nodes.make_node(
            SIZE_OP, old.name, body.data_inputs(old)[:1], {}, old.device, nodes.control_inputs(old)
        )
        return self._put(body, old, new)

    def _remove(self, ctx, body, table, old):
        data = body.data_inputs(old)
        new = nodes.make_node(
            REMOVE_OP,
            old.name,
            [data[0], self._keys(body, table, old, data[1])],
            self._key_attr(table),
            old.device,
            nodes.control_inputs(old),
        )
        return self._put(body, old, new)

    def _initialize(self, ctx, body, table, old):
        return self._put(
            body, old, nodes.make_node("NoOp", old.name, (), {}, old.device, nodes.control_inputs(old))
        )

    def _is_initialized(self, ctx, body, table, old):
        new = nodes.const_node(old.name, np.array(True), old.device)
        return self._put(body, old, new)

    def _export(self, ctx, body, table, old):
        table_ref = body.data_inputs(old)[0]
        if table.system == "tfra":  # keys, values: the same outputs of GraphoptEvExport
            return self._put(body, old, ev.export(old.name, table_ref, table.dim, old.device))
        # DeepRec: keys, values, versions, freqs -> graphopt's keys, values, freqs, versions.
        name = body.unique_name(f"{old.name}/{contract.EXPORT.name}")
        new = ev.export(name, table_ref, table.dim, old.device)
        body.add_node(new)
        names = ("keys", "values", "versions", "freqs")
        for i, arg in enumerate(names):
            j = contract.EXPORT.outputs.index(arg)
            src = body.output_ref(old.name, 0 if body.is_function else i, arg)
            body.replace_uses(src, body.op_output(new.name, j))
        body.remove_nodes([old.name])
        return new

    def _restore_entries(self, body, restore_name):
        key = (body.name, restore_name)
        if key not in self._restores:
            restore = body.node(restore_name)
            data = body.data_inputs(restore)
            self._restores[key] = (
                body.name,
                restore_name,
                entry_strings(body, data[1]),
                entry_strings(body, data[2]),
                list(nodes.attr_value(restore, "dtypes")),
            )
        return self._restores[key]

    def _import(self, ctx, body, table, old):
        data = body.data_inputs(old)
        keys, values = data[1], data[2]
        restore = body.node(keys.node)
        if restore is not None and restore.op == "RestoreV2":
            _, _, names, slices, dtypes = self._restore_entries(body, restore.name)
            if table.hashed:  # the checkpoint's keys are the strings' collisionless keys now
                dtypes[keys.index or 0] = nodes.dtype_enum(contract.KEY_DTYPE)
            n = len(names)
            names += [f"{table.checkpoint_key}-freqs", f"{table.checkpoint_key}-versions"]
            slices += ["", ""]
            dtypes += [nodes.dtype_enum(contract.KEY_DTYPE)] * 2
            freqs = body.output_ref(restore.name, n, "tensors")
            versions = body.output_ref(restore.name, n + 1, "tensors")
        else:  # restored from a function's arguments: no freqs or versions to read
            zeros = body.add_op(
                "ZerosLike",
                f"{old.name}/zeros",
                [keys],
                {"T": (nodes.dtype_enum(contract.KEY_DTYPE), "type")},
            )
            freqs = versions = (
                body.op_output(zeros, 0) if not body.is_function else body.output_ref(zeros, 0, "y")
            )
        new = ev.import_(
            old.name, data[0], keys, values, freqs, versions, table.dim, old.device, nodes.control_inputs(old)
        )
        return self._put(body, old, new)

    def _restore(self, ctx, body, table, old):
        data = body.data_inputs(old)
        prefix, handle = data[0], data[1]
        key = table.checkpoint_key
        names = body.add_const(
            f"{old.name}/tensor_names",
            np.array([f"{key}-{s}" for s in contract.TABLE_TENSORS], dtype=object),
            old.device,
        )
        slices = body.add_const(f"{old.name}/shape_and_slices", np.array([""] * 4, dtype=object), old.device)
        restore = body.add_op(
            "RestoreV2",
            f"{old.name}/RestoreV2",
            [prefix, names, slices],
            {"dtypes": ([nodes.dtype_enum(t) for t in contract.TABLE_DTYPES], "list(type)")},
            old.device,
        )
        outs = [body.output_ref(restore, i, "tensors") for i in range(4)]
        new = ev.import_(old.name, handle, *outs, table.dim, old.device, nodes.control_inputs(old))
        return self._put(body, old, new)

    # --- slot tables (folded into the main table's rows) ------------------------------------
    def _slot(self, ctx, body, table, op, old):
        main = ctx.plan.table_of(table.slot_of)
        if op.role == "import":
            data = body.data_inputs(old)
            restore = body.node(data[1].node)
            if restore is not None and restore.op == "RestoreV2":
                _, _, names, slices, _ = self._restore_entries(body, restore.name)
                for ref, suffix in ((data[1], "keys"), (data[2], "values")):
                    names[ref.index or 0], slices[ref.index or 0] = f"{main.checkpoint_key}-{suffix}", ""
            body.remove_nodes([old.name])
            return None
        if op.role in ("restore", "initialize", "is_initialized"):
            if op.role == "initialize":
                return self._initialize(ctx, body, table, old)
            if op.role == "is_initialized":
                return self._is_initialized(ctx, body, table, old)
            ctx.disconnected.update((body.name, r.node) for r in body.data_inputs(old))
            body.remove_nodes([old.name])
            return None
        return None  # handle and export: rewire-source-save drops them with their save entries


def _text(value):
    return value.decode() if isinstance(value, bytes) else str(value)
