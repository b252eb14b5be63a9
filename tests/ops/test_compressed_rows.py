"""Compressed rows (row_dtype int8 / float16 / bfloat16): what the table stores is what
graphopt.checkpoint.compress computes, bit for bit; finds dequantize in the kernel; bad rows are
refused with nothing written; compressed tables do not train."""

import numpy as np
import pytest
import tensorflow as tf

from graphopt.checkpoint import compress
from graphopt.ops import EmbeddingVariable
from graphopt.ops.fallback import find_with_fallback
from graphopt.ops.online import apply_delta

COMPRESSED = ("int8", "float16", "bfloat16")
DIM = 16


def _rows(n, seed=0, scale=1.0):
    rng = np.random.default_rng(seed)
    rows = rng.normal(size=(n, DIM)).astype(np.float32) * np.float32(scale)
    rows[0] = 0.25  # a constant row: int8 scale 0
    return rows


def _table(row_dtype, n=600, seed=0):
    ev = EmbeddingVariable(DIM, row_dtype=row_dtype, default_value=-1.0)
    keys = np.arange(n, dtype=np.int64) * 7 - 100
    rows = _rows(n, seed)
    ev.insert(keys, rows)
    return ev, keys, rows


@pytest.mark.parametrize("row_dtype", COMPRESSED)
def test_stored_rows_are_the_python_quantization_and_finds_dequantize_them(row_dtype):
    ev, keys, rows = _table(row_dtype)
    codes, scale_bias = compress.quantize(rows, row_dtype)
    want = compress.dequantize(codes, scale_bias, row_dtype)
    got_keys, got_codes, got_scale_bias = (t.numpy() for t in ev.export_compressed())
    order = np.argsort(got_keys)
    np.testing.assert_array_equal(got_keys[order], np.sort(keys))
    position = np.argsort(keys)
    np.testing.assert_array_equal(got_codes[order].view(np.uint8), codes[position].view(np.uint8))
    if row_dtype == "int8":
        np.testing.assert_array_equal(got_scale_bias[order], scale_bias[position])
    else:
        assert got_scale_bias.shape == (len(keys), 0)
    # the pipelined path (a block of >= 256 keys) and the key-by-key path, plus a missing key
    query = np.concatenate([keys[::-1], [123456789]])
    found = ev.lookup(query).numpy()
    np.testing.assert_array_equal(found[:-1], want[::-1])
    np.testing.assert_array_equal(found[-1], np.full(DIM, -1.0, np.float32))
    np.testing.assert_array_equal(ev.lookup(keys[:5]).numpy(), want[:5])
    # within the scheme's bound of the original rows
    assert (np.abs(want - rows) <= compress.error_bound(rows, scale_bias, row_dtype)).all()
    assert np.abs(want - rows).max() > 0  # it did compress
    # the float32 export reads the dequantized rows too
    export_keys, export_values, freqs, versions = (t.numpy() for t in ev.export())
    np.testing.assert_array_equal(export_values[np.argsort(export_keys)], want[position])
    assert not freqs.any() and not versions.any()


@pytest.mark.parametrize("row_dtype", COMPRESSED)
def test_import_compressed_and_checkpoint_round_trip(row_dtype, tmp_path):
    ev, keys, rows = _table(row_dtype, n=300)
    want = ev.lookup(keys).numpy()
    path = tf.train.Checkpoint(table=ev).write(str(tmp_path / "ckpt"))
    saved = dict(tf.train.list_variables(path))
    stored = {k.split("/.ATTRIBUTES/table")[-1] for k in saved if "/.ATTRIBUTES/table" in k}
    assert stored == compress_suffixes(row_dtype)
    values_key = next(k for k in saved if k.endswith("table-values"))
    assert tf.train.load_checkpoint(path).get_tensor(values_key).dtype == compress.code_dtype(row_dtype)
    other = EmbeddingVariable(DIM, row_dtype=row_dtype)
    tf.train.Checkpoint(table=other).read(path).assert_consumed()
    np.testing.assert_array_equal(other.lookup(keys).numpy(), want)
    third = EmbeddingVariable(DIM, row_dtype=row_dtype)
    third.import_compressed(*ev.export_compressed())
    np.testing.assert_array_equal(third.lookup(keys).numpy(), want)


def compress_suffixes(row_dtype):
    from graphopt.ops.embedding_variable import compressed_suffixes

    return set(compressed_suffixes(row_dtype))


def test_memory_reports_the_compressed_bytes():
    n = 20_000
    keys = np.arange(n, dtype=np.int64)
    rows = _rows(n)
    used = {}
    for row_dtype in ("float32", *COMPRESSED):
        ev = EmbeddingVariable(DIM, row_dtype=row_dtype)
        ev.import_(keys, rows)
        used[row_dtype] = int(ev.memory()[0])
    # rows of 16 + 8 bytes (int8) or 32 bytes (16-bit) against 64 + 12 bytes of float32 rows and
    # their frequency and step, beside the same ~17-byte index slot
    assert used["int8"] < 0.55 * used["float32"]
    assert used["float16"] == used["bfloat16"] < 0.7 * used["float32"]


