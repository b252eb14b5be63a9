"""The raw GraphoptEv* kernels, checked against plain TensorFlow (tf.gather on the same rows)."""

import numpy as np
import pytest
import tensorflow as tf

import graphopt
from graphopt import EmbeddingVariable
from tests.ops.conftest import EXTREME_KEYS


def _filled(dim, keys, seed=0):
    ev = EmbeddingVariable(dim, initializer="zeros")
    rows = np.random.default_rng(seed).standard_normal((len(keys), dim)).astype(np.float32)
    ev.insert(keys, rows)
    return ev, rows


@pytest.mark.parametrize("key_dtype", [np.int32, np.int64])
@pytest.mark.parametrize("n", [5, 300, 5000])  # per-key locks, one block, several blocks
def test_find_matches_gather(lib, key_dtype, n):
    rng = np.random.default_rng(n)
    vocab = np.unique(
        rng.integers(np.iinfo(key_dtype).min, np.iinfo(key_dtype).max, size=2000, dtype=key_dtype)
    )
    ev, rows = _filled(16, vocab)
    pick = rng.integers(0, len(vocab), size=n)
    ids = tf.constant(vocab[pick].reshape(-1, 1 if n % 2 else 5) if n != 5 else vocab[pick])
    got = lib.graphopt_ev_find(ev.handle, ids, dim=16)
    want = tf.gather(rows, tf.constant(pick.reshape(ids.shape)))
    assert got.shape == ids.shape + [16]
    np.testing.assert_array_equal(got.numpy(), want.numpy())


def test_extreme_keys_are_ordinary_keys(lib):
    ev, rows = _filled(8, EXTREME_KEYS)
    assert int(ev.size()) == len(EXTREME_KEYS)
    np.testing.assert_array_equal(ev.lookup(EXTREME_KEYS).numpy(), rows)
    keys, values, _, _ = ev.export()
    order = np.argsort(keys.numpy())
    np.testing.assert_array_equal(keys.numpy()[order], np.sort(EXTREME_KEYS))
    np.testing.assert_array_equal(values.numpy()[order], rows[np.argsort(EXTREME_KEYS)])


def test_default_rows(lib):
    assert not EmbeddingVariable(3).lookup([4]).numpy().any()
    np.testing.assert_array_equal(
        EmbeddingVariable(3, default_value=2.5).lookup([4, 5]).numpy(), np.full((2, 3), 2.5, np.float32)
    )
    ev = EmbeddingVariable(3, default_value=[1.0, 2.0, 3.0])
    ev.insert([7], [[9.0, 9.0, 9.0]])
    np.testing.assert_array_equal(ev.lookup([4, 7]).numpy(), [[1, 2, 3], [9, 9, 9]])
    assert int(ev.size()) == 1  # find inserts nothing


def test_find_or_insert_is_deterministic_per_seed_and_key(lib):
    keys = np.arange(-50, 50, dtype=np.int64)
    a = EmbeddingVariable(32, initializer="truncated_normal", seed=7)
    b = EmbeddingVariable(32, initializer="truncated_normal", seed=7)
    c = EmbeddingVariable(32, initializer="truncated_normal", seed=8)
    rows_a = a.lookup(keys, insert_missing=True).numpy()
    # another order, in two batches, duplicated: the same rows
    perm = np.random.default_rng(0).permutation(keys)
    b.lookup(np.concatenate([perm[:30], perm[:30]]), insert_missing=True)
    rows_b = b.lookup(keys, insert_missing=True).numpy()
    np.testing.assert_array_equal(rows_a, rows_b)
    assert not np.allclose(rows_a, c.lookup(keys, insert_missing=True).numpy())
    # truncated at two standard deviations: the std of N(0,1) cut at ±2 is 0.880
    assert np.abs(rows_a).max() <= 2.0 and abs(rows_a.std() - 0.880) < 0.05
    np.testing.assert_array_equal(a.lookup(keys).numpy(), rows_a)  # they were stored


