"""Rewriting TF1 training graphs (the course's tf1 form with a train op): what the output holds.

The numerical proof (training steps of both graphs compared) is tests/validate/test_train_tf1.py.
"""

import os

import numpy as np
import pytest

from graphopt import model_io
from graphopt.course.data import GENRE_FEATURES, GENRE_VOCAB, ID_FEATURES, NUMERIC_FEATURES

TABLES = 2 + len(GENRE_FEATURES)  # movieId, userId and one table per genre feature


def batch(n=64, seed=7, unique=False, id_offset=0):
    """Feeds of the training graph: ids inside the vocabulary (``unique``: no id twice per feature)."""
    r = np.random.default_rng(seed)
    feeds = {
        k: r.choice(b, n, replace=not unique).astype(np.int64) + id_offset for k, b in ID_FEATURES.items()
    }
    vocab = list(GENRE_VOCAB) if unique else [*GENRE_VOCAB, ""]
    feeds.update({k: r.choice(vocab, n, replace=not unique) for k in GENRE_FEATURES})
    feeds.update({k: r.normal(size=n).astype(np.float32) for k in NUMERIC_FEATURES})
    feeds["label"] = r.integers(0, 2, n).astype(np.float32)
    return feeds


def build_training_checkpoint(root, optimizer, pretrain=False):
    """The tf1 form's training graph with ``optimizer``; ``pretrain``: one step first (slots hold state)."""
    from graphopt.course.models import tf1_form
    from graphopt.course.models.features import Normalization

    norm = Normalization((0.0,) * len(NUMERIC_FEATURES), (1.0,) * len(NUMERIC_FEATURES))
    pre = batch(64, seed=1)
    label = pre.pop("label")
    prefix = tf1_form.save_training_checkpoint(
        str(root), norm, optimizer, batches=[(pre, label)] if pretrain else []
    )
    return prefix + ".meta"


def rewrite(meta, out, **kwargs):
    from graphopt.rewrite import rewrite_model

    return rewrite_model(meta, str(out), debug=True, **kwargs)


@pytest.fixture(scope="module")
def adam_rewrite(tmp_path_factory):
    root = tmp_path_factory.mktemp("tf1-train-adam")
    meta = build_training_checkpoint(root / "model", "adam", pretrain=True)
    report = rewrite(meta, root / "out")
    return meta, str(root / "out"), report


def _graph_and_checkpoint(out):
    import tensorflow as tf

    source = model_io.read_model(os.path.join(out, "model.ckpt.meta"))
    shapes = tf.train.load_checkpoint(source.checkpoint_prefix).get_variable_to_shape_map()
    return source.meta_graph.graph_def, shapes


def test_adam_training_graph_becomes_apply_ops(adam_rewrite):
    _, out, report = adam_rewrite
    assert report.wrote and len(report.plan.tables) == TABLES
    graph, shapes = _graph_and_checkpoint(out)
    ops = [n.op for n in graph.node]
    assert ops.count("GraphoptEvApplyAdam") == TABLES
    assert ops.count("GraphoptEvFindOrInsert") == TABLES  # the training graph's lookups insert
    assert "GraphoptEvFind" not in ops and "ResourceGather" not in ops
    assert (
        ops.count("GraphoptEvExportWithSlots") == TABLES and ops.count("GraphoptEvImportWithSlots") == TABLES
    )
    by_name = {n.name: n for n in graph.node}
    handle = by_name["embedding/movieId"]
    assert handle.op == "GraphoptEvHandleOp" and handle.attr["optimizer"].s == b"adam"
    assert list(handle.attr["slot_init"].list.f) == [0.0, 0.0]
    # The optimizer's dense update and the slot variables are gone; the MLP still trains densely.
    assert not [n.name for n in graph.node if n.name.startswith("embedding/") and n.op == "VarHandleOp"]
    assert "AssignSubVariableOp" not in ops and "ResourceScatterAdd" not in ops
    assert ops.count("ResourceApplyAdam") == 6
    apply = by_name["train/update_embedding/movieId/AssignSubVariableOp"]
    assert apply.op == "GraphoptEvApplyAdam"
    assert list(apply.input[3:]) == [
        "train/learning_rate",
        "train/beta1",
        "train/beta2",
        "train/epsilon",
        "train/update_embedding/movieId/ReadVariableOp_1",
        "train/update_embedding/movieId/ReadVariableOp",
    ]
    # The train op's group waits for the apply op instead of the reads of the new m and v.
    group = by_name["train/update_embedding/movieId/group_deps"]
    assert list(group.input) == ["^train/update_embedding/movieId/AssignSubVariableOp"]
    # Checkpoint: slots beside the table, under the table's key; the slot variables' own keys gone.
    assert shapes["embedding/movieId-slot-m"] == shapes["embedding/movieId-values"] == [1001, 10]
    assert "embedding/movieId-slot-v" in shapes
    assert "embedding/movieId/Adam" not in shapes and "embedding/movieId" not in shapes
    assert "beta1_power" in shapes and "mlp_0/kernel/Adam" in shapes


