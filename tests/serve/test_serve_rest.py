"""The REST API over real HTTP (urllib) on loopback: formats, metadata, status and bad requests."""

import base64
import json
import os
import urllib.error
import urllib.request

import numpy as np
import pytest

from tests.serve.serve_models import direct_call, rec_inputs, rest_columns, rest_rows
from tests.serve.serve_rest_client import assert_answers_correctly, call, predict


def _version_path(server):
    return os.path.join(server.repository.base_path, "3")


def test_row_format_predictions_equal_a_direct_call(rec_server):
    inputs = rec_inputs(5)
    instances = [{key: value[i].tolist() for key, value in inputs.items()} for i in range(5)]
    status, reply = predict(rec_server, {"instances": instances})
    assert status == 200
    expected = direct_call(_version_path(rec_server), inputs)["output_0"]
    # one output: its name is dropped and each row is that example's output
    np.testing.assert_array_equal(np.asarray(reply["predictions"], np.float32), expected)


def test_columnar_format_and_versioned_path(rec_server):
    inputs = rec_inputs(4, seed=7)
    body = {"inputs": {key: value.tolist() for key, value in inputs.items()}}
    status, reply = predict(rec_server, body, version=3)
    assert status == 200
    expected = direct_call(_version_path(rec_server), inputs)["output_0"]
    np.testing.assert_array_equal(np.asarray(reply["outputs"], np.float32), expected)


def test_model_status_and_metadata(rec_server):
    status, reply = call(rec_server, "/v1/models/rec")
    assert status == 200
    # TF Serving's schema, plus graphopt's own key for the online deltas (docs/online.md).
    assert reply == {
        "model_version_status": [
            {"version": "3", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}
        ],
        "graphopt": {"version": 3, "last_applied_delta": None, "refused_delta": None},
    }
    assert call(rec_server, "/v1/models/rec/versions/3")[1] == reply
    status, meta = call(rec_server, "/v1/models/rec/metadata")
    assert status == 200
    assert meta["model_spec"] == {"name": "rec", "signature_name": "", "version": "3"}
    signature = meta["metadata"]["signature_def"]["signature_def"]["serving_default"]
    assert signature["inputs"]["movieId"]["dtype"] == "DT_INT64"
    assert signature["inputs"]["numeric"]["tensor_shape"]["dim"][1]["size"] == "3"
    assert signature["method_name"] == "tensorflow/serving/predict"
    assert "__saved_model_init_op" not in meta["metadata"]["signature_def"]["signature_def"]


def test_multi_output_signature_formats(tower_server):
    x = [[1.0, 2.0], [3.0, 4.5]]
    status, reply = predict(tower_server, {"instances": x})
    assert status == 200
    assert reply == {"predictions": [{"double": [2.0, 4.0], "sum": 3.0}, {"double": [6.0, 9.0], "sum": 7.5}]}
    status, reply = predict(tower_server, {"inputs": {"x": x}})
    assert reply == {"outputs": {"double": [[2.0, 4.0], [6.0, 9.0]], "sum": [3.0, 7.5]}}


def test_strings_and_b64(tower_server):
    raw = b"\xff\x00bin"
    body = {"signature_name": "words", "instances": ["hé", {"b64": base64.b64encode(raw).decode()}]}
    status, reply = predict(tower_server, body)
    assert status == 200
    first, second = reply["predictions"]
    assert first == {"length": 3, "echo_bytes": {"b64": base64.b64encode("hé".encode()).decode()}}
    assert second == {"length": len(raw), "echo_bytes": {"b64": base64.b64encode(raw).decode()}}


@pytest.mark.parametrize(
    "raw, words",
    [
        # JSON's escape of a lone surrogate: valid JSON text, but no UTF-8 string
        (b'{"signature_name": "words", "instances": ["\\ud800"]}', "not valid Unicode"),
        (b'{"signature_name": "words", "instances": [{"b64": "\\u00e9"}]}', "not valid base64"),
    ],
    ids=["lone surrogate", "non-ASCII b64"],
)
def test_strings_that_are_not_unicode_get_400(tower_server, raw, words):
    status, reply = call(tower_server, "/v1/models/tower:predict", raw=raw)
    assert status == 400 and words in reply["error"], reply
    status, reply = predict(tower_server, {"signature_name": "words", "instances": ["ok"]})
    assert status == 200 and reply["predictions"][0]["length"] == 2


