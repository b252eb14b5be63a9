"""The course's Embedding+MLP (Keras 3 form, as `graphopt build-model` saves it) served over REST and gRPC."""

import os

import grpc
import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from graphopt.course.data import generate_samples
from graphopt.course.models.features import feature_arrays
from graphopt.serve import ModelServer
from tests.serve.serve_models import direct_call
from tests.serve.serve_rest_client import predict


def test_course_model_predictions_equal_a_direct_call(course_models, tmp_path):
    model_dir, _ = course_models("keras")
    base = tmp_path / "course"
    base.mkdir()
    os.symlink(model_dir, base / "1")
    inputs = feature_arrays(generate_samples(16, seed=3))
    expected = direct_call(model_dir, inputs)
    (output,) = expected

    with ModelServer(str(base), "course", rest_port=0, grpc_port=0) as server:
        instances = [
            {k: (v[i].decode() if isinstance(v[i], bytes) else v[i].item()) for k, v in inputs.items()}
            for i in range(16)
        ]
        status, reply = predict(server, {"instances": instances})
        assert status == 200, reply
        np.testing.assert_array_equal(np.asarray(reply["predictions"], np.float32), expected[output])

        request = predict_pb2.PredictRequest()
        request.model_spec.name = "course"
        for key, value in inputs.items():
            request.inputs[key].CopyFrom(tf.make_tensor_proto(value))
        with grpc.insecure_channel(server.grpc_target) as channel:
            response = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request, timeout=30)
        np.testing.assert_array_equal(tf.make_ndarray(response.outputs[output]), expected[output])
