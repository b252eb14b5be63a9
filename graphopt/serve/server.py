"""The model server: the served models answered over REST and gRPC, started and stopped together."""

import json
import logging
import os
import re
import signal
import socket
import threading
import urllib.error
import urllib.request

from graphopt.errors import GraphoptError
from graphopt.serve.batching import BatchScheduler
from graphopt.serve.grpc_service import grpc_server
from graphopt.serve.http_server import (
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_READ_TIMEOUT_SECONDS,
    RestServer,
)
from graphopt.serve.json_tensors import encode_outputs
from graphopt.serve.limits import DEFAULT_MAX_REQUEST_ELEMENTS
from graphopt.serve.metrics import ServerMetrics
from graphopt.serve.model_set import ModelSet, single_model
from graphopt.serve.predict import Predictor
from graphopt.serve.repository import DEFAULT_WATCHER_NICE
from graphopt.serve.rest_api import RestApi

log = logging.getLogger(__name__)

SHUTDOWN_GRACE_SECONDS = 5.0
DEFAULT_CONFIG_POLL_SECONDS = 1.0

# The line `graphopt serve` prints once it answers requests; scripts that start it read it.
READY_LINE = re.compile(
    r"REST (?P<rest_url>http://\S+?)/v1/models/(?P<name>[^/\s,]+), gRPC (?P<grpc_target>\S+)$"
)


class ModelServer:
    """Serves MODEL_BASE/<version>/ under one model name, or the models of a model config file,
    on a REST and a gRPC port (0: any free port).

    ``batching``: None (no batching) or BatchingParameters (``--enable-batching``); ``metrics``:
    serve Prometheus metrics at /monitoring/prometheus/metrics on the REST port.
    """

    def __init__(
        self,
        base_path=None,
        model_name=None,
        host="127.0.0.1",
        rest_port=8501,
        grpc_port=8500,
        poll_seconds=1.0,
        max_body_bytes=DEFAULT_MAX_BODY_BYTES,
        max_request_elements=DEFAULT_MAX_REQUEST_ELEMENTS,
        read_timeout=DEFAULT_READ_TIMEOUT_SECONDS,
        max_connections=DEFAULT_MAX_CONNECTIONS,
        delta_poll_seconds=0.2,
        model_config_file=None,
        config_poll_seconds=DEFAULT_CONFIG_POLL_SECONDS,
        batching=None,
        metrics=True,
        watcher_nice=DEFAULT_WATCHER_NICE,
    ):
        for flag, port in (("--rest-port", rest_port), ("--grpc-port", grpc_port)):
            if not 0 <= port <= 65535:
                raise GraphoptError(
                    f"{flag} {port} is not a port number; choose one from 0 (any free port) to 65535"
                )
        for flag, value in (
            ("--max-body-bytes", max_body_bytes),
            ("--max-request-elements", max_request_elements),
            ("--read-timeout-seconds", read_timeout),
            ("--max-connections", max_connections),
            ("--poll-seconds", poll_seconds),
            ("--delta-poll-seconds", delta_poll_seconds),
        ):
            if not value > 0:
                raise GraphoptError(f"{flag} {value} must be greater than 0")
        if not 0 <= watcher_nice <= 19:
            raise GraphoptError(f"--watcher-nice {watcher_nice} is not a nice increment; give 0 to 19")
        if config_poll_seconds < 0:
            raise GraphoptError(
                f"--model-config-file-poll-wait-seconds {config_poll_seconds} is negative; "
                "give 0 (never re-read) or more"
            )
        if (base_path is None) == (model_config_file is None):
            raise GraphoptError("give MODEL_BASE or --model-config-file (one of them)")
        if model_config_file is not None:
            if model_name is not None:
                raise GraphoptError(
                    "--model-name names MODEL_BASE's model; with --model-config-file, "
                    "name each model in the file"
                )
            self.models = ModelSet.from_config_file(
                model_config_file, poll_seconds, delta_poll_seconds, config_poll_seconds, watcher_nice
            )
        else:
            name = model_name or os.path.basename(os.path.normpath(os.path.abspath(base_path)))
            self.models = single_model(base_path, name, poll_seconds, delta_poll_seconds, watcher_nice)
        self.batching = batching
        self.metrics = ServerMetrics(self.models) if metrics else None
        self.batcher = None
        self.host = host
        self._ports = (rest_port, grpc_port)
        self._max_body_bytes = max_body_bytes
        self._max_request_elements = max_request_elements
        self._read_timeout = read_timeout
        self._max_connections = max_connections
        self.rest = None
        self.grpc = None
        self.grpc_port = None

    @property
    def repository(self):
        """The (first) model's repository: the only one without a model config file."""
        return self.models.first

    @property
    def name(self):
        """The (first) model's name clients address."""
        return self.repository.name

    @property
    def rest_url(self):
        """Base URL of the REST API, e.g. http://127.0.0.1:8501."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.rest.port}"

    @property
    def grpc_target(self):
        """host:port for grpc.insecure_channel."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.grpc_port}"

    def start(self):
        """Open both ports, load the latest version, then answer; GraphoptError if a port cannot be used.

        The ports are bound before the (slow) model load, so a port in use fails at once.
        """
        rest_port, grpc_port = self._ports
        try:
            socket.getaddrinfo(self.host, None)
        except socket.gaierror as exc:
            raise GraphoptError(
                f"cannot listen on host {self.host!r}: {exc.strerror}; pass an address with --host"
            ) from None
        predictor = Predictor(None, self.metrics)
        api = RestApi(self.models, self._max_request_elements, predictor, self.metrics)
        try:
            self.rest = RestServer(
                api, self.host, rest_port, self._max_body_bytes, self._read_timeout, self._max_connections
            )
        except OSError as exc:
            reason = os.strerror(exc.errno) if exc.errno else str(exc)
            raise GraphoptError(
                f"cannot listen for REST on {self.host}:{rest_port}: {reason}; "
                "choose another with --rest-port"
            ) from None
        try:
            self.grpc, self.grpc_port = grpc_server(
                self.models,
                self.host,
                grpc_port,
                self._max_body_bytes,
                self._max_request_elements,
                predictor=predictor,
            )
        except GraphoptError:
            self.rest.server_close()
            self.rest = None
            raise
        try:
            self.models.start()
        except BaseException:
            self.rest.server_close()
            self.grpc.stop(None)
            self.rest = self.grpc = None
            raise
        if self.batching is not None:
            self.batcher = predictor.batcher = BatchScheduler(self.batching, self.metrics)
        self.rest.start()
        self.grpc.start()
        return self

    def stop(self, grace_seconds=SHUTDOWN_GRACE_SECONDS):
        """Stop taking requests, let those in flight finish (up to grace_seconds), stop watching."""
        stopped = self.grpc.stop(grace_seconds) if self.grpc is not None else None
        if self.rest is not None:
            self.rest.stop(grace_seconds)
        if stopped is not None:
            stopped.wait(grace_seconds)
        if self.batcher is not None:
            self.batcher.stop()
        self.models.stop()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def serve_until_signal(server, on_ready=print):
    """Start ``server``, report where it listens, and serve until SIGINT or SIGTERM; then stop cleanly."""
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        server.start()
        on_ready(
            f"serving {describe_models(server.models)}: "
            f"REST {server.rest_url}/v1/models/{server.name}, gRPC {server.grpc_target}"
        )  # READY_LINE matches this
        while not stop.wait(0.5):
            pass
        on_ready("stopping: finishing requests in flight")
        server.stop()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def describe_models(models):
    """e.g. "model 'rec' version 2 from /models/rec" or "models 'a' version 1, 'b' versions 1, 2"."""
    parts = []
    for repository in models.repositories():
        versions = sorted(repository.served())
        parts.append(
            f"{repository.name!r} version{'s' if len(versions) > 1 else ''} {', '.join(map(str, versions))}"
        )
    if len(parts) == 1:
        return f"model {parts[0]} from {models.first.base_path}"
    return "models " + ", ".join(parts)


