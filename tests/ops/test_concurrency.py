"""Parallel find / find-or-insert / insert / export lose no key and tear no row."""

import os
import subprocess
import sys
import threading

import numpy as np
import tensorflow as tf

import graphopt
from graphopt import EmbeddingVariable

DIM = 16


def _row_of(keys, generation):
    """A row whose every column encodes (key, generation): a torn row mixes two of them."""
    keys = np.asarray(keys, np.int64)
    return np.repeat(((keys % 100_000) * 10 + generation).astype(np.float32)[:, None], DIM, 1)


def _assert_rows_whole(keys, rows, generations):
    rows = np.asarray(rows)
    assert (rows == rows[:, :1]).all(), "a row mixes columns from two writes"
    base = (np.asarray(keys) % 100_000) * 10
    assert np.isin(rows[:, 0] - base, list(generations)).all()


def test_threads_find_insert_export_concurrently():
    ev = EmbeddingVariable(DIM, initializer="zeros")
    stable = np.arange(0, 40_000, dtype=np.int64) * 3  # present from the start
    fresh = np.arange(0, 40_000, dtype=np.int64) * 3 + 1  # inserted while others read
    ev.insert(stable, _row_of(stable, 1))
    errors = []
    rng = np.random.default_rng(0)

    def guarded(fn):
        def run():
            try:
                fn()
            except Exception as e:  # noqa: BLE001  (reported by the main thread)
                errors.append(e)

        return threading.Thread(target=run)

    def reader():
        for _ in range(15):
            ids = rng.choice(stable, 8192)
            _assert_rows_whole(ids, ev.lookup(ids).numpy(), {1, 2})

    def rewriter():
        for chunk in np.array_split(stable, 10):
            ev.insert(chunk, _row_of(chunk, 2))

    def inserter():
        for chunk in np.array_split(fresh, 10):
            ev.insert(chunk, _row_of(chunk, 3))

    def trainer():
        for chunk in np.array_split(np.arange(40_000, dtype=np.int64) * 3 + 2, 10):
            rows = ev.lookup(chunk, insert_missing=True, step=1).numpy()
            assert (rows == 0).all()

    def exporter():
        for _ in range(4):
            keys, values, _, _ = (t.numpy() for t in ev.export())
            assert len(np.unique(keys)) == len(keys)
            mine = keys % 3 != 2
            _assert_rows_whole(keys[mine], values[mine], {1, 2, 3})
            assert np.isin(stable, keys).all()

    threads = [guarded(f) for f in (reader, reader, rewriter, inserter, trainer, exporter)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "deadlock: threads still running after 120 s"
    assert not errors, errors
    assert int(ev.size()) == 3 * 40_000
    np.testing.assert_array_equal(ev.lookup(stable).numpy(), _row_of(stable, 2))
    np.testing.assert_array_equal(ev.lookup(fresh).numpy(), _row_of(fresh, 3))


def test_inter_op_parallel_graph_find_or_insert_same_keys():
    """Many find-or-insert ops on overlapping keys in one graph: one row per key, counts add up."""
    ev = EmbeddingVariable(DIM, seed=5)
    batches = [np.random.default_rng(i).integers(0, 20_000, 30_000) for i in range(8)]

    @tf.function
    def train():
        return [
            ev.lookup(tf.constant(b, tf.int64), insert_missing=True, step=i + 1)
            for i, b in enumerate(batches)
        ]

    outs = [o.numpy() for o in train()]
    all_ids = np.concatenate(batches)
    keys, values, freqs, versions = (t.numpy() for t in ev.export())
    assert len(keys) == len(np.unique(all_ids))
    counts = dict(zip(*np.unique(all_ids, return_counts=True), strict=False))
    assert [counts[k] for k in keys] == freqs.tolist()
    row_of = dict(zip(keys.tolist(), values, strict=False))
    for ids, out in zip(batches, outs, strict=False):  # every op returned the one stored (deterministic) row
        np.testing.assert_array_equal(out, np.stack([row_of[k] for k in ids.tolist()]))
    fresh = EmbeddingVariable(DIM, seed=5)
    np.testing.assert_array_equal(fresh.lookup(keys, insert_missing=True).numpy(), values)
    assert versions.max() <= 8 and versions.min() >= 1


def test_export_and_import_beside_finds_with_a_one_thread_pool():
    """Export/import hold every shard lock: they must not wait on a pool whose only thread
    is a find blocked behind those locks (this deadlocked once)."""
    code = """
import threading, numpy as np, tensorflow as tf
tf.config.threading.set_intra_op_parallelism_threads(1)
import graphopt
ev = graphopt.EmbeddingVariable(8)
keys = np.arange(200_000)
ev.insert(keys, np.ones((len(keys), 8), np.float32))
def finds():
    for _ in range(20):
        ev.lookup(keys)
threads = [threading.Thread(target=finds) for _ in range(2)]
for t in threads: t.start()
for _ in range(10):
    k, v, f, s = ev.export()
    ev.import_(k, v, f, s)
for t in threads: t.join()
assert int(ev.size()) == len(keys)
"""
    subprocess.run(
        [sys.executable, "-c", code], check=True, timeout=120, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    )


def test_threads_apply_find_export_concurrently():
    """Sparse updates beside finds, find-or-inserts and exports: no deadlock, no lost
    update (SGD with a constant gradient: every key's total is exact), no torn slot."""
    dim, lr = 8, 0.5
    ev = EmbeddingVariable(dim, optimizer="adagrad", initializer="zeros")
    keys = np.arange(30_000, dtype=np.int64)
    ev.insert(keys, np.zeros((len(keys), dim), np.float32))
    sgd = EmbeddingVariable(dim, optimizer=graphopt.ops.optimizers.SGD(lr), initializer="zeros")
    sgd.insert(keys, np.zeros((len(keys), dim), np.float32))
    rounds, appliers = 6, 3
    errors = []

    def guarded(fn):
        def run():
            try:
                fn()
            except Exception as e:  # noqa: BLE001  (reported by the main thread)
                errors.append(e)

        return threading.Thread(target=run)

    def applier():
        for _ in range(rounds):
            ones = np.ones((len(keys), dim), np.float32)
            ev.apply_gradients(keys, ones)
            sgd.apply_gradients(keys, ones)  # -0.5 per round, exact in float32

    def finder():
        for _ in range(10):
            rows = sgd.lookup(keys[::7]).numpy()
            assert (rows == rows[:, :1]).all(), "a row mixes two updates"

    def trainer():
        for i in range(5):
            ev.lookup(np.arange(30_000 + i * 5_000, 35_000 + i * 5_000), insert_missing=True)

    def exporter():
        for _ in range(4):
            k, values, _, _, slots = ev.export_with_slots()
            acc = slots["accumulator"].numpy()
            assert len(np.unique(k.numpy())) == len(k.numpy())
            # every accumulator column got the same updates: a torn row would differ
            assert (acc == acc[:, :1]).all()

    threads = [guarded(f) for f in [applier] * appliers + [finder, trainer, exporter]]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=180)
    assert not any(t.is_alive() for t in threads), "deadlock: threads still running after 180 s"
    assert not errors, errors
    total = rounds * appliers
    np.testing.assert_array_equal(
        sgd.lookup(keys).numpy(), np.full((len(keys), dim), -lr * total, np.float32)
    )
    acc = ev.export_with_slots()[4]["accumulator"].numpy()
    assert int(ev.size()) == 55_000
    updated = np.float32(0.1)
    for _ in range(total):
        updated += np.float32(1)  # g*g per apply, in float32 as the kernel adds it
    assert set(np.unique(acc).tolist()) == {np.float32(0.1), updated}  # fresh rows, applied rows
