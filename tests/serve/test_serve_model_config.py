"""--model-config-file: several models, version policies, version labels over REST and gRPC, live
reloads (good and bad), and one-line refusals of bad files."""

import logging
import subprocess
import sys

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import (
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from graphopt.serve import ModelServer
from graphopt.serve.config_files import ConfigFileError
from graphopt.serve.model_config import VersionPolicy, read_model_config
from tests.serve.serve_models import direct_call, make_base, rec_inputs, rest_columns, wait_for
from tests.serve.serve_rest_client import call, predict


def _config(tmp_path, models, name="models.config"):
    """A ModelServerConfig text file; ``models`` are the inner texts of each config entry."""
    path = tmp_path / name
    path.write_text("model_config_list {\n" + "".join(f"  config {{ {m} }}\n" for m in models) + "}\n")
    return str(path)


@pytest.fixture(scope="module")
def bases(model_store, tmp_path_factory):
    root = tmp_path_factory.mktemp("config-bases")
    rec = make_base(model_store, root / "rec", {1: "rec-v1", 2: "rec-v2", 3: "rec-v1"})
    tower = make_base(model_store, root / "tower", {1: "tower"})
    return rec, tower


def test_version_policies_select_as_tf_serving_does():
    available = [1, 2, 3, 5]
    assert VersionPolicy().select(available) == {5}
    assert VersionPolicy("latest", 2).select(available) == {3, 5}
    assert VersionPolicy("all").select(available) == {1, 2, 3, 5}
    assert VersionPolicy("specific", versions=(2, 4)).select(available) == {2}


@pytest.mark.parametrize(
    "entry, field",
    [
        ('name: "a" base_path: "MISSING"', "config[0] (model 'a').base_path"),
        ('base_path: "BASE"', "config[0].name"),
        ('name: "a" base_path: "BASE" model_platform: "pytorch"', "model_platform"),
        ('name: "a" base_path: "BASE" model_version_policy { specific {} }', "specific.versions"),
        (
            'name: "a" base_path: "BASE" model_version_policy { specific { versions: 1 } } '
            'version_labels { key: "x" value: 2 }',
            "version_labels",
        ),
        ('name: "a" base_path: "BASE" version_labels { key: "7" value: 1 }', "version_labels"),
        ('name: "a" base_path: "BASE" unknown_field: 1', "unknown_field"),
    ],
)
def test_a_bad_model_config_is_refused_in_one_line_naming_file_and_field(tmp_path, bases, entry, field):
    entry = entry.replace("MISSING", str(tmp_path / "nope")).replace("BASE", str(bases[0]))
    path = _config(tmp_path, [entry])
    with pytest.raises(ConfigFileError) as refused:
        read_model_config(path)
    message = str(refused.value)
    assert message.startswith(f"--model-config-file {path}: ") and field in message and "\n" not in message


def test_duplicate_names_and_an_empty_list_are_refused(tmp_path, bases):
    twice = _config(tmp_path, [f'name: "a" base_path: "{bases[0]}"'] * 2)
    with pytest.raises(ConfigFileError, match="appears twice"):
        read_model_config(twice)
    empty = tmp_path / "empty.config"
    empty.write_text("")
    with pytest.raises(ConfigFileError, match="model_config_list"):
        read_model_config(str(empty))


def test_a_label_naming_an_unserved_version_fails_the_start(tmp_path, bases):
    path = _config(
        tmp_path, [f'name: "rec" base_path: "{bases[0]}" version_labels {{ key: "old" value: 1 }}']
    )
    with pytest.raises(ConfigFileError, match="label 'old' names version 1, which is not served"):
        ModelServer(model_config_file=path, rest_port=0, grpc_port=0).start()


@pytest.fixture(scope="module")
def config_server(bases, tmp_path_factory):
    rec, tower = bases
    path = _config(
        tmp_path_factory.mktemp("config"),
        [
            f'name: "rec" base_path: "{rec}" '
            "model_version_policy { specific { versions: 1 versions: 2 } } "
            'version_labels { key: "stable" value: 1 } version_labels { key: "canary" value: 2 }',
            f'name: "tower" base_path: "{tower}" model_version_policy {{ all {{}} }}',
        ],
    )
    with ModelServer(
        model_config_file=path, rest_port=0, grpc_port=0, poll_seconds=0.1, config_poll_seconds=0.1
    ) as server:
        yield server, path


def test_several_models_and_versions_are_served_and_labels_address_versions(config_server):
    server, _ = config_server
    rec = server.models.repository("rec")
    assert sorted(rec.served()) == [1, 2]
    inputs = rec_inputs(3, seed=4)
    for label, version, export in (("stable", 1, "1"), ("canary", 2, "2")):
        status, reply = call(server, f"/v1/models/rec/labels/{label}:predict", rest_columns(inputs))
        assert status == 200, reply
        expected = direct_call(f"{rec.base_path}/{export}", inputs)["output_0"]
        np.testing.assert_array_equal(np.asarray(reply["outputs"], np.float32), expected)
        status, reply = call(server, f"/v1/models/rec/labels/{label}")
        assert status == 200 and [s["version"] for s in reply["model_version_status"]] == [str(version)]
    # without a version, the newest served version answers (TF Serving's rule)
    status, reply = predict(server, rest_columns(inputs), model="rec")
    assert status == 200
    np.testing.assert_array_equal(
        np.asarray(reply["outputs"], np.float32), direct_call(f"{rec.base_path}/2", inputs)["output_0"]
    )
    status, reply = call(server, "/v1/models/tower/metadata")
    assert status == 200 and reply["model_spec"]["name"] == "tower"


def test_an_unknown_label_is_not_found_naming_the_labels_that_exist(config_server):
    server, _ = config_server
    status, reply = call(server, "/v1/models/rec/labels/beta:predict", rest_columns(rec_inputs(1)))
    assert status == 404 and "canary (version 2), stable (version 1)" in reply["error"]
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "rec"
    request.model_spec.version_label = "beta"
    for key, value in rec_inputs(1).items():
        request.inputs[key].CopyFrom(tf.make_tensor_proto(value))
    with grpc.insecure_channel(server.grpc_target) as channel:
        with pytest.raises(grpc.RpcError) as refused:
            prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request, timeout=30)
        assert refused.value.code() == grpc.StatusCode.NOT_FOUND and "stable" in refused.value.details()
        request.model_spec.version_label = "stable"
        reply = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request, timeout=30)
        assert reply.model_spec.version.value == 1
        status = get_model_status_pb2.GetModelStatusRequest()
        status.model_spec.name = "rec"
        status.model_spec.version_label = "canary"
        answer = model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus(status, timeout=30)
        assert [s.version for s in answer.model_version_status] == [2]
    status, reply = call(server, "/v1/models/nope")
    assert status == 404 and "'rec', 'tower'" in reply["error"]


