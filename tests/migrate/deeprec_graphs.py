"""DeepRec EmbeddingVariable test models, built as NodeDefs (DeepRec cannot be installed here).

The ops and attrs are those of DeepRec's tensorflow/core/ops/kv_variable_ops.cc; the checkpoint is
written in its layout (NAME-keys, -values, -freqs, -versions, -partition_offset; a partitioned EV
saves each part under its own name, NAME/part_K). What this does and does not prove is in
docs/migration.md ("DeepRec: what was checked").
"""

import os

import numpy as np
import tensorflow as tf
from tensorflow.core.framework import attr_value_pb2, graph_pb2, node_def_pb2, types_pb2
from tensorflow.core.protobuf import meta_graph_pb2, saver_pb2

DIM = 4
F, I64, I32, STR, BOOL = (
    types_pb2.DT_FLOAT,
    types_pb2.DT_INT64,
    types_pb2.DT_INT32,
    types_pb2.DT_STRING,
    types_pb2.DT_BOOL,
)


def _attr(v):
    a = attr_value_pb2.AttrValue()
    if isinstance(v, bool):
        a.b = v
    elif isinstance(v, int):
        a.i = v
    elif isinstance(v, float):
        a.f = v
    elif isinstance(v, str):
        a.s = v.encode()
    elif isinstance(v, tuple) and v[0] == "type":
        a.type = v[1]
    elif isinstance(v, tuple) and v[0] == "types":
        a.list.type.extend(v[1])
    elif isinstance(v, tuple) and v[0] == "shape":
        a.shape.SetInParent()
        for d in v[1]:
            a.shape.dim.add().size = d
    elif isinstance(v, np.ndarray):
        a.tensor.CopyFrom(tf.make_tensor_proto(v))
    return a


class Graph:
    def __init__(self):
        self.g = graph_pb2.GraphDef()

    def node(self, op, name, inputs=(), **attrs):
        n = node_def_pb2.NodeDef(op=op, name=name, input=list(inputs))
        for k, v in attrs.items():
            n.attr[k].CopyFrom(_attr(v))
        self.g.node.append(n)
        return name

    def const(self, name, value, dtype=None):
        value = np.asarray(value, dtype=dtype)
        return self.node(
            "Const", name, value=value, dtype=("type", tf.as_dtype(value.dtype).as_datatype_enum)
        )


def _ev(g, name, *, primary=None, filter_freq=0, steps_to_live=0, tkeys=I64):
    g.node(
        "KvVarHandleOp",
        name,
        dtype=("type", F),
        shape=("shape", [DIM]),
        Tkeys=("type", tkeys),
        container="",
        shared_name=name,
    )
    init = g.const(f"{name}/initial_value", np.zeros([DIM], np.float32))
    empty = g.const(f"{name}/empty_key", np.array(-1, np.int64))
    g.node(
        "InitializeKvVariableOp",
        f"{name}/init",
        [name, primary or name, init, empty],
        Tkeys=("type", tkeys),
        dtype=("type", F),
        shape=("shape", [DIM]),
        counter_type=("type", I64),
        slot_num=1 if primary else 0,
        filter_freq=filter_freq,
        steps_to_live=steps_to_live,
        emb_index=0,
        slot_index=1 if primary else 0,
        ht_partition_num=1000,
    )
    return name


def _gather(g, ev, ids, name):
    default = g.const(f"{name}/default", np.zeros([DIM], np.float32))
    return g.node(
        "KvResourceGather",
        name,
        [ev, ids, default],
        dtype=("type", F),
        Tkeys=("type", I64),
        is_use_default_value_tensor=True,
        validate_indices=True,
    )


