"""The gRPC services through tensorflow-serving-api's own stubs on loopback."""

import os

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from tests.serve.serve_models import direct_call, rec_inputs


@pytest.fixture(scope="module")
def channel(rec_server):
    with grpc.insecure_channel(rec_server.grpc_target) as channel:
        yield channel


def _predict_request(inputs, name="rec", version=None, signature=""):
    request = predict_pb2.PredictRequest()
    request.model_spec.name = name
    request.model_spec.signature_name = signature
    if version is not None:
        request.model_spec.version.value = version
    for key, value in inputs.items():
        request.inputs[key].CopyFrom(tf.make_tensor_proto(value))
    return request


def test_predict_equals_a_direct_call(rec_server, channel):
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    inputs = rec_inputs(6, seed=3)
    response = stub.Predict(_predict_request(inputs), timeout=30)
    expected = direct_call(os.path.join(rec_server.repository.base_path, "3"), inputs)
    assert set(response.outputs) == set(expected)
    np.testing.assert_array_equal(tf.make_ndarray(response.outputs["output_0"]), expected["output_0"])
    assert response.model_spec.name == "rec"
    assert response.model_spec.version.value == 3
    assert response.model_spec.signature_name == "serving_default"
    assert (
        stub.Predict(_predict_request(inputs, version=3), timeout=30).outputs["output_0"]
        == response.outputs["output_0"]
    )


def test_metadata_and_status(channel):
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    request.model_spec.name = "rec"
    response = stub.GetModelMetadata(request, timeout=30)
    signatures = get_model_metadata_pb2.SignatureDefMap()
    assert response.metadata["signature_def"].Unpack(signatures)
    inputs = signatures.signature_def["serving_default"].inputs
    assert inputs["userId"].dtype == tf.int64.as_datatype_enum
    assert response.model_spec.version.value == 3

    status_stub = model_service_pb2_grpc.ModelServiceStub(channel)
    status_request = get_model_status_pb2.GetModelStatusRequest()
    status_request.model_spec.name = "rec"
    (status,) = status_stub.GetModelStatus(status_request, timeout=30).model_version_status
    assert status.version == 3
    assert status.state == get_model_status_pb2.ModelVersionStatus.AVAILABLE


@pytest.mark.parametrize(
    "change,code,words",
    [
        (
            lambda r: setattr(r.model_spec, "name", "other"),
            grpc.StatusCode.NOT_FOUND,
            "'other' is not served",
        ),
        (lambda r: r.model_spec.version.__setattr__("value", 8), grpc.StatusCode.NOT_FOUND, "version 8"),
        (
            lambda r: r.inputs["movieId"].CopyFrom(tf.make_tensor_proto(np.ones(2, np.float32))),
            grpc.StatusCode.INVALID_ARGUMENT,
            "DT_FLOAT, the signature expects DT_INT64",
        ),
        (lambda r: r.inputs.pop("userId"), grpc.StatusCode.INVALID_ARGUMENT, "missing input 'userId'"),
        (
            lambda r: r.inputs["extra"].CopyFrom(tf.make_tensor_proto([1])),
            grpc.StatusCode.INVALID_ARGUMENT,
            "unknown input",
        ),
        (
            lambda r: r.inputs["userId"].CopyFrom(tf.make_tensor_proto(np.ones(5, np.int64))),
            grpc.StatusCode.INVALID_ARGUMENT,
            "different batch sizes",
        ),
        (lambda r: r.output_filter.append("nope"), grpc.StatusCode.INVALID_ARGUMENT, "unknown output 'nope'"),
        (
            lambda r: r.model_spec.__setattr__("signature_name", "nope"),
            grpc.StatusCode.INVALID_ARGUMENT,
            "not found",
        ),
    ],
    ids=["model", "version", "dtype", "missing", "unknown", "batch", "output_filter", "signature"],
)
def test_bad_predict_requests(rec_server, channel, change, code, words):
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    request = _predict_request(rec_inputs(2))
    change(request)
    with pytest.raises(grpc.RpcError) as caught:
        stub.Predict(request, timeout=30)
    assert caught.value.code() == code
    assert words in caught.value.details()
    inputs = rec_inputs(3, seed=len(words))
    response = stub.Predict(_predict_request(inputs), timeout=30)
    np.testing.assert_array_equal(
        tf.make_ndarray(response.outputs["output_0"]),
        direct_call(os.path.join(rec_server.repository.base_path, "3"), inputs)["output_0"],
    )


def test_distinct_requests_in_sequence_each_get_their_own_answer(rec_server, channel):
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    for seed in range(8):
        inputs = rec_inputs(4, seed=200 + seed)
        response = stub.Predict(_predict_request(inputs), timeout=30)
        np.testing.assert_array_equal(
            tf.make_ndarray(response.outputs["output_0"]),
            direct_call(os.path.join(rec_server.repository.base_path, "3"), inputs)["output_0"],
        )


def test_oversized_message_is_refused(rec_server, channel):
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    with pytest.raises(grpc.RpcError) as caught:
        stub.Predict(_predict_request(rec_inputs(20000)), timeout=30)
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
