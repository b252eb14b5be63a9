"""The fast request path answers bit-identically to a direct keyword call of the signature, and its
TensorProto reader and writer agree with TensorFlow's make_ndarray / make_tensor_proto."""

import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2

from graphopt.serve.grpc_service import encode_tensor, input_arrays
from graphopt.serve.limits import ElementBudget
from graphopt.serve.repository import load_version
from tests.serve.serve_models import direct_call, make_base, rec_inputs


@pytest.mark.parametrize("rows", [1, 7])
def test_the_flat_call_equals_a_direct_keyword_call(model_store, tmp_path, rows):
    base = make_base(model_store, tmp_path, {1: "rec-v1", 2: "tower"})
    rec = load_version(str(base / "1"), 1).signature(None)
    inputs = rec_inputs(rows, seed=rows)
    assert rec._flat  # the flat call is the one taken
    np.testing.assert_array_equal(
        rec.run(inputs)["output_0"], direct_call(str(base / "1"), inputs)["output_0"]
    )
    words = load_version(str(base / "2"), 2).signature("words")
    text = {"word": np.array([b"a", b"\xff\x00", b"graphopt"][: max(1, rows % 4)], dtype=object)}
    served, direct = words.run(text), direct_call(str(base / "2"), text, "words")
    assert served.keys() == direct.keys()
    for key in served:
        np.testing.assert_array_equal(served[key], direct[key])


def test_the_course_model_on_embedding_variables_answers_bit_identically(course_models, tmp_path):
    from graphopt.course.data import generate_samples
    from graphopt.course.models.features import feature_arrays
    from graphopt.rewrite import rewrite_model

    model_dir, _ = course_models("keras")
    rewritten = str(tmp_path / "ev")
    rewrite_model(model_dir, rewritten)
    signature = load_version(rewritten, 1).signature(None)
    for rows in (1, 16):
        inputs = feature_arrays(generate_samples(rows, seed=rows))
        (name,) = signature.outputs
        np.testing.assert_array_equal(signature.run(inputs)[name], direct_call(rewritten, inputs)[name])


@pytest.mark.parametrize(
    "array",
    [
        np.arange(6, dtype=np.float32).reshape(2, 3),
        np.arange(4, dtype=np.int64),
        np.array([1.5, -2.0], np.float64),
        np.array([[1, 2]], np.int32),
        np.array([True, False]),
        np.array([b"x", b"", b"\x00y"], dtype=object),
        np.zeros((0, 3), np.float32),
        np.float32(2.5).reshape(()),
        np.array([[0.75]], np.float32),
        np.array([7], np.int64),
    ],
    ids=["float", "int64", "double", "int32", "bool", "string", "empty", "scalar", "one-float", "one-int64"],
)
def test_encode_tensor_writes_what_make_tensor_proto_writes(array):
    proto = tensor_pb2.TensorProto()
    encode_tensor(array, proto)
    assert proto == tf.make_tensor_proto(array)


def test_typed_value_lists_are_read_and_padded_as_tensorflow_does(model_store, tmp_path):
    base = make_base(model_store, tmp_path, {1: "rec-v1"})
    signature = load_version(str(base / "1"), 1).signature(None)
    protos = {key: tf.make_tensor_proto(value) for key, value in rec_inputs(4, seed=2).items()}
    short = tensor_pb2.TensorProto(dtype=tf.int64.as_datatype_enum)
    short.tensor_shape.dim.add().size = 4
    short.int64_val.extend([3, 5])  # two values for four elements: padded with the last
    protos["movieId"] = short
    floats = tensor_pb2.TensorProto(dtype=tf.float32.as_datatype_enum)
    for size in (4, 3):
        floats.tensor_shape.dim.add().size = size
    floats.float_val.extend([0.25] * 12)
    protos["numeric"] = floats
    arrays = input_arrays(signature, protos, ElementBudget(1000))
    for key, proto in protos.items():
        expected = tf.make_ndarray(proto)
        assert arrays[key].dtype == expected.dtype
        np.testing.assert_array_equal(arrays[key], expected)


def test_the_signature_check_takes_any_batch_and_refuses_other_ranks_and_sizes(model_store, tmp_path):
    from graphopt.serve.errors import BadRequest

    base = make_base(model_store, tmp_path, {1: "rec-v1"})
    rec = load_version(str(base / "1"), 1).signature(None)
    for rows in (0, 1, 9):
        rec.check(rec_inputs(rows))  # [?] and [?, 3]: any number of rows
    refused = {
        "a row of 4 where [?, 3] is expected": np.zeros((2, 4), np.float32),
        "one rank too few": np.zeros(2, np.float32),
        "one rank too many": np.zeros((2, 3, 1), np.float32),
    }
    for why, numeric in refused.items():
        arrays = dict(rec_inputs(2), numeric=numeric)
        with pytest.raises(BadRequest, match=r"input 'numeric' has shape .*expects \[\?, 3\]"):
            rec.check(arrays)
            pytest.fail(why)
    with pytest.raises(BadRequest, match="has dtype DT_DOUBLE, the signature expects DT_FLOAT"):
        rec.check(dict(rec_inputs(2), numeric=np.zeros((2, 3), np.float64)))
