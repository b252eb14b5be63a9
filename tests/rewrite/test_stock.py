"""``rewrite --target stock``: outputs that only use TensorFlow's built-in ops.

The stock outputs are run in a separate Python process that imports TensorFlow and nothing of
graphopt, the way a stock ``tensorflow_model_server`` would see them; the originals run here.
"""

import collections
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from graphopt import model_io
from graphopt.checkpoint import checkpoint_tensors
from graphopt.course.data import generate_samples
from graphopt.course.models.features import feature_arrays
from graphopt.graph import nodes
from graphopt.graph.model import ModelGraph, TensorRef
from graphopt.rewrite import inspect_model, rewrite_model
from graphopt.rewrite.targets.stock import builders as stock_nodes
from tests.conftest import FORMS
from tests.rewrite import cases
from tests.rewrite.runners import assert_identical, run_session, run_tf2

# What the process without graphopt runs: both loaders on each job, outputs saved as .npz,
# and the op types it saw (graph and function library) reported back as JSON.
PLAIN_TF_RUNNER = r"""
import json, sys
import numpy as np
import tensorflow as tf

jobs = json.load(open(sys.argv[1]))
seen = {}
for job in jobs:
    feeds = dict(np.load(job["feeds"], allow_pickle=True))
    with tf.compat.v1.Session(graph=tf.Graph()) as sess:
        mg = tf.compat.v1.saved_model.loader.load(sess, ["serve"], job["path"])
        sig = mg.signature_def[job["signature"]]
        out = sess.run({k: v.name for k, v in sig.outputs.items()},
                       {sig.inputs[k].name: v for k, v in feeds.items()})
    np.savez(job["session_out"], **out)
    fn = tf.saved_model.load(job["path"]).signatures[job["signature"]]
    out = fn(**{k: tf.constant(v) for k, v in feeds.items()})
    np.savez(job["tf2_out"], **{k: v.numpy() for k, v in out.items()})
    ops = [n.op for n in mg.graph_def.node]
    ops += [n.op for f in mg.graph_def.library.function for n in f.node_def]
    seen[job["name"]] = sorted(set(ops))
ours = ("graphopt", "graphopt.course.models")
print(json.dumps({"graphopt_modules": sorted(m for m in sys.modules if m.split(".")[0] in ours),
                  "ops": seen}))
"""

COURSE_TABLES = 10


def _course_feeds():
    return feature_arrays(generate_samples(64, seed=3))


@pytest.fixture(scope="module")
def stock_models(built_case, course_models, tmp_path_factory):
    """name -> (original dir, stock dir, signature, feeds, report): the small cases and the course forms."""
    base = tmp_path_factory.mktemp("stock")
    models = {}
    for builder in (
        cases.tf1_builder,
        cases.tf1_partitioned_mod,
        cases.tf1_partitioned_div,
        cases.tf1_ref_variables_partitioned,
        cases.keras_two_inputs,
        cases.keras_string_lookup_masking,
        cases.module_lookup_sparse,
        cases.module_shared_lookup_function,
    ):
        case = built_case(builder)
        models[case.name] = (case.path, case.signature, case.feeds)
    for form in FORMS:
        models[f"course_{form}"] = (course_models(form)[0], "serving_default", _course_feeds())
    out = {}
    for name, (path, signature, feeds) in models.items():
        dst = str(base / name)
        out[name] = (path, dst, signature, feeds, rewrite_model(path, dst, target="stock", debug=True))
    return out


