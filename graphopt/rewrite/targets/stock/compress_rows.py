"""Store a table's rows compressed and decode them after the gather, in core ops only (stock target,
``rewrite --row-dtype``).

Pattern (after stock-lookups; every read, gather, save and restore of the table):
    VarHandleOp(dtype=float, shape=[V, D])   -> VarHandleOp(dtype=uint8, shape=[V, D + 8])
                                                (float16 / bfloat16: dtype=half / bfloat16, [V, D])
    G/stock_gather = Gather(table, rows)      -> the same gather of the stored rows, then
                                                int8: x = Cast(G[..., :D]) * scale + bias, where
                                                [scale, bias] = Bitcast(G[..., D:] as [..., 2, 4])
                                                16-bit: x = Cast(G)
    SaveV2 / RestoreV2 / AssignVariableOp / ReadVariableOp of the table: their dtype follows
    an initializer's AssignVariableOp(table, rows) -> AssignVariableOp(table, Fill([V, D + 8], 0))
The int8 rows use FBGEMM's fused row-wise layout: D uint8 codes, then the row's float32 scale and
bias as 8 bytes (graphopt.checkpoint.compress), so one variable holds everything and no function
signature changes. Mul then AddV2 round as the ev table's kernel does, so both targets read the
same values.
"""

import numpy as np

from graphopt.checkpoint import compress
from graphopt.graph import nodes
from graphopt.graph.model import TensorRef
from graphopt.rewrite.passes import Pass
from graphopt.rewrite.targets.ev.remove_table_reads import RemoveTableReads

CODE_DTYPES = {"int8": "uint8", "float16": "float16", "bfloat16": "bfloat16"}
# Each op's dtype attr naming the table's element type.
_DTYPE_ATTR = {
    "VarHandleOp": "dtype",
    "ReadVariableOp": "dtype",
    "AssignVariableOp": "dtype",
    "ResourceGather": "dtype",
    "GatherV2": "Tparams",
    "Identity": "T",
}
DECODE_OPS = ("StridedSlice", "Shape", "ConcatV2", "Reshape", "Bitcast", "Cast", "Mul", "AddV2", "Fill")


class RemoveCompressedTableReads(RemoveTableReads):
    """The unconsumed reads of a compressed table go (an initializer copying the table into another
    float variable, Keras 3's ``Variable_N``, would no longer type-check); float32 tables keep theirs."""

    name = "remove-compressed-table-reads"

    def match(self, ctx):
        return [(t, u) for t, u in super().match(ctx) if t.row_dtype != "float32"]


def stored_dim(table) -> int:
    return table.dim + 8 if table.row_dtype == "int8" else table.dim


def _type(name):
    return (nodes.dtype_enum(name), "type")


class CompressStockRows(Pass):
    name = "compress-stock-rows"

    def match(self, ctx):
        return [t for t in ctx.plan.tables if t.row_dtype != "float32"]

    def apply(self, ctx, matches):
        for table in matches:
            code = nodes.dtype_enum(CODE_DTYPES[table.row_dtype])
            top = ctx.model.graph
            old = nodes.clone(top.node(table.handles[0]))
            handle = nodes.clone(old)
            nodes.set_attr(handle, "dtype", code, "type")
            nodes.set_attr(handle, "shape", [table.rows, stored_dim(table)], "shape")
            top.replace_node(handle.name, handle)
            for site in table.sites:
                self._decode_site(ctx, table, site, code)
            for use in table.uses:
                body = ctx.model.body(use.body)
                if use.kind == "dead" or body.node(use.node) is None:
                    continue  # removed by remove-compressed-table-reads
                if use.kind == "save":
                    _retype(body, use.node, code)
                if use.kind == "save":
                    save = nodes.clone(body.node(use.save_node))
                    dtypes = nodes.attr_value(save, "dtypes")
                    dtypes[use.save_entry] = code
                    nodes.set_attr(save, "dtypes", dtypes, "list(type)")
                    body.replace_node(save.name, save)
                    _retype_chain(body, body.data_inputs(save)[3 + use.save_entry], code)
                elif use.kind == "restore":
                    restore = nodes.clone(body.node(use.restore_node))
                    dtypes = nodes.attr_value(restore, "dtypes")
                    dtypes[use.restore_entry] = code
                    nodes.set_attr(restore, "dtypes", dtypes, "list(type)")
                    nodes.remove_attr(restore, "_output_shapes")
                    body.replace_node(restore.name, restore)
                    _retype(body, use.node, code)
                    _retype_chain(body, body.data_inputs(body.node(use.node))[1], code)
                elif use.kind == "init":
                    # Serving restores the rows from the checkpoint; the initializer only needs the type.
                    assign = body.node(use.node)
                    ctx.disconnected.add((body.name, body.data_inputs(assign)[1].node))
                    dims = body.add_const(
                        f"{use.node}/stock_rows_shape", np.array([table.rows, stored_dim(table)], np.int32)
                    )
                    zero = body.add_const(
                        f"{use.node}/stock_rows_zero", np.zeros([], compress.code_dtype(table.row_dtype))
                    )
                    fill_attrs = {"T": (code, "type"), "index_type": _type("int32")}
                    fill = _op(
                        body, "Fill", f"{use.node}/stock_rows", [dims, zero], fill_attrs, assign.device
                    )
                    body.set_input(use.node, 1, fill)
                    _retype(body, use.node, code)
            ctx.replaced(top.name, old, handle, table, self.name)
        return bool(matches)

    def _decode_site(self, ctx, table, site, code):
        body = ctx.model.body(site.body)
        select = body.node(site.node)  # stock-lookups' SelectV2 over the gather
        gathered = body.data_inputs(select)[1]
        gather = body.node(gathered.node)
        _retype(body, gather.name, code)
        if site.read:
            _retype(body, site.read, code)
        base, dev = f"{gather.name}/decode", gather.device
        if table.row_dtype != "int8":
            cast = {"SrcT": (code, "type"), "DstT": _type("float32"), "Truncate": (False, "b")}
            decoded = _op(body, "Cast", f"{base}/rows", [gathered], cast, dev)
        else:
            decoded = _int8_rows(body, gathered, table.dim, base, dev)
        body.set_input(select.name, 1, decoded)


