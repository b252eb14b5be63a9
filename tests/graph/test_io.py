"""Reading models: what is accepted, and a one-line ModelError with a fix for what is not."""

import os
import shutil

import numpy as np
import pytest
import tensorflow as tf

from graphopt.errors import ModelError
from graphopt.graph import io
from tests.rewrite import cases


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    return cases.module_lookup_sparse(str(tmp_path_factory.mktemp("sm") / "m")).path


def _copy(src, tmp_path):
    dst = str(tmp_path / "copy")
    shutil.copytree(src, dst)
    return dst


def test_reads_saved_model_and_its_variables(saved_model):
    source = io.read_model(saved_model)
    assert source.kind == "saved_model" and source.tags == ["serve"]
    assert os.path.exists(source.checkpoint_prefix + ".index")
    assert "emb/.ATTRIBUTES/VARIABLE_VALUE" in io.checkpoint_tensors(source.checkpoint_prefix)


@pytest.mark.parametrize("breakage,expected", [
    ("missing", "does not exist"),
    ("not_a_model", "holds no saved_model.pb"),
    ("truncated", "truncated or corrupted"),
    ("garbage", "truncated or corrupted"),
    ("no_variables", "variables/variables.index is missing"),
])
def test_bad_input_is_one_line_model_error(saved_model, tmp_path, breakage, expected):
    path = _copy(saved_model, tmp_path)
    pb = os.path.join(path, "saved_model.pb")
    if breakage == "missing":
        path = str(tmp_path / "nowhere")
    elif breakage == "not_a_model":
        path = str(tmp_path)
        os.makedirs(os.path.join(path, "empty"))
        path = os.path.join(path, "empty")
    elif breakage == "truncated":
        data = open(pb, "rb").read()
        open(pb, "wb").write(data[: len(data) // 3])
    elif breakage == "garbage":
        open(pb, "wb").write(b"\xff" * 100)
    elif breakage == "no_variables":
        shutil.rmtree(os.path.join(path, "variables"))
    with pytest.raises(ModelError) as err:
        io.read_model(path)
    assert expected in str(err.value) and "\n" not in str(err.value) and ";" in str(err.value)


def test_unknown_tag_set_lists_the_available_ones(saved_model):
    with pytest.raises(ModelError, match="no meta graph tagged train.*available tag sets: serve"):
        io.read_model(saved_model, tags=["train"])


def test_corrupted_variables_index_is_refused_when_the_model_is_read(saved_model, tmp_path):
    path = _copy(saved_model, tmp_path)
    index = os.path.join(path, "variables", "variables.index")
    open(index, "wb").write(b"not an index")
    with pytest.raises(ModelError, match=f"checkpoint index {index} is corrupted"):
        io.read_model(path)


def test_meta_graph_needs_its_checkpoint(tmp_path):
    case = cases.tf1_checkpoint_meta(str(tmp_path / "ck"))
    assert io.read_model(case.path).kind == "meta_graph"
    lone = str(tmp_path / "lone.meta")
    shutil.copy(case.path, lone)
    with pytest.raises(ModelError, match="no checkpoint beside"):
        io.read_model(lone)


# --- Checkpoint data checked while it is copied ----------------------------------------------


def test_crc32c_is_tensorflows_and_extends_in_pieces():
    assert io._native_crc32c() is not None  # the pure-Python fallback would make copies crawl
    data = bytes(range(256)) * 1000
    assert io.crc32c_extend(0, b"123456789") == 0xE3069283  # the CRC-32C check value
    assert io.crc32c_extend(io.crc32c_extend(0, data[:777]), memoryview(bytearray(data))[777:]) == \
        io._py_crc32c_extend(0, data)


@pytest.fixture(scope="module")
def tf1_checkpoint(tmp_path_factory):
    case = cases.tf1_checkpoint_meta(str(tmp_path_factory.mktemp("ck") / "ck"))
    return io.read_model(case.path).checkpoint_prefix


def _copy_prefix(prefix, tmp_path):
    dst = tmp_path / "src"
    shutil.copytree(os.path.dirname(prefix), dst)
    return str(dst / os.path.basename(prefix))


def _data_file(prefix):
    (path,) = io._data_files(prefix)
    return path


def _flip(path, offset):
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0x10]))


def _tables(prefix):
    return [io.TableConversion("emb", "emb", lambda rows: np.arange(rows, dtype=np.int64))]


@pytest.mark.parametrize("chunk", [io.COPY_CHUNK, 7])  # 7 bytes: every tensor spans chunks
def test_a_clean_checkpoint_converts_and_reads_back(tf1_checkpoint, tmp_path, monkeypatch, chunk):
    monkeypatch.setattr(io, "COPY_CHUNK", chunk)
    dst = str(tmp_path / "out" / "ck")
    io.convert_checkpoint(tf1_checkpoint, dst, _tables(tf1_checkpoint))
    reader = tf.train.load_checkpoint(dst)
    original = tf.train.load_checkpoint(tf1_checkpoint)
    np.testing.assert_array_equal(reader.get_tensor("emb-values"), original.get_tensor("emb"))
    np.testing.assert_array_equal(reader.get_tensor("w"), original.get_tensor("w"))