GOOD_ROW = {"movieId": 1, "userId": 2, "numeric": [0.1, 0.2, 0.3]}

BAD_REQUESTS = [
    # (description, path suffix, raw body, expected status, words the message must contain)
    ("malformed JSON", ":predict", b'{"instances": [', 400, "malformed JSON"),
    ("not an object", ":predict", b"[1, 2]", 400, "JSON object"),
    ("neither format", ":predict", b"{}", 400, "exactly one of"),
    (
        "both formats",
        ":predict",
        json.dumps({"instances": [GOOD_ROW], "inputs": {}}).encode(),
        400,
        "exactly one of",
    ),
    (
        "unknown input",
        ":predict",
        json.dumps({"instances": [dict(GOOD_ROW, genre=3)]}).encode(),
        400,
        "unknown input 'genre'",
    ),
    (
        "missing input",
        ":predict",
        json.dumps({"inputs": {"movieId": [1], "userId": [2]}}).encode(),
        400,
        "missing input 'numeric'",
    ),
    (
        "instance lacks input",
        ":predict",
        json.dumps({"instances": [GOOD_ROW, {"movieId": 1, "userId": 2}]}).encode(),
        400,
        "instance 1 lacks input 'numeric'",
    ),
    (
        "wrong dtype: float id",
        ":predict",
        json.dumps({"instances": [dict(GOOD_ROW, movieId=1.5)]}).encode(),
        400,
        "DT_INT64",
    ),
    (
        "wrong dtype: string",
        ":predict",
        json.dumps({"instances": [dict(GOOD_ROW, numeric=["a", "b", "c"])]}).encode(),
        400,
        "DT_FLOAT",
    ),
    (
        "wrong shape",
        ":predict",
        json.dumps({"instances": [dict(GOOD_ROW, numeric=[1.0, 2.0])]}).encode(),
        400,
        "expects [?, 3]",
    ),
    (
        "ragged",
        ":predict",
        json.dumps({"inputs": {"movieId": [1], "userId": [2], "numeric": [[1.0, 2.0, 3.0], [1.0]]}}).encode(),
        400,
        "rectangular",
    ),
    (
        "mismatched batch sizes",
        ":predict",
        json.dumps({"inputs": {"movieId": [1, 2], "userId": [2, 3, 4], "numeric": [[0.0] * 3] * 2}}).encode(),
        400,
        "different batch sizes",
    ),
    (
        "id beyond the table",
        ":predict",
        json.dumps({"instances": [dict(GOOD_ROW, movieId=10**6)]}).encode(),
        400,
        "rejected the input",
    ),
    (
        "out of int64 range",
        ":predict",
        json.dumps({"instances": [dict(GOOD_ROW, movieId=2**70)]}).encode(),
        400,
        "DT_INT64",
    ),
    (
        "unknown signature",
        ":predict",
        json.dumps({"signature_name": "nope", "instances": [GOOD_ROW]}).encode(),
        400,
        "'nope' not found",
    ),
    (
        "oversized body",
        ":predict",
        json.dumps({"instances": [GOOD_ROW] * 2000}).encode(),
        413,
        "exceeds the limit",
    ),
    ("unknown verb", ":classify", b"{}", 400, "use :predict"),
]


@pytest.mark.parametrize("what,suffix,raw,code,words", BAD_REQUESTS, ids=[b[0] for b in BAD_REQUESTS])
def test_bad_requests_get_a_4xx_and_the_server_keeps_serving(rec_server, what, suffix, raw, code, words):
    status, reply = call(rec_server, "/v1/models/rec" + suffix, raw=raw)
    assert status == code, reply
    assert set(reply) == {"error"} and words in reply["error"], reply
    assert_answers_correctly(rec_server, _version_path(rec_server), seed=sum(what.encode()))


@pytest.mark.parametrize(
    "path,words",
    [
        ("/v1/models/other:predict", "'other' is not served"),
        ("/v1/models/rec/versions/9:predict", "version 9"),
        ("/v1/models/rec/versions/9", "version 9"),
        ("/v1/models/rec/versions/9/metadata", "version 9"),
        ("/v2/anything", "no such endpoint"),
    ],
)
def test_unknown_model_version_or_path_is_404(rec_server, path, words):
    body = {"instances": [GOOD_ROW]} if path.endswith(":predict") else None
    status, reply = call(rec_server, path, body)
    assert status == 404 and words in reply["error"], reply


