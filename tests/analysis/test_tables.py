"""Detection: what is a table, what is not, and why a gather is left alone."""

import numpy as np
import pytest

from graphopt.rewrite import RewritePlan, inspect_model
from tests.rewrite import cases


def _module_with(path, body):
    """A tf.Module with a [12, 3] variable ``emb`` whose signature computes ``body(self, ids)``."""
    import tensorflow as tf

    class Net(tf.Module):
        def __init__(self):
            super().__init__()
            self.emb = tf.Variable(tf.random.stateless_normal([12, 3], seed=[7, 8]), name="emb")

        @tf.function(input_signature=[tf.TensorSpec([None], tf.int64, name="ids")])
        def __call__(self, ids):
            return {"out": body(self, ids)}

    net = Net()
    tf.saved_model.save(net, path, signatures={"serving_default": net.__call__})
    return path


def test_table_reports_shape_bytes_sites_and_feeding_inputs(built_case):
    report = inspect_model(built_case(cases.keras_two_inputs).path)
    (table,) = report.tables
    assert table.shape == (50, 8) and table.dtype == "float32" and table.nbytes == 50 * 8 * 4
    assert len(table.sites) == 2  # user and items gather the same table
    assert table.signature_inputs == [
        "serve:items",
        "serve:user",
        "serving_default:items",
        "serving_default:user",
    ]
    assert report.signatures["serving_default"]["inputs"]["items"] == {"dtype": "int64", "shape": [-1, 3]}


def test_gather_over_activations_stays_with_its_reason(built_case):
    report = inspect_model(built_case(cases.module_lookup_and_activation_gather).path)
    assert [t.name for t in report.tables] == ["emb"]
    (left,) = report.left_alone
    assert left.op == "GatherV2" and "params is not a variable" in left.reason and "MatMul" in left.reason


def test_partitioned_table_is_one_table_with_its_strategy(built_case):
    for builder, strategy in ((cases.tf1_partitioned_mod, "mod"), (cases.tf1_partitioned_div, "div")):
        table = inspect_model(built_case(builder).path).table("pemb")
        assert table.handles == ["pemb/part_0", "pemb/part_1", "pemb/part_2"]
        assert table.partition_strategy == strategy and table.partition_rows == [8, 8, 7]
        assert table.rows == 23 and [s.op for s in table.sites] == ["ParallelDynamicStitch"]


def test_mod_partition_row_ids_are_global_ids():
    from graphopt.analysis.tables import TableCandidate

    t = TableCandidate("t", ["a", "b", "c"], 7, 2, "float32", [], [], "t", "mod", [3, 2, 2])
    np.testing.assert_array_equal(t.row_ids(7), [0, 3, 6, 1, 4, 2, 5])
    t.partition_strategy = "div"
    np.testing.assert_array_equal(t.row_ids(7), np.arange(7))


@pytest.mark.parametrize(
    "body,reason",
    [
        (lambda self, ids: tf_().gather(self.emb, ids) + tf_().reduce_sum(self.emb), "reads it whole"),
        (lambda self, ids: tf_().gather(self.emb, tf_().cast(ids[:3], tf_().int32), axis=1), "axis=1"),
        (lambda self, ids: tf_().gather(self.emb, tf_().reshape(ids, [-1, 1]), batch_dims=1), "batch_dims=1"),
    ],
)
def test_variable_with_other_uses_is_not_a_table(tmp_path, body, reason):
    report = inspect_model(_module_with(str(tmp_path / "m"), body))
    assert report.tables == []
    assert report.left_alone and all(reason in g.reason for g in report.left_alone)


def tf_():
    import tensorflow as tf

    return tf


def test_plan_filters_by_name_and_rows(built_case):
    tables = inspect_model(built_case(cases.tf1_partitioned_mod).path).tables
    assert [t.name for t in RewritePlan.select(tables, include="^p").tables] == ["pemb"]
    assert [t.name for t in RewritePlan.select(tables, exclude="^p").tables] == ["emb"]
    plan = RewritePlan.select(tables, min_rows=30)
    assert [t.name for t in plan.tables] == ["emb"] and "23 rows < --min-rows 30" in plan.skipped[0][1]


def test_tables_sharing_a_function_argument_go_together(built_case):
    tables = inspect_model(built_case(cases.module_shared_lookup_function).path).tables
    assert sorted((t.name, t.shares_arguments_with) for t in tables) == [("a", ["b"]), ("b", ["a"])]
    assert tables[0].sites[0].node == tables[1].sites[0].node  # one traced body serves both
    plan = RewritePlan.select(tables, exclude="^a$")
    assert (
        plan.tables == []
        and "shares a function argument with a" in dict((t.name, r) for t, r in plan.skipped)["b"]
    )
