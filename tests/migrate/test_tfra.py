"""TFRA 0.8.1 models (tests/migrate/fixtures/tfra) migrate onto graphopt's EVs, load and serve in
TF 2.21 with only graphopt's ops, match the outputs recorded in the TFRA environment, and keep
training from the imported slots."""

import os

import numpy as np
import pytest
import tensorflow as tf

from graphopt.graph.model import ModelGraph
from graphopt.model_io import read_model
from graphopt.validate.reference import validate_reference
from tests.migrate.conftest import FIXTURES, TFRA_MODELS, output_model, reference_path

# The heads' matmul rounds differently in TF 2.16 and 2.21 (the same stock ops on the same rows
# differ by up to 1.2e-7 there, with no graphopt op involved): lookups must be bit-identical, the
# head outputs within this bound (docs/migration.md).
HEAD_ATOL = 1e-6
LOOKUP_OUTPUTS = ("emb", "lookup")


def _ops(path):
    model = ModelGraph(read_model(path).meta_graph)
    return {n.op for b in model.bodies.values() for n in b.nodes()}


@pytest.mark.parametrize("name", sorted(TFRA_MODELS))
def test_migrated_model_has_only_graphopt_and_stock_ops(migrated, name):
    out, report = migrated(name)
    ops = _ops(output_model(out, name))
    assert not [op for op in ops if op.startswith("TFRA>")]
    assert {"GraphoptEvHandleOp", "GraphoptEvFind", "GraphoptEvImport"} <= ops
    assert [t.name for t in report.analysis.served] and report.analysis.system == "tfra"
    before = sum(report.nodes_before.values())
    assert sum(report.nodes_after.values()) < before  # training graph and shadow plumbing gone


@pytest.mark.parametrize("name", sorted(TFRA_MODELS))
def test_matches_outputs_recorded_in_tfra(migrated, name):
    out, _ = migrated(name)
    original = os.path.join(FIXTURES, TFRA_MODELS[name])
    report = validate_reference(
        output_model(out, name), reference_path(name), original=original, atol=HEAD_ATOL
    )
    assert report.passed, report.format()
    assert report.environment["tfra"] == "0.8.1" and report.environment["tensorflow"].startswith("2.16")
    lookups = [c for c in report.checks if c.name.split("/")[-1].split(" ")[0] in LOOKUP_OUTPUTS]
    assert lookups and all(c.detail == "bit-identical" for c in lookups), report.format()
    tables = [c for c in report.checks if c.name.startswith("table ")]
    assert {c.name.rsplit("(", 1)[1] for c in tables} == {"checkpoint)", "served table)"}
    assert all("bit-identical" in c.detail for c in tables)


@pytest.mark.parametrize("name", ["keras_embedding", "tf1_adagrad"])
def test_adagrad_slot_table_becomes_in_row_slots(migrated, name):
    out, report = migrated(name)
    (table,) = report.analysis.served
    assert table.optimizer == "adagrad" and [s.slot_name for s in table.slots] == ["accumulator"]
    prefix = read_model(output_model(out, name)).checkpoint_prefix
    reader = tf.train.load_checkpoint(prefix)
    acc = reader.get_tensor(f"{table.checkpoint_key}-slot-accumulator")
    assert acc.shape == (40, 4) and np.all(acc > 0) and len(np.unique(acc)) > 40  # trained accumulators
    # the slot table's handle is gone from the graph (its rows live in the main table's checkpoint)
    model = ModelGraph(read_model(output_model(out, name)).meta_graph)
    slot = table.slots[0].name
    top = model.body("")
    assert top.node(slot) is None or top.node(slot).op == "GraphoptEvHandleOp"


def test_training_continues_from_imported_slots(migrated):
    """One TF1 Adagrad step in TF 2.21 from the migrated rows and slots reaches the rows TFRA
    reached with the same step (recorded in next_step.npz)."""
    from graphopt.ops import EmbeddingVariable
    from graphopt.ops.optimizers import Adagrad

    out, report = migrated("tf1_adagrad")
    (table,) = report.analysis.served
    step = np.load(os.path.join(FIXTURES, "tf1_adagrad", "next_step.npz"))
    prefix = os.path.join(out, "model")
    reader = tf.train.load_checkpoint(prefix)
    w, b = reader.get_tensor("head/w"), reader.get_tensor("head/b")
    ev = EmbeddingVariable(4, optimizer=Adagrad(0.3, initial_accumulator_value=0.1, epsilon=0.0, rsqrt=True))
    ev.restore_from(prefix, table.checkpoint_key)
    ids = tf.constant(step["inputs/ids_values"])
    segments = tf.constant(step["inputs/ids_indices"][:, 0].astype(np.int32))
    unique, idx = tf.unique(ids)
    with tf.GradientTape() as tape:
        tape.watch(ev.handle)
        rows = ev.lookup(unique)
        emb = tf.sparse.segment_mean(rows, idx, segments)
        logits = tf.matmul(emb, w) + b
        loss = tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(labels=step["labels"], logits=logits))
    ev.apply_gradients(tape.gradient(loss, ev.handle))
    after = ev.lookup(tf.constant(step["after/keys"])).numpy()
    before = ev.lookup(tf.constant(step["after/keys"]))  # unchanged by a find
    assert np.array_equal(after, before.numpy())
    diff = np.abs(after - step["after/values"]).max()
    moved = np.abs(step["after/values"] - _rows(reader, table, step["after/keys"])).max()
    assert moved > 1e-3  # the step changed the rows, and graphopt's step changed them the same way
    assert diff <= 1e-6, diff