def _op(body, op, name, inputs, attrs, device):
    return body.op_output(body.add_op(op, name, inputs, attrs, device))


def _last_axis_slice(body, x, begin, end, dtype, name, device):
    """x[..., begin:end] (end None: to the end) as a StridedSlice with an ellipsis."""
    b = body.add_const(f"{name}/begin", np.array([0, begin], np.int32), device)
    e = body.add_const(f"{name}/end", np.array([0, end or 0], np.int32), device)
    s = body.add_const(f"{name}/strides", np.array([1, 1], np.int32), device)
    attrs = {
        "T": (dtype, "type"),
        "Index": _type("int32"),
        "begin_mask": (0, "i"),
        "end_mask": (2 if end is None else 0, "i"),
        "ellipsis_mask": (1, "i"),
        "new_axis_mask": (0, "i"),
        "shrink_axis_mask": (0, "i"),
    }
    return _op(body, "StridedSlice", name, [x, b, e, s], attrs, device)


def _int8_rows(body, gathered: TensorRef, dim, base, dev):
    u8, f32 = nodes.dtype_enum("uint8"), nodes.dtype_enum("float32")
    codes = _last_axis_slice(body, gathered, 0, dim, u8, f"{base}/codes", dev)
    tail = _last_axis_slice(body, gathered, dim, None, u8, f"{base}/scale_bias_bytes", dev)
    # [..., 8] bytes -> [..., 2, 4] -> Bitcast float32 [..., 2]
    shape = _op(body, "Shape", f"{base}/shape", [tail], {"T": (u8, "type"), "out_type": _type("int32")}, dev)
    lead = _op(
        body,
        "StridedSlice",
        f"{base}/lead_shape",
        [
            shape,
            body.add_const(f"{base}/lead_begin", np.array([0], np.int32), dev),
            body.add_const(f"{base}/lead_end", np.array([-1], np.int32), dev),
            body.add_const(f"{base}/lead_strides", np.array([1], np.int32), dev),
        ],
        {
            "T": _type("int32"),
            "Index": _type("int32"),
            "begin_mask": (1, "i"),
            "end_mask": (0, "i"),
            "ellipsis_mask": (0, "i"),
            "new_axis_mask": (0, "i"),
            "shrink_axis_mask": (0, "i"),
        },
        dev,
    )
    words = body.add_const(f"{base}/words", np.array([2, 4], np.int32), dev)
    axis = body.add_const(f"{base}/axis", np.int32(0), dev)
    new_shape = _op(
        body,
        "ConcatV2",
        f"{base}/word_shape",
        [lead, words, axis],
        {"T": _type("int32"), "Tidx": _type("int32"), "N": (2, "i")},
        dev,
    )
    word_bytes = _op(
        body,
        "Reshape",
        f"{base}/word_bytes",
        [tail, new_shape],
        {"T": (u8, "type"), "Tshape": _type("int32")},
        dev,
    )
    scale_bias = _op(
        body, "Bitcast", f"{base}/scale_bias", [word_bytes], {"T": (u8, "type"), "type": (f32, "type")}, dev
    )
    scale = _last_axis_slice(body, scale_bias, 0, 1, f32, f"{base}/scale", dev)
    bias = _last_axis_slice(body, scale_bias, 1, 2, f32, f"{base}/bias", dev)
    cast = {"SrcT": (u8, "type"), "DstT": (f32, "type"), "Truncate": (False, "b")}
    values = _op(body, "Cast", f"{base}/values", [codes], cast, dev)
    scaled = _op(body, "Mul", f"{base}/scaled", [values, scale], {"T": (f32, "type")}, dev)
    return _op(body, "AddV2", f"{base}/rows", [scaled, bias], {"T": (f32, "type")}, dev)


def _retype(body, name, code):
    node = nodes.clone(body.node(name))
    attr = _DTYPE_ATTR.get(node.op)
    if attr is None:
        return
    nodes.set_attr(node, attr, code, "type")
    nodes.remove_attr(node, "_output_shapes")
    body.replace_node(name, node)


def _retype_chain(body, ref, code):
    """Retypes the Identity / ReadVariableOp nodes a Saver's tensor passes through."""
    seen = set()
    while ref.node in {n.name for n in body.nodes()} and ref.node not in seen:
        seen.add(ref.node)
        node = body.node(ref.node)
        if node.op not in ("Identity", "ReadVariableOp"):
            return
        _retype(body, node.name, code)
        if node.op != "Identity":
            return
        ref = body.data_inputs(node)[0]
