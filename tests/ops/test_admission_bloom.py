"""Admission in a counting Bloom filter (admission='bloom'): bounded bytes, no false negatives,
a false-positive rate the standard formula predicts, checkpoints, bad configuration."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

import graphopt
from graphopt.keras import DynamicEmbedding


def bloom(**kwargs):
    options = {
        "min_count": 2,
        "admission": "bloom",
        "bloom_counters": 1 << 16,
        "bloom_hashes": 3,
        "initializer": "zeros",
        "default_value": -1.0,
    }
    options.update(kwargs)
    return graphopt.EmbeddingVariable(4, **options)


def stats(ev):
    return {k: int(v) for k, v in ev.stats().items()}


def test_bytes_stay_bounded_under_a_stream_of_unique_keys():
    """Rows capped, so what could grow is the admission state: the filter's bytes are fixed,
    the exact counters grow with every key seen once."""
    tables = {"bloom": bloom(max_rows=1024), "counter": bloom(max_rows=1024, admission="counter")}
    bytes_at = {name: [] for name in tables}
    for batch in range(12):
        keys = np.arange(batch * 10_000, (batch + 1) * 10_000, dtype=np.int64)
        for name, ev in tables.items():
            ev.lookup(keys, insert_missing=True, step=batch)
            bytes_at[name].append(stats(ev)["bytes"])
    # the filter and the capped rows: nothing grows after the cap is reached
    assert max(bytes_at["bloom"][3:]) - bytes_at["bloom"][3] < 0.01 * bytes_at["bloom"][3]
    # the exact counters: at least 16 bytes more per key seen once (8 of 12 batches later)
    assert bytes_at["counter"][-1] - bytes_at["counter"][3] > 16 * 80_000
    assert stats(tables["bloom"])["size"] <= 1024


def test_a_key_seen_min_count_times_is_admitted_with_its_initializer_row():
    ev = bloom(min_count=3, initializer=None, seed=9, optimizer="sgd")
    reference = graphopt.EmbeddingVariable(4, seed=9).lookup([7], insert_missing=True).numpy()
    for step in (1, 2):
        np.testing.assert_array_equal(ev.lookup([7], insert_missing=True, step=step).numpy(), [[-1.0] * 4])
        ev.apply_gradients([7], np.ones((1, 4), np.float32))  # no row: dropped
        assert int(ev.size()) == 0
    np.testing.assert_array_equal(ev.lookup([7], insert_missing=True, step=3).numpy(), reference)
    _, _, freqs, versions = ev.export()
    assert freqs.numpy().tolist() == [3] and versions.numpy().tolist() == [3]
    # no false negatives: each of many keys seen twice is admitted at its second sighting
    ev = bloom()
    keys = np.random.default_rng(1).permutation(20_000).astype(np.int64) - 10_000
    ev.lookup(keys, insert_missing=True)
    ev.lookup(keys[::2], insert_missing=True)
    assert set(keys[::2].tolist()) <= set(ev.export()[0].numpy().tolist())


def test_false_positive_rate_matches_the_bloom_formula():
    """Keys seen once are admitted early only when all their counters were raised by other
    keys: about (1 - exp(-k x / m))^k after x distinct keys, averaged over the stream."""
    m, k, n = 1 << 16, 3, 12_000
    ev = bloom(bloom_counters=m, bloom_hashes=k)
    ev.lookup(np.arange(n, dtype=np.int64) * 7919, insert_missing=True)  # distinct, seen once
    early = stats(ev)["size"] / n
    predicted = np.mean([(1 - math.exp(-k * x / m)) ** k for x in range(n)])
    assert predicted / 2 < early < predicted * 2, (early, predicted)
    # the estimate of distinct keys counted, from the filter's nonzero counters
    assert abs(stats(ev)["pending"] - n) < 0.05 * n


def test_filter_checkpoint_round_trip(tmp_path):
    ev = bloom(optimizer="adagrad")
    ev.lookup(np.arange(1000, dtype=np.int64), insert_missing=True)  # seen once
    before = ev._snapshot()[5]
    path = tf.train.Checkpoint(emb=ev).write(str(tmp_path / "ckpt"))
    reader = tf.train.load_checkpoint(path)
    assert reader.has_tensor("emb/.ATTRIBUTES/table-bloom-index")
    restored = bloom(optimizer="adagrad")
    tf.train.Checkpoint(emb=restored).read(path).assert_consumed()
    for a, b in zip(before, restored._snapshot()[5], strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    # the second sighting after the restore admits every key (the first was restored)
    restored.lookup(np.arange(1000, dtype=np.int64), insert_missing=True)
    assert int(restored.size()) == 1000
    # another filter layout is refused, not misread
    other = bloom(optimizer="adagrad", bloom_counters=1 << 15)
    with pytest.raises(tf.errors.InvalidArgumentError, match="bloom_counters=65536"):
        other.import_([], np.zeros((0, 4), np.float32), pending=before)
    keys, counts = (t.numpy().copy() for t in before)
    keys[1] = 1 << 20
    with pytest.raises(tf.errors.InvalidArgumentError, match="out of range"):
        restored.import_([], np.zeros((0, 4), np.float32), pending=(keys, counts))
    # an import without filter state starts an empty filter
    restored.import_([], np.zeros((0, 4), np.float32))
    assert stats(restored)["pending"] == 0


def test_keras_layer_config_and_save_round_trip(tmp_path):
    layer = DynamicEmbedding(
        4,
        optimizer="adagrad",
        min_count=2,
        admission="bloom",
        bloom_counters=4096,
        bloom_hashes=2,
        name="emb",
    )
    ids = keras.Input(shape=(), dtype="int64")
    model = keras.Model(ids, keras.layers.Dense(1)(layer(ids)))
    model.compile(optimizer="adagrad", loss="mse")
    x = np.arange(300, dtype=np.int64)
    model.fit(x, np.ones(300), batch_size=100, verbose=0)
    assert int(layer.table.size()) < 30  # seen once: early admissions only
    path = str(tmp_path / "m.keras")
    model.save(path)
    reloaded = keras.saving.load_model(path).get_layer("emb")
    config = reloaded.get_config()
    assert (config["admission"], config["bloom_counters"], config["bloom_hashes"]) == ("bloom", 4096, 2)
    for a, b in zip(layer.table._snapshot()[5], reloaded.table._snapshot()[5], strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"admission": "cuckoo"}, "admission must be one of"),
        ({"min_count": 1}, "min_count in \\[2, 255\\]"),
        ({"min_count": 256}, "min_count in \\[2, 255\\]"),
        ({"bloom_counters": 10}, "bloom_counters in"),
        ({"bloom_hashes": 0}, "bloom_hashes in"),
        ({"bloom_hashes": 17}, "bloom_hashes in"),
    ],
)
def test_bad_bloom_config(kwargs, message):
    with pytest.raises(tf.errors.InvalidArgumentError, match=message):
        bloom(**kwargs)


def test_handle_op_refuses_bad_bloom_config(lib):
    base = {"dim": 2, "min_count": 2, "admission": "bloom"}
    for attrs, message in [
        ({"admission": "x"}, "admission must be counter or bloom"),
        ({"min_count": 1}, "needs min_count in"),
        ({"min_count": 300}, "needs min_count in"),
        ({"bloom_counters": 63}, "bloom_counters must be in"),
        ({"bloom_hashes": 17}, "bloom_hashes must be in"),
    ]:
        with pytest.raises(tf.errors.InvalidArgumentError, match=message):
            lib.graphopt_ev_handle_op(shared_name="bad_bloom", **{**base, **attrs})


def test_concurrent_find_or_insert_stats_and_export():
    """Threads counting overlapping keys while others read stats and export: every key seen
    twice ends up admitted (no count lost under the shard locks), nothing deadlocks."""
    import threading

    ev = bloom(bloom_counters=1 << 20)
    keys = np.arange(40_000, dtype=np.int64)
    errors = []

    def count(part):
        try:
            for chunk in np.array_split(part, 20):
                ev.lookup(chunk, insert_missing=True)
        except Exception as exc:  # noqa: BLE001 (reported below)
            errors.append(exc)

    def read():
        try:
            for _ in range(20):
                stats(ev)
                ev._snapshot()
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    # each key is looked up by exactly two of the four counting threads
    threads = [threading.Thread(target=count, args=(keys[i::2],)) for i in (0, 1, 0, 1)]
    threads += [threading.Thread(target=read) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not errors and not any(t.is_alive() for t in threads)
    assert set(ev.export()[0].numpy().tolist()) == set(keys.tolist())