def test_slots_carried_from_the_checkpoint(adam_rewrite):
    import tensorflow as tf

    meta, out, _ = adam_rewrite
    before = tf.train.load_checkpoint(meta[: -len(".meta")])
    after = tf.train.load_checkpoint(os.path.join(out, "model.ckpt"))
    for slot, var in (("m", "Adam"), ("v", "Adam_1")):
        got = after.get_tensor(f"embedding/userId-slot-{slot}")
        want = before.get_tensor(f"embedding/userId/{var}")
        assert np.array_equal(got, want) and np.any(want != 0)  # pretrained: real state
    assert np.array_equal(after.get_tensor("embedding/userId-keys"), np.arange(30001))


def test_new_ids_get_rows_when_training(adam_rewrite):
    """Continuing training on ids the original vocabulary never had: they get their own rows."""
    import tensorflow as tf

    import graphopt  # noqa: F401  (registers the ops for import_meta_graph)
    from graphopt.ops.library import load_library

    _, out, _ = adam_rewrite
    v1 = tf.compat.v1
    g = tf.Graph()
    with g.as_default():
        saver = v1.train.import_meta_graph(os.path.join(out, "model.ckpt.meta"))
        train_op = v1.get_collection(v1.GraphKeys.TRAIN_OP)[0]
        handle = g.get_tensor_by_name("embedding/userId:0")
        export = load_library().graphopt_ev_export_with_slots(handle, dim=10, num_slots=2)
        with v1.Session(graph=g) as sess:
            saver.restore(sess, os.path.join(out, "model.ckpt"))
            sess.run(v1.tables_initializer())
            feeds = batch(16, seed=5, unique=True)
            feeds["userId"] = np.arange(50_000, 50_016, dtype=np.int64)  # beyond the 30,001 rows
            sess.run(train_op, {g.get_tensor_by_name(k + ":0"): v for k, v in feeds.items()})
            keys, values, freqs, _, (m, v) = sess.run(export)[:5]
    new = keys >= 50_000
    assert sorted(keys[new]) == list(range(50_000, 50_016)) and len(keys) == 30_001 + 16
    assert np.all(freqs[new] == 1) and np.all(m[new] != 0) and np.all(v[new] > 0)  # trained
    assert np.all(np.abs(values[new]) < 0.06)  # initializer row (uniform ±0.05) plus one small step


def test_optimizer_without_counterpart_is_left_as_is(tmp_path):
    meta = build_training_checkpoint(tmp_path / "model", "momentum")
    report = rewrite(meta, tmp_path / "out")
    assert not report.plan.tables and not report.wrote and not os.path.exists(tmp_path / "out")
    reasons = {t.name: r for t, r in report.plan.skipped}
    assert len(reasons) == TABLES
    assert reasons["embedding/movieId"].startswith(
        "training path left as is: its optimizer update ResourceSparseApplyMomentum"
    )


def test_training_graph_rewrite_matches_pattern_only(tmp_path):
    """A table whose update is a plain assign-sub that is not v1 Adam's stays dense, with the reason."""
    import tensorflow as tf

    from graphopt.analysis.tables import detect
    from graphopt.graph.model import ModelGraph

    v1 = tf.compat.v1
    g = tf.Graph()
    with g.as_default():
        ids = v1.placeholder(tf.int64, [None], name="ids")
        table = v1.get_variable("table", [10, 4])
        loss = tf.reduce_sum(tf.nn.embedding_lookup(table, ids))
        train = table.assign_sub(tf.ones([10, 4]) * loss)  # a dense write, not an optimizer's
        v1.add_to_collection(v1.GraphKeys.TRAIN_OP, train.op)
        saver = v1.train.Saver()
        with v1.Session() as sess:
            sess.run(v1.global_variables_initializer())
            prefix = saver.save(sess, str(tmp_path / "model.ckpt"))
    tables = detect(ModelGraph(model_io.read_model(prefix + ".meta").meta_graph)).tables
    assert [t.training_left.split(" is not")[0] for t in tables] == [
        "AssignSubVariableOp AssignSubVariableOp"
    ]


