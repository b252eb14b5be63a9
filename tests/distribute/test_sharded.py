"""ShardedEmbeddingVariable in one process: routing, equality with one table, resharding."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

import graphopt
from graphopt.distribute import ShardedEmbeddingVariable, fmix64, shard_of

CPU = "/cpu:0"


def fmix64_numpy(keys):
    h = keys.astype(np.int64).view(np.uint64)
    with np.errstate(over="ignore"):
        h = (h ^ (h >> np.uint64(33))) * np.uint64(0xFF51AFD7ED558CCD)
        h = (h ^ (h >> np.uint64(33))) * np.uint64(0xC4CEB9FE1A85EC53)
    return h ^ (h >> np.uint64(33))


def test_fmix64_and_routing_bits():
    keys = np.array([0, 1, -1, -2, 2**63 - 1, -(2**63), 12345678901], np.int64)
    np.testing.assert_array_equal(fmix64(tf.constant(keys)).numpy(), fmix64_numpy(keys))
    h = fmix64_numpy(keys)
    expected = (((h >> np.uint64(32)) & np.uint64(2**26 - 1)) * np.uint64(5)) >> np.uint64(26)
    np.testing.assert_array_equal(shard_of(tf.constant(keys), 5).numpy(), expected.astype(np.int32))
    # int32 ids route like the same int64 ids
    np.testing.assert_array_equal(shard_of(tf.constant([1, -1], tf.int32), 5).numpy(), expected[[1, 2]])


@pytest.mark.parametrize("num_shards", [2, 3, 8])
def test_keys_spread_across_shards(num_shards):
    rng = np.random.default_rng(0)
    for keys in (rng.integers(-(2**63), 2**63 - 1, size=1_000_000, dtype=np.int64), np.arange(1_000_000)):
        counts = np.bincount(shard_of(tf.constant(keys), num_shards).numpy(), minlength=num_shards)
        assert counts.max() / counts.mean() < 1.2, counts
        assert counts.max() / counts.mean() < 1.01, counts  # what the hash actually gives
    # A PS shard's keys still spread over the table's own 64 shards (top 6 hash bits).
    seq = np.arange(1_000_000)
    mine = seq[shard_of(tf.constant(seq), num_shards).numpy() == 0]
    inner = np.bincount((fmix64_numpy(mine) >> np.uint64(58)).astype(np.int64), minlength=64)
    assert inner.max() / inner.mean() < 1.2


def test_key_mod_n_would_not_spread():
    """The routing is not key mod N: ids that are all multiples of N still spread."""
    keys = np.arange(0, 3_000_000, 3)
    counts = np.bincount(shard_of(tf.constant(keys), 3).numpy(), minlength=3)
    assert counts.max() / counts.mean() < 1.2


def _loss(rows):
    return tf.reduce_sum(rows * rows * tf.range(1, rows.shape[-1] + 1, dtype=tf.float32))


@pytest.mark.parametrize("optimizer", ["adagrad", "adam", "ftrl"])
def test_training_equals_single_table(optimizer):
    ids = [np.random.default_rng(s).integers(0, 300, size=(40, 3)) for s in range(4)]
    single = graphopt.EmbeddingVariable(6, optimizer=optimizer, seed=11, min_count=2)
    sharded = ShardedEmbeddingVariable(6, devices=[CPU] * 3, optimizer=optimizer, seed=11, min_count=2)
    for step, batch in enumerate(ids, 1):
        with tf.GradientTape(persistent=True) as tape:
            tape.watch(single.handle)
            tape.watch(sharded.handles)
            a = single.lookup(batch, insert_missing=True, step=step)
            b = sharded.lookup(batch, insert_missing=True, step=step)
            loss_a, loss_b = _loss(a), _loss(b)
        np.testing.assert_array_equal(a.numpy(), b.numpy())
        single.apply_gradients(tape.gradient(loss_a, single.handle), step=step)
        if step % 2:
            sharded.apply_gradients(tape.gradient(loss_b, sharded.handles), step=step)
        else:  # keys + grads are routed like a lookup
            g = tape.gradient(loss_b, b)
            sharded.apply_gradients(batch, g, step=step)
    probe = np.arange(-5, 305)
    np.testing.assert_array_equal(single.lookup(probe).numpy(), sharded.lookup(probe).numpy())
    assert int(sharded.size()) == int(single.size()) == int(sharded.shard_sizes().numpy().sum())
    assert min(sharded.shard_sizes().numpy()) > 0


def _content(table):
    from graphopt.ops.embedding_variable import checkpoint_tensors

    tensors = (
        table._checkpoint_tensors()
        if isinstance(table, ShardedEmbeddingVariable)
        else checkpoint_tensors(table)
    )
    order = np.argsort(tensors["-keys"].numpy())
    pending = tensors.get("-pending-keys")
    out = {k: v.numpy()[order] for k, v in tensors.items() if "pending" not in k}
    if pending is not None:
        p = np.argsort(pending.numpy())
        out["pending"] = (pending.numpy()[p], tensors["-pending-counts"].numpy()[p])
    return out


def _assert_same(a, b):
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_reshard_2_to_3_and_to_one_serving_table(tmp_path):
    two = ShardedEmbeddingVariable(4, devices=[CPU] * 2, optimizer="adam", seed=1, min_count=2)
    for step in range(1, 4):
        two.lookup(np.arange(step * 100), insert_missing=True, step=step)
        two.apply_gradients(np.arange(50), np.full((50, 4), 0.5, np.float32), step=step)
    saved = _content(two)
    assert len(saved["-keys"]) == 200 and len(saved["pending"][0]) == 100  # keys 200..299 seen once
    path = tf.train.Checkpoint(emb=two).write(str(tmp_path / "two"))

    three = ShardedEmbeddingVariable(4, devices=[CPU] * 3, optimizer="adam", seed=1, min_count=2)
    tf.train.Checkpoint(emb=three).read(path).assert_consumed()
    _assert_same(_content(three), saved)
    assert three.shard_sizes().numpy().tolist() == [
        int(np.sum(shard_of(tf.constant(saved["-keys"]), 3).numpy() == i)) for i in range(3)
    ]
    one = graphopt.EmbeddingVariable(4, optimizer="adam", seed=1, min_count=2)
    tf.train.Checkpoint(emb=one).read(path).assert_consumed()
    _assert_same(_content(one), saved)
    # and back: a single table's checkpoint restores into shards
    back = ShardedEmbeddingVariable(4, devices=[CPU] * 2, optimizer="adam", seed=1, min_count=2)
    tf.train.Checkpoint(emb=back).read(tf.train.Checkpoint(emb=one).write(str(tmp_path / "one")))
    _assert_same(_content(back), saved)


def test_serving_savedmodel_from_sharded_checkpoint(tmp_path):
    sharded = ShardedEmbeddingVariable(4, devices=[CPU] * 2, seed=2)
    sharded.lookup(np.arange(1000), insert_missing=True)
    path = tf.train.Checkpoint(emb=sharded).write(str(tmp_path / "ckpt"))

    class Serving(tf.Module):
        def __init__(self):
            super().__init__()
            self.emb = graphopt.EmbeddingVariable(4, seed=2)

        @tf.function(input_signature=[tf.TensorSpec([None], tf.int64, name="ids")])
        def serve(self, ids):
            return {"rows": self.emb.lookup(ids)}

    model = Serving()
    tf.train.Checkpoint(emb=model.emb).read(path).assert_consumed()
    tf.saved_model.save(model, str(tmp_path / "serving" / "1"), signatures={"serving_default": model.serve})
    loaded = tf.saved_model.load(str(tmp_path / "serving" / "1"))
    ids = np.array([5, 999, 1000, 17], np.int64)
    rows = loaded.signatures["serving_default"](ids=tf.constant(ids))["rows"].numpy()
    np.testing.assert_array_equal(rows, sharded.lookup(ids).numpy())
    assert not rows[2].any()  # 1000 was never inserted: the default row
    # graphopt serve serves it on one machine (TF Serving's REST protocol)
    served = subprocess.run(
        [
            sys.executable,
            "-m",
            "graphopt",
            "serve",
            str(tmp_path / "serving"),
            "--model-name",
            "emb",
            "--rest-port",
            "0",
            "--grpc-port",
            "0",
            "--once",
            "--request",
            '{"instances": [5, 999]}',
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    predictions = json.loads(served.stdout.strip().splitlines()[-1])["predictions"]
    np.testing.assert_array_equal(np.array(predictions, np.float32), rows[:2])


def test_tf1_saver_saves_one_logical_table(tmp_path):
    v1 = tf.compat.v1
    graph = tf.Graph()
    with graph.as_default():
        table = ShardedEmbeddingVariable(3, devices=[CPU] * 2, name="emb", seed=4)
        insert = table.lookup(tf.range(20, dtype=tf.int64), insert_missing=True)
        saver = v1.train.Saver()
        with v1.Session() as session:
            expected = session.run(insert)
            prefix = saver.save(session, str(tmp_path / "model.ckpt"))
    names = dict(tf.train.list_variables(prefix))
    assert names["emb-keys"] == [20] and names["emb-values"] == [20, 3]
    assert not any("part" in n for n in names)
    with tf.Graph().as_default():
        single = graphopt.EmbeddingVariable(3, name="emb", seed=99)
        rows = single.lookup(tf.range(20, dtype=tf.int64))
        with v1.Session() as session:
            v1.train.Saver().restore(session, prefix)
            np.testing.assert_array_equal(session.run(rows), expected)


def test_bad_arguments():
    with pytest.raises(tf.errors.InvalidArgumentError, match="3 shards need 3 devices"):
        ShardedEmbeddingVariable(4, num_shards=3, devices=[CPU] * 2)
    with pytest.raises(tf.errors.InvalidArgumentError, match="num_shards or devices"):
        ShardedEmbeddingVariable(4)
    with pytest.raises(tf.errors.InvalidArgumentError, match="positive int"):
        ShardedEmbeddingVariable(4, num_shards=0)
    table = ShardedEmbeddingVariable(4, devices=[CPU] * 2, optimizer="sgd")
    with pytest.raises(tf.errors.InvalidArgumentError, match="2 IndexedSlices"):
        table.apply_gradients([None])


def test_evict_and_stats_match_one_table():
    single = graphopt.EmbeddingVariable(4, seed=3)
    sharded = ShardedEmbeddingVariable(4, devices=[CPU] * 3, seed=3)
    for step in range(1, 6):
        ids = np.arange(step * 40) if step % 2 else np.arange(0, step * 40, 3)
        single.lookup(ids, insert_missing=True, step=step)
        sharded.lookup(ids, insert_missing=True, step=step)
    a = np.sort(single.evict(step=5, ttl=1, min_freq=2).numpy())
    b = np.sort(sharded.evict(step=5, ttl=1, min_freq=2).numpy())
    assert a.size > 0
    np.testing.assert_array_equal(a, b)
    one, many = single.stats(), sharded.stats()
    assert {k: int(v) for k, v in one.items() if k != "bytes"} == {
        k: int(v) for k, v in many.items() if k != "bytes"
    }
    evicted = sharded.evict(max_rows=30).numpy()
    assert int(sharded.size()) == 30 and evicted.size == int(single.size()) - 30
    assert sorted(sharded.shard_sizes().numpy().tolist()) == [10, 10, 10]
    with pytest.raises(tf.errors.InvalidArgumentError, match="leaves shard 2 of 3 no row"):
        sharded.evict(max_rows=2)


def test_save_parts_one_file_per_shard_restores_into_any_number(tmp_path):
    two = ShardedEmbeddingVariable(4, devices=[CPU] * 2, optimizer="adagrad", seed=1, min_count=2)
    for step in range(1, 4):
        two.lookup(np.arange(step * 100), insert_missing=True, step=step)
        two.apply_gradients(np.arange(60), np.full((60, 4), 0.25, np.float32), step=step)
    saved = _content(two)
    prefixes = two.save_parts(str(tmp_path / "table"))
    assert [os.path.basename(p) for p in prefixes] == ["table-part-0-of-2", "table-part-1-of-2"]
    for i, part in enumerate(prefixes):  # each file holds exactly its shard
        np.testing.assert_array_equal(
            np.sort(tf.train.load_checkpoint(part).get_tensor("table-keys")),
            np.sort(two.shards[i].export()[0].numpy()),
        )
    for devices in ([CPU] * 3, [CPU]):
        other = ShardedEmbeddingVariable(4, devices=devices, optimizer="adagrad", seed=1, min_count=2)
        other.restore_parts(str(tmp_path / "table"))
        _assert_same(_content(other), saved)
    with pytest.raises(tf.errors.InvalidArgumentError, match="no parts"):
        two.restore_parts(str(tmp_path / "absent"))
    os.remove(prefixes[1] + ".index")
    with pytest.raises(tf.errors.InvalidArgumentError, match="parts missing"):
        two.restore_parts(str(tmp_path / "table"))