def test_a_changed_config_is_applied_and_a_broken_one_keeps_the_old(config_server, bases, caplog):
    server, path = config_server
    rec, tower = bases
    before = server.models.reloads
    with open(path, "w") as f:  # move the canary to version 3, drop tower
        f.write(
            "model_config_list { config { "
            f'name: "rec" base_path: "{rec}" '
            "model_version_policy { specific { versions: 1 versions: 3 } } "
            'version_labels { key: "stable" value: 1 } version_labels { key: "canary" value: 3 } } }'
        )
    assert wait_for(lambda: server.models.reloads > before, timeout=60)
    assert sorted(server.models.repository("rec").served()) == [1, 3]
    status, reply = call(server, "/v1/models/rec/labels/canary")
    assert status == 200 and reply["model_version_status"][0]["version"] == "3"
    assert call(server, "/v1/models/tower")[0] == 404
    with caplog.at_level(logging.ERROR, logger="graphopt.serve.model_set"):
        with open(path, "w") as f:
            f.write("model_config_list { config { name: ")  # does not parse
        assert wait_for(lambda: "reload refused" in caplog.text, timeout=30)
    assert call(server, "/v1/models/rec/labels/canary")[0] == 200  # the old config still serves


def test_the_cli_refuses_a_bad_config_file_in_one_line(tmp_path):
    path = _config(tmp_path, [f'name: "a" base_path: "{tmp_path / "nope"}"'])
    run = subprocess.run(
        [sys.executable, "-m", "graphopt", "serve", "--model-config-file", path, "--rest-port", "0"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 2
    assert run.stderr.count("\n") == 1 and path in run.stderr and "base_path" in run.stderr, run.stderr
    bad = tmp_path / "b.config"
    bad.write_text("max_batch_size { value: 0 }")
    run = subprocess.run(
        [sys.executable, "-m", "graphopt", "serve", str(tmp_path), "--enable-batching"]
        + ["--batching-parameters-file", str(bad)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 2 and run.stderr.count("\n") == 1 and "max_batch_size" in run.stderr, run.stderr
