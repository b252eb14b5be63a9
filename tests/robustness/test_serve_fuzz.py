"""A bounded fuzz of `graphopt serve` as a hostile client would try it, on loopback.

One real server subprocess per module. Every hostile request must be answered with a 4xx (or a
gRPC error status), or its connection closed by the server's read timeout, within a bound; after
each, a good request (fresh inputs every time) must still get the answer a direct call of the
same SavedModel gives. The server's peak memory (VmHWM) and thread count must stay bounded.
Loops and sizes are fixed and seeded: the module runs in well under a minute of wall time.
"""

import json
import os
import random
import select
import signal
import socket
import subprocess
import sys

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from graphopt.serve.server import READY_LINE
from tests.serve.serve_models import export_recommender, rec_inputs

READ_TIMEOUT = 3.0  # the server's --read-timeout-seconds
ANSWER_WITHIN = READ_TIMEOUT + 15.0  # generous: the machine is shared
MAX_BODY = 64 * 1024
MAX_CONNECTIONS = 64
MEMORY_GROWTH_LIMIT = 96 << 20  # the unchecked 2^27-element claim grew the peak by ~1 GB

pytestmark = pytest.mark.timeout(600)


class Served:
    """The server subprocess, its addresses, and the same SavedModel loaded here as the reference."""

    def __init__(self, process, match, version_path):
        self.process = process
        self.rest_port = int(match["rest_url"].rsplit(":", 1)[1])
        self.channel = grpc.insecure_channel(match["grpc_target"])
        self.stub = prediction_service_pb2_grpc.PredictionServiceStub(self.channel)
        self._loaded = tf.saved_model.load(version_path)  # kept alive while its signature is called
        self.reference = self._loaded.signatures["serving_default"]
        self.good_requests = 0

    def proc_status(self, field):
        with open(f"/proc/{self.process.pid}/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
        raise AssertionError(f"no {field} in /proc/{self.process.pid}/status")

    def expected(self, inputs):
        return self.reference(**{k: tf.constant(v) for k, v in inputs.items()})["output_0"].numpy()

    def assert_good_request_answered(self):
        """One REST and one gRPC predict of inputs never sent before, each equal to a direct call."""
        self.good_requests += 1
        inputs = rec_inputs(3, seed=1000 + self.good_requests)
        body = json.dumps({"inputs": {k: v.tolist() for k, v in inputs.items()}}).encode()
        status, _, reply = exchange(self.rest_port, _post(body))
        assert status == 200, reply
        np.testing.assert_array_equal(
            np.asarray(json.loads(reply)["outputs"], np.float32), self.expected(inputs)
        )
        inputs = rec_inputs(2, seed=5000 + self.good_requests)
        response = self.stub.Predict(_predict_request(inputs), timeout=ANSWER_WITHIN)
        np.testing.assert_array_equal(tf.make_ndarray(response.outputs["output_0"]), self.expected(inputs))


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    base = tmp_path_factory.mktemp("fuzz") / "rec"
    export_recommender(str(base / "1"), seed=4)
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "graphopt",
            "serve",
            str(base),
            "--rest-port",
            "0",
            "--grpc-port",
            "0",
            "--read-timeout-seconds",
            str(READ_TIMEOUT),
            "--max-body-bytes",
            str(MAX_BODY),
            "--max-connections",
            str(MAX_CONNECTIONS),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"),
    )
    try:
        ready, _, _ = select.select([process.stdout], [], [], 180)
        line = process.stdout.readline() if ready else ""
        match = READY_LINE.search(line.strip())
        assert match, f"graphopt serve did not start: {line!r}"
        server = Served(process, match, str(base / "1"))
        server.assert_good_request_answered()
        server.memory_at_start = server.proc_status("VmHWM") << 10
        yield server
        server.channel.close()
        assert (server.proc_status("VmHWM") << 10) - server.memory_at_start < MEMORY_GROWTH_LIMIT
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=60)
        assert process.returncode == 0, err
        assert "Traceback" not in err and "Exception" not in err, err  # no request reached a bug
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


# ---- REST over raw sockets ------------------------------------------------------------------------


def _post(body, path="/v1/models/rec:predict", headers=""):
    return (
        f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n{headers}\r\n"
    ).encode() + body


def _read_reply(sock, head_only=False):
    """(status, headers, body) of one reply on ``sock``, or (None, {}, b"") when it was closed first.

    ``head_only``: the reply to a HEAD request, whose Content-Length is not followed by a body.
    """
    data = b""
    while b"\r\n\r\n" not in data:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            return None, {}, b""
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    headers = {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in lines[1:])}
    length = 0 if head_only else int(headers.get("content-length", 0))
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return int(lines[0].split()[1]), headers, body


