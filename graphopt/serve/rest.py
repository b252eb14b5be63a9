"""TF Serving's REST API on a threaded HTTP server (one thread per connection, keep-alive)."""

import json
import logging
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from google.protobuf import json_format

from graphopt.serve.errors import BadRequest, NotFound, PayloadTooLarge, RequestError
from graphopt.serve.json_tensors import decode_inputs, encode_outputs, parse_predict_body

log = logging.getLogger(__name__)

DEFAULT_MAX_BODY_BYTES = 16 * 1024 * 1024

_MODEL_PATH = re.compile(
    r"^/v1/models/(?P<name>[^/:]+)"
    r"(?:/versions/(?P<version>[^/:]+)|/labels/(?P<label>[^/:]+))?"
    r"(?P<tail>/metadata|:[A-Za-z]+)?$"
)


def _proto_json(message):
    # TF Serving prints protos with their field names and default values (e.g. "error_code": "OK")
    return json_format.MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )


class RestApi:
    """Answers REST calls for one model repository; independent of the HTTP plumbing."""

    def __init__(self, repository):
        self.repository = repository

    def route(self, method, path):
        """(action, version) for a request path; NotFound or BadRequest when it is not one of ours."""
        match = _MODEL_PATH.match(path.split("?", 1)[0])
        if match is None:
            raise NotFound(f"no such endpoint: {method} {path}; see /v1/models/{self.repository.name}")
        self.repository.check_name(match["name"])
        if match["label"] is not None:
            raise BadRequest("version labels are not supported; address a version by /versions/<number>")
        version = None
        if match["version"] is not None:
            if not match["version"].isdigit():
                raise BadRequest(f"version {match['version']!r} is not a whole number")
            version = int(match["version"])
        tail = match["tail"] or ""
        actions = {("GET", ""): "status", ("GET", "/metadata"): "metadata", ("POST", ":predict"): "predict"}
        action = actions.get((method, tail))
        if action is None:
            if tail in (":classify", ":regress"):
                raise BadRequest(f"{tail[1:]} is not supported by graphopt serve; use :predict")
            raise NotFound(f"no such endpoint: {method} {path}")
        return action, version

    def status(self, version):
        """The GetModelStatusResponse of the model (every version seen, or one) as JSON."""
        return _proto_json(self.repository.status_response(version))

    def metadata(self, version):
        """The GetModelMetadataResponse (signature_def) of the served version as JSON."""
        servable = self.repository.get(version)
        spec = {"name": self.repository.name, "signature_name": "", "version": str(servable.version)}
        return {"model_spec": spec, "metadata": {"signature_def": _proto_json(servable.signature_defs)}}

    def predict(self, version, body):
        """Run a predict body against the served version; the reply dict in TF Serving's format."""
        request = parse_predict_body(body)
        signature = self.repository.get(version).signature(request.signature_name)
        outputs = signature.run(decode_inputs(request, signature))
        return encode_outputs(outputs, request.row_format)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: clients reuse one connection for many requests
    server_version = "graphopt-serve"

    def do_GET(self):
        self._answer("GET")

    def do_POST(self):
        self._answer("POST")

    def handle_expect_100(self):
        # curl sends "Expect: 100-continue" for large bodies: refuse before the body is sent
        try:
            self._check_length()
        except RequestError as exc:
            self._reply(exc.http_status, {"error": str(exc)}, close=True)
            return False
        return super().handle_expect_100()

    def _check_length(self):
        if self.headers.get("Transfer-Encoding"):
            raise BadRequest("chunked request bodies are not supported; send a Content-Length")
        length = self.headers.get("Content-Length")
        if length is None or not length.isdigit():
            raise BadRequest("a POST needs a Content-Length header")
        limit = self.server.max_body_bytes
        if int(length) > limit:
            raise PayloadTooLarge(f"request body of {length} bytes exceeds the limit of {limit} bytes")
        return int(length)

    def _answer(self, method):
        api, tracker = self.server.api, self.server.in_flight
        with tracker:
            close = False
            try:
                action, version = api.route(method, self.path)
                if action == "predict":
                    try:
                        length = self._check_length()
                    except RequestError:
                        # An unread body would be taken for the next request, and closing on it
                        # makes the kernel reset the connection before the client reads the
                        # reply: read a moderately oversized body away, close on a huge one.
                        close = not self._discard_body()
                        raise
                    result = api.predict(version, self.rfile.read(length))
                else:
                    if method == "POST":
                        close = True
                    result = getattr(api, action)(version)
                status = 200
            except RequestError as exc:
                status, result = exc.http_status, {"error": str(exc)}
            self._reply(status, result, close=close or self.server.stopping)

    def _discard_body(self):
        length = self.headers.get("Content-Length", "")
        if not length.isdigit() or int(length) > 8 * self.server.max_body_bytes:
            return False
        remaining = int(length)
        while remaining:
            chunk = self.rfile.read(min(remaining, 1 << 16))
            if not chunk:
                return False
            remaining -= len(chunk)
        return True

    def _reply(self, status, document, close=False):
        payload = json.dumps(document, separators=(",", ":")).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format, *args):  # noqa: A002 - BaseHTTPRequestHandler's signature
        log.debug("%s - %s", self.address_string(), format % args)


class InFlight:
    """Counts requests being answered so that shutdown can wait for them."""

    def __init__(self):
        self._count = 0
        self._idle = threading.Condition()

    def __enter__(self):
        with self._idle:
            self._count += 1

    def __exit__(self, *exc):
        with self._idle:
            self._count -= 1
            self._idle.notify_all()

    def wait_idle(self, timeout):
        """Wait until no request is in flight or ``timeout`` seconds pass; True if idle."""
        with self._idle:
            return self._idle.wait_for(lambda: self._count == 0, timeout)


class RestServer(ThreadingHTTPServer):
    """The HTTP server: a thread per connection, each answering with the shared RestApi."""

    daemon_threads = True  # idle keep-alive connections must not hold the process open
    # socketserver's default backlog of 5 overflows when a few dozen clients connect at once,
    # and the kernel then resets connections or delays them by a SYN retry (a 1 s latency spike)
    request_queue_size = 1024
    allow_reuse_address = True

    def __init__(self, repository, host, port, max_body_bytes=DEFAULT_MAX_BODY_BYTES):
        self.api = RestApi(repository)
        self.max_body_bytes = max_body_bytes
        self.in_flight = InFlight()
        self.stopping = False
        self._thread = None
        super().__init__((host, port), _Handler)

    @property
    def port(self):
        """The bound port (useful when 0 asked for an ephemeral one)."""
        return self.server_address[1]

    def start(self):
        """Serve in a background thread."""
        self._thread = threading.Thread(target=self.serve_forever, name="graphopt-rest", daemon=True)
        self._thread.start()

    def stop(self, grace_seconds):
        """Stop accepting connections, let requests in flight finish (up to grace_seconds), close."""
        self.stopping = True
        self.shutdown()
        self.in_flight.wait_idle(grace_seconds)
        self.server_close()
