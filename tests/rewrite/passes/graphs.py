"""Tiny hand-built models for the pass unit tests: a few NodeDefs (and one FunctionDef) each.

``tf1_graph`` is what a TF1 Saver graph holds for one resource table: a lookup, a save, a
restore, an initializer, a dead read and a variables collection. ``function_graph`` looks the
table up inside a function the top level calls, the way TF2 exports do.
"""

import numpy as np

from graphopt.analysis.tables import detect
from graphopt.graph import nodes
from graphopt.graph.model import ModelGraph
from graphopt.rewrite.plan import RewriteContext, RewritePlan

ROWS, DIM = 10, 4


def _dt(name):
    return (nodes.dtype_enum(name), "type")


def _const(name, value):
    return nodes.const_node(name, value)


def _var_handle(name="emb"):
    return nodes.make_node(
        "VarHandleOp",
        name,
        (),
        {
            "dtype": _dt("float32"),
            "shape": ([ROWS, DIM], "shape"),
            "shared_name": (name, "s"),
            "container": ("", "s"),
        },
    )


def _meta_graph(node_defs, functions=(), signature=("ids", "out"), variables=("emb",)):
    from tensorflow.core.framework import variable_pb2
    from tensorflow.core.protobuf import meta_graph_pb2

    mg = meta_graph_pb2.MetaGraphDef()
    mg.meta_info_def.tags.append("serve")
    mg.graph_def.node.extend(node_defs)
    mg.graph_def.library.function.extend(functions)
    sig = mg.signature_def["serving_default"]
    sig.method_name = "tensorflow/serving/predict"
    sig.inputs["ids"].name = f"{signature[0]}:0"
    sig.inputs["ids"].dtype = nodes.dtype_enum("int64")
    sig.outputs["out"].name = f"{signature[1]}:0"
    sig.outputs["out"].dtype = nodes.dtype_enum("float32")
    for v in variables:
        vd = variable_pb2.VariableDef(
            variable_name=f"{v}:0",
            initializer_name=f"{v}/Assign",
            snapshot_name=f"{v}/Read/ReadVariableOp:0",
            trainable=True,
        )
        mg.collection_def["variables"].bytes_list.value.append(vd.SerializeToString())
        mg.collection_def["trainable_variables"].bytes_list.value.append(vd.SerializeToString())
    mg.saver_def.filename_tensor_name = "save/filename:0"
    mg.saver_def.save_tensor_name = "save/control_dependency:0"
    mg.saver_def.restore_op_name = "save/restore_all"
    return mg


def _saver_nodes(table="emb"):
    names = np.array([table.encode()], dtype=object)
    return [
        _const("save/filename", np.array(b"model", dtype=object)),
        _const("save/SaveV2/tensor_names", names),
        _const("save/SaveV2/shape_and_slices", np.array([b""], dtype=object)),
        nodes.make_node("ReadVariableOp", "save/read", [table], {"dtype": _dt("float32")}),
        nodes.make_node(
            "SaveV2",
            "save/SaveV2",
            ["save/filename", "save/SaveV2/tensor_names", "save/SaveV2/shape_and_slices", "save/read"],
            {"dtypes": ([nodes.dtype_enum("float32")], "list(type)")},
        ),
        nodes.make_node(
            "Identity",
            "save/control_dependency",
            ["save/filename"],
            {"T": _dt("string")},
            control=["^save/SaveV2"],
        ),
        _const("save/RestoreV2/tensor_names", names),
        _const("save/RestoreV2/shape_and_slices", np.array([b""], dtype=object)),
        nodes.make_node(
            "RestoreV2",
            "save/RestoreV2",
            ["save/filename", "save/RestoreV2/tensor_names", "save/RestoreV2/shape_and_slices"],
            {"dtypes": ([nodes.dtype_enum("float32")], "list(type)")},
        ),
        nodes.make_node("Identity", "save/Identity", ["save/RestoreV2"], {"T": _dt("float32")}),
        nodes.make_node(
            "AssignVariableOp", "save/Assign", [table, "save/Identity"], {"dtype": _dt("float32")}
        ),
        nodes.make_node("NoOp", "save/restore_all", control=["^save/Assign"]),
    ]


def tf1_graph():
    """One resource table: GatherV2 lookup, Saver save/restore, initializer, a dead read."""
    return _meta_graph(
        [
            _var_handle(),
            _const("emb/init_value", np.zeros([ROWS, DIM], np.float32)),
            nodes.make_node(
                "AssignVariableOp", "emb/Assign", ["emb", "emb/init_value"], {"dtype": _dt("float32")}
            ),
            nodes.make_node("ReadVariableOp", "emb/Read/ReadVariableOp", ["emb"], {"dtype": _dt("float32")}),
            nodes.make_node("Placeholder", "ids", (), {"dtype": _dt("int64"), "shape": ([None], "shape")}),
            nodes.make_node("ReadVariableOp", "lookup/read", ["emb"], {"dtype": _dt("float32")}),
            _const("lookup/axis", np.int32(0)),
            nodes.make_node(
                "GatherV2",
                "lookup",
                ["lookup/read", "ids", "lookup/axis"],
                {
                    "Tparams": _dt("float32"),
                    "Tindices": _dt("int64"),
                    "Taxis": _dt("int32"),
                    "batch_dims": (0, "i"),
                },
            ),
            nodes.make_node("Identity", "out", ["lookup"], {"T": _dt("float32")}),
            *_saver_nodes(),
        ]
    )


def function_graph():
    """The lookup inside a function: StatefulPartitionedCall(ids, emb) -> ResourceGather."""
    from tensorflow.core.framework import function_pb2

    fn = function_pb2.FunctionDef()
    fn.signature.name = "lookup_fn"
    fn.signature.input_arg.add(name="ids", type=nodes.dtype_enum("int64"))
    fn.signature.input_arg.add(name="table", type=nodes.dtype_enum("resource"))
    fn.signature.output_arg.add(name="rows", type=nodes.dtype_enum("float32"))
    fn.signature.is_stateful = True
    fn.node_def.extend(
        [
            nodes.make_node(
                "ResourceGather",
                "gather",
                ["table", "ids"],
                {
                    "dtype": _dt("float32"),
                    "Tindices": _dt("int64"),
                    "batch_dims": (0, "i"),
                    "validate_indices": (True, "b"),
                },
            ),
            nodes.make_node("Identity", "result", ["gather:output:0"], {"T": _dt("float32")}),
        ]
    )
    fn.ret["rows"] = "result:output:0"
    return _meta_graph(
        [
            _var_handle(),
            nodes.make_node("Placeholder", "ids", (), {"dtype": _dt("int64"), "shape": ([None], "shape")}),
            nodes.make_node(
                "StatefulPartitionedCall",
                "call",
                ["ids", "emb"],
                {
                    "f": ("lookup_fn", "func"),
                    "Tin": ([nodes.dtype_enum("int64"), nodes.dtype_enum("resource")], "list(type)"),
                    "Tout": ([nodes.dtype_enum("float32")], "list(type)"),
                },
            ),
            nodes.make_node("Identity", "out", ["call"], {"T": _dt("float32")}),
            *_saver_nodes(),
        ],
        functions=[fn],
        variables=(),
    )


def context(meta_graph) -> RewriteContext:
    """The rewrite context of a hand-built model, every detected table planned."""
    model = ModelGraph(meta_graph)
    return RewriteContext(model, RewritePlan.select(detect(model).tables))


def op_counts(body):
    """{op: count} of a body's nodes."""
    out = {}
    for n in body.nodes():
        out[n.op] = out.get(n.op, 0) + 1
    return out