@pytest.mark.parametrize("row_dtype", COMPRESSED)
def test_a_delta_row_out_of_range_is_requantized_with_its_own_scale(row_dtype):
    ev, keys, _ = _table(row_dtype, n=300)
    new_rows = _rows(4, seed=5, scale=1000.0)  # far outside every stored row's range
    apply_delta(ev.handle, DIM, keys[:4], new_rows, np.zeros([0], np.int64))
    codes, scale_bias = compress.quantize(new_rows, row_dtype)
    got = ev.lookup(keys[:4]).numpy()
    np.testing.assert_array_equal(got, compress.dequantize(codes, scale_bias, row_dtype))
    assert (np.abs(got - new_rows) <= compress.error_bound(new_rows, scale_bias, row_dtype)).all()


@pytest.mark.parametrize("row_dtype", COMPRESSED)
def test_bad_rows_are_refused_and_nothing_is_written(row_dtype):
    ev, keys, rows = _table(row_dtype, n=300)
    before = ev.lookup(keys).numpy()
    bad = rows[:3].copy()
    bad[1, 2] = np.nan
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"row 1 .*NaN or Inf"):
        ev.insert(np.array([1, 2, 3], np.int64) + 10**9, bad)
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"row 1 .*NaN or Inf"):
        apply_delta(ev.handle, DIM, keys[:3], bad, keys[3:5])
    assert int(ev.size()) == len(keys)
    np.testing.assert_array_equal(ev.lookup(keys).numpy(), before)
    if row_dtype == "float16":
        with pytest.raises(tf.errors.InvalidArgumentError, match="float16's range"):
            ev.insert([5], np.full([1, DIM], 7e4, np.float32))


def test_compressed_tables_do_not_train_and_check_their_inputs(lib):
    with pytest.raises(tf.errors.InvalidArgumentError, match="row_dtype must be one of"):
        EmbeddingVariable(DIM, row_dtype="int4")
    with pytest.raises(tf.errors.InvalidArgumentError, match="serving tables"):
        EmbeddingVariable(DIM, row_dtype="int8", optimizer="sgd")
    with pytest.raises(tf.errors.InvalidArgumentError, match="row_dtype must be float32, int8"):
        lib.graphopt_ev_handle_op(dim=DIM, row_dtype="fp8", shared_name="bad_row_dtype")
    with pytest.raises(tf.errors.InvalidArgumentError, match="serving tables"):
        lib.graphopt_ev_handle_op(dim=DIM, row_dtype="int8", max_rows=128, shared_name="capped")
    ev, keys, _ = _table("int8", n=50)
    with pytest.raises(tf.errors.InvalidArgumentError, match="do not train"):
        lib.graphopt_ev_apply_sgd(ev.handle, keys, np.ones([50, DIM], np.float32), 0.1, dim=DIM)
    with pytest.raises(tf.errors.InvalidArgumentError, match="keeps no frequency"):
        ev.evict(step=10, ttl=1)
    with pytest.raises(tf.errors.InvalidArgumentError, match="Tcodes is half"):
        lib.graphopt_ev_export_compressed(ev.handle, dim=DIM, Tcodes=tf.float16)
    with pytest.raises(tf.errors.InvalidArgumentError, match="scale must be finite and >= 0"):
        ev.import_compressed([1], np.zeros([1, DIM], np.uint8), [[-1.0, 0.0]])
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"scale_bias must have shape \[1, 2\]"):
        ev.import_compressed([1], np.zeros([1, DIM], np.uint8), np.zeros([1, 0], np.float32))
    float_table = EmbeddingVariable(DIM)
    with pytest.raises(tf.errors.InvalidArgumentError, match="stores float32 rows"):
        lib.graphopt_ev_export_compressed(float_table.handle, dim=DIM, Tcodes=tf.uint8)
    # shape functions are complete
    fn = tf.function(lambda: lib.graphopt_ev_export_compressed(ev.handle, dim=DIM, Tcodes=tf.uint8))
    out = fn.get_concrete_function().structured_outputs
    assert out.codes.shape.as_list() == [None, DIM] and out.scale_bias.shape.as_list() == [None, 2]


@pytest.mark.parametrize("row_dtype", COMPRESSED)
def test_find_or_insert_and_fallback_read_compressed_rows(row_dtype):
    ev = EmbeddingVariable(DIM, row_dtype=row_dtype, seed=3)
    keys = np.arange(400, dtype=np.int64)
    inserted = ev.lookup(keys, insert_missing=True).numpy()
    assert int(ev.size()) == 400
    np.testing.assert_array_equal(ev.lookup(keys).numpy(), inserted)
    # the initializer rows, quantized
    plain = EmbeddingVariable(DIM, seed=3)
    init = plain.lookup(keys, insert_missing=True).numpy()
    codes, scale_bias = compress.quantize(init, row_dtype)
    np.testing.assert_array_equal(inserted, compress.dequantize(codes, scale_bias, row_dtype))
    # a fallback find of bucket keys reads the same rows
    got = find_with_fallback(ev, tf.constant([10**6, 10**6 + 1], tf.int64), tf.constant([3, 4], tf.int64))
    np.testing.assert_array_equal(got.numpy(), inserted[3:5])