def test_keep_alive_connection_survives_an_oversized_body(rec_server):
    import http.client

    connection = http.client.HTTPConnection("127.0.0.1", rec_server.rest.port, timeout=30)
    try:
        big = json.dumps({"instances": [GOOD_ROW] * 2000})
        connection.request("POST", "/v1/models/rec:predict", big, {"Content-Type": "application/json"})
        reply = connection.getresponse()
        assert reply.status == 413
        reply.read()
        inputs = rec_inputs(2, seed=21)
        connection.request("POST", "/v1/models/rec:predict", json.dumps(rest_rows(inputs)))
        reply = connection.getresponse()
        assert reply.status == 200
        np.testing.assert_array_equal(
            np.asarray(json.loads(reply.read())["predictions"], np.float32),
            direct_call(_version_path(rec_server), inputs)["output_0"],
        )
    finally:
        connection.close()


def test_distinct_requests_in_sequence_each_get_their_own_answer(rec_server):
    """Same shapes, different values, one keep-alive connection: no answer may be a stale one."""
    import http.client

    connection = http.client.HTTPConnection("127.0.0.1", rec_server.rest.port, timeout=30)
    try:
        for seed in range(8):
            inputs = rec_inputs(4, seed=100 + seed)
            row_format = seed % 2 == 0
            body = rest_rows(inputs) if row_format else rest_columns(inputs)
            connection.request("POST", "/v1/models/rec:predict", json.dumps(body))
            reply = json.loads(connection.getresponse().read())
            answer = np.asarray(reply["predictions" if row_format else "outputs"], np.float32)
            np.testing.assert_array_equal(answer, direct_call(_version_path(rec_server), inputs)["output_0"])
    finally:
        connection.close()


def test_no_content_length_is_refused(rec_server):
    request = urllib.request.Request(rec_server.rest_url + "/v1/models/rec:predict", method="POST")
    try:
        urllib.request.urlopen(request, timeout=30)
    except urllib.error.HTTPError as exc:
        assert exc.code in (400, 411)
    else:
        pytest.fail("a POST without a body was answered 2xx")


def test_many_clients_at_once_all_get_the_right_answer(rec_server):
    import threading

    inputs = rec_inputs(64, seed=5)
    expected = direct_call(_version_path(rec_server), inputs)["output_0"]
    body = {"inputs": {key: value.tolist() for key, value in inputs.items()}}
    start, answers = threading.Barrier(48), []

    def client():
        start.wait()  # every client connects at the same moment: the listen backlog must hold them
        answers.append(predict(rec_server, body))

    threads = [threading.Thread(target=client) for _ in range(48)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(answers) == 48
    for status, reply in answers:
        assert status == 200, reply
        np.testing.assert_array_equal(np.asarray(reply["outputs"], np.float32), expected)


def test_a_port_in_use_is_a_clear_error(rec_server):
    from graphopt.errors import GraphoptError
    from graphopt.serve import ModelServer

    base = rec_server.repository.base_path
    with pytest.raises(GraphoptError, match="REST .* choose another with --rest-port"):
        ModelServer(base, rest_port=rec_server.rest.port, grpc_port=0).start()
    with pytest.raises(GraphoptError, match="gRPC .* choose another with --grpc-port"):
        ModelServer(base, rest_port=0, grpc_port=rec_server.grpc_port).start()
    assert_answers_correctly(rec_server, _version_path(rec_server), seed=31)


@pytest.mark.parametrize(
    "method,path,allow",
    [
        ("PUT", "/v1/models/rec:predict", "POST"),
        ("DELETE", "/v1/models/rec", "GET"),
        ("OPTIONS", "/v1/models/rec/metadata", "GET"),
        ("GET", "/v1/models/rec:predict", "POST"),
        ("POST", "/v1/models/rec", "GET"),
        ("HEAD", "/v1/models/rec", "GET"),
    ],
)
def test_unsupported_method_is_405_with_allow(rec_server, method, path, allow):
    request = urllib.request.Request(
        rec_server.rest_url + path, method=method, data=b"{}" if method in ("PUT", "POST") else None
    )
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request, timeout=30)
    reply = caught.value
    assert reply.code == 405 and reply.headers["Allow"] == allow
    assert reply.headers["Server"] == "graphopt-serve"  # no Python version
    body = reply.read()
    if method == "HEAD":
        assert body == b""
    else:
        assert f"{method} is not allowed on {path}; use {allow}" == json.loads(body)["error"]
