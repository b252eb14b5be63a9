"""`graphopt serve` as a subprocess: ready line, REST answers, clean exit on SIGTERM and SIGINT."""

import json
import os
import select
import signal
import socket
import subprocess
import sys

import numpy as np
import pytest

from graphopt.serve.server import READY_LINE
from tests.serve.serve_models import direct_call, make_base
from tests.serve.serve_rest_client import call


def _graphopt(*args):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.Popen(
        [sys.executable, "-m", "graphopt", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def _ready_line(process, timeout=120):
    ready, _, _ = select.select([process.stdout], [], [], timeout)
    assert ready, "graphopt serve printed nothing"
    line = process.stdout.readline()
    match = READY_LINE.search(line.strip())
    assert match, line + process.stderr.read()
    return match


class _Address:
    def __init__(self, rest_url, name):
        self.rest_url, self.name = rest_url, name


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_serve_answers_then_stops_cleanly_on_signal(model_store, tmp_path, stop_signal):
    base = make_base(model_store, tmp_path, {1: "rec-v1"})
    process = _graphopt("serve", str(base), "--model-name", "rec", "--rest-port", "0", "--grpc-port", "0")
    try:
        match = _ready_line(process)
        status, reply = call(_Address(match["rest_url"], match["name"]), "/v1/models/rec")
        assert status == 200 and reply["model_version_status"][0]["state"] == "AVAILABLE"
        process.send_signal(stop_signal)
        out, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, err
    assert "stopping" in out
    assert "Traceback" not in err


def test_once_prints_one_prediction(model_store, tmp_path):
    base = make_base(model_store, tmp_path, {4: "rec-v1"})
    body = {"instances": [{"movieId": 3, "userId": 2, "numeric": [0.5, 0.0, 1.0]}]}
    process = _graphopt("serve", str(base), "--once", "--request", json.dumps(body))
    out, err = process.communicate(timeout=120)
    assert process.returncode == 0, err
    request_line, reply_line = out.strip().splitlines()
    assert request_line == f"POST /v1/models/base:predict {json.dumps(body)}"
    inputs = {
        "movieId": np.array([3]),
        "userId": np.array([2]),
        "numeric": np.array([[0.5, 0.0, 1.0]], np.float32),
    }
    np.testing.assert_array_equal(
        np.asarray(json.loads(reply_line)["predictions"], np.float32),
        direct_call(str(base / "4"), inputs)["output_0"],
    )


def _one_line_exit_2(process, words):
    out, err = process.communicate(timeout=120)
    assert process.returncode == 2, err
    assert out == "" and len(err.splitlines()) == 1, err  # nothing else on stderr: no C++ log line
    assert err.startswith("graphopt: error: ") and words in err, err


@pytest.mark.parametrize("flag", ["--rest-port", "--grpc-port"])
def test_a_port_in_use_is_one_line_and_exit_2(model_store, tmp_path, flag):
    base = make_base(model_store, tmp_path, {1: "rec-v1"})
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        other = "--grpc-port" if flag == "--rest-port" else "--rest-port"
        _one_line_exit_2(
            _graphopt("serve", str(base), flag, str(port), other, "0"),
            f":{port}: Address already in use; choose another with {flag}",
        )


@pytest.mark.parametrize(
    "args,words",
    [
        (["--rest-port", "70000"], "--rest-port 70000 is not a port number"),
        (["--grpc-port", "-1"], "--grpc-port -1 is not a port number"),
        (["--max-request-elements", "0"], "--max-request-elements 0 must be greater than 0"),
        (["--read-timeout-seconds", "0"], "--read-timeout-seconds 0.0 must be greater than 0"),
        (["--poll-seconds", "-1"], "--poll-seconds -1.0 must be greater than 0"),
        (["--host", "no-such-host.invalid"], "cannot listen on host 'no-such-host.invalid'"),
    ],
)
def test_bad_serving_options_are_one_line_and_exit_2(model_store, tmp_path, args, words):
    base = make_base(model_store, tmp_path, {1: "rec-v1"})
    _one_line_exit_2(_graphopt("serve", str(base), *args), words)


def test_bad_base_path_is_one_line_and_exit_2(tmp_path):
    process = _graphopt("serve", str(tmp_path / "nowhere"), "--rest-port", "0", "--grpc-port", "0")
    out, err = process.communicate(timeout=120)
    assert process.returncode == 2
    errors = [line for line in err.splitlines() if line.startswith("graphopt: error:")]
    assert len(errors) == 1 and "does not exist" in errors[0]
    assert "Traceback" not in err