def _rows(reader, table, keys):
    k = reader.get_tensor(f"{table.checkpoint_key}-keys")
    v = reader.get_tensor(f"{table.checkpoint_key}-values")
    pos = {int(x): i for i, x in enumerate(k)}
    return v[[pos[int(x)] for x in keys]]


def test_string_keyed_table_migrates_with_collisionless_keys(tmp_path):
    """A string-keyed TFRA table is refused without --collisionless and, with it, keyed by each
    string's collisionless key (Fingerprint64), in the checkpoint and in front of the lookup."""
    from graphopt.errors import ModelError
    from graphopt.ops.fallback import collisionless_key
    from graphopt.rewrite.targets.ev.migrate import migrate_model

    src = os.path.join(FIXTURES, "tf1_strings", "model.meta")
    with pytest.raises(ModelError, match="keyed by strings.*--collisionless"):
        migrate_model(src, str(tmp_path / "refused"))
    assert not os.path.exists(tmp_path / "refused")
    out = str(tmp_path / "out")
    report = migrate_model(src, out, collisionless=True, debug=True)
    (table,) = report.analysis.served
    assert table.hashed and any("collisionless key" in n for n in report.notes)
    assert "GraphoptEvCollisionlessKey" in _ops(os.path.join(out, "model.meta"))
    checked = validate_reference(os.path.join(out, "model.meta"), reference_path("tf1_strings"), original=src)
    assert checked.passed, checked.format()  # the lookups, bit for bit, and the rows under hashed keys
    reader = tf.train.load_checkpoint(os.path.join(out, "model"))
    original = tf.train.load_checkpoint(os.path.join(FIXTURES, "tf1_strings", "model"))
    keys = original.get_tensor(f"{table.checkpoint_key}-keys")
    got = reader.get_tensor(f"{table.checkpoint_key}-keys")
    assert got.dtype == np.int64 and np.array_equal(got, collisionless_key(keys).numpy())


def test_keras3_model_trains_from_the_migrated_rows_and_slots(migrated):
    """Keras 3 in TF 2.21: a DynamicEmbedding restored from the migrated tf_keras model's table
    starts from its rows and Adagrad accumulators and fit updates them from there."""
    import keras

    from graphopt.keras import DynamicEmbedding

    out, report = migrated("keras_embedding")
    (table,) = report.analysis.served
    prefix = os.path.join(out, "variables", "variables")
    reader = tf.train.load_checkpoint(prefix)
    key = table.checkpoint_key
    keys, rows = reader.get_tensor(f"{key}-keys"), reader.get_tensor(f"{key}-values")
    acc = reader.get_tensor(f"{key}-slot-accumulator")
    emb = DynamicEmbedding(4, optimizer=keras.optimizers.Adagrad(0.1), name="emb")
    ids = keras.Input((3,), dtype="int64")
    head = keras.layers.Dense(1, activation="sigmoid")
    model = keras.Model(ids, head(keras.layers.Flatten()(emb(ids))))
    head.set_weights(
        [
            reader.get_tensor("layer_with_weights-1/kernel/.ATTRIBUTES/VARIABLE_VALUE"),
            reader.get_tensor("layer_with_weights-1/bias/.ATTRIBUTES/VARIABLE_VALUE"),
        ]
    )
    emb.table.restore_from(prefix, key)
    got_keys, got_rows, _, _, slots = emb.table.export_with_slots()
    order = np.argsort(got_keys.numpy())
    assert np.array_equal(got_keys.numpy()[order], np.sort(keys))
    assert np.array_equal(slots["accumulator"].numpy()[order], acc[np.argsort(keys)])
    batch = keys[:6].reshape(2, 3)
    model.compile(optimizer=keras.optimizers.SGD(0.0), loss="binary_crossentropy")
    model.fit(batch, np.ones([2, 1], np.float32), epochs=1, verbose=0)
    after_keys, after_rows, _, _, after_slots = emb.table.export_with_slots()
    pos = {int(k): i for i, k in enumerate(after_keys.numpy())}
    for i, k in enumerate(keys):
        new_acc = after_slots["accumulator"].numpy()[pos[int(k)]]
        if i < 6:  # trained: the accumulator grew from the imported value, not from a fresh one
            assert np.all(new_acc >= acc[i]) and np.any(new_acc > acc[i])
            assert np.all(new_acc < 0.1)  # a fresh accumulator would start at 0.1
            assert not np.array_equal(after_rows.numpy()[pos[int(k)]], rows[i])
        else:
            assert np.array_equal(new_acc, acc[i])
            assert np.array_equal(after_rows.numpy()[pos[int(k)]], rows[i])
