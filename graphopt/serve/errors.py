"""Failures of one serving request: each carries the HTTP status and the gRPC code it maps to."""

import grpc

from graphopt.errors import GraphoptError


class RequestError(GraphoptError):
    """A request the server cannot answer; the message tells the client what to fix."""

    http_status = 400
    grpc_code = grpc.StatusCode.INVALID_ARGUMENT


class BadRequest(RequestError):
    """Malformed body, unknown input or signature, wrong dtype or shape (HTTP 400)."""


class NotFound(RequestError):
    """Unknown model, version or path (HTTP 404)."""

    http_status = 404
    grpc_code = grpc.StatusCode.NOT_FOUND


class MethodNotAllowed(RequestError):
    """A known path asked with a method it does not take (HTTP 405, with an Allow header)."""

    http_status = 405
    grpc_code = grpc.StatusCode.UNIMPLEMENTED

    def __init__(self, message, allow):
        super().__init__(message)
        self.allow = allow


class PayloadTooLarge(RequestError):
    """The request body is larger than the server accepts (HTTP 413)."""

    http_status = 413
    grpc_code = grpc.StatusCode.RESOURCE_EXHAUSTED


class ModelFailed(RequestError):
    """The model raised while computing an answer to a well-formed request (HTTP 500)."""

    http_status = 500
    grpc_code = grpc.StatusCode.INTERNAL


class LengthRequired(RequestError):
    """A request body without a Content-Length (HTTP 411)."""

    http_status = 411


class RequestTimeout(RequestError):
    """The client did not send its whole request within the read timeout (HTTP 408)."""

    http_status = 408
    grpc_code = grpc.StatusCode.DEADLINE_EXCEEDED


class HeadersTooLarge(RequestError):
    """The request line and headers exceed what the server reads (HTTP 431)."""

    http_status = 431


class ServerBusy(RequestError):
    """Every connection slot is taken (HTTP 503); the client should retry later."""

    http_status = 503
    grpc_code = grpc.StatusCode.UNAVAILABLE
