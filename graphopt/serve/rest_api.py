"""TF Serving's REST API: routes /v1/models/... paths and answers them from the served models.

Independent of the HTTP plumbing (http_server.py): a call takes the method, path and body and
returns the JSON document of the reply or raises a RequestError carrying its HTTP status.
"""

import re
from dataclasses import dataclass

from google.protobuf import json_format

from graphopt.serve.errors import BadRequest, MethodNotAllowed, NotFound
from graphopt.serve.json_tensors import decode_inputs, encode_outputs, parse_predict_body
from graphopt.serve.limits import DEFAULT_MAX_REQUEST_ELEMENTS
from graphopt.serve.metrics import METRICS_PATH
from graphopt.serve.predict import Predictor

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


@dataclass(frozen=True)
class Target:
    """What a REST path addresses: a model's repository and, optionally, a version or a label."""

    repository: object
    version: int | None = None
    label: str | None = None

    def servable(self):
        return self.repository.get(self.version, self.label)

    def status_version(self):
        """The version a status or metadata call reports on (a label resolved), or None for all."""
        return self.repository.version_for_label(self.label) if self.label is not None else self.version


class RestApi:
    """Answers REST calls for the server's models; independent of the HTTP plumbing."""

    def __init__(
        self, models, max_request_elements=DEFAULT_MAX_REQUEST_ELEMENTS, predictor=None, metrics=None
    ):
        self.models = models
        self.max_request_elements = max_request_elements
        self.predictor = predictor or Predictor()
        self.metrics = metrics

    def route(self, method, path):
        """(action, Target) for a request path; NotFound or BadRequest when it is not one of ours.

        The metrics path answers ("metrics", None) when metrics are on.
        """
        bare = path.split("?", 1)[0]
        if bare == METRICS_PATH and self.metrics is not None:
            if method != "GET":
                raise MethodNotAllowed(f"{method} is not allowed on {bare}; use GET", "GET")
            return "metrics", None
        match = _MODEL_PATH.match(bare)
        if match is None:
            names = ", ".join(f"/v1/models/{r.name}" for r in self.models.repositories())
            raise NotFound(f"no such endpoint: {method} {path}; see {names}")
        repository = self.models.repository(match["name"])
        version = None
        if match["version"] is not None:
            if not match["version"].isdigit():
                raise BadRequest(f"version {match['version']!r} is not a whole number")
            version = int(match["version"])
        tail = match["tail"] or ""
        allowed = {
            "": ("GET", "status"),
            "/metadata": ("GET", "metadata"),
            ":predict": ("POST", "predict"),
            ":classify": ("POST", None),
            ":regress": ("POST", None),
        }.get(tail)
        if allowed is None:
            raise NotFound(f"no such endpoint: {method} {path}")
        allowed_method, action = allowed
        if method != allowed_method:
            raise MethodNotAllowed(f"{method} is not allowed on {path}; use {allowed_method}", allowed_method)
        if action is None:
            raise BadRequest(f"{tail[1:]} is not supported by graphopt serve; use :predict")
        target = Target(repository, version, match["label"])
        if target.label is not None:
            repository.version_for_label(target.label)  # NotFound naming the labels that exist
        return action, target

    def status(self, target):
        """The GetModelStatusResponse of the model (every version seen, or one) as JSON."""
        with self.predictor.timed("status", "rest") as timed:
            timed.model = target.repository.name
            version = target.status_version()
            reply = _proto_json(target.repository.status_response(version))
            deltas = target.repository.delta_status(version)
            if deltas is not None:  # graphopt's own field beside TF Serving's: clients ignore it
                reply["graphopt"] = deltas
            return reply

    def metadata(self, target):
        """The GetModelMetadataResponse (signature_def) of the served version as JSON."""
        with self.predictor.timed("metadata", "rest") as timed:
            timed.model = target.repository.name
            servable = target.servable()
            spec = {"name": target.repository.name, "signature_name": "", "version": str(servable.version)}
            return {"model_spec": spec, "metadata": {"signature_def": _proto_json(servable.signature_defs)}}

    def predict(self, target, body):
        """Run a predict body against the version addressed; the reply dict in TF Serving's format."""
        with self.predictor.timed("predict", "rest") as timed:
            timed.model = target.repository.name
            request = parse_predict_body(body)
            servable = target.servable()
            signature = servable.signature(request.signature_name)
            timed.signature = signature.name
            arrays = decode_inputs(request, signature, self.max_request_elements)
            outputs = self.predictor.predict(target.repository.name, servable, signature, arrays)
            return encode_outputs(outputs, request.row_format)

    def exposition(self):
        """The Prometheus text of the server's metrics."""
        return self.metrics.exposition()
