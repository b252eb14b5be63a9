"""Request limits: the element cap (REST, gRPC), TensorProto checks before an array is built, JSON depth."""

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from graphopt.serve import ModelServer
from graphopt.serve.limits import MAX_JSON_DEPTH
from tests.serve.serve_models import direct_call, make_base, rec_inputs
from tests.serve.serve_rest_client import call, predict

CAP = 100  # elements per request; the recommender takes 5 per example (movieId, userId, 3 numeric)


@pytest.fixture(scope="module")
def capped(model_store, tmp_path_factory):
    base = make_base(model_store, tmp_path_factory.mktemp("capped"), {1: "rec-v1"})
    with ModelServer(str(base), "rec", rest_port=0, grpc_port=0, max_request_elements=CAP) as server:
        with grpc.insecure_channel(server.grpc_target) as channel:
            server.stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            server.version_path = str(base / "1")
            yield server


def _request(inputs):
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "rec"
    for key, value in inputs.items():
        request.inputs[key].CopyFrom(tf.make_tensor_proto(value))
    return request


def _refusal(server, request):
    with pytest.raises(grpc.RpcError) as caught:
        server.stub.Predict(request, timeout=30)
    return caught.value.code(), caught.value.details()


def _answer_is_right(server, seed):
    inputs = rec_inputs(3, seed=seed)
    response = server.stub.Predict(_request(inputs), timeout=30)
    np.testing.assert_array_equal(
        tf.make_ndarray(response.outputs["output_0"]), direct_call(server.version_path, inputs)["output_0"]
    )


@pytest.mark.parametrize(
    "rows,allowed", [(CAP // 5, True), (CAP // 5 + 1, False)], ids=["at-cap", "over-cap"]
)
def test_element_cap_on_both_protocols(capped, rows, allowed):
    inputs = rec_inputs(rows, seed=rows)
    status, reply = predict(capped, {"inputs": {k: v.tolist() for k, v in inputs.items()}})
    if allowed:
        expected = direct_call(capped.version_path, inputs)["output_0"]
        assert status == 200, reply
        np.testing.assert_array_equal(np.asarray(reply["outputs"], np.float32), expected)
        response = capped.stub.Predict(_request(inputs), timeout=30)
        np.testing.assert_array_equal(tf.make_ndarray(response.outputs["output_0"]), expected)
    else:
        assert status == 400 and "--max-request-elements" in reply["error"], reply
        code, details = _refusal(capped, _request(inputs))
        assert code == grpc.StatusCode.INVALID_ARGUMENT and f"limit of {CAP}" in details, details


def _claiming(dims, dtype=tf.int64, key="movieId", values=(1,)):
    """A request whose ``key`` claims ``dims`` with only ``values`` sent (the other inputs are valid)."""
    request = _request(rec_inputs(1))
    proto = request.inputs[key]
    proto.Clear()
    proto.dtype = dtype.as_datatype_enum
    for size in dims:
        proto.tensor_shape.dim.add().size = size
    getattr(proto, "int64_val" if dtype == tf.int64 else "float_val").extend(values)
    return request


TENSOR_LIES = [
    # (description, request, words of the INVALID_ARGUMENT message)
    ("2^27 elements, one value (34 bytes)", lambda: _claiming([2**27]), "--max-request-elements"),
    ("2^40 elements", lambda: _claiming([2**40]), "--max-request-elements"),
    ("dims whose product overflows int64", lambda: _claiming([2**31] * 3), "--max-request-elements"),
    ("negative dim", lambda: _claiming([-1]), "every dim must be a size"),
    ("more values than the shape", lambda: _claiming([1], values=(1, 2, 3)), "more than the 1 its shape"),
    (
        "dtype lie",
        lambda: _claiming([1], dtype=tf.float32, values=(1.0,)),
        "DT_FLOAT, the signature expects DT_INT64",
    ),
]


@pytest.mark.parametrize("what,make,words", TENSOR_LIES, ids=[t[0] for t in TENSOR_LIES])
def test_tensor_proto_lies_are_refused_before_an_array_is_built(capped, what, make, words):
    code, details = _refusal(capped, make())
    assert code == grpc.StatusCode.INVALID_ARGUMENT and words in details, details
    _answer_is_right(capped, seed=len(what))


def test_tensor_proto_field_and_content_checks(capped):
    request = _claiming([1])
    request.inputs["movieId"].float_val.append(1.0)  # values of another dtype's field
    assert "has values in float_val" in _refusal(capped, request)[1]
    request = _claiming([2], values=())
    request.inputs["movieId"].tensor_content = np.arange(3, dtype=np.int64).tobytes()  # 24 bytes for 16
    assert "24 bytes of tensor_content; shape [2] of DT_INT64 needs 16" in _refusal(capped, request)[1]
    request = _claiming([1])
    request.inputs["movieId"].tensor_shape.unknown_rank = True
    assert "unknown_rank" in _refusal(capped, request)[1]
    request = _request(rec_inputs(1))
    request.inputs["movieId"].dtype = 999
    assert "has dtype 999" in _refusal(capped, request)[1]


def test_short_value_lists_are_padded_like_tensorflow(capped):
    """One value for four ids: TensorFlow (so TF Serving) repeats the last value; none: zeros."""
    inputs = rec_inputs(4, seed=9)
    request = _request(inputs)
    request.inputs["movieId"].CopyFrom(_claiming([4], values=(7,)).inputs["movieId"])
    request.inputs["userId"].CopyFrom(_claiming([4], values=()).inputs["movieId"])
    response = capped.stub.Predict(request, timeout=30)
    padded = dict(inputs, movieId=np.full(4, 7, np.int64), userId=np.zeros(4, np.int64))
    assert tf.make_ndarray(request.inputs["movieId"]).tolist() == [7, 7, 7, 7]  # what TF's own decoder makes
    np.testing.assert_array_equal(
        tf.make_ndarray(response.outputs["output_0"]), direct_call(capped.version_path, padded)["output_0"]
    )


def _nested(depth):
    return "[" * depth + "1" + "]" * depth


@pytest.mark.parametrize(
    "body,words",
    [
        (f'{{"inputs": {{"movieId": {_nested(MAX_JSON_DEPTH - 2)}}}}}', "has shape"),  # 400 levels: parsed
        (f'{{"inputs": {{"movieId": {_nested(MAX_JSON_DEPTH - 1)}}}}}', "nests 401 levels deep"),
        (_nested(100_000), "nests 100000 levels deep"),
        (
            '{"s": "%s", "inputs": 1}' % ("[" * 1000),
            "must be an object",
        ),  # brackets in a string are not structure
        ('{"s": "\\"%s", "inputs": 1}' % ("[" * 1000), "must be an object"),
    ],
)
def test_json_depth_limit(capped, body, words):
    status, reply = call(capped, "/v1/models/rec:predict", raw=body.encode())
    assert status == 400 and words in reply["error"], reply
    _answer_is_right(capped, seed=len(body) % 97)
