"""Versions: a new version is swapped in under load without a failed request; broken ones are skipped."""

import shutil
import threading

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from graphopt.errors import ModelError
from graphopt.serve import ModelServer
from tests.serve.serve_models import direct_call, make_base, rec_inputs, rest_columns, wait_for
from tests.serve.serve_rest_client import assert_answers_correctly, call, predict


def test_new_version_swaps_in_under_load_without_a_failed_request(model_store, tmp_path):
    base = make_base(model_store, tmp_path, {1: "rec-v1"})
    inputs = rec_inputs(8, seed=11)
    expected = {
        1: direct_call(str(model_store / "rec-v1"), inputs)["output_0"],
        2: direct_call(str(model_store / "rec-v2"), inputs)["output_0"],
    }
    assert not np.array_equal(expected[1], expected[2])
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "rec"
    for key, value in inputs.items():
        request.inputs[key].CopyFrom(tf.make_tensor_proto(value))
    # REST replies do not name the version: each REST request sends one of several input sets of
    # the same shape, and its answer must be that set's answer of version 1 or of version 2 -
    # which tells the version (a stale answer of another set matches neither).
    sets = [rec_inputs(8, seed=40 + i) for i in range(4)]
    set_answers = [
        {v: direct_call(str(model_store / f"rec-v{v}"), x)["output_0"] for v in (1, 2)} for x in sets
    ]
    failures, grpc_versions, rest_versions = [], [], [[], []]
    stop = threading.Event()

    with ModelServer(str(base), "rec", rest_port=0, grpc_port=0, poll_seconds=0.05) as server:

        def grpc_client():
            with grpc.insecure_channel(server.grpc_target) as channel:
                stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
                while not stop.is_set():
                    try:
                        response = stub.Predict(request, timeout=30)
                    except grpc.RpcError as exc:
                        failures.append(f"grpc: {exc.code()} {exc.details()}")
                        continue
                    version = response.model_spec.version.value
                    grpc_versions.append(version)
                    if not np.array_equal(tf.make_ndarray(response.outputs["output_0"]), expected[version]):
                        failures.append(f"grpc: wrong answer for version {version}")

        def rest_client(versions):
            n = 0
            while not stop.is_set():
                n += 1
                k = n % len(sets)
                status, reply = predict(server, rest_columns(sets[k]))
                if status != 200:
                    failures.append(f"rest: {status} {reply}")
                    continue
                answer = np.asarray(reply["outputs"], np.float32)
                version = next(
                    (v for v, want in set_answers[k].items() if np.array_equal(answer, want)), None
                )
                if version is None:
                    failures.append(f"rest: request {n} got an answer of neither version for its inputs")
                versions.append(version)

        clients = [threading.Thread(target=f) for f in (grpc_client, grpc_client)]
        clients += [threading.Thread(target=rest_client, args=(versions,)) for versions in rest_versions]
        for client in clients:
            client.start()
        try:
            assert wait_for(lambda: len(grpc_versions) > 20)
            # copied in place (not renamed): the watcher may see it half-written and must cope
            shutil.copytree(model_store / "rec-v2", base / "2")
            assert wait_for(lambda: grpc_versions[-1] == 2, timeout=60)
            seen = len(grpc_versions)
            assert wait_for(lambda: len(grpc_versions) > seen + 20)
            assert wait_for(
                lambda: all(versions and versions[-1] == 2 for versions in rest_versions), timeout=60
            )
        finally:
            stop.set()
            for client in clients:
                client.join()
        statuses = {
            s["version"]: s["state"] for s in call(server, "/v1/models/rec")[1]["model_version_status"]
        }

    assert failures == []
    first_two = grpc_versions.index(2)
    assert set(grpc_versions[:first_two]) == {1}
    assert statuses == {"2": "AVAILABLE", "1": "END"}
    for versions in rest_versions:  # each client: version 1, then version 2, never back
        assert versions and versions == sorted(versions) and versions[-1] == 2, versions


def test_broken_version_is_reported_and_skipped_until_fixed(model_store, tmp_path):
    base = make_base(model_store, tmp_path, {1: "rec-v1"})
    with ModelServer(str(base), "rec", rest_port=0, grpc_port=0, poll_seconds=0.05) as server:
        (base / "5").mkdir()
        (base / "5" / "saved_model.pb").write_bytes(b"not a SavedModel")

        def status_of_5():
            return [
                s
                for s in call(server, "/v1/models/rec")[1]["model_version_status"]  # noqa: E731
                if s["version"] == "5" and s["state"] == "END"
            ]

        (failed,) = wait_for(status_of_5)
        assert failed["status"]["error_code"] != "OK" and failed["status"]["error_message"]
        assert server.repository.get().version == 1
        assert_answers_correctly(server, str(base / "1"), seed=12)

        shutil.rmtree(base / "5")
        shutil.copytree(model_store / "rec-v2", base / "5")
        assert wait_for(lambda: server.repository.get().version == 5, timeout=60)
        assert_answers_correctly(server, str(base / "5"), seed=13)


def test_start_refuses_a_base_path_without_versions(model_store, tmp_path):
    with pytest.raises(ModelError, match="does not exist"):
        ModelServer(str(tmp_path / "missing"), rest_port=0, grpc_port=0).start()
    saved_model = tmp_path / "flat"
    shutil.copytree(model_store / "rec-v1", saved_model)
    with pytest.raises(ModelError, match="is a SavedModel itself"):
        ModelServer(str(saved_model), rest_port=0, grpc_port=0).start()