@pytest.mark.parametrize(
    "initializer, check",
    [
        ("zeros", lambda r: not r.any()),
        ("ones", lambda r: (r == 1).all()),
        (tf.keras.initializers.Constant(0.25), lambda r: (r == 0.25).all()),
        (tf.keras.initializers.RandomUniform(2.0, 3.0), lambda r: r.min() >= 2 and r.max() < 3),
        (tf.random_normal_initializer(5.0, 0.1), lambda r: abs(r.mean() - 5) < 0.05),
    ],
)
def test_initializers(initializer, check):
    rows = EmbeddingVariable(16, initializer=initializer).lookup(np.arange(200), insert_missing=True).numpy()
    assert check(rows)


def test_freqs_and_versions(lib):
    ev = EmbeddingVariable(4)
    ev.lookup([1, 1, 2], insert_missing=True, step=5)
    ev.lookup([1, 3], insert_missing=True, step=9)
    ev.lookup([2], insert_missing=True, step=2)  # an older step does not move it back
    ev.lookup([1, 2, 3, 99])  # find counts nothing
    ev.insert([4], [[0.0] * 4])
    keys, _, freqs, versions = (t.numpy() for t in ev.export())
    got = {k: (f, v) for k, f, v in zip(keys, freqs, versions, strict=False)}
    assert got == {1: (3, 9), 2: (2, 5), 3: (1, 9), 4: (0, 0)}


def test_insert_last_duplicate_wins_and_remove(lib):
    ev = EmbeddingVariable(2)
    ev.insert([5, 6, 5], [[1, 1], [2, 2], [3, 3]])
    np.testing.assert_array_equal(ev.lookup([5, 6]).numpy(), [[3, 3], [2, 2]])
    ev.remove([5, 77])
    assert int(ev.size()) == 1
    np.testing.assert_array_equal(ev.lookup([5, 6]).numpy(), [[0, 0], [2, 2]])


def test_remove_keeps_every_other_key_findable(lib):
    keys = np.arange(20000, dtype=np.int64) * 7919
    ev, rows = _filled(4, keys)
    gone = keys[::3]
    ev.remove(gone)
    kept = np.setdiff1d(keys, gone)
    assert int(ev.size()) == len(kept)
    np.testing.assert_array_equal(ev.lookup(kept).numpy(), rows[np.isin(keys, kept)])
    assert not ev.lookup(gone).numpy().any()
    ev.insert(gone, np.ones((len(gone), 4), np.float32))  # freed rows are reused
    assert int(ev.size()) == len(keys)
    np.testing.assert_array_equal(ev.lookup(gone).numpy(), np.ones((len(gone), 4)))


SLAB = 2 << 20  # chunk_arena.h: a large table's chunks share 2 MiB huge-page slabs


def test_memory_report(lib):
    n = 50_000  # 13 MB of rows: below the 16 MiB after which chunks come from slabs
    ev = EmbeddingVariable(64)
    empty_bytes, _ = (int(t) for t in ev.memory())
    ev.insert(np.arange(n), np.zeros((n, 64), np.float32))
    used, capacity = (int(t) for t in ev.memory())
    assert capacity >= n
    per_key = (used - empty_bytes) / n
    assert 256 < per_key < 256 * 1.2, per_key


