"""Checkpoint data checked while it is copied or converted: sizes against the index up front,
each tensor's CRC32C on the chunks as they pass; and each error path of convert_checkpoint."""

import os
import shutil

import numpy as np
import pytest
import tensorflow as tf

from graphopt import model_io
from graphopt.checkpoint import bundle, conversion, index
from graphopt.errors import ModelError
from tests.rewrite import cases


def test_crc32c_is_tensorflows_and_extends_in_pieces():
    assert bundle.native_crc32c() is not None  # the pure-Python fallback would make copies crawl
    data = bytes(range(256)) * 1000
    assert bundle.crc32c_extend(0, b"123456789") == 0xE3069283  # the CRC-32C check value
    assert bundle.crc32c_extend(
        bundle.crc32c_extend(0, data[:777]), memoryview(bytearray(data))[777:]
    ) == bundle.py_crc32c_extend(0, data)


@pytest.fixture(scope="module")
def tf1_checkpoint(tmp_path_factory):
    case = cases.tf1_checkpoint_meta(str(tmp_path_factory.mktemp("ck") / "ck"))
    return model_io.read_model(case.path).checkpoint_prefix


def _copy_prefix(prefix, tmp_path):
    dst = tmp_path / "src"
    shutil.copytree(os.path.dirname(prefix), dst)
    return str(dst / os.path.basename(prefix))


def _data_file(prefix):
    (path,) = index.data_files(prefix)
    return path


def _flip(path, offset):
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0x10]))


def _tables(prefix):
    return [conversion.TableConversion("emb", "emb", lambda rows: np.arange(rows, dtype=np.int64))]


@pytest.mark.parametrize("chunk", [conversion.COPY_CHUNK, 7])  # 7 bytes: every tensor spans chunks
def test_a_clean_checkpoint_converts_and_reads_back(tf1_checkpoint, tmp_path, monkeypatch, chunk):
    monkeypatch.setattr(conversion, "COPY_CHUNK", chunk)
    dst = str(tmp_path / "out" / "ck")
    conversion.convert_checkpoint(tf1_checkpoint, dst, _tables(tf1_checkpoint))
    reader = tf.train.load_checkpoint(dst)
    original = tf.train.load_checkpoint(tf1_checkpoint)
    np.testing.assert_array_equal(reader.get_tensor("emb-values"), original.get_tensor("emb"))
    np.testing.assert_array_equal(reader.get_tensor("w"), original.get_tensor("w"))


def _entries(prefix):
    return index.read_bundle_index(prefix)[1]


@pytest.mark.parametrize("tensor", ["emb", "w"])
def test_a_flipped_bit_in_a_tensor_is_refused_naming_file_and_tensor(
    tf1_checkpoint, tmp_path, monkeypatch, tensor
):
    monkeypatch.setattr(conversion, "COPY_CHUNK", 64)
    src = _copy_prefix(tf1_checkpoint, tmp_path)
    entry = _entries(src)[tensor.encode()]
    _flip(_data_file(src), entry.offset + entry.size - 1)  # its last byte, in a later chunk than its first
    with pytest.raises(ModelError) as err:
        conversion.convert_checkpoint(src, str(tmp_path / "out" / "ck"), _tables(src))
    assert str(err.value) == (
        f"checkpoint data file {_data_file(src)} is corrupted: tensor '{tensor}' fails its "
        "CRC32C check; copy the variables files again or export the model again"
    )


def test_a_flipped_bit_in_a_string_tensor_is_refused(tmp_path):
    # TF2 checkpoints hold their object graph as a string tensor, hashed in TensorFlow's own layout.
    src = _copy_prefix(
        model_io.read_model(cases.module_lookup_sparse(str(tmp_path / "m")).path).checkpoint_prefix, tmp_path
    )
    conversion.copy_checkpoint(src, str(tmp_path / "clean" / "variables"))
    entry = _entries(src)[index.OBJECT_GRAPH_KEY.encode()]
    _flip(_data_file(src), entry.offset + entry.size - 3)
    with pytest.raises(ModelError, match=f"tensor '{index.OBJECT_GRAPH_KEY}' fails its CRC32C check"):
        conversion.copy_checkpoint(src, str(tmp_path / "copy" / "variables"))


def test_a_truncated_data_file_is_refused_before_anything_is_copied(tf1_checkpoint, tmp_path):
    src = _copy_prefix(tf1_checkpoint, tmp_path)
    data = _data_file(src)
    size = os.path.getsize(data)
    os.truncate(data, size // 2)
    out = tmp_path / "out"
    with pytest.raises(
        ModelError,
        match=f"checkpoint data file {data} is truncated \\({size // 2} bytes; tensor "
        f"'.*' ends at byte {size}\\); copy the variables files again",
    ):
        conversion.convert_checkpoint(src, str(out / "ck"), _tables(src))
    assert not out.exists()


def test_a_missing_data_file_is_refused(tf1_checkpoint, tmp_path):
    src = _copy_prefix(tf1_checkpoint, tmp_path)
    data = _data_file(src)
    os.remove(data)
    with pytest.raises(ModelError, match=f"checkpoint data file {data} is missing"):
        conversion.convert_checkpoint(src, str(tmp_path / "out" / "ck"), _tables(src))


def test_a_damaged_index_block_is_refused(tf1_checkpoint, tmp_path):
    src = _copy_prefix(tf1_checkpoint, tmp_path)
    _flip(src + ".index", 10)  # inside the data block: its CRC no longer matches
    with pytest.raises(ModelError, match=f"checkpoint index {src}.index is corrupted"):
        index.read_bundle_index(src)


def test_a_table_the_checkpoint_lacks_is_refused(tf1_checkpoint, tmp_path):
    table = conversion.TableConversion("nowhere", "nowhere", lambda rows: np.arange(rows, dtype=np.int64))
    with pytest.raises(ModelError, match=f"checkpoint {tf1_checkpoint} lacks table tensor nowhere; "):
        conversion.convert_checkpoint(tf1_checkpoint, str(tmp_path / "out" / "ck"), [table])


def test_a_table_that_is_not_two_dimensional_is_refused(tf1_checkpoint, tmp_path):
    src = _copy_prefix(tf1_checkpoint, tmp_path)
    v1 = tf.compat.v1
    with tf.Graph().as_default(), v1.Session() as sess:  # the same key, now a vector
        v = v1.get_variable("emb", initializer=tf.zeros([40]))
        sess.run(v.initializer)
        v1.train.Saver([v]).save(sess, src, write_meta_graph=False)
    with pytest.raises(ModelError, match="holds table tensor emb with shape \\[40\\], not \\[rows, dim\\]"):
        conversion.convert_checkpoint(src, str(tmp_path / "out" / "ck"), _tables(src))


def test_an_index_naming_a_data_file_it_does_not_count_is_refused(tf1_checkpoint, tmp_path):
    src = _copy_prefix(tf1_checkpoint, tmp_path)
    header, entries = index.read_bundle_index(src)
    entries[b"w"].shard_id = 3
    bundle.write_index(
        src + ".index",
        [(b"", header.SerializeToString())] + sorted((k, v.SerializeToString()) for k, v in entries.items()),
    )
    with pytest.raises(ModelError, match="names data file 3 for tensor 'w', it has 1"):
        conversion.convert_checkpoint(src, str(tmp_path / "out" / "ck"), _tables(src))