def _entries(prefix):
    return io.read_bundle_index(prefix)[1]


@pytest.mark.parametrize("tensor", ["emb", "w"])
def test_a_flipped_bit_in_a_tensor_is_refused_naming_file_and_tensor(tf1_checkpoint, tmp_path, monkeypatch, tensor):
    monkeypatch.setattr(io, "COPY_CHUNK", 64)
    src = _copy_prefix(tf1_checkpoint, tmp_path)
    entry = _entries(src)[tensor.encode()]
    _flip(_data_file(src), entry.offset + entry.size - 1)  # its last byte, in a later chunk than its first
    with pytest.raises(ModelError) as err:
        io.convert_checkpoint(src, str(tmp_path / "out" / "ck"), _tables(src))
    assert str(err.value) == (f"checkpoint data file {_data_file(src)} is corrupted: tensor '{tensor}' fails its "
                              "CRC32C check; copy the variables files again or export the model again")


def test_a_flipped_bit_in_a_string_tensor_is_refused(tmp_path):
    # TF2 checkpoints hold their object graph as a string tensor, hashed in TensorFlow's own layout.
    src = _copy_prefix(io.read_model(cases.module_lookup_sparse(str(tmp_path / "m")).path).checkpoint_prefix,
                       tmp_path)
    io.copy_checkpoint(src, str(tmp_path / "clean" / "variables"))
    entry = _entries(src)[io.OBJECT_GRAPH_KEY.encode()]
    _flip(_data_file(src), entry.offset + entry.size - 3)
    with pytest.raises(ModelError, match=f"tensor '{io.OBJECT_GRAPH_KEY}' fails its CRC32C check"):
        io.copy_checkpoint(src, str(tmp_path / "copy" / "variables"))


def test_a_truncated_data_file_is_refused_before_anything_is_copied(tf1_checkpoint, tmp_path):
    src = _copy_prefix(tf1_checkpoint, tmp_path)
    data = _data_file(src)
    size = os.path.getsize(data)
    os.truncate(data, size // 2)
    out = tmp_path / "out"
    with pytest.raises(ModelError, match=f"checkpoint data file {data} is truncated \\({size // 2} bytes; tensor "
                                         f"'.*' ends at byte {size}\\); copy the variables files again"):
        io.convert_checkpoint(src, str(out / "ck"), _tables(src))
    assert not out.exists()


def test_a_missing_data_file_is_refused(tf1_checkpoint, tmp_path):
    src = _copy_prefix(tf1_checkpoint, tmp_path)
    data = _data_file(src)
    os.remove(data)
    with pytest.raises(ModelError, match=f"checkpoint data file {data} is missing"):
        io.convert_checkpoint(src, str(tmp_path / "out" / "ck"), _tables(src))


def test_a_damaged_index_block_is_refused(tf1_checkpoint, tmp_path):
    src = _copy_prefix(tf1_checkpoint, tmp_path)
    _flip(src + ".index", 10)  # inside the data block: its CRC no longer matches
    with pytest.raises(ModelError, match=f"checkpoint index {src}.index is corrupted"):
        io.read_bundle_index(src)


def test_a_table_the_checkpoint_lacks_is_refused(tf1_checkpoint, tmp_path):
    table = io.TableConversion("nowhere", "nowhere", lambda rows: np.arange(rows, dtype=np.int64))
    with pytest.raises(ModelError, match=f"checkpoint {tf1_checkpoint} lacks table tensor nowhere; "):
        io.convert_checkpoint(tf1_checkpoint, str(tmp_path / "out" / "ck"), [table])


def test_a_table_that_is_not_two_dimensional_is_refused(tf1_checkpoint, tmp_path):
    src = _copy_prefix(tf1_checkpoint, tmp_path)
    v1 = tf.compat.v1
    with tf.Graph().as_default(), v1.Session() as sess:  # the same key, now a vector
        v = v1.get_variable("emb", initializer=tf.zeros([40]))
        sess.run(v.initializer)
        v1.train.Saver([v]).save(sess, src, write_meta_graph=False)
    with pytest.raises(ModelError, match="holds table tensor emb with shape \\[40\\], not \\[rows, dim\\]"):
        io.convert_checkpoint(src, str(tmp_path / "out" / "ck"), _tables(src))


def test_an_index_naming_a_data_file_it_does_not_count_is_refused(tf1_checkpoint, tmp_path):
    src = _copy_prefix(tf1_checkpoint, tmp_path)
    header, entries = io.read_bundle_index(src)
    entries[b"w"].shard_id = 3
    io._write_index(src + ".index", [(b"", header.SerializeToString())]
                    + sorted((k, v.SerializeToString()) for k, v in entries.items()))
    with pytest.raises(ModelError, match="names data file 3 for tensor 'w', it has 1"):
        io.convert_checkpoint(src, str(tmp_path / "out" / "ck"), _tables(src))