def build(
    path, tables, partitioned=False, slot=False, filter_freq=0, steps_to_live=0, extra_op=None, tkeys=I64
):
    """Writes PATH/model.meta + PATH/model.* for ``tables`` ({name: (keys, values, freqs, versions)}).

    The single EV is ``emb`` (with ``slot``: its Adagrad slot EV ``emb/Adagrad`` and a training op);
    ``partitioned``: ``part/part_0`` and ``part/part_1``, looked up by ``ids % 2``.
    """
    os.makedirs(path, exist_ok=True)
    g = Graph()
    ids = g.node("Placeholder", "ids", dtype=("type", I64), shape=("shape", [-1]))
    names = []
    if partitioned:
        evs = [
            _ev(g, f"part/part_{k}", filter_freq=filter_freq, steps_to_live=steps_to_live) for k in range(2)
        ]
        two = g.const("part/num", np.array(2, np.int64))
        mod = g.node("FloorMod", "part/mod", [ids, two], T=("type", I64))
        p32 = g.node("Cast", "part/p", [mod], SrcT=("type", I64), DstT=("type", I32), Truncate=False)
        g.node("DynamicPartition", "part/ids", [ids, p32], num_partitions=2, T=("type", I64))
        size = g.node("Size", "part/size", [ids], T=("type", I64), out_type=("type", I32))
        zero, one = g.const("part/zero", np.array(0, np.int32)), g.const("part/one", np.array(1, np.int32))
        rng = g.node("Range", "part/range", [zero, size, one], Tidx=("type", I32))
        g.node("DynamicPartition", "part/pos", [rng, p32], num_partitions=2, T=("type", I32))
        rows = [_gather(g, evs[k], f"part/ids:{k}", f"part/gather_{k}") for k in range(2)]
        g.node("DynamicStitch", "out", ["part/pos", "part/pos:1", *rows], N=2, T=("type", F))
        names = evs
    else:
        ev = _ev(g, "emb", filter_freq=filter_freq, steps_to_live=steps_to_live, tkeys=tkeys)
        g.node("Identity", "out", [_gather(g, ev, ids, "emb/gather")], T=("type", F))
        names = [ev]
        if slot:
            acc = _ev(g, "emb/Adagrad", primary=ev)
            names.append(acc)
            lr = g.const("train/lr", np.array(0.1, np.float32))
            grad = g.node("Placeholder", "train/grad", dtype=("type", F), shape=("shape", [-1, DIM]))
            step = g.const("train/step", np.array(0, np.int64))
            g.node(
                "KvResourceSparseApplyAdagrad",
                "train/apply",
                [ev, acc, lr, grad, ids, step],
                T=("type", F),
                Tindices=("type", I64),
                Tstep=("type", I64),
                use_locking=False,
            )
        if extra_op:
            g.node(extra_op, "emb/extra", [ev, ids], Tkeys=("type", I64), Tvalues=("type", F))
    # Saver: KvResourceExport -> SaveV2; KvResourceImportV2 reads the checkpoint itself.
    prefix = g.node(
        "PlaceholderWithDefault",
        "save/Const",
        [g.const("save/default", np.array(b"model", object))],
        dtype=("type", STR),
        shape=("shape", []),
    )
    save_names, save_inputs, save_types, restores = [], [], [], []
    for name in names:
        export = g.node(
            "KvResourceExport", f"save/{name}/export", [name], Tkeys=("type", I64), Tvalues=("type", F)
        )
        for i, suffix in enumerate(("keys", "values", "versions", "freqs")):
            save_names.append(f"{name}-{suffix}")
            save_inputs.append(f"{export}:{i}")
            save_types.append([I64, F, I64, I64][i])
        tname = g.const(f"save/{name}/tensor_names", np.array(name.encode(), object))
        primary = name if not name.endswith("/Adagrad") else "emb"
        restores.append(
            g.node(
                "KvResourceImportV2",
                f"save/{name}/import",
                [prefix, name, primary, f"{name}/initial_value", tname, f"{name}/empty_key"],
                Tkeys=("type", I64),
                dtype=("type", F),
                shape=("shape", [DIM]),
                counter_type=("type", I64),
                filter_freq=filter_freq,
                steps_to_live=steps_to_live,
                partition_id=0,
                partition_num=1,
            )
        )
    n = g.const("save/tensor_names", np.array([s.encode() for s in save_names], object))
    sl = g.const("save/shape_and_slices", np.array([b""] * len(save_names), object))
    g.node("SaveV2", "save/SaveV2", [prefix, n, sl, *save_inputs], dtypes=("types", save_types))
    g.node("Identity", "save/control_dependency", [prefix, "^save/SaveV2"], T=("type", STR))
    g.node("NoOp", "save/restore_all", [f"^{r}" for r in restores])
    g.node("NoOp", "init", [f"^{name}/init" for name in names])
    mg = meta_graph_pb2.MetaGraphDef()
    mg.graph_def.CopyFrom(g.g)
    mg.meta_info_def.tags.append("serve")
    mg.saver_def.CopyFrom(
        saver_pb2.SaverDef(
            filename_tensor_name="save/Const:0",
            save_tensor_name="save/control_dependency:0",
            restore_op_name="save/restore_all",
            version=saver_pb2.SaverDef.V2,
        )
    )
    mg.collection_def["table_initializer"].node_list.value.append("init")
    if slot:
        mg.collection_def["train_op"].node_list.value.append("train/apply")
    sig = mg.signature_def["serving_default"]
    sig.method_name = "tensorflow/serving/predict"
    sig.inputs["ids"].name, sig.inputs["ids"].dtype = "ids:0", I64
    sig.inputs["ids"].tensor_shape.dim.add().size = -1
    sig.outputs["emb"].name, sig.outputs["emb"].dtype = "out:0", F
    with open(os.path.join(path, "model.meta"), "wb") as f:
        f.write(mg.SerializeToString())
    write_checkpoint(os.path.join(path, "model"), tables)
    with open(os.path.join(path, "checkpoint"), "w") as f:
        f.write('model_checkpoint_path: "model"\n')
    return os.path.join(path, "model.meta")


def write_checkpoint(prefix, tables, partition_offset=True):
    names, tensors = [], []
    for name, (keys, values, freqs, versions) in tables.items():
        for suffix, t in (("keys", keys), ("values", values), ("freqs", freqs), ("versions", versions)):
            names.append(f"{name}-{suffix}")
            tensors.append(tf.constant(t))
        if partition_offset:
            names.append(f"{name}-partition_offset")
            tensors.append(tf.constant(np.array([0, len(keys)], np.int32)))
    tf.raw_ops.SaveV2(prefix=prefix, tensor_names=names, shape_and_slices=[""] * len(names), tensors=tensors)


def table(keys, seed=0):
    keys = np.asarray(keys, np.int64)
    rng = np.random.default_rng(seed)
    return (
        keys,
        rng.normal(size=(len(keys), DIM)).astype(np.float32),
        np.arange(1, len(keys) + 1, dtype=np.int64),
        np.full(len(keys), 7, np.int64),
    )
