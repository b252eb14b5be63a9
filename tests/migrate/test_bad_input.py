"""Bad TFRA / DeepRec input: one stderr line naming the table and the fix, exit 2, nothing written,
the input unchanged."""

import os

import numpy as np
import tensorflow as tf
from click.testing import CliRunner
from tensorflow.core.protobuf import meta_graph_pb2

from graphopt.cli import main
from tests.migrate import deeprec_graphs as dg


def invoke(*args):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def _edit_meta(path, edit):
    mg = meta_graph_pb2.MetaGraphDef()
    with open(path, "rb") as f:
        mg.ParseFromString(f.read())
    edit(mg)
    with open(path, "wb") as f:
        f.write(mg.SerializeToString())


def _files(root):
    return sorted((p, os.path.getsize(os.path.join(d, p))) for d, _, fs in os.walk(root) for p in fs)


def _refused(args, out, *words):
    result = invoke(*args)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("graphopt: error: "), result.stderr
    assert "Traceback" not in result.stderr
    for w in words:
        assert w in lines[0], lines[0]
    assert not os.path.exists(out)
    return lines[0]


def test_unknown_tfra_op_variant(copy_of, tmp_path):
    model = copy_of("tf1_sparse")
    meta = os.path.join(model, "model.meta")

    def variant(mg):
        for n in mg.graph_def.node:
            if n.op == "TFRA>CuckooHashTableFind":
                n.op = "TFRA>CuckooHashTableFindWithExists"

    _edit_meta(meta, variant)
    before = _files(model)
    _refused(
        ["rewrite", meta, "-o", str(tmp_path / "out")],
        str(tmp_path / "out"),
        "user_emb/user_emb_mht_1of1",
        "FindWithExists",
        "exists mask",
    )
    assert _files(model) == before
    inspected = invoke("inspect", meta)
    assert "unknown (returns an exists mask" in inspected.output and "left alone" in inspected.output


def test_string_keyed_tfra_table(copy_of, tmp_path):
    model = copy_of("tf1_sparse")
    meta = os.path.join(model, "model.meta")

    def strings(mg):
        for n in mg.graph_def.node:
            if n.op == "TFRA>CuckooHashTableOfTensors":
                n.attr["key_dtype"].type = tf.string.as_datatype_enum

    _edit_meta(meta, strings)
    _refused(
        ["rewrite", meta, "-o", str(tmp_path / "out")],
        str(tmp_path / "out"),
        "user_emb/user_emb_mht_1of1",
        "keyed by strings",
        "int64",
        "--collisionless",
        "Fingerprint64",
    )


def test_keys_and_values_disagree_in_length(copy_of, tmp_path):
    model = copy_of("tf1_sparse")
    prefix = os.path.join(model, "model")
    reader = tf.train.load_checkpoint(prefix)
    tensors = {k: reader.get_tensor(k) for k in reader.get_variable_to_shape_map()}
    tensors["user_emb/user_emb_mht_1of1-keys"] = tensors["user_emb/user_emb_mht_1of1-keys"][:-1]
    for suffix in (".index", ".data-00000-of-00001"):
        os.remove(prefix + suffix)
    tf.raw_ops.SaveV2(
        prefix=prefix,
        tensor_names=list(tensors),
        shape_and_slices=[""] * len(tensors),
        tensors=[tf.constant(v) for v in tensors.values()],
    )
    _refused(
        ["rewrite", os.path.join(model, "model.meta"), "-o", str(tmp_path / "out")],
        str(tmp_path / "out"),
        "table user_emb/user_emb_mht_1of1",
        "39 keys but",
        "40 rows",
    )


def test_unknown_deeprec_op(tmp_path):
    keys = np.array([1, 2, 3], np.int64)
    meta = dg.build(str(tmp_path / "m"), {"emb": dg.table(keys)}, extra_op="EVGetFrequency")
    _refused(
        ["rewrite", meta, "-o", str(tmp_path / "out")], str(tmp_path / "out"), "table emb", "EVGetFrequency"
    )


def test_wrong_dim_dump(migrated, tmp_path):
    out, report = migrated("tf1_sparse")
    dump = tmp_path / "dump"
    dump.mkdir()
    np.arange(5, dtype="<i8").tofile(dump / "key")
    np.zeros(5 * 8, "<f4").tofile(dump / "emb_vector")  # dim 8, the table's is 4
    dst = str(tmp_path / "imported")
    _refused(
        [
            "import-table",
            os.path.join(out, "model.meta"),
            str(dump),
            "--table",
            "user_emb/user_emb_mht_1of1",
            "-o",
            dst,
        ],
        dst,
        "table user_emb/user_emb_mht_1of1",
        "8 per key",
        "dim 4",
    )
