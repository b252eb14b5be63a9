"""Slots travel through tf.train.Checkpoint, the TF1 Saver and SavedModel; training
resumes bit-identically in a fresh process; old checkpoints without slots still load."""

import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

import graphopt

# min_count=2: the admission counters of keys not admitted yet are checkpointed too.
TRAIN = """
import hashlib, sys, numpy as np, tensorflow as tf, graphopt
optimizer, mode, path = sys.argv[1:4]
ev = graphopt.EmbeddingVariable(8, optimizer=optimizer, seed=4, min_count=2)
ckpt = tf.train.Checkpoint(emb=ev)
steps = {"full": range(1, 7), "save": range(1, 4), "resume": range(4, 7)}[mode]
if mode == "resume":
    ckpt.read(path).assert_consumed()
for step in steps:
    rng = np.random.default_rng(step)
    ids = rng.integers(0, 50, 64)
    with tf.GradientTape() as tape:
        tape.watch(ev.handle)
        rows = ev.lookup(ids, insert_missing=True, step=step)
        loss = tf.reduce_sum(tf.sin(rows) * rng.standard_normal((64, 8)).astype(np.float32))
    ev.apply_gradients(tape.gradient(loss, ev.handle), step=step)
if mode == "save":
    ckpt.write(path)
keys, values, freqs, versions, slots = ev.export_with_slots()
order = np.argsort(keys.numpy())
digest = hashlib.sha256()
for t in [keys, values, freqs, versions] + [slots[n] for n in ev.slot_names]:
    digest.update(np.ascontiguousarray(t.numpy()[order]).tobytes())
print("DIGEST", digest.hexdigest(), len(order))
"""