def _train_rewritten(out, prefix, steps, save_to=None):
    """Restores the rewritten training graph from ``prefix``, runs ``steps`` steps; returns the
    userId table's export (and saves to ``save_to``)."""
    import tensorflow as tf

    import graphopt  # noqa: F401
    from graphopt.ops.library import load_library

    v1 = tf.compat.v1
    g = tf.Graph()
    with g.as_default():
        saver = v1.train.import_meta_graph(os.path.join(out, "model.ckpt.meta"))
        train_op = v1.get_collection(v1.GraphKeys.TRAIN_OP)[0]
        export = load_library().graphopt_ev_export_with_slots(
            g.get_tensor_by_name("embedding/userId:0"), dim=10, num_slots=2
        )
        feeds = {g.get_tensor_by_name(k + ":0"): v for k, v in batch(32, seed=11).items()}
        with v1.Session(graph=g) as sess:
            saver.restore(sess, prefix)
            sess.run(v1.tables_initializer())
            for _ in range(steps):
                sess.run(train_op, feeds)
            if save_to:
                saver.save(sess, save_to)
            return sess.run(export)[:5]


def test_save_mid_training_and_resume_is_identical(adam_rewrite, tmp_path):
    """The rewritten Saver carries rows and slots: 2 steps, save, restore, 2 more = 4 steps."""
    _, out, _ = adam_rewrite
    start = os.path.join(out, "model.ckpt")
    straight = _train_rewritten(out, start, 4)
    _train_rewritten(out, start, 2, save_to=str(tmp_path / "mid.ckpt"))
    resumed = _train_rewritten(out, str(tmp_path / "mid.ckpt"), 2)
    order_a, order_b = np.argsort(straight[0]), np.argsort(resumed[0])  # export order is the table's
    for a, b in zip(straight[:3], resumed[:3], strict=True):  # keys, values, freqs
        assert np.array_equal(a[order_a], b[order_b])
    for a, b in zip(straight[4], resumed[4], strict=True):  # m, v
        assert np.array_equal(a[order_a], b[order_b]) and np.any(a != 0)


def test_find_or_insert_records_the_global_step(tmp_path):
    """A graph with a global_step: find-or-insert's step is its value, so TTL eviction works."""
    import tensorflow as tf

    import graphopt  # noqa: F401
    from graphopt.ops.library import load_library

    v1 = tf.compat.v1
    g = tf.Graph()
    with g.as_default():
        ids = v1.placeholder(tf.int64, [None], name="ids")
        table = v1.get_variable("table", [10, 4])
        loss = tf.reduce_sum(tf.square(tf.nn.embedding_lookup(table, ids)), name="loss")
        step = v1.train.get_or_create_global_step()
        train = v1.train.AdagradOptimizer(0.1).minimize(loss, global_step=step)
        v1.add_to_collection(v1.GraphKeys.TRAIN_OP, train)
        saver = v1.train.Saver()
        with v1.Session() as sess:
            sess.run(v1.global_variables_initializer())
            prefix = saver.save(sess, str(tmp_path / "model" / "model.ckpt"))
    report = rewrite(prefix + ".meta", tmp_path / "out")
    assert [t.training.optimizer for t in report.plan.tables] == ["adagrad"]
    g = tf.Graph()
    with g.as_default():
        saver = v1.train.import_meta_graph(str(tmp_path / "out" / "model.ckpt.meta"))
        lookup = next(n for n in g.as_graph_def().node if n.op == "GraphoptEvFindOrInsert")
        assert lookup.input[2] == "global_step/graphopt_read"
        export = load_library().graphopt_ev_export(g.get_tensor_by_name("table:0"), dim=4)
        with v1.Session(graph=g) as sess:
            saver.restore(sess, str(tmp_path / "out" / "model.ckpt"))
            for _ in range(3):
                sess.run(v1.get_collection(v1.GraphKeys.TRAIN_OP)[0], {"ids:0": [1, 2]})
            keys, _, freqs, versions = sess.run(export)
    touched = np.isin(keys, [1, 2])
    assert np.all(freqs[touched] == 3) and np.all(freqs[~touched] == 0)
    # The read of global_step and its increment in the same step are not ordered (as in any TF1
    # graph that reads it): the last step recorded is 2 or 3.
    assert set(versions[touched]) <= {2, 3} and np.all(versions[~touched] == 0)