def test_a_large_tables_rows_in_slabs_stay_exact_and_freed_chunks_are_reused(lib):
    """200,000 x 64 float32 rows (54 MB with their side arrays) cross the 16 MiB after which
    chunks are carved from slabs: rows stay exact through removal, reinsertion and a reimport
    (which frees every chunk and allocates them again), and reimporting takes no new memory."""
    n, dim = 200_000, 64
    rng = np.random.default_rng(24)
    keys = rng.permutation(np.arange(-n, n, dtype=np.int64))[:n]
    rows = rng.standard_normal((n, dim)).astype(np.float32)
    ev = EmbeddingVariable(dim, initializer="zeros")
    empty_bytes = int(ev.memory()[0])
    ev.insert(keys, rows)
    np.testing.assert_array_equal(ev.lookup(keys).numpy(), rows)
    used = int(ev.memory()[0])
    # rows, side arrays and index as below the threshold, plus at most one partly used slab
    assert 256 < (used - empty_bytes) / n < 256 * 1.2 + SLAB / n

    ev.remove(keys[::2])
    fresh = np.arange(n, n + n // 2, dtype=np.int64)
    ev.insert(fresh, rows[::2])  # into the freed rows
    np.testing.assert_array_equal(ev.lookup(keys[1::2]).numpy(), rows[1::2])
    np.testing.assert_array_equal(ev.lookup(fresh).numpy(), rows[::2])

    exported_keys, values, _, _ = ev.export()
    for _ in range(2):
        ev.import_(exported_keys, values)
        np.testing.assert_array_equal(ev.lookup(exported_keys).numpy(), values.numpy())
        reimported = int(ev.memory()[0])
        assert reimported <= used + SLAB, (reimported, used)
        used = reimported


def test_shape_functions(lib):
    @tf.function(input_signature=[tf.TensorSpec([None, 3], tf.int64)])
    def shapes(ids):
        ev_handle = lib.graphopt_ev_handle_op(dim=8, shared_name="shape_fn_test")
        found = lib.graphopt_ev_find(ev_handle, ids, dim=8)
        inserted = lib.graphopt_ev_find_or_insert(ev_handle, ids, tf.constant(0, tf.int64), dim=8)
        keys, values, freqs, versions = lib.graphopt_ev_export(ev_handle, dim=8)
        assert found.shape.as_list() == [None, 3, 8]
        assert inserted.shape.as_list() == [None, 3, 8]
        assert values.shape.as_list() == [None, 8] and keys.shape.rank == 1
        assert lib.graphopt_ev_size(ev_handle).shape.rank == 0
        return found

    shapes.get_concrete_function()
    with tf.Graph().as_default():
        handle = lib.graphopt_ev_handle_op(dim=4, shared_name="shape_fn_graph")
        with pytest.raises(ValueError, match="must be equal|incompatible|Dimension"):
            lib.graphopt_ev_insert(handle, tf.constant([1, 2], tf.int64), tf.zeros([2, 5]), dim=4)
        with pytest.raises(ValueError, match="rank"):
            lib.graphopt_ev_find_or_insert(
                handle, tf.constant([1], tf.int64), tf.constant([1, 2], tf.int64), dim=4
            )


def test_invalid_arguments_raise_invalid_argument(lib):
    ev = EmbeddingVariable(4)
    h = ev.handle
    bad = tf.errors.InvalidArgumentError
    with pytest.raises(bad, match="int32 or int64"):
        ev.lookup([1.5])
    with pytest.raises(bad, match=r"expected to be a int64|int32"):  # raw op, float keys
        lib.graphopt_ev_find(h, tf.constant([1.0]), dim=4)
    with pytest.raises(bad, match="has dim 4"):
        lib.graphopt_ev_find(h, tf.constant([1], tf.int64), dim=8)
    with pytest.raises(bad, match=r"keys.shape \+ \[dim\]"):
        lib.graphopt_ev_insert(h, tf.constant([1, 2], tf.int64), tf.zeros([2, 5]), dim=4)
    with pytest.raises(bad, match=r"keys.shape \+ \[dim\]"):
        lib.graphopt_ev_insert(h, tf.constant([1, 2], tf.int64), tf.zeros([3, 4]), dim=4)
    with pytest.raises(bad, match=r"keys.shape \+ \[dim\]"):
        ev.insert([1, 2], np.zeros((2, 3), np.float32))
    with pytest.raises(bad, match="keys must be 1-D"):
        lib.graphopt_ev_import(
            h,
            tf.zeros([2, 2], tf.int64),
            tf.zeros([4, 4]),
            tf.zeros([4], tf.int64),
            tf.zeros([4], tf.int64),
            dim=4,
        )
    with pytest.raises(bad, match="to match 2 keys"):
        lib.graphopt_ev_import(
            h,
            tf.constant([1, 2], tf.int64),
            tf.zeros([3, 4]),
            tf.zeros([2], tf.int64),
            tf.zeros([2], tf.int64),
            dim=4,
        )
    with pytest.raises(bad, match="freqs must have shape"):
        lib.graphopt_ev_import(
            h,
            tf.constant([1, 2], tf.int64),
            tf.zeros([2, 4]),
            tf.zeros([3], tf.int64),
            tf.zeros([2], tf.int64),
            dim=4,
        )
    with pytest.raises(bad, match="step must be a scalar"):
        lib.graphopt_ev_find_or_insert(h, tf.constant([1], tf.int64), tf.constant([1, 2], tf.int64), dim=4)
    with pytest.raises(bad, match="scalar resource handle"):
        lib.graphopt_ev_size(tf.stack([h, h]))
    with pytest.raises(bad, match="default_value must hold"):
        lib.graphopt_ev_handle_op(dim=4, default_value=[1.0, 2.0], shared_name="bad_default")
    with pytest.raises(bad, match="initializer must be one of"):
        lib.graphopt_ev_handle_op(dim=4, initializer="glorot", shared_name="bad_init")
    with pytest.raises(bad, match="already exists with dim 4"):
        lib.graphopt_ev_handle_op(dim=4, shared_name="shared_dim")
        lib.graphopt_ev_handle_op(dim=8, shared_name="shared_dim")
    with pytest.raises(bad, match="dim must be a positive int"):
        EmbeddingVariable(0)
    with pytest.raises(bad, match="key_dtype"):
        EmbeddingVariable(4, key_dtype=tf.float32)
    with pytest.raises(bad, match="default_value must be a scalar or 4"):
        EmbeddingVariable(4, default_value=[1.0, 2.0])
    assert int(ev.size()) == 0  # nothing half-applied


def test_import_replaces_content(lib):
    ev, _ = _filled(4, np.arange(100))
    ev.import_([5, -5, 5], np.arange(12, dtype=np.float32).reshape(3, 4), [1, 2, 3], [4, 5, 6])
    keys, values, freqs, versions = (t.numpy() for t in ev.export())
    order = np.argsort(keys)
    assert keys[order].tolist() == [-5, 5]
    np.testing.assert_array_equal(values[order], [[4, 5, 6, 7], [8, 9, 10, 11]])
    assert freqs[order].tolist() == [2, 3] and versions[order].tolist() == [5, 6]


def test_apply_ops_refuse_bad_input(lib):
    ev = EmbeddingVariable(4, optimizer="adagrad")
    h, bad = ev.handle, tf.errors.InvalidArgumentError
    keys = tf.constant([1, 2], tf.int64)
    grads = tf.zeros([2, 4])
    one = tf.constant(0.1)
    with pytest.raises(bad, match=r"grads must have shape \[2, 4\] to match 2 keys, got \[2,5\]"):
        lib.graphopt_ev_apply_adagrad(h, keys, tf.zeros([2, 5]), one, one, dim=4)
    with pytest.raises(bad, match=r"to match 2 keys, got \[3,4\]"):
        lib.graphopt_ev_apply_adagrad(h, keys, tf.zeros([3, 4]), one, one, dim=4)
    with pytest.raises(bad, match="keys must be 1-D"):
        lib.graphopt_ev_apply_adagrad(h, tf.constant([[1, 2]], tf.int64), grads, one, one, dim=4)
    with pytest.raises(bad, match="lr must be >= 0, got -0.1"):
        lib.graphopt_ev_apply_adagrad(h, keys, grads, tf.constant(-0.1), one, dim=4)
    with pytest.raises(bad, match="epsilon must be >= 0"):
        lib.graphopt_ev_apply_adagrad(h, keys, grads, one, tf.constant(-1e-7), dim=4)
    with pytest.raises(bad, match="lr must be finite"):
        lib.graphopt_ev_apply_adagrad(h, keys, grads, tf.constant(np.nan, tf.float32), one, dim=4)
    with pytest.raises(bad, match="lr must be a scalar"):
        lib.graphopt_ev_apply_adagrad(h, keys, grads, tf.constant([0.1]), one, dim=4)
    with pytest.raises(bad, match="created for optimizer 'adagrad'"):
        lib.graphopt_ev_apply_adam(h, keys, grads, one, one, one, one, one, one, dim=4)
    with pytest.raises(bad, match="has dim 4"):
        lib.graphopt_ev_apply_adagrad(h, keys, tf.zeros([2, 8]), one, one, dim=8)
    with pytest.raises((bad, TypeError), match="float|double"):  # raw op: grads must be float32
        lib.graphopt_ev_apply_adagrad(h, keys, tf.zeros([2, 4], tf.float64), one, one, dim=4)
    adam = EmbeddingVariable(4, optimizer="adam")
    with pytest.raises(bad, match=r"beta1 and beta2 must be in \[0, 1\)"):
        lib.graphopt_ev_apply_adam(adam.handle, keys, grads, one, tf.constant(1.0), one, one, one, one, dim=4)
    with pytest.raises(bad, match="beta1_power and beta2_power"):
        lib.graphopt_ev_apply_adam(adam.handle, keys, grads, one, one, one, one, tf.constant(1.0), one, dim=4)
    ftrl = EmbeddingVariable(4, optimizer="ftrl")
    with pytest.raises(bad, match="lr_power must be <= 0"):
        lib.graphopt_ev_apply_ftrl(ftrl.handle, keys, grads, one, one, one, tf.constant(0.5), dim=4)
    with pytest.raises(bad, match="FTRL's lr must be > 0"):
        lib.graphopt_ev_apply_ftrl(
            ftrl.handle, keys, grads, tf.constant(0.0), one, one, tf.constant(-0.5), dim=4
        )
    # the Python API says the same before building an op
    with pytest.raises(bad, match="grads must be float32, got float64"):
        ev.apply_gradients([1, 2], np.zeros((2, 4)))
    with pytest.raises(bad, match=r"grads must have shape keys.shape \+ \[dim\]"):
        ev.apply_gradients([1, 2], np.zeros((3, 4), np.float32))
    with pytest.raises(bad, match="needs IndexedSlices or keys and grads"):
        ev.apply_gradients([1, 2])
    with pytest.raises(bad, match="created without an optimizer"):
        EmbeddingVariable(4).apply_gradients([1], np.zeros((1, 4), np.float32))
    with pytest.raises(bad, match="Adam needs apply_gradients"):
        adam.apply_gradients([1], np.zeros((1, 4), np.float32))
    with pytest.raises(bad, match="learning_rate must be >= 0"):
        EmbeddingVariable(4, optimizer=graphopt.ops.optimizers.Adagrad(-1.0))
    with pytest.raises(bad, match="unknown optimizer 'rmsprop'"):
        EmbeddingVariable(4, optimizer="rmsprop")
    with pytest.raises(bad, match="already exists for optimizer 'adagrad'"):
        lib.graphopt_ev_handle_op(dim=4, shared_name="shared_opt", optimizer="adagrad")
        lib.graphopt_ev_handle_op(dim=4, shared_name="shared_opt", optimizer="adam")
    assert int(ev.size()) == 0  # nothing half-applied


@pytest.mark.parametrize("step", [1.5, 2.0, np.float32(3), tf.constant(1.5)])
def test_non_integer_steps_are_refused(step):
    ev = EmbeddingVariable(4, optimizer="adam")
    with pytest.raises(tf.errors.InvalidArgumentError, match="step must be an integer"):
        ev.lookup([1], insert_missing=True, step=step)
    with pytest.raises(tf.errors.InvalidArgumentError, match="step must be an integer"):
        ev.apply_gradients([1], np.zeros((1, 4), np.float32), step=step)
    ev.lookup([1], insert_missing=True, step=np.int64(4))  # integers of any kind are fine
    ev.lookup([1], insert_missing=True, step=tf.constant(5, tf.int32))
    assert ev.export()[3].numpy().tolist() == [5]


def test_export_sees_keys_inserted_after_shard_rehashes(lib):
    """Every shard grows (rehashes) many times between the two exports; the second one
    must hold every key, including those that moved in a rehash or were inserted after."""
    ev = EmbeddingVariable(2, initializer="zeros")
    ev.insert(np.arange(10), np.zeros((10, 2), np.float32))
    assert sorted(ev.export()[0].numpy().tolist()) == list(range(10))
    capacity = int(ev.memory()[1])
    later = np.arange(10, 200_000)
    for chunk in np.array_split(later, 7):
        ev.lookup(chunk, insert_missing=True)
    assert int(ev.memory()[1]) > 100 * capacity  # the indexes grew
    ev.remove(np.arange(0, 200_000, 3))
    keys = np.sort(ev.export()[0].numpy())
    np.testing.assert_array_equal(keys, np.setdiff1d(np.arange(200_000), np.arange(0, 200_000, 3)))