@pytest.fixture(scope="module")
def plain_tf_runs(stock_models, tmp_path_factory):
    """Runs every stock output once in a process that imports only TensorFlow; name -> outputs."""
    work = tmp_path_factory.mktemp("plain_tf")
    jobs = []
    for name, (_, dst, signature, feeds, _) in stock_models.items():
        np.savez(work / f"{name}_feeds.npz", **feeds)
        jobs.append(
            {
                "name": name,
                "path": dst,
                "signature": signature,
                "feeds": str(work / f"{name}_feeds.npz"),
                "session_out": str(work / f"{name}_session.npz"),
                "tf2_out": str(work / f"{name}_tf2.npz"),
            }
        )
    (work / "jobs.json").write_text(json.dumps(jobs))
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run(
        [sys.executable, "-c", PLAIN_TF_RUNNER, str(work / "jobs.json")],
        cwd=str(work),
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])

    def load(path):
        with np.load(path, allow_pickle=True) as z:
            return {k: z[k] for k in z.files}

    outputs = {j["name"]: {"session": load(j["session_out"]), "tf2": load(j["tf2_out"])} for j in jobs}
    return report, outputs


def _all_ops(path):
    model = ModelGraph(model_io.read_model(path).meta_graph)
    return collections.Counter(n.op for b in model.bodies.values() for n in b.nodes())


@pytest.mark.slow
def test_stock_outputs_load_and_run_where_graphopt_is_not_loaded(stock_models, plain_tf_runs):
    report, outputs = plain_tf_runs
    assert report["graphopt_modules"] == []
    assert sorted(report["ops"]) == sorted(stock_models)
    for name, ops in report["ops"].items():
        assert not [op for op in ops if op.startswith("GraphoptEv")], name
        assert stock_nodes.TABLE_FIND_OP in ops and stock_nodes.HASH_TABLE_OP in ops, name
    for name, (_, dst, *_rest) in stock_models.items():
        assert not [op for op in _all_ops(dst) if op.startswith("GraphoptEv")], name


@pytest.mark.exact
@pytest.mark.slow
def test_stock_outputs_equal_the_originals_through_the_session_loader(stock_models, plain_tf_runs):
    _, outputs = plain_tf_runs
    for name, (src, _, signature, feeds, report) in stock_models.items():
        assert report.tables_converted >= 1, name
        assert_identical(run_session(src, signature, feeds), outputs[name]["session"])


@pytest.mark.exact
@pytest.mark.slow
def test_stock_outputs_through_tf2_loader_equal_the_originals_own_tf2_load(stock_models, plain_tf_runs):
    """tf.saved_model.load of each stock output against tf.saved_model.load of the original itself
    (how graphopt serve and Python users load both). A TF2 export keeps its object graph, with a
    hash table object per table, so the two run the same path and are bit-identical; before, the
    stock output of the course's Keras export went through TensorFlow's TF1 path and moved by an ulp."""
    _, outputs = plain_tf_runs
    for name, (src, dst, signature, feeds, _) in stock_models.items():
        tf2_format = model_io.read_model(src).meta_graph.HasField("object_graph_def")
        assert model_io.read_model(dst).meta_graph.HasField("object_graph_def") == tf2_format, name
        assert_identical(run_tf2(src, signature, feeds), outputs[name]["tf2"])


def _fed_by_find(body, ref: TensorRef) -> bool:
    """True when ``ref`` is Maximum(LookupTableFindV2(...), 0), possibly cast back to int32."""
    node = body.node(ref.node)
    if node is not None and node.op == "Cast":
        node = body.node(body.data_inputs(node)[0].node)
    if node is None or node.op != "Maximum":
        return False
    row = body.node(body.data_inputs(node)[0].node)
    return row is not None and row.op == stock_nodes.TABLE_FIND_OP


def _stock_finds(model) -> int:
    """LookupTableFindV2 nodes that read one of the stock target's hash tables."""
    count = 0
    for body in model.bodies.values():
        for node in body.nodes():
            if node.op == stock_nodes.TABLE_FIND_OP:
                table = body.node(body.data_inputs(node)[0].node)
                if table is not None and table.op == stock_nodes.HASH_TABLE_OP:  # else a function arg
                    count += nodes.attr_value(table, "shared_name").startswith(b"graphopt_stock_")
    return count


