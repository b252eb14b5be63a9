"""A model on graphopt's EmbeddingVariable ops serves like any other (needs the op library)."""

import os

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tests.serve.serve_rest_client import predict
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from graphopt.serve import ModelServer

ops = pytest.importorskip("graphopt.ops", reason="the EmbeddingVariable op library is not merged here yet")


class HashedRecommender(tf.Module):
    """Ids looked up in a dynamic-hash EmbeddingVariable (unseen ids get the zero row), then a dense score."""

    def __init__(self):
        super().__init__()
        self.table = ops.EmbeddingVariable(4, initializer="normal", seed=3)
        self.table.insert(tf.constant([5, 17, 123456789], tf.int64),
                          tf.constant(np.arange(12, dtype=np.float32).reshape(3, 4) / 10))
        self.kernel = tf.Variable(np.linspace(-1, 1, 4, dtype=np.float32).reshape(4, 1))

    @tf.function(input_signature=[tf.TensorSpec([None], tf.int64, name="movieId")])
    def serve(self, movieId):  # noqa: N803 - the feature's name in the course's data
        return {"score": tf.sigmoid(tf.matmul(self.table.lookup(movieId), self.kernel))}


def test_embedding_variable_model_serves_over_rest_and_grpc(tmp_path):
    module = HashedRecommender()
    version = str(tmp_path / "base" / "1")
    tf.saved_model.save(module, version, signatures={"serving_default": module.serve})
    ids = np.array([5, 17, 123456789, 42], np.int64)  # 42 was never inserted: the default row
    loaded = tf.saved_model.load(version)  # kept alive: the table is destroyed with the loaded object
    expected = loaded.signatures["serving_default"](movieId=tf.constant(ids))["score"].numpy()

    with ModelServer(os.path.dirname(version), "hashed", rest_port=0, grpc_port=0) as server:
        status, reply = predict(server, {"instances": ids.tolist()})
        assert status == 200, reply
        np.testing.assert_array_equal(np.asarray(reply["predictions"], np.float32), expected)

        request = predict_pb2.PredictRequest()
        request.model_spec.name = "hashed"
        request.inputs["movieId"].CopyFrom(tf.make_tensor_proto(ids))
        with grpc.insecure_channel(server.grpc_target) as channel:
            response = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request, timeout=30)
        np.testing.assert_array_equal(tf.make_ndarray(response.outputs["score"]), expected)
