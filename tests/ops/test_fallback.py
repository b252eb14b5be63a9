"""The fallback ops of collisionless migration: keys, find with fallback, insert with the bucket's row."""

import numpy as np
import pytest
import tensorflow as tf

from graphopt import EmbeddingVariable
from graphopt.ops import fallback, optimizers

SIGN = np.uint64(1 << 63)
BUCKETS = np.arange(20, dtype=np.float32).reshape(5, 4)  # 5 buckets, dim 4


def _bucketed_table(**kwargs):
    ev = EmbeddingVariable(4, initializer="zeros", **kwargs)
    ev.insert(tf.range(5, dtype=tf.int64), BUCKETS)
    return ev


def test_string_key_is_the_fingerprint_that_hash_buckets_reduce():
    words = tf.constant(["", "a", "hello", "userId_12345", "ünï", "x" * 300])
    keys = fallback.collisionless_key(words).numpy().view(np.uint64)
    assert (keys & SIGN).all()  # raw keys never meet bucket keys 0..M-1
    # StringToHashBucketFast(s, 2^63 - 1) folds Fingerprint64(s) once: the fingerprint is one of
    # two values, and exactly one of them carries the key's low 63 bits.
    folded = tf.strings.to_hash_bucket_fast(words, 2**63 - 1).numpy()
    for i, key in enumerate(keys):
        fp = [c for c in (int(folded[i]), int(folded[i]) + 2**63 - 1) if c | (1 << 63) == int(key)]
        assert len(fp) == 1
        for m in (7, 1000, 10007):
            assert fp[0] % m == int(tf.strings.to_hash_bucket_fast(words[i : i + 1], m).numpy()[0])


def test_integer_key_is_the_id_with_the_sign_bit():
    ids = np.array([0, 1, 999, 2**40, -1], np.int64)
    keys = fallback.collisionless_key(ids).numpy().view(np.uint64)
    np.testing.assert_array_equal(keys, ids.view(np.uint64) | SIGN)
    np.testing.assert_array_equal(
        fallback.collisionless_key(ids[:3].astype(np.int32)).numpy(),
        fallback.collisionless_key(ids[:3]).numpy(),
    )
    assert len(set(fallback.collisionless_key(np.arange(10**5)).numpy())) == 10**5


def test_find_reads_the_old_bucket_row_for_keys_not_held():
    ev = _bucketed_table()
    ids = tf.constant([["a", "b"], ["c", "a"]])
    buckets = tf.constant([[3, 1], [3, 0]], tf.int64)
    np.testing.assert_array_equal(
        fallback.find_with_fallback(ev, ids, buckets).numpy(), BUCKETS[buckets.numpy()]
    )
    own = np.full((1, 4), 7.0, np.float32)
    ev.insert(fallback.collisionless_key(["a"]), own)
    got = fallback.find_with_fallback(ev, ids, tf.cast(buckets, tf.int32)).numpy()
    np.testing.assert_array_equal(got[0, 0], own[0])
    np.testing.assert_array_equal(got[1, 1], own[0])
    np.testing.assert_array_equal(got[0, 1], BUCKETS[1])
    assert int(ev.size()) == 6  # find inserts nothing
    # A fallback key the table does not hold reads the default row.
    np.testing.assert_array_equal(fallback.find_with_fallback(ev, ["zz"], [77]).numpy(), 0)


def test_find_or_insert_inserts_with_the_bucket_row_then_rows_learn_apart():
    ev = _bucketed_table(optimizer=optimizers.SGD(learning_rate=1.0))
    ids = tf.constant([10, 20, 10], tf.int64)  # 10 and 20 collide in bucket 2
    buckets = tf.constant([2, 2, 2], tf.int64)
    with tf.GradientTape() as tape:
        tape.watch(ev.handle)
        rows = fallback.find_or_insert_with_fallback(ev, ids, buckets, step=3)
        loss = tf.reduce_sum(rows[0])  # only id 10 (first occurrence) gets a gradient
    np.testing.assert_array_equal(rows.numpy(), BUCKETS[[2, 2, 2]])
    assert int(ev.size()) == 7
    keys, _, freqs, versions = (t.numpy() for t in ev.export())
    new = fallback.collisionless_key(ids).numpy()
    by_key = dict(zip(keys, zip(freqs, versions, strict=True), strict=True))
    assert by_key[new[0]] == (2, 3) and by_key[new[1]] == (1, 3)
    ev.apply_gradients(tape.gradient(loss, ev.handle))
    after = fallback.find_with_fallback(ev, ids, buckets).numpy()
    np.testing.assert_array_equal(after[0], BUCKETS[2] - 1.0)  # 10 learned on its own row
    np.testing.assert_array_equal(after[1], BUCKETS[2])  # 20 shares nothing with it any more
    np.testing.assert_array_equal(ev.lookup([2]).numpy()[0], BUCKETS[2])  # the bucket row is kept
    np.testing.assert_array_equal(fallback.find_with_fallback(ev, [30], [2]).numpy()[0], BUCKETS[2])


def test_insert_keeps_rows_already_held():
    ev = _bucketed_table()
    own = np.full((1, 4), -3.0, np.float32)
    ev.insert(fallback.collisionless_key(["kept"]), own)
    rows = fallback.find_or_insert_with_fallback(ev, ["kept", "kept", "new"], [0, 0, 4])
    np.testing.assert_array_equal(rows.numpy(), np.stack([own[0], own[0], BUCKETS[4]]))
    assert int(ev.size()) == 7


def test_in_tf_function_with_unknown_shapes():
    ev = _bucketed_table()

    @tf.function(
        input_signature=[tf.TensorSpec([None, None], tf.string), tf.TensorSpec([None, None], tf.int64)]
    )
    def lookup(ids, buckets):
        out = fallback.find_with_fallback(ev, ids, buckets)
        assert out.shape.as_list() == [None, None, 4]
        return out

    ids = tf.constant([["p", "q", "r"]])
    buckets = tf.strings.to_hash_bucket_fast(ids, 5)
    np.testing.assert_array_equal(lookup(ids, buckets).numpy(), BUCKETS[buckets.numpy()])


@pytest.mark.parametrize(
    "call, message",
    [
        (
            lambda lib, h: lib.graphopt_ev_find_with_fallback(h, ["a", "b"], [1], dim=4),
            "fallback_keys must have the shape of ids",
        ),
        (
            lambda lib, h: lib.graphopt_ev_find_or_insert_with_fallback(h, [1], [1], [0, 1], dim=4),
            "step must be a scalar",
        ),
        (
            lambda lib, h: lib.graphopt_ev_find_with_fallback(h, [1], [1], dim=8),
            "has dim=8 but the EmbeddingVariable has dim 4",
        ),
    ],
)
def test_bad_input_is_invalid_argument(lib, call, message):
    ev = _bucketed_table()
    with pytest.raises((tf.errors.InvalidArgumentError, ValueError), match=message):
        call(lib, ev.handle)


def test_python_wrappers_refuse_float_ids():
    ev = _bucketed_table()
    with pytest.raises(tf.errors.InvalidArgumentError, match="ids must be string, int32 or int64"):
        fallback.find_with_fallback(ev, [1.5], [0])
    with pytest.raises(tf.errors.InvalidArgumentError, match="fallback_keys must be int32 or int64"):
        fallback.find_with_fallback(ev, [1], ["0"])
