"""TF Serving's REST API: routes /v1/models/... paths and answers them from a model repository.

Independent of the HTTP plumbing (http_server.py): a call takes the method, path and body and
returns the JSON document of the reply or raises a RequestError carrying its HTTP status.
"""

import re

from google.protobuf import json_format

from graphopt.serve.errors import BadRequest, MethodNotAllowed, NotFound
from graphopt.serve.json_tensors import decode_inputs, encode_outputs, parse_predict_body
from graphopt.serve.limits import DEFAULT_MAX_REQUEST_ELEMENTS

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

    def __init__(self, repository, max_request_elements=DEFAULT_MAX_REQUEST_ELEMENTS):
        self.repository = repository
        self.max_request_elements = max_request_elements

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
        return action, version

    def status(self, version):
        """The GetModelStatusResponse of the model (every version seen, or one) as JSON."""
        reply = _proto_json(self.repository.status_response(version))
        deltas = self.repository.delta_status(version)
        if deltas is not None:  # graphopt's own field beside TF Serving's: clients ignore it
            reply["graphopt"] = deltas
        return reply

    def metadata(self, version):
        """The GetModelMetadataResponse (signature_def) of the served version as JSON."""
        servable = self.repository.get(version)
        spec = {"name": self.repository.name, "signature_name": "", "version": str(servable.version)}
        return {"model_spec": spec, "metadata": {"signature_def": _proto_json(servable.signature_defs)}}

    def predict(self, version, body):
        """Run a predict body against the served version; the reply dict in TF Serving's format."""
        request = parse_predict_body(body)
        signature = self.repository.get(version).signature(request.signature_name)
        outputs = signature.run(decode_inputs(request, signature, self.max_request_elements))
        return encode_outputs(outputs, request.row_format)
