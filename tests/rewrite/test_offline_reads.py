"""Table reads in functions no serving signature runs (tf_keras' regularizer losses, loss_fns):
they never block the table; a sum over rows becomes the sum over the EmbeddingVariable's present
rows, anything else leaves its function out of the rewritten object graph, as the plan says."""

import numpy as np
import pytest
import tensorflow as tf

import graphopt  # noqa: F401  (the ops the rewritten model needs)
from graphopt import model_io
from graphopt.analysis.tables import detect
from graphopt.graph.model import ModelGraph
from graphopt.rewrite import rewrite_model


class _Net(tf.Module):
    def __init__(self):
        super().__init__()
        self.table = tf.Variable(np.random.RandomState(0).randn(10, 4).astype("float32"), name="table")

    @tf.function(input_signature=[tf.TensorSpec([None], tf.int64, name="ids")])
    def serve(self, ids):
        return {"rows": tf.gather(self.table, ids)}

    @tf.function(input_signature=[])
    def l2(self):  # what tf_keras' L2 regularizer computes
        return 2.0 * 1e-3 * tf.nn.l2_loss(self.table)

    @tf.function(input_signature=[])
    def l1(self):  # Keras 3's L1: ops.sum(ops.abs(x))
        return 1e-3 * tf.reduce_sum(tf.abs(self.table))

    @tf.function(input_signature=[])
    def tied(self):  # a whole-table use with no meaning over present rows
        return tf.matmul(self.table, self.table, transpose_b=True)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("offline")
    net = _Net()
    src, out = str(root / "m"), str(root / "ev")
    tf.saved_model.save(net, src, signatures={"serving_default": net.serve})
    return net, src, out, rewrite_model(src, out)


def test_training_only_reads_do_not_block_the_table(models):
    _, src, _, report = models
    (table,) = detect(ModelGraph(model_io.read_model(src).meta_graph)).tables
    offline = {(u.detail.split(" ")[1], u.present_rows) for u in table.uses if u.kind == "offline"}
    assert offline == {("(Abs)", True), ("(L2Loss)", True), ("(MatMul)", False)}
    assert [t.name for t in report.plan.tables] == ["table"] and report.wrote


def test_a_sum_over_rows_keeps_its_value_over_the_present_rows(models):
    net, _, out, report = models
    loaded = tf.saved_model.load(out)
    assert float(loaded.l2()) == pytest.approx(float(net.l2()), rel=1e-6)
    assert float(loaded.l1()) == pytest.approx(float(net.l1()), rel=1e-6)
    assert any(
        r["pass"] == "rewrite-offline-reads" and r["new"]["op"] == "GraphoptEvExport" for r in report.manifest
    )
    ids = tf.constant([3, 0, 9], tf.int64)
    np.testing.assert_array_equal(
        loaded.signatures["serving_default"](ids=ids)["rows"], net.serve(ids)["rows"]
    )


def test_any_other_use_leaves_its_function_out_and_the_plan_says_so(models):
    _, _, out, report = models
    (note,) = [n for n in report.plan.notes if "left out of the rewritten object graph" in n]
    assert "(MatMul) uses it" in note or "(MatMul) reads it whole" in note
    loaded = tf.saved_model.load(out)
    assert not callable(loaded.tied)  # the attribute stays, as a plain object
    with pytest.raises(TypeError):
        loaded.tied()