@pytest.mark.slow
def test_every_lookup_of_a_table_goes_through_its_hash_table(stock_models):
    for name, (src, dst, *_rest) in stock_models.items():
        before = inspect_model(src)
        sites = {(s.body, s.node) for t in before.tables for s in t.sites}
        after = inspect_model(dst)
        model = ModelGraph(model_io.read_model(dst).meta_graph)
        # The rows are still the same dense variables, gathered at the row the hash table found.
        assert sorted(t.checkpoint_key for t in after.tables) == sorted(
            t.checkpoint_key for t in before.tables
        )
        for t in after.tables:
            for s in t.sites:
                assert _fed_by_find(model.body(s.body), TensorRef.parse(s.ids)), (name, s.where)
        # Every lookup site kept in the output (functions only the dropped object graph used are
        # gone) is the moved gather of a site of the original, and has exactly one find.
        moved = {(s.body, s.node[: -len("/stock_gather")]) for t in after.tables for s in t.sites}
        assert all(s.node.endswith("/stock_gather") for t in after.tables for s in t.sites), name
        assert moved == {(b, n) for b, n in sites if b in model.bodies}, name
        assert _stock_finds(model) == len(moved), name


def test_stock_checkpoint_holds_the_rows_and_the_key_to_row_maps(built_case, tmp_path):
    case = built_case(cases.tf1_partitioned_mod)
    out = str(tmp_path / "stock")
    report = rewrite_model(case.path, out, target="stock")
    before = checkpoint_tensors(model_io.read_model(case.path).checkpoint_prefix)
    after = checkpoint_tensors(model_io.read_model(out).checkpoint_prefix)
    added = {n for t in report.plan.tables for n in stock_nodes.checkpoint_names(t)}
    assert set(after) == set(before) | added
    import tensorflow as tf

    old, new = (tf.train.load_checkpoint(model_io.read_model(p).checkpoint_prefix) for p in (case.path, out))
    for name in before:
        np.testing.assert_array_equal(old.get_tensor(name), new.get_tensor(name))
    for t in report.plan.tables:
        keys, rows = (new.get_tensor(n) for n in stock_nodes.checkpoint_names(t))
        np.testing.assert_array_equal(keys, np.arange(t.rows))
        np.testing.assert_array_equal(rows, np.arange(t.rows))


@pytest.mark.exact
def test_unseen_ids_get_the_zero_row(built_case, tmp_path):
    case = built_case(cases.tf1_builder)
    out = str(tmp_path / "stock")
    rewrite_model(case.path, out, target="stock")
    ids = np.array([3, 40, 1000, -1, 39], np.int64)
    got = run_session(out, "serving_default", {"ids": ids})["out"]
    # out = emb[ids] @ w: an unseen id's zero row gives exactly zero.
    assert np.all(got[[1, 2, 3]] == 0)
    # Like with like: the original runs the same batch shape with the seen ids in the same
    # positions (the unseen ones replaced by a seen id), so both matmuls pick the same kernel.
    # A batch of 2 would be another shape, and the CPU's kernel for it may round differently.
    seen = np.where((ids >= 0) & (ids < 40), ids, 0)
    known = run_session(case.path, "serving_default", {"ids": seen})["out"]
    np.testing.assert_array_equal(got[[0, 4]], known[[0, 4]])
    with pytest.raises(Exception, match="not in"):
        run_session(case.path, "serving_default", {"ids": ids})


@pytest.mark.exact
@pytest.mark.slow
@pytest.mark.parametrize("name", ["course_keras", "tf1_partitioned_mod"])
def test_validate_passes_on_stock_output(stock_models, name):
    from graphopt.validate import validate_models

    src, dst, signature, *_ = stock_models[name]
    report = validate_models(src, dst, batches=1, signatures=[signature])
    assert all(c.passed for c in report.checks) and not report.problems, report.format()
    for run in report.runs:
        if run.passed:
            continue
        # Only the session path of a TF2 export may differ from the original's tf2 load, and then
        # only as the original itself does under the session loader (TensorFlow's, not the rewrite).
        assert (run.loader, run.reference) == ("session", "tf2"), report.format()
        same = run.baseline["rewritten_vs_original_same_loader"]
        assert same and all(c["mismatches"] == 0 and c["elements"] for c in same), report.format()
    assert all(r.passed for r in report.runs if r.loader == "tf2"), report.format()