def exchange(port, data, timeout=ANSWER_WITHIN):
    """Send ``data`` on a new connection and read one reply (a socket timeout fails the test)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        return _read_reply(sock)


def _assert_client_error(status, headers, body, allowed=range(400, 500)):
    assert status in allowed, (status, body)
    assert headers["server"] == "graphopt-serve"  # no Python version
    assert set(json.loads(body)) == {"error"} and json.loads(body)["error"], body


GOOD_BODY = json.dumps({"instances": [{"movieId": 1, "userId": 2, "numeric": [0.5, 0.25, 1.0]}]}).encode()

MALFORMED_BODIES = [
    b"",
    b"{",
    b'{"instances": [',
    b"\xff\xfe\x00",
    b"null",
    b"[]",
    b'"x"',
    b"1e999",
    b'{"instances": "x"}',
    b'{"inputs": 5}',
    b'{"instances": []}',
    b'{"instances": [null]}',
    b'{"signature_name": 5, "inputs": {}}',
    b'{"instances": [{"movieId": "a", "userId": 1, "numeric": [1, 2, 3]}]}',
    b'{"instances": [{"movieId": true, "userId": 1, "numeric": [1, 2, 3]}]}',
    b'{"instances": [{"movieId": 1, "userId": 1, "numeric": [1, 2, {"b64": "AA=="}]}]}',
    b'{"instances": [{"movieId": 1, "userId": 1, "numeric": [[[1, 2, 3]]]}]}',
    b'{"instances": [{"movieId": 18446744073709551616, "userId": 1, "numeric": [1, 2, 3]}]}',
    b'{"instances": [{"movieId": 1, "userId": 1, "numeric": "\\ud800"}]}',
    b'{"inputs": {"movieId": [1], "userId": [1], "numeric": [[NaN, 1, 2]], "x": {}}}',
    b"[" * 60_000,
    b'{"instances": ' + b"[" * 5_000 + b"]" * 5_000 + b"}",
]


def _mutations(count, seed=7):
    """Bodies made from GOOD_BODY by truncating it or inserting a byte no valid body can hold there."""
    rng = random.Random(seed)
    for _ in range(count):
        if rng.random() < 0.5:
            yield GOOD_BODY[: rng.randrange(1, len(GOOD_BODY))]
        else:
            at = rng.randrange(len(GOOD_BODY))
            yield GOOD_BODY[:at] + rng.choice([b'"', b"{", b"]", b",", b"\x00", b"\\", b":"]) + GOOD_BODY[at:]


@pytest.mark.parametrize("body", MALFORMED_BODIES + list(_mutations(40)), ids=lambda b: repr(b[:24]))
def test_malformed_and_mistyped_bodies_get_400(served, body):
    _assert_client_error(*exchange(served.rest_port, _post(body)), allowed=(400,))
    served.assert_good_request_answered()


FRAMING = [
    # (description, raw bytes, expected status)
    ("garbage request line", b"GARBAGE\r\n\r\n", 400),
    ("HTTP/2 preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 400),
    ("header without colon", b"GET /v1/models/rec HTTP/1.1\r\nnocolon\r\n\r\n", 400),
    (
        "Content-Length not a number",
        b"POST /v1/models/rec:predict HTTP/1.1\r\nContent-Length: abc\r\n\r\n",
        400,
    ),
    (
        "conflicting Content-Lengths",
        b"POST /v1/models/rec:predict HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}",
        400,
    ),
    (
        "chunked",
        b"POST /v1/models/rec:predict HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
        400,
    ),
    ("POST without Content-Length", b"POST /v1/models/rec:predict HTTP/1.1\r\n\r\n", 411),
    ("headers over 64 KiB", b"GET /v1/models/rec HTTP/1.1\r\nX-Big: " + b"a" * 70_000 + b"\r\n\r\n", 431),
    ("200 header lines", b"GET /v1/models/rec HTTP/1.1\r\n" + b"X-A: 1\r\n" * 200 + b"\r\n", 431),
    (
        "claims a terabyte, sends nothing",
        b"POST /v1/models/rec:predict HTTP/1.1\r\nContent-Length: 1099511627776\r\n\r\n",
        413,
    ),
    ("oversized body sent whole", _post(b" " * (2 * MAX_BODY)), 413),
    (
        "oversized, Expect: 100-continue",
        b"POST /v1/models/rec:predict HTTP/1.1\r\nContent-Length: 999999\r\nExpect: 100-continue\r\n\r\n",
        413,
    ),
    ("unknown path", b"GET /v2/x HTTP/1.1\r\n\r\n", 404),
    ("unknown model", _post(GOOD_BODY, path="/v1/models/other:predict"), 404),
]


@pytest.mark.parametrize("what,data,status", FRAMING, ids=[f[0] for f in FRAMING])
def test_bad_framing_gets_a_4xx(served, what, data, status):
    _assert_client_error(*exchange(served.rest_port, data), allowed=(status,))
    served.assert_good_request_answered()


@pytest.mark.parametrize("method", ["HEAD", "PUT", "DELETE", "OPTIONS", "PATCH", "TRACE", "GET", "POST"])
@pytest.mark.parametrize(
    "path,allow",
    [
        ("/v1/models/rec", "GET"),
        ("/v1/models/rec/versions/1/metadata", "GET"),
        ("/v1/models/rec:predict", "POST"),
    ],
)
def test_unsupported_methods_get_405_with_allow(served, method, path, allow):
    if method == allow:
        return  # the supported method: covered by every good request
    body = b"{}" if method in ("PUT", "PATCH", "POST") else b""
    request = f"{method} {path} HTTP/1.1\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body
    with socket.create_connection(("127.0.0.1", served.rest_port), timeout=ANSWER_WITHIN) as sock:
        sock.sendall(request)
        status, headers, reply = _read_reply(sock, head_only=method == "HEAD")
        assert status == 405 and headers["allow"] == allow and headers["server"] == "graphopt-serve"
        if method == "HEAD":
            assert reply == b"" and int(headers["content-length"]) > 0  # a HEAD reply has no body
        else:
            assert f"{method} is not allowed" in json.loads(reply)["error"]
        sock.sendall(_post(GOOD_BODY))  # the connection is still in step for the next request
        assert _read_reply(sock)[0] == 200
    served.assert_good_request_answered()


# ---- slow senders and idle connections -----------------------------------------------------------

STALLS = {
    "stalls in the request line": b"POST /v1/models/rec:pre",
    "stalls in the headers": b"POST /v1/models/rec:predict HTTP/1.1\r\nContent-Le",
    "stalls mid-body": b'POST /v1/models/rec:predict HTTP/1.1\r\nContent-Length: 1000\r\n\r\n{"instances": [',
}


def test_stalled_requests_are_cut_off_by_the_read_timeout(served):
    """More stalled clients than the server has workers: a good request sent after them is still
    answered before any of them is timed out, so none of them holds a worker."""
    sockets = {}
    for index in range(40):
        what = list(STALLS)[index % len(STALLS)]
        sockets[f"{what} #{index}"] = socket.create_connection(
            ("127.0.0.1", served.rest_port), timeout=ANSWER_WITHIN
        )
        sockets[f"{what} #{index}"].sendall(STALLS[what])
    try:
        served.assert_good_request_answered()
        assert select.select(list(sockets.values()), [], [], 0)[0] == [], "a stall was answered first"
        for what, sock in sockets.items():
            status, headers, body = _read_reply(sock)  # the socket timeout bounds the wait
            assert status in (408, None), (what, status)
            if status == 408:
                assert headers["connection"] == "close" and "read timeout" in json.loads(body)["error"]
            assert sock.recv(1) == b""  # then closed
    finally:
        for sock in sockets.values():
            sock.close()
    served.assert_good_request_answered()


def test_a_trickling_sender_is_cut_off(served):
    """One byte every 0.2 s: each read makes progress, yet the whole request has READ_TIMEOUT seconds."""
    data = _post(GOOD_BODY)
    with socket.create_connection(("127.0.0.1", served.rest_port), timeout=ANSWER_WITHIN) as sock:
        for index in range(len(data)):
            if select.select([sock], [], [], 0.2)[0]:
                break
            sock.send(data[index : index + 1])
        else:
            pytest.fail(f"the server read a {len(data)}-byte request sent over {0.2 * len(data):.0f} s")
        status, _, _ = _read_reply(sock)
        assert status in (408, None)
    served.assert_good_request_answered()


def test_many_idle_connections_hold_no_threads_and_are_closed(served):
    threads = served.proc_status("Threads")
    idle = [
        socket.create_connection(("127.0.0.1", served.rest_port), timeout=ANSWER_WITHIN)
        for _ in range(MAX_CONNECTIONS - 4)
    ]
    try:
        served.assert_good_request_answered()  # a slot is left, and no worker is held by the idle ones
        assert served.proc_status("Threads") <= threads + 2
        over = [
            socket.create_connection(("127.0.0.1", served.rest_port), timeout=ANSWER_WITHIN)
            for _ in range(12)
        ]
        try:
            for sock in over:  # past --max-connections: 503 at once (or the connection closed)
                status, headers, body = _read_reply(sock)
                if status is not None:
                    _assert_client_error(status, headers, body, allowed=(503,))
        finally:
            for sock in over:
                sock.close()
        for sock in idle:  # the read timeout closes each idle connection
            assert _read_reply(sock)[0] is None
    finally:
        for sock in idle:
            sock.close()
    served.assert_good_request_answered()


# ---- gRPC ---------------------------------------------------------------------------------------


def _predict_request(inputs):
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "rec"
    for key, value in inputs.items():
        request.inputs[key].CopyFrom(tf.make_tensor_proto(value))
    return request


def _claim(dims, key="movieId", dtype=tf.int64, values=(1,), content=None):
    """A valid one-example request except that input ``key`` claims ``dims`` and carries ``values``."""
    request = _predict_request(rec_inputs(1))
    proto = request.inputs[key]
    proto.Clear()
    proto.dtype = dtype if isinstance(dtype, int) else dtype.as_datatype_enum
    for size in dims:
        proto.tensor_shape.dim.add().size = size
    proto.int64_val.extend(values)
    if content is not None:
        proto.tensor_content = content
    return request


def _edited(request, edit):
    edit(request.inputs["movieId"])
    return request


def _with_extra_input(request, dims):
    request.inputs["extra"].CopyFrom(_claim(dims).inputs["movieId"])
    return request


def _every_input_claims(rows):
    """34-byte-per-input requests that claim ``rows`` examples of every input, one value each."""
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "rec"
    for key, dims, field in (
        ("movieId", [rows], "int64_val"),
        ("userId", [rows], "int64_val"),
        ("numeric", [rows, 3], "float_val"),
    ):
        proto = request.inputs[key]
        proto.dtype = (tf.float32 if key == "numeric" else tf.int64).as_datatype_enum
        for size in dims:
            proto.tensor_shape.dim.add().size = size
        getattr(proto, field).append(1)
    return request


GRPC_LIES = [
    ("2^27 claimed, every input", lambda: _every_input_claims(2**27)),
    ("2^31 claimed, every input", lambda: _every_input_claims(2**31)),
    ("2^40 claimed", lambda: _claim([2**40])),
    ("dims overflowing int64", lambda: _claim([2**31, 2**31, 2**31])),
    ("negative dim", lambda: _claim([-5])),
    (
        "unknown rank",
        lambda: _edited(_claim([], values=()), lambda p: setattr(p.tensor_shape, "unknown_rank", True)),
    ),
    ("more values than shape", lambda: _claim([1], values=range(50))),
    ("tensor_content too short", lambda: _claim([4], values=(), content=b"\x00" * 8)),
    ("dtype float for int64", lambda: _claim([1], dtype=tf.float32, values=())),
    ("dtype string for int64", lambda: _claim([1], dtype=tf.string, values=())),
    ("dtype not a DataType", lambda: _claim([1], dtype=4242)),
    ("dtype resource", lambda: _claim([1], dtype=tf.resource, values=())),
    ("values in another dtype's field", lambda: _edited(_claim([1]), lambda p: p.float_val.append(1.0))),
    ("unknown input claiming 2^30", lambda: _with_extra_input(_claim([1]), [2**30])),
]


@pytest.mark.parametrize("what,make", GRPC_LIES, ids=[g[0] for g in GRPC_LIES])
def test_grpc_tensor_lies_are_invalid_argument_and_memory_stays_bounded(served, what, make):
    request = make()
    before = served.proc_status("VmHWM") << 10
    with pytest.raises(grpc.RpcError) as caught:
        served.stub.Predict(request, timeout=ANSWER_WITHIN)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (what, caught.value.details())
    assert (served.proc_status("VmHWM") << 10) - before < MEMORY_GROWTH_LIMIT
    served.assert_good_request_answered()


def test_random_and_mutated_grpc_messages(served):
    """Seeded random bytes and bit-flipped valid requests: an answer or an error code, never UNKNOWN."""
    raw = served.channel.unary_unary("/tensorflow.serving.PredictionService/Predict")
    valid = _predict_request(rec_inputs(2, seed=3)).SerializeToString()
    rng = random.Random(11)
    messages = [rng.randbytes(rng.randrange(1, 200)) for _ in range(20)]
    for _ in range(40):
        flipped = bytearray(valid)
        for _ in range(rng.randrange(1, 4)):
            flipped[rng.randrange(len(flipped))] ^= 1 << rng.randrange(8)
        messages.append(bytes(flipped))
    codes = set()
    for message in messages:
        try:
            predict_pb2.PredictResponse.FromString(raw(message, timeout=ANSWER_WITHIN))
            codes.add("OK")
        except grpc.RpcError as exc:
            codes.add(exc.code().name)
            assert exc.code() not in (grpc.StatusCode.UNKNOWN, grpc.StatusCode.DEADLINE_EXCEEDED), (
                exc.details()
            )
    assert codes - {"OK"}, "no message was refused: the fuzz did not reach the checks"
    served.assert_good_request_answered()