def _run(*args):
    out = subprocess.run(
        [sys.executable, "-c", TRAIN, *args],
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"),
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return next(line for line in out.stdout.splitlines() if line.startswith("DIGEST"))


@pytest.mark.parametrize("optimizer", ["adagrad", "adam", "ftrl"])
def test_training_resumes_bit_identically_in_a_fresh_process(tmp_path, optimizer):
    path = str(tmp_path / "ckpt")
    uninterrupted = _run(optimizer, "full", path)
    _run(optimizer, "save", path)
    assert _run(optimizer, "resume", path) == uninterrupted


def _trained(optimizer="adagrad", dim=4):
    ev = graphopt.EmbeddingVariable(dim, optimizer=optimizer, initializer="zeros")
    ev.insert([1, 2, 3], np.arange(3 * dim, dtype=np.float32).reshape(3, dim))
    ev.apply_gradients([1, 3, 1], np.ones((3, dim), np.float32), step=1)
    return ev


def _state(ev):
    keys, values, freqs, versions, slots = ev.export_with_slots()
    order = np.argsort(keys.numpy())
    return [t.numpy()[order] for t in (keys, values, freqs, versions)] + [
        slots[n].numpy()[order] for n in ev.slot_names
    ]


def _assert_same(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=False):
        np.testing.assert_array_equal(x, y)


def test_tf2_checkpoint_keys_and_round_trip(tmp_path):
    ev = _trained("ftrl")
    path = tf.train.Checkpoint(emb=ev).write(str(tmp_path / "c"))
    names = dict(tf.train.list_variables(path))
    assert names["emb/.ATTRIBUTES/table-slot-accumulator"] == [3, 4]
    assert names["emb/.ATTRIBUTES/table-slot-linear"] == [3, 4]
    fresh = graphopt.EmbeddingVariable(4, optimizer="ftrl")
    tf.train.Checkpoint(emb=fresh).read(path).assert_consumed()
    _assert_same(_state(fresh), _state(ev))


def test_tf1_saver_carries_slots(tmp_path):
    prefix = str(tmp_path / "model")
    with tf.Graph().as_default():
        ev = graphopt.EmbeddingVariable(4, optimizer="adam", initializer="zeros", name="emb")
        ev_insert = ev.insert([5, 6], np.ones((2, 4), np.float32))
        apply = ev.apply_gradients([5], np.full((1, 4), 0.5, np.float32), step=1)
        export = ev.export_with_slots()
        saver = tf.compat.v1.train.Saver()
        with tf.compat.v1.Session() as sess:
            sess.run(ev_insert)
            sess.run(apply)
            saved = sess.run(export)
            saver.save(sess, prefix)
    assert "emb-slot-m" in dict(tf.train.list_variables(prefix))
    with tf.Graph().as_default():
        ev = graphopt.EmbeddingVariable(4, optimizer="adam", name="emb")
        export = ev.export_with_slots()
        saver = tf.compat.v1.train.Saver()
        with tf.compat.v1.Session() as sess:
            saver.restore(sess, prefix)
            restored = sess.run(export)
    for got, want in zip(restored[:4], saved[:4], strict=False):
        np.testing.assert_array_equal(np.sort(got, axis=0), np.sort(want, axis=0))
    assert np.abs(saved[4]["m"]).sum() > 0
    np.testing.assert_array_equal(np.sort(restored[4]["m"], 0), np.sort(saved[4]["m"], 0))
    np.testing.assert_array_equal(np.sort(restored[4]["v"], 0), np.sort(saved[4]["v"], 0))


def test_saved_model_carries_slots(tmp_path, lib):
    module = tf.Module()
    module.emb = _trained("adagrad")
    tf.saved_model.save(module, str(tmp_path / "sm"))
    loaded = tf.saved_model.load(str(tmp_path / "sm"))
    out = lib.graphopt_ev_export_with_slots(loaded.emb.resource_handle, dim=4, num_slots=1)
    order = np.argsort(out.keys.numpy())
    want = _state(module.emb)
    np.testing.assert_array_equal(out.values.numpy()[order], want[1])
    np.testing.assert_array_equal(out.slots[0].numpy()[order], want[4])


def test_checkpoint_without_slots_loads_with_fresh_slots(tmp_path):
    old = graphopt.EmbeddingVariable(4, initializer="zeros")  # no optimizer: no slots saved
    old.insert([1, 2], np.ones((2, 4), np.float32))
    path = tf.train.Checkpoint(emb=old).write(str(tmp_path / "old"))
    ev = graphopt.EmbeddingVariable(
        4, optimizer=graphopt.ops.optimizers.Adagrad(initial_accumulator_value=0.25)
    )
    ev.restore_from(path, "emb/.ATTRIBUTES/table")
    state = _state(ev)
    np.testing.assert_array_equal(state[1], np.ones((2, 4)))
    np.testing.assert_array_equal(state[4], np.full((2, 4), 0.25))
    ev.apply_gradients([1], np.ones((1, 4), np.float32))  # and it trains
    # the automatic restore names the missing slot tensor
    with pytest.raises(tf.errors.NotFoundError, match="table-slot-accumulator"):
        tf.train.Checkpoint(emb=graphopt.EmbeddingVariable(4, optimizer="adagrad")).read(path)


def test_slots_of_another_optimizer_are_refused(tmp_path, lib):
    path = tf.train.Checkpoint(emb=_trained("adam")).write(str(tmp_path / "adam"))
    ftrl = graphopt.EmbeddingVariable(4, optimizer="ftrl")
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"holds slots \['m', 'v'\]"):
        ftrl.restore_from(path, "emb/.ATTRIBUTES/table")
    keys, values = tf.constant([1], tf.int64), tf.zeros([1, 4])
    zeros = tf.zeros([1], tf.int64)
    with pytest.raises(tf.errors.InvalidArgumentError, match="belong to optimizer 'adam'"):
        lib.graphopt_ev_import_with_slots(
            ftrl.handle,
            keys,
            values,
            zeros,
            zeros,
            [tf.zeros([1, 4])] * 2,
            zeros[:0],
            zeros[:0],
            dim=4,
            optimizer="adam",
        )
    with pytest.raises(tf.errors.InvalidArgumentError, match="importing 1 slots"):
        lib.graphopt_ev_import_with_slots(
            ftrl.handle,
            keys,
            values,
            zeros,
            zeros,
            [tf.zeros([1, 4])],
            zeros[:0],
            zeros[:0],
            dim=4,
            optimizer="",
        )
    with pytest.raises(tf.errors.InvalidArgumentError, match="asks for 1 slots"):
        lib.graphopt_ev_export_with_slots(ftrl.handle, dim=4, num_slots=1)
    with pytest.raises(tf.errors.InvalidArgumentError, match="do not match the slots"):
        ftrl.import_(keys, values, slots={"m": tf.zeros([1, 4])})
