"""Models on graphopt's EmbeddingVariable ops serve like any other: a hand-built one, and one that
`graphopt rewrite` made, each answer checked against a direct call of the same SavedModel.

No skip guard: the op library is part of graphopt, and a build without it must fail here loudly
(importing graphopt.ops raises OpLibraryError), not pass by skipping.
"""

import os

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from graphopt import ops
from graphopt.rewrite import rewrite_model
from graphopt.serve import ModelServer
from tests.serve.serve_models import MOVIES, USERS, direct_call, rec_inputs, rest_columns, rest_rows
from tests.serve.serve_rest_client import predict


class HashedRecommender(tf.Module):
    """Ids looked up in a dynamic-hash EmbeddingVariable (unseen ids get the zero row), then a dense score."""

    def __init__(self):
        super().__init__()
        self.table = ops.EmbeddingVariable(4, initializer="normal", seed=3)
        self.table.insert(
            tf.constant([5, 17, 123456789], tf.int64),
            tf.constant(np.arange(12, dtype=np.float32).reshape(3, 4) / 10),
        )
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

        for seed in range(4):  # same shape, other ids each time: a stale answer would show
            ids = np.random.default_rng(seed).choice([5, 17, 123456789, 42, 7], size=4).astype(np.int64)
            status, reply = predict(server, {"instances": ids.tolist()})
            assert status == 200, reply
            np.testing.assert_array_equal(
                np.asarray(reply["predictions"], np.float32), direct_call(version, {"movieId": ids})["score"]
            )


@pytest.mark.exact
def test_a_rewritten_model_serves_what_a_direct_call_of_it_answers(model_store, tmp_path):
    """rec-v1 rewritten onto EmbeddingVariables: every answer, over REST rows, REST columns and
    gRPC, equals a direct call of the rewritten SavedModel on the same request, and (ids in range)
    the original model's answer too. Ids include the first and last rows of each table."""
    base = tmp_path / "base"
    report = rewrite_model(str(model_store / "rec-v1"), str(base / "1"))
    assert len(report.plan.tables) == 2
    pb = (base / "1" / "saved_model.pb").read_bytes()
    assert b"GraphoptEv" in pb  # it really is served on graphopt's ops
    rewritten, original = str(base / "1"), str(model_store / "rec-v1")
    requests = []
    for seed in range(6):
        inputs = rec_inputs(5, seed=300 + seed)
        inputs["movieId"][:2] = [0, MOVIES - 1]
        inputs["userId"][:2] = [USERS - 1, 0]
        requests.append(inputs)
    with (
        ModelServer(str(base), "rec", rest_port=0, grpc_port=0) as server,
        grpc.insecure_channel(server.grpc_target) as channel,
    ):
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        for index, inputs in enumerate(requests):
            expected = direct_call(rewritten, inputs)["output_0"]
            np.testing.assert_array_equal(expected, direct_call(original, inputs)["output_0"])
            status, reply = predict(server, rest_rows(inputs) if index % 2 else rest_columns(inputs))
            assert status == 200, reply
            np.testing.assert_array_equal(
                np.asarray(reply["predictions" if index % 2 else "outputs"], np.float32), expected
            )
            request = predict_pb2.PredictRequest()
            request.model_spec.name = "rec"
            for key, value in inputs.items():
                request.inputs[key].CopyFrom(tf.make_tensor_proto(value))
            response = stub.Predict(request, timeout=30)
            np.testing.assert_array_equal(tf.make_ndarray(response.outputs["output_0"]), expected)
        # an id the original table never had: the rewritten model answers with the default row
        unseen = dict(requests[0], movieId=np.full(5, 10**9, np.int64))
        status, reply = predict(server, rest_columns(unseen))
        assert status == 200, reply
        np.testing.assert_array_equal(
            np.asarray(reply["outputs"], np.float32), direct_call(rewritten, unseen)["output_0"]
        )