def test_save_then_restore_round_trips_the_hash_table(built_case, tmp_path):
    """The Saver's save path exports the hash table; restoring that checkpoint gives the same outputs."""
    import tensorflow as tf

    case = built_case(cases.tf1_partitioned_div)
    out = str(tmp_path / "stock")
    rewrite_model(case.path, out, target="stock")
    feeds = {"ids": np.array([0, 22, 5, 40], np.int64)}
    with tf.compat.v1.Session(graph=tf.Graph()) as sess:
        mg = tf.compat.v1.saved_model.loader.load(sess, ["serve"], out)
        saver = tf.compat.v1.train.Saver(saver_def=mg.saver_def)
        prefix = saver.save(sess, str(tmp_path / "ckpt"))
        sig = mg.signature_def["serving_default"]
        before = sess.run(sig.outputs["out"].name, {sig.inputs["ids"].name: feeds["ids"]})
    reader = tf.train.load_checkpoint(prefix)
    for t in inspect_model(case.path).tables:
        keys, rows = (reader.get_tensor(n) for n in stock_nodes.checkpoint_names(t))
        np.testing.assert_array_equal(np.sort(keys), np.arange(t.rows))
        np.testing.assert_array_equal(rows[np.argsort(keys)], np.arange(t.rows))
    with tf.compat.v1.Session(graph=tf.Graph()) as sess:
        mg = tf.compat.v1.saved_model.loader.load(sess, ["serve"], out)
        tf.compat.v1.train.Saver(saver_def=mg.saver_def).restore(sess, prefix)
        sig = mg.signature_def["serving_default"]
        after = sess.run(sig.outputs["out"].name, {sig.inputs["ids"].name: feeds["ids"]})
    np.testing.assert_array_equal(before, after)


def test_unknown_target_is_refused(built_case, tmp_path):
    from graphopt.errors import GraphoptError

    with pytest.raises(GraphoptError, match="unknown target 'onnx'"):
        rewrite_model(built_case(cases.tf1_builder).path, str(tmp_path / "x"), target="onnx")


def test_cli_target_stock(built_case, tmp_path):
    from click.testing import CliRunner

    from graphopt.cli import main

    out = str(tmp_path / "out")
    result = CliRunner().invoke(
        main,
        ["rewrite", built_case(cases.tf1_builder).path, "-o", out, "--target", "stock"],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    assert "emb [40, 4] -> built-in hash table + dense rows" in result.output
    assert (
        not [op for op in _all_ops(out) if op.startswith("GraphoptEv")]
        and _stock_finds(ModelGraph(model_io.read_model(out).meta_graph)) == 1
    )
    bad = CliRunner().invoke(
        main, ["rewrite", built_case(cases.tf1_builder).path, "-o", out + "2", "--target", "tfra"]
    )
    assert bad.exit_code == 2 and "'tfra' is not one of 'ev', 'stock'" in bad.output


@pytest.mark.exact
@pytest.mark.parametrize("builder", cases.CHECKPOINT_CASES, ids=lambda b: b.__name__)
def test_tf1_checkpoint_inputs(built_case, builder, tmp_path):
    """A meta graph + checkpoint input: import_meta_graph + Saver.restore fills the hash table."""
    from tests.rewrite.conftest import rewritten_path
    from tests.rewrite.runners import run_meta_graph

    case = built_case(builder)
    out = str(tmp_path / "out")
    rewrite_model(case.path, out, target="stock")
    ids = np.concatenate([case.feeds["ids:0"], [40]])
    got = run_meta_graph(rewritten_path(case, out), {"ids:0": ids})["out:0"]
    # The original on the same batch shape (its last id a seen one): the same matmul kernel.
    seen = np.concatenate([case.feeds["ids:0"], [0]])
    want = run_meta_graph(case.path, {"ids:0": seen})["out:0"]
    np.testing.assert_array_equal(got[:-1], want[:-1])
    assert np.all(got[-1] == 0)
