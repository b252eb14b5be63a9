"""Every model family: outputs before and after the rewrite are bit-identical, through both loaders,
and the rewritten graph holds finds instead of gathers on tables."""

import collections
import hashlib
import json
import os

import numpy as np
import pytest

from graphopt import model_io
from graphopt.graph.model import ModelGraph
from graphopt.rewrite import detect, inspect_model
from graphopt.rewrite.targets.ev.tf2_objects import is_embedding_variable_function
from tests.rewrite import cases
from tests.rewrite.conftest import rewritten_path
from tests.rewrite.runners import assert_identical, run_meta_graph, run_session, run_tf2

SAVED = cases.SAVED_MODEL_CASES
ids = lambda b: b.__name__  # noqa: E731


@pytest.mark.parametrize("builder", SAVED, ids=ids)
def test_tf2_loader_outputs_bit_identical(rewritten_case, builder):
    case, out, _ = rewritten_case(builder)
    assert_identical(run_tf2(case.path, case.signature, case.feeds), run_tf2(out, case.signature, case.feeds))


@pytest.mark.parametrize("builder", SAVED, ids=ids)
def test_session_loader_outputs_bit_identical(rewritten_case, builder):
    case, out, _ = rewritten_case(builder)
    assert_identical(
        run_session(case.path, case.signature, case.feeds), run_session(out, case.signature, case.feeds)
    )


@pytest.mark.parametrize("builder", cases.CHECKPOINT_CASES, ids=ids)
def test_checkpoint_and_meta_graph_outputs_bit_identical(rewritten_case, builder):
    case, out, report = rewritten_case(builder)
    meta = rewritten_path(case, out)
    assert os.path.exists(meta) and report.wrote
    assert_identical(run_meta_graph(case.path, case.feeds), run_meta_graph(meta, case.feeds))


def _op_counts(model):
    """Ops of the model's own graph and functions (the EmbeddingVariable objects' functions aside)."""
    return collections.Counter(
        n.op
        for name, b in model.bodies.items()
        if not is_embedding_variable_function(name)
        for n in b.nodes()
    )


@pytest.mark.parametrize("builder", cases.ALL_CASES, ids=ids)
def test_structure_after_rewrite(rewritten_case, builder):
    case, out, report = rewritten_case(builder)
    before = inspect_model(case.path)
    after_source = model_io.read_model(rewritten_path(case, out))
    model = ModelGraph(after_source.meta_graph)
    ops = _op_counts(model)
    assert len(before.tables) == case.tables
    assert ops["GraphoptEvHandleOp"] == case.tables
    assert ops["GraphoptEvFind"] == len({(s.body, s.node) for t in before.tables for s in t.sites})
    assert ops["GraphoptEvImport"] >= case.tables and ops["GraphoptEvExport"] >= case.tables
    # No table is left and every gather still there was left alone before, for the same reason.
    found = detect(model)
    assert found.tables == []
    assert len(found.left_alone) == len(before.left_alone) == case.left_alone
    assert model.check() == [] and model.unregistered_ops() == []
    handles = {h for t in before.tables for h in t.handles}
    assert not [n for n in model.graph.nodes() if n.name in handles and n.op == "VarHandleOp"]
    if after_source.meta_graph.HasField("object_graph_def"):
        # A TF2 model keeps its object graph: every table's objects became EmbeddingVariables.
        kinds = collections.Counter(
            n.WhichOneof("kind") for n in after_source.meta_graph.object_graph_def.nodes
        )
        assert kinds["resource"] >= case.tables


@pytest.mark.parametrize("builder", [cases.tf1_partitioned_mod, cases.keras_two_inputs], ids=ids)
def test_manifest_maps_every_replaced_node(rewritten_case, builder):
    case, out, report = rewritten_case(builder)
    manifest = json.load(open(os.path.join(out, "graphopt_manifest.json")))
    replaced = {(r["function"], r["old"]["name"]): r for r in manifest["replaced"]}
    for table in inspect_model(case.path).tables:
        for site in table.sites:
            entry = replaced[(site.body or None, site.node)]
            assert entry["new"] == {"name": site.node, "op": "GraphoptEvFind"}
        assert replaced[(None, table.handles[0])]["new"]["op"] == "GraphoptEvHandleOp"


def _logical_rows(parts, strategy):
    """Row g of a partitioned table, as embedding_lookup sees it."""
    if strategy == "div":
        return np.concatenate(parts)
    n = len(parts)
    rows = sum(len(p) for p in parts)
    return np.stack([parts[g % n][g // n] for g in range(rows)])


@pytest.mark.parametrize("builder", [cases.tf1_partitioned_mod, cases.tf1_partitioned_div], ids=ids)
def test_partitioned_checkpoint_holds_global_ids(rewritten_case, builder):
    import tensorflow as tf

    case, out, _ = rewritten_case(builder)
    table = inspect_model(case.path).table("pemb")
    src = tf.train.load_checkpoint(os.path.join(case.path, "variables", "variables"))
    full = src.get_tensor("pemb")
    bounds = np.cumsum([0] + table.partition_rows)
    parts = [full[bounds[p] : bounds[p + 1]] for p in range(len(table.partition_rows))]
    dst = tf.train.load_checkpoint(os.path.join(out, "variables", "variables"))
    keys, values = dst.get_tensor("pemb-keys"), dst.get_tensor("pemb-values")
    assert sorted(keys.tolist()) == list(range(table.rows))
    np.testing.assert_array_equal(values, _logical_rows(parts, table.partition_strategy)[keys])
    assert not dst.get_tensor("pemb-freqs").any() and not dst.get_tensor("pemb-versions").any()
    assert "pemb" not in dst.get_variable_to_shape_map()
    np.testing.assert_array_equal(dst.get_tensor("w"), src.get_tensor("w"))  # other tensors copied


def _tree_digest(path):
    h = hashlib.sha256()
    for root, _, files in sorted(os.walk(path)):
        for f in sorted(files):
            h.update(f.encode())
            h.update(open(os.path.join(root, f), "rb").read())
    return h.hexdigest()


def test_input_is_never_modified(built_case, ev_ops, tmp_path):
    from graphopt.rewrite import rewrite_model

    case = built_case(cases.keras_two_inputs)
    digest = _tree_digest(case.path)
    rewrite_model(case.path, str(tmp_path / "a"))
    rewrite_model(case.path, str(tmp_path / "a"), overwrite=True)
    assert _tree_digest(case.path) == digest
    assert sorted(os.listdir(tmp_path)) == ["a"]  # no temp directory left behind