def example_request(server):
    """A row-format predict body of one example of zeros for the served default signature."""
    signature = server.repository.get().signature(None)
    return {"instances": encode_outputs(signature.example_arrays(), row_format=True)["predictions"]}


def one_prediction(server, body=None):
    """POST one predict request to a started server over REST: (request body, reply document)."""
    body = example_request(server) if body is None else body
    request = urllib.request.Request(
        f"{server.rest_url}/v1/models/{server.name}:predict",
        data=json.dumps(body).encode("utf-8"),
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as reply:
            return body, json.load(reply)
    except urllib.error.HTTPError as exc:
        raise GraphoptError(
            f"the server refused the demo request: {exc.read().decode('utf-8', 'replace')}"
        ) from None


def demo_prediction(base_path, model_name=None, host="127.0.0.1", request_json=None, **limits):
    """Serve base_path on free ports, make one REST predict call, stop: (model name, body, reply).

    ``limits`` are ModelServer's keyword arguments (max_body_bytes, read_timeout, ...).
    """
    body = None
    if request_json is not None:
        try:
            body = json.loads(request_json)
        except json.JSONDecodeError as exc:
            raise GraphoptError(f"the demo request is not valid JSON: {exc}") from None
    with ModelServer(base_path, model_name, host, 0, 0, **limits) as server:
        sent, reply = one_prediction(server, body)
    return server.name, sent, reply
